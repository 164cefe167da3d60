"""Run the real Hugging Face forward pass once and keep what the decomposition freezes.

Forward hooks collect, per decoder layer, its real input and output hidden states and the attention
probabilities (returned by eager attention), or hand them to ``on_layer`` as soon as the layer has run (the
decomposing classes freeze each layer there, so that no more than one layer's full probabilities are ever
held). Hooks are removed in ``finally``; the attention implementation is switched to eager for the call and
restored afterwards.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch import nn

from ..architectures.spec import ModelSpec
from ..compat import eager_attention, layer_output_tensor
from .attention import mask_padding_attention
from .packed import PackedCausal


@dataclass
class Captured:
    """What one real forward pass showed.

    ``layer_inputs[l]`` / ``layer_outputs[l]``: ``(B, T, H)``; ``attention[l]``: ``(B, h, T, T)``;
    ``final_state``: ``(B, T, H')`` the state the LM head reads (None until known).
    """

    layer_inputs: list[torch.Tensor] = field(default_factory=list)
    layer_outputs: list[torch.Tensor] = field(default_factory=list)
    attention: list[torch.Tensor] = field(default_factory=list)
    final_state: torch.Tensor | None = None
    position_embeddings: torch.Tensor | None = None


class _LayerHooks:
    """The hooks of each layer: its input, its output (handed to ``on_layer`` at once when given) and its
    attention probabilities (packed as they arrive when ``pack_attention``)."""

    def __init__(self, record: Captured, on_layer, pack_attention: bool, valid: torch.Tensor | None,
                 dtype: torch.dtype | None):
        self.record, self.on_layer = record, on_layer
        self.pack_attention, self.valid, self.dtype = pack_attention, valid, dtype

    def layer_input(self, index: int):
        def hook(module, args, kwargs):
            self.record.layer_inputs[index] = args[0] if args else kwargs["hidden_states"]

        return hook

    def layer_output(self, index: int):
        record = self.record

        def hook(module, args, kwargs, output):
            record.layer_outputs[index] = layer_output_tensor(output)
            if self.on_layer is not None:
                probs = record.attention[index]
                x_in, record.layer_inputs[index], record.attention[index] = record.layer_inputs[index], None, None
                with torch.no_grad():
                    self.on_layer(index, x_in, record.layer_outputs[index], probs, record)

        return hook

    def attention(self, index: int):
        def hook(module, args, kwargs, output):
            probs = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if probs is None:
                raise RuntimeError("attention probabilities were not returned; the decomposition needs eager attention")
            if self.pack_attention:
                probs = probs.detach()
                if self.valid is not None:
                    probs = mask_padding_attention(probs, self.valid)
                probs = PackedCausal.pack(probs, dtype=self.dtype)
            self.record.attention[index] = probs

        return hook


@contextlib.contextmanager
def capture(model: nn.Module, spec: ModelSpec, pack_attention: bool = False, valid: torch.Tensor | None = None,
            dtype: torch.dtype | None = None, on_layer=None):
    """Context manager yielding a :class:`Captured` filled by the forward passes run inside it.

    With ``pack_attention`` each layer's probabilities are stored as their lower triangle
    (:class:`~.packed.PackedCausal`, in ``dtype``) as soon as the layer has run, with the rows and columns
    of padding positions (``valid`` ``(B, T)`` False) zeroed: the full ``(B, h, T, T)`` tensors are never
    all held at once. ``on_layer(index, input, output, probabilities, record)``, when given, receives each
    layer as soon as it has run (under ``torch.no_grad``); the record then keeps only the layer outputs.
    """
    record = Captured()
    n = len(spec.layers)
    record.layer_inputs = [None] * n
    record.layer_outputs = [None] * n
    record.attention = [None] * n
    hooks = _LayerHooks(record, on_layer, pack_attention, valid, dtype)
    handles = []

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None

    def on_head(module, args):
        record.final_state = args[0]

    def on_positions(module, args, output):
        record.position_embeddings = output

    try:
        for index, layer in enumerate(spec.layers):
            handles.append(layer.module.register_forward_pre_hook(hooks.layer_input(index), with_kwargs=True))
            handles.append(layer.module.register_forward_hook(hooks.layer_output(index), with_kwargs=True))
            handles.append(layer.attention.module.register_forward_hook(hooks.attention(index), with_kwargs=True))
        if head is not None:
            handles.append(head.register_forward_pre_hook(on_head))
        if spec.position_module is not None:
            handles.append(spec.position_module.register_forward_hook(on_positions))
        with eager_attention(model):
            yield record
    finally:
        for handle in handles:
            handle.remove()
