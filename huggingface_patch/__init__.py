"""Decomposing Hugging Face causal LMs: every hidden state as one vector per source token plus a bias.

>>> from huggingface_patch import AutoDecomposedModelForCausalLM
>>> model = AutoDecomposedModelForCausalLM.from_pretrained("facebook/opt-125m")  # doctest: +SKIP
>>> out = model(input_ids, decomposition_window=50)                             # doctest: +SKIP
>>> out.decomposition.shape   # (batch, W, T, H), relative layout                 # doctest: +SKIP
"""

from .architectures import UnsupportedArchitectureError, get_adapter, list_architectures, model_parts, register_architecture
from .engine import DecompositionMismatchError, absolute_to_relative, relative_to_absolute
from .modeling import (
    AutoDecomposedModelForCausalLM,
    DecomposedGPT2LMHeadModel,
    DecomposedGPT2Model,
    DecomposedLlamaForCausalLM,
    DecomposedLlamaModel,
    DecomposedMistralForCausalLM,
    DecomposedMistralModel,
    DecomposedOPTForCausalLM,
    DecomposedOPTModel,
    DecomposedQwen2ForCausalLM,
    DecomposedQwen2Model,
)

__version__ = "0.1.0"

__all__ = [
    "AutoDecomposedModelForCausalLM",
    "DecomposedGPT2LMHeadModel",
    "DecomposedGPT2Model",
    "DecomposedLlamaForCausalLM",
    "DecomposedLlamaModel",
    "DecomposedMistralForCausalLM",
    "DecomposedMistralModel",
    "DecomposedOPTForCausalLM",
    "DecomposedOPTModel",
    "DecomposedQwen2ForCausalLM",
    "DecomposedQwen2Model",
    "DecompositionMismatchError",
    "UnsupportedArchitectureError",
    "absolute_to_relative",
    "get_adapter",
    "list_architectures",
    "model_parts",
    "register_architecture",
    "relative_to_absolute",
]
