"""Word-level ΔLP: remove all subword tokens of a word at once (the sum of their contributions).

A word starts at a token whose text begins with whitespace (GPT-2 ``Ġ``, SentencePiece ``▁``, or a decoded
leading space) or after a special token; the BOS is its own word; punctuation joins the word before it.
Any other set or span of sources can be removed jointly with :func:`span_deltalp` /
:func:`huggingface_patch.deltalp.compute_group_deltalp`.
"""

from __future__ import annotations

import math

from ..deltalp import DeltaLP, compute_group_deltalp
from .tables import PieceAnalysis

_SPACE_MARKS = ("Ġ", "▁", " ", "Ċ", "\n", "\t")


def word_groups(tokens: list[str], special: set[int] | None = None, start_token: bool = True) -> list[list[int]]:
    """Group piece positions into words: ``[[0], [1, 2], [3], ...]`` (position 0, a start token, alone).

    ``tokens`` are token strings (``convert_ids_to_tokens``); ``special`` positions each form their own word.
    """
    special = set(special or ()) | ({0} if start_token else set())
    groups: list[list[int]] = []
    for index, token in enumerate(tokens):
        starts = index in special or not groups or groups[-1][-1] in special or token.startswith(_SPACE_MARKS)
        if starts:
            groups.append([index])
        else:
            groups[-1].append(index)
    return groups


def word_text(tokens: list[str], group: list[int], tokenizer=None, ids=None) -> str:
    """Readable text of a word (decoded with ``tokenizer`` when given, leading space kept; else the joined
    token strings)."""
    if tokenizer is not None and ids is not None:
        text = tokenizer.decode([int(ids[i]) for i in group], clean_up_tokenization_spaces=False)
        return text if text.strip() else "".join(tokens[i] for i in group)
    return "".join(tokens[i] for i in group)


def span_deltalp(analysis: PieceAnalysis, spans: list[list[int]] | list[range], base: float = 2.0) -> DeltaLP:
    """ΔLP of removing each set or span of piece positions jointly: ``ablated`` / ``delta`` are ``(G, T-1)``."""
    return compute_group_deltalp(analysis.final_state, analysis.decomposition, analysis.readout, analysis.ids,
                                 [list(span) for span in spans], base=base)


def word_rows(analysis: PieceAnalysis, base: float = 2.0, targets=None, tokenizer=None) -> list[dict]:
    """Word-level ΔLP rows: for each target ``t`` (default all), one row per word with a token in the window at
    or before ``t``; only those tokens are removed (``n_tokens_removed`` < ``n_tokens`` when the word is cut by
    the window or continues after ``t``).
    """
    groups = word_groups(analysis.tokens, start_token=bool(analysis.offset))
    result = span_deltalp(analysis, groups, base=base)
    window = analysis.decomposition.shape[0]
    delta = result.delta
    length = len(analysis.ids)
    targets = range(length - 1) if targets is None else targets
    texts = [word_text(analysis.tokens, g, tokenizer, analysis.ids) for g in groups]
    rows = []
    for t in targets:
        for g, group in enumerate(groups):
            value = float(delta[g, t])
            if math.isnan(value):
                continue
            removed = [s for s in group if t - window < s <= t]
            rows.append(dict(document=analysis.document, piece=analysis.piece, target_index=analysis.position(t + 1),
                             target_token=analysis.texts[t + 1], target_token_raw=analysis.tokens[t + 1],
                             context_length=t,
                             source_index=analysis.position(group[0]), source_end=analysis.position(group[-1]),
                             source_token=texts[g], n_tokens=len(group), n_tokens_removed=len(removed),
                             distance=t - removed[-1] + 1, is_bos=group == [0] and bool(analysis.offset),
                             lp=float(result.lp[t]),
                             lp_without=float(result.ablated[g, t]), delta_lp=value))
    return rows


__all__ = ["span_deltalp", "word_groups", "word_rows", "word_text"]
