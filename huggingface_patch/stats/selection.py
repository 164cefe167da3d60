"""Curves over layers, and the extreme point picked from one.

A "largest drop at layer l" is the minimum of a mean curve picked from many layers: its value is biased
away from zero and the layer is uncertain. :func:`selected_extremum` reports it as selected, with an
interval from a bootstrap that *repeats the selection*: resample the items (or clusters), recompute the
whole curve, take its extremum again. :func:`curve_with_intervals` gives the whole curve with pointwise
intervals, so the extremum can be read in context.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from .intervals import BOOTSTRAP_RESAMPLES, LEVEL, Interval, cluster_ids, percentile_bounds, resampled_means


def _method(clusters) -> str:
    return "cluster bootstrap (percentile)" if clusters is not None else "bootstrap (percentile)"


def curve_with_intervals(values, clusters: Sequence | None = None, *, cluster_by: str | None = None,
                         resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0, level: float = LEVEL) -> list[Interval]:
    """Per column of ``values`` ``(n items, m points)``: the mean over items with a pointwise bootstrap
    interval (items or clusters resampled jointly for every point; NaN cells left out)."""
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    ids = cluster_ids(clusters, n)
    groups = int(ids.max()) + 1 if n else 0
    counts = np.isfinite(values).sum(axis=0)
    with np.errstate(invalid="ignore"):
        means = np.nanmean(values, axis=0) if n else np.full(values.shape[1], math.nan)
    if groups >= 2:
        low, high = percentile_bounds(resampled_means(values, ids, resamples, seed), level)
    else:
        low = high = np.full(values.shape[1], math.nan)
    reported_groups = groups if clusters is not None else None
    return [Interval(float(means[j]), float(low[j]), float(high[j]), int(counts[j]), _method(clusters), level,
                     reported_groups, cluster_by) for j in range(values.shape[1])]


@dataclass(frozen=True)
class SelectedExtremum:
    """The extreme point of a mean curve, reported as selected.

    ``point``: the column picked on the data (its label); ``value``: the curve there, with the interval of
    the *re-selected* extremum over resamples (each resample picks its own column); ``selection_share``:
    how often each column was picked across resamples (most frequent first)."""

    kind: str
    point: object
    value: Interval
    selection_share: dict

    def to_dict(self) -> dict:
        out = asdict(self)
        out["value"] = self.value.to_dict()
        out["selection_share"] = {str(k): v for k, v in self.selection_share.items()}
        return out


def selected_extremum(values, labels: Sequence | None = None, clusters: Sequence | None = None, *,
                      kind: str = "max", cluster_by: str | None = None, resamples: int = BOOTSTRAP_RESAMPLES,
                      seed: int = 0, level: float = LEVEL) -> SelectedExtremum:
    """The ``kind`` (``max`` or ``min``) of the mean curve of ``values`` ``(n items, m points)`` (points named
    by ``labels``, default ``0..m-1``), with the selection repeated in every bootstrap resample."""
    if kind not in ("max", "min"):
        raise ValueError(f"kind must be 'max' or 'min', got {kind!r}")
    values = np.asarray(values, dtype=np.float64)
    n, m = values.shape
    labels = list(range(m)) if labels is None else list(labels)
    pick = np.nanargmax if kind == "max" else np.nanargmin
    extreme = np.nanmax if kind == "max" else np.nanmin
    with np.errstate(invalid="ignore"):
        curve = np.nanmean(values, axis=0)
    if n == 0 or not np.isfinite(curve).any():
        return SelectedExtremum(kind, None, Interval(math.nan, math.nan, math.nan, n, _method(clusters), level),
                                {})
    chosen = int(pick(curve))
    ids = cluster_ids(clusters, n)
    groups = int(ids.max()) + 1
    low = high = math.nan
    shares: dict = {}
    if groups >= 2:
        draws = resampled_means(values, ids, resamples, seed)  # (B, m)
        finite = np.isfinite(draws).any(axis=1)
        draws = draws[finite]
        best = extreme(draws, axis=1)
        lo, hi = percentile_bounds(best, level)
        low, high = float(lo), float(hi)
        picked = Counter(labels[int(i)] for i in pick(draws, axis=1))
        total = sum(picked.values())
        shares = {label: count / total for label, count in picked.most_common()}
    value = Interval(float(curve[chosen]), low, high, n, _method(clusters) + ", selection repeated", level,
                     groups if clusters is not None else None, cluster_by)
    return SelectedExtremum(kind, labels[chosen], value, shares)
