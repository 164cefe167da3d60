"""Turn Hugging Face norm modules into :class:`NormSpec` records."""

from __future__ import annotations

from torch import nn

from .spec import NormSpec


def layer_norm_spec(module: nn.LayerNorm) -> NormSpec:
    """``nn.LayerNorm`` -> LayerNorm spec (gain/shift None when not elementwise-affine)."""
    return NormSpec("layer", module.weight, module.bias, float(module.eps), module)


def rms_norm_spec(module: nn.Module, weight_offset: float = 0.0) -> NormSpec:
    """RMSNorm (``gain * x / rms(x)``, gain = ``weight + weight_offset``: 1 for Gemma's ``1 + weight``); the
    epsilon attribute name varies by family."""
    eps = getattr(module, "variance_epsilon", None)
    if eps is None:
        eps = module.eps
    return NormSpec("rms", module.weight, None, float(eps), module, weight_offset)
