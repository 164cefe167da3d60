"""Contrastive ΔLP: the effect of each source on ``log p(target) - log p(foil)`` for a chosen foil token."""

from __future__ import annotations

from ..deltalp import DeltaLP, compute_contrastive_deltalp
from ..errors import HuggingfacePatchError
from .tables import PieceAnalysis


class FoilError(HuggingfacePatchError):
    """The foil is not one token of the model's vocabulary."""


def resolve_foil(tokenizer, foil: str) -> int:
    """Token id of ``foil``: a vocabulary entry (e.g. ``Ġthe``) or a text that tokenizes to exactly one token
    (e.g. `` the``).
    """
    vocab = tokenizer.get_vocab()
    if foil in vocab:
        return int(vocab[foil])
    ids = tokenizer(foil, add_special_tokens=False)["input_ids"]
    if len(ids) == 1:
        return int(ids[0])
    raise FoilError(f"unknown foil token {foil!r}: it is not a vocabulary entry and tokenizes to {len(ids)} tokens "
                    "(give a single token, e.g. ' the' with its leading space)")


def contrastive_deltalp(analysis: PieceAnalysis, foil: int, base: float = 2.0) -> DeltaLP:
    """Contrastive :class:`DeltaLP` of a piece: ``lp`` = ``log p(target) - log p(foil)``; ``delta`` per source."""
    return compute_contrastive_deltalp(analysis.final_state, analysis.decomposition, analysis.readout, analysis.ids,
                                       foil, base=base)
