"""The architecture-neutral decomposition engine (DESIGN.md §1-3)."""

from .decompose import DecompositionResult, choose_block_size, run_decomposition
from .frozen import DecompositionMismatchError, FrozenModel, freeze
from .layouts import absolute_to_relative, relative_to_absolute

__all__ = [
    "DecompositionMismatchError",
    "DecompositionResult",
    "FrozenModel",
    "absolute_to_relative",
    "choose_block_size",
    "freeze",
    "relative_to_absolute",
    "run_decomposition",
]
