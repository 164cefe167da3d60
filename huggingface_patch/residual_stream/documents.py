"""Documents for the lens analyses: read a corpus or a ``--text``, tokenize after the start token, pad a batch.

Corpus files go through :func:`huggingface_patch.corpus.read_corpus`: a sentitems file (``!ARTICLE`` lines
separate documents, a document's lines joined with single spaces) or plain text with one document per
blank-line-separated paragraph.
"""

from __future__ import annotations

import torch

from ..corpus import CorpusError, read_corpus

__all__ = ["CorpusError", "encode_documents", "load_documents", "pad_batch"]


def load_documents(corpus: str | None = None, text: str | None = None) -> list[str]:
    """The documents of ``text`` (one document) or of the corpus file; :class:`CorpusError` if there are none."""
    if text is not None:
        if not text.strip():
            raise CorpusError("--text is empty")
        return [" ".join(text.split())]
    if corpus is None:
        raise CorpusError("give a corpus file or a text")
    documents = [doc for doc in read_corpus(corpus) if doc.strip()]
    if not documents:
        raise CorpusError(f"{corpus} contains no text")
    return documents


def encode_documents(tokenizer, start, documents: list[str], max_tokens: int | None = None) -> list[list[int]]:
    """Token ids of each document: the :class:`~huggingface_patch.corpus.StartToken` ``start`` (if any) then
    the text, cut to ``max_tokens`` in all."""
    encoded = []
    for doc in documents:
        ids = start.prepend(tokenizer(doc, add_special_tokens=False)["input_ids"])
        if max_tokens is not None:
            ids = ids[:max_tokens]
        if len(ids) < 2:
            raise CorpusError(f"document {doc[:30]!r} is too short: it needs at least two tokens")
        encoded.append(ids)
    return encoded


def pad_batch(sequences: list[list[int]], pad_id: int = 0, side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, both ``(B, T)`` long, padded on ``side`` (``'right'`` or ``'left'``)."""
    if side not in ("right", "left"):
        raise ValueError(f"padding side must be 'right' or 'left', got {side!r}")
    width = max(len(seq) for seq in sequences)
    ids = torch.full((len(sequences), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        span = slice(0, len(seq)) if side == "right" else slice(width - len(seq), width)
        ids[row, span] = torch.tensor(seq, dtype=torch.long)
        mask[row, span] = 1
    return ids, mask


def pad_id_of(tokenizer) -> int:
    """The id used to fill padding (any id works: padded positions are masked and never read)."""
    for name in ("pad_token_id", "eos_token_id", "bos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    return 0
