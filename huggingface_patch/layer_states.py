"""Per-layer residual-stream states and their projection to the vocabulary (for any supported family).

Hugging Face's ``hidden_states[-1]`` is already passed through the final norm; these helpers read the
raw output of every layer with hooks instead, so nothing is normalised twice.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

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
def _head_input(model: nn.Module, states: torch.Tensor, apply_final_norm: bool) -> torch.Tensor:
    """What the LM head reads of ``states``: after the final norm (and ``project_out``), or, without the norm
    (the Geva et al. convention), after OPT-350m's ``project_out`` alone so that the dimensions match."""
    if apply_final_norm:
        return final_norm_and_projection(model, states)
    project_out = model_parts(model).project_out
    return states if project_out is None else project_out(states)


def project_to_vocab(model: nn.Module, states: torch.Tensor, apply_final_norm: bool = True,
                     softcap: bool = True) -> torch.Tensor:
    """Logits ``(..., V)`` of residual states ``(..., H)`` through the (optional) final norm and the model's
    read-out (LM head weight and bias; final-logit softcapping where the model has it, unless ``softcap``
    is False).

    Without the final norm (the Geva et al. convention), OPT-350m's ``project_out`` is still applied so that
    the dimensions match the head.
    """
    states = _head_input(model, states, apply_final_norm)
    head = readout(model)
    raw = head.raw(states.to(head.weight.dtype))
    return head.cap(raw) if softcap else raw


#: vocabulary rows read at a time by :func:`rank_and_top` (a (rows x block) piece of logits at most)
VOCAB_BLOCK = 32768


@dataclass
class VocabReading:
    """What a read-out through the vocabulary gave, per state: ``rank`` of the target (the number of tokens
    with a strictly larger logit; 0 = the argmax), its logit ``score``, the ``top`` ids (largest first) and
    ``logsumexp`` of all logits (``score - logsumexp`` is the target's log-probability)."""

    rank: torch.Tensor
    score: torch.Tensor
    top: torch.Tensor
    logsumexp: torch.Tensor

    def __iter__(self):  # (rank, score, top), as the full-logit computation returned them
        return iter((self.rank, self.score, self.top))

    def __getitem__(self, index):
        return (self.rank, self.score, self.top)[index]

    @property
    def probability(self) -> torch.Tensor:
        return torch.exp(self.score - self.logsumexp)


@torch.no_grad()
def rank_and_top(model: nn.Module, states: torch.Tensor, targets, top: int = 10, apply_final_norm: bool = False,
                 vocab_block: int = VOCAB_BLOCK, logsumexp: bool = True) -> VocabReading:
    """What :func:`project_to_vocab` followed by a rank, a top-``top`` and a softmax gives, computed a block of
    the vocabulary at a time, so that ``(..., V)`` logits are never held (Gemma 3: V = 262,144) and the
    head's weight is read once for all rows.

    ``states`` ``(..., H)``, ``targets`` broadcastable to ``states.shape[:-1]``. Logits are float32 with
    softcapping applied as the model does. The target's score is its own dot product, so a token within
    round-off of it may rank either way (as in any two computations of the same logits).

    ``top = 0`` leaves out the top ids (``top`` is None) and ``logsumexp=False`` the log-normaliser (None):
    a caller that needs only the rank skips both passes over each block."""
    states = _head_input(model, states, apply_final_norm)
    head = readout(model)
    shape = states.shape[:-1]
    flat = states.reshape(-1, states.shape[-1]).to(head.weight.dtype)
    targets = torch.as_tensor(targets, device=flat.device).expand(shape).reshape(-1)
    weight, bias = head.weight, head.bias
    picked = (flat * weight[targets]).sum(-1, keepdim=True)
    if bias is not None:
        picked = picked + bias[targets][:, None]
    score = head.cap(picked).float()[:, 0]
    rank = torch.zeros(flat.shape[0], dtype=torch.long, device=flat.device)
    lse = torch.full((flat.shape[0],), float("-inf"), device=flat.device)
    best_values = best_ids = None
    for lo in range(0, weight.shape[0], vocab_block):
        hi = min(weight.shape[0], lo + vocab_block)
        raw = flat @ weight[lo:hi].t()
        if bias is not None:
            raw = raw + bias[lo:hi]
        block = head.cap(raw).float()
        above = block > score[:, None]
        inside = (targets >= lo) & (targets < hi)  # the target never outranks itself (its two roundings differ)
        above[inside, (targets[inside] - lo)] = False
        rank += above.sum(-1)
        if logsumexp:
            lse = torch.logaddexp(lse, torch.logsumexp(block, -1))
        if top <= 0:
            continue
        values, ids = block.topk(min(top, hi - lo), dim=-1)
        ids = ids + lo
        if best_values is not None:
            merged = torch.cat([best_values, values], -1)
            values, order = merged.topk(min(top, merged.shape[-1]), dim=-1)
            ids = torch.cat([best_ids, ids], -1).gather(-1, order)
        best_values, best_ids = values, ids
    return VocabReading(rank.reshape(shape), score.reshape(shape),
                        None if best_ids is None else best_ids.reshape(*shape, -1),
                        lse.reshape(shape) if logsumexp else None)
