"""Shared fixtures: tiny random models of every family, the fixture folders, and the real SmolLM2 model."""

from __future__ import annotations

import os
import sys

import pytest
import torch

from huggingface_patch.testing import TINY_KINDS, build_tiny_model

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures")
REPO = os.path.dirname(HERE)
# the tiers (unit/, integration/, acceptance/) import the shared helpers of this folder by name
if HERE not in sys.path:
    sys.path.insert(0, HERE)


@pytest.fixture(scope="session")
def fixtures_dir() -> str:
    return FIXTURES


@pytest.fixture(scope="session")
def example_corpus() -> str:
    return os.path.join(REPO, "examples", "corpus.sentitems")


@pytest.fixture(params=TINY_KINDS)
def tiny_kind(request) -> str:
    return request.param


@pytest.fixture
def tiny_model(tiny_kind):
    """A decomposing tiny random model of each family in turn (fp32, eager attention)."""
    return build_tiny_model(tiny_kind)


def _real_model(name: str):
    """A bundled real model, loaded once (decomposing class, fp32, eager). A missing package fails the test:
    CI installs both packages, so a skip here would hide a broken set-up."""
    from huggingface_patch.loading import load_model_and_tokenizer

    torch.manual_seed(0)
    model, tokenizer, _ = load_model_and_tokenizer(name, dtype="float32")
    return model, tokenizer


@pytest.fixture(scope="session")
def smollm2():
    """``(model, tokenizer)`` of the real SmolLM2-135M-Instruct."""
    return _real_model("smollm2-135m")


@pytest.fixture(scope="session")
def gemma3():
    """``(model, tokenizer)`` of the real Gemma 3 270M (base)."""
    return _real_model("gemma3-270m")


#: the order the tiers run in: quick feedback first, the real models and the browser last
TIER_ORDER = ("unit", "integration", "acceptance")


def pytest_collection_modifyitems(items):
    """Run ``tests/unit`` first, then ``tests/integration``, then ``tests/acceptance`` (alphabetical order would
    put the slowest tier first), each tier in its files' own order."""
    def tier(item) -> int:
        parts = os.path.relpath(str(item.fspath), HERE).split(os.sep)
        return TIER_ORDER.index(parts[0]) if parts[0] in TIER_ORDER else len(TIER_ORDER)

    items.sort(key=tier)  # a stable sort: the order inside a tier is unchanged
