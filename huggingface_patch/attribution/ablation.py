"""Real ablation: remove a source token from the input, re-run the model, and compare the drop in the target's
log-probability with ΔLP from the decomposition (Spearman and Pearson correlations, scatter plot).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch


@dataclass
class AblationPair:
    """One (target, source) pair of a piece: ``target`` ``t`` predicts ``ids[t+1]``; ``source`` ``s`` (1 <= s <= t)."""

    document: int | str
    target: int
    source: int
    delta_lp: float = math.nan
    real_delta_lp: float = math.nan


def sample_pairs(length: int, window: int, count: int, rng: random.Random, document=0) -> list[AblationPair]:
    """Up to ``count`` distinct pairs ``(t, s)`` with ``1 <= s <= t <= length - 2`` and ``t - s < window``
    (the BOS is never removed), uniformly at random.
    """
    candidates = [(t, s) for t in range(1, length - 1) for s in range(max(1, t - window + 1), t + 1)]
    chosen = rng.sample(candidates, min(count, len(candidates)))
    return [AblationPair(document, t, s) for t, s in sorted(chosen)]


@torch.no_grad()
def real_ablation(model, ids: torch.Tensor, pairs: list[AblationPair], base: float = 2.0) -> list[AblationPair]:
    """Fill ``real_delta_lp`` of each pair: ``LP(t) - LP(t | input without token s)`` (one re-run per distinct
    source; positions after ``s`` shift left by one, so target ``t`` is read at ``t - 1``).
    """
    device = next(model.parameters()).device
    ids = torch.as_tensor(ids, dtype=torch.long)
    scale = 1.0 / math.log(base)

    def lp_of(input_ids):
        logits = model(input_ids[None].to(device)).logits[0].float().cpu()
        return torch.log_softmax(logits, -1) * scale

    full = lp_of(ids)
    for source in sorted({p.source for p in pairs}):
        removed = lp_of(torch.cat([ids[:source], ids[source + 1:]]))
        for pair in pairs:
            if pair.source == source:
                gold = int(ids[pair.target + 1])
                pair.real_delta_lp = float(full[pair.target, gold] - removed[pair.target - 1, gold])
    return pairs


def agreement(x, y) -> dict:
    """Spearman and Pearson correlation of two sequences (with their p-values and n)."""
    from scipy import stats

    x = [float(v) for v in x]
    y = [float(v) for v in y]
    if len(x) < 3:
        raise ValueError(f"need at least 3 pairs to correlate, got {len(x)}")
    spearman = stats.spearmanr(x, y)
    pearson = stats.pearsonr(x, y)
    return dict(n=len(x), spearman=float(spearman.statistic), spearman_p=float(spearman.pvalue),
                pearson=float(pearson.statistic), pearson_p=float(pearson.pvalue))


def plot_agreement(pairs: list[AblationPair], path: str, title: str = "", units: str = "bits") -> None:
    """Scatter of ΔLP (decomposition) against the real drop in LP when the source is removed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..cli import save_figure

    x = [p.delta_lp for p in pairs]
    y = [p.real_delta_lp for p in pairs]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(x, y, s=10, alpha=0.6)
    lo, hi = min(x + y), max(x + y)
    ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
    ax.axhline(0, color="grey", lw=0.5)
    ax.axvline(0, color="grey", lw=0.5)
    ax.set_xlabel(f"ΔLP from the decomposition ({units})")
    ax.set_ylabel(f"LP drop when the token is removed and the model re-run ({units})")
    ax.set_title(title, fontsize=9)
    save_figure(fig, path)
