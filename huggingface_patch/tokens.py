r"""Tokens as people read them.

Tables, summaries and plots show each token as the text it stands for (``' keys'``, ``'\n'``), not as the
tokenizer's internal piece (``'Ġkeys'``, ``'Ċ'``, ``'▁keys'``); machine-readable outputs keep the raw piece
next to it (a ``*_raw`` column). The paper's own ΔLP text format keeps the raw pieces, byte for byte.
"""

from __future__ import annotations

from typing import Sequence

_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def token_texts(tokenizer, ids: Sequence[int]) -> list[str]:
    """The text of each token id on its own (a leading space stays; a byte that is only part of a character
    shows as ``'�'``)."""
    return [tokenizer.decode([int(i)], clean_up_tokenization_spaces=False) for i in ids]


def raw_tokens(tokenizer, ids: Sequence[int]) -> list[str]:
    """The tokenizer's own pieces (``convert_ids_to_tokens``)."""
    return list(tokenizer.convert_ids_to_tokens([int(i) for i in ids]))


def show(text: str) -> str:
    r"""A token's text for display: quoted, so that leading and trailing spaces are visible, with backslashes,
    newlines and tabs escaped (``' keys'``, ``'\n'``)."""
    return "'" + "".join(_ESCAPES.get(ch, ch) for ch in text) + "'"
