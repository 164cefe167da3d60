"""Confidence intervals that respect bounds and clusters.

* :func:`wilson`: the Wilson score interval of a proportion ``k / n``; it stays inside [0, 1] and is not
  degenerate at 0 or ``n`` events (a t-interval of 0/1 values is, and crosses the bounds near them).
* :func:`bootstrap_mean`: the percentile bootstrap of a mean, resampling *clusters* (every item of a
  resampled cluster comes along) when the items cluster (targets within an essay, positions within a
  document, facts sharing a relation); each item is its own cluster otherwise. A percentile interval of a
  bounded quantity stays inside its bounds.
* :func:`rate_interval`: Wilson for independent 0/1 items, the cluster bootstrap for clustered ones.

All resampling is seeded; the result says how it was made (``method``, ``clusters``, ``cluster_by``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

#: default number of bootstrap resamples
BOOTSTRAP_RESAMPLES = 2000
#: default confidence level
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """An estimate with its interval ``[low, high]`` (NaN when undefined; a re-selected extremum's interval
    need not contain the estimate); ``n`` items in ``clusters`` clusters (``cluster_by`` names what a
    cluster is; None: items are independent)."""

    estimate: float
    low: float
    high: float
    n: int
    method: str
    level: float = LEVEL
    clusters: int | None = None
    cluster_by: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self, digits: int = 3, scale: float = 1.0, unit: str = "") -> str:
        """``0.123 [0.100, 0.150]`` (each value multiplied by ``scale``)."""
        fmt = f"{{:.{digits}f}}"
        values = [fmt.format(v * scale) if math.isfinite(v) else "n/a" for v in (self.estimate, self.low, self.high)]
        return f"{values[0]}{unit} [{values[1]}, {values[2]}]"


def _z(level: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + level / 2))


def wilson(successes: int, n: int, level: float = LEVEL) -> Interval:
    """Wilson score interval of the proportion ``successes / n`` (NaN for ``n == 0``)."""
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, "wilson", level)
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in 0..n, got {successes} of {n}")
    z = _z(level)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # at 0 or n events the formula's bound is the bound itself up to round-off
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return Interval(p, low, high, n, "wilson", level)


def cluster_ids(labels: Sequence | None, n: int) -> np.ndarray:
    """``(n,)`` integer cluster index of each item from any hashable labels (None: one cluster per item)."""
    if labels is None:
        return np.arange(n)
    labels = list(labels)
    if len(labels) != n:
        raise ValueError(f"{len(labels)} cluster labels for {n} items")
    index: dict = {}
    return np.array([index.setdefault(label, len(index)) for label in labels], dtype=np.int64)


def cluster_sums(values: np.ndarray, clusters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(sums (G, ...), counts (G,))`` of ``values`` ``(n, ...)`` per cluster ``0..G-1``."""
    groups = int(clusters.max()) + 1 if clusters.size else 0
    sums = np.zeros((groups,) + values.shape[1:], dtype=np.float64)
    np.add.at(sums, clusters, values)
    counts = np.bincount(clusters, minlength=groups).astype(np.float64)
    return sums, counts


def resample_weights(groups: int, resamples: int, seed: int) -> np.ndarray:
    """``(resamples, G)``: how often each cluster is drawn in each bootstrap resample (G draws with
    replacement)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(groups, np.full(groups, 1.0 / groups), size=resamples).astype(np.float64)


def resampled_means(values: np.ndarray, clusters: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """``(resamples, ...)`` means of ``values`` ``(n, ...)`` over cluster-bootstrap resamples (NaN items are
    left out of both the sums and the counts, column by column)."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    sums, _ = cluster_sums(np.where(finite, values, 0.0), clusters)
    counts, _ = cluster_sums(finite.astype(np.float64), clusters)
    weights = resample_weights(sums.shape[0], resamples, seed)
    flat_sums = sums.reshape(sums.shape[0], -1)
    flat_counts = counts.reshape(counts.shape[0], -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (weights @ flat_sums) / (weights @ flat_counts)
    return means.reshape((resamples,) + values.shape[1:])


def percentile_bounds(draws: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of bootstrap ``draws`` ``(B, ...)`` along the first axis (NaN draws ignored)."""
    alpha = (1 - level) / 2
    with np.errstate(invalid="ignore"):
        low = np.nanquantile(draws, alpha, axis=0)
        high = np.nanquantile(draws, 1 - alpha, axis=0)
    return low, high


def bootstrap_mean(values, clusters: Sequence | None = None, *, cluster_by: str | None = None,
                   resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0, level: float = LEVEL) -> Interval:
    """Mean of ``values`` ``(n,)`` with its percentile-bootstrap interval, resampling ``clusters`` (labels
    ``(n,)``; None: items independent). NaN values are left out."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    keep = np.isfinite(values)
    labels = None if clusters is None else [c for c, k in zip(clusters, keep) if k]
    values = values[keep]
    n = int(values.size)
    ids = cluster_ids(labels, n)
    groups = int(ids.max()) + 1 if n else 0
    method = "cluster bootstrap (percentile)" if clusters is not None else "bootstrap (percentile)"
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, method, level, groups, cluster_by)
    estimate = float(values.mean())
    if groups < 2:
        return Interval(estimate, math.nan, math.nan, n, method, level, groups, cluster_by)
    draws = resampled_means(values, ids, resamples, seed)
    low, high = percentile_bounds(draws, level)
    return Interval(estimate, float(low), float(high), n, method, level,
                    groups if clusters is not None else None, cluster_by)


def rate_interval(events, clusters: Sequence | None = None, *, cluster_by: str | None = None,
                  resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0, level: float = LEVEL) -> Interval:
    """A rate of 0/1 ``events`` ``(n,)``: Wilson when items are independent (``clusters`` None), otherwise
    the cluster bootstrap; either way inside [0, 1]."""
    events = np.asarray(events, dtype=np.float64).reshape(-1)
    if clusters is None:
        finite = events[np.isfinite(events)]
        return wilson(int(finite.sum()), int(finite.size), level)
    return bootstrap_mean(events, clusters, cluster_by=cluster_by, resamples=resamples, seed=seed, level=level)
