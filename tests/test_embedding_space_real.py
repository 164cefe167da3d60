"""Embedding-space projections on the real SmolLM2-135M (Llama family, GQA 9/3 heads, tied embeddings)."""

from __future__ import annotations

import time

import pytest
import torch
from helpers import assert_close_rel

from huggingface_patch.architectures import model_parts
from huggingface_patch.embedding_space import (
    TokenFilter,
    embedding_matrix,
    head_weights,
    neuron_top_tokens,
    num_heads,
    top_head_pairs,
    vocabulary,
)
from huggingface_patch.embedding_space.align import parameter_alignment

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def real(smollm2):
    """Real."""
    model, tokenizer = smollm2
    return model, tokenizer, vocabulary(tokenizer, model.get_output_embeddings().weight.shape[0])


def test_vocabulary_and_embedding(real):
    """Vocabulary and embedding."""
    model, tokenizer, vocab = real
    assert vocab.style == "byte-bpe" and len(vocab) == 49152
    the = tokenizer.convert_tokens_to_ids("Ġthe")
    assert vocab.display(the) == "the"
    assert embedding_matrix(model).shape == (576, 49152)


def test_head_weights_reproduce_real_attention_output(real):
    """Σ_h P_h (x W_V,h + b) W_O,h equals the real module's output (9 query heads over 3 kv heads)."""
    model, tokenizer, _ = real
    layer = 4
    attn = model_parts(model).layers[layer].attention
    seen = {}
    def pre(module, args, kwargs):
        seen["x"] = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]

    handles = [attn.register_forward_pre_hook(pre, with_kwargs=True),
               attn.register_forward_hook(lambda m, a, o: seen.update(out=o[0], probs=o[1]))]
    ids = tokenizer("The capital of France is Paris.", return_tensors="pt").input_ids
    with torch.no_grad():
        model(input_ids=ids)
    for h in handles:
        h.remove()
    total = torch.zeros_like(seen["out"][0])
    for head in range(num_heads(model, layer)):
        w = head_weights(model, layer, head)
        assert w.kv_head == head // 3
        total += seen["probs"][0, head] @ w.value(seen["x"][0]) @ w.output.weight
    assert_close_rel(total, seen["out"][0], 1e-4, "SmolLM2: Σ_h P_h x W_V,h W_O,h vs attention output")


def test_top_pairs_on_frequent_tokens_are_quick_and_in_range(real):
    """Top pairs on frequent tokens are quick and in range."""
    model, _, vocab = real
    start = time.perf_counter()
    frequent = TokenFilter(only_ascii=True, only_alnum=True, max_id=4000)
    result = top_head_pairs(model, vocab, 26, 6, "vo", token_filter=frequent, min_k=100, max_k=5000, th0=1.0)
    assert 100 <= len(result.entries) <= 5000
    assert time.perf_counter() - start < 45
    rows = result.rows(vocab, 20)
    assert all(r["source_token"].lstrip("#").isalnum() and r["target_token"].lstrip("#").isalnum() for r in rows)


def test_a_known_neuron_reads_temperature(real):
    """Layer 25, neuron 11: its gate row reads 'temperature' (found by browsing; a regression check)."""
    model, _, vocab = real
    allowed = TokenFilter(only_ascii=True, only_alnum=True).allowed(vocab)
    tops = neuron_top_tokens(model, 25, 11, 10, allowed=allowed)
    assert set(tops) == {"gate", "up", "value"}
    gate = [vocab.display(int(i)).lower() for i in tops["gate"][0]]
    assert "temperature" in gate[:3], gate


def test_alignment_runs_on_the_real_model(real):
    """Alignment runs on the real model."""
    model, tokenizer, _ = real
    texts = ["The capital of France is Paris, and the capital of Italy is Rome."]
    result = parameter_alignment(model, tokenizer, texts, layers=[10, 25], k_tokens=50, max_positions=12)
    assert len(result.rows) == 6 and result.positions == 12
    assert all(0 <= r["recall"] <= 1 and 0 <= r["baseline"] <= 1 for r in result.rows)
