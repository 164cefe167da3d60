"""The contract of a saturation backend (one modality: text LMs, ViT, Whisper's decoder) and shared helpers.

A :class:`Backend` turns one input (a text piece, an image, an audio file) into an :class:`Item` and gives

* ``states(inputs)``: the raw residual stream ``(L+1, B, T, H)`` (index 0 the embeddings / input of block 0,
  index ``l`` the output of block ``l-1``, the last one before the final norm);
* ``read_out(states)``: the model's own final norm and output projection applied to states ``(..., H)``,
  giving logits ``(..., V)`` (the logit lens; at the last layer it equals the model's output);
* ``layer_modules()``: the blocks, for hooks that replace a block's output (see :mod:`.intervene`).

Text models reuse :func:`huggingface_patch.layer_states.residual_states` / ``project_to_vocab``
(:mod:`.text`); ViT (:mod:`.vit`) and Whisper (:mod:`.whisper`) each have one small lookup of their parts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from torch import nn

from ...errors import InputError


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

    @torch.no_grad()
    def states(self, inputs: dict) -> torch.Tensor:
        """Residual stream ``(L+1, B, T, H)`` of one forward pass: the input of the first block and the output of
        every block (:meth:`layer_modules`), recorded by hooks."""
        from ...layer_states import record_blocks

        inputs = self._to_device(inputs)
        with record_blocks(self.layer_modules()) as states:
            self.model(**inputs)
        return torch.stack(list(states))

    def read_out(self, states: torch.Tensor) -> torch.Tensor:
        """Logits ``(..., V)`` of residual states ``(..., H)`` (final norm + output projection)."""
        raise NotImplementedError

    def decode(self, token_id: int) -> str:
        """A readable name of an output id."""
        return str(token_id)

    def _to_device(self, inputs: dict) -> dict:
        return {key: value.to(self.device) for key, value in inputs.items()}


def list_files(folder: str, extensions: tuple[str, ...], what: str) -> list[str]:
    """Files under ``folder`` (recursively, sorted) with one of ``extensions``; one-line errors otherwise."""
    if not os.path.isdir(folder):
        raise InputError(f"{what} folder not found: {folder}")
    found = []
    for root, _dirs, names in os.walk(folder):
        for name in names:
            if name.lower().endswith(extensions):
                found.append(os.path.join(root, name))
    if not found:
        raise InputError(f"no {what} files ({', '.join(extensions)}) in {folder}")
    return sorted(found)
