"""``DecompositionOptions``: every setting of one decomposition call, validated once.

The CLIs build one from their arguments, the pipeline and ``stream_deltalp`` pass it on, and ``forward``
accepts it as ``decomposition_options=`` (or builds it from the documented ``decomposition_*`` keyword
arguments). Validation happens here and nowhere downstream, so a bad value fails before the forward pass
with a message naming the option.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from ..errors import InputError
from .conventions import DEFAULT, Conventions
from .memory import parse_memory
from .precision import check_precision

MLP_PATHS = ("auto", "dense", "sparse")

#: ``forward`` keyword argument -> option field
FORWARD_KEYWORDS = {"decomposition_window": "window", "output_layer_decompositions": "output_layers",
                    "decomposition_block_size": "block_size", "decomposition_conventions": "conventions",
                    "decomposition_max_memory": "max_memory", "decomposition_mlp_path": "mlp_path",
                    "decomposition_consumer": "consumer", "decomposition_precision": "precision"}


def _positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return value


@dataclass(frozen=True)
class DecompositionOptions:
    """``window``: sources kept per target (positive); ``output_layers``: keep every layer's decomposition;
    ``block_size``: sources per block (``None``: chosen from ``max_memory`` or the free memory);
    ``max_memory``: total budget in bytes (``"4GB"``, ``"3.5GiB"`` accepted and converted);
    ``mlp_path``: ``"auto"``, ``"dense"`` or ``"sparse"``; ``consumer``: streaming mode, ``consumer(start,
    block)`` receives every finished block; ``precision``: ``"fp32"`` (exact), ``"bf16"``, ``"tf32"`` (CUDA)
    for the contributions' matmuls; ``conventions``: :class:`~huggingface_patch.engine.conventions.Conventions`.
    """

    window: int
    output_layers: bool = False
    block_size: int | None = None
    max_memory: int | None = None
    mlp_path: str = "auto"
    consumer: Callable | None = None
    precision: str = "fp32"
    conventions: Conventions = DEFAULT

    def __post_init__(self):
        _positive("decomposition_window", self.window)
        if self.block_size is not None:
            _positive("decomposition_block_size", self.block_size)
        if self.max_memory is not None:
            try:
                object.__setattr__(self, "max_memory", parse_memory(self.max_memory))
            except ValueError as exc:
                raise InputError(f"decomposition_max_memory: {exc}") from None
        if self.mlp_path not in MLP_PATHS:
            raise InputError(f"decomposition_mlp_path must be one of {', '.join(MLP_PATHS)}, got {self.mlp_path!r}")
        check_precision(self.precision)
        if self.conventions is None:
            object.__setattr__(self, "conventions", DEFAULT)
        elif not isinstance(self.conventions, Conventions):
            raise InputError(f"decomposition_conventions must be a Conventions, got {type(self.conventions).__name__}")

    @classmethod
    def from_forward_kwargs(cls, **kwargs) -> "DecompositionOptions":
        """From ``forward``'s ``decomposition_*`` keyword arguments (``None`` values take the defaults)."""
        fields = {FORWARD_KEYWORDS[key]: value for key, value in kwargs.items() if value is not None}
        return cls(**fields)

    def replace(self, **changes) -> "DecompositionOptions":
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def forward_kwargs(self) -> dict:
        """The documented ``forward`` keyword arguments that build these options."""
        return {key: getattr(self, field) for key, field in FORWARD_KEYWORDS.items()}
