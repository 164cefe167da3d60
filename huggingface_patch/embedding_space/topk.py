"""Top entries of a vocabulary × vocabulary matrix ``M = left @ right`` without materialising it.

``left`` is ``(R, d)`` and ``right`` ``(d, C)`` (for ``Eᵀ W_VO E``: ``left = Eᵀ W_V,h``, ``right = W_O,h E``),
so ``M`` has rank ``d`` but ``R × C`` entries (2.5·10⁹ for GPT-2). :func:`blocked_topk` walks ``M`` in row
blocks of at most ``max_block_bytes`` and keeps a running buffer of the best ``k`` entries: peak memory is
a few blocks plus the buffer, whatever ``R × C`` is.

:func:`approx_topk` reproduces the threshold search of the original ``approx_topk`` (double the threshold
from ``th0`` until at most ``max_k`` entries exceed it, then bisect, at most ``max_iters`` times, towards a
count in ``[min_k, max_k]``) and returns the entries above the threshold found. The counts are answered
exactly from a single blocked pass that keeps the best ``max_k + 1`` entries (any threshold below the
``(max_k+1)``-th value has more than ``max_k`` entries above it, which is all the search needs to know), so
the search costs one pass instead of one per iteration. Unlike the original, the result is then clamped:
if the search ends outside ``[min_k, max_k]`` the best ``min_k`` (or ``max_k``) entries are returned.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

DEFAULT_BLOCK_BYTES = 64 * 2**20


@dataclass
class TopEntries:
    """Entries ``M[rows[n], cols[n]] = values[n]``, sorted by value (best first).

    Ids are positions in the full row/column ranges (after mapping back through ``row_ids``/``col_ids``).
    """

    rows: torch.Tensor
    cols: torch.Tensor
    values: torch.Tensor
    threshold: float | None = None
    stats: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.values.numel())


def _block_rows(columns: int, itemsize: int, max_block_bytes: int) -> int:
    return max(1, int(max_block_bytes) // max(1, columns * itemsize))


def _candidates(values: torch.Tensor, rows: torch.Tensor, k: int, floor: float | None):
    """The entries of one block ``values`` ``(r, C)`` (rows ``rows`` of the matrix) that can enter the buffer:
    those above ``floor`` once the buffer is full, else the block's ``k`` largest finite ones. Returns
    ``(values, rows, columns)``."""
    if floor is not None:
        hot = (values.amax(dim=1) > floor).nonzero().squeeze(1)  # rows that can enter the buffer
        sub = values[hot]
        local = (sub > floor).nonzero()
        return sub[local[:, 0], local[:, 1]], rows[hot[local[:, 0]]], local[:, 1]
    local = torch.isfinite(values).nonzero()
    cand_values = values[local[:, 0], local[:, 1]]
    if cand_values.numel() > k:
        cand_values, pick = cand_values.topk(k, sorted=False)
        local = local[pick]
    return cand_values, rows[local[:, 0]], local[:, 1]


def _merge(best_values: torch.Tensor, best_index: torch.Tensor, values: torch.Tensor, index: torch.Tensor, k: int):
    """The buffer with the candidates added, cut back to its ``k`` largest entries (unsorted)."""
    best_values, best_index = torch.cat([best_values, values]), torch.cat([best_index, index])
    if best_values.numel() > k:
        best_values, pick = best_values.topk(k, sorted=False)
        best_index = best_index[pick]
    return best_values, best_index


@torch.no_grad()
def blocked_topk(left: torch.Tensor, right: torch.Tensor, k: int, *, row_groups: torch.Tensor | None = None,
                 col_groups: torch.Tensor | None = None, max_block_bytes: int = DEFAULT_BLOCK_BYTES,
                 dtype: torch.dtype = torch.float32, progress: bool = False, desc: str = "top entries") -> TopEntries:
    """The exact ``k`` largest entries of ``left @ right`` (``(R, d) @ (d, C)``), in blocks of rows.

    ``row_groups`` ``(R,)`` / ``col_groups`` ``(C,)``: entries whose row and column fall in the same group
    are excluded (pairs of identical or near-identical tokens). Excluded entries are never returned, so
    fewer than ``k`` entries come back only when fewer than ``k`` remain. ``stats`` records the block shape,
    the bytes of one block and the number of blocks.
    """
    from tqdm.auto import tqdm

    start_time = time.perf_counter()
    left, right = left.to(dtype), right.to(dtype)
    n_rows, n_cols = left.shape[0], right.shape[1]
    if left.shape[1] != right.shape[0]:
        raise ValueError(f"inner dimensions differ: left {tuple(left.shape)}, right {tuple(right.shape)}")
    k = max(0, min(int(k), n_rows * n_cols))
    rows_per_block = _block_rows(n_cols, left.element_size(), max_block_bytes)
    n_blocks = math.ceil(n_rows / rows_per_block) if n_rows else 0
    if col_groups is not None:
        col_groups = col_groups.to(left.device)
    # Rows in order of decreasing norm: |left_i · right_j| <= |left_i| max_j |right_j|, so once the buffer is
    # full and that bound falls to the buffer's smallest value, no later row can contribute (exact pruning).
    row_norms = left.norm(dim=1)
    order = row_norms.argsort(descending=True)
    bounds = (row_norms[order] * right.norm(dim=0).max()).tolist() if n_cols else []
    best_values = torch.empty(0, dtype=dtype, device=left.device)
    best_index = torch.empty(0, dtype=torch.long, device=left.device)
    floor = float("-inf")
    rows_done = 0
    bar = tqdm(total=n_blocks, desc=desc, unit="block", disable=not progress, leave=False)
    for first in range(0, n_rows, rows_per_block):
        if best_values.numel() >= k and bounds[first] * (1 + 1e-6) < floor:
            break  # every remaining entry is below the buffer's smallest value
        rows = order[first : first + rows_per_block]
        values = left[rows] @ right  # (r, C): the only block-sized tensor
        if row_groups is not None and col_groups is not None:
            same = row_groups.to(left.device)[rows][:, None] == col_groups[None, :]
            values.masked_fill_(same, float("-inf"))
            del same
        cand_values, cand_rows, cand_cols = _candidates(values, rows, k, floor if best_values.numel() >= k else None)
        del values
        rows_done += rows.numel()
        bar.update(1)
        if cand_values.numel():
            best_values, best_index = _merge(best_values, best_index, cand_values, cand_rows * n_cols + cand_cols, k)
            if best_values.numel() >= k and k > 0:
                floor = float(best_values.min())
        del cand_values, cand_rows, cand_cols
    bar.close()
    order = best_values.argsort(descending=True, stable=True)
    best_values, best_index = best_values[order], best_index[order]
    block = min(rows_per_block, n_rows)
    stats = dict(block_rows=rows_per_block, block_shape=[block, n_cols], block_bytes=block * n_cols
                 * left.element_size(), blocks=n_blocks, matrix_entries=n_rows * n_cols, rows_computed=rows_done,
                 seconds=round(time.perf_counter() - start_time, 3))
    return TopEntries(best_index // n_cols, best_index % n_cols, best_values, None, stats)


def threshold_search(count_above, min_k: int = 500, max_k: int = 250_000, th0: float = 10.0,
                     max_iters: int = 10) -> tuple[float, int, int]:
    """The original ``approx_topk`` search over a threshold ``th`` on ``count_above(th) = #{M > th}``.

    Start with ``[0, th0]``; while more than ``max_k`` entries exceed the upper end, move the lower end to it
    and double it. If the count is then in ``[min_k, max_k]`` stop, else bisect at most ``max_iters`` times
    (too many -> raise the lower end, too few -> lower the upper end), stopping as soon as the count is in
    range. Returns ``(threshold, count, evaluations)``; the count may still be out of range.
    """
    if th0 <= 0:
        raise ValueError(f"th0 must be positive, got {th0}")
    if not 0 <= min_k <= max_k:
        raise ValueError(f"need 0 <= min_k <= max_k, got min_k={min_k}, max_k={max_k}")
    low, high = 0.0, float(th0)
    count = count_above(high)
    evaluations = 1
    while count > max_k and math.isfinite(high * 2):
        low, high = high, high * 2
        count = count_above(high)
        evaluations += 1
    threshold = high
    if min_k <= count <= max_k:
        return threshold, count, evaluations
    for _ in range(max_iters):
        threshold = (low + high) / 2
        count = count_above(threshold)
        evaluations += 1
        if min_k <= count <= max_k:
            break
        if count > max_k:
            low = threshold
        else:
            high = threshold
    return threshold, count, evaluations


def approx_topk(
    left: torch.Tensor,
    right: torch.Tensor,
    *,
    min_k: int = 500,
    max_k: int = 250_000,
    th0: float = 10.0,
    max_iters: int = 10,
    **blocked_kwargs,
) -> TopEntries:
    """Entries of ``left @ right`` above the threshold found by :func:`threshold_search`, best first.

    Between ``min_k`` and ``max_k`` entries are returned (fewer only if fewer entries are not excluded).
    ``stats`` adds the threshold, the search's own count and evaluations, and whether the result was clamped.
    ``blocked_kwargs`` go to :func:`blocked_topk` (groups, block size, dtype, progress).
    """
    if not 0 <= min_k <= max_k:
        raise ValueError(f"need 0 <= min_k <= max_k, got min_k={min_k}, max_k={max_k}")
    best = blocked_topk(left, right, max_k + 1, **blocked_kwargs)
    values = best.values
    complete = len(best) < max_k + 1  # the buffer holds every non-excluded entry
    floor = float(values[-1]) if len(best) else float("-inf")

    def count_above(threshold: float) -> int:
        if complete or threshold >= floor:
            # values are sorted descending: the count of entries > threshold
            return int((values > threshold).sum())
        return max_k + 1  # more than max_k entries lie above any threshold below the (max_k+1)-th value

    threshold, search_count, evaluations = threshold_search(count_above, min_k, max_k, th0, max_iters)
    keep = int((values > threshold).sum())
    clamped = None
    if keep > max_k:
        keep, clamped = max_k, "max_k"
    elif keep < min_k:
        keep, clamped = min(min_k, len(best)), "min_k"
    stats = dict(best.stats, threshold=threshold, search_count=search_count if search_count <= max_k else f">{max_k}",
                 search_evaluations=evaluations, clamped=clamped, returned=keep, min_k=min_k, max_k=max_k, th0=th0,
                 max_iters=max_iters)
    return TopEntries(best.rows[:keep], best.cols[:keep], values[:keep], threshold, stats)
