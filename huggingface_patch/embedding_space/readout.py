"""Parameters read as tokens (Dar et al. 2023).

A neuron's key/value top tokens, a head's top token pairs of ``Eᵀ W_VO E`` and ``Eᵀ W_QK E``
(Dar et al. 2023, §"Projecting parameters").

Conventions (``x @ W``): ``(Eᵀ W_VO E)[i, j] = e_i W_V,h W_O,h e_jᵀ`` reads "token ``i`` attended to writes
token ``j``"; ``(Eᵀ W_QK E)[i, j] = e_i W_Q,h W_K,hᵀ e_jᵀ`` reads "query token ``i`` attends to key token
``j``". The read side (rows of VO, both sides of QK, FF keys) uses ``embedding``; the written side (columns
of VO, FF values) always uses the LM head. Biases, norms, RoPE and the ``1/√d`` score scale are left out,
as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InputError
from .filters import TokenFilter, Vocabulary, pair_groups, top_tokens
from .projections import embedding_matrix, ff_vectors, head_weights
from .topk import TopEntries, approx_topk

HEAD_MAPS = ("vo", "qk")


@torch.no_grad()
def head_map_factors(model: nn.Module, layer: int, head: int, kind: str = "vo", embedding: str = "output",
                     dtype: torch.dtype = torch.float32, normalize: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(left (V, d), right (d, V))`` with ``left @ right = Eᵀ W_VO E`` (``kind='vo'``) or ``Eᵀ W_QK E``."""
    if kind not in HEAD_MAPS:
        raise ValueError(f"unknown head map {kind!r}: choose from {', '.join(HEAD_MAPS)}")
    weights = head_weights(model, layer, head)
    read = embedding_matrix(model, embedding, normalize).to(dtype)
    write = embedding_matrix(model, "output", normalize).to(dtype) if kind == "vo" else read
    first, second = weights.vo if kind == "vo" else weights.qk
    return read.t() @ first.detach().to(dtype), second.detach().to(dtype) @ write


@dataclass
class PairResult:
    """Top pairs of a head map, with token ids mapped back to the full vocabulary."""

    kind: str
    layer: int
    head: int
    entries: TopEntries
    allowed_tokens: int

    def rows(self, vocab: Vocabulary, limit: int | None = None) -> list[dict]:
        """Table rows (rank, readable tokens, value, ids), best first."""
        n = len(self.entries) if limit is None else min(limit, len(self.entries))
        first, second = ("source", "target") if self.kind == "vo" else ("query", "key")
        out = []
        for rank in range(n):
            i, j = int(self.entries.rows[rank]), int(self.entries.cols[rank])
            out.append({"rank": rank + 1, f"{first}_token": vocab.display(i), f"{second}_token": vocab.display(j),
                        "value": round(float(self.entries.values[rank]), 6), f"{first}_id": i, f"{second}_id": j})
        return out


@torch.no_grad()
def top_head_pairs(model: nn.Module, vocab: Vocabulary, layer: int, head: int, kind: str = "vo", *,
                   token_filter: TokenFilter | None = None, pair_exclusion: str = "near", embedding: str = "output",
                   min_k: int = 500, max_k: int = 250_000, th0: float = 10.0, max_iters: int = 10,
                   max_block_bytes: int = 64 * 2**20, progress: bool = False, normalize: bool = False) -> PairResult:
    """The token pairs with the largest entries of ``Eᵀ W_VO E`` / ``Eᵀ W_QK E`` for one head.

    Only tokens kept by ``token_filter`` take part (on both sides) and pairs excluded by ``pair_exclusion``
    are skipped *before* the threshold search, so the search counts eligible pairs only. The matrix is walked
    in blocks (:func:`~huggingface_patch.embedding_space.topk.approx_topk`); it is never materialised.
    """
    left, right = head_map_factors(model, layer, head, kind, embedding, normalize=normalize)
    token_filter = token_filter or TokenFilter()
    allowed = token_filter.allowed(vocab)
    if allowed.numel() != left.shape[0]:
        raise ValueError(f"vocabulary of {allowed.numel()} pieces does not match the embedding's {left.shape[0]} rows")
    ids = allowed.nonzero().squeeze(1)
    if ids.numel() == 0:
        raise InputError("the token filters leave no token")
    groups = pair_groups(vocab, pair_exclusion)
    groups = None if groups is None else groups[ids]
    device_ids = ids.to(left.device)
    entries = approx_topk(left[device_ids], right[:, device_ids], min_k=min_k, max_k=max_k, th0=th0,
                          max_iters=max_iters, row_groups=groups, col_groups=groups, max_block_bytes=max_block_bytes,
                          progress=progress, desc=f"{kind} L{layer} H{head}")
    entries.rows, entries.cols = ids[entries.rows.cpu()], ids[entries.cols.cpu()]
    entries.values = entries.values.cpu()
    return PairResult(kind, layer, head, entries, int(ids.numel()))


@torch.no_grad()
def neuron_top_tokens(model: nn.Module, layer: int, neuron: int, k: int = 100, *, allowed: torch.Tensor | None = None,
                      embedding: str = "output", normalize: bool = False, largest: bool = True,
                      expert: int | None = None) -> dict[str, tuple[torch.Tensor, ...]]:
    """Per part of the neuron (``key`` or ``gate``/``up``, and ``value``): top tokens of ``part · E``.

    ``(ids, scores)`` of the ``k`` top tokens of ``part · E`` (keys read with ``embedding``, values with the
    LM head); ``largest=False``: the most negative ones (for gated MLPs ``up · x`` can
    be negative, which flips the value's sign).
    """
    vectors = ff_vectors(model, layer, neuron, expert)
    read = embedding_matrix(model, embedding, normalize).float()
    write = embedding_matrix(model, "output", normalize).float()
    out = {}
    for part, vector in vectors.items():
        matrix = write if part == "value" else read
        out[part] = top_tokens(vector.float() @ matrix, k, allowed, largest=largest)
    return out
