"""Supported architectures: one adapter module per family in :mod:`.families`, one registry.

>>> from huggingface_patch.architectures import get_adapter, list_architectures
>>> "gemma3_text" in list_architectures()
True

A new family plugs in with :func:`register_architecture` (an :class:`ArchitectureAdapter` subclass that
maps Hugging Face attribute names onto the engine's records); see ``docs/architecture.md``.
"""

from __future__ import annotations

from .base import ArchitectureAdapter, LayerParts, ModelParts
from .coverage import coverage, coverage_table
from .registry import (
    ENTRY_POINT_GROUP,
    UnsupportedArchitectureError,
    family_table,
    get_adapter,
    list_architectures,
    model_parts,
    register_architecture,
    registered_adapters,
)
from .spec import (
    Affine,
    AttentionSpec,
    Branch,
    LayerSpec,
    MLPSpec,
    ModelSpec,
    MoESpec,
    NormSpec,
    Readout,
    ResidualBlock,
)


def readout(model) -> Readout:
    """How ``model`` turns the state its LM head reads into logits (weight, bias, softcapping)."""
    return get_adapter(model).readout(model)


__all__ = [
    "ENTRY_POINT_GROUP",
    "Affine",
    "ArchitectureAdapter",
    "AttentionSpec",
    "Branch",
    "LayerParts",
    "LayerSpec",
    "MLPSpec",
    "ModelParts",
    "MoESpec",
    "ModelSpec",
    "NormSpec",
    "Readout",
    "ResidualBlock",
    "UnsupportedArchitectureError",
    "coverage",
    "coverage_table",
    "family_table",
    "get_adapter",
    "list_architectures",
    "model_parts",
    "readout",
    "register_architecture",
    "registered_adapters",
]
