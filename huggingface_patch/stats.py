"""Statistics the analyses share."""

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
