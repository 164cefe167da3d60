"""Attention with frozen probabilities: ``W_O (A (W_V c))`` (``docs/design.md``, "attention").

``A`` are the real attention probabilities of every head, captured from the model (RoPE, ALiBi, scaling,
masks, sliding windows, q/k norms and logit softcapping all live inside them); under grouped-query
attention query head ``j`` mixes the values of key/value head ``j // (h // g)``. The bias term carries
``b_V`` and ``b_O``.

Two mixings: :func:`mix_sequence` for a stream in sequence layout ``(B, T, g*d)`` (the bias term and the
real stream) and :func:`mix_block` for a block of sources ``(B, S, w, g*d)`` (see
:mod:`.layouts`). Probabilities are ``(B, h, T, T)`` or :class:`~.packed.PackedCausal`.
"""

from __future__ import annotations

import torch

from ..architectures.spec import AttentionSpec
from .packed import BandCausal, PackedCausal
from .precision import EXACT, Precision

#: query rows per chunk when mixing with packed (lower-triangle) probabilities
MIX_ROWS = 256


def mask_padding_attention(probs: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Zero the rows and columns of padding positions (``valid`` ``(B, T)`` False) of ``(B, h, T, T)``
    probabilities (no copy when nothing is padded)."""
    if bool(valid.all()):
        return probs
    keep = valid.to(probs.device)
    keep = keep[:, None, :, None] & keep[:, None, None, :]
    return torch.where(keep, probs, torch.zeros((), dtype=probs.dtype, device=probs.device))


def mix_sequence(values: torch.Tensor, probs, spec: AttentionSpec) -> torch.Tensor:
    """Values ``(B, T, g*d)`` -> ``(B, T, h*d)``. Packed probabilities are unpacked a chunk of query rows at a
    time (only the columns up to the chunk's last row)."""
    if isinstance(probs, BandCausal):
        raise ValueError("a whole sequence cannot be mixed with band-stored probabilities: they only hold what "
                         "source blocks read (the bias term is carried while the layer is frozen)")
    batch, length, _ = values.shape
    groups = spec.num_heads // spec.num_kv_heads
    v = values.view(batch, length, spec.num_kv_heads, 1, spec.head_dim).permute(0, 2, 3, 1, 4)
    if isinstance(probs, PackedCausal):
        chunks = []
        for lo in range(0, length, MIX_ROWS):
            hi = min(length, lo + MIX_ROWS)
            a = probs.block(lo, hi, 0, hi).view(batch, spec.num_kv_heads, groups, hi - lo, hi)
            chunks.append(torch.matmul(a, v[..., :hi, :]))
        out = torch.cat(chunks, dim=-2)
    else:
        a = probs.view(batch, spec.num_kv_heads, groups, length, length)
        out = torch.matmul(a, v)  # (B, g, groups, T, d)
    return out.permute(0, 3, 1, 2, 4).reshape(batch, length, spec.num_heads * spec.head_dim)


def mix_block(values: torch.Tensor, probs, spec: AttentionSpec, layout,
              precision: Precision = EXACT) -> torch.Tensor:
    """Mix each source's value vectors over its own window: values ``(B, S, w, g*d)`` -> ``(B, S, w, h*d)``.

    Source ``i`` of the block only has values at positions ``start+i .. start+i+w-1``, so it needs the
    ``w x w`` square of probabilities on that diagonal. All ``S`` squares are one overlapping strided view
    of the block's probabilities (row and column stride advance together), which ``bmm`` reads in place:
    one batched matmul per head mixes every source of the block, at ``w^2 d`` per source and head.
    """
    batch, sources, window, _ = values.shape
    groups = spec.num_heads // spec.num_kv_heads
    size, lo = sources + window - 1, layout.start
    avail = min(size, layout.length - lo)
    if isinstance(probs, (PackedCausal, BandCausal)):  # zero past the end already
        square = probs.block(lo, lo + size, lo, lo + size)
    else:
        square = probs[:, :, lo : lo + avail, lo : lo + avail]
    if square.shape[-1] < size:  # the block's windows run past the end of the sequence: zero-extend
        padded = square.new_zeros(*square.shape[:2], size, size)
        padded[:, :, :avail, :avail] = square
        square = padded
    square, values = precision.mixing_operands(square, values)
    st = square.stride()
    head_dim = spec.head_dim
    out = values.new_empty(batch, sources, window, spec.num_heads * head_dim)
    for b in range(batch):
        for head in range(spec.num_heads):
            # (S, w, w) overlapping view, batch stride = one row + one column: bmm reads it in place
            a = square[b, head].as_strided((sources, window, window), (st[2] + st[3], st[2], st[3]))
            kv = head // groups
            v = values[b, :, :, kv * head_dim : (kv + 1) * head_dim]  # (S, w, d)
            out[b, :, :, head * head_dim : (head + 1) * head_dim] = torch.bmm(a, v)
    return out


def attention_real(spec: AttentionSpec, y: torch.Tensor, probs) -> torch.Tensor:
    """The sublayer's real output for its real (normed) input ``y`` ``(B, T, H)``."""
    return spec.output(mix_sequence(spec.value(y), probs, spec))


def apply_attention(state: torch.Tensor, spec: AttentionSpec, probs, layout,
                    precision: Precision = EXACT) -> torch.Tensor:
    """A stream through the frozen attention; only the bias term carries ``b_V`` and ``b_O``. Source blocks
    take their products in ``precision`` (the bias term is always exact)."""
    if layout.is_bias:
        return spec.output(mix_sequence(spec.value(state), probs, spec))
    mixed = mix_block(precision.linear(state, spec.value), probs, spec, layout, precision)
    return precision.linear(mixed, spec.output)
