"""What produced a result: fingerprints of models, tokenizers and inputs, and the run record of a folder.

Every output folder holds ``run.json``: the tool, the package version, the model (its name, family, and a
fingerprint of its config and weights), the tokenizer (a fingerprint of its vocabulary and special
tokens), the inputs (corpus content hash) and every setting that changes the numbers (window, dtype,
conventions, precision, start token, ...). Writers compare a folder's record with their own settings
before adding to it; readers check that files come from one run and that the model they are read with
is the one that wrote them (:class:`~huggingface_patch.errors.RecordError` otherwise).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform

import torch

from .errors import RecordError

RUN_RECORD = "run.json"
#: bump when the meaning of a record field changes
RECORD_VERSION = 1

#: config fields that say where or how a model was loaded, not what it computes
_VOLATILE_CONFIG = ("_name_or_path", "transformers_version", "architectures", "_attn_implementation",
                    "_attn_implementation_autoset", "dtype", "torch_dtype", "name_or_path", "quantization_config",
                    "_commit_hash", "use_cache", "output_attentions", "output_hidden_states", "return_dict", "dec_len")


def package_version() -> str:
    """The version of this package."""
    from . import __version__

    return __version__


def environment() -> dict:
    """Versions of the package and of what it runs on; ``source``: the git commit of the package's source tree
    when it runs from a checkout (``+modified`` when tracked files differ from it), else None."""
    import transformers

    return {"huggingface_patch": package_version(), "transformers": transformers.__version__,
            "torch": torch.__version__, "python": platform.python_version(), "source": source_commit()}


def source_commit() -> str | None:
    """``git`` commit of the checkout this package was imported from, read once when the run started (so a run
    that outlives a commit names the code it ran), ``+modified`` when tracked files differed from it then; None
    outside a checkout."""
    from . import _source

    return _source.commit()


def _digest(parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else str(part).encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def config_fingerprint(config) -> str:
    """Hash of the config's computing fields (not its name, path, dtype or Transformers version)."""
    values = {k: v for k, v in config.to_dict().items() if k not in _VOLATILE_CONFIG}
    return _digest([json.dumps(values, sort_keys=True, default=str)])


@torch.no_grad()
def weights_fingerprint(model: torch.nn.Module, samples: int = 4096) -> str:
    """Hash of every parameter's name, shape and dtype, its sum and sum of squares (fp64) and an evenly
    strided sample of its values: two models with different weights differ here with overwhelming odds,
    and the whole pass reads each weight once."""
    parts = []
    for name, param in model.named_parameters(remove_duplicate=True):
        flat = param.detach().reshape(-1)
        step = max(1, flat.numel() // samples)
        sample = flat[::step][:samples].to("cpu", torch.float64)
        total = squares = 0.0
        for start in range(0, flat.numel(), 1 << 22):  # in chunks: no full fp64 copy of a large matrix
            chunk = flat[start : start + (1 << 22)].to(torch.float64)
            total += float(chunk.sum())
            squares += float((chunk * chunk).sum())
        parts += [name, tuple(param.shape), str(param.dtype), f"{total:.10e}", f"{squares:.10e}",
                  sample.numpy().tobytes()]
    return _digest(parts)


def tokenizer_fingerprint(tokenizer) -> str:
    """Hash of the tokenizer's vocabulary (token -> id) and special tokens."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    special = {k: str(v) for k, v in sorted(getattr(tokenizer, "special_tokens_map", {}).items())}
    return _digest([json.dumps(vocab, ensure_ascii=False), json.dumps(special, sort_keys=True)])


def file_sha256(path: str) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def text_sha256(text: str) -> str:
    """SHA-256 of a text's UTF-8 bytes (hex)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def describe_model(model, name: str, argument: str | None = None) -> dict:
    """The model part of a record: short name, MODEL argument, family, class, dtype and fingerprints."""
    return {"name": name, "argument": argument if argument is not None else name,
            "model_type": getattr(model.config, "model_type", None), "class": type(model).__name__,
            "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
            "config_fingerprint": config_fingerprint(model.config), "weights_fingerprint": weights_fingerprint(model)}


def describe_tokenizer(tokenizer) -> dict:
    """The tokenizer part of a record: class, size and fingerprint."""
    return {"class": type(tokenizer).__name__, "vocab_size": len(tokenizer),
            "fingerprint": tokenizer_fingerprint(tokenizer)}


def read_record(folder: str) -> dict | None:
    """The folder's ``run.json`` (None if there is none); :class:`RecordError` if it cannot be read."""
    path = os.path.join(folder, RUN_RECORD)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise RecordError(f"{path} is not a readable run record ({exc.__class__.__name__}): remove the folder's "
                          "results and run again") from None
    if not isinstance(record, dict):
        raise RecordError(f"{path} is not a run record: remove the folder's results and run again")
    stored = record.get("settings_sha256")
    if stored is not None and stored != settings_hash(record):
        raise RecordError(f"{path} was changed after the run (its settings no longer match their hash): its numbers "
                          "came from the settings it had; run the tool again instead of editing the record")
    return record


#: the parts of a record that say how its numbers were made (its file list and progress may change)
HASHED = ("tool", "settings", "model", "tokenizer", "inputs")


def settings_hash(record: dict) -> str:
    """SHA-256 of a record's :data:`HASHED` parts, as JSON (sorted keys, NaN as null)."""
    from .atomic import _json_safe

    parts = {key: record[key] for key in HASHED if key in record}
    return hashlib.sha256(json.dumps(_json_safe(parts), sort_keys=True).encode("utf-8")).hexdigest()


def write_record(folder: str, record: dict) -> None:
    """Write ``run.json`` atomically, with the hash of its settings (:func:`settings_hash`; every reader
    checks it), left untouched when it already says exactly this."""
    from .atomic import json_text, write_text

    text = json_text(dict(record, record_version=RECORD_VERSION, settings_sha256=settings_hash(record)))
    path = os.path.join(folder, RUN_RECORD)
    try:
        with open(path, encoding="utf-8") as handle:
            if handle.read() == text:
                return
    except OSError:
        pass
    write_text(text, path)


def differences(old: dict, new: dict, keys, prefix: str = "") -> list[str]:
    """Human-readable differences between two records over ``keys`` (dotted paths allowed)."""
    found = []
    for key in keys:
        a, b = old, new
        for part in key.split("."):
            a = a.get(part) if isinstance(a, dict) else None
            b = b.get(part) if isinstance(b, dict) else None
        if a != b:
            found.append(f"{prefix}{key} {_show(a)} (this run: {_show(b)})")
    return found


def _show(value) -> str:
    if isinstance(value, str) and len(value) > 40:
        return repr(value[:37] + "...")
    return repr(value)


def analysis_record(tool: str, settings: dict, *, model=None, model_name: str | None = None,
                    model_argument: str | None = None, tokenizer=None, inputs: dict | None = None) -> dict:
    """The ``run.json`` of an analysis's output folder: the tool, what it ran on and every setting."""
    record = {"tool": tool, "environment": environment(), "settings": settings, "inputs": inputs or {}}
    if model is not None:
        record["model"] = describe_model(model, model_name or "model", model_argument)
    elif model_name is not None:
        record["model"] = {"name": model_name, "argument": model_argument}
    if tokenizer is not None:
        record["tokenizer"] = describe_tokenizer(tokenizer)
    return record


def describe_file(path: str) -> dict:
    """An input file in a record: its name and content hash."""
    return {"file": os.path.basename(path), "sha256": file_sha256(path)}
