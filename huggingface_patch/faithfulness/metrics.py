"""Faithfulness metrics of one method's scores on the benchmark's items (per item; the benchmark averages them
with intervals clustered by the item's document, template or subject noun).

* ``spearman_loo`` / ``top1_loo``: agreement with leave-one-out (the real ablation): Spearman correlation of the
  scores with it per item, and whether the two pick the same top source.
* ``morf`` / ``lerf`` curves: the quantity as a growing share of the sources is removed from the input, most
  relevant first (MoRF) or least relevant first (LeRF), at :data:`FRACTIONS`; ``area_between`` = the mean of
  LeRF minus MoRF over the fractions (the AttnLRP paper's recipe: larger is more faithful).
* ``lds``: the linear datamodeling score (ContextCite): for random subsets of half the sources (the same
  subsets for every method), the Spearman correlation between the sum of the removed sources' scores and the
  actual drop of the quantity when they are removed.
* ``mrr``: on known-answer items, 1 / the rank of the best-ranked right source.
"""

from __future__ import annotations

import math

import numpy as np

from .items import Item
from .methods import values_of, without

#: the shares of the sources removed along a deletion curve
FRACTIONS = tuple(round(0.1 * i, 1) for i in range(11))
#: random subsets per item of the linear datamodeling score
LDS_SUBSETS = 32


def spearman(a, b) -> float:
    """Spearman correlation (NaN when a side is constant or there are fewer than 3 values)."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(spearmanr(a, b).statistic)


def agreement(scores: np.ndarray, loo: np.ndarray) -> dict:
    """``{spearman_loo, top1_loo}`` of one item."""
    return {"spearman_loo": spearman(scores, loo), "top1_loo": float(np.argmax(scores) == np.argmax(loo))}


def removal_orders(scores: np.ndarray, fraction: float) -> tuple[list[int], list[int]]:
    """The source indices removed at ``fraction``: most relevant first, least relevant first (ties by
    position)."""
    count = int(math.ceil(fraction * len(scores)))
    order = np.argsort(-scores, kind="stable")
    return list(order[:count]), list(order[::-1][:count])


def deletion_curves(model, item: Item, scores_by_method: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per method ``{morf, lerf}`` values ``(len(FRACTIONS),)`` minus the item's full value, and
    ``area_between``. Each distinct input (methods often remove the same sources) runs once; the rows of one
    fraction have one length and run as one batch."""
    full = float(values_of(model, [item.ids], item)[0])
    out = {m: {"morf": [], "lerf": []} for m in scores_by_method}
    for fraction in FRACTIONS:
        keys, removed_sets = [], {}
        for method, scores in scores_by_method.items():
            most, least = removal_orders(scores, fraction)
            for order, removed in (("morf", most), ("lerf", least)):
                key = frozenset(removed)
                removed_sets.setdefault(key, len(removed_sets))
                keys.append((method, order, key))
        distinct = sorted(removed_sets, key=removed_sets.get)
        values = values_of(model, [without(item.ids, [item.sources[i] for i in key]) for key in distinct], item)
        value_of = dict(zip(distinct, values))
        for method, order, key in keys:
            out[method][order].append(float(value_of[key]) - full)
    for curves in out.values():
        curves["area_between"] = float(np.mean(np.array(curves["lerf"]) - np.array(curves["morf"])))
    return out


def lds_subsets(item: Item, seed: int, count: int = LDS_SUBSETS) -> list[list[int]]:
    """``count`` random subsets of half the item's source indices (seeded by the item)."""
    rng = np.random.default_rng(seed)
    n = len(item.sources)
    return [sorted(rng.choice(n, size=max(1, n // 2), replace=False).tolist()) for _ in range(count)]


def subset_drops(model, item: Item, subsets: list[list[int]]) -> np.ndarray:
    """The actual drop of the quantity when each subset of sources is removed (method-independent)."""
    full = float(values_of(model, [item.ids], item)[0])
    rows = [without(item.ids, [item.sources[i] for i in subset]) for subset in subsets]
    return full - values_of(model, rows, item)


def lds(scores: np.ndarray, subsets: list[list[int]], drops: np.ndarray) -> float:
    """The linear datamodeling score of one item."""
    predicted = [float(scores[subset].sum()) for subset in subsets]
    return spearman(predicted, drops)


def reciprocal_rank(scores: np.ndarray, item: Item) -> float:
    """1 / the rank (1 = top) of the best-ranked right source of a known-answer item."""
    order = list(np.argsort(-scores, kind="stable"))
    ranks = [order.index(item.sources.index(p)) + 1 for p in item.right if p in item.sources]
    return 1.0 / min(ranks) if ranks else math.nan
