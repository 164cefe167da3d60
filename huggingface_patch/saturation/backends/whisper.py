"""Whisper's decoder on a folder of WAV files (saturation backend), with the WAV reading it needs."""

from __future__ import annotations

import os
import wave
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ...errors import InputError
from .base import Backend, Item, list_files

AUDIO_EXTENSIONS = (".wav",)
WHISPER_SAMPLING_RATE = 16000


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
        raise InputError(f"cannot read audio {path}: {exc} (give 8-, 16- or 32-bit PCM WAV files)") from exc
    if width == 1:
        audio = (np.frombuffer(frames, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        audio = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 4:
        audio = np.frombuffer(frames, dtype="<i4").astype(np.float32) / 2147483648.0
    else:
        raise InputError(f"cannot read audio {path}: {8 * width}-bit samples are not supported (use 16-bit PCM)")
    if channels > 1:
        audio = audio.reshape(-1, channels).mean(axis=1)
    if audio.size == 0:
        raise InputError(f"audio file is empty: {path}")
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
            raise InputError("the Whisper config defines no decoder_start_token_id")
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
    def read_out(self, states):
        """Logits ``(..., V)`` of residual states ``(..., H)`` (final norm + output projection)."""
        return self.parts.projection(self.parts.final_norm(states))
