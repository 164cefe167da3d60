"""Decomposing Hugging Face causal LMs: every hidden state as one vector per source token plus a bias.

>>> from huggingface_patch import AutoDecomposedModelForCausalLM
>>> model = AutoDecomposedModelForCausalLM.from_pretrained("smollm2-135m")      # doctest: +SKIP
>>> out = model(input_ids, decomposition_window=50)                             # doctest: +SKIP
>>> out.decomposition.shape   # (batch, W, T, H), relative layout                 # doctest: +SKIP

The decomposing classes (``DecomposedOPTForCausalLM``, ``DecomposedGemma3ForCausalLM``, ...) are made from
the architecture registry and resolve as attributes of this package.
"""

from .architectures import (
    UnsupportedArchitectureError,
    get_adapter,
    list_architectures,
    model_parts,
    readout,
    register_architecture,
)
from .engine import DecompositionMismatchError, absolute_to_relative, relative_to_absolute
from .modeling import AutoDecomposedModelForCausalLM, decomposed_class

__version__ = "0.2.0"

__all__ = [
    "AutoDecomposedModelForCausalLM",
    "DecompositionMismatchError",
    "UnsupportedArchitectureError",
    "absolute_to_relative",
    "decomposed_class",
    "get_adapter",
    "list_architectures",
    "model_parts",
    "readout",
    "register_architecture",
    "relative_to_absolute",
]


def __getattr__(name: str):
    if name.startswith("Decomposed"):
        from .modeling import classes

        return getattr(classes, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    from .modeling.classes import builtin_class_names

    return sorted(list(globals()) + builtin_class_names())
