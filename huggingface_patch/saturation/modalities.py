"""Where the residual stream and the read-out live for each modality (text LMs, ViT, Whisper's decoder).

A :class:`Backend` turns one input (a text piece, an image, an audio file) into an :class:`Item` and gives

* ``states(inputs)``: the raw residual stream ``(L+1, B, T, H)`` (index 0 the embeddings / input of block 0,
  index ``l`` the output of block ``l-1``, the last one before the final norm);
* ``read_out(states)``: the model's own final norm and output projection applied to states ``(..., H)``,
  giving logits ``(..., V)`` (the logit lens; at the last layer it equals the model's output);
* ``layer_modules()``: the blocks, for hooks that replace a block's output (see :mod:`.intervene`).

Text models reuse :func:`huggingface_patch.layer_states.residual_states` / ``project_to_vocab``; ViT and
Whisper each have one small lookup function (:func:`vit_parts`, :func:`whisper_parts`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import wave
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..cli import UsageError
from ..compat import layer_output_tensor

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
AUDIO_EXTENSIONS = (".wav",)
WHISPER_SAMPLING_RATE = 16000


@dataclass
class Item:
    """One model input and the positions analysed in it.

    ``inputs``: tensors with batch 1; ``positions``: indices along T; ``targets``: the gold output per
    position (-1 when unknown); ``document``: the input's index; ``label``: its name in outputs (file name or
    document number); ``token_index``: each position's index in the document (-1 when not text).
    """

    inputs: dict
    positions: list[int]
    targets: list[int]
    document: int
    label: str
    token_index: list[int] = field(default_factory=list)


class Backend:
    """Base class: one modality's input preparation, residual stream and read-out."""

    kind: str = ""
    #: paper defaults for the intervention (text: 10 / 10 / 30; ViT and Whisper: 5 / 5)
    pair_defaults = dict(min_gap=10, min_saturation=10, max_distance=30)
    #: whether intervention pairs come from the same item (text, audio) or from different items (images)
    pairs_within_item: bool = True

    def __init__(self, model: nn.Module, device: str | None = None):
        self.model = model.eval()
        self.device = device or next(model.parameters()).device

    @property
    def num_layers(self) -> int:
        """Number of blocks ``L``."""
        return len(self.layer_modules())

    def layer_modules(self) -> list[nn.Module]:
        """The blocks whose outputs form the residual stream."""
        raise NotImplementedError

    def items(self) -> list[Item]:
        """The inputs to analyse."""
        raise NotImplementedError

    def states(self, inputs: dict) -> torch.Tensor:
        """Residual stream ``(L+1, B, T, H)`` of one forward pass."""
        raise NotImplementedError

    def read_out(self, states: torch.Tensor) -> torch.Tensor:
        """Logits ``(..., V)`` of residual states ``(..., H)`` (final norm + output projection)."""
        raise NotImplementedError

    def decode(self, token_id: int) -> str:
        """A readable name of an output id."""
        return str(token_id)

    def _to_device(self, inputs: dict) -> dict:
        return {key: value.to(self.device) for key, value in inputs.items()}


@contextlib.contextmanager
def record_blocks(layers: list[nn.Module]):
    """Record the input of ``layers[0]`` and every layer's output during the forward passes in the block.

    Yields a list of ``(B, T, H)`` tensors (``L+1`` after one pass). Hooks are removed in ``finally``.
    """
    states: list[torch.Tensor] = []

    def first_input(module, args, kwargs):
        states.clear()
        states.append(args[0] if args else kwargs["hidden_states"])

    def output(module, args, kwargs, out):
        states.append(layer_output_tensor(out))

    handles = [layers[0].register_forward_pre_hook(first_input, with_kwargs=True)]
    try:
        for layer in layers:
            handles.append(layer.register_forward_hook(output, with_kwargs=True))
        yield states
    finally:
        for handle in handles:
            handle.remove()


# ----------------------------------------------------------------------------------------------- text


class TextBackend(Backend):
    """Causal LMs of the supported families (OPT, GPT-2, Llama/Mistral/Qwen2) on a text corpus.

    Documents are cut into model-sized pieces (:func:`huggingface_patch.corpus.split_article`, BOS first);
    every position except the BOS is analysed once (positions repeated in overlapping pieces are skipped).
    The target of a position is the next token of the document (-1 at a document's last token).
    """

    kind = "text"

    def __init__(self, model, tokenizer, documents: list[str], device=None, max_context: int | None = None):
        super().__init__(model, device)
        from ..architectures import model_parts

        self.parts = model_parts(model)  # raises UnsupportedArchitectureError for other families
        self.tokenizer = tokenizer
        self.documents = documents
        self.max_context = max_context

    def layer_modules(self):
        """The blocks whose outputs form the residual stream."""
        return [layer.layer for layer in self.parts.layers]

    def items(self) -> list[Item]:
        """The inputs to analyse."""
        from ..corpus import bos_token_id, context_size, split_article, tokenize_articles

        bos = bos_token_id(self.model.config, self.tokenizer)
        context = context_size(self.model.config)
        if self.max_context:
            context = min(context, self.max_context)
        items = []
        for doc, ids in enumerate(tokenize_articles(self.tokenizer, self.documents)):
            if not ids:
                continue
            seen: set[int] = set()
            for piece in split_article(ids, bos, context, doc):
                positions, targets, index = [], [], []
                for p in range(1, len(piece.ids)):
                    token_index = piece.start + p - 1
                    if token_index in seen:
                        continue
                    seen.add(token_index)
                    positions.append(p)
                    index.append(token_index)
                    targets.append(ids[token_index + 1] if token_index + 1 < len(ids) else -1)
                if positions:
                    inputs = {"input_ids": torch.tensor([piece.ids])}
                    items.append(Item(inputs, positions, targets, doc, f"doc{doc}", index))
        return items

    @torch.no_grad()
    def states(self, inputs):
        """Residual stream ``(L+1, B, T, H)`` of one forward pass."""
        from ..layer_states import residual_states

        inputs = self._to_device(inputs)
        states, _ = residual_states(self.model, inputs["input_ids"], torch.ones_like(inputs["input_ids"]))
        return states

    @torch.no_grad()
    def read_out(self, states):
        """Logits ``(..., V)`` of residual states ``(..., H)`` (final norm + output projection)."""
        from ..layer_states import project_to_vocab

        return project_to_vocab(self.model, states)

    def decode(self, token_id: int) -> str:
        """A readable name of an output id."""
        return self.tokenizer.decode([int(token_id)])


# ------------------------------------------------------------------------------------------------ ViT


@dataclass
class VisionParts:
    """Where a ViT classifier's blocks, final norm and classifier live."""

    layers: list[nn.Module]
    final_norm: nn.Module
    classifier: nn.Module


def vit_parts(model: nn.Module) -> VisionParts:
    """Encoder layers, final ``layernorm`` and ``classifier`` of a ``ViTForImageClassification``.

    (Transformers 5 keeps the layers in ``vit.layers``, 4.x in ``vit.encoder.layer``).
    """
    vit = model.vit
    layers = getattr(vit, "layers", None)
    if layers is None:
        layers = vit.encoder.layer
    return VisionParts(list(layers), vit.layernorm, model.classifier)


def list_files(folder: str, extensions: tuple[str, ...], what: str) -> list[str]:
    """Files under ``folder`` (recursively, sorted) with one of ``extensions``; one-line errors otherwise."""
    if not os.path.isdir(folder):
        raise UsageError(f"{what} folder not found: {folder}")
    found = []
    for root, _dirs, names in os.walk(folder):
        for name in names:
            if name.lower().endswith(extensions):
                found.append(os.path.join(root, name))
    if not found:
        raise UsageError(f"no {what} files ({', '.join(extensions)}) in {folder}")
    return sorted(found)


class ViTBackend(Backend):
    """A ``ViTForImageClassification`` on a folder of images.

    One analysed position per image (the CLS token, read through the final ``layernorm`` and the
    ``classifier``). An image in a subfolder whose name is one of the model's labels (``config.label2id``)
    gets that label as its target; others get -1.
    """

    kind = "vit"
    pair_defaults = dict(min_gap=5, min_saturation=5, max_distance=None)
    pairs_within_item = False

    def __init__(self, model, processor, folder: str, device=None):
        super().__init__(model, device)
        self.parts = vit_parts(model)
        self.processor = processor
        self.folder = folder
        self.files = list_files(folder, IMAGE_EXTENSIONS, "image")

    def layer_modules(self):
        """The blocks whose outputs form the residual stream."""
        return self.parts.layers

    def items(self):
        """The inputs to analyse."""
        from PIL import Image

        label2id = {str(k).lower(): int(v) for k, v in (getattr(self.model.config, "label2id", None) or {}).items()}
        items = []
        for i, path in enumerate(self.files):
            try:
                with Image.open(path) as image:
                    pixels = self.processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"]
            except OSError as exc:
                raise UsageError(f"cannot read image {path}: {exc}") from exc
            parent = os.path.basename(os.path.dirname(os.path.abspath(path))).lower()
            in_subfolder = os.path.abspath(os.path.dirname(path)) != os.path.abspath(self.folder)
            target = label2id.get(parent, -1) if in_subfolder else -1
            items.append(Item({"pixel_values": pixels}, [0], [target], i, os.path.relpath(path, self.folder), [0]))
        return items

    @torch.no_grad()
    def states(self, inputs):
        """Residual stream ``(L+1, B, T, H)`` of one forward pass."""
        inputs = self._to_device(inputs)
        with record_blocks(self.parts.layers) as states:
            self.model(**inputs)
        return torch.stack(list(states))

    @torch.no_grad()
    def read_out(self, states):
        """Logits ``(..., V)`` of residual states ``(..., H)`` (final norm + output projection)."""
        return self.parts.classifier(self.parts.final_norm(states))

    def decode(self, token_id: int) -> str:
        """A readable name of an output id."""
        id2label = getattr(self.model.config, "id2label", None) or {}
        return str(id2label.get(int(token_id), token_id))


# -------------------------------------------------------------------------------------------- Whisper


@dataclass
class DecoderParts:
    """Where Whisper's decoder blocks, final norm and output projection live."""

    layers: list[nn.Module]
    final_norm: nn.Module
    projection: nn.Module


def whisper_parts(model: nn.Module) -> DecoderParts:
    """Decoder layers, the decoder's final ``layer_norm`` and ``proj_out`` of a Whisper model."""
    decoder = model.model.decoder
    return DecoderParts(list(decoder.layers), decoder.layer_norm, model.get_output_embeddings())


def read_wav(path: str, sampling_rate: int = WHISPER_SAMPLING_RATE) -> np.ndarray:
    """A WAV file as mono float32 in [-1, 1] at ``sampling_rate`` (resampled with a polyphase filter)."""
    try:
        with wave.open(path, "rb") as handle:
            rate, width, channels = handle.getframerate(), handle.getsampwidth(), handle.getnchannels()
            frames = handle.readframes(handle.getnframes())
    except (wave.Error, EOFError) as exc:
        raise UsageError(f"cannot read audio {path}: {exc} (give 8-, 16- or 32-bit PCM WAV files)") from exc
    if width == 1:
        audio = (np.frombuffer(frames, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        audio = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 4:
        audio = np.frombuffer(frames, dtype="<i4").astype(np.float32) / 2147483648.0
    else:
        raise UsageError(f"cannot read audio {path}: {8 * width}-bit samples are not supported (use 16-bit PCM)")
    if channels > 1:
        audio = audio.reshape(-1, channels).mean(axis=1)
    if audio.size == 0:
        raise UsageError(f"audio file is empty: {path}")
    if rate != sampling_rate:
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(rate, sampling_rate)
        audio = resample_poly(audio, sampling_rate // g, rate // g).astype(np.float32)
    return audio


class WhisperBackend(Backend):
    """Whisper's decoder on a folder of WAV files, read through the decoder's own final norm and ``proj_out``.

    No tokenizer is needed: each file is transcribed greedily from ``config.decoder_start_token_id`` (at most
    ``max_new_tokens`` tokens, stopping at ``eos_token_id``); the decoder positions of that transcript are
    analysed, and a position's target is the next greedy token (the model's own transcript, -1 at the end).
    """

    kind = "whisper"
    pair_defaults = dict(min_gap=5, min_saturation=5, max_distance=30)

    def __init__(self, model, feature_extractor, folder: str, device=None, max_new_tokens: int = 20):
        super().__init__(model, device)
        self.parts = whisper_parts(model)
        self.feature_extractor = feature_extractor
        self.folder = folder
        self.files = list_files(folder, AUDIO_EXTENSIONS, "audio")
        self.max_new_tokens = max_new_tokens

    def layer_modules(self):
        """The blocks whose outputs form the residual stream."""
        return self.parts.layers

    @torch.no_grad()
    def transcribe(self, features: torch.Tensor) -> torch.Tensor:
        """Greedy decoder ids ``(1, T)`` starting with the decoder start token."""
        config = self.model.config
        start = config.decoder_start_token_id
        if start is None:
            raise UsageError("the Whisper config defines no decoder_start_token_id")
        ids = torch.tensor([[int(start)]], device=self.device)
        encoder_outputs = self.model.model.encoder(features.to(self.device))
        limit = min(self.max_new_tokens, config.max_target_positions - 1)
        for _ in range(limit):
            logits = self.model(encoder_outputs=encoder_outputs, decoder_input_ids=ids).logits[:, -1]
            next_id = logits.argmax(-1, keepdim=True)
            ids = torch.cat([ids, next_id], dim=1)
            if config.eos_token_id is not None and int(next_id) == int(config.eos_token_id):
                break
        return ids.cpu()

    def items(self):
        """The inputs to analyse."""
        items = []
        for i, path in enumerate(self.files):
            audio = read_wav(path, getattr(self.feature_extractor, "sampling_rate", WHISPER_SAMPLING_RATE))
            rate = getattr(self.feature_extractor, "sampling_rate", WHISPER_SAMPLING_RATE)
            features = self.feature_extractor(audio, sampling_rate=rate, return_tensors="pt")["input_features"]
            features = features.to(next(self.model.parameters()).dtype)
            ids = self.transcribe(features)
            seq = ids[0].tolist()
            positions = list(range(len(seq)))
            targets = [seq[p + 1] if p + 1 < len(seq) else -1 for p in positions]
            items.append(Item({"input_features": features, "decoder_input_ids": ids}, positions, targets, i,
                              os.path.relpath(path, self.folder), positions))
        return items

    @torch.no_grad()
    def states(self, inputs):
        """Residual stream ``(L+1, B, T, H)`` of one forward pass."""
        inputs = self._to_device(inputs)
        with record_blocks(self.parts.layers) as states:
            self.model(**inputs)
        return torch.stack(list(states))

    @torch.no_grad()
    def read_out(self, states):
        """Logits ``(..., V)`` of residual states ``(..., H)`` (final norm + output projection)."""
        return self.parts.projection(self.parts.final_norm(states))


# -------------------------------------------------------------------------------------------- loading


def _model_type(model: str) -> str | None:
    """``config.model_type`` of a local folder (None for anything else: hub ids, GGUF, smollm2-135m)."""
    path = os.path.expanduser(model)
    config = os.path.join(path, "config.json")
    if os.path.isdir(path) and os.path.isfile(config):
        import json

        with open(config, encoding="utf-8") as handle:
            return json.load(handle).get("model_type")
    return None


def load_backend(model: str, *, corpus: str | None = None, images: str | None = None, audio: str | None = None,
                 device: str | None = None, dtype: str = "float32", max_items: int | None = None,
                 max_new_tokens: int = 20) -> Backend:
    """Load MODEL and the input for the chosen modality (exactly one of ``corpus``, ``images``, ``audio``)."""
    from ..loading import ModelLoadError, load_model_and_tokenizer, parse_dtype, resolve_model

    model_type = _model_type(model)
    if images is not None:
        list_files(images, IMAGE_EXTENSIONS, "image")
        if model_type not in (None, "vit"):
            raise UsageError(f"--images needs a ViT image classifier; {model!r} is a {model_type!r} model")
        from transformers import ViTForImageClassification, ViTImageProcessor

        source = resolve_model(model)
        try:
            loaded = ViTForImageClassification.from_pretrained(source.path, dtype=parse_dtype(dtype))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"could not load ViT model {model!r}: {str(exc).strip().splitlines()[0]}") from exc
        try:
            processor = ViTImageProcessor.from_pretrained(source.path)
        except OSError:
            size = loaded.config.image_size
            processor = ViTImageProcessor(size={"height": size, "width": size})
        if device:
            loaded.to(device)
        backend = ViTBackend(loaded.eval(), processor, images, device)
        if max_items:
            backend.files = backend.files[:max_items]
        return backend
    if audio is not None:
        list_files(audio, AUDIO_EXTENSIONS, "audio")
        if model_type not in (None, "whisper"):
            raise UsageError(f"--audio needs a Whisper model; {model!r} is a {model_type!r} model")
        from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

        source = resolve_model(model)
        try:
            loaded = WhisperForConditionalGeneration.from_pretrained(source.path, dtype=parse_dtype(dtype))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"could not load Whisper model {model!r}: {str(exc).strip().splitlines()[0]}") from exc
        try:
            extractor = WhisperFeatureExtractor.from_pretrained(source.path)
        except OSError:
            extractor = WhisperFeatureExtractor(feature_size=loaded.config.num_mel_bins)
        if device:
            loaded.to(device)
        backend = WhisperBackend(loaded.eval(), extractor, audio, device, max_new_tokens=max_new_tokens)
        if max_items:
            backend.files = backend.files[:max_items]
        return backend
    if corpus is None:
        raise UsageError("give one input: --corpus FILE, --images DIR or --audio DIR")
    from ..corpus import CorpusError, read_corpus

    try:
        documents = read_corpus(corpus)
    except CorpusError as exc:
        raise UsageError(str(exc)) from exc
    if max_items:
        documents = documents[:max_items]
    if model_type in ("vit", "whisper"):
        raise UsageError(f"{model!r} is a {model_type!r} model: give --images DIR (ViT) or --audio DIR (Whisper)")
    from ..architectures import get_adapter

    if model_type is not None:
        from types import SimpleNamespace

        get_adapter(SimpleNamespace(model_type=model_type))  # an unsupported family: one-line error, before loading
    loaded, tokenizer, _ = load_model_and_tokenizer(model, dtype=dtype, device=device, decomposed=False)
    return TextBackend(loaded, tokenizer, documents, device)
