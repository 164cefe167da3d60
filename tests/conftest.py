"""Shared fixtures: tiny random models of every family, the fixture folders, and the real SmolLM2 model."""

from __future__ import annotations

import os

import pytest
import torch

from huggingface_patch.testing import TINY_KINDS, build_tiny_model

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures")
REPO = os.path.dirname(HERE)


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


@pytest.fixture(scope="session")
def smollm2():
    """``(model, tokenizer)`` of the real SmolLM2-135M (decomposing class, fp32, eager), loaded once."""
    try:
        from huggingface_patch.loading import load_model_and_tokenizer, smollm2_folder

        smollm2_folder()
    except Exception as exc:  # pragma: no cover - only when the package is missing
        pytest.skip(f"SmolLM2 unavailable: {exc}")
    torch.manual_seed(0)
    model, tokenizer, _ = load_model_and_tokenizer("smollm2-135m", dtype="float32")
    return model, tokenizer
