"""A ViT image classifier on a folder of images (saturation backend)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from ...errors import InputError
from .base import Backend, Item, list_files

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


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
                raise InputError(f"cannot read image {path}: {exc}") from exc
            parent = os.path.basename(os.path.dirname(os.path.abspath(path))).lower()
            in_subfolder = os.path.abspath(os.path.dirname(path)) != os.path.abspath(self.folder)
            target = label2id.get(parent, -1) if in_subfolder else -1
            items.append(Item({"pixel_values": pixels}, [0], [target], i, os.path.relpath(path, self.folder), [0]))
        return items

    @torch.no_grad()
    def read_out(self, states):
        """Logits ``(..., V)`` of residual states ``(..., H)`` (final norm + output projection)."""
        return self.parts.classifier(self.parts.final_norm(states))

    def decode(self, token_id: int) -> str:
        """A readable name of an output id."""
        id2label = getattr(self.model.config, "id2label", None) or {}
        return str(id2label.get(int(token_id), token_id))
