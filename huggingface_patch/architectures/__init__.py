"""Registry of supported architectures, keyed by ``config.model_type``.

>>> from huggingface_patch.architectures import get_adapter, list_architectures
>>> sorted(list_architectures())  # doctest: +SKIP
['gpt2', 'llama', 'mistral', 'opt', 'qwen2']

A new family plugs in with :func:`register_architecture` (an :class:`ArchitectureAdapter` subclass that
maps Hugging Face attribute names onto the engine's records).
"""

from __future__ import annotations

from .base import ArchitectureAdapter, LayerParts, ModelParts
from .gpt2 import GPT2Adapter
from .llama import LlamaAdapter
from .opt import OPTAdapter
from .spec import Affine, AttentionSpec, LayerSpec, MLPSpec, ModelSpec, NormSpec, ResidualBlock

_REGISTRY: dict[str, ArchitectureAdapter] = {}


class UnsupportedArchitectureError(ValueError):
    """Raised for a config whose ``model_type`` has no registered adapter."""


def register_architecture(adapter: ArchitectureAdapter) -> ArchitectureAdapter:
    """Register ``adapter`` for each of its ``model_types`` (later registrations win)."""
    for model_type in adapter.model_types:
        _REGISTRY[model_type] = adapter
    return adapter


def list_architectures() -> list[str]:
    """The ``config.model_type`` values that can be decomposed."""
    return sorted(_REGISTRY)


def get_adapter(model_or_config) -> ArchitectureAdapter:
    """The adapter for a model or config; a clear error naming the supported types otherwise."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if model_type not in _REGISTRY:
        raise UnsupportedArchitectureError(
            f"unsupported architecture {model_type!r}: supported model types are {', '.join(list_architectures())}"
        )
    return _REGISTRY[model_type]


def model_parts(model) -> ModelParts:
    """Shortcut: where layers, attention, MLP and final norm live in ``model`` (any supported family)."""
    return get_adapter(model).parts(model)


for _adapter in (OPTAdapter(), GPT2Adapter(), LlamaAdapter()):
    register_architecture(_adapter)

__all__ = [
    "Affine",
    "ArchitectureAdapter",
    "AttentionSpec",
    "LayerParts",
    "LayerSpec",
    "MLPSpec",
    "ModelParts",
    "ModelSpec",
    "NormSpec",
    "ResidualBlock",
    "UnsupportedArchitectureError",
    "get_adapter",
    "list_architectures",
    "model_parts",
    "register_architecture",
]
