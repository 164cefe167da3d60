"""Causal attention probabilities stored compactly: the lower triangle, or the band a window reads.

The frozen attention probabilities of every layer are the largest thing a decomposition keeps
(``L x h x T^2`` numbers: 2.4 GB for an OPT-125m-shaped model at T = 2048 in fp32).

* :class:`PackedCausal`: a causal model's probabilities above the diagonal are exactly zero, so only the
  triangle is stored (half the memory), with one extra zero at the end that every index above the diagonal
  points to.
* :class:`BandCausal`: source blocks only ever read cells ``0 <= row - col < W`` (a source's contribution
  exists at its own position and the ``W - 1`` after it), so once the bias term has been carried through a
  layer with its full probabilities, the layer keeps just that band: ``T x W`` numbers instead of ``T^2``
  (SmolLM2 at T = 8192, W = 50: 0.4 GB instead of 36 GB packed).

Both rebuild dense squares on demand with one gather (:meth:`block`).
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


@lru_cache(maxsize=2)
def _band_index(length: int, width: int, row_lo: int, row_hi: int, col_lo: int, col_hi: int,
                device: str) -> torch.Tensor:
    """Flat indices into band data ``(T * width + 1)`` for a dense block; cells outside the band, the
    triangle or the sequence point to the extra zero at the end."""
    r = torch.arange(row_lo, row_hi, device=device)[:, None]
    c = torch.arange(col_lo, col_hi, device=device)[None, :]
    offset = r - c  # 0 on the diagonal
    flat = r * width + (width - 1 - offset)
    flat.masked_fill_((offset < 0) | (offset >= width) | (r >= length) | (c < 0), length * width)
    return flat.reshape(-1)


class BandCausal:
    """Attention probabilities ``(B, h, T, T)`` kept as the band ``data`` ``(B, h, T * W + 1)``: row ``t``
    holds columns ``t - W + 1 .. t`` (zero where negative), then one extra zero. Only what source blocks
    with a window of at most ``W`` read; the bias term must already have been carried through the layer."""

    def __init__(self, data: torch.Tensor, length: int, width: int):
        self.data, self.length, self.width = data, length, width

    @classmethod
    def from_full(cls, probs, width: int, dtype: torch.dtype | None = None) -> "BandCausal":
        """The band of ``probs`` (``(B, h, T, T)`` or :class:`PackedCausal`) for windows up to ``width``."""
        length = probs.length if isinstance(probs, PackedCausal) else probs.shape[-1]
        width = max(1, min(width, length))
        chunks = []
        for lo in range(0, length, 1024):  # a row range at a time: packed storage is unpacked per chunk
            hi = min(length, lo + 1024)
            rows = probs.block(lo, hi, 0, hi) if isinstance(probs, PackedCausal) else probs[..., lo:hi, :hi]
            r = torch.arange(lo, hi, device=rows.device)[:, None]
            c = r - (width - 1) + torch.arange(width, device=rows.device)[None, :]  # (rows, width) columns
            keep = c >= 0
            gathered = rows.gather(-1, c.clamp(min=0).expand(*rows.shape[:-2], -1, -1))
            chunks.append(torch.where(keep, gathered, torch.zeros((), dtype=rows.dtype, device=rows.device)))
        band = torch.cat(chunks, dim=-2).to(dtype or chunks[0].dtype)  # (B, h, T, width)
        data = band.new_zeros(*band.shape[:2], length * width + 1)
        data[..., :-1] = band.reshape(*band.shape[:2], -1)
        return cls(data, length, width)

    def to(self, device=None, dtype=None) -> "BandCausal":
        return BandCausal(self.data.to(device=device, dtype=dtype), self.length, self.width)

    def block(self, row_lo: int, row_hi: int, col_lo: int, col_hi: int) -> torch.Tensor:
        """Dense ``(B, h, row_hi - row_lo, col_hi - col_lo)`` slice; zero outside the band and past the end."""
        index = _band_index(self.length, self.width, row_lo, row_hi, col_lo, col_hi, str(self.data.device))
        out = self.data.index_select(-1, index)
        return out.view(*self.data.shape[:2], row_hi - row_lo, col_hi - col_lo)
