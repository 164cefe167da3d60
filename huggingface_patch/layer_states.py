"""Per-layer residual-stream states and their projection to the vocabulary (for any supported family).

Hugging Face's ``hidden_states[-1]`` is already passed through the final norm; these helpers read the
raw output of every layer with hooks instead, so nothing is normalised twice.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from .architectures import model_parts, readout
from .compat import layer_output_tensor


@contextlib.contextmanager
def record_blocks(layers: list[nn.Module]):
    """Record, during the forward passes inside the block, the input of ``layers[0]`` and every layer's output:
    a list of ``(B, T, H)`` tensors (``L + 1`` after one pass, cleared at each pass's start). Hooks are removed
    in ``finally``."""
    states: list[torch.Tensor] = []

    def first_input(module, args, kwargs):
        states.clear()
        states.append(args[0] if args else kwargs["hidden_states"])

    def layer_output(module, args, kwargs, output):
        states.append(layer_output_tensor(output))

    handles = [layers[0].register_forward_pre_hook(first_input, with_kwargs=True)]
    try:
        for layer in layers:
            handles.append(layer.register_forward_hook(layer_output, with_kwargs=True))
        yield states
    finally:
        for handle in handles:
            handle.remove()


def record_residual_stream(model: nn.Module):
    """:func:`record_blocks` over the decoder layers of a causal LM of any supported family: index 0 the
    embeddings (input of layer 0), index ``l`` the output of layer ``l`` (before the final norm)."""
    return record_blocks([layer.layer for layer in model_parts(model).layers])


@torch.no_grad()
def residual_states(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
    """Run ``model`` once; return ``(states, output)`` with ``states`` ``(L+1, B, T, H)`` (pre-final-norm)."""
    with record_residual_stream(model) as states:
        output = model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    return torch.stack(list(states)), output


def final_norm_and_projection(model: nn.Module, states: torch.Tensor) -> torch.Tensor:
    """Apply the model's final norm (if any) and ``project_out`` (OPT-350m) to residual states ``(..., H)``."""
    parts = model_parts(model)
    if parts.final_norm is not None:
        states = parts.final_norm(states)
    if parts.project_out is not None:
        states = parts.project_out(states)
    return states


@torch.no_grad()
def project_to_vocab(model: nn.Module, states: torch.Tensor, apply_final_norm: bool = True,
                     softcap: bool = True) -> torch.Tensor:
    """Logits ``(..., V)`` of residual states ``(..., H)`` through the (optional) final norm and the model's
    read-out (LM head weight and bias; final-logit softcapping where the model has it, unless ``softcap``
    is False).

    Without the final norm (the Geva et al. convention), OPT-350m's ``project_out`` is still applied so that
    the dimensions match the head.
    """
    if apply_final_norm:
        states = final_norm_and_projection(model, states)
    else:
        project_out = model_parts(model).project_out
        if project_out is not None:
            states = project_out(states)
    head = readout(model)
    raw = head.raw(states.to(head.weight.dtype))
    return head.cap(raw) if softcap else raw
