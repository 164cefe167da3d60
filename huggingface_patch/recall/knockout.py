"""Attention knockout (Geva et al. 2023, §A): block the edges from the last position to a set of
positions, in all heads, over a window of ``k`` layers around each layer ``l``, and measure the relative
change of the probability of the model's predicted token.

Window: ``range(max(0, l - k//2), min(L, l + ceil(k/2)))`` (k = 9: layers l-4 .. l+4).
Metric: ``(p_new - p_base) / p_base * 100``.

Knockout sets live in a registry (:func:`list_knockout_sets` / :func:`register_knockout_set`); each maps a
:class:`~huggingface_patch.recall.queries.FactQuery` to the key positions whose edges from the last
position are blocked.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from ..architectures import model_parts
from .interventions import block_attention_edges, edge_mask
from .queries import FactQuery, length_batches, model_device, stack_ids

_SETS: dict[str, Callable[[FactQuery], list[int]]] = {}


def register_knockout_set(name: str, positions: Callable[[FactQuery], list[int]]) -> None:
    """Register a knockout target set: ``positions(query)`` -> key positions blocked from the last one."""
    _SETS[name] = positions


def list_knockout_sets() -> list[str]:
    """The names of the registered knockout target sets."""
    return list(_SETS)


def knockout_positions(name: str, query: FactQuery) -> list[int]:
    """The key positions set ``name`` blocks from the last position of ``query``."""
    if name not in _SETS:
        raise ValueError(f"unknown knockout set {name!r}: choose from {', '.join(_SETS)}")
    return _SETS[name](query)


register_knockout_set("subject", lambda q: q.positions("subject"))
register_knockout_set("non-subject", lambda q: q.positions("non-subject"))
register_knockout_set("last", lambda q: q.positions("last"))


def layer_window(layer: int, num_layers: int, k: int) -> range:
    """The ``k`` layers centred on ``layer`` (clipped): ``range(max(0, l-k//2), min(L, l+ceil(k/2)))``."""
    return range(max(0, layer - k // 2), min(num_layers, layer + math.ceil(k / 2)))


@torch.no_grad()
def attention_knockout(
    model,
    queries: Sequence[FactQuery],
    *,
    window: int = 9,
    sets: Sequence[str] = ("subject", "non-subject", "last"),
    max_rows: int = 256,
    progress=None,
) -> list[dict]:
    """Run the knockout for every query, every layer and every set.

    Rows of one forward pass are (query, set, layer) combinations of same-length prompts (no padding),
    each with its own per-layer blocking mask, in chunks of at most ``max_rows``. Returns records
    ``{index, subject, set, layer, window_start, window_end, p_base, p_new, relative_change}``;
    ``layer`` is 0-based (the paper plots ``layer + 1``).
    """
    for name in sets:
        if name not in _SETS:
            raise ValueError(f"unknown knockout set {name!r}: choose from {', '.join(_SETS)}")
    if window < 1:
        raise ValueError("the window must hold at least one layer")
    L = len(model_parts(model).layers)
    device = model_device(model)
    records = []
    combos = [(name, layer) for name in sets for layer in range(L)]
    per_chunk = max(1, max_rows // len(combos))
    for batch in length_batches(queries, per_chunk):
        T = batch[0].length
        rows = [(q, name, layer) for q in batch for name, layer in combos]
        ids = stack_ids([q for q, _, _ in rows], device)
        keys = [knockout_positions(name, q) for q, name, _ in rows]
        edges = edge_mask(T, keys, device=device)
        blocked = {}
        for index in range(L):
            active = torch.tensor([index in layer_window(layer, L, window) for _, _, layer in rows], device=device)
            blocked[index] = edges & active[:, None, None]
        with block_attention_edges(model, blocked):
            logits = model(input_ids=ids, use_cache=False, logits_to_keep=1).logits[:, -1]
        probs = torch.softmax(logits.float(), dim=-1)
        for r, (q, name, layer) in enumerate(rows):
            p_new = float(probs[r, q.target_id])
            win = layer_window(layer, L, window)
            records.append(dict(index=q.index, subject=q.subject, set=name, layer=layer, window_start=win.start,
                                window_end=win.stop, p_base=q.target_prob, p_new=p_new,
                                relative_change=(p_new - q.target_prob) / q.target_prob * 100.0))
        if progress is not None:
            progress.update(len(batch))
    return records


def summarize(records: Sequence[dict], key: str = "relative_change") -> dict[str, list[dict]]:
    """Per set, per layer: ``{layer, n, mean, ci_low, ci_high}`` (95% t-interval of the mean)."""
    from scipy import stats

    out: dict[str, dict[int, list[float]]] = {}
    for rec in records:
        out.setdefault(rec["set"], {}).setdefault(rec["layer"], []).append(rec[key])
    summary = {}
    for name, by_layer in out.items():
        rows = []
        for layer in sorted(by_layer):
            values = torch.tensor(by_layer[layer], dtype=torch.float64)
            n, mean = len(values), float(values.mean())
            half = float(stats.t.ppf(0.975, n - 1) * values.std(unbiased=True) / math.sqrt(n)) if n > 1 else 0.0
            rows.append(dict(layer=layer, n=n, mean=mean, ci_low=mean - half, ci_high=mean + half))
        summary[name] = rows
    return summary
