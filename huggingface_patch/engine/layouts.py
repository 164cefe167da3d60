"""Index bookkeeping between the layouts of a decomposition (DESIGN.md §2).

* relative layout ``(..., W, T, H)``: entry ``[k, t]`` is the contribution of source ``t - k`` to target ``t``
  (the paper's files; rows with ``t - k < 0`` are zero);
* absolute layout ``(..., S, T, H)``: entry ``[s, t]``; zero for ``s > t``;
* block layout ``(B, S, W, D)`` used inside the engine: entry ``[i, k]`` is source ``s0 + i`` at target
  ``s0 + i + k``, so every row is one source followed through its own window.

All conversions are single vectorised copies (strided views or one advanced-indexing assignment).
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


def block_scatter_index(start: int, sources: int, window: int, length: int, device) -> tuple[torch.Tensor, torch.Tensor]:
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
