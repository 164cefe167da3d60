"""Decomposing model classes and their outputs."""

from .auto import AutoDecomposedModelForCausalLM
from .classes import decomposed_class, decomposed_class_for
from .outputs import decomposed_output

__all__ = ["AutoDecomposedModelForCausalLM", "decomposed_class", "decomposed_class_for", "decomposed_output"]


def __getattr__(name: str):
    from . import classes

    return getattr(classes, name)
