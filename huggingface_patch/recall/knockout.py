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

import numpy as np
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

    Blocking edges *from* the last position changes only what the last position computes, so each
    same-length batch runs its prefix once with a key/value cache and every (query, set, layer) item runs
    only its last token through the model (:mod:`.replay`), with its own per-layer blocking mask, in chunks
    of at most ``max_rows`` items: the numbers of a whole forward pass per item, to round-off. Returns
    records ``{index, subject, set, layer, window_start, window_end, p_base, p_new, relative_change}``;
    ``layer`` is the 0-based block at the window's centre (the paper plots ``layer + 1``).
    """
    from .replay import last_token_logits, prefix_cache

    for name in sets:
        if name not in _SETS:
            raise ValueError(f"unknown knockout set {name!r}: choose from {', '.join(_SETS)}")
    if window < 1:
        raise ValueError("the window must hold at least one layer")
    L = len(model_parts(model).layers)
    device = model_device(model)
    records = []
    combos = [(name, layer) for name in sets for layer in range(L)]
    for batch in length_batches(queries, max(1, max_rows // len(combos))):
        T = batch[0].length
        ids = stack_ids(batch, device)
        cache = prefix_cache(model, ids) if T > 1 else None
        items = [(b, q, name, layer) for b, q in enumerate(batch) for name, layer in combos]
        for lo in range(0, len(items), max_rows):
            chunk = items[lo : lo + max_rows]
            keys = [knockout_positions(name, q) for _, q, name, _ in chunk]
            edges = edge_mask(T, keys, device=device)[:, -1:]  # (R, 1, T): the last position's row
            blocked = {}
            for index in range(L):
                active = torch.tensor([index in layer_window(layer, L, window) for *_, layer in chunk], device=device)
                blocked[index] = edges & active[:, None, None]
            rows = [b for b, *_ in chunk]
            with block_attention_edges(model, blocked):
                if cache is None:
                    logits = model(input_ids=ids[rows], use_cache=False, logits_to_keep=1).logits[:, -1]
                else:
                    logits = last_token_logits(model, ids, cache, rows)
            probs = torch.softmax(logits.float(), dim=-1)
            for r, (_, q, name, layer) in enumerate(chunk):
                p_new = float(probs[r, q.target_id])
                win = layer_window(layer, L, window)
                records.append(dict(index=q.index, subject=q.subject, set=name, layer=layer, window_start=win.start,
                                    window_end=win.stop, p_base=q.target_prob, p_new=p_new,
                                    relative_change=(p_new - q.target_prob) / q.target_prob * 100.0))
        if progress is not None:
            progress.update(len(batch))
    return records


def summarize(records: Sequence[dict], key: str = "relative_change", *, group: str = "set", x: str = "layer",
              clusters=None, cluster_by: str = "relation", seed: int = 0,
              pairs: Sequence[tuple[str, str]] = (("subject", "non-subject"),)) -> dict:
    """Per group (set) and layer: the mean of ``key`` with pointwise cluster-bootstrap intervals
    (``summary``); per group the layer of the largest drop, reported as selected (``largest_drop``); for each
    pair ``(a, b)`` of groups, on the same facts: the paired difference of their mean over layers and whether
    ``b``'s largest drop comes at an earlier layer than ``a``'s (``comparisons``). ``clusters``:
    ``{fact index: cluster}`` (None: facts independent)."""
    from .statistics import clustering_note, curve_rows, extremum, item_matrix, paired, selected_point_difference

    names = sorted({r[group] for r in records})
    matrices = {}
    out = {"summary": {}, "largest_drop": {}, "comparisons": {}, **clustering_note(clusters, cluster_by)}
    for name in names:
        items, xs, matrix = item_matrix(records, x, lambda r: r[key], where=lambda r, n=name: r[group] == n)
        matrices[name] = (items, xs, matrix)
        out["summary"][name] = curve_rows(items, xs, matrix, clusters, cluster_by, seed, x)
        if len(xs) > 1:
            out["largest_drop"][name] = extremum(items, xs, matrix, clusters, cluster_by, seed, "min")
    for a, b in pairs:
        if a not in matrices or b not in matrices or matrices[a][:2] != matrices[b][:2]:
            continue
        items, xs, ma = matrices[a]
        mb = matrices[b][2]
        out["comparisons"][f"{a} vs {b}"] = {
            "mean_over_layers": paired(np.nanmean(ma, 1), np.nanmean(mb, 1), items, clusters, cluster_by, seed),
            "layer_of_largest_drop": selected_point_difference(items, xs, ma, mb, clusters, cluster_by, seed),
        }
    return out
