"""The one registry of supported architectures, keyed by ``config.model_type``.

Registering an adapter is all a new family needs: the decomposing model classes
(:mod:`huggingface_patch.modeling.classes`), ``AutoDecomposedModelForCausalLM``, both paper scripts and
every analysis look families up here. Adapters register from anywhere: the built-in ones from
:mod:`.families` (every module there is imported), others by calling :func:`register_architecture`, or
from an installed package through the entry-point group ``huggingface_patch.architectures`` (each entry
point names an adapter class or instance; they are loaded the first time an unknown type is asked for).
"""

from __future__ import annotations

import importlib
import logging
import pkgutil

from ..errors import HuggingfacePatchError
from .base import ArchitectureAdapter, ModelParts

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "huggingface_patch.architectures"

_REGISTRY: dict[str, ArchitectureAdapter] = {}
_LOADED = {"builtin": False, "entry_points": False}


class UnsupportedArchitectureError(HuggingfacePatchError):
    """Raised for a config whose ``model_type`` has no registered adapter."""


def register_architecture(adapter):
    """Register an adapter (an :class:`ArchitectureAdapter` instance or subclass) for each of its
    ``model_types``; later registrations win. Returns its argument, so it also works as a class decorator."""
    instance = adapter() if isinstance(adapter, type) else adapter
    if not isinstance(instance, ArchitectureAdapter):
        raise TypeError(f"register_architecture needs an ArchitectureAdapter, got {type(instance).__name__}")
    if not instance.model_types:
        raise ValueError(f"adapter {instance.name or type(instance).__name__!r} declares no model_types")
    for model_type in instance.model_types:
        _REGISTRY[model_type] = instance
    return adapter


def _load_builtin() -> None:
    if _LOADED["builtin"]:
        return
    _LOADED["builtin"] = True
    from . import families

    for module in pkgutil.iter_modules(families.__path__):
        importlib.import_module(f"{families.__name__}.{module.name}")


def _load_entry_points() -> None:
    if _LOADED["entry_points"]:
        return
    _LOADED["entry_points"] = True
    from importlib.metadata import entry_points

    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            register_architecture(point.load())
        except Exception as exc:  # a broken plug-in must not break the built-in families
            log.warning("architecture plug-in %s could not be loaded: %s", point.name, exc)


def list_architectures() -> list[str]:
    """The ``config.model_type`` values that can be decomposed."""
    _load_builtin()
    _load_entry_points()
    return sorted(_REGISTRY)


def registered_adapters() -> list[ArchitectureAdapter]:
    """Each registered adapter once (in order of first model type)."""
    list_architectures()
    seen: dict[int, ArchitectureAdapter] = {}
    for model_type in sorted(_REGISTRY):
        seen.setdefault(id(_REGISTRY[model_type]), _REGISTRY[model_type])
    return list(seen.values())


def builtin_adapters() -> list[ArchitectureAdapter]:
    """The adapters of the package's own families (:mod:`.families`), each once, in module order."""
    _load_builtin()
    from . import families

    seen: dict[type, ArchitectureAdapter] = {}
    for adapter in _REGISTRY.values():
        if type(adapter).__module__.startswith(families.__name__ + "."):
            seen.setdefault(type(adapter), adapter)
    return sorted(seen.values(), key=lambda a: (type(a).__module__, a.name))


def get_adapter(model_or_config) -> ArchitectureAdapter:
    """The adapter for a model, a config or a ``model_type`` string; a clear error naming the supported
    types otherwise."""
    if isinstance(model_or_config, str):
        model_type = model_or_config
    else:
        config = getattr(model_or_config, "config", model_or_config)
        model_type = getattr(config, "model_type", None)
    _load_builtin()
    if model_type not in _REGISTRY:
        _load_entry_points()
    if model_type not in _REGISTRY:
        raise UnsupportedArchitectureError(
            f"unsupported architecture {model_type!r}: supported model types are {', '.join(list_architectures())}"
            " (huggingface_patch.register_architecture adds one)"
        )
    return _REGISTRY[model_type]


def model_parts(model) -> ModelParts:
    """Shortcut: where layers, attention, MLP and final norm live in ``model`` (any supported family)."""
    return get_adapter(model).parts(model)


def family_table(adapters=None) -> str:
    """The README's table of supported families (Markdown), one row per adapter (default: every registered
    one), from each adapter's ``summary``."""
    lines = ["| family | `model_type` | classes | frozen from the real forward pass | in the bias term | notes |",
             "|---|---|---|---|---|---|"]
    for adapter in registered_adapters() if adapters is None else adapters:
        s = adapter.summary
        types = ", ".join(f"`{t}`" for t in adapter.model_types)
        lines.append(f"| {adapter.name} | {types} | {s.get('classes', '')} | {s.get('frozen', '')} | "
                     f"{s.get('bias term', '')} | {s.get('notes', '')} |")
    return "\n".join(lines)
