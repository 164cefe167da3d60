"""ΔLP as data: one row per (document, target, source), stitched over overlapping pieces, and a per-target summary.

Positions are article-token indices (a start token that begins a piece has index -1). A *target* row is about
predicting the article token at ``target_index``; the model reads the piece up to the token before it.
``distance`` is the paper's: ``t - s + 1`` in piece coordinates (1 = the token right before the predicted one).
Token columns hold the text a token stands for (``target_token``, ``source_token``: ``' keys'``) and the
tokenizer's raw piece (``*_raw``: ``'Ġkeys'``).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import torch

from ..architectures import Readout, readout
from ..deltalp import DeltaLP, compute_deltalp, deltalp_at
from ..tokens import raw_tokens, token_texts

#: log base of each unit
UNITS = {"bits": 2.0, "nats": math.e}

#: columns of the ΔLP CSV (token level; word level and contrasts add columns, see ``docs/attribution.md``)
COLUMNS = ("document", "piece", "target_index", "target_token", "target_token_raw", "context_length", "source_index",
           "source_token", "source_token_raw", "distance", "is_bos", "lp", "lp_without", "delta_lp")


def unit_base(units: str) -> float:
    """Log base of ``units`` (``bits`` or ``nats``)."""
    if units not in UNITS:
        raise ValueError(f"unknown units {units!r}: choose from {', '.join(UNITS)}")
    return UNITS[units]


@dataclass
class PieceAnalysis:
    """One decomposed model input.

    ``ids`` ``(T,)`` (a start token first when ``offset`` is 1); ``start`` = article index of the first text
    token ``ids[offset]``; ``final_state`` ``(T, H)`` is what the LM head reads; ``decomposition`` ``(W, T, H)``
    relative layout; ``bias`` ``(T, H)`` or None; ``readout`` the model's read-out (a
    :class:`~huggingface_patch.architectures.Readout`, or the bare LM head weight ``(V, H)``); ``tokens``
    the raw token pieces and ``texts`` what each stands for (defaults to ``tokens``); ``precision`` the
    decomposition's matmul precision (its ΔLP uses the same for the head product).
    """

    document: int | str
    piece: int
    start: int
    ids: torch.Tensor
    tokens: list[str]
    final_state: torch.Tensor
    decomposition: torch.Tensor
    readout: Readout
    bias: torch.Tensor | None = None
    extra: dict = field(default_factory=dict)
    texts: list[str] | None = None
    offset: int = 1
    precision: str = "fp32"

    def __post_init__(self):
        self.readout = Readout.of(self.readout)
        if self.texts is None:
            self.texts = list(self.tokens)

    @property
    def proj(self) -> torch.Tensor:
        """The LM head weight ``(V, H)`` (the paper's ``proj_weights``)."""
        return self.readout.weight

    def position(self, index: int) -> int:
        """Article index of piece token ``index`` (-1 for a start token)."""
        if self.offset and index == 0:
            return -1
        return self.start + index - self.offset

    def is_start(self, index: int) -> bool:
        """Whether piece position ``index`` is the start token."""
        return bool(self.offset) and index == 0

    def deltalp(self, base: float = 2.0) -> DeltaLP:
        """Token-level ΔLP of this piece (:func:`huggingface_patch.deltalp.compute_deltalp`)."""
        return compute_deltalp(self.final_state, self.decomposition, self.readout, self.ids, base=base,
                               precision=self.precision)

    def deltalp_at(self, distances, targets, base: float = 2.0) -> torch.Tensor:
        """``(n,)`` ΔLP of the pairs ``(k, t)`` only (:func:`huggingface_patch.deltalp.deltalp_at`)."""
        return deltalp_at(self.final_state, self.decomposition, self.readout, self.ids, distances, targets,
                          base=base, precision=self.precision)


@torch.no_grad()
def head_input(model, ids: torch.Tensor, window: int, conventions=None, precision: str = "fp32"):
    """Run the decomposing ``model`` on ``ids`` ``(T,)``; return ``(final_state (T, H), decomposition (W, T, H),
    bias (T, H))``, with ``final_state`` captured at the LM head's input (exactly what it reads).
    """
    captured = {}

    def hook(module, args):
        captured["x"] = args[0]

    head = model.get_output_embeddings()
    handle = head.register_forward_pre_hook(hook)
    kwargs = {"decomposition_window": window, "decomposition_precision": precision}
    if conventions is not None:
        kwargs["decomposition_conventions"] = conventions
    device = next(model.parameters()).device
    try:
        out = model(ids[None].to(device), **kwargs)
    finally:
        handle.remove()
    return captured["x"][0].cpu(), out.decomposition[0].cpu(), out.decomposition_bias[0].cpu()


def analyse_piece(model, tokenizer, ids: list[int] | torch.Tensor, window: int, *, document=0, piece: int = 0,
                  start: int = 0, offset: int = 1, conventions=None, precision: str = "fp32") -> PieceAnalysis:
    """Decompose one piece and package it with its tokens and the model's read-out."""
    ids = torch.as_tensor(ids, dtype=torch.long)
    final_state, decomposition, bias = head_input(model, ids, window, conventions, precision)
    return PieceAnalysis(document, piece, start, ids, raw_tokens(tokenizer, ids.tolist()), final_state,
                         decomposition, readout(model).to("cpu"), bias, texts=token_texts(tokenizer, ids.tolist()),
                         offset=offset, precision=precision)


def stitch_targets(pieces) -> dict[tuple, tuple[int, int]]:
    """For overlapping pieces (objects with ``document``, ``start``, ``ids`` and ``offset``), pick for every
    article token the piece where it is predicted with the most context: ``{(document, target_index):
    (piece_number, t)}`` with ``t`` the piece position whose output predicts it. Ties go to the earlier piece.
    """
    best: dict[tuple, tuple[int, int]] = {}
    for number, piece in enumerate(pieces):
        offset = getattr(piece, "offset", 1)
        for t in range(len(piece.ids) - 1):
            key = (piece.document, piece.start + t + 1 - offset)
            if key not in best or t > best[key][1]:
                best[key] = (number, t)
    return best


def deltalp_rows(analysis: PieceAnalysis, result: DeltaLP, targets=None, extra: dict | None = None) -> list[dict]:
    """Rows of the ΔLP table for the given piece targets ``t`` (default: all), one per source in the window.

    ``result`` is the token-level :class:`DeltaLP` of ``analysis`` (any units; contrasts too).
    """
    rows = []
    window = result.window
    delta = result.delta
    length = len(analysis.ids)
    targets = range(length - 1) if targets is None else targets
    for t in targets:
        for s in range(max(0, t - window + 1), t + 1):
            row = dict(document=analysis.document, piece=analysis.piece, target_index=analysis.position(t + 1),
                       target_token=analysis.texts[t + 1], target_token_raw=analysis.tokens[t + 1], context_length=t,
                       source_index=analysis.position(s), source_token=analysis.texts[s],
                       source_token_raw=analysis.tokens[s], distance=t - s + 1, is_bos=analysis.is_start(s),
                       lp=float(result.lp[t]), lp_without=float(result.ablated[t - s, t]),
                       delta_lp=float(delta[t - s, t]))
            if extra:
                row.update(extra)
            rows.append(row)
    return rows


def summarize_targets(rows: list[dict], include_bos: bool = False) -> dict:
    """Per target (``document``, ``target_index``): the argmax source (largest ΔLP; the paper's argmax, which
    excludes the start token unless ``include_bos``) and its distance; plus the distance histogram over targets.

    Targets whose only candidate is the start token (the first target of a document) have
    ``argmax_source_index`` None and no distance, as the paper's -1.
    """
    by_target: dict[tuple, list[dict]] = {}
    for row in rows:
        by_target.setdefault((row["document"], row["target_index"]), []).append(row)
    targets = []
    histogram: Counter = Counter()
    for (document, index), group in by_target.items():
        candidates = [r for r in group if (include_bos or not r["is_bos"]) and not math.isnan(r["delta_lp"])]
        best = max(candidates, key=lambda r: r["delta_lp"]) if candidates else None
        entry = dict(document=document, target_index=index, target_token=group[0]["target_token"],
                     context_length=group[0]["context_length"], lp=group[0]["lp"],
                     argmax_source_index=best["source_index"] if best else None,
                     argmax_source_token=best["source_token"] if best else None,
                     argmax_delta_lp=best["delta_lp"] if best else None,
                     distance=best["distance"] if best else None)
        targets.append(entry)
        if best:
            histogram[best["distance"]] += 1
    distances = [t["distance"] for t in targets if t["distance"] is not None]
    return dict(include_bos=include_bos, n_targets=len(targets),
                n_targets_with_argmax=len(distances),
                mean_distance=sum(distances) / len(distances) if distances else None,
                max_distance=max(distances) if distances else None,
                distance_histogram={str(k): histogram[k] for k in sorted(histogram)},
                targets=targets)


def infer_pieces(id_lists: list[list[int]]) -> list[tuple[int, int]]:
    """``(document, start)`` of consecutive pieces read from files that carry no record (the paper's own
    outputs): a piece continues the previous one's article if its tokens after the start token begin with the
    previous piece's second half, as :func:`huggingface_patch.corpus.split_article` cuts them (advance
    ``len // 2``). A heuristic; recorded runs carry both numbers.
    """
    out: list[tuple[int, int]] = []
    document, start = 0, 0
    for number, ids in enumerate(id_lists):
        if number:
            prev = id_lists[number - 1]
            half = len(prev) // 2
            tail = prev[1 + half:]
            if len(tail) > 0 and ids[1:1 + len(tail)] == tail:
                start += half
            else:
                document, start = document + 1, 0
        out.append((document, start))
    return out
