"""Decomposing subclasses of the Hugging Face model classes (same names with a ``Decomposed`` prefix).

Each class only adds :class:`DecompositionMixin`; weights, ``from_pretrained`` arguments, config and
outputs are the base class's.
"""

from __future__ import annotations

from transformers import (
    GPT2LMHeadModel,
    GPT2Model,
    LlamaForCausalLM,
    LlamaModel,
    MistralForCausalLM,
    MistralModel,
    OPTForCausalLM,
    OPTModel,
    Qwen2ForCausalLM,
    Qwen2Model,
)

from .mixin import DecompositionMixin


class DecomposedOPTForCausalLM(DecompositionMixin, OPTForCausalLM):
    """``OPTForCausalLM`` whose ``forward`` can also return a token-wise decomposition."""


class DecomposedOPTModel(DecompositionMixin, OPTModel):
    """``OPTModel`` whose ``forward`` can also return a token-wise decomposition."""


class DecomposedGPT2LMHeadModel(DecompositionMixin, GPT2LMHeadModel):
    """``GPT2LMHeadModel`` whose ``forward`` can also return a token-wise decomposition."""


class DecomposedGPT2Model(DecompositionMixin, GPT2Model):
    """``GPT2Model`` whose ``forward`` can also return a token-wise decomposition."""


class DecomposedLlamaForCausalLM(DecompositionMixin, LlamaForCausalLM):
    """``LlamaForCausalLM`` whose ``forward`` can also return a token-wise decomposition."""


class DecomposedLlamaModel(DecompositionMixin, LlamaModel):
    """``LlamaModel`` whose ``forward`` can also return a token-wise decomposition."""


class DecomposedMistralForCausalLM(DecompositionMixin, MistralForCausalLM):
    """``MistralForCausalLM`` whose ``forward`` can also return a token-wise decomposition."""


class DecomposedMistralModel(DecompositionMixin, MistralModel):
    """``MistralModel`` whose ``forward`` can also return a token-wise decomposition."""


class DecomposedQwen2ForCausalLM(DecompositionMixin, Qwen2ForCausalLM):
    """``Qwen2ForCausalLM`` whose ``forward`` can also return a token-wise decomposition."""


class DecomposedQwen2Model(DecompositionMixin, Qwen2Model):
    """``Qwen2Model`` whose ``forward`` can also return a token-wise decomposition."""


#: config.model_type -> (causal LM class, bare model class)
DECOMPOSED_CLASSES = {
    "opt": (DecomposedOPTForCausalLM, DecomposedOPTModel),
    "gpt2": (DecomposedGPT2LMHeadModel, DecomposedGPT2Model),
    "llama": (DecomposedLlamaForCausalLM, DecomposedLlamaModel),
    "mistral": (DecomposedMistralForCausalLM, DecomposedMistralModel),
    "qwen2": (DecomposedQwen2ForCausalLM, DecomposedQwen2Model),
}
