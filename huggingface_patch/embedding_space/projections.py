"""Model parameters read in embedding space (Dar et al. 2023).

The embedding matrix ``E`` and, per layer, the feed-forward keys/values and the per-head ``W_V,h``,
``W_O,h``, ``W_Q,h``, ``W_K,h``.

Shapes: ``H`` hidden size, ``V`` vocabulary, ``F`` MLP inner size, ``d`` head size. All weights are
returned in the ``x @ W`` convention (``W`` is ``(in, out)``), as :class:`~huggingface_patch.architectures.Affine`.

``E`` is ``(H, V)``: a residual vector ``x`` is read as the scores ``x @ E``. By default (the paper) it is
the LM head, ``get_output_embeddings().weight.T``; OPT-350m's ``project_out`` is folded in so that ``E``
lives in the residual space. ``which='input'`` gives ``get_input_embeddings()`` instead (OPT's
``project_in`` folded in), so untied models can read the *input* side of a map with the input embedding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..architectures import Affine, get_adapter, model_parts, readout
from ..errors import HuggingfacePatchError

EMBEDDINGS = ("output", "input")


class ParameterIndexError(HuggingfacePatchError):
    """A layer, head or neuron index outside the model; the message gives the valid range."""


class LatentAttentionError(HuggingfacePatchError):
    """A layer whose attention computes its values from a normed low-rank latent (DeepSeek V3) has no fixed
    ``W_VO`` or ``W_QK`` to read."""


def has_head_weights(model: nn.Module, layer: int) -> bool:
    """Whether ``layer``'s heads have fixed ``W_Q``, ``W_K``, ``W_V``, ``W_O`` (not latent attention)."""
    return get_adapter(model).spec(model).layers[layer].attention.value_latent is None


def _check_index(kind: str, value: int, size: int) -> int:
    if not 0 <= value < size:
        raise ParameterIndexError(f"{kind} {value} is out of range: the model has {size} ({kind}s 0..{size - 1})")
    return value


@torch.no_grad()
def embedding_matrix(model: nn.Module, which: str = "output", normalize: bool = False) -> torch.Tensor:
    """``E`` as ``(H, V)`` in the residual space of ``model`` (a detached copy, float32 or the model dtype).

    ``which='output'``: the LM head (``get_output_embeddings``), with ``project_out`` folded in (OPT-350m).
    ``which='input'``: the input embedding (``get_input_embeddings``), with ``project_in`` folded in.
    ``normalize``: scale every column to unit norm (an option, not the paper's default: it keeps tokens with
    unusually large embeddings from dominating every projection).
    """
    matrix = _embedding_matrix(model, which)
    if normalize:
        matrix = matrix / matrix.norm(dim=0, keepdim=True).clamp_min(1e-12)
    return matrix


def _embedding_matrix(model: nn.Module, which: str) -> torch.Tensor:
    if which not in EMBEDDINGS:
        raise ValueError(f"unknown embedding {which!r}: choose from {', '.join(EMBEDDINGS)}")
    parts = model_parts(model)
    if which == "output":
        if model.get_output_embeddings() is None:
            raise ValueError("the model has no output embeddings (LM head)")
        # the family's read-out: a logit scale (Cohere, Granite) is folded into its weight
        matrix = readout(model).weight.detach().t()  # (D, V)
        if parts.project_out is not None:  # logits = (h @ P^T) @ W_U^T
            matrix = parts.project_out.weight.detach().t() @ matrix
        return matrix.contiguous()
    matrix = model.get_input_embeddings().weight.detach()  # (V, D)
    project_in = parts.project_in
    if project_in is not None:  # x = emb @ P_in^T
        matrix = matrix @ project_in.weight.detach().t()
    return matrix.t().contiguous()


def query_key_affines(model: nn.Module, layer: int) -> tuple[Affine, Affine]:
    """The query (``H -> h*d``) and key (``H -> g*d``) maps of one layer, as the family's adapter splits them
    (fused projections included)."""
    return get_adapter(model).query_key(model, layer)


# --------------------------------------------------------------------------- per-head weights


@dataclass
class HeadWeights:
    """The four per-head maps of one attention head (``x @ W`` convention, biases sliced per head).

    ``query``/``key``/``value``: ``H -> d`` (``key``/``value`` from kv head ``kv_head`` under GQA);
    ``output``: ``d -> H`` (no bias: the output bias belongs to the whole module).
    """

    layer: int
    head: int
    kv_head: int
    query: Affine
    key: Affine
    value: Affine
    output: Affine

    @property
    def vo(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``W_VO = W_V,h @ W_O,h`` as its factors ``((H, d), (d, H))``."""
        return self.value.weight, self.output.weight

    @property
    def qk(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``W_QK = W_Q,h @ W_K,hᵀ`` as its factors ``((H, d), (d, H))``."""
        return self.query.weight, self.key.weight.t()


def _slice(affine: Affine, start: int, stop: int) -> Affine:
    bias = None if affine.bias is None else affine.bias[start:stop]
    return Affine(affine.weight[:, start:stop], bias)


def num_layers(model: nn.Module) -> int:
    """Number of decoder layers."""
    return len(model_parts(model).layers)


def head_weights(model: nn.Module, layer: int, head: int) -> HeadWeights:
    """Per-head ``W_Q,h``, ``W_K,h``, ``W_V,h`` ``(H, d)`` and ``W_O,h`` ``(d, H)`` of ``layer``/``head``.

    Query head ``head`` reads kv head ``head // (num_heads // num_kv_heads)`` (Hugging Face's ``repeat_kv``).
    Raises :class:`ParameterIndexError` for a layer or head out of range.
    """
    spec = get_adapter(model).spec(model)
    _check_index("layer", layer, len(spec.layers))
    attention = spec.layers[layer].attention
    if attention.value_latent is not None:
        raise LatentAttentionError(
            f"layer {layer} uses latent attention: its values pass through a norm of a low-rank latent and its keys "
            "share a rotary part, so W_VO and W_QK are not fixed matrices; read FF neurons (or experts) instead")
    _check_index("head", head, attention.num_heads)
    d = attention.head_dim
    kv_head = head // (attention.num_heads // attention.num_kv_heads)
    query, key = query_key_affines(model, layer)
    q, kv = slice(head * d, (head + 1) * d), slice(kv_head * d, (kv_head + 1) * d)
    return HeadWeights(
        layer=layer,
        head=head,
        kv_head=kv_head,
        query=_slice(query, q.start, q.stop),
        key=_slice(key, kv.start, kv.stop),
        value=_slice(attention.value, kv.start, kv.stop),
        output=Affine(attention.output.weight[q.start : q.stop, :]),
    )


def num_heads(model: nn.Module, layer: int = 0) -> int:
    """Number of query heads of ``layer``."""
    return get_adapter(model).spec(model).layers[layer].attention.num_heads


# --------------------------------------------------------------------------- feed-forward keys and values


def ff_parts(model: nn.Module) -> tuple[str, ...]:
    """The parts a neuron of this model has: ``('key', 'value')`` or ``('gate', 'up', 'value')``."""
    mlp = _mlp_spec(model, 0, check_experts=False)
    return ("gate", "up", "value") if getattr(mlp, "kind", "gated") == "gated" else ("key", "value")


def ff_size(model: nn.Module, layer: int = 0, expert: int | None = None) -> int:
    """``F``, the number of neurons of ``layer``'s MLP (of one ``expert`` of a mixture-of-experts layer)."""
    return _mlp_spec(model, layer, expert).width


def is_experts_layer(model: nn.Module, layer: int) -> bool:
    """Whether ``layer``'s feed-forward block is a mixture of experts (its neurons belong to experts)."""
    from ..architectures.spec import MoESpec

    return isinstance(_mlp_spec(model, layer, check_experts=False), MoESpec)


def _mlp_spec(model: nn.Module, layer: int, expert: int | None = None, check_experts: bool = True):
    from ..architectures.spec import MoESpec

    spec = get_adapter(model).spec(model)
    _check_index("layer", layer, len(spec.layers))
    mlp = spec.layers[layer].mlp
    if not check_experts:
        return mlp
    if isinstance(mlp, MoESpec):
        if expert is None:
            raise ParameterIndexError(f"layer {layer} is a mixture of {mlp.num_experts} experts: choose one "
                                      f"(--expert 0..{mlp.num_experts - 1})")
        _check_index("expert", expert, mlp.num_experts)
        return mlp.expert(expert)
    if expert is not None:
        raise ParameterIndexError(f"layer {layer} has a dense MLP, not experts: leave out --expert")
    return mlp


@torch.no_grad()
def ff_vectors(model: nn.Module, layer: int, neuron: int, expert: int | None = None) -> dict[str, torch.Tensor]:
    """The ``(H,)`` vectors of one neuron.

    ``{'key', 'value'}`` (OPT, GPT-2: row of the input map, row of the output map in the
    ``x @ W`` convention) or ``{'gate', 'up', 'value'}`` (Llama family: rows of
    ``gate_proj``/``up_proj``, column of ``down_proj``).
    """
    mlp = _mlp_spec(model, layer, expert)
    _check_index("neuron", neuron, mlp.width)
    if mlp.kind == "gated":
        return {"gate": mlp.gate.weight[:, neuron].detach().clone(), "up": mlp.up.weight[:, neuron].detach().clone(),
                "value": mlp.down.weight[neuron, :].detach().clone()}
    return {"key": mlp.inp.weight[:, neuron].detach().clone(), "value": mlp.out.weight[neuron, :].detach().clone()}


@torch.no_grad()
def ff_matrices(model: nn.Module, layer: int, expert: int | None = None) -> dict[str, torch.Tensor]:
    """All neurons at once: ``{'key'|'gate'|'up': (F, H), 'value': (F, H)}`` (rows are neurons)."""
    mlp = _mlp_spec(model, layer, expert)
    if mlp.kind == "gated":
        return {"gate": mlp.gate.weight.detach().t(), "up": mlp.up.weight.detach().t(),
                "value": mlp.down.weight.detach()}
    return {"key": mlp.inp.weight.detach().t(), "value": mlp.out.weight.detach()}
