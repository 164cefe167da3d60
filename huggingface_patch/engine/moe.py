"""Mixture-of-experts blocks with frozen routing (``docs/design.md``, "Mixture of experts").

The router's choice of experts and its routing weights are frozen from the real forward pass, like
attention probabilities: at target ``t`` a contribution ``c`` goes through each chosen expert ``e_j`` as
``w_j * down_e(coefficient_j * up_e(c))``, the expert's gate (and any clamp) frozen at ``t``; the experts'
biases and the constant part of their activation go to the bias term. A shared expert (Qwen2-MoE) is a
frozen gated MLP times its frozen per-token gate.

The dispatch stays sparse: each expert is computed only for the rows whose target routed to it (a block
of sources has ``S x w`` rows; the rows of target ``t`` go to ``t``'s ``k`` experts), so the cost is that of
the active parameters, not of all experts.

Shapes: ``B`` batch, ``T`` positions, ``k`` experts per token, ``F`` expert width, ``H`` hidden size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..architectures.spec import Affine, MoESpec
from .mlp import FrozenMLP, apply_mlp, freeze_mlp
from .precision import EXACT, Precision


@dataclass
class FrozenMoE:
    """One mixture-of-experts block frozen at its real input.

    ``index`` ``(B, T, k)`` experts, ``weights`` ``(B, T, k)`` routing weights (0 at padding),
    ``coefficient`` ``(B, T, k, F)`` each chosen expert's frozen coefficient on ``up``, ``intercept`` the
    constant part of its activation (bias term only, or None); ``shared``: the shared expert frozen as an
    MLP and ``shared_scale`` ``(B, T)`` its frozen gate (or None)."""

    spec: MoESpec
    index: torch.Tensor
    weights: torch.Tensor
    coefficient: torch.Tensor
    intercept: torch.Tensor | None = None
    shared: FrozenMLP | None = None
    shared_scale: torch.Tensor | None = None


def _expert_inner(spec: MoESpec, expert: int, y: torch.Tensor):
    """Gate and up pre-activations ``(n, F)`` of one expert for rows ``y`` ``(n, H)``."""
    gate = y @ spec.gate[expert].to(y.dtype)
    up = y @ spec.up[expert].to(y.dtype)
    if spec.gate_bias is not None:
        gate = gate + spec.gate_bias[expert].to(y.dtype)
    if spec.up_bias is not None:
        up = up + spec.up_bias[expert].to(y.dtype)
    return gate, up


def freeze_moe(spec: MoESpec, y: torch.Tensor, valid: torch.Tensor, conventions) -> tuple[FrozenMoE, torch.Tensor]:
    """``(FrozenMoE, real output (B, T, H))`` of the block at its real (normed) input ``y`` ``(B, T, H)``."""
    batch, length, hidden = y.shape
    flat = y.reshape(-1, hidden)
    index, weights = spec.route(flat.to(spec.gate.dtype))
    index = index.reshape(batch, length, -1).to(y.device)
    weights = weights.reshape(batch, length, -1).to(device=y.device, dtype=y.dtype)
    weights = torch.where(valid[..., None], weights, torch.zeros((), dtype=y.dtype, device=y.device))
    k, width = index.shape[-1], spec.gate.shape[2]
    coefficient = y.new_zeros(batch * length, k, width)
    intercept = None
    out = torch.zeros_like(flat)
    flat_index, flat_weights = index.reshape(-1, k), weights.reshape(-1, k)
    for expert in torch.unique(flat_index).tolist():
        rows, slot = (flat_index == expert).nonzero(as_tuple=True)
        gate, up = _expert_inner(spec, expert, flat[rows])
        activated, coef, const = spec.activation(gate, up)
        coefficient[rows, slot] = coef
        if const is not None:
            if intercept is None:
                intercept = y.new_zeros(batch * length, k, width)
            intercept[rows, slot] = const
        expert_out = activated @ spec.down[expert].to(y.dtype)
        if spec.down_bias is not None:
            expert_out = expert_out + spec.down_bias[expert].to(y.dtype)
        out.index_add_(0, rows, expert_out * flat_weights[rows, slot][:, None])
    out = out.reshape(batch, length, hidden)
    coefficient = coefficient.reshape(batch, length, k, width)
    coefficient = torch.where(valid[..., None, None], coefficient, torch.zeros((), dtype=y.dtype, device=y.device))
    if intercept is not None:
        intercept = intercept.reshape(batch, length, k, width)
    shared = shared_scale = None
    if spec.shared is not None:
        shared, shared_out = freeze_mlp(spec.shared, y, valid, conventions)
        if spec.shared_gate is not None:
            shared_scale = spec.shared_gate(flat).reshape(batch, length).to(y.dtype)
            shared_scale = torch.where(valid, shared_scale, torch.zeros((), dtype=y.dtype, device=y.device))
            shared_out = shared_out * shared_scale[..., None]
        out = out + shared_out
    return FrozenMoE(spec, index, weights, coefficient, intercept, shared, shared_scale), out


def apply_moe(state: torch.Tensor, frozen: FrozenMoE, layout, precision: Precision = EXACT) -> torch.Tensor:
    """A stream through the frozen block: the bias term ``(B, T, H)`` (with the experts' biases and
    intercepts) or a block of sources ``(B, S, w, H)``; each expert only on the rows routed to it."""
    spec = frozen.spec
    hidden = state.shape[-1]
    k = frozen.index.shape[-1]
    # per-target routing aligned to the stream's rows (zero weights past the end of the sequence)
    index = layout.align(frozen.index).reshape(-1, k)
    weights = layout.align(frozen.weights.to(state.dtype)).reshape(-1, k)
    coefficient = layout.align(frozen.coefficient.to(state.dtype)).reshape(-1, k, frozen.coefficient.shape[-1])
    intercept = None
    if layout.is_bias and frozen.intercept is not None:
        intercept = layout.align(frozen.intercept.to(state.dtype)).reshape(coefficient.shape)
    rows_in = state.reshape(-1, hidden)
    out = torch.zeros(rows_in.shape[0], spec.down.shape[2], dtype=state.dtype, device=state.device)
    live = weights != 0  # padding and positions past the end route nowhere
    for expert in torch.unique(index[live]).tolist():
        rows, slot = ((index == expert) & live).nonzero(as_tuple=True)
        up = Affine(spec.up[expert], None if spec.up_bias is None else spec.up_bias[expert])
        down = Affine(spec.down[expert], None if spec.down_bias is None else spec.down_bias[expert])
        x = rows_in[rows]
        inner = up(x) if layout.is_bias else precision.linear(x, up)
        inner = inner.to(state.dtype) * coefficient[rows, slot]
        if intercept is not None:
            inner = inner + intercept[rows, slot]
        expert_out = down(inner) if layout.is_bias else precision.widen(precision.linear(inner, down), state.dtype)
        out.index_add_(0, rows, expert_out * weights[rows, slot][:, None])
    out = out.reshape(*state.shape[:-1], out.shape[-1])
    if frozen.shared is not None:
        shared = precision.widen(apply_mlp(state, frozen.shared, layout, precision), state.dtype)
        if frozen.shared_scale is not None:
            shared = shared * layout.align(frozen.shared_scale.to(state.dtype))[..., None]
        out = out + shared
    return out
