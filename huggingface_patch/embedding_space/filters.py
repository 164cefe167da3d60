r"""Readable vocabulary pieces and the token filters of Dar et al. (2023).

Display: a piece that starts a word (byte-level BPE ``Ġ``, SentencePiece ``▁``) is shown without the
marker; a word-internal piece gets a ``#`` prefix (``Ġpre`` -> ``pre``, ``fix`` -> ``#fix``). Byte-level
characters are decoded back to text (``Ċ`` -> newline, shown as ``\n``); SentencePiece byte pieces
``<0x0A>`` likewise. Special tokens are shown as they are.

Filters (:class:`TokenFilter`) act on a piece's text without its marker:

- ``only_ascii``: every character is ASCII;
- ``only_alnum``: the text is non-empty and every character is a letter or digit (``str.isalnum``);
- ``word_list``: the lower-cased text is in the list (one word a line, compared lower-cased);
- ``max_id``: only ids below it (BPE vocabularies are ordered by merge, roughly by frequency, so this keeps
  the frequent pieces; an addition, not in the original);
- special tokens (the tokenizer's special ids and the added tokens it flags special, such as Gemma's
  ``<unusedN>`` slots) and ids the tokenizer does not know (padding rows of the embedding) are always excluded
  unless ``keep_special=True``.

Pairs (``pair_exclusion``): ``'identical'`` drops pairs of the same token id, ``'near'`` (default) also
drops pairs whose texts agree after lower-casing and removing the word-start marker and surrounding
whitespace (``' Paris'`` / ``'Paris'`` / ``' paris'``), ``'none'`` keeps every pair.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache

import torch

from ..errors import HuggingfacePatchError

PAIR_EXCLUSIONS = ("near", "identical", "none")
BPE_SPACE = "Ġ"
SP_SPACE = "▁"


class WordListError(HuggingfacePatchError):
    """A word-list file that is missing or empty."""


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """Inverse of the byte-level BPE byte -> printable character table.

    Printable bytes map to themselves; the others, in order, to ``chr(256 + n)``.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[chr(byte)] = byte
        else:
            table[chr(256 + extra)] = byte
            extra += 1
    return table


@dataclass
class Vocabulary:
    """The model's vocabulary as readable pieces.

    ``raw``: tokenizer pieces (None for ids the tokenizer does not know); ``text``: decoded text (word-start
    space included); ``word_start``: whether the piece starts a word; ``special``: special or unknown ids.
    """

    raw: list[str | None]
    text: list[str]
    word_start: list[bool]
    special: list[bool]
    style: str  # 'byte-bpe', 'sentencepiece' or 'plain'
    _display: list[str] = field(default_factory=list, repr=False)

    def __len__(self) -> int:
        return len(self.raw)

    def bare(self, i: int) -> str:
        """The text without its word-start space."""
        return self.text[i][1:] if self.word_start[i] and self.text[i].startswith(" ") else self.text[i]

    def display(self, i: int) -> str:
        """Readable form: word-start pieces bare, word-internal pieces ``#piece``, control characters escaped."""
        if not self._display:
            self._display = [self._make_display(j) for j in range(len(self))]
        return self._display[i]

    def _make_display(self, i: int) -> str:
        if self.raw[i] is None:
            return f"<id {i}>"
        if self.special[i]:
            return self.raw[i]
        bare = self.bare(i)
        if "\ufffd" in bare and self.style == "byte-bpe":  # a piece of a multi-byte character: show its bytes
            table = _byte_decoder()
            raw = self.raw[i][1:] if self.word_start[i] else self.raw[i]
            if all(ch in table for ch in raw):
                bare = "".join(f"<0x{table[ch]:02X}>" for ch in raw)
        if not bare.isprintable():
            bare = bare.encode("unicode_escape").decode("ascii")
        if self.style == "plain" or self.word_start[i]:
            return bare or "␣"
        return "#" + bare


def _decode_piece(piece: str, style: str) -> str:
    if style == "byte-bpe":
        table = _byte_decoder()
        if all(ch in table for ch in piece):
            return bytes(table[ch] for ch in piece).decode("utf-8", errors="replace")
        return piece
    if style == "sentencepiece":
        if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            try:
                return bytes([int(piece[3:5], 16)]).decode("utf-8", errors="replace")
            except ValueError:
                return piece
        return piece.replace(SP_SPACE, " ")
    return piece


def vocabulary(tokenizer, size: int) -> Vocabulary:
    """Readable pieces for ids ``0..size-1`` (``size`` = rows of the embedding, may exceed the tokenizer)."""
    known = len(tokenizer)
    raw: list[str | None] = list(tokenizer.convert_ids_to_tokens(list(range(min(size, known)))))
    raw += [None] * (size - len(raw))
    pieces = [p for p in raw if p]
    bpe = sum(p.startswith(BPE_SPACE) for p in pieces)
    sp = sum(p.startswith(SP_SPACE) for p in pieces)
    byte_level = getattr(tokenizer, "byte_decoder", None) is not None or bpe > 0
    style = "sentencepiece" if sp > bpe else ("byte-bpe" if byte_level else "plain")
    special_ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    # added tokens the tokenizer itself flags special: Gemma's 6,242 <unusedN> slots, image markers and the like
    # are not in all_special_ids, and a SentencePiece vocabulary cannot be told by its <...> shape
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    special_ids |= {i for i, token in added.items() if getattr(token, "special", False)}
    text, word_start, special = [], [], []
    for i, piece in enumerate(raw):
        if piece is None:
            text.append("")
            word_start.append(False)
            special.append(True)
            continue
        is_special = i in special_ids or (piece.startswith("<") and piece.endswith(">") and len(piece) > 2
                                          and style != "sentencepiece" and not piece.startswith("<0x"))
        decoded = piece if is_special else _decode_piece(piece, style)
        text.append(decoded)
        word_start.append(decoded.startswith(" "))
        special.append(is_special)
    return Vocabulary(raw, text, word_start, special, style)


def read_word_list(path: str) -> set[str]:
    """Words of a file (one per line, blank lines and ``#`` comments skipped), lower-cased."""
    if not os.path.isfile(path):
        raise WordListError(f"word-list file not found: {path}")
    with open(path, encoding="utf-8") as handle:
        words = {line.strip().lower() for line in handle if line.strip() and not line.startswith("#")}
    if not words:
        raise WordListError(f"word-list file is empty: {path}")
    return words


@dataclass
class TokenFilter:
    """Which tokens may appear in a result (see the module docstring)."""

    only_ascii: bool = False
    only_alnum: bool = False
    word_list: set[str] | None = None
    keep_special: bool = False
    max_id: int | None = None

    def keeps(self, vocab: Vocabulary, i: int) -> bool:
        """Whether token ``i`` passes every filter."""
        if vocab.raw[i] is None:
            return False
        if self.max_id is not None and i >= self.max_id:
            return False
        if vocab.special[i]:
            return self.keep_special
        bare = vocab.bare(i).strip() if not vocab.special[i] else vocab.raw[i]
        if self.only_ascii and not bare.isascii():
            return False
        if self.only_alnum and not bare.isalnum():
            return False
        if self.word_list is not None and bare.lower() not in self.word_list:
            return False
        return True

    def allowed(self, vocab: Vocabulary) -> torch.Tensor:
        """``(V,)`` bool mask of the tokens this filter keeps."""
        return torch.tensor([self.keeps(vocab, i) for i in range(len(vocab))], dtype=torch.bool)

    def describe(self) -> dict:
        """The settings, for JSON summaries."""
        return dict(only_ascii=self.only_ascii, only_alnum=self.only_alnum,
                    word_list_size=None if self.word_list is None else len(self.word_list),
                    keep_special=self.keep_special, max_id=self.max_id)


def pair_groups(vocab: Vocabulary, mode: str = "near") -> torch.Tensor | None:
    """``(V,)`` group ids: a pair ``(i, j)`` is excluded iff ``groups[i] == groups[j]``.

    None for ``mode='none'``. ``'identical'``: one group per id; ``'near'``: one group per normalised text.
    """
    if mode not in PAIR_EXCLUSIONS:
        raise ValueError(f"unknown pair exclusion {mode!r}: choose from {', '.join(PAIR_EXCLUSIONS)}")
    if mode == "none":
        return None
    if mode == "identical":
        return torch.arange(len(vocab))
    ids: dict[str, int] = {}
    groups = []
    for i in range(len(vocab)):
        key = vocab.bare(i).strip().lower() if vocab.raw[i] is not None and not vocab.special[i] else f"\0{i}"
        if not key:
            key = f"\0{i}"
        groups.append(ids.setdefault(key, len(ids)))
    return torch.tensor(groups)


def top_tokens(scores: torch.Tensor, k: int, allowed: torch.Tensor | None = None, largest: bool = True):
    """``(ids, values)`` of the ``k`` best tokens of ``scores`` ``(V,)`` among the ``allowed`` ones.

    (Excluded ids are set to ``-inf``, as in the original ``top_tokens``).
    """
    scores = scores.detach().float().clone()
    if not largest:
        scores = -scores
    if allowed is not None:
        scores[~allowed.to(scores.device)] = float("-inf")
    k = min(k, int(torch.isfinite(scores).sum()))
    values, ids = scores.topk(k)
    return ids.cpu(), (values if largest else -values).cpu()
