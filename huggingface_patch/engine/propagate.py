"""Apply the frozen linear maps of DESIGN.md §1 to decomposition tensors.

A *stream* is either the bias term, kept in plain sequence layout ``(B, T, H)``, or a block of sources in
block layout ``(B, S, W, H)`` (see :mod:`.layouts`). The same code handles both: per-target coefficients
are aligned to the stream's layout by a :class:`Layout`, and only attention mixing differs.
"""

from __future__ import annotations

import torch

from ..architectures.spec import AttentionSpec, NormSpec
from .frozen import FrozenBlock, FrozenModel, FrozenNorm
from .layouts import skew, unskew, window_view


def mix_full(values: torch.Tensor, probs: torch.Tensor, spec: AttentionSpec) -> torch.Tensor:
    """Attention mixing in sequence layout: values ``(B, T, g*d)``, probs ``(B, h, T, T)`` -> ``(B, T, h*d)``."""
    batch, length, _ = values.shape
    groups = spec.num_heads // spec.num_kv_heads
    v = values.view(batch, length, spec.num_kv_heads, 1, spec.head_dim).permute(0, 2, 3, 1, 4)
    a = probs.view(batch, spec.num_kv_heads, groups, length, length)
    out = torch.matmul(a, v)  # (B, g, groups, T, d)
    return out.permute(0, 3, 1, 2, 4).reshape(batch, length, spec.num_heads * spec.head_dim)


class FullLayout:
    """Sequence layout ``(B, T, H)`` (the bias term)."""

    is_bias = True

    def __init__(self, length: int):
        self.length = length

    def align(self, per_target: torch.Tensor) -> torch.Tensor:
        return per_target[:, : self.length]

    def mix(self, values: torch.Tensor, probs: torch.Tensor, spec: AttentionSpec) -> torch.Tensor:
        return mix_full(values, probs, spec)


class BlockLayout:
    """Block layout ``(B, S, W, H)`` for sources ``start .. start+S-1`` of a sequence of length ``T``."""

    is_bias = False

    def __init__(self, start: int, sources: int, window: int, length: int):
        self.start, self.sources, self.window, self.length = start, sources, window, length
        # targets reachable from this block that exist in the sequence
        self.span = min(sources + window - 1, length - start)

    def align(self, per_target: torch.Tensor) -> torch.Tensor:
        return window_view(per_target, self.start, self.sources, self.window)

    def mix(self, values: torch.Tensor, probs: torch.Tensor, spec: AttentionSpec) -> torch.Tensor:
        """Mix each source's value vectors over its positions with the real attention probabilities.

        values ``(B, S, W, g*d)`` -> ``(B, S, W, h*d)``. Each source's window is laid out on absolute
        positions of the block's span, so one matmul per head group serves every source of the block.
        """
        batch, sources, window, _ = values.shape
        span, groups = self.span, spec.num_heads // spec.num_kv_heads
        rows = skew(values)[:, :, :span]  # (B, S, span, g*d)
        v = rows.reshape(batch, sources, span, spec.num_kv_heads, spec.head_dim)
        v = v.permute(0, 3, 2, 1, 4).reshape(batch, spec.num_kv_heads, 1, span, sources * spec.head_dim)
        lo = self.start
        a = probs[:, :, lo : lo + span, lo : lo + span].reshape(batch, spec.num_kv_heads, groups, span, span)
        mixed = torch.matmul(a, v)  # (B, g, groups, span, S*d)
        mixed = mixed.view(batch, spec.num_kv_heads, groups, span, sources, spec.head_dim)
        mixed = mixed.permute(0, 4, 3, 1, 2, 5).reshape(batch, sources, span, spec.num_heads * spec.head_dim)
        full = mixed.new_zeros(batch, sources, sources + window - 1, mixed.shape[-1])
        full[:, :, :span] = mixed
        return unskew(full, window)


def apply_norm(state: torch.Tensor, norm: NormSpec, frozen: FrozenNorm, layout) -> torch.Tensor:
    """LayerNorm: ``(c - mean c) * scale * gamma``; RMSNorm: ``c * scale * gamma``.

    The bias term also receives beta and the model's own round-off correction.
    """
    is_bias = layout.is_bias
    scale = layout.align(frozen.scale)
    if norm.kind == "layer":
        state = state - state.mean(-1, keepdim=True)
    state = state * scale[..., None]
    if norm.weight is not None:
        state = state * norm.weight.to(state.dtype)
    if is_bias:
        if norm.bias is not None:
            state = state + norm.bias.to(state.dtype)
        state = state + frozen.correction
    return state


def apply_attention(state: torch.Tensor, spec: AttentionSpec, probs: torch.Tensor, layout) -> torch.Tensor:
    """``W_O (A (W_V c))``; the bias term also carries ``b_V`` and ``b_O``."""
    values = spec.value(state) if layout.is_bias else spec.value.linear(state)
    mixed = layout.mix(values, probs, spec)
    return spec.output(mixed) if layout.is_bias else spec.output.linear(mixed)


def apply_mlp(state: torch.Tensor, frozen: FrozenBlock, layout) -> torch.Tensor:
    """``W_out (coef * (W_in c))``, e.g. ``W_2 (r * (W_1 c))`` or ``W_down (act(gate(x)) * (W_up c))``.

    Biases (and the tangent convention's intercept) go to the bias term only.
    """
    first, last = frozen.linear_in, frozen.linear_out
    inner = first(state) if layout.is_bias else first.linear(state)
    inner = inner * layout.align(frozen.coefficient)
    if layout.is_bias and frozen.intercept is not None:
        inner = inner + frozen.intercept
    return last(inner) if layout.is_bias else last.linear(inner)


def propagate_layer(state: torch.Tensor, layer_spec, frozen_blocks: list[FrozenBlock], layout) -> torch.Tensor:
    """Push a stream through one decoder layer (its residual blocks in order)."""
    # with device_map="auto" each layer runs where its weights live
    state = state.to(layer_spec.attention.value.device)
    for block, frozen in zip(layer_spec.blocks, frozen_blocks):
        y = state
        if block.pre_norm is not None:
            y = apply_norm(state, block.pre_norm, frozen.pre_norm, layout)
        if isinstance(block.sublayer, AttentionSpec):
            update = apply_attention(y, block.sublayer, frozen.coefficient, layout)
        else:
            update = apply_mlp(y, frozen, layout)
        state = state + update
        if block.post_norm is not None:
            state = apply_norm(state, block.post_norm, frozen.post_norm, layout)
    return state


def finalize(state: torch.Tensor, frozen: FrozenModel, layout) -> torch.Tensor:
    """Final norm (if any) and ``project_out`` (if any): the state the LM head reads."""
    spec = frozen.spec
    if frozen.final_norm is not None:
        state = state.to(frozen.final_norm.scale.device)
        state = apply_norm(state, spec.final_norm, frozen.final_norm, layout)
    if spec.project_out is not None:
        state = spec.project_out.linear(state)
    return state
