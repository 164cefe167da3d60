"""Index bookkeeping between the layouts of a decomposition (``docs/design.md`` §2).

* relative layout ``(..., W, T, H)``: entry ``[k, t]`` is the contribution of source ``t - k`` to target ``t``
  (the paper's files; rows with ``t - k < 0`` are zero);
* absolute layout ``(..., S, T, H)``: entry ``[s, t]``; zero for ``s > t``;
* block layout ``(B, S, W, D)`` used inside the engine: entry ``[i, k]`` is source ``s0 + i`` at target
  ``s0 + i + k``, so every row is one source followed through its own window.

All conversions are single vectorised copies (strided views or one advanced-indexing assignment).
:class:`FullLayout` and :class:`BlockLayout` align per-target coefficients ``(B, T, ...)`` to a stream.
"""

from __future__ import annotations

import torch


def relative_to_absolute(relative: torch.Tensor) -> torch.Tensor:
    """``(..., W, T, H)`` relative layout -> ``(..., T, T, H)`` absolute layout (sources beyond the window are 0)."""
    *lead, window, length, hidden = relative.shape
    k, t = torch.meshgrid(torch.arange(window), torch.arange(length), indexing="ij")
    keep = (t - k) >= 0
    out = relative.new_zeros(*lead, length, length, hidden)
    out[..., (t - k)[keep], t[keep], :] = relative[..., k[keep], t[keep], :]
    return out


def absolute_to_relative(absolute: torch.Tensor, window: int | None = None) -> torch.Tensor:
    """``(..., S, T, H)`` absolute layout -> ``(..., W, T, H)`` relative layout with ``W = min(window, T)``.

    Sources older than the window are dropped. ``S`` may be smaller than ``T`` (missing sources are zero).
    """
    *lead, num_sources, length, hidden = absolute.shape
    window = length if window is None else min(window, length)
    if window <= 0:
        raise ValueError(f"window must be positive, got {window}")
    k, t = torch.meshgrid(torch.arange(window), torch.arange(length), indexing="ij")
    keep = ((t - k) >= 0) & ((t - k) < num_sources)
    out = absolute.new_zeros(*lead, window, length, hidden)
    out[..., k[keep], t[keep], :] = absolute[..., (t - k)[keep], t[keep], :]
    return out


def window_view(per_target: torch.Tensor, start: int, sources: int, window: int) -> torch.Tensor:
    """View a per-target tensor ``(B, Tpad, *rest)`` in block layout ``(B, S, W, *rest)``.

    Entry ``[b, i, k]`` is ``per_target[b, start + i + k]``; ``Tpad`` must cover ``start + S + W - 1``
    (coefficients are stored zero-padded for that). No copy.
    """
    per_target = per_target.contiguous()
    batch, padded = per_target.shape[:2]
    if start + sources + window - 1 > padded:
        raise ValueError("per-target tensor is not padded far enough for this block")
    rest = per_target.shape[2:]
    inner = per_target[0, 0].numel() if rest else 1
    inner_strides = per_target.stride()[2:]
    return per_target.as_strided(
        (batch, sources, window, *rest),
        (padded * inner, inner, inner, *inner_strides),
        per_target.storage_offset() + start * inner,
    )


def block_scatter_index(start: int, sources: int, window: int, length: int, device) -> tuple[torch.Tensor,
                                                                                             torch.Tensor]:
    """Where block entries land in a relative-layout output ``(B, W, T, H)`` flattened to ``(B, W*T, H)``.

    Returns ``(keep, flat)``: ``keep`` is a boolean mask over the block's ``S*W`` entries (targets < T) and
    ``flat`` the matching indices ``k * T + t`` of the relative output.
    """
    i = torch.arange(sources, device=device)[:, None]
    k = torch.arange(window, device=device)[None, :]
    target = start + i + k
    keep = (target < length).reshape(-1)
    flat = (k * length + target).reshape(-1)[keep]
    return keep, flat


class FullLayout:
    """Sequence layout ``(B, T, H)``: the bias term (and the real stream)."""

    is_bias = True

    def __init__(self, length: int):
        self.length = length

    def align(self, per_target: torch.Tensor) -> torch.Tensor:
        return per_target[:, : self.length]


class BlockLayout:
    """Block layout ``(B, S, w, H)`` for sources ``start .. start+S-1`` of a sequence of length ``T``.

    ``w = min(W, T - start)``: a block near the end never computes targets past the sequence (with a full
    window this halves the work).
    """

    is_bias = False

    def __init__(self, start: int, sources: int, window: int, length: int):
        self.start, self.sources, self.length = start, sources, length
        self.window = min(window, length - start)
        # targets reachable from this block that exist in the sequence
        self.span = min(sources + self.window - 1, length - start)
        self._order = None

    def align(self, per_target: torch.Tensor) -> torch.Tensor:
        """``(B, T, *rest)`` -> ``(B, S, w, *rest)`` view; zero-extended past the end of the sequence."""
        needed = self.sources + self.window - 1
        if self.start + needed <= per_target.shape[1]:
            return window_view(per_target, self.start, self.sources, self.window)
        tail = per_target[:, self.start :]
        extended = tail.new_zeros(tail.shape[0], needed, *tail.shape[2:])
        extended[:, : tail.shape[1]] = tail
        return window_view(extended, 0, self.sources, self.window)

    def target_order(self):
        """Rows of the flattened block ``(S*w)`` grouped by target: ``(order, bounds)`` with the rows of
        relative target ``r`` (absolute ``start + r``) at ``order[bounds[r]:bounds[r+1]]``, ``r < span``."""
        if self._order is None:
            i = torch.arange(self.sources)[:, None]
            k = torch.arange(self.window)[None, :]
            relative = (i + k).reshape(-1)
            order = torch.argsort(relative, stable=True)
            counts = torch.bincount(relative, minlength=self.sources + self.window - 1)[: self.span]
            bounds = torch.zeros(self.span + 1, dtype=torch.long)
            bounds[1:] = counts.cumsum(0)
            self._order = (order[: int(bounds[-1])], bounds.tolist())
        return self._order
