"""Causal attention probabilities stored as their lower triangle (half the memory of ``(B, h, T, T)``).

The frozen attention probabilities of every layer are the largest thing a decomposition keeps
(``L x h x T^2`` numbers: 2.4 GB for an OPT-125m-shaped model at T = 2048 in fp32). A causal model's
probabilities above the diagonal are exactly zero, so only the triangle is stored, with one extra zero at
the end that every index above the diagonal points to. Squares and row ranges are rebuilt on demand with
one gather.
"""

from __future__ import annotations

from functools import lru_cache

import torch


@lru_cache(maxsize=4)
def _triangle_index(length: int, device: str) -> torch.Tensor:
    """Flat ``r * T + c`` of the cells ``c <= r``, row by row."""
    rows = torch.arange(length, device=device)
    counts = rows + 1
    r = torch.repeat_interleave(rows, counts)
    starts = torch.cumsum(counts, 0) - counts
    c = torch.arange(int(counts.sum()), device=device) - torch.repeat_interleave(starts, counts)
    return r * length + c


@lru_cache(maxsize=2)
def _block_index(length: int, row_lo: int, row_hi: int, col_lo: int, col_hi: int, zero: int,
                 device: str) -> torch.Tensor:
    """Flat indices into the packed triangle for a dense block (``zero`` = the extra zero element); cached
    because every layer of a block asks for the same one."""
    r = torch.arange(row_lo, row_hi, device=device)[:, None]
    c = torch.arange(col_lo, col_hi, device=device)[None, :]
    flat = r * (r + 1) // 2 + c
    flat.masked_fill_((c > r) | (r >= length), zero)
    return flat.reshape(-1)


class PackedCausal:
    """Attention probabilities ``(B, h, T, T)`` kept as ``data`` ``(B, h, T(T+1)/2 + 1)``."""

    def __init__(self, data: torch.Tensor, length: int):
        self.data = data
        self.length = length

    @classmethod
    def pack(cls, probs: torch.Tensor, dtype: torch.dtype | None = None, check: bool = True) -> "PackedCausal":
        """Pack ``probs`` ``(B, h, T, T)``; with ``check``, refuse probabilities that are not causal
        (rows of the triangle must still sum to 1 where the full rows do)."""
        batch, heads, length, _ = probs.shape
        index = _triangle_index(length, str(probs.device))
        flat = probs.reshape(batch, heads, length * length)
        data = flat.new_zeros(batch, heads, index.numel() + 1, dtype=dtype or probs.dtype)
        data[..., :-1] = flat.index_select(-1, index)
        packed = cls(data, length)
        if check:
            full_sums = probs.sum(-1)
            kept = packed.row_sums()
            lost = (full_sums.to(kept.dtype) - kept).abs().max() if full_sums.numel() else 0.0
            if float(lost) > 1e-3:
                raise ValueError(f"attention probabilities are not causal (mass {float(lost):.3g} above the diagonal)")
        return packed

    def to(self, device=None, dtype=None) -> "PackedCausal":
        return PackedCausal(self.data.to(device=device, dtype=dtype), self.length)

    def row_sums(self) -> torch.Tensor:
        """``(B, h, T)`` sums of each row's stored cells."""
        counts = torch.arange(1, self.length + 1, device=self.data.device)
        segments = torch.repeat_interleave(torch.arange(self.length, device=self.data.device), counts)
        out = self.data.new_zeros(*self.data.shape[:2], self.length)
        out.index_add_(-1, segments, self.data[..., :-1])
        return out

    def block(self, row_lo: int, row_hi: int, col_lo: int, col_hi: int) -> torch.Tensor:
        """Dense ``(B, h, row_hi - row_lo, col_hi - col_lo)`` slice of the probabilities; rows or columns
        past the end of the sequence are zero."""
        index = _block_index(self.length, row_lo, row_hi, col_lo, col_hi, self.data.shape[-1] - 1,
                             str(self.data.device))
        out = self.data.index_select(-1, index)
        return out.view(*self.data.shape[:2], row_hi - row_lo, col_hi - col_lo)

    def full(self) -> torch.Tensor:
        return self.block(0, self.length, 0, self.length)
