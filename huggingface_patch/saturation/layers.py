"""Saturation layers of the top-k final tokens (Lioubashevski et al., "Looking Beyond the Top-1").

Definitions (``L`` blocks; the logit lens of layers ``1..L`` = outputs of blocks ``0..L-1``):

* ``t_i``: the rank-``i`` token of the final layer;
* ``m_i``: the number of consecutive top layers, the final layer included, whose rank-``i`` token is ``t_i``;
* ``s_i = L - m_i``: the 0-indexed block from whose output the rank-``i`` token stays fixed. ``s_i = L - 1``
  means "not saturated" (only the final layer has it); ``s_i = 0`` when every layer agrees (the released
  code returns ``L`` in that case; fixed here).

The paper keeps only positions whose top-1 saturates by ``floor(0.85 L)`` (:func:`paper_filter`).

Shapes: ``L`` layers, ``N`` positions, ``k`` ranks, ``H`` hidden size, ``V`` vocabulary.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import InputError
from .backends import Backend, Item

log = logging.getLogger(__name__)

#: the paper's filter: top-1 saturated by floor(FILTER_FRACTION * L)
FILTER_FRACTION = 0.85
#: the paper's number of ranks
DEFAULT_K = 5


def saturation_layers(layer_rankings, k: int | None = None) -> np.ndarray:
    """Saturation layer ``s_i`` of each final top-k token.

    ``layer_rankings``: ``(L, N, >=k)`` token ids, ``layer_rankings[l, n, i]`` the rank-``i`` (0-based) token of
    position ``n`` at lens layer ``l+1`` (the last entry is the final layer). Returns ``(N, k)`` ints in
    ``0..L-1``.
    """
    ranks = np.asarray(layer_rankings)
    if ranks.ndim != 3:
        raise ValueError(f"layer_rankings must be (L, N, k), got shape {ranks.shape}")
    if k is not None:
        ranks = ranks[:, :, :k]
    num_layers = ranks.shape[0]
    agree = ranks == ranks[-1][None]  # (L, N, k)
    # consecutive agreeing layers counted from the top (the final layer always agrees)
    m = np.cumprod(agree[::-1], axis=0).sum(axis=0)
    return (num_layers - m).astype(np.int64)


def paper_filter(saturation: np.ndarray, num_layers: int, fraction: float = FILTER_FRACTION) -> np.ndarray:
    """Boolean mask ``(N,)``: top-1 saturated by ``floor(fraction * L)`` (40 for GPT2-XL's 48 blocks)."""
    return np.asarray(saturation)[:, 0] <= math.floor(fraction * num_layers)


@dataclass
class SaturationData:
    """Everything the analyses need about ``N`` positions.

    ``saturation`` ``(N, k)``: ``s_i``; ``top`` ``(N, k)``: final top-k ids; ``lens_top`` ``(L, N, 2)`` and
    ``lens_prob`` ``(L, N, 2)``: the top-2 ids and softmax probabilities of the logit lens at layers ``1..L``;
    ``target`` ``(N,)``: gold next token / label (-1 unknown); ``item``, ``position``, ``document``,
    ``token_index`` ``(N,)``; ``residual`` ``(L+1, N, H)`` float32 (pre-final-norm residual, optional).
    """

    num_layers: int
    k: int
    saturation: np.ndarray
    top: np.ndarray
    lens_top: np.ndarray
    lens_prob: np.ndarray
    target: np.ndarray
    item: np.ndarray
    position: np.ndarray
    document: np.ndarray
    token_index: np.ndarray
    residual: np.ndarray | None = None
    items: list[Item] = field(default_factory=list, repr=False)
    filter_fraction: float = FILTER_FRACTION

    @property
    def size(self) -> int:
        """Number of positions ``N``."""
        return int(self.saturation.shape[0])

    @property
    def kept(self) -> np.ndarray:
        """The paper's filter (:func:`paper_filter`)."""
        return paper_filter(self.saturation, self.num_layers, self.filter_fraction)

    def reference(self) -> np.ndarray:
        """Gold target where known, else the model's final top-1 (used for accuracies)."""
        return np.where(self.target >= 0, self.target, self.top[:, 0])


#: logits held at once by :func:`lens_topk` (rows x vocabulary, fp32): about 256 MB
LENS_CHUNK_VALUES = 64 * 1024 * 1024


@torch.no_grad()
def lens_topk(backend: Backend, states: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logit-lens top-``k`` ids and softmax probabilities ``(L, n, k)`` of states ``(L+1, n, H)``.

    The rows of every layer go through the read-out together, in chunks of at most
    :data:`LENS_CHUNK_VALUES` logits, so a short text reads the head's weight once rather than once per
    layer, and the full ``(L, n, V)`` logits never sit in memory.
    """
    layers, n, hidden = states.shape[0] - 1, states.shape[1], states.shape[2]
    rows = states[1:].reshape(layers * n, hidden)
    vocab = None
    ids, probs = [], []
    first = 0
    while first < rows.shape[0]:
        size = 1 if vocab is None else max(1, LENS_CHUNK_VALUES // vocab)
        logits = backend.read_out(rows[first : first + size]).float()
        vocab = logits.shape[-1]
        values, index = torch.topk(torch.softmax(logits, dim=-1), k, dim=-1)
        ids.append(index)
        probs.append(values)
        first += size
    return torch.cat(ids).reshape(layers, n, k), torch.cat(probs).reshape(layers, n, k)


def collect(backend: Backend, k: int = DEFAULT_K, *, keep_residual: bool = True, progress: bool = True,
            filter_fraction: float = FILTER_FRACTION, items: list[Item] | None = None) -> SaturationData:
    """Run ``backend`` over its items and compute the saturation layers of the top-``k`` tokens everywhere."""
    if k <= 0:
        raise InputError(f"k must be positive, got {k}")
    from tqdm.auto import tqdm

    items = backend.items() if items is None else items
    if not items:
        raise InputError("no input positions to analyse (the input is empty)")
    width = max(k, 2)
    sats, tops, ltop, lprob, residuals = [], [], [], [], []
    meta = {"target": [], "item": [], "position": [], "document": [], "token_index": []}
    vocab = None
    for index, item in enumerate(tqdm(items, desc="saturation", disable=not progress)):
        states = backend.states(item.inputs)[:, 0, item.positions]  # (L+1, n, H)
        if vocab is None:
            vocab = backend.read_out(states[-1:, :1]).shape[-1]
            if k > vocab:
                raise InputError(f"k = {k} exceeds the number of output classes ({vocab})")
        ids, probs = lens_topk(backend, states, min(width, vocab))
        ids_np = ids.cpu().numpy()
        sats.append(saturation_layers(ids_np, k))
        tops.append(ids_np[-1, :, :k])
        ltop.append(ids_np[:, :, :2])
        lprob.append(probs[:, :, :2].cpu().numpy())
        if keep_residual:
            residuals.append(states.float().cpu().numpy())
        n = len(item.positions)
        meta["target"].extend(item.targets)
        meta["item"].extend([index] * n)
        meta["position"].extend(item.positions)
        meta["document"].extend([item.document] * n)
        meta["token_index"].extend(item.token_index or [-1] * n)
    return SaturationData(
        num_layers=backend.num_layers,
        k=k,
        saturation=np.concatenate(sats),
        top=np.concatenate(tops),
        lens_top=np.concatenate(ltop, axis=1),
        lens_prob=np.concatenate(lprob, axis=1),
        residual=np.concatenate(residuals, axis=1) if keep_residual else None,
        items=items,
        filter_fraction=filter_fraction,
        **{key: np.asarray(value, dtype=np.int64) for key, value in meta.items()},
    )


def summarize_layers(data: SaturationData) -> dict:
    """Per-rank summary: mean saturation layer, fraction saturated (``s_i < L-1``), over kept positions."""
    kept = data.kept
    L = data.num_layers
    sat = data.saturation[kept]
    ranks = []
    for i in range(data.k):
        col = sat[:, i]
        ranks.append({
            "rank": i + 1,
            "mean_saturation_layer": float(col.mean()) if col.size else float("nan"),
            "fraction_saturated": float((col < L - 1).mean()) if col.size else float("nan"),
        })
    return {
        "num_layers": L,
        "k": data.k,
        "positions": data.size,
        "kept_positions": int(kept.sum()),
        "filter": f"s_1 <= floor({data.filter_fraction} * L) = {math.floor(data.filter_fraction * L)}",
        "fraction_top1_saturated": float((data.saturation[:, 0] < L - 1).mean()),
        "ranks": ranks,
    }
