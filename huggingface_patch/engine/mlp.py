"""MLPs with a frozen per-neuron scaling (``docs/design.md``, "ReLU / GELU MLP" and "gated MLP").

Every MLP becomes ``W_out (coefficient * (W_in c))`` for contributions, the coefficient ``(B, T, F)``
frozen from the real forward pass:

* plain MLP ``out(act(inp(x)))``: ``coefficient = act(z) / z`` for the real pre-activation ``z`` (the
  activation's slope at 0 where ``z == 0``: 0 for ReLU, the paper's 0/1 mask), or the tangent convention;
* gated MLP ``down(act(gate(x)) * up(x))``: ``coefficient = act(gate(x))`` with contributions through
  ``up`` (default), or ``up(x)`` frozen and contributions through the linearized gate.

Biases, ``coefficient * b_in`` and the tangent convention's intercept go to the bias term only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..architectures.spec import Affine, MLPSpec
from .conventions import Conventions
from .precision import EXACT, Precision
from .sparse import sparse_mlp

# act(z)/z at z == 0 is the activation's slope there (0 for ReLU: the paper's 0/1 mask).
_SLOPE_AT_ZERO = {"relu": 0.0, "gelu": 0.5, "gelu_new": 0.5, "gelu_fast": 0.5, "gelu_pytorch_tanh": 0.5,
                  "gelu_python": 0.5, "quick_gelu": 0.5, "silu": 0.5, "swish": 0.5}


@dataclass
class FrozenMLP:
    """One MLP frozen at its real input: ``coefficient`` ``(B, T, F)`` between ``linear_in`` and
    ``linear_out``; ``intercept`` ``(B, T, F)`` what the tangent convention sends to the bias term (None
    otherwise); ``sparse`` the active-neuron index when source blocks take the sparse path (:mod:`.sparse`)."""

    coefficient: torch.Tensor
    linear_in: Affine
    linear_out: Affine
    intercept: torch.Tensor | None = None
    sparse: object | None = None


def activation_slope(act, z: torch.Tensor) -> torch.Tensor:
    """``act'(z)`` elementwise (autograd through the model's own activation)."""
    with torch.enable_grad():
        point = z.detach().clone().requires_grad_(True)
        (slope,) = torch.autograd.grad(act(point).sum(), point)
    return slope.detach()


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


def linearize_activation(spec: MLPSpec, z: torch.Tensor, convention: str):
    """``(act(z), coefficient, intercept)`` with ``act(z) == coefficient * z + intercept`` (intercept None for the
    ratio convention)."""
    if convention == "tangent":
        activated = spec.act(z)
        slope = activation_slope(spec.act, z)
        return activated, slope, activated - slope * z
    activated, ratio = mlp_ratio(spec, z)
    return activated, ratio, None


def _zero_padding(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Zero a per-target tensor ``(B, T, ...)`` at padding positions (no copy when nothing is padded)."""
    if bool(valid.all()):
        return x
    mask = valid.reshape(*valid.shape, *([1] * (x.dim() - 2)))
    return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))


def freeze_mlp(spec: MLPSpec, y: torch.Tensor, valid: torch.Tensor, conventions: Conventions):
    """``(FrozenMLP, real output (B, T, H))`` of an MLP at its real (normed) input ``y``."""
    intercept = None
    if spec.kind == "gated" and conventions.gated == "gate":
        coefficient = spec.act(spec.gate(y))
        out = spec.down(coefficient * spec.up(y))
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
        intercept = _zero_padding(intercept, valid)
    return FrozenMLP(_zero_padding(coefficient, valid), linear_in, linear_out, intercept), out


def apply_mlp(state: torch.Tensor, frozen: FrozenMLP, layout, precision: Precision = EXACT) -> torch.Tensor:
    """A stream through the frozen MLP. Source blocks take the sparse path (only neurons with a non-zero
    coefficient) when the layer was marked for it, and their products in ``precision``."""
    if not layout.is_bias and frozen.sparse is not None:
        return sparse_mlp(state, frozen, layout, precision)
    first, last = frozen.linear_in, frozen.linear_out
    inner = first(state) if layout.is_bias else precision.linear(state, first)
    inner.mul_(layout.align(precision.coefficient(frozen.coefficient, inner.dtype)))  # in place: the (S, w, F)
    # block is the largest tensor
    if layout.is_bias and frozen.intercept is not None:
        inner = inner + frozen.intercept
    return last(inner) if layout.is_bias else precision.linear(inner, last)
