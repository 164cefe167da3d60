"""Logit lens: every layer's residual stream read through the final norm and the LM head.

``logits_l = W_U · LN_f(h_l)`` for the embeddings (``l = 0``) and the output of every layer ``l = 1..L``
(nostalgebraist 2020). The residual is recorded with hooks *before* the final norm
(:func:`huggingface_patch.layer_states.residual_states`), so nothing is normalised twice, and OPT-350m's
``project_out`` is applied; at ``l = L`` the lens therefore reproduces the model's own logits.

Optional sub-layer rows (``sublayers=``):

* ``'residual'``: the residual stream in the middle of each layer, after the attention sub-layer
  (``h_{l-1} + attn_l``, with ``attn_l`` what the attention adds to the stream: Gemma's normed output). For
  post-LN OPT (350m) the stream that flows on after the attention block is ``LN_attn(h_{l-1} + attn_l)``
  (the input of the MLP block and of its residual add), so that is the row. For parallel layers (GPT-J,
  NeoX) the MLP does not read this state; the row is still ``h_{l-1} + attn_l``. The residual after the
  MLP sub-layer *is* the layer output, the row ``L{l}``.
* ``'output'``: what each sub-layer adds to the stream, before the residual add (attention output with its
  output bias; the MLP's down projection output; after Gemma's post norms), each read through the same
  final norm and head (a "direct" reading of what the sub-layer writes).

Shapes: ``R`` rows, ``B`` batch, ``T`` positions, ``H`` hidden size, ``V`` vocabulary.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from ..architectures import model_parts
from ..compat import layer_output_tensor
from ..layer_states import project_to_vocab, residual_states

#: values accepted for ``sublayers``
SUBLAYER_MODES = ("residual", "output")
#: colour modes of the heat map: probability of the final top-1, its rank, KL(final || layer), probability of the
#: actual next token
COLOUR_MODES = ("prob", "rank", "kl", "next")


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions ``(B, T)`` counted from each sequence's first real token (0 on padding), as ``generate`` does.

    GPT-2 and Llama number positions ``0..T-1`` whatever the padding; passing these makes a left-padded
    sequence see the same positions as when it is alone.
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def forward_kwargs(attention_mask: torch.Tensor | None) -> dict:
    """Keyword arguments for a padding-independent forward pass (``position_ids`` from the mask, no cache)."""
    kwargs: dict = {"use_cache": False}
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
        kwargs["position_ids"] = position_ids_from_mask(attention_mask)
    return kwargs


def run_with_residual(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
    """``(states (L+1, B, T, H), logits (B, T, V))``: raw residual stream (pre-final-norm) and the model's logits."""
    kwargs = forward_kwargs(attention_mask)
    kwargs.pop("attention_mask", None)
    states, output = residual_states(model, input_ids, attention_mask, **kwargs)
    return states, output.logits


@contextlib.contextmanager
def _record_sublayers(model: nn.Module, mode: str):
    """Record per layer, during the block, ``{'attn': [...], 'mlp': [...], 'mid': [...]}`` of ``(B, T, H)``:
    what the attention and MLP branches add to the residual stream (the adapter's ``attention_update`` /
    ``mlp_update``) and, for post-norm layers, the stream between the sublayers."""
    parts = model_parts(model)
    post_norm = mode == "residual" and parts.layers[0].attention_post_norm is not None
    record: dict[str, list[torch.Tensor]] = {"attn": [], "mlp": [], "mid": []}
    handles = []

    def keep(key, scale=1.0):
        def hook(module, args, output):
            # a copy (Falcon adds to it in place), times what the layer multiplies the update by (Granite)
            record[key].append(layer_output_tensor(output).detach() * scale)

        return hook

    try:
        for layer in parts.layers:
            handles.append(layer.attention_update.register_forward_hook(keep("attn", layer.update_scale)))
            handles.append(layer.mlp_update.register_forward_hook(keep("mlp", layer.update_scale)))
            if post_norm:
                handles.append(layer.attention_post_norm.register_forward_hook(keep("mid")))
        yield record, post_norm
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class LensStates:
    """The states read by the lens: ``states`` ``(R, B, T, H)`` with a ``label``, ``layer`` and ``kind`` per row
    (kind ``'embed'``, ``'layer'``, ``'attn'`` (mid-layer residual), ``'attn_out'`` or ``'mlp_out'``), and the
    model's own ``logits`` ``(B, T, V)``."""

    labels: list[str]
    layers: list[int]
    kinds: list[str]
    states: torch.Tensor
    logits: torch.Tensor


@torch.no_grad()
def lens_states(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                sublayers: str | None = None) -> LensStates:
    """Run the model once and collect the rows of the lens (see the module docstring for ``sublayers``)."""
    if sublayers is not None and sublayers not in SUBLAYER_MODES:
        raise ValueError(f"unknown sublayers mode {sublayers!r}: use one of {', '.join(SUBLAYER_MODES)}")
    with contextlib.ExitStack() as stack:
        record, post_norm = stack.enter_context(_record_sublayers(model, sublayers)) if sublayers else ({}, False)
        states, logits = run_with_residual(model, input_ids, attention_mask)
    labels, layers, kinds, rows = ["emb"], [0], ["embed"], [states[0]]
    for index in range(1, states.shape[0]):
        if sublayers == "residual":
            mid = record["mid"][index - 1] if post_norm else states[index - 1] + record["attn"][index - 1]
            mid = mid.reshape(states[index].shape)
            labels.append(f"L{index}.attn"), layers.append(index), kinds.append("attn"), rows.append(mid)
        elif sublayers == "output":
            for key, kind in (("attn", "attn_out"), ("mlp", "mlp_out")):
                labels.append(f"L{index}.{kind}"), layers.append(index), kinds.append(kind)
                rows.append(record[key][index - 1].reshape(states[index].shape))  # OPT's fc2 sees (B*T, H)
        labels.append(f"L{index}"), layers.append(index), kinds.append("layer"), rows.append(states[index])
    return LensStates(labels, layers, kinds, torch.stack(rows), logits.float())


@dataclass
class LogitLensResult:
    """Per-row statistics of the lens, ``(R, B, T)`` unless noted.

    ``top_ids`` / ``top_probs``: the row's own top-1 token and its probability. ``target_ids`` ``(B, T)``: the
    model's final top-1; ``target_probs``, ``target_logits``, ``target_ranks`` (1 = top, ties counted in the
    token's favour): that token under the row's distribution (the usual logit-lens convention).
    ``next_probs`` / ``next_ranks``: the same for the *actual* next token of the input (NaN / 0 at a
    sequence's last token, which has none). ``kl``: KL(p_final || p_row) in nats. ``attention_mask``
    ``(B, T)``: 1 on real tokens (values on padding are meaningless).
    """

    labels: list[str]
    layers: list[int]
    kinds: list[str]
    top_ids: torch.Tensor
    top_probs: torch.Tensor
    target_ids: torch.Tensor
    target_probs: torch.Tensor
    target_logits: torch.Tensor
    target_ranks: torch.Tensor
    kl: torch.Tensor
    attention_mask: torch.Tensor
    next_probs: torch.Tensor | None = None
    next_ranks: torch.Tensor | None = None

    def values(self, colour: str) -> torch.Tensor:
        """The ``(R, B, T)`` values a heat map coloured by ``colour`` (one of :data:`COLOUR_MODES`) shows."""
        if colour == "prob":
            return self.target_probs
        if colour == "rank":
            return self.target_ranks.float()
        if colour == "kl":
            return self.kl
        if colour == "next":
            return self.next_probs
        raise ValueError(f"unknown colour mode {colour!r}: use one of {', '.join(COLOUR_MODES)}")


@torch.no_grad()
def logit_lens(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               sublayers: str | None = None) -> LogitLensResult:
    """The logit lens of a batch ``input_ids`` ``(B, T)`` (padded either side; ``attention_mask`` 1 on tokens)."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    read = lens_states(model, input_ids, attention_mask, sublayers)
    final_logp = torch.log_softmax(read.logits, dim=-1)
    final_p = final_logp.exp()
    target = final_logp.argmax(-1)
    mask = attention_mask.to(input_ids.device).bool()
    has_next = mask & torch.roll(mask, -1, dims=1)
    has_next[:, -1] = False
    next_ids = torch.where(has_next, torch.roll(input_ids, -1, dims=1), torch.zeros_like(input_ids))
    keys = ("top_ids", "top_probs", "probs", "logits", "ranks", "kl", "next_probs", "next_ranks")
    out: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
    for row in read.states:
        logits = project_to_vocab(model, row).float()
        logp = torch.log_softmax(logits, dim=-1)
        top_logp, top = logp.max(-1)
        target_logit = logits.gather(-1, target[..., None])
        next_logit = logits.gather(-1, next_ids[..., None])
        out["top_ids"].append(top)
        out["top_probs"].append(top_logp.exp())
        out["probs"].append(logp.gather(-1, target[..., None])[..., 0].exp())
        out["logits"].append(target_logit[..., 0])
        out["ranks"].append((logits > target_logit).sum(-1) + 1)
        out["kl"].append((final_p * (final_logp - logp)).sum(-1).clamp(min=0))
        nan = torch.full_like(top_logp, float("nan"))
        out["next_probs"].append(torch.where(has_next, logp.gather(-1, next_ids[..., None])[..., 0].exp(), nan))
        out["next_ranks"].append(torch.where(has_next, (logits > next_logit).sum(-1) + 1, torch.zeros_like(top)))
    stack = {k: torch.stack(v) for k, v in out.items()}
    return LogitLensResult(read.labels, read.layers, read.kinds, stack["top_ids"], stack["top_probs"], target,
                           stack["probs"], stack["logits"], stack["ranks"], stack["kl"], attention_mask,
                           stack["next_probs"], stack["next_ranks"])
