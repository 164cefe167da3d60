"""Pearson and Spearman correlation of paired values."""

from __future__ import annotations

import math

import torch


def correlations(x, y, min_pairs: int = 3) -> dict:
    """Pearson and Spearman correlation of paired values, NaN pairs dropped: ``{'n', 'pearson', 'pearson_p',
    'spearman', 'spearman_p'}`` (NaN when fewer than ``min_pairs`` pairs remain or a side is constant)."""
    from scipy import stats

    x = torch.as_tensor(x, dtype=torch.float64).flatten()
    y = torch.as_tensor(y, dtype=torch.float64).flatten()
    keep = ~(torch.isnan(x) | torch.isnan(y))
    x, y = x[keep].numpy(), y[keep].numpy()
    n = int(x.size)
    nan = {"n": n, "pearson": math.nan, "pearson_p": math.nan, "spearman": math.nan, "spearman_p": math.nan}
    if n < min_pairs or x.std() == 0 or y.std() == 0:
        return nan
    pearson, spearman = stats.pearsonr(x, y), stats.spearmanr(x, y)
    return {"n": n, "pearson": float(pearson.statistic), "pearson_p": float(pearson.pvalue),
            "spearman": float(spearman.statistic), "spearman_p": float(spearman.pvalue)}


def correlation_interval(x, y, clusters=None, *, method: str = "spearman", cluster_by: str | None = None,
                         resamples: int = 1000, seed: int = 0, level: float = 0.95):
    """Pearson or Spearman correlation of paired values with a percentile-bootstrap interval that resamples
    ``clusters`` (labels ``(n,)``: pairs of one essay share its context) or single pairs (None); NaN pairs
    dropped. Returns an :class:`~huggingface_patch.stats.intervals.Interval`."""
    import numpy as np
    from scipy import stats

    from .intervals import Interval, cluster_ids, percentile_bounds

    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    keep = np.isfinite(x) & np.isfinite(y)
    labels = None if clusters is None else [c for c, k in zip(clusters, keep) if k]
    x, y = x[keep], y[keep]
    name = f"{'cluster ' if clusters is not None else ''}bootstrap (percentile) of {method}"
    n = int(x.size)

    def corr(a, b) -> float:
        if a.size < 3 or a.std() == 0 or b.std() == 0:
            return math.nan
        return float((stats.spearmanr if method == "spearman" else stats.pearsonr)(a, b).statistic)

    estimate = corr(x, y)
    ids = cluster_ids(labels, n)
    groups = int(ids.max()) + 1 if n else 0
    if groups < 2:
        return Interval(estimate, math.nan, math.nan, n, name, level, groups if clusters is not None else None,
                        cluster_by)
    members = [np.flatnonzero(ids == g) for g in range(groups)]
    rng = np.random.default_rng(seed)
    draws = np.empty(resamples)
    for b in range(resamples):
        rows = np.concatenate([members[g] for g in rng.integers(0, groups, size=groups)])
        draws[b] = corr(x[rows], y[rows])
    low, high = percentile_bounds(draws, level)
    return Interval(estimate, float(low), float(high), n, name, level, groups if clusters is not None else None,
                    cluster_by)
