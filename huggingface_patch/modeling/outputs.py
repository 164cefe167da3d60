"""Hugging Face output dataclasses with the decomposition fields added (all usual fields kept)."""

from __future__ import annotations

from dataclasses import field, make_dataclass

from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    BaseModelOutputWithPastAndCrossAttentions,
    CausalLMOutputWithCrossAttentions,
    CausalLMOutputWithPast,
    MoeCausalLMOutputWithPast,
    MoeModelOutputWithPast,
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


#: the decomposition fields every decomposed output adds, all None unless computed
_FIELDS = (("decomposition", "torch.FloatTensor | None"), ("decomposition_bias", "torch.FloatTensor | None"),
           ("layer_decompositions", "tuple[torch.FloatTensor, ...] | None"),
           ("layer_decomposition_biases", "tuple[torch.FloatTensor, ...] | None"),
           ("decomposition_identity_errors", "torch.DoubleTensor | None"), ("decomposition_precision", "str | None"))


def _with_decomposition(base: type) -> type:
    """``Decomposed<base>``: the Hugging Face output dataclass ``base`` (every field kept) plus the
    decomposition fields."""
    cls = make_dataclass(f"Decomposed{base.__name__}", [(name, kind, field(default=None)) for name, kind in _FIELDS],
                         bases=(base,))
    cls.__doc__ = (base.__doc__ or "") + _FIELDS_DOC
    cls.__module__ = __name__
    return cls


DecomposedCausalLMOutputWithPast = _with_decomposition(CausalLMOutputWithPast)
DecomposedCausalLMOutputWithCrossAttentions = _with_decomposition(CausalLMOutputWithCrossAttentions)
DecomposedBaseModelOutputWithPast = _with_decomposition(BaseModelOutputWithPast)
DecomposedBaseModelOutputWithPastAndCrossAttentions = _with_decomposition(BaseModelOutputWithPastAndCrossAttentions)
DecomposedMoeCausalLMOutputWithPast = _with_decomposition(MoeCausalLMOutputWithPast)
DecomposedMoeModelOutputWithPast = _with_decomposition(MoeModelOutputWithPast)

_DECOMPOSED = {
    CausalLMOutputWithPast: DecomposedCausalLMOutputWithPast,
    CausalLMOutputWithCrossAttentions: DecomposedCausalLMOutputWithCrossAttentions,
    BaseModelOutputWithPast: DecomposedBaseModelOutputWithPast,
    BaseModelOutputWithPastAndCrossAttentions: DecomposedBaseModelOutputWithPastAndCrossAttentions,
    MoeCausalLMOutputWithPast: DecomposedMoeCausalLMOutputWithPast,
    MoeModelOutputWithPast: DecomposedMoeModelOutputWithPast,
}


def decomposed_output(output, **fields):
    """Copy a Hugging Face output into its decomposed twin, adding ``fields``."""
    cls = _DECOMPOSED.get(type(output))
    if cls is None:
        raise TypeError(f"no decomposed output class for {type(output).__name__}")
    values = {name: getattr(output, name) for name in output.__dataclass_fields__}
    values.update(fields)
    return cls(**values)
