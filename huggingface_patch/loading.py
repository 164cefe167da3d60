"""Resolve a MODEL argument (hub id, local folder, ``.gguf`` file, or a bundled model's name) and load it.

Every command-line tool goes through :func:`load_bundle` (one MODEL argument, resolved once, becomes the model,
its tokenizer or processor, where it came from and its start token), built on :func:`resolve_model` and
:func:`load_model_and_tokenizer`, so the bundled real model works everywhere under the same name. Nothing here
assumes a particular local path.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

import torch

from .errors import HuggingfacePatchError

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


class ModelLoadError(HuggingfacePatchError):
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


#: tokenizer classes that are the plain fast tokenizer: loaded directly, without ``AutoTokenizer`` reading the
#: model's config first (a second or two of imports in every short-lived tool, e.g. representations_to_deltalp.py)
_PLAIN_FAST = ("TokenizersBackend", "PreTrainedTokenizerFast")


def tokenizer_of(source: ModelSource):
    """The tokenizer that belongs to ``source`` (GGUF files carry their own)."""
    from transformers import AutoTokenizer

    _check_folder(source)
    try:
        if _plain_fast_tokenizer(source):
            from transformers import PreTrainedTokenizerFast

            return PreTrainedTokenizerFast.from_pretrained(source.path)
        return AutoTokenizer.from_pretrained(source.path, **source.kwargs)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ModelLoadError(f"could not load the tokenizer of {source.path!r}: {_reason(exc)}") from exc


def _plain_fast_tokenizer(source: ModelSource) -> bool:
    config = os.path.join(source.path, "tokenizer_config.json")
    if source.kwargs or not os.path.isfile(config) or not os.path.isfile(os.path.join(source.path, "tokenizer.json")):
        return False
    import json

    try:
        with open(config, encoding="utf-8") as handle:
            return json.load(handle).get("tokenizer_class") in _PLAIN_FAST
    except (OSError, ValueError):
        return False


def load_tokenizer(model: str):
    """The tokenizer of a MODEL argument (bundled name, folder, hub id or ``.gguf`` file)."""
    return tokenizer_of(resolve_model(model))


def _check_hub(source: ModelSource) -> None:
    """A hub id that is neither cached nor reachable fails at once, in one line (Transformers would retry for
    most of a minute and print every attempt)."""
    if os.path.isdir(source.path) or source.kwargs.get("gguf_file"):
        return
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = isinstance(try_to_load_from_cache(source.path, "config.json"), str)
    except Exception:  # an id the hub library cannot even parse: Transformers gives the error
        return
    if cached:
        return
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    if not offline:
        import socket

        try:
            socket.create_connection(("huggingface.co", 443), timeout=3).close()
            return
        except OSError:
            pass
    raise ModelLoadError(f"model {source.path!r} is not in the local cache and the model hub cannot be reached"
                         f"{' (HF_HUB_OFFLINE is set)' if offline else ''}: give a local folder, a .gguf file or a "
                         "bundled model (smollm2-135m, gemma3-270m)")


def _check_folder(source: ModelSource) -> None:
    """Refuse a local folder that holds no model, with the fix (Transformers' own message is a paragraph); a
    hub id that can be neither read from the cache nor downloaded (:func:`_check_hub`)."""
    _check_hub(source)
    if source.kwargs.get("gguf_file") or not os.path.isdir(source.path):
        return
    if not os.path.isfile(os.path.join(source.path, "config.json")):
        raise ModelLoadError(f"model folder {source.path} has no config.json: give a folder written by "
                             "save_pretrained (config, weights and tokenizer files)")


def load_model_and_tokenizer(
    model: "str | ModelSource",
    *,
    dtype: str | torch.dtype | None = "float32",
    device: str | None = None,
    decomposed: bool = True,
    attn_implementation: str | None = "eager",
    **kwargs,
):
    """Load a model (decomposing class by default, in eval mode) and its tokenizer from a MODEL argument.

    Returns ``(model, tokenizer, source)``. ``attn_implementation='eager'`` is the default because the
    decomposition and the attention interventions read the real attention probabilities.
    """
    source = model if isinstance(model, ModelSource) else resolve_model(model)
    key = (source.path, tuple(sorted(source.kwargs.items())), str(dtype), str(device), decomposed,
           attn_implementation, tuple(sorted((k, str(v)) for k, v in kwargs.items())))
    if _REUSE["on"] and key in _REUSE["models"]:
        return (*_REUSE["models"][key], source)
    tokenizer = tokenizer_of(source)
    loaded = load_model(source, dtype=dtype, device=device, decomposed=decomposed,
                        attn_implementation=attn_implementation, **kwargs)
    if _REUSE["on"]:
        _REUSE["models"][key] = (loaded, tokenizer)
    return loaded, tokenizer, source


_REUSE: dict = {"on": False, "models": {}}


@contextlib.contextmanager
def reuse_models():
    """Inside the block, :func:`load_model_and_tokenizer` loads each model (per source, dtype, device and
    class) once and hands the same instance to every later call: several tools run in one process (the
    reproduction) pay for loading once. Every tool leaves a model as it found it (hooks and attention
    switches are undone in ``finally``). Everything loaded is dropped when the block ends."""
    previous = _REUSE["on"]
    _REUSE["on"] = True
    try:
        yield
    finally:
        _REUSE["on"] = previous
        if not previous:
            _REUSE["models"].clear()


def load_model(model: "str | ModelSource", *, dtype: str | torch.dtype | None = "float32", device: str | None = None,
               decomposed: bool = True, attn_implementation: str | None = "eager", **kwargs):
    """The model of a MODEL argument (or :class:`ModelSource`): the decomposing class unless
    ``decomposed=False``, in eval mode, on ``device``."""
    from transformers import AutoModelForCausalLM

    source = model if isinstance(model, ModelSource) else resolve_model(model)
    _check_folder(source)
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
    except HuggingfacePatchError:
        raise
    except Exception as exc:  # damaged files surface as many exception types (safetensors, zip, OS errors)
        raise ModelLoadError(f"could not load model {source.name!r} from {source.path}: {_reason(exc)}") from exc
    loaded.eval()
    if device is not None:
        loaded.to(device)
    return loaded


def load_media_model(model: "str | ModelSource", kind: str, *, dtype: str | torch.dtype | None = "float32",
                     device: str | None = None):
    """``(model, processor)`` of a ViT image classifier (``kind='vit'``: its image processor) or a Whisper
    model (``'whisper'``: its feature extractor), in eval mode; a processor missing from the folder is built
    from the config."""
    from transformers import (
        AutoFeatureExtractor,
        AutoImageProcessor,
        AutoModelForImageClassification,
        AutoModelForSpeechSeq2Seq,
    )

    source = model if isinstance(model, ModelSource) else resolve_model(model)
    model_class = AutoModelForImageClassification if kind == "vit" else AutoModelForSpeechSeq2Seq
    try:
        loaded = model_class.from_pretrained(source.path, dtype=parse_dtype(dtype)).eval()
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not load {kind} model {source.name!r}: {_reason(exc)}") from exc
    if device:
        loaded.to(device)
    try:
        processor = (AutoImageProcessor if kind == "vit" else AutoFeatureExtractor).from_pretrained(source.path)
    except (OSError, ValueError):
        from transformers import ViTImageProcessor, WhisperFeatureExtractor

        size = getattr(loaded.config, "image_size", None)
        processor = ViTImageProcessor(size={"height": size, "width": size}) if kind == "vit" else \
            WhisperFeatureExtractor(feature_size=loaded.config.num_mel_bins)
    return loaded, processor


def _reason(exc: BaseException) -> str:
    """A short, complete reason for a loading failure (Transformers' messages run over several lines)."""
    text = " ".join(str(exc).split())
    lowered = text.lower()
    if "safetensors" in lowered or "header" in lowered or "deserializ" in lowered or "incomplete" in lowered:
        return "its weights file is damaged or incomplete (re-download or re-save the model)"
    if not text:
        return exc.__class__.__name__
    first = text.split(". ")[0].rstrip(".")
    return first if len(first) <= 200 else first[:197].rsplit(" ", 1)[0] + " ..."


def reinitialized(model, seed: int):
    """A copy of ``model``'s architecture with freshly initialised weights (the family's own initialisation,
    seeded with ``seed``), in eval mode, on ``model``'s device and dtype: the untrained control of an
    analysis (same architecture, same tokenizer, no training)."""
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        fresh = type(model)._from_config(model.config, dtype=model.dtype)
    finally:
        torch.random.set_rng_state(state)
    return fresh.to(model.device).eval()


def model_type_of(source: ModelSource) -> str | None:
    """``config.model_type`` of ``source``, read from its config alone (no weights); None when the config cannot
    be read here (a hub id without a network: loading then gives the error)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source.path, **source.kwargs).model_type
    except (OSError, ValueError, KeyError):
        return None


@dataclass
class ModelBundle:
    """What one MODEL argument became: ``model`` (eval mode), ``source`` (where it came from; ``source.name``
    names it in outputs), ``tokenizer`` and ``start`` (the document start token,
    :class:`~huggingface_patch.corpus.StartToken`) for a text model, ``processor`` for a ViT or Whisper model;
    ``kind``: ``"text"``, ``"vit"`` or ``"whisper"``."""

    model: object
    source: ModelSource
    tokenizer: object = None
    start: object = None
    processor: object = None
    kind: str = "text"


def load_bundle(model: "str | ModelSource", *, kind: str = "text", dtype: str | torch.dtype | None = "float32",
                device: str | None = None, decomposed: bool = True, bos="auto", random_init: int | None = None,
                **kwargs) -> ModelBundle:
    """The one loading path of the tools: resolve MODEL once, load it (text: the decomposing class unless
    ``decomposed=False``, eager attention; ``kind='vit'``/``'whisper'``: the media model and its processor),
    refuse an unsupported text family in one line, re-initialise the weights with ``random_init`` (a seed: the
    untrained control) and resolve ``bos`` (``--bos``) to the start token."""
    source = model if isinstance(model, ModelSource) else resolve_model(model)
    if kind != "text":
        loaded, processor = load_media_model(source, kind, dtype=dtype, device=device)
        return ModelBundle(loaded, source, processor=processor, kind=kind)
    from .architectures import get_adapter
    from .corpus import document_start

    loaded, tokenizer, _ = load_model_and_tokenizer(source, dtype=dtype, device=device, decomposed=decomposed,
                                                    **kwargs)
    get_adapter(loaded)  # an unsupported family: UnsupportedArchitectureError names the supported ones
    if random_init is not None:
        loaded = reinitialized(loaded, random_init)
    start = document_start(loaded.config, tokenizer, bos, bundled=source.name)
    return ModelBundle(loaded, source, tokenizer=tokenizer, start=start)
