"""Saturation backends, one module per modality: text LMs of every supported family (:mod:`.text`), ViT
image classifiers (:mod:`.vit`) and Whisper's decoder (:mod:`.whisper`). :func:`load_backend` loads a
model through Transformers' auto classes and picks the backend from its config."""

from __future__ import annotations

from ...errors import InputError
from ...layer_states import record_blocks
from .base import Backend, Item, list_files
from .text import TextBackend
from .vit import IMAGE_EXTENSIONS, ViTBackend, vit_parts
from .whisper import AUDIO_EXTENSIONS, WhisperBackend, read_wav, whisper_parts

__all__ = ["AUDIO_EXTENSIONS", "IMAGE_EXTENSIONS", "Backend", "Item", "TextBackend", "ViTBackend", "WhisperBackend",
           "list_files", "load_backend", "read_wav", "record_blocks", "vit_parts", "whisper_parts"]

#: the non-text backends, by ``config.model_type``: (input option, loader of the model's preprocessing)
_OTHER_MODALITIES = {"vit": "--images DIR", "whisper": "--audio DIR"}


def load_backend(model: str, *, corpus: str | None = None, images: str | None = None, audio: str | None = None,
                 device: str | None = None, dtype: str = "float32", max_items: int | None = None,
                 max_new_tokens: int = 20, start_choice="auto", random_init: int | None = None) -> Backend:
    """Load MODEL and the input for the chosen modality (exactly one of ``corpus``, ``images``, ``audio``).
    ``random_init``: a seed; the text model's weights are then re-initialised (the untrained control)."""
    from ...loading import load_bundle, model_type_of, resolve_model

    source = resolve_model(model)  # once: the config peek and the load read the same source
    model_type = model_type_of(source)
    if images is not None or audio is not None:
        if random_init is not None:
            raise InputError("--random-init works with text models (--corpus) only")
        wanted, folder = ("vit", images) if images is not None else ("whisper", audio)
        list_files(folder, IMAGE_EXTENSIONS if wanted == "vit" else AUDIO_EXTENSIONS,
                   "image" if wanted == "vit" else "audio")
        if model_type not in (None, wanted):
            needs = "a ViT image classifier" if wanted == "vit" else "a Whisper model"
            raise InputError(f"{'--images' if wanted == 'vit' else '--audio'} needs {needs}; {model!r} is a "
                             f"{model_type!r} model")
        bundle = load_bundle(source, kind=wanted, dtype=dtype, device=device)
        if wanted == "vit":
            backend = ViTBackend(bundle.model, bundle.processor, images, device)
        else:
            backend = WhisperBackend(bundle.model, bundle.processor, audio, device, max_new_tokens=max_new_tokens)
        if max_items:
            backend.files = backend.files[:max_items]
        return backend
    if corpus is None:
        raise InputError("give one input: --corpus FILE, --images DIR or --audio DIR")
    from ...architectures import get_adapter
    from ...corpus import read_corpus

    documents = read_corpus(corpus)
    if max_items:
        documents = documents[:max_items]
    if model_type in _OTHER_MODALITIES:
        raise InputError(f"{model!r} is a {model_type!r} model: give {_OTHER_MODALITIES[model_type]}")
    if model_type is not None:
        get_adapter(model_type)  # an unsupported family: one-line error, before loading
    bundle = load_bundle(source, dtype=dtype, device=device, decomposed=False, bos=start_choice,
                         random_init=random_init)
    return TextBackend(bundle.model, bundle.tokenizer, documents, device, start=bundle.start)
