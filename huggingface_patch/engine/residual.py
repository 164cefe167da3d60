"""Residual blocks: a stream through one decoder layer, block by block, branch by branch.

A block is ``y = post_norm(x + sum_b output_norm_b(sublayer_b(pre_norm_b(x))))``
(:class:`~huggingface_patch.architectures.spec.ResidualBlock`); pre-norm, post-norm, sandwich and parallel
layers are all this one loop. A *stream* is either the bias term, in sequence layout ``(B, T, H)``, or a
block of sources in block layout ``(B, S, w, H)`` (:mod:`.layouts`); the layout aligns the frozen
per-target coefficients to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..architectures.spec import AttentionSpec, Branch, LayerSpec, MoESpec
from .attention import apply_attention
from .mlp import FrozenMLP, apply_mlp
from .moe import FrozenMoE, apply_moe
from .norms import FrozenNorm, apply_norm
from .precision import EXACT, Precision


@dataclass
class FrozenBranch:
    """One branch's frozen parts: its norms, and the attention probabilities ``(B, h, T, T)`` (or
    :class:`~.packed.PackedCausal`) or the :class:`~.mlp.FrozenMLP`."""

    pre_norm: FrozenNorm | None
    sublayer: torch.Tensor | FrozenMLP | FrozenMoE
    output_norm: FrozenNorm | None = None
    #: attention with a value clip (OLMo): the frozen ratio ``clamp(z) / z`` of the real values ``(B, T, g*d)``
    value_scale: torch.Tensor | None = None
    #: latent attention (DeepSeek V3): the norm of the value latent, frozen at the real latent
    value_norm: FrozenNorm | None = None


@dataclass
class FrozenBlock:
    """One residual block's frozen branches and its post norm."""

    branches: list[FrozenBranch]
    post_norm: FrozenNorm | None = None


def apply_branch(x: torch.Tensor, branch: Branch, frozen: FrozenBranch, layout, normed: dict,
                 precision: Precision = EXACT) -> torch.Tensor:
    """``output_norm(sublayer(pre_norm(x)))`` for a stream; ``normed`` caches ``pre_norm(x)`` per norm, so
    branches that share a norm (GPT-J) normalise once."""
    y = x
    if branch.pre_norm is not None:
        key = id(branch.pre_norm)
        if key not in normed:
            normed[key] = apply_norm(x, branch.pre_norm, frozen.pre_norm, layout)
        y = normed[key]
    if isinstance(branch.sublayer, AttentionSpec):
        out = apply_attention(y, branch.sublayer, frozen.sublayer, layout, precision, frozen.value_scale,
                              frozen.value_norm)
    elif isinstance(branch.sublayer, MoESpec):
        out = apply_moe(y, frozen.sublayer, layout, precision)
    else:
        out = apply_mlp(y, frozen.sublayer, layout, precision)
    if branch.output_norm is not None:
        out = apply_norm(out, branch.output_norm, frozen.output_norm, layout)
    if branch.scale != 1.0:
        out = out * branch.scale
    return out


def propagate_layer(state: torch.Tensor, layer_spec: LayerSpec, frozen_blocks: list[FrozenBlock],
                    layout, precision: Precision = EXACT) -> torch.Tensor:
    """Push a stream through one decoder layer (its residual blocks in order); source blocks take their
    products in ``precision``."""
    # with device_map="auto" each layer runs where its weights live
    state = state.to(layer_spec.attention.value.device)
    for block, frozen in zip(layer_spec.blocks, frozen_blocks):
        normed: dict = {}
        update = None
        for branch, frozen_branch in zip(block.branches, frozen.branches):
            out = apply_branch(state, branch, frozen_branch, layout, normed, precision)
            # a fast mode's product may come back in bf16: parallel branches are summed in fp32
            update = out if update is None else precision.widen(update, state.dtype) + out
        state = state + update
        if block.post_norm is not None:
            state = apply_norm(state, block.post_norm, frozen.post_norm, layout)
    return state


def finalize(state: torch.Tensor, frozen, layout, precision: Precision = EXACT) -> torch.Tensor:
    """Final norm (if any) and ``project_out`` (if any): the state the LM head reads."""
    spec = frozen.spec
    if frozen.final_norm is not None:
        state = state.to(frozen.final_norm.scale.device)
        state = apply_norm(state, spec.final_norm, frozen.final_norm, layout)
    if spec.project_out is not None:
        if layout.is_bias:
            state = spec.project_out.linear(state)
        else:  # contributions leave the engine in the compute dtype
            state = precision.widen(precision.linear(state, spec.project_out), state.dtype)
    return state
