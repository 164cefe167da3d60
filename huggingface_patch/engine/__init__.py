"""The architecture-neutral decomposition engine, organised by component (``docs/design.md``).

:mod:`.norms`, :mod:`.attention` and :mod:`.mlp` hold each frozen linear map once; :mod:`.residual` runs a
stream through a layer's residual blocks; :mod:`.frozen` freezes a forward pass and checks it layer by layer;
:mod:`.decompose` drives blocks of sources; :mod:`.capture`, :mod:`.layouts`, :mod:`.packed`, :mod:`.sparse`
and :mod:`.memory` are the plumbing; :mod:`.reference` is an independent per-source implementation.
"""

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
