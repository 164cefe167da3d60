"""The paper's corpus format ("sentitems") and its way of cutting long texts into model-sized pieces.

A sentitems file is plain text: a line ``!ARTICLE`` starts each article (the first line must be one);
an article's lines are stripped and joined with single spaces (blank lines are skipped).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

ARTICLE_MARK = "!ARTICLE"


class CorpusError(ValueError):
    """A corpus file that cannot be read as sentitems; the message names the problem and the fix."""


def read_sentitems(path: str) -> list[str]:
    """Articles of a sentitems file, each one string."""
    if not os.path.isfile(path):
        raise CorpusError(f"input file not found: {path}")
    with open(path, encoding="utf-8") as handle:
        lines = [line.strip() for line in handle]
    if not any(lines):
        raise CorpusError(f"input file is empty: {path}")
    first = next(line for line in lines if line)
    if first != ARTICLE_MARK:
        raise CorpusError(f"{path} is not a sentitems file: its first line must be {ARTICLE_MARK!r} (one before each article)")
    articles: list[list[str]] = []
    for line in lines:
        if line == ARTICLE_MARK:
            articles.append([])
        elif line:
            articles[-1].append(line)
    texts = [" ".join(article) for article in articles]
    if not any(texts):
        raise CorpusError(f"{path} has {ARTICLE_MARK!r} lines but no text")
    return texts


def read_corpus(path: str) -> list[str]:
    """Sentitems if the file starts with ``!ARTICLE``; otherwise plain text, one document per blank-line-separated paragraph."""
    if not os.path.isfile(path):
        raise CorpusError(f"input file not found: {path}")
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    if not text.strip():
        raise CorpusError(f"input file is empty: {path}")
    if text.lstrip().startswith(ARTICLE_MARK):
        return read_sentitems(path)
    documents = [" ".join(line.strip() for line in block.splitlines() if line.strip()) for block in text.split("\n\n")]
    return [doc for doc in documents if doc]


@dataclass
class Piece:
    """One model input cut from an article: ``ids`` starts with BOS; ``start`` is the article-token index of
    ``ids[1]``; ``document`` the article index."""

    document: int
    ids: list[int]
    start: int


def split_article(ids: list[int], bos_id: int, context: int, document: int = 0) -> list[Piece]:
    """Cut an article's token ids (without BOS) into pieces as the paper's ``main.py`` does.

    While more than ``context - 1`` tokens remain, emit BOS + the next ``context - 1`` tokens and advance by
    ``context // 2``; then emit BOS + the rest. Consecutive pieces overlap by ``context // 2 - 1`` tokens.
    (The paper's loop tests ``> context``, which sends a text of exactly ``context`` tokens to the model as
    ``context + 1`` inputs; that crashes, so this cut-off is the only change.)
    """
    if context < 2:
        raise ValueError(f"context window too small: {context}")
    pieces, offset, rest = [], 0, list(ids)
    while len(rest) > context - 1:
        pieces.append(Piece(document, [bos_id] + rest[: context - 1], offset))
        rest = rest[context // 2 :]
        offset += context // 2
    pieces.append(Piece(document, [bos_id] + rest, offset))
    return pieces


def tokenize_articles(tokenizer, articles: list[str]) -> list[list[int]]:
    """Token ids of each article without special tokens (the BOS is added per piece)."""
    return [list(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in articles]


def bos_token_id(config, tokenizer) -> int:
    """The model's BOS id (``config.bos_token_id``, else the tokenizer's)."""
    bos = getattr(config, "bos_token_id", None)
    if bos is None:
        bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        raise CorpusError("the model defines no BOS token (config.bos_token_id and tokenizer.bos_token_id are unset)")
    return int(bos)


def context_size(config) -> int:
    """The model's context window (``max_position_embeddings``)."""
    size = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if not size:
        raise CorpusError("the model config gives no max_position_embeddings")
    return int(size)
