"""The architecture-neutral decomposition engine (DESIGN.md §1-3)."""

from .decompose import DecompositionResult, run_decomposition
from .frozen import DecompositionMismatchError, FrozenModel, freeze
from .layouts import absolute_to_relative, relative_to_absolute
from .memory import MemoryBudgetError, MemoryEstimate, choose_block_size, estimate, parse_memory

__all__ = [
    "DecompositionMismatchError",
    "DecompositionResult",
    "MemoryBudgetError",
    "MemoryEstimate",
    "FrozenModel",
    "absolute_to_relative",
    "choose_block_size",
    "estimate",
    "parse_memory",
    "freeze",
    "relative_to_absolute",
    "run_decomposition",
]
