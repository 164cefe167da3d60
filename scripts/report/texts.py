"""The texts the reproduction runs on, written once into ``{work}/texts/`` (deterministic, atomic): the
completed known_1000 facts, the saturation text (the essays, then the facts) and a shorter essay file."""

from __future__ import annotations

import json
import os

from .paths import REPO

DATA = os.path.join(REPO, "huggingface_patch", "data")
ESSAYS = os.path.join(REPO, "examples", "essays.sentitems")


def facts_corpus(work: str) -> str:
    """``{work}/texts/facts.sentitems``: every known_1000 prompt completed with its dataset attribute, one
    article each (the saturation analyses' second text, next to the essays)."""
    path = os.path.join(work, "texts", "facts.sentitems")
    if not os.path.isfile(path):
        with open(os.path.join(DATA, "known_1000.json"), encoding="utf-8") as handle:
            facts = json.load(handle)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        lines = [f"!ARTICLE\n{fact['prompt'].strip()} {fact['attribute'].strip()}.\n" for fact in facts]
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write("".join(lines))
        os.replace(tmp, path)
    return path


def saturation_corpus(work: str) -> str:
    """``{work}/texts/saturation.sentitems``: the essays followed by the completed facts."""
    path = os.path.join(work, "texts", "saturation.sentitems")
    if not os.path.isfile(path):
        facts = facts_corpus(work)
        with open(ESSAYS, encoding="utf-8") as a, open(facts, encoding="utf-8") as b:
            text = a.read().rstrip("\n") + "\n" + b.read()
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    return path


def essays_corpus(work: str, count: int | None) -> str:
    """The essays, or ``{work}/texts/essays{count}.sentitems``: only the first ``count`` of them."""
    if not count:
        return ESSAYS
    path = os.path.join(work, "texts", f"essays{count}.sentitems")
    if not os.path.isfile(path):
        with open(ESSAYS, encoding="utf-8") as handle:
            articles = handle.read().split("!ARTICLE\n")[1:]
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w", encoding="utf-8") as handle:
            handle.write("".join("!ARTICLE\n" + a for a in articles[:count]))
        os.replace(path + ".tmp", path)
    return path
