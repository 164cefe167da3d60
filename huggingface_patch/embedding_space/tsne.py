"""t-SNE of the top tokens of a parameter vector (Dar et al. 2023).

Take the ``k`` best tokens of ``vector · E`` (``E`` optionally with unit-norm columns),
embed their columns of ``E`` in 2-D or 3-D with
``TSNE(learning_rate=10, init='pca', perplexity=3)`` and colour the points by score.

:func:`tsne_html` writes a self-contained page (inline SVG/JavaScript, no external library): hover for the
token and its score; drag to rotate a 3-D embedding.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from .filters import Vocabulary, top_tokens


@dataclass
class TSNEResult:
    """``ids`` ``(k,)``, ``scores`` ``(k,)`` and ``coords`` ``(k, n_components)``."""

    ids: list[int]
    tokens: list[str]
    scores: list[float]
    coords: np.ndarray

    def rows(self) -> list[dict]:
        """Table rows (rank, token, id, score, coordinates)."""
        axes = "xyz"[: self.coords.shape[1]]
        return [dict(rank=n + 1, token=tok, id=i, score=round(s, 6), **{a: round(float(c), 4) for a, c in zip(axes, p)})
                for n, (i, tok, s, p) in enumerate(zip(self.ids, self.tokens, self.scores, self.coords))]


@torch.no_grad()
def tsne_top_tokens(vector: torch.Tensor, embedding: torch.Tensor, vocab: Vocabulary, k: int = 100, *,
                    allowed: torch.Tensor | None = None, normalize: bool = False, n_components: int = 3,
                    perplexity: float = 3.0, learning_rate: float = 10.0, seed: int = 0) -> TSNEResult:
    """Embed the ``k`` top tokens of ``vector (H,) @ embedding (H, V)`` with t-SNE."""
    from sklearn.manifold import TSNE

    matrix = embedding.detach().float()
    if normalize:
        matrix = matrix / matrix.norm(dim=0, keepdim=True).clamp_min(1e-12)
    ids, scores = top_tokens(vector.float() @ matrix, k, allowed)
    if ids.numel() < 4:
        raise InputError(f"t-SNE needs at least 4 tokens, the filters leave {ids.numel()}")
    points = matrix[:, ids.to(matrix.device)].t().cpu().double().numpy()
    perplexity = min(perplexity, ids.numel() - 1)
    coords = TSNE(n_components=n_components, learning_rate=learning_rate, init="pca", perplexity=perplexity,
                  random_state=seed, method="exact" if ids.numel() <= 500 else "barnes_hut").fit_transform(points)
    return TSNEResult(ids.tolist(), [vocab.display(int(i)) for i in ids], scores.tolist(), coords)


def plot_tsne(result: TSNEResult, title: str):
    """A matplotlib figure (2-D or 3-D scatter, coloured by score, the best 30 tokens labelled)."""
    from ..files import pyplot

    plt = pyplot()

    three = result.coords.shape[1] == 3
    fig = plt.figure(figsize=(8, 7))
    ax = fig.add_subplot(111, projection="3d" if three else None)
    cols = [result.coords[:, i] for i in range(result.coords.shape[1])]
    points = ax.scatter(*cols, c=result.scores, cmap="viridis", s=18)
    for n in range(min(30, len(result.ids))):
        ax.text(*[c[n] for c in cols], result.tokens[n], fontsize=7)
    fig.colorbar(points, ax=ax, shrink=0.7, label="score")
    ax.set_title(title, fontsize=10)
    return fig


_HTML = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:1em}}#tip{{position:absolute;background:#fff;border:1px solid #999;
padding:2px 5px;font-size:13px;display:none;pointer-events:none}}svg{{border:1px solid #ccc;cursor:grab}}</style>
</head><body><h3>{title}</h3><p>{help}</p>
<svg id="plot" width="800" height="650"></svg><div id="tip"></div>
<script>
const data = {data};
const svg = document.getElementById('plot'), tip = document.getElementById('tip');
const W = 800, H = 650, NS = 'http://www.w3.org/2000/svg';
const dims = data.coords[0].length;
let yaw = 0.6, pitch = 0.4;
const mean = [0, 1, 2].map(a => a < dims ? data.coords.reduce((s, c) => s + c[a], 0) / data.coords.length : 0);
const scale = Math.max(...data.coords.map(c => Math.hypot(...c.map((v, a) => v - mean[a])))) || 1;
const lo = Math.min(...data.scores), hi = Math.max(...data.scores);
function colour(s) {{ const t = hi > lo ? (s - lo) / (hi - lo) : 1;
  return `hsl(${{Math.round(260 - 200 * t)}},70%,${{Math.round(35 + 20 * t)}}%)`; }}
function project(c) {{
  const p = [0, 1, 2].map(a => a < dims ? (c[a] - mean[a]) / scale : 0);
  if (dims < 3) return [p[0], p[1], 0];
  const x = p[0] * Math.cos(yaw) - p[2] * Math.sin(yaw), z = p[0] * Math.sin(yaw) + p[2] * Math.cos(yaw);
  const y = p[1] * Math.cos(pitch) - z * Math.sin(pitch), z2 = p[1] * Math.sin(pitch) + z * Math.cos(pitch);
  return [x, y, z2];
}}
function draw() {{
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const pts = data.coords.map((c, i) => [project(c), i]).sort((a, b) => a[0][2] - b[0][2]);
  for (const [[x, y, z], i] of pts) {{
    const cx = W / 2 + x * W * 0.42, cy = H / 2 - y * H * 0.42;
    const dot = document.createElementNS(NS, 'circle');
    dot.setAttribute('cx', cx); dot.setAttribute('cy', cy); dot.setAttribute('r', 5 + 1.5 * z);
    dot.setAttribute('fill', colour(data.scores[i])); dot.setAttribute('stroke', '#333');
    dot.addEventListener('mousemove', e => {{ tip.style.display = 'block'; tip.style.left = (e.pageX + 12) + 'px';
      tip.style.top = (e.pageY + 12) + 'px';
      tip.textContent = `#${{i + 1}} ${{data.tokens[i]}}  (${{data.scores[i].toFixed(4)}})`; }});
    dot.addEventListener('mouseleave', () => {{ tip.style.display = 'none'; }});
    svg.appendChild(dot);
    if (i < 30) {{ const t = document.createElementNS(NS, 'text');
      t.setAttribute('x', cx + 7); t.setAttribute('y', cy + 4);
      t.setAttribute('font-size', 11); t.textContent = data.tokens[i]; svg.appendChild(t); }}
  }}
}}
let drag = null;
svg.addEventListener('mousedown', e => {{ drag = [e.clientX, e.clientY]; }});
window.addEventListener('mouseup', () => {{ drag = null; }});
window.addEventListener('mousemove', e => {{ if (!drag || dims < 3) return;
  yaw += (e.clientX - drag[0]) * 0.01; pitch += (e.clientY - drag[1]) * 0.01;
  drag = [e.clientX, e.clientY]; draw(); }});
draw();
</script></body></html>
"""


def tsne_html(result: TSNEResult, title: str) -> str:
    """A self-contained interactive page for ``result``."""
    three = result.coords.shape[1] == 3
    data = dict(tokens=result.tokens, scores=[float(s) for s in result.scores],
                coords=[[round(float(v), 5) for v in row] for row in result.coords])
    payload = json.dumps(data, ensure_ascii=True).replace("</", "<\\/")
    help_text = "Hover a point for its token and score" + ("; drag to rotate." if three else ".")
    help_text += " Colour: score (violet low, yellow-green high); the 30 best tokens are labelled."
    return _HTML.format(title=html.escape(title), help=html.escape(help_text), data=payload)
