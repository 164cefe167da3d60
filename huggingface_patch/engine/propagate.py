"""Apply the frozen linear maps of DESIGN.md §1 to decomposition tensors.

A *stream* is either the bias term, kept in plain sequence layout ``(B, T, H)``, or a block of sources in
block layout ``(B, S, W, H)`` (see :mod:`.layouts`). The same code handles both: per-target coefficients
are aligned to the stream's layout by a :class:`Layout`, and only attention mixing differs.
"""

from __future__ import annotations

import torch

from ..architectures.spec import AttentionSpec, NormSpec
from .frozen import FrozenBlock, FrozenModel, FrozenNorm
from .layouts import window_view
from .packed import PackedCausal
from .sparse import sparse_mlp

#: query rows per chunk when mixing with packed (lower-triangle) probabilities
MIX_ROWS = 256


def mix_full(values: torch.Tensor, probs, spec: AttentionSpec) -> torch.Tensor:
    """Attention mixing in sequence layout: values ``(B, T, g*d)``, probs ``(B, h, T, T)`` or
    :class:`~.packed.PackedCausal` -> ``(B, T, h*d)``. Packed probabilities are unpacked a chunk of query rows
    at a time (only the columns up to the chunk's last row)."""
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

    def mix(self, values: torch.Tensor, probs, spec: AttentionSpec) -> torch.Tensor:
        """Mix each source's value vectors over its own window with the real attention probabilities.

        values ``(B, S, w, g*d)`` -> ``(B, S, w, h*d)``. Source ``i`` only has values at positions
        ``start+i .. start+i+w-1``, so it needs the ``w x w`` square of probabilities on that diagonal: all
        ``S`` squares are one overlapping strided view of the block's probabilities (row and column
        stride advance together), which ``bmm`` reads in place: one batched matmul per head mixes every
        source of the block, at ``w^2 d`` per source and head.
        """
        batch, sources, window, _ = values.shape
        groups = spec.num_heads // spec.num_kv_heads
        size, lo = sources + window - 1, self.start
        avail = min(size, self.length - lo)
        if isinstance(probs, PackedCausal):  # zero past the end already
            square = probs.block(lo, lo + size, lo, lo + size)
        else:
            square = probs[:, :, lo : lo + avail, lo : lo + avail]
        if square.shape[-1] < size:  # the block's windows run past the end of the sequence: zero-extend
            padded = square.new_zeros(*square.shape[:2], size, size)
            padded[:, :, :avail, :avail] = square
            square = padded
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


def apply_norm(state: torch.Tensor, norm: NormSpec, frozen: FrozenNorm, layout) -> torch.Tensor:
    """LayerNorm: ``(c - mean c) * scale * gamma``; RMSNorm: ``c * scale * gamma``.

    The bias term also receives beta and the model's own round-off correction.
    """
    is_bias = layout.is_bias
    scale = layout.align(frozen.scale)
    # one new tensor, then in-place updates (these are elementwise passes over the whole block)
    if norm.kind == "layer":
        state = state - state.mean(-1, keepdim=True)
        state.mul_(scale[..., None])
    else:
        state = state * scale[..., None]
    if norm.weight is not None:
        state.mul_(norm.weight.to(state.dtype))
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

    Biases (and the tangent convention's intercept) go to the bias term only. Source blocks take the
    sparse path (only neurons with a non-zero coefficient) when the layer was marked for it.
    """
    if not layout.is_bias and frozen.sparse is not None:
        return sparse_mlp(state, frozen, layout)
    first, last = frozen.linear_in, frozen.linear_out
    inner = first(state) if layout.is_bias else first.linear(state)
    inner.mul_(layout.align(frozen.coefficient))  # in place: the (S, w, F) block is the largest tensor
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
