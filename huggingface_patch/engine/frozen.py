"""Frozen coefficients of the nonlinear parts, computed from the real residual stream (DESIGN.md §1).

For every layer the real stream is recomputed from the captured layer input with the same linear maps
the contributions go through, and compared with Hugging Face's layer output: if a Transformers release
changes a layer, this fails loudly instead of returning a wrong decomposition.

Per-target coefficients are stored per position ``(B, T, ...)``, zero at padding positions so that
padding stays exactly zero; the block layout views them without copies (and zero-extends the few blocks
whose window runs past the end).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..architectures.spec import Affine, AttentionSpec, MLPSpec, ModelSpec, NormSpec
from .conventions import DEFAULT, Conventions
from .packed import PackedCausal

# Largest allowed |recomputed - Hugging Face| relative to max|h|, per compute precision of the model.
RECOMPUTE_TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 5e-2, torch.bfloat16: 5e-2}

# act(z)/z at z == 0 is the activation's slope there (0 for ReLU: the paper's 0/1 mask).
_SLOPE_AT_ZERO = {"relu": 0.0, "gelu": 0.5, "gelu_new": 0.5, "gelu_fast": 0.5, "gelu_pytorch_tanh": 0.5,
                  "gelu_python": 0.5, "quick_gelu": 0.5, "silu": 0.5, "swish": 0.5}


class DecompositionMismatchError(RuntimeError):
    """The engine's recomputation of the real residual stream disagrees with the model."""


@dataclass
class FrozenNorm:
    """One norm frozen at its real input: ``scale`` ``(B, T)`` and ``correction`` ``(B, T, H)``, the
    model's own output minus the linear formula (its round-off; it goes to the bias term)."""

    scale: torch.Tensor
    correction: torch.Tensor


@dataclass
class FrozenBlock:
    """Coefficients of one residual block: its norms, and attention probabilities ``(B, h, T, T)`` (or packed,
    :class:`~.packed.PackedCausal`) or the
    MLP's frozen per-target scaling ``(B, T, F)`` between ``linear_in`` and ``linear_out`` (e.g.
    ``r = act(z)/z`` for plain MLPs, ``act(gate(x))`` for gated ones). ``intercept`` ``(B, T, F)``: what the
    tangent convention sends to the bias term inside the MLP (None otherwise); ``sparse``: set by
    :func:`~.sparse.plan_sparse` for layers that take the sparse MLP path."""

    pre_norm: FrozenNorm | None
    coefficient: torch.Tensor
    post_norm: FrozenNorm | None
    linear_in: Affine | None = None
    linear_out: Affine | None = None
    intercept: torch.Tensor | None = None
    #: active-neuron index when source blocks take the sparse MLP path (see :mod:`.sparse`)
    sparse: object | None = None


@dataclass
class FrozenModel:
    """All frozen coefficients of one forward pass, plus the real states they came from.

    ``embeddings``: ``(B, T, H)`` input of layer 0 (each source owns its own row); ``valid``: ``(B, T)``
    bool; ``final_norm``: the frozen final norm or None; ``layer_states[l]``: the real output of
    layer ``l``; ``final_state``: the real post-final-norm state.
    """

    spec: ModelSpec
    embeddings: torch.Tensor
    valid: torch.Tensor
    layers: list[list[FrozenBlock]]
    final_norm: FrozenNorm | None
    layer_states: list[torch.Tensor]
    final_state: torch.Tensor
    bias_init: torch.Tensor | None = None
    conventions: Conventions = DEFAULT

    @property
    def length(self) -> int:
        return self.embeddings.shape[1]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Decompositions accumulate in fp32 for half-precision models and in the model's dtype otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def norm_scale(norm: NormSpec, x: torch.Tensor) -> torch.Tensor:
    """``1/sqrt(var(x) + eps)`` (LayerNorm) or ``1/sqrt(mean(x^2) + eps)`` (RMSNorm), shape ``x.shape[:-1]``."""
    if norm.kind == "layer":
        return torch.rsqrt(x.var(-1, unbiased=False) + norm.eps)
    return torch.rsqrt(x.pow(2).mean(-1) + norm.eps)


def apply_norm_real(norm: NormSpec, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The real norm output, written with the same scale the contributions use."""
    y = x - x.mean(-1, keepdim=True) if norm.kind == "layer" else x
    y = y * scale[..., None]
    if norm.weight is not None:
        y = y * norm.weight.to(y.dtype)
    if norm.bias is not None:
        y = y + norm.bias.to(y.dtype)
    return y


def activation_slope(act, z: torch.Tensor) -> torch.Tensor:
    """``act'(z)`` elementwise (autograd through the model's own activation)."""
    with torch.enable_grad():
        point = z.detach().clone().requires_grad_(True)
        (slope,) = torch.autograd.grad(act(point).sum(), point)
    return slope.detach()


def linearize_activation(spec: MLPSpec, z: torch.Tensor, convention: str):
    """``(act(z), coefficient, intercept)`` with ``act(z) == coefficient * z + intercept`` (intercept None for ratio)."""
    if convention == "tangent":
        activated = spec.act(z)
        slope = activation_slope(spec.act, z)
        return activated, slope, activated - slope * z
    activated, ratio = mlp_ratio(spec, z)
    return activated, ratio, None


def mlp_ratio(spec: MLPSpec, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(act(z), act(z)/z)`` with the slope at 0 where ``z == 0``."""
    activated = spec.act(z)
    slope = _SLOPE_AT_ZERO.get(spec.act_name)
    if slope is None:
        eps = torch.tensor(1e-6, dtype=z.dtype, device=z.device)
        slope = float(spec.act(eps) / eps)
    zero = z == 0
    ratio = activated / torch.where(zero, torch.ones_like(z), z)
    ratio = torch.where(zero, torch.full_like(z, slope), ratio)
    return activated, ratio


def mask_padding_attention(probs: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Zero the rows and columns of padding positions (``valid`` ``(B, T)`` False) of ``(B, h, T, T)``
    probabilities (no copy when nothing is padded)."""
    if bool(valid.all()):
        return probs
    keep = valid.to(probs.device)
    keep = keep[:, None, :, None] & keep[:, None, None, :]
    return torch.where(keep, probs, torch.zeros((), dtype=probs.dtype, device=probs.device))


def _zero_padding(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Zero a per-target coefficient ``(B, T, ...)`` at padding positions (no copy when nothing is padded)."""
    if bool(valid.all()):
        return x
    mask = valid.reshape(*valid.shape, *([1] * (x.dim() - 2)))
    return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))


def _check(name: str, mine: torch.Tensor, theirs: torch.Tensor, valid: torch.Tensor, model_dtype: torch.dtype):
    theirs = theirs.to(mine.dtype)
    diff = (mine - theirs).abs().amax(-1)[valid]
    scale = theirs.abs().amax(-1)[valid]
    if diff.numel() == 0:
        return
    worst, top = float(diff.max()), float(scale.max())
    tolerance = RECOMPUTE_TOLERANCE.get(model_dtype, 5e-2)
    if not worst <= tolerance * max(top, 1e-30):
        raise DecompositionMismatchError(
            f"{name}: the decomposition engine's recomputation differs from the model by {worst:.3e} "
            f"(max |h| = {top:.3e}, tolerance {tolerance:g} x max |h|); this Transformers version may have "
            "changed the layer, so no decomposition is returned"
        )


def freeze(
    spec: ModelSpec,
    layer_inputs: list[torch.Tensor],
    layer_outputs: list[torch.Tensor],
    attention: list[torch.Tensor],
    final_state: torch.Tensor,
    valid: torch.Tensor,
    model_dtype: torch.dtype,
    check: bool = True,
    conventions: Conventions = DEFAULT,
    position_embeddings: torch.Tensor | None = None,
) -> FrozenModel:
    """Compute every frozen coefficient and check the recomputed real stream layer by layer.

    ``position_embeddings`` ``(B or 1, T, H)``: the learned position embeddings, needed only for
    ``conventions.positions == "bias"``.
    """
    dtype = compute_dtype(model_dtype)
    layers: list[list[FrozenBlock]] = []
    for index, (layer, x_in) in enumerate(zip(spec.layers, layer_inputs)):
        device = layer.attention.value.device
        layer_valid = valid.to(device)
        x = x_in.to(device=device, dtype=dtype)
        blocks = []
        for block in layer.blocks:
            pre = post = None
            y = x
            if block.pre_norm is not None:
                y, pre = _freeze_norm(block.pre_norm, x, layer_valid, model_dtype)
            if isinstance(block.sublayer, AttentionSpec):
                coefficient = attention[index].to(device=device, dtype=dtype)
                attention[index] = None  # the caller's list: drop our reference early (T^2 per head)
                if not isinstance(coefficient, PackedCausal):  # packed ones come masked from capture()
                    coefficient = mask_padding_attention(coefficient, layer_valid)
                out = _attention_real(block.sublayer, y, coefficient)
                frozen_block = FrozenBlock(pre, coefficient, None)
            else:
                frozen_block, out = _freeze_mlp(block.sublayer, y, layer_valid, conventions)
                frozen_block.pre_norm = pre
            x = x + out
            if block.post_norm is not None:
                x, post = _freeze_norm(block.post_norm, x, layer_valid, model_dtype)
            frozen_block.post_norm = post
            blocks.append(frozen_block)
        if check:
            _check(f"layer {index}", x, layer_outputs[index].to(device), layer_valid, model_dtype)
        layers.append(blocks)

    last = layer_outputs[-1]
    device = last.device
    x = last.to(dtype)
    final = None
    if spec.final_norm is not None:
        x, final = _freeze_norm(spec.final_norm, x, valid.to(device), model_dtype)
    if spec.project_out is not None:
        x = spec.project_out(x)
    if check:
        _check("final state", x, final_state.to(device), valid.to(device), model_dtype)
    embeddings = layer_inputs[0].to(dtype)
    bias_init = None
    if conventions.positions == "bias" and position_embeddings is not None:
        bias_init = position_embeddings.to(device=embeddings.device, dtype=dtype).expand_as(embeddings)
        bias_init = torch.where(valid.to(embeddings.device)[..., None], bias_init, torch.zeros((), dtype=dtype))
        embeddings = embeddings - bias_init
    return FrozenModel(
        spec=spec,
        embeddings=embeddings,
        bias_init=bias_init,
        conventions=conventions,
        valid=valid,
        layers=layers,
        final_norm=final,
        layer_states=[o.to(dtype) for o in layer_outputs],
        final_state=x,
    )


def _freeze_norm(norm: NormSpec, x: torch.Tensor, valid: torch.Tensor, model_dtype: torch.dtype):
    """Real output of a norm (the model's own) and its frozen scale and round-off correction."""
    scale = norm_scale(norm, x)
    linear = apply_norm_real(norm, x, scale)
    if norm.module is None:
        real = linear
    else:
        real = norm.module(x.to(model_dtype)).to(x.dtype)
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    correction = torch.where(valid[..., None], real - linear, zero)
    return real, FrozenNorm(_zero_padding(scale, valid), correction)


def _attention_real(spec: AttentionSpec, y: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    from .propagate import mix_full

    return spec.output(mix_full(spec.value(y), probs, spec))


def _freeze_mlp(spec: MLPSpec, y: torch.Tensor, valid: torch.Tensor, conventions: Conventions):
    """Frozen MLP block and the real MLP output, following the conventions."""
    intercept = None
    if spec.kind == "gated" and conventions.gated == "gate":
        coefficient = spec.act(spec.gate(y))
        up = spec.up(y)
        out = spec.down(coefficient * up)
        linear_in, linear_out = spec.up, spec.down
    elif spec.kind == "gated":  # up(x) frozen, the gate path linearized
        up = spec.up(y)
        activated, scale, intercept = linearize_activation(spec, spec.gate(y), conventions.activation)
        out = spec.down(activated * up)
        coefficient = up * scale
        intercept = None if intercept is None else up * intercept
        linear_in, linear_out = spec.gate, spec.down
    else:
        activated, coefficient, intercept = linearize_activation(spec, spec.inp(y), conventions.activation)
        out = spec.out(activated)
        linear_in, linear_out = spec.inp, spec.out
    if intercept is not None:
        intercept = torch.where(valid[..., None], intercept, torch.zeros((), dtype=intercept.dtype, device=intercept.device))
    frozen = FrozenBlock(None, _zero_padding(coefficient, valid), None, linear_in, linear_out, intercept)
    return frozen, out
