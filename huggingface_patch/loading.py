"""Resolve a MODEL argument (hub id, local folder, ``.gguf`` file, or a bundled model's name) and load it.

Every command-line tool goes through :func:`resolve_model` / :func:`load_model_and_tokenizer`, so the
bundled real model works everywhere under the same name. Nothing here assumes a particular local path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float64": torch.float64,
    "fp64": torch.float64,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


class ModelLoadError(ValueError):
    """A MODEL argument that cannot be resolved or loaded; the message says how to fix it."""


@dataclass
class ModelSource:
    """Where to load from: ``path`` (folder or hub id), extra ``from_pretrained`` kwargs, and the short
    ``name`` used in output file names (the paper's MODEL = last path component)."""

    path: str
    name: str
    kwargs: dict = field(default_factory=dict)


def resolve_model(model: str) -> ModelSource:
    """Turn a MODEL argument into a :class:`ModelSource`.

    A bundled model's name (``smollm2-135m``, ``gemma3-270m``: :mod:`huggingface_patch.bundled`) -> its
    converted cache folder (built on first use); ``*.gguf`` -> that file (its folder plus ``gguf_file``);
    anything else is handed to ``from_pretrained`` as a folder or hub id.
    """
    from .bundled import BUNDLED, BundledModelError, bundled_folder, bundled_model

    bundled = bundled_model(model)
    if bundled is not None:
        try:
            return ModelSource(bundled_folder(bundled.name), bundled.name, {})
        except BundledModelError as exc:
            raise ModelLoadError(str(exc)) from None
    if model.endswith(".gguf"):
        if not os.path.isfile(model):
            raise ModelLoadError(f"GGUF file not found: {model}")
        folder, filename = os.path.split(os.path.abspath(model))
        known = {entry.gguf_file: entry.name for entry in BUNDLED.values()}
        return ModelSource(folder, known.get(filename, filename[: -len(".gguf")]), {"gguf_file": filename})
    path = os.path.expanduser(model)
    if not os.path.isdir(path):
        # a hub id is "name" or "org/name"; anything else that is not a folder is a mistyped path
        if os.path.exists(path) or model.startswith((".", "/", "~")) or model.count("/") > 1:
            names = ", ".join(repr(name) for name in BUNDLED)
            raise ModelLoadError(f"model folder not found: {model} (give a model folder, a hub id, a .gguf file or "
                                 f"one of {names})")
    return ModelSource(path, os.path.basename(model.rstrip("/" + os.sep)), {})


def parse_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    """``'float32'``/``'fp32'``/... -> torch dtype (None stays None)."""
    if name is None or isinstance(name, torch.dtype):
        return name
    if name not in _DTYPES:
        raise ModelLoadError(f"unknown dtype {name!r}: use one of {', '.join(sorted(_DTYPES))}")
    return _DTYPES[name]


def load_tokenizer(source: ModelSource):
    """The tokenizer that belongs to ``source`` (GGUF files carry their own)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source.path, **source.kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not load the tokenizer of {source.path!r}: {_first_line(exc)}") from exc


def load_model_and_tokenizer(
    model: str,
    *,
    dtype: str | torch.dtype | None = "float32",
    device: str | None = None,
    decomposed: bool = True,
    attn_implementation: str | None = "eager",
    **kwargs,
):
    """Load a model (decomposing class by default) and its tokenizer from a MODEL argument.

    Returns ``(model, tokenizer, source)``. ``attn_implementation='eager'`` is the default because the
    decomposition and the attention interventions read the real attention probabilities.
    """
    from transformers import AutoModelForCausalLM

    source = resolve_model(model)
    tokenizer = load_tokenizer(source)
    load_kwargs = dict(source.kwargs)
    load_kwargs.update(kwargs)
    torch_dtype = parse_dtype(dtype)
    if torch_dtype is not None:
        load_kwargs["dtype"] = torch_dtype
    if attn_implementation is not None:
        load_kwargs["attn_implementation"] = attn_implementation
    if decomposed:
        from .modeling.auto import AutoDecomposedModelForCausalLM as loader
    else:
        loader = AutoModelForCausalLM
    try:
        loaded = loader.from_pretrained(source.path, **load_kwargs)
    except (OSError, ValueError, KeyError) as exc:
        if exc.__class__.__name__ == "UnsupportedArchitectureError":
            raise
        raise ModelLoadError(f"could not load model {model!r}: {_first_line(exc)}") from exc
    loaded.eval()
    if device is not None:
        loaded.to(device)
    return loaded, tokenizer, source


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__
