"""What the faithfulness benchmark attributes: one target per item, the same items for every method.

An :class:`Item` is a short input ``ids`` (the start token first, then the context), whose last position
``t`` predicts ``answer``; its sources are the context positions ``1 .. t`` (the start token is never a
source: removing it changes what every position computes), or the last ``window`` of them
(``first_source``). A contrastive item also has a ``foil``: the
quantity attributed is then ``log p(answer) - log p(foil)``. Known-answer items name the ``right`` source
positions (any of them counts).

* :func:`corpus_items`: random targets from a text (seeded; the cluster is the document);
* :func:`ioi_items`: indirect-object identification, "When Mary and John went to the store, John gave a drink
  to" -> " Mary" (the right sources: the first mention of the indirect object);
* :func:`agreement_items`: subject-verb agreement across an attractor, "The keys to the cabinet" -> " are"
  vs " is" (the right sources: the subject noun).

Templates, names and nouns are written here (no download); every random choice is seeded.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Item:
    """``ids`` ``(T,)``; the target is the last position ``T - 1``; ``right``: the known-answer sources."""

    ids: list[int]
    answer: int
    task: str
    cluster: object
    foil: int | None = None
    right: list[int] = field(default_factory=list)
    text: str = ""
    first_source: int = 1
    tokens: list[str] = field(default_factory=list)
    answer_text: str = ""
    foil_text: str = ""

    @property
    def target(self) -> int:
        return len(self.ids) - 1

    @property
    def sources(self) -> list[int]:
        """The attributed positions ``first_source .. t`` (default 1: every one but the start token)."""
        return list(range(self.first_source, len(self.ids)))


def with_texts(items: list[Item], tokenizer) -> list[Item]:
    """Fill each item's readable ``tokens``, ``answer_text``, ``foil_text`` and ``text`` (in place)."""
    from ..tokens import token_texts

    for item in items:
        item.tokens = token_texts(tokenizer, item.ids)
        item.answer_text = token_texts(tokenizer, [item.answer])[0]
        item.foil_text = "" if item.foil is None else token_texts(tokenizer, [item.foil])[0]
        item.text = item.text or "".join(item.tokens[1:])
    return items


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def corpus_items(tokenizer, documents: list[str], start, count: int, context: int = 24, seed: int = 0) -> list[Item]:
    """``count`` random targets of ``documents``, each with up to ``context`` tokens before it (the start token
    first); every position with a next token and at least 4 tokens of context can be drawn."""
    rng = random.Random(seed)
    candidates = []
    encoded = [_encode(tokenizer, d) for d in documents]
    for doc, ids in enumerate(encoded):
        for position in range(4, len(ids) - 1):
            candidates.append((doc, position))
    rng.shuffle(candidates)
    items = []
    for doc, position in sorted(candidates[:count]):
        ids = encoded[doc][max(0, position - context + 1) : position + 1]
        items.append(Item(start.prepend(ids), encoded[doc][position + 1], "corpus", doc))
    return items


NAMES = ("Mary", "John", "Anna", "Peter", "Sarah", "David", "Laura", "James", "Emma", "Tom", "Lucy", "Paul",
         "Kate", "Mark", "Alice", "Robert", "Susan", "Michael", "Helen", "George")
PLACES = ("store", "park", "school", "office", "garden", "station", "market", "library", "beach", "museum")
OBJECTS = ("drink", "book", "letter", "ball", "ring", "bag", "hat", "key", "gift", "cake")
TEMPLATES = ("When {A} and {B} went to the {place}, {B} gave a {object} to",
             "After {A} and {B} arrived at the {place}, {B} handed a {object} to",
             "While {A} and {B} were at the {place}, {B} passed a {object} to")


def _first_token(tokenizer, word: str) -> int:
    return _encode(tokenizer, " " + word)[0]


def _span(offsets, start: int, end: int) -> list[int]:
    """Token positions whose characters overlap ``[start, end)``."""
    return [i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > start]


def _with_offsets(tokenizer, text: str, start) -> tuple[list[int], list[tuple[int, int]]]:
    from ..recall.queries import encode_prompt

    return encode_prompt(tokenizer, text, start.id)


#: random draws a generator makes at most: a task with fewer distinct texts than asked for (agreement has
#: 12 x 8 x 6 x 2 = 1,152) returns every one it found instead of drawing repeats for ever
MAX_DRAWS = 100_000


def ioi_items(tokenizer, start, count: int = 200, seed: int = 0) -> list[Item]:
    """Indirect-object identification items (before the model's own answer is checked): the answer is the
    first token of `` {A}``, the foil that of `` {B}``; the right sources are the tokens of the first mention
    of ``A``. The cluster is the template."""
    rng = random.Random(seed)
    items = []
    seen = set()
    for _ in range(MAX_DRAWS):
        if len(items) == count:
            break
        a, b = rng.sample(NAMES, 2)
        template = rng.randrange(len(TEMPLATES))
        text = TEMPLATES[template].format(A=a, B=b, place=rng.choice(PLACES), object=rng.choice(OBJECTS))
        if text in seen:
            continue
        seen.add(text)
        ids, offsets = _with_offsets(tokenizer, text, start)
        where = text.index(a)
        right = _span(offsets, where, where + len(a))
        answer, foil = _first_token(tokenizer, a), _first_token(tokenizer, b)
        if answer == foil or not right:
            continue
        items.append(Item(ids, answer, "ioi", template, foil=foil, right=right, text=text))
    return items


PLURALS = (("keys", "key"), ("books", "book"), ("cars", "car"), ("dogs", "dog"), ("doctors", "doctor"),
           ("teachers", "teacher"), ("windows", "window"), ("letters", "letter"), ("friends", "friend"),
           ("flowers", "flower"), ("pictures", "picture"), ("songs", "song"))
ATTRACTORS = (("cabinet", "cabinets"), ("table", "tables"), ("house", "houses"), ("garden", "gardens"),
              ("school", "schools"), ("village", "villages"), ("box", "boxes"), ("office", "offices"))
PREPOSITIONS = ("to", "near", "behind", "in", "beside", "from")


def agreement_items(tokenizer, start, count: int = 200, seed: int = 0) -> list[Item]:
    """Subject-verb agreement across an attractor of the other number: "The keys to the cabinet" -> " are"
    (foil " is"), "The key to the cabinets" -> " is" (foil " are"); the right sources are the subject noun's
    tokens. The cluster is the subject noun."""
    rng = random.Random(seed)
    are, is_ = _first_token(tokenizer, "are"), _first_token(tokenizer, "is")
    if are == is_:
        return []  # the tokenizer splits " are" and " is" into pieces with one first token: no contrast
    items, seen = [], set()
    for _ in range(MAX_DRAWS):
        if len(items) == count:
            break
        plural, singular = rng.choice(PLURALS)
        attract_sg, attract_pl = rng.choice(ATTRACTORS)
        preposition = rng.choice(PREPOSITIONS)
        subject_plural = rng.random() < 0.5
        subject = plural if subject_plural else singular
        attractor = attract_sg if subject_plural else attract_pl
        text = f"The {subject} {preposition} the {attractor}"
        if text in seen:
            continue
        seen.add(text)
        ids, offsets = _with_offsets(tokenizer, text, start)
        where = text.index(subject, 4)
        right = _span(offsets, where, where + len(subject))
        answer, foil = (are, is_) if subject_plural else (is_, are)
        items.append(Item(ids, answer, "agreement", singular, foil=foil, right=right, text=text))
    return items


def model_gets_right(model, item: Item) -> bool:
    """Whether the model prefers the known answer: ``logit(answer) > logit(foil)``, and for IOI also the answer
    its top next token."""
    import torch

    with torch.no_grad():
        ids = torch.tensor([item.ids], device=next(model.parameters()).device)
        logits = model(input_ids=ids, use_cache=False, logits_to_keep=1).logits[0, -1]
    if item.foil is not None and not logits[item.answer] > logits[item.foil]:
        return False
    return item.task != "ioi" or int(logits.argmax()) == item.answer


#: the known-answer tasks and their generators
TASKS = {"ioi": ioi_items, "agreement": agreement_items}


def known_answer_items(model, tokenizer, start, task: str, count: int, seed: int = 0,
                       candidates: int | None = None) -> tuple[list[Item], int]:
    """The first ``count`` items of ``task`` (in the generator's seeded order) that the model gets right, and
    how many candidates were tried to find them (at most ``candidates``, default ``10 * count``)."""
    pool = TASKS[task](tokenizer, start, count=candidates or 10 * count, seed=seed)
    kept, tried = [], 0
    for item in pool:
        if len(kept) == count:
            break
        tried += 1
        if model_gets_right(model, item):
            kept.append(item)
    return kept, tried
