"""Is the top-k fixed in rank order? Strict Kendall tau, two permutation tests, rank correspondence.

* Per position, ranks ``1..c`` are used, ``c`` the last rank whose ``s_i != L-1`` (saturated); ``c >= 3``.
* Strict tau between ``(1..c)`` and ``(s_1..s_c)``: a pair of ranks ``i < j`` is concordant when
  ``s_i < s_j``; ties count as discordant; ``tau = (C - D) / P`` with ``P = c (c - 1) / 2``; averaged over
  positions.
* The paper's permutation test (:func:`permutation_test`, as its released code computes it): the positions
  the filter kept (top-1 saturated by ``floor(0.85 L)``) each have their ``s_1..s_c`` shuffled, 1,000 times.
  **It is biased:** the filter selected the rows on ``s_1`` being early, so the kept rows are not
  exchangeable under "no rank order", and the test reports order where there is none.
* The selection-aware test (:func:`selection_aware_test`, the one conclusions use): every position's
  ``s_1..s_k`` is shuffled *before* the filter, then the filter and the ``c`` rule are applied again and the
  mean tau recomputed; under "no rank order" (each position's layers exchangeable across ranks) the observed
  mean tau is one draw from this null.
* p-values: ``(1 + #{shuffled mean >= observed}) / (1 + shuffles)``; "p < 0.001" is reported, as in the
  paper, when every shuffled mean is below the observed one (with 1,000 shuffles).
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
    """``c`` per position ``(...,)`` of ``saturation`` ``(..., k)``: the last (1-based) rank with
    ``s_i != L-1``; 0 when none is saturated."""
    sat = np.asarray(saturation)
    saturated = sat != num_layers - 1
    k = sat.shape[-1]
    last = k - np.argmax(saturated[..., ::-1], axis=-1)
    return np.where(saturated.any(axis=-1), last, 0)


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


def _mean_taus(tables: np.ndarray, num_layers: int, min_ranks: int, limit: int | None) -> np.ndarray:
    """Mean strict tau of each table of ``tables`` ``(P, N, k)`` over its positions that pass the filter
    ``s_1 <= limit`` (None: all) and have ``c >= min_ranks``; NaN for a table with no such position."""
    c = ranks_used(tables, num_layers)
    if limit is not None:
        c = np.where(tables[..., 0] <= limit, c, 0)
    total = np.zeros(tables.shape[0])
    count = np.zeros(tables.shape[0])
    for length in range(min_ranks, tables.shape[-1] + 1):
        used = c == length
        if not used.any():
            continue
        taus = strict_kendall_tau_rows(tables[..., :length])
        total += np.where(used, taus, 0.0).sum(axis=-1)
        count += used.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count


def _null_result(observed: float, positions: int, null: np.ndarray, n_permutations: int) -> dict:
    """The summary of a permutation null: p-value (NaN nulls, tables with no usable position, left out)."""
    null = null[np.isfinite(null)]
    at_least = int((null >= observed).sum())
    valid = int(null.size)
    p_value = (at_least + 1) / (valid + 1) if valid else float("nan")
    if not valid:
        p_text = "n/a (no shuffled table has a usable position)"
    elif at_least == 0:
        p_text = f"p < {1 / valid:g}"
    else:
        p_text = f"p = {p_value:.3g}"
    return {
        "tau": observed,
        "positions": positions,
        "permutations": n_permutations,
        "null_defined": valid,
        "null_at_least_observed": at_least,
        "p_value": p_value,
        "p_text": p_text,
        "null_mean": float(null.mean()) if valid else float("nan"),
        "null_sd": float(null.std(ddof=1)) if valid > 1 else float("nan"),
        "null_max": float(null.max()) if valid else float("nan"),
    }


def _no_positions(n_permutations: int, min_ranks: int) -> dict:
    return {"tau": float("nan"), "positions": 0, "permutations": n_permutations, "null_defined": 0,
            "null_at_least_observed": 0, "p_value": float("nan"),
            "p_text": "n/a (no position has at least %d saturated ranks)" % min_ranks,
            "null_mean": float("nan"), "null_sd": float("nan"), "null_max": float("nan")}


def _shuffled_means(rows: np.ndarray, n_permutations: int, rng, chunk_elements: int, reduce) -> np.ndarray:
    """``reduce(shuffled)`` for ``n_permutations`` tables whose rows are ``rows`` ``(N, k)`` each shuffled
    independently, computed ``chunk_elements`` at a time."""
    out = np.empty(n_permutations)
    step = max(1, chunk_elements // max(1, rows.size))
    for start in range(0, n_permutations, step):
        stop = min(n_permutations, start + step)
        out[start:stop] = reduce(rng.permuted(np.broadcast_to(rows, (stop - start,) + rows.shape), axis=-1))
    return out


def permutation_test(saturation: np.ndarray, num_layers: int, n_permutations: int = DEFAULT_PERMUTATIONS,
                     seed: int = 0, min_ranks: int = MIN_RANKS, chunk_elements: int = 5_000_000) -> dict:
    """**The paper's test** (biased after a filter; see the module docstring): ``saturation`` ``(N, k)`` are
    the positions already kept; each used position's ``s_1..s_c`` is shuffled independently."""
    sat = np.asarray(saturation)
    taus, c = position_taus(sat, num_layers, min_ranks)
    used = ~np.isnan(taus)
    n = int(used.sum())
    if n == 0:
        return _no_positions(n_permutations, min_ranks)
    observed = float(taus[used].mean())
    rng = np.random.default_rng(seed)
    totals = np.zeros(n_permutations)
    for length in np.unique(c[used]):
        rows = sat[used & (c == length), :length]
        totals += _shuffled_means(rows, n_permutations, rng, chunk_elements,
                                  lambda block: strict_kendall_tau_rows(block).sum(axis=1))
    return _null_result(observed, n, totals / n, n_permutations)


def selection_aware_test(saturation: np.ndarray, num_layers: int, filter_limit: int | None,
                         n_permutations: int = DEFAULT_PERMUTATIONS, seed: int = 0, min_ranks: int = MIN_RANKS,
                         chunk_elements: int = 5_000_000) -> dict:
    """The selection-aware permutation test: ``saturation`` ``(N, k)`` are **all** positions, before any
    filter; each position's ``s_1..s_k`` is shuffled, the filter ``s_1 <= filter_limit`` (None: no filter)
    and the ``c`` rule are applied again, and the mean strict tau recomputed."""
    sat = np.asarray(saturation)
    observed = float(_mean_taus(sat[None], num_layers, min_ranks, filter_limit)[0])
    c = ranks_used(sat, num_layers)
    passes = c >= min_ranks if filter_limit is None else (c >= min_ranks) & (sat[:, 0] <= filter_limit)
    if not passes.any():
        return _no_positions(n_permutations, min_ranks)
    rng = np.random.default_rng(seed)
    null = _shuffled_means(sat, n_permutations, rng, chunk_elements,
                           lambda block: _mean_taus(block, num_layers, min_ranks, filter_limit))
    return _null_result(observed, int(passes.sum()), null, n_permutations)


#: what the output says about the paper's test
PAPER_TEST_NOTE = ("the paper's test shuffles s_1..s_c of the positions the filter kept; the filter selected them on "
                   "s_1 being early, so they are not exchangeable under 'no order' and this test reports order where "
                   "there is none (anti-conservative); conclusions use the selection-aware test")
SELECTION_AWARE_NOTE = ("every position's s_1..s_k shuffled before the filter, then the filter and the c rule applied "
                        "again: a valid null for 'no rank order' given how the positions were selected")


def kendall_tests(saturation: np.ndarray, num_layers: int, filter_limit: int | None,
                  n_permutations: int = DEFAULT_PERMUTATIONS, seed: int = 0, min_ranks: int = MIN_RANKS) -> dict:
    """Both tests on ``saturation`` ``(N, k)`` of every position (before the filter): ``{"paper": ...,
    "selection_aware": ...}``, each with ``tau``, ``null_mean``, ``null_sd``, ``p_value``, ``positions`` and
    a ``note``."""
    sat = np.asarray(saturation)
    kept = np.ones(sat.shape[0], bool) if filter_limit is None else sat[:, 0] <= filter_limit
    paper = permutation_test(sat[kept], num_layers, n_permutations, seed=seed, min_ranks=min_ranks)
    aware = selection_aware_test(sat, num_layers, filter_limit, n_permutations, seed=seed, min_ranks=min_ranks)
    return {"paper": {**paper, "note": PAPER_TEST_NOTE},
            "selection_aware": {**aware, "note": SELECTION_AWARE_NOTE},
            "filter": None if filter_limit is None else f"s_1 <= {filter_limit}",
            "min_ranks": min_ranks, "seed": seed}


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


def order_analysis(saturation: np.ndarray, num_layers: int, filter_limit: int | None, *,
                   n_permutations: int = DEFAULT_PERMUTATIONS, seed: int = 0, min_ranks: int = MIN_RANKS,
                   documents=None) -> dict:
    """The whole ordering analysis of ``saturation`` ``(N, k)`` (every position, before the filter): both
    permutation tests, the mean tau of the kept positions with a bootstrap interval (clustered by
    ``documents`` ``(N,)`` when given: positions of one document are not independent) and the rank
    correspondence of the kept positions."""
    from ..stats import bootstrap_mean

    sat = np.asarray(saturation)
    kept = np.ones(sat.shape[0], bool) if filter_limit is None else sat[:, 0] <= filter_limit
    tests = kendall_tests(sat, num_layers, filter_limit, n_permutations, seed=seed, min_ranks=min_ranks)
    taus, _ = position_taus(sat[kept], num_layers, min_ranks)
    clusters = None if documents is None else np.asarray(documents)[kept]
    interval = bootstrap_mean(taus, clusters, cluster_by=None if documents is None else "document", seed=seed)
    return {"positions": int(sat.shape[0]), "kept_positions": int(kept.sum()), "kendall": tests,
            "tau_interval": interval.to_dict(), "rank_correspondence": rank_correspondence(sat[kept])}


def read_saturation_table(path: str, num_layers: int) -> dict:
    """A user's table of saturation layers: CSV with columns ``s1..sk`` (0-based layer indices in
    ``0..L-1``; ``L-1`` = saturates only at the last layer), one row per position before any filter, and an
    optional ``document`` column. Returns ``{"saturation" (N, k), "document" (N,) or None}``; an
    :class:`~huggingface_patch.errors.InputError` names what is wrong."""
    import csv
    import os
    import re

    from ..errors import InputError

    if not os.path.isfile(path):
        raise InputError(f"saturation table not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path} is not a readable CSV file ({exc})") from None
    ranks = sorted((int(m.group(1)), c) for c in columns if (m := re.fullmatch(r"s(\d+)", c.strip())))
    names = [c for _, c in ranks]
    if [r for r, _ in ranks] != list(range(1, len(ranks) + 1)):
        raise InputError(f"{path} needs columns s1, s2, ..., sk without gaps (found {', '.join(names) or 'none'})")
    if len(names) < 2:
        raise InputError(f"{path} has {len(names)} rank column(s): the ordering test needs at least two (s1, s2, ...)")
    if not rows:
        raise InputError(f"{path} has no rows")
    values = np.empty((len(rows), len(names)), dtype=np.int64)
    for i, row in enumerate(rows):
        for j, name in enumerate(names):
            text = (row.get(name) or "").strip()
            try:
                value = int(text)
            except ValueError:
                raise InputError(f"{path} row {i + 2}, column {name}: {text!r} is not a whole number") from None
            if not 0 <= value < num_layers:
                raise InputError(f"{path} row {i + 2}, column {name}: {value} is outside 0..{num_layers - 1} "
                                 f"(0-based layer indices of a {num_layers}-layer model; check --num-layers)")
            values[i, j] = value
    documents = [row.get("document") for row in rows] if "document" in columns else None
    return {"saturation": values, "document": documents}
