"""Corpora and the start token: the paper's "sentitems" format, plain-text corpora, the model's document
start, and the paper's way of cutting long texts into model-sized pieces.

A sentitems file is plain UTF-8 text (a byte-order mark and CRLF line endings are accepted): a line
``!ARTICLE`` starts each article (the first line must be one); an article's lines are stripped and
joined with single spaces (blank lines are skipped).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import HuggingfacePatchError

#: the example texts shipped with the package (the defaults of the tools, wherever they are run from): a short
#: corpus (``examples/corpus.sentitems`` in the repository) and the essays of the reproduction report
EXAMPLE_CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "corpus.sentitems")
EXAMPLE_ESSAYS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "essays.sentitems")

ARTICLE_MARK = "!ARTICLE"

#: tokens that open a chat turn: an instruct model's ``config.bos_token_id`` is sometimes one of them, but a
#: document does not start with a chat turn
CHAT_TURN_MARKERS = ("<|im_start|>", "<start_of_turn>", "<|start_header_id|>", "<|user|>")
#: the document separators such models were pre-trained with, used as the start token instead
DOCUMENT_SEPARATORS = ("<|endoftext|>",)


class CorpusError(HuggingfacePatchError):
    """A corpus file that cannot be read, or a start token that cannot be used; the message says the fix."""


def read_text(path: str) -> str:
    r"""The whole file as text: UTF-8 (a leading byte-order mark dropped), line endings normalised to ``\n``.
    A file that is not UTF-8 text is refused naming the first offending line."""
    if not os.path.isfile(path):
        raise CorpusError(f"input file not found: {path}")
    with open(path, "rb") as handle:
        data = handle.read()
    if b"\x00" in data:
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        raise CorpusError(f"{path} is a binary file, not text (NUL byte on line {line}): give a UTF-8 text file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise CorpusError(f"{path} is not UTF-8 text: line {line} has bytes that are not UTF-8 "
                          "(convert the file to UTF-8)") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def parse_sentitems(text: str, path: str = "<text>") -> list[str]:
    """Articles of sentitems text, each one string."""
    lines = [line.strip() for line in text.split("\n")]
    if not any(lines):
        raise CorpusError(f"input file is empty: {path}")
    first = next(line for line in lines if line)
    if first != ARTICLE_MARK:
        raise CorpusError(f"{path} is not a sentitems file: its first line must be {ARTICLE_MARK!r} (one before each "
                          "article)")
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


def read_sentitems(path: str) -> list[str]:
    """Articles of a sentitems file, each one string."""
    return parse_sentitems(read_text(path), path)


def read_corpus(path: str) -> list[str]:
    """Sentitems if the file starts with ``!ARTICLE``; otherwise plain text, one document per blank-line-separated
    paragraph."""
    text = read_text(path)
    if not text.strip():
        raise CorpusError(f"input file is empty: {path}")
    if text.lstrip().startswith(ARTICLE_MARK):
        return parse_sentitems(text, path)
    documents = [" ".join(line.strip() for line in block.splitlines() if line.strip()) for block in text.split("\n\n")]
    return [doc for doc in documents if doc]


# ----------------------------------------------------------------------------------------------------------
# the start token


@dataclass(frozen=True)
class StartToken:
    """The token every piece starts with: ``id`` (None: no start token), its ``token`` text, and why it was
    chosen (``reason``)."""

    id: int | None
    token: str | None
    reason: str

    def prepend(self, ids: list[int]) -> list[int]:
        return list(ids) if self.id is None else [self.id] + list(ids)

    def describe(self) -> dict:
        return {"id": self.id, "token": self.token, "reason": self.reason}


def _vocab_token(tokenizer, token_id: int) -> str:
    return tokenizer.convert_ids_to_tokens([int(token_id)])[0]


def tokenizer_adds_start(tokenizer) -> int | None:
    """The start token the tokenizer itself puts before a text (Gemma's ``<bos>``), or None."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return None
    with_special = tokenizer("a")["input_ids"]
    without = tokenizer("a", add_special_tokens=False)["input_ids"]
    return int(bos) if with_special and with_special[0] == bos and (not without or without[0] != bos) else None


def document_start(config, tokenizer, choice: str | int | None = "auto", bundled: str | None = None) -> StartToken:
    """Resolve ``--bos``: ``"auto"`` (default), ``"none"``, a token string or a token id.

    ``auto`` is the model's real document start: the start token a bundled model declares (``bundled``: its
    name), else the BOS the tokenizer adds by itself (Gemma), else ``config.bos_token_id``, else the
    tokenizer's BOS. A chat-turn marker (``<|im_start|>``: SmolLM2-Instruct's ``config.bos_token_id``) is
    replaced by the model's document separator (``<|endoftext|>``) when the vocabulary has one.
    """
    vocab = tokenizer.get_vocab()
    size = max(len(tokenizer), getattr(config, "vocab_size", 0) or 0)
    if choice is None or (isinstance(choice, str) and choice.lower() == "none"):
        return StartToken(None, None, "--bos none")
    if isinstance(choice, int) or (isinstance(choice, str) and choice.strip().isdigit()):
        token_id = int(choice)
        if not 0 <= token_id < size:
            raise CorpusError(f"--bos {choice}: the vocabulary has ids 0..{size - 1}")
        return StartToken(token_id, _vocab_token(tokenizer, token_id), "--bos id")
    if choice != "auto":
        if choice not in vocab:
            raise CorpusError(f"--bos {choice!r} is not a token of this tokenizer: give a token string, a token id, "
                              "'auto' or 'none'")
        return StartToken(int(vocab[choice]), choice, "--bos token")
    if bundled is not None:
        from .bundled import bundled_model

        declared = getattr(bundled_model(bundled), "document_start", None)
        if declared is not None and declared in vocab:
            return StartToken(int(vocab[declared]), declared, f"the document separator of {bundled}")
    own = tokenizer_adds_start(tokenizer)
    if own is not None:
        return StartToken(own, _vocab_token(tokenizer, own), "the BOS the tokenizer adds")
    for source, token_id in (("config.bos_token_id", getattr(config, "bos_token_id", None)),
                             ("tokenizer.bos_token_id", getattr(tokenizer, "bos_token_id", None))):
        if token_id is None:
            continue
        token = _vocab_token(tokenizer, token_id)
        if token in CHAT_TURN_MARKERS:
            separator = next((s for s in DOCUMENT_SEPARATORS if s in vocab), None)
            if separator is not None:
                return StartToken(int(vocab[separator]), separator,
                                  f"the document separator ({source} is the chat-turn marker {token})")
        return StartToken(int(token_id), token, source)
    raise CorpusError("the model defines no start token (config.bos_token_id and tokenizer.bos_token_id are unset): "
                      "give --bos TOKEN, or --bos none")


# ----------------------------------------------------------------------------------------------------------
# pieces


@dataclass
class Piece:
    """One model input cut from an article: ``ids`` starts with the start token (if any); ``start`` is the
    article-token index of the first text token; ``document`` the article index."""

    document: int
    ids: list[int]
    start: int
    offset: int = 1  # position of the first text token in ``ids`` (0 without a start token)


def split_article(ids: list[int], bos_id: int | None, context: int, document: int = 0) -> list[Piece]:
    """Cut an article's token ids (without a start token) into pieces as the paper's ``main.py`` does.

    With a start token: while more than ``context - 1`` tokens remain, emit BOS + the next ``context - 1``
    tokens and advance by ``context // 2``; then emit BOS + the rest. Consecutive pieces overlap by
    ``context // 2 - 1`` tokens. (The paper's loop tests ``> context``, which sends a text of exactly
    ``context`` tokens to the model as ``context + 1`` inputs; that crashes, so this cut-off is the only
    change.) Without a start token (``bos_id`` None) pieces hold ``context`` text tokens.
    """
    if context < 2:
        raise CorpusError(f"context window too small: {context}")
    start = StartToken(bos_id, None, "")
    room = context - (0 if bos_id is None else 1)
    offset = 0 if bos_id is None else 1
    pieces, position, rest = [], 0, list(ids)
    while len(rest) > room:
        pieces.append(Piece(document, start.prepend(rest[:room]), position, offset))
        rest = rest[context // 2 :]
        position += context // 2
    pieces.append(Piece(document, start.prepend(rest), position, offset))
    return pieces


def tokenize_articles(tokenizer, articles: list[str]) -> list[list[int]]:
    """Token ids of each article without special tokens (the start token is added per piece)."""
    return [list(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in articles]


def context_size(config) -> int:
    """The model's context window: ``max_position_embeddings`` (``n_positions``), or what the family's adapter
    says when the config has neither (ALiBi models such as BLOOM were trained on a fixed length)."""
    size = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if not size:
        from .architectures.registry import UnsupportedArchitectureError, get_adapter

        try:
            size = get_adapter(config).context_size(config)
        except UnsupportedArchitectureError:
            size = None
    if not size:
        raise CorpusError("the model config gives no max_position_embeddings")
    return int(size)


def check_vocabulary(pieces, vocab_size: int, what: str = "the corpus") -> None:
    """Refuse token ids the model has no embedding for (a tokenizer larger than the model's vocabulary)."""
    largest = max((max(piece.ids) for piece in pieces if piece.ids), default=-1)
    if largest >= vocab_size:
        raise CorpusError(f"the tokenizer gives {what} token id {largest}, but the model's vocabulary has only "
                          f"{vocab_size} entries: use the tokenizer that belongs to this model")


def prepare_pieces(articles: list[str], tokenizer, config, start: StartToken,
                   context: int | None = None) -> list[Piece]:
    """Tokenize and cut ``articles`` exactly as the paper does (empty articles give no piece), checked against
    the model's vocabulary."""
    context = context or context_size(config)
    pieces = []
    for index, ids in enumerate(tokenize_articles(tokenizer, articles)):
        if ids:
            pieces.extend(split_article(ids, start.id, context, document=index))
    if not pieces:
        raise CorpusError("the corpus has no text the tokenizer turns into tokens")
    check_vocabulary(pieces, int(getattr(config, "vocab_size", 0) or 0) or 10**12)
    return pieces
