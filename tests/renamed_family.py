"""A family registered from outside the package: a renamed copy of Llama ("renamed_llama").

Its config, model classes and adapter are defined here, registered with Transformers' auto classes and with
:func:`huggingface_patch.register_architecture`, and nothing in the package knows its name; the tests run
``AutoDecomposedModelForCausalLM``, both paper scripts and every analysis CLI on it.
"""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, LlamaModel

from huggingface_patch import register_architecture
from huggingface_patch.architectures.families.llama import LlamaAdapter
from huggingface_patch.testing import randomize_biases_and_norms, save_with_tokenizer, tiny_config

MODEL_TYPE = "renamed_llama"


class RenamedLlamaConfig(LlamaConfig):
    model_type = MODEL_TYPE


class RenamedLlamaModel(LlamaModel):
    config_class = RenamedLlamaConfig


class RenamedLlamaForCausalLM(LlamaForCausalLM):
    config_class = RenamedLlamaConfig


class RenamedLlamaAdapter(LlamaAdapter):
    """A copy of the Llama adapter under another name (as a user would write for a Llama-shaped family)."""

    name = MODEL_TYPE
    model_types = (MODEL_TYPE,)


def register() -> None:
    """Register the family once (Transformers refuses a second registration of the same name)."""
    try:
        AutoConfig.register(MODEL_TYPE, RenamedLlamaConfig)
        AutoModel.register(RenamedLlamaConfig, RenamedLlamaModel)
        AutoModelForCausalLM.register(RenamedLlamaConfig, RenamedLlamaForCausalLM)
    except ValueError:  # already registered by another test module
        pass
    register_architecture(RenamedLlamaAdapter)


def renamed_config(**overrides) -> RenamedLlamaConfig:
    values = tiny_config("llama").to_dict()
    for key in ("model_type", "architectures", "transformers_version"):
        values.pop(key, None)
    values.update(overrides)
    return RenamedLlamaConfig(**values)


def build_renamed_model(**overrides) -> RenamedLlamaForCausalLM:
    torch.manual_seed(0)
    model = RenamedLlamaForCausalLM(renamed_config(**overrides))
    return randomize_biases_and_norms(model).eval()


def save_renamed_model(folder: str, **overrides) -> str:
    return save_with_tokenizer(build_renamed_model(**overrides), folder)
