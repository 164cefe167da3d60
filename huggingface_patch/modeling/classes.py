"""Decomposing subclasses of the Hugging Face model classes, made from the architecture registry.

For every registered family the classes are ``Decomposed`` + the Hugging Face class name
(``DecomposedOPTForCausalLM``, ``DecomposedGemma3ForCausalLM``, ...): the Hugging Face class with
:class:`~.mixin.DecompositionMixin` first in its bases, nothing else. There is no table of them to keep in
step: they are created on first use from the adapter's :meth:`model_classes`, and these names resolve
from this module and from ``huggingface_patch`` (``from huggingface_patch import DecomposedOPTModel``).
"""

from __future__ import annotations

from ..architectures import get_adapter, registered_adapters
from ..compat import inherit_checkpoint_conversions
from .mixin import DecompositionMixin

PREFIX = "Decomposed"
_CLASSES: dict[type, type] = {}


def decomposed_class(base: type) -> type:
    """The decomposing subclass of a Hugging Face model class (one per base class)."""
    if issubclass(base, DecompositionMixin):
        return base
    if base not in _CLASSES:
        cls = type(f"{PREFIX}{base.__name__}", (DecompositionMixin, base), {
            "__module__": __name__,
            "__doc__": f"``{base.__name__}`` whose ``forward`` can also return a token-wise decomposition.",
        })
        inherit_checkpoint_conversions(cls, base)
        _CLASSES[base] = cls
    return _CLASSES[base]


def decomposed_class_for(config, head: bool = True) -> type:
    """The decomposing class for ``config`` (with LM head by default); clear error when unsupported."""
    causal_lm, bare = get_adapter(config).model_classes(config)
    return decomposed_class(causal_lm if head else bare)


def _config_classes():
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    for adapter in registered_adapters():
        for model_type in adapter.model_types:
            if model_type in CONFIG_MAPPING:
                yield adapter, CONFIG_MAPPING[model_type]


def builtin_class_names() -> list[str]:
    """Names of the decomposing classes of every registered family."""
    names = []
    for adapter, config_class in _config_classes():
        try:
            names.extend(PREFIX + cls.__name__ for cls in adapter.model_classes(config_class))
        except (KeyError, TypeError, ValueError):
            continue
    return sorted(set(names))


def __getattr__(name: str):
    if name.startswith(PREFIX):
        wanted = name[len(PREFIX):]
        for adapter, config_class in _config_classes():
            try:
                classes = adapter.model_classes(config_class)
            except (KeyError, TypeError, ValueError):
                continue
            for cls in classes:
                if cls.__name__ == wanted:
                    return decomposed_class(cls)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + builtin_class_names())
