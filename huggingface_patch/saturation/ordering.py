"""Is the top-k fixed in rank order? Strict Kendall tau, its permutation test, rank correspondence.

* Per position, ranks ``1..c`` are used, ``c`` the last rank whose ``s_i != L-1`` (saturated); ``c >= 3``.
* Strict tau between ``(1..c)`` and ``(s_1..s_c)``: a pair of ranks ``i < j`` is concordant when
  ``s_i < s_j``; ties count as discordant; ``tau = (C - D) / P`` with ``P = c (c - 1) / 2``; averaged over
  positions.
* Permutation test: each position's ``s_1..s_c`` is shuffled independently, 1,000 times; the p-value is
  ``(1 + #{shuffled mean >= observed}) / (1 + shuffles)``; "p < 0.001" is reported, as in the paper, when
  every shuffled mean is below the observed one (with 1,000 shuffles).
* Rank correspondence: for each rank ``j``, the index of ``s_j`` among the position's sorted saturation
  layers (ties take the lowest index); mean + 1 ± SEM per rank, and paired t-tests between adjacent ranks.
"""

from __future__ import annotations

import numpy as np

MIN_RANKS = 3
DEFAULT_PERMUTATIONS = 1000


def strict_kendall_tau(values) -> float:
    """Strict tau of one sequence ``s_1..s_c`` against ranks ``1..c`` (ties discordant); NaN for c < 2."""
    return float(strict_kendall_tau_rows(np.asarray(values)[None])[0])


def strict_kendall_tau_rows(rows: np.ndarray) -> np.ndarray:
    """Strict tau of every row of ``rows`` ``(..., c)`` against ``1..c``; returns ``(...)``."""
    rows = np.asarray(rows)
    c = rows.shape[-1]
    if c < 2:
        return np.full(rows.shape[:-1], np.nan)
    i, j = np.triu_indices(c, k=1)
    concordant = (rows[..., i] < rows[..., j]).sum(axis=-1)
    pairs = len(i)
    return (2.0 * concordant - pairs) / pairs


def ranks_used(saturation: np.ndarray, num_layers: int) -> np.ndarray:
    """``c`` per position ``(N,)``: the last (1-based) rank with ``s_i != L-1``; 0 when none is saturated."""
    sat = np.asarray(saturation)
    saturated = sat != num_layers - 1
    k = sat.shape[1]
    last = k - np.argmax(saturated[:, ::-1], axis=1)
    return np.where(saturated.any(axis=1), last, 0)


def position_taus(saturation: np.ndarray, num_layers: int, min_ranks: int = MIN_RANKS):
    """``(taus, c)``: strict tau per position (NaN where ``c < min_ranks``) and ``c`` per position."""
    sat = np.asarray(saturation)
    c = ranks_used(sat, num_layers)
    taus = np.full(sat.shape[0], np.nan)
    for length in np.unique(c):
        if length < min_ranks:
            continue
        rows = c == length
        taus[rows] = strict_kendall_tau_rows(sat[rows, :length])
    return taus, c


def permutation_test(saturation: np.ndarray, num_layers: int, n_permutations: int = DEFAULT_PERMUTATIONS,
                     seed: int = 0, min_ranks: int = MIN_RANKS, chunk_elements: int = 5_000_000) -> dict:
    """Permutation test of the mean strict tau (each used position's ``s_1..s_c`` shuffled independently)."""
    sat = np.asarray(saturation)
    taus, c = position_taus(sat, num_layers, min_ranks)
    used = ~np.isnan(taus)
    n = int(used.sum())
    if n == 0:
        return {"tau": float("nan"), "positions": 0, "permutations": n_permutations, "p_value": float("nan"),
                "p_text": "n/a (no position has at least %d saturated ranks)" % min_ranks,
                "shuffled_mean": float("nan"), "shuffled_sd": float("nan"), "shuffled_max": float("nan")}
    observed = float(taus[used].mean())
    rng = np.random.default_rng(seed)
    totals = np.zeros(n_permutations)
    for length in np.unique(c[used]):
        rows = sat[used & (c == length), :length]
        step = max(1, chunk_elements // max(1, rows.size))
        for start in range(0, n_permutations, step):
            stop = min(n_permutations, start + step)
            block = rng.permuted(np.broadcast_to(rows, (stop - start,) + rows.shape), axis=-1)
            totals[start:stop] += strict_kendall_tau_rows(block).sum(axis=1)
    shuffled = totals / n
    at_least = int((shuffled >= observed).sum())
    p_value = (at_least + 1) / (n_permutations + 1)
    if at_least == 0:
        p_text = f"p < {1 / n_permutations:g}"
    else:
        p_text = f"p = {p_value:.3g}"
    return {
        "tau": observed,
        "positions": n,
        "permutations": n_permutations,
        "shuffled_at_least_observed": at_least,
        "p_value": p_value,
        "p_text": p_text,
        "shuffled_mean": float(shuffled.mean()),
        "shuffled_sd": float(shuffled.std(ddof=1)) if n_permutations > 1 else float("nan"),
        "shuffled_max": float(shuffled.max()),
    }


def correspondence_indices(saturation: np.ndarray) -> np.ndarray:
    """``(N, k)``: for each rank ``j``, the 0-based index of ``s_j`` among the sorted ``s`` of its position.

    Ties take the lowest index (= the number of ranks with a strictly smaller saturation layer).
    """
    sat = np.asarray(saturation)
    return (sat[:, None, :] < sat[:, :, None]).sum(axis=2)


def rank_correspondence(saturation: np.ndarray) -> dict:
    """Mean index + 1 and SEM per rank, and paired t-tests between adjacent ranks."""
    from scipy import stats

    index = correspondence_indices(saturation) + 1.0
    n, k = index.shape
    means = index.mean(axis=0) if n else np.full(k, np.nan)
    sems = stats.sem(index, axis=0) if n > 1 else np.full(k, np.nan)
    tests = []
    for j in range(k - 1):
        a, b = index[:, j], index[:, j + 1]
        if n > 1 and np.any(a != b):
            result = stats.ttest_rel(a, b)
            t, p = float(result.statistic), float(result.pvalue)
        else:
            t, p = float("nan"), float("nan")
        tests.append({"ranks": [j + 1, j + 2], "t": t, "p_value": p})
    return {
        "positions": int(n),
        "mean_index_plus_one": [float(x) for x in means],
        "sem": [float(x) for x in np.atleast_1d(sems)],
        "adjacent_t_tests": tests,
    }
