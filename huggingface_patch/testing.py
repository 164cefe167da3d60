"""Tiny random models of every supported family, built in code (for tests, examples and benchmarks).

Biases and norm weights are randomised (Hugging Face initialises them to 0 and 1), so the bias term of
the decomposition is really exercised. All tiny models share the byte-level tokenizer of the
``opt-tiny`` fixture (vocabulary 260, ``</s>`` = 2 as BOS/EOS, ``<pad>`` = 1), so any of them can be
saved to a folder and loaded by the command-line tools.
"""

from __future__ import annotations

import os
import shutil

import torch

VOCAB = 260
_TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json")


def _tiny_registry() -> dict:
    """``{kind: adapter}`` over the built-in families' tiny configurations, in registry order."""
    from .architectures.registry import builtin_adapters

    return {kind: adapter for adapter in builtin_adapters() for kind in adapter.tiny_configs()}


#: every tiny model kind, one per family variant (owned by each adapter's ``tiny_configs``)
TINY_KINDS = tuple(_tiny_registry())


def tiny_config(kind: str, **overrides):
    """The tiny config of ``kind`` (see :meth:`~huggingface_patch.architectures.ArchitectureAdapter.tiny_configs`),
    with ``overrides`` set on it."""
    adapters = _tiny_registry()
    if kind not in adapters:
        raise ValueError(f"unknown tiny model kind {kind!r}: choose from {', '.join(adapters)}")
    cfg = adapters[kind].tiny_configs()[kind]
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


@torch.no_grad()
def randomize_biases_and_norms(model: torch.nn.Module, seed: int = 0, scale: float = 0.1) -> torch.nn.Module:
    """Give every bias and every norm gain a random non-zero value (in place)."""
    gen = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "bias":
            param.copy_(torch.randn(param.shape, generator=gen) * scale)
        elif param.ndim == 1 and leaf == "weight":  # LayerNorm / RMSNorm gains
            param.copy_(1.0 + torch.randn(param.shape, generator=gen) * 0.3)
    return model


def build_tiny_model(kind: str, *, decomposed: bool = True, seed: int = 0, attn_implementation: str = "eager",
                     **overrides):
    """A tiny random causal LM of ``kind`` in eval mode (decomposing class unless ``decomposed=False``)."""
    from transformers import AutoModelForCausalLM

    config = tiny_config(kind, **overrides)
    config._attn_implementation = attn_implementation
    # the experts' plain loop (the grouped matmul refuses float64, and its choice depends on the machine)
    config._experts_implementation = "eager"
    torch.manual_seed(seed)
    if decomposed:
        from .modeling.auto import AutoDecomposedModelForCausalLM

        model = AutoDecomposedModelForCausalLM.from_config(config)
    else:
        model = AutoModelForCausalLM.from_config(config)
    randomize_biases_and_norms(model, seed=seed)
    return model.eval()


def tokenizer_folder() -> str:
    """The folder of the byte-level tokenizer files shipped with the package."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "byte_tokenizer")


def save_with_tokenizer(model, folder: str) -> str:
    """Save ``model`` plus the byte-level tokenizer to ``folder`` (loadable by every command-line tool)."""
    from transformers import AutoTokenizer

    model.save_pretrained(folder)
    for name in _TOKENIZER_FILES:
        shutil.copy(os.path.join(tokenizer_folder(), name), os.path.join(folder, name))
    # also the fast tokenizer's own file: some families (Mistral, Phi-3) resolve their tokenizer class from
    # the model config and need it
    AutoTokenizer.from_pretrained(tokenizer_folder()).save_pretrained(folder)
    return folder


def save_tiny_model(kind: str, folder: str, *, seed: int = 0, **overrides) -> str:
    """Save a tiny random model of ``kind`` plus the byte-level tokenizer to ``folder``; returns it."""
    return save_with_tokenizer(build_tiny_model(kind, decomposed=False, seed=seed, **overrides), folder)
