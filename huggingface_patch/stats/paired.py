"""Paired comparisons: two measurements of the *same* items (probe vs a baseline on the same positions,
knockout of the subject vs the non-subject positions of the same facts, patched vs unpatched).

* Interval: the (cluster) bootstrap of the mean difference ``a - b``, items resampled in pairs.
* Test: for independent 0/1 pairs, McNemar's exact test (binomial on the discordant pairs); otherwise the
  sign-flip randomisation test: under "a and b are exchangeable within each item" each cluster's summed
  difference is as likely to be negated, so its sign is flipped at random (exact enumeration for up to 16
  clusters, else ``permutations`` random flips).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from .intervals import BOOTSTRAP_RESAMPLES, LEVEL, Interval, bootstrap_mean, cluster_ids, cluster_sums

#: random sign flips of the randomisation test (above :data:`EXACT_FLIPS_UP_TO` clusters)
SIGN_FLIPS = 10_000
EXACT_FLIPS_UP_TO = 16


@dataclass(frozen=True)
class PairedComparison:
    """``a - b`` on the same items: the mean difference with its interval, a two-sided p-value and the test
    that gave it; ``a_mean`` / ``b_mean`` for reading; ``discordant`` = (a only, b only) for 0/1 pairs."""

    a_mean: float
    b_mean: float
    difference: Interval
    p_value: float
    test: str
    discordant: tuple[int, int] | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["difference"] = self.difference.to_dict()
        return out


def mcnemar(a, b) -> tuple[float, tuple[int, int]]:
    """Exact two-sided McNemar test of paired 0/1 outcomes: ``(p, (a only, b only))``."""
    from scipy.stats import binomtest

    a, b = np.asarray(a).astype(bool), np.asarray(b).astype(bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    if only_a + only_b == 0:
        return 1.0, (only_a, only_b)
    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue), (only_a, only_b)


def sign_flip_test(differences, clusters: Sequence | None = None, permutations: int = SIGN_FLIPS,
                   seed: int = 0) -> float:
    """Two-sided randomisation p-value of ``mean(differences) == 0`` by flipping each cluster's sign."""
    d = np.asarray(differences, dtype=np.float64).reshape(-1)
    keep = np.isfinite(d)
    labels = None if clusters is None else [c for c, k in zip(clusters, keep) if k]
    d = d[keep]
    if d.size == 0:
        return math.nan
    sums, _ = cluster_sums(d, cluster_ids(labels, d.size))
    observed = abs(sums.sum())
    groups = sums.size
    if groups <= EXACT_FLIPS_UP_TO:
        signs = 1 - 2 * ((np.arange(2**groups)[:, None] >> np.arange(groups)[None]) & 1)
        totals = np.abs(signs @ sums)
        return float((totals >= observed - 1e-12 * max(observed, 1.0)).mean())
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(permutations, groups))
    totals = np.abs(signs @ sums)
    at_least = int((totals >= observed - 1e-12 * max(observed, 1.0)).sum())
    return (at_least + 1) / (permutations + 1)


def paired_comparison(a, b, clusters: Sequence | None = None, *, cluster_by: str | None = None,
                      binary: bool | None = None, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                      level: float = LEVEL) -> PairedComparison:
    """Compare ``a`` and ``b`` ``(n,)`` measured on the same items (pairs with a NaN are left out).
    ``binary`` (default: both are 0/1) chooses McNemar when the items are independent."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in length: {a.size} and {b.size}")
    keep = np.isfinite(a) & np.isfinite(b)
    labels = None if clusters is None else [c for c, k in zip(clusters, keep) if k]
    a, b = a[keep], b[keep]
    if binary is None:
        binary = bool(np.isin(a, (0.0, 1.0)).all() and np.isin(b, (0.0, 1.0)).all())
    difference = bootstrap_mean(a - b, labels, cluster_by=cluster_by, resamples=resamples, seed=seed, level=level)
    discordant = None
    if binary and labels is None:
        p, discordant = mcnemar(a, b)
        test = "McNemar exact"
    else:
        p = sign_flip_test(a - b, labels, seed=seed)
        test = "sign-flip randomisation" + (f" by {cluster_by}" if labels is not None and cluster_by else "")
        if binary:
            _, discordant = mcnemar(a, b)
    return PairedComparison(_mean(a), _mean(b), difference, p, test, discordant)


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if x.size else math.nan


def holm(p_values) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (NaN stays NaN): the family-wise error is kept at
    the level when every adjusted p is read against it."""
    p = np.asarray(p_values, dtype=np.float64).reshape(-1)
    finite = np.flatnonzero(np.isfinite(p))
    out = np.full(p.shape, math.nan)
    order = finite[np.argsort(p[finite], kind="stable")]
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[index]))
        out[index] = running
    return out.tolist()
