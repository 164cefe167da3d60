"""Decomposing Hugging Face causal LMs: every hidden state as one vector per source token plus a bias.

>>> from huggingface_patch import AutoDecomposedModelForCausalLM
>>> model = AutoDecomposedModelForCausalLM.from_pretrained("smollm2-135m")      # doctest: +SKIP
>>> out = model(input_ids, decomposition_window=50)                             # doctest: +SKIP
>>> out.decomposition.shape   # (batch, W, T, H), relative layout                 # doctest: +SKIP

The decomposing classes (``DecomposedOPTForCausalLM``, ``DecomposedGemma3ForCausalLM``, ...) are made from
the architecture registry and resolve as attributes of this package.
"""

# Everything is imported on first use (module ``__getattr__``), so that ``import huggingface_patch`` and the
# command-line tools start fast and load Transformers' model code only when a model is built.
_EXPORTS = {
    "AutoDecomposedModelForCausalLM": "modeling",
    "decomposed_class": "modeling",
    "DecompositionMismatchError": "engine",
    "DecompositionOptions": "engine.options",
    "absolute_to_relative": "engine",
    "relative_to_absolute": "engine",
    "UnsupportedArchitectureError": "architectures",
    "get_adapter": "architectures",
    "list_architectures": "architectures",
    "model_parts": "architectures",
    "readout": "architectures",
    "register_architecture": "architectures",
    "ArchitectureAdapter": "architectures",
    "load_model": "loading",
    "load_tokenizer": "loading",
    "load_model_and_tokenizer": "loading",
    "load_bundle": "loading",
    "ModelBundle": "loading",
    "HuggingfacePatchError": "errors",
    "attribute": "faithfulness",
}

__version__ = "0.2.0"

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    import importlib

    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    if name.startswith("Decomposed"):
        from .modeling import classes

        return getattr(classes, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    from .modeling.classes import builtin_class_names

    return sorted(list(globals()) + builtin_class_names())
