"""Query preparation for the Geva et al. (2023) recall experiments.

* :func:`load_facts` reads a known_1000-style JSON list (``subject`` and ``prompt`` per fact);
* :func:`subject_token_span` locates the subject's tokens from character offsets, for any tokenizer
  (byte-level BPE with or without leading-space tokens, SentencePiece / Llama);
* :func:`prepare_queries` tokenizes the prompts (after a start token if one is given; the paper encodes
  GPT-2 prompts without one) and keeps the facts that the model completes with its own top-1 prediction as
  the attribute (the paper's "known" facts).

The *attribute* used by every analysis is the model's own argmax next token at the last prompt position
(``FactQuery.target_id``), never the dataset's attribute string.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Iterator, Sequence

import torch

from ..compat import cached_step
from ..errors import HuggingfacePatchError

logger = logging.getLogger(__name__)

#: the facts shipped with the package (1,209 prompts of Meng et al.'s known_1000)
DEFAULT_FACTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "known_1000.json")

#: ``filter`` values of :func:`prepare_queries`
FILTERS = ("greedy", "first-token", "none")


class FactsError(HuggingfacePatchError):
    """A facts file that cannot be used (missing keys, not a list, malformed JSON)."""


@dataclass
class FactQuery:
    """One prompt ready for the analyses.

    ``input_ids``: the prompt's token ids (length ``T``); ``subject_span``: ``[start, end)`` token positions
    of the subject; ``target_id``: the model's top-1 next token at position ``T-1`` (the "attribute"),
    ``target_prob`` its probability.
    """

    index: int
    subject: str
    prompt: str
    attribute: str
    input_ids: list[int]
    subject_span: tuple[int, int]
    target_id: int = -1
    target_token: str = ""
    target_prob: float = float("nan")
    extra: dict = field(default_factory=dict)
    #: 1 when ``input_ids[0]`` is a start token (never part of a named position set), else 0
    offset: int = 0

    @property
    def length(self) -> int:
        return len(self.input_ids)

    @property
    def last(self) -> int:
        return len(self.input_ids) - 1

    def positions(self, name: str) -> list[int]:
        """Token positions of a named set: ``subject``, ``non-subject`` (``< T-1`` outside the subject),
        ``last``, ``first``, ``subject-first``, ``subject-last``, ``after-subject``. A start token belongs to
        none of them: ``first`` is the prompt's first token, and knocking out attention to ``non-subject``
        leaves the start token (an attention sink in most models) alone."""
        start, end = self.subject_span
        if name == "subject":
            return list(range(start, end))
        if name == "non-subject":
            return [i for i in range(self.offset, self.last) if not start <= i < end]
        if name == "last":
            return [self.last]
        if name == "first":
            return [self.offset]
        if name == "subject-first":
            return [start]
        if name == "subject-last":
            return [end - 1]
        if name == "after-subject":
            return [min(end, self.last)]
        raise ValueError(f"unknown position set {name!r}")

    def summary(self) -> dict:
        record = asdict(self)
        record["subject_span"] = list(self.subject_span)
        return record


def load_facts(path: str = DEFAULT_FACTS) -> list[dict]:
    """Read a facts JSON file: a list of objects with ``subject`` and ``prompt`` (``attribute`` optional).

    A ``prompt`` may be replaced by a ``template`` with ``{}`` for the subject. Raises :class:`FactsError`
    with a one-line message for malformed input and ``FileNotFoundError`` for a missing file.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(2, "No such file", path)
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as exc:
        raise FactsError(f"malformed JSON in facts file {path}: {exc.msg} (line {exc.lineno})") from exc
    except UnicodeDecodeError as exc:
        raise FactsError(f"facts file {path} is not UTF-8 text") from exc
    if not isinstance(data, list) or not data:
        raise FactsError(f"facts file {path} must hold a non-empty JSON list of facts")
    facts = []
    for i, fact in enumerate(data):
        if not isinstance(fact, dict) or not isinstance(fact.get("subject"), str):
            raise FactsError(f"fact {i} in {path} needs a string 'subject'")
        prompt = fact.get("prompt")
        if prompt is None and isinstance(fact.get("template"), str):
            prompt = fact["template"].format(fact["subject"])
        if not isinstance(prompt, str) or not prompt:
            raise FactsError(f"fact {i} in {path} needs a string 'prompt' (or a 'template' with {{}})")
        facts.append({**fact, "prompt": prompt, "attribute": str(fact.get("attribute", ""))})
    return facts


def _offsets_by_decoding(tokenizer, ids: Sequence[int], text: str) -> list[tuple[int, int]]:
    """Character offsets of ``ids`` in ``text`` for tokenizers without offset mapping: decode growing
    prefixes (as ROME's ``find_token_range`` does) and take the decoded lengths as token ends."""
    offsets, previous = [], 0
    for i in range(len(ids)):
        decoded = tokenizer.decode(list(ids[: i + 1]), skip_special_tokens=True)
        end = min(len(decoded), len(text))
        offsets.append((previous, end))
        previous = end
    return offsets


def encode_prompt(tokenizer, prompt: str, start_id: int | None = None) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of ``prompt`` and each token's ``(start, end)`` character span (a start token ``start_id``,
    if given, first with span ``(0, 0)``)."""
    try:
        encoded = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]
    except (NotImplementedError, ValueError, TypeError, KeyError):
        ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        offsets = _offsets_by_decoding(tokenizer, ids, prompt)
    if start_id is not None:
        ids, offsets = [int(start_id)] + ids, [(0, 0)] + offsets
    return ids, offsets


def subject_token_span(offsets: Sequence[tuple[int, int]], char_start: int, char_end: int) -> tuple[int, int]:
    """``[start, end)`` token positions of the tokens whose characters overlap ``[char_start, char_end)``.

    A token counts when it shares at least one non-space character with the subject, so a leading-space
    token (``'Ġ'``/``'▁'`` merged or separate) before the subject is not part of the span, while
    ``'ĠMass'`` in ``' Massif'`` is.
    """
    hits = [i for i, (s, e) in enumerate(offsets) if e > s and s < char_end and e > char_start]
    if not hits:
        raise ValueError(f"no token overlaps characters {char_start}..{char_end}")
    return hits[0], hits[-1] + 1


def find_subject(prompt: str, subject: str) -> tuple[int, int]:
    """Character span of ``subject`` in ``prompt`` (first occurrence; case-insensitive fallback)."""
    start = prompt.find(subject)
    if start < 0:
        start = prompt.lower().find(subject.lower())
    if start < 0:
        raise ValueError(f"subject {subject!r} not found in prompt {prompt!r}")
    return start, start + len(subject)


def build_queries(tokenizer, facts: Sequence[dict], start=None) -> list[FactQuery]:
    """Tokenize every fact (after the :class:`~huggingface_patch.corpus.StartToken` ``start``, if any) and
    locate its subject (facts whose subject cannot be found are skipped)."""
    start_id = None if start is None else start.id
    queries = []
    for i, fact in enumerate(facts):
        try:
            ids, offsets = encode_prompt(tokenizer, fact["prompt"], start_id)
            span = subject_token_span(offsets, *find_subject(fact["prompt"], fact["subject"]))
        except ValueError as exc:
            logger.warning("skipping fact %d: %s", i, exc)
            continue
        extra = {k: fact[k] for k in ("known_id", "relation_id") if k in fact}
        queries.append(FactQuery(i, fact["subject"], fact["prompt"], fact["attribute"], ids, span, extra=extra,
                                 offset=0 if start_id is None else 1))
    return queries


def length_batches(queries: Sequence[FactQuery], batch_size: int) -> Iterator[list[FactQuery]]:
    """Batches of queries with the same token length (no padding needed, so results equal batch size 1)."""
    groups: dict[int, list[FactQuery]] = defaultdict(list)
    for query in queries:
        groups[query.length].append(query)
    for length in sorted(groups):
        group = groups[length]
        for i in range(0, len(group), batch_size):
            yield group[i : i + batch_size]


def stack_ids(batch: Sequence[FactQuery], device=None) -> torch.Tensor:
    """``(B, T)`` input ids of a same-length batch."""
    return torch.tensor([q.input_ids for q in batch], dtype=torch.long, device=device)


def model_device(model) -> torch.device:
    """Where the model's (first) weights are."""
    return next(model.parameters()).device


@torch.no_grad()
def last_position_probs(model, input_ids: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Softmax over the vocabulary at the last position, ``(B, V)`` float32, run in row chunks."""
    out = []
    for i in range(0, input_ids.shape[0], chunk):
        logits = model(input_ids=input_ids[i : i + chunk], use_cache=False, logits_to_keep=1).logits[:, -1]
        out.append(torch.softmax(logits.float(), dim=-1))
    return torch.cat(out)


@torch.no_grad()
def _greedy_tokens(model, ids: torch.Tensor, first: torch.Tensor, steps: int, undecided=None) -> torch.Tensor:
    """``(B, n)`` greedy continuation of ``ids`` ``(B, T)``, one length, no padding, whose first token
    ``first`` ``(B,)`` is given: ``n <= steps`` tokens, ending early once ``undecided(tokens)`` is False.
    Continued with a key/value cache (the rows share one length, so the cache continues them exactly)."""
    tokens = [first[:, None]]
    past = None
    for _ in range(steps - 1):
        if undecided is not None and not undecided(torch.cat(tokens, dim=1)):
            break
        step_ids = torch.cat([ids, first[:, None]], dim=1) if past is None else tokens[-1]
        out, past = cached_step(model, step_ids, past, logits_to_keep=1)
        tokens.append(out.logits[:, -1].argmax(-1)[:, None])
    return torch.cat(tokens, dim=1)


def _greedy_text(model, tokenizer, ids: torch.Tensor, first: torch.Tensor, attributes: Sequence[str],
                 steps: int) -> list[str]:
    """Greedy continuations (first token given) as text; stops once every row is decided against its
    attribute (the text is no longer a proper prefix of it)."""

    def texts(generated):
        return [tokenizer.decode(row.tolist(), skip_special_tokens=True) for row in generated]

    def undecided(generated) -> bool:
        return any(len(t.strip()) < len(a.strip()) and a.strip().startswith(t.strip())
                   for t, a in zip(texts(generated), attributes))

    return texts(_greedy_tokens(model, ids, first, steps, undecided))


def _is_known(mode: str, attribute: str, first_token: str, greedy: str | None) -> bool:
    if mode == "none":
        return True
    if not attribute.strip():
        return False
    if mode == "first-token":
        token = first_token.strip()
        return bool(token) and attribute.strip().startswith(token)
    return greedy is not None and greedy.strip().startswith(attribute.strip())


@torch.no_grad()
def prepare_queries(
    model,
    tokenizer,
    facts: Sequence[dict],
    *,
    filter: str = "greedy",
    start=None,
    batch_size: int = 32,
    max_new_tokens: int = 8,
    progress=None,
) -> list[FactQuery]:
    """Tokenize ``facts``, record the model's top-1 next token, and keep the facts the model knows.

    ``filter``: ``"greedy"`` (default) keeps a fact when the model's greedy continuation (up to
    ``max_new_tokens`` tokens) starts with the dataset attribute — how known_1000 itself was built for
    GPT-2 XL; ``"first-token"`` keeps it when the top-1 token (stripped) is a non-empty prefix of the
    attribute; ``"none"`` keeps every fact (for random test models). In every case the analyses use
    the top-1 token as the attribute. Returned queries keep the order of ``facts``; a sample of them is
    :func:`sample_queries`.
    """
    if filter not in FILTERS:
        raise ValueError(f"unknown filter {filter!r}: choose from {', '.join(FILTERS)}")
    queries = build_queries(tokenizer, facts, start=start)
    _score(model, tokenizer, queries, filter, batch_size, max_new_tokens, progress)
    return [q for q in queries if _is_known(filter, q.attribute, q.target_token, q.extra["greedy"])]


def sample_queries(queries: Sequence[FactQuery], size: int | None, seed: int = 0) -> list[FactQuery]:
    """A simple random sample of ``size`` queries (all when ``size`` is None or not smaller), drawn with
    ``seed`` and returned in their original order: never "the first N in file order"."""
    import numpy as np

    if size is None or size >= len(queries):
        return list(queries)
    chosen = np.sort(np.random.default_rng(seed).choice(len(queries), size=size, replace=False))
    return [queries[int(i)] for i in chosen]


@torch.no_grad()
def _score(model, tokenizer, queries: Sequence[FactQuery], filter: str, batch_size: int, max_new_tokens: int,
           progress=None) -> None:
    """Fill in each query's top-1 next token, its probability and (``filter="greedy"``) its greedy
    continuation (``extra["greedy"]``; None otherwise)."""
    device = model_device(model)
    for batch in length_batches(list(queries), batch_size):
        ids = stack_ids(batch, device)
        probs = last_position_probs(model, ids)
        top = probs.argmax(-1)
        greedy = None
        if filter == "greedy":
            steps = max(1, min(max_new_tokens, max(len(tokenizer(q.attribute)["input_ids"]) for q in batch) + 1))
            greedy = _greedy_text(model, tokenizer, ids, top, [q.attribute for q in batch], steps)
        for j, query in enumerate(batch):
            query.target_id = int(top[j])
            query.target_token = tokenizer.decode([query.target_id])
            query.target_prob = float(probs[j, query.target_id])
            query.extra["greedy"] = None if greedy is None else greedy[j]
        if progress is not None:
            progress.update(len(batch))


#: bump when what :func:`_score` computes changes (old cached selections are then ignored)
SELECTION_VERSION = 1


def known_queries(model, tokenizer, facts: Sequence[dict], facts_sha256: str, *, filter: str = "greedy",
                  start=None, batch_size: int = 32, max_new_tokens: int = 8, progress=None,
                  cache_dir: str | None = None) -> tuple[list[FactQuery], str]:
    """:func:`prepare_queries` with the model's answers to every fact cached on disk, so that the recall tools
    run on one model pay for the filter once. Returns ``(queries, how)``, ``how`` being ``"cached"`` (read)
    or ``"computed"`` (computed and written).

    The cache file is named by a hash of everything the answers depend on: the model's config and weights
    fingerprints and dtype, the tokenizer fingerprint, the facts file's content, the filter, the start token,
    ``max_new_tokens`` and :data:`SELECTION_VERSION`; a change to any of them misses the cache (the stored
    key is compared in full on reading). ``cache_dir`` defaults to ``{cache_root}/known_facts`` (see
    :func:`huggingface_patch.bundled.cache_root`).
    """
    import hashlib

    from ..bundled import cache_root
    from ..files import write_text
    from ..records import config_fingerprint, tokenizer_fingerprint, weights_fingerprint

    key = json.dumps({"weights": weights_fingerprint(model), "config": config_fingerprint(model.config),
                      "dtype": str(next(model.parameters()).dtype), "tokenizer": tokenizer_fingerprint(tokenizer),
                      "facts": facts_sha256, "filter": filter, "start": None if start is None else start.describe(),
                      "max_new_tokens": max_new_tokens, "version": SELECTION_VERSION}, sort_keys=True)
    folder = cache_dir or os.path.join(cache_root(), "known_facts")
    path = os.path.join(folder, hashlib.sha256(key.encode()).hexdigest()[:32] + ".json")
    queries = build_queries(tokenizer, facts, start=start)
    answers = None
    if os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as handle:
                stored = json.load(handle)
            if stored.get("key") == key and len(stored["answers"]) == len(queries):
                answers = stored["answers"]
        except (OSError, ValueError, KeyError, TypeError):
            answers = None  # unreadable: computed again and rewritten
    how = "cached"
    if answers is None:
        _score(model, tokenizer, queries, filter, batch_size, max_new_tokens, progress)
        answers = [[q.target_id, q.target_token, q.target_prob, q.extra["greedy"]] for q in queries]
        os.makedirs(folder, exist_ok=True)
        write_text(json.dumps({"key": key, "answers": answers}), path)
        how = "computed"
    elif progress is not None:
        progress.update(len(queries))
    for query, (target_id, token, prob, greedy) in zip(queries, answers):
        query.target_id, query.target_token, query.target_prob = int(target_id), token, float(prob)
        query.extra["greedy"] = greedy
    return [q for q in queries if _is_known(filter, q.attribute, q.target_token, q.extra["greedy"])], how
