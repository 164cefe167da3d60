"""Norms, frozen at their real input (``docs/design.md``, "LayerNorm" / "RMSNorm").

A norm is linear in the contributions once its scale is frozen from the real input ``x``:

* LayerNorm: ``(c - mean(c)) * s * gain`` with ``s = 1 / sqrt(var(x) + eps)``; the shift goes to the bias term;
* RMSNorm: ``c * s * gain`` with ``s = 1 / sqrt(mean(x^2) + eps)`` (Gemma: ``gain = 1 + weight``).

The model's own output can differ from this formula by round-off (e.g. an RMSNorm that computes in fp32
inside an fp64 model): that difference, the *correction*, goes to the bias term too, so that the identity
holds against the model's real states. These functions are the only place the formula is written; the
engine, the per-layer check and the decomposition lens all use them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..architectures.spec import NormSpec


@dataclass
class FrozenNorm:
    """One norm frozen at its real input: ``scale`` ``(B, T)`` and ``correction`` ``(B, T, H)``."""

    scale: torch.Tensor
    correction: torch.Tensor


def norm_scale(norm: NormSpec, x: torch.Tensor) -> torch.Tensor:
    """``1/sqrt(var(x) + eps)`` (LayerNorm) or ``1/sqrt(mean(x^2) + eps)`` (RMSNorm), shape ``x.shape[:-1]``."""
    if norm.kind == "layer":
        return torch.rsqrt(x.var(-1, unbiased=False) + norm.eps)
    return torch.rsqrt(x.pow(2).mean(-1) + norm.eps)


def normalize(c: torch.Tensor, norm: NormSpec, scale: torch.Tensor) -> torch.Tensor:
    """The frozen norm applied to contributions ``c`` ``(..., H)`` with ``scale`` broadcastable to
    ``c.shape[:-1]``: centring (LayerNorm), scale and gain, no shift. One new tensor, then in-place updates
    (these are elementwise passes over a whole block)."""
    if c.dtype != scale.dtype:  # a fast mode's bf16 product: centre and scale it in the compute dtype
        c = c.to(scale.dtype)
    if norm.kind == "layer":
        c = c - c.mean(-1, keepdim=True)
        c.mul_(scale[..., None])
    else:
        c = c * scale[..., None]
    gain = norm.gain(c.dtype)
    if gain is not None:
        c.mul_(gain.to(c.device))
    return c


def formula(norm: NormSpec, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """The linear formula's output for the real input ``x`` (shift included)."""
    y = normalize(x, norm, norm_scale(norm, x) if scale is None else scale)
    return y if norm.bias is None else y + norm.bias.to(y.device, y.dtype)


def real_output(norm: NormSpec, x: torch.Tensor, model_dtype: torch.dtype) -> torch.Tensor:
    """What the model's own norm module outputs for ``x`` (the formula when no module is known)."""
    if norm.module is None:
        return formula(norm, x)
    return norm.module(x.to(model_dtype)).to(x.dtype)


def freeze_norm(norm: NormSpec, x: torch.Tensor, valid: torch.Tensor, model_dtype: torch.dtype):
    """``(real output (B, T, H), FrozenNorm)`` of a norm at its real input ``x``; ``valid`` ``(B, T)``
    zeroes scale and correction at padding positions."""
    scale = norm_scale(norm, x)
    linear = formula(norm, x, scale)
    real = linear if norm.module is None else real_output(norm, x, model_dtype)
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    correction = torch.where(valid[..., None], real - linear, zero)
    scale = torch.where(valid, scale, zero)
    return real, FrozenNorm(scale, correction)


def apply_norm(state: torch.Tensor, norm: NormSpec, frozen: FrozenNorm, layout) -> torch.Tensor:
    """A stream through a frozen norm; the bias term (``layout.is_bias``) also receives the shift and the
    model's round-off correction."""
    state = normalize(state, norm, layout.align(frozen.scale))
    if layout.is_bias:
        if norm.bias is not None:
            state = state + norm.bias.to(state.dtype)
        state = state + frozen.correction
    return state
