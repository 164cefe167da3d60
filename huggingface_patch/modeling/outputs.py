"""Hugging Face output dataclasses with the decomposition fields added (all usual fields kept)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    BaseModelOutputWithPastAndCrossAttentions,
    CausalLMOutputWithCrossAttentions,
    CausalLMOutputWithPast,
)

_FIELDS_DOC = """
    decomposition (`torch.FloatTensor` of shape `(batch, W, T, H)`):
        Contributions to the state the LM head reads, relative layout: `[b, k, t]` is the contribution of
        source `t - k` to target `t`; `W = min(window, T)`.
    decomposition_bias (`torch.FloatTensor` of shape `(batch, T, H)`):
        The explicitly tracked bias term; `decomposition.sum(1) + decomposition_bias` is the state when `W == T`.
    layer_decompositions (`tuple(torch.FloatTensor)`, with `output_layer_decompositions=True`):
        `num_layers + 1` tensors `(batch, W, T, H)`: index 0 the embeddings, index `l` the output of layer `l`.
    layer_decomposition_biases (`tuple(torch.FloatTensor)`, with `output_layer_decompositions=True`):
        The matching bias terms `(batch, T, H)`.
    decomposition_identity_errors (`torch.DoubleTensor` of shape `(num_layers + 2,)`):
        For the targets `t < W` (all their sources in the window): the largest |contributions + bias - real
        state| relative to max|h|, at the embeddings, after each layer and at the LM head's input.
    decomposition_precision (`str`):
        The matmul precision of the contributions: `"fp32"` (exact), `"bf16"` or `"tf32"`.
"""


@dataclass
class DecomposedCausalLMOutputWithPast(CausalLMOutputWithPast):
    __doc__ = (CausalLMOutputWithPast.__doc__ or "") + _FIELDS_DOC
    decomposition: torch.FloatTensor | None = None
    decomposition_bias: torch.FloatTensor | None = None
    layer_decompositions: tuple[torch.FloatTensor, ...] | None = None
    layer_decomposition_biases: tuple[torch.FloatTensor, ...] | None = None
    decomposition_identity_errors: torch.DoubleTensor | None = None
    decomposition_precision: str | None = None


@dataclass
class DecomposedCausalLMOutputWithCrossAttentions(CausalLMOutputWithCrossAttentions):
    __doc__ = (CausalLMOutputWithCrossAttentions.__doc__ or "") + _FIELDS_DOC
    decomposition: torch.FloatTensor | None = None
    decomposition_bias: torch.FloatTensor | None = None
    layer_decompositions: tuple[torch.FloatTensor, ...] | None = None
    layer_decomposition_biases: tuple[torch.FloatTensor, ...] | None = None
    decomposition_identity_errors: torch.DoubleTensor | None = None
    decomposition_precision: str | None = None


@dataclass
class DecomposedBaseModelOutputWithPast(BaseModelOutputWithPast):
    __doc__ = (BaseModelOutputWithPast.__doc__ or "") + _FIELDS_DOC
    decomposition: torch.FloatTensor | None = None
    decomposition_bias: torch.FloatTensor | None = None
    layer_decompositions: tuple[torch.FloatTensor, ...] | None = None
    layer_decomposition_biases: tuple[torch.FloatTensor, ...] | None = None
    decomposition_identity_errors: torch.DoubleTensor | None = None
    decomposition_precision: str | None = None


@dataclass
class DecomposedBaseModelOutputWithPastAndCrossAttentions(BaseModelOutputWithPastAndCrossAttentions):
    __doc__ = (BaseModelOutputWithPastAndCrossAttentions.__doc__ or "") + _FIELDS_DOC
    decomposition: torch.FloatTensor | None = None
    decomposition_bias: torch.FloatTensor | None = None
    layer_decompositions: tuple[torch.FloatTensor, ...] | None = None
    layer_decomposition_biases: tuple[torch.FloatTensor, ...] | None = None
    decomposition_identity_errors: torch.DoubleTensor | None = None
    decomposition_precision: str | None = None


_DECOMPOSED = {
    CausalLMOutputWithPast: DecomposedCausalLMOutputWithPast,
    CausalLMOutputWithCrossAttentions: DecomposedCausalLMOutputWithCrossAttentions,
    BaseModelOutputWithPast: DecomposedBaseModelOutputWithPast,
    BaseModelOutputWithPastAndCrossAttentions: DecomposedBaseModelOutputWithPastAndCrossAttentions,
}


def decomposed_output(output, **fields):
    """Copy a Hugging Face output into its decomposed twin, adding ``fields``."""
    cls = _DECOMPOSED.get(type(output))
    if cls is None:
        raise TypeError(f"no decomposed output class for {type(output).__name__}")
    values = {name: getattr(output, name) for name in output.__dataclass_fields__}
    values.update(fields)
    return cls(**values)
