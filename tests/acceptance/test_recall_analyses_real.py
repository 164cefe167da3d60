"""Factual recall on SmolLM2-135M: it knows the facts, knockout and extraction run (marked ``real_model``;
the tiny-model tests are in ``tests/unit/test_recall_analyses.py``)."""

from __future__ import annotations

import pytest

from huggingface_patch.architectures import model_parts
from huggingface_patch.recall.extraction import attribute_extraction
from huggingface_patch.recall.knockout import attention_knockout
from huggingface_patch.recall.queries import prepare_queries


@pytest.mark.real_model
def test_smollm2_knows_france_and_knockout_runs(smollm2):
    model, tokenizer = smollm2
    facts = [{"subject": "France", "prompt": "The capital of France is", "attribute": "Paris"},
             {"subject": "Vinson Massif", "prompt": "Vinson Massif is located in the continent of",
              "attribute": "Antarctica"}]
    queries = prepare_queries(model, tokenizer, facts, filter="greedy")
    assert queries and queries[0].target_token.strip() == "Paris"
    records = attention_knockout(model, queries[:1], window=9)
    assert len(records) == 3 * len(model_parts(model).layers)
    assert all(r["p_base"] > 0.1 for r in records)


@pytest.mark.real_model
def test_smollm2_extraction_quick(smollm2):
    model, tokenizer = smollm2
    facts = [{"subject": "France", "prompt": "The capital of France is", "attribute": "Paris"}]
    queries = prepare_queries(model, tokenizer, facts, filter="none")
    records = attribute_extraction(model, tokenizer, queries)
    assert len(records) == 2 * len(model_parts(model).layers)
