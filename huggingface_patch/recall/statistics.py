"""The statistics of the recall analyses, from their per-fact records.

Facts are not independent: facts of one relation share a template and a kind of answer (and a few share a
subject), so every interval here is a cluster bootstrap by ``cluster_by`` (``relation`` by default; the
record says which), or plain when clusters are off. Curves over layers get pointwise intervals; the layer of
the largest effect is a selected extremum (:func:`~huggingface_patch.stats.selected_extremum`); every
comparison the report states in words is a paired comparison on the same facts.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from ..stats import curve_with_intervals, paired_comparison, rate_interval, selected_extremum
from ..stats.intervals import BOOTSTRAP_RESAMPLES, cluster_ids, percentile_bounds, resample_weights

#: ``--cluster`` values: what a cluster of facts is
CLUSTER_BY = ("relation", "subject", "none")


def cluster_labels(queries, by: str) -> dict[int, object] | None:
    """``{query index: cluster label}`` (None for ``by='none'``). Facts without a ``relation_id`` are their
    own relation."""
    if by not in CLUSTER_BY:
        raise ValueError(f"unknown clustering {by!r}: choose from {', '.join(CLUSTER_BY)}")
    if by == "none":
        return None
    if by == "subject":
        return {q.index: q.subject for q in queries}
    return {q.index: q.extra.get("relation_id", f"fact {q.index}") for q in queries}


def item_matrix(records: Sequence[dict], x_key: str, value: Callable[[dict], float],
                where: Callable[[dict], bool] = lambda r: True) -> tuple[list[int], list, np.ndarray]:
    """``(fact indices, x values, matrix (facts, xs))`` of ``value(record)`` (NaN where a fact has no record)."""
    chosen = [r for r in records if where(r)]
    items = sorted({r["index"] for r in chosen})
    xs = sorted({r[x_key] for r in chosen})
    row = {i: n for n, i in enumerate(items)}
    col = {x: n for n, x in enumerate(xs)}
    matrix = np.full((len(items), len(xs)), np.nan)
    for r in chosen:
        matrix[row[r["index"]], col[r[x_key]]] = value(r)
    return items, xs, matrix


def _clusters(items, clusters: Mapping[int, object] | None):
    return None if clusters is None else [clusters[i] for i in items]


def curve_rows(items, xs, matrix, clusters, cluster_by, seed: int, x_name: str = "layer") -> list[dict]:
    """One row per x: ``{x_name, n, mean, ci_low, ci_high}`` (pointwise cluster-bootstrap intervals)."""
    intervals = curve_with_intervals(matrix, _clusters(items, clusters), cluster_by=cluster_by, seed=seed)
    return [{x_name: x, "n": i.n, "mean": i.estimate, "ci_low": i.low, "ci_high": i.high}
            for x, i in zip(xs, intervals)]


def rate_rows(items, xs, matrix, clusters, cluster_by, seed: int, x_name: str = "layer",
              percent: bool = True) -> list[dict]:
    """Rates of 0/1 cells per x: Wilson (independent facts) or cluster bootstrap; in % when ``percent``."""
    scale = 100.0 if percent else 1.0
    labels = _clusters(items, clusters)
    rows = []
    for j, x in enumerate(xs):
        i = rate_interval(matrix[:, j], labels, cluster_by=cluster_by, seed=seed)
        rows.append({x_name: x, "n": i.n, "rate": i.estimate * scale, "ci_low": i.low * scale,
                     "ci_high": i.high * scale, "method": i.method})
    return rows


def extremum(items, xs, matrix, clusters, cluster_by, seed: int, kind: str) -> dict:
    """The selected extremum of the mean curve (:func:`~huggingface_patch.stats.selected_extremum`)."""
    return selected_extremum(matrix, xs, _clusters(items, clusters), kind=kind, cluster_by=cluster_by,
                             seed=seed).to_dict()


def paired(a: np.ndarray, b: np.ndarray, items, clusters, cluster_by, seed: int) -> dict:
    """Paired comparison of two per-fact values ``(facts,)``."""
    return paired_comparison(a, b, _clusters(items, clusters), cluster_by=cluster_by, seed=seed).to_dict()


def selected_point_difference(items, xs, a: np.ndarray, b: np.ndarray, clusters, cluster_by, seed: int,
                              kind: str = "min", resamples: int = BOOTSTRAP_RESAMPLES) -> dict:
    """Where the extremum of curve ``a`` lies minus where that of curve ``b`` lies (``a``, ``b``: ``(facts,
    xs)`` on the same facts), with a bootstrap that re-selects both in every resample: is effect ``b``'s
    layer before effect ``a``'s?"""
    ids = cluster_ids(_clusters(items, clusters), len(items))
    pick = np.nanargmin if kind == "min" else np.nanargmax
    x = np.asarray(xs, dtype=float)
    with np.errstate(invalid="ignore"):
        observed = float(x[pick(np.nanmean(a, 0))] - x[pick(np.nanmean(b, 0))])
    groups = int(ids.max()) + 1 if len(items) else 0
    if groups < 2:
        return {"difference": observed, "ci_low": float("nan"), "ci_high": float("nan")}
    weights = resample_weights(groups, resamples, seed)

    def curves(values):
        finite = np.isfinite(values)
        sums = np.zeros((groups, values.shape[1]))
        counts = np.zeros((groups, values.shape[1]))
        np.add.at(sums, ids, np.where(finite, values, 0.0))
        np.add.at(counts, ids, finite.astype(float))
        with np.errstate(invalid="ignore", divide="ignore"):
            return (weights @ sums) / (weights @ counts)

    ca, cb = curves(a), curves(b)
    ok = np.isfinite(ca).any(1) & np.isfinite(cb).any(1)
    draws = x[pick(ca[ok], axis=1)] - x[pick(cb[ok], axis=1)]
    low, high = percentile_bounds(draws)
    return {"difference": observed, "ci_low": float(low), "ci_high": float(high),
            "share_b_first": float((draws > 0).mean()), "method": "cluster bootstrap, both selections repeated"}


def clustering_note(clusters: Mapping[int, object] | None, cluster_by: str) -> dict:
    """What the summary says about its clusters."""
    if clusters is None:
        return {"cluster_by": "none", "clusters": None}
    return {"cluster_by": cluster_by, "clusters": len(set(clusters.values()))}
