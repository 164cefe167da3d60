"""Attention with frozen probabilities: ``W_O (A (W_V c))`` (``docs/design.md``, "attention").

``A`` are the real attention probabilities of every head, captured from the model (RoPE, ALiBi, scaling,
masks, sliding windows, q/k norms and logit softcapping all live inside them); under grouped-query
attention query head ``j`` mixes the values of key/value head ``j // (h // g)``. The bias term carries
``b_V`` and ``b_O``. Latent attention (DeepSeek V3) computes the values from a low-rank latent through a
norm, frozen at the real latent like every norm.

Two mixings: :func:`mix_sequence` for a stream in sequence layout ``(B, T, g*d)`` (the bias term and the
real stream) and :func:`mix_block` for a block of sources ``(B, S, w, g*d)`` (see
:mod:`.layouts`). Probabilities are ``(B, h, T, T)`` or :class:`~.packed.PackedCausal`.
"""

from __future__ import annotations

import torch

from ..architectures.spec import AttentionSpec
from .norms import apply_norm, freeze_norm
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


def value_scale(spec: AttentionSpec, values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor | None:
    """The frozen ratio ``clamp(z) / z`` ``(B, T, g*d)`` of the real values ``z`` under ``spec.value_clip``
    (1 where ``z == 0``, the clamp's slope there; 0 at padding), or None without a clip."""
    if spec.value_clip is None:
        return None
    clipped = values.clamp(-spec.value_clip, spec.value_clip)
    zero = values == 0
    scale = torch.where(zero, torch.ones_like(values), clipped / torch.where(zero, torch.ones_like(values), values))
    return torch.where(valid[..., None].to(scale.device), scale, torch.zeros((), dtype=scale.dtype,
                                                                             device=scale.device))


def attention_real(spec: AttentionSpec, y: torch.Tensor, probs, valid: torch.Tensor | None = None,
                   model_dtype: torch.dtype | None = None):
    """``(output, value scale, latent norm)``: the sublayer's real output for its real (normed) input ``y``
    ``(B, T, H)``, the frozen value ratio of :func:`value_scale` (None without a value clip) and the frozen norm
    of a latent value path (:class:`~.norms.FrozenNorm`; None without one)."""
    valid = torch.ones(y.shape[:2], dtype=torch.bool, device=y.device) if valid is None else valid
    latent_norm = None
    if spec.value_latent is not None:
        latent, latent_norm = freeze_norm(spec.value_latent_norm, spec.value_latent(y), valid,
                                          model_dtype or y.dtype)
        values = spec.value(latent)
    else:
        values = spec.value(y)
    scale = None
    if spec.value_clip is not None:
        scale = value_scale(spec, values, valid)
        values = values.clamp(-spec.value_clip, spec.value_clip)
    return spec.output(mix_sequence(values, probs, spec)), scale, latent_norm


def _values(state: torch.Tensor, spec: AttentionSpec, layout, precision: Precision, latent_norm) -> torch.Tensor:
    """A stream's values: through the latent and its frozen norm first where the family has one (the bias
    term takes the biases, the norm's shift and its round-off correction)."""
    if spec.value_latent is not None:
        latent = spec.value_latent(state) if layout.is_bias else precision.linear(state, spec.value_latent)
        state = apply_norm(latent, spec.value_latent_norm, latent_norm, layout)
    return spec.value(state) if layout.is_bias else precision.linear(state, spec.value)


def apply_attention(state: torch.Tensor, spec: AttentionSpec, probs, layout,
                    precision: Precision = EXACT, scale: torch.Tensor | None = None,
                    latent_norm=None) -> torch.Tensor:
    """A stream through the frozen attention; only the bias term carries ``b_V`` and ``b_O``. Source blocks
    take their products in ``precision`` (the bias term is always exact). ``scale``: the frozen value ratio
    (:func:`value_scale`), applied to every stream's values at their position; ``latent_norm``: the frozen norm
    of a latent value path."""
    values = _values(state, spec, layout, precision, latent_norm)
    if layout.is_bias:
        if scale is not None:
            values = values * scale
        return spec.output(mix_sequence(values, probs, spec))
    if scale is not None:
        values = values * layout.align(scale.to(values.dtype))
    mixed = mix_block(values, probs, spec, layout, precision)
    return precision.linear(mixed, spec.output)
