"""Embedding-space projections on the real SmolLM2-135M (Llama family, GQA 9/3 heads, tied embeddings)."""

from __future__ import annotations

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
    model, tokenizer = smollm2
    return model, tokenizer, vocabulary(tokenizer, model.get_output_embeddings().weight.shape[0])


def test_vocabulary_and_embedding(real):
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


def test_top_pairs_are_the_largest_entries_of_the_head_map(real):
    """The pairs returned for layer 26, head 6 of ``Eᵀ W_VO E`` (frequent alphanumeric tokens) are the largest
    entries of that matrix: each value is its entry recomputed from E and the head's weights, the values are
    sorted, and no allowed pair left out is larger than the smallest returned one (checked on a sample)."""
    model, _, vocab = real
    frequent = TokenFilter(only_ascii=True, only_alnum=True, max_id=4000)
    result = top_head_pairs(model, vocab, 26, 6, "vo", token_filter=frequent, min_k=100, max_k=5000, th0=1.0,
                            pair_exclusion="identical")
    entries = result.entries
    assert 100 <= len(entries) <= 5000
    torch.set_grad_enabled(False)
    e = embedding_matrix(model).float()
    w = head_weights(model, 26, 6)
    rows, cols = entries.rows[:200].long(), entries.cols[:200].long()
    recomputed = ((e[:, rows].t() @ w.value.weight.float()) @ w.output.weight.float() * e[:, cols].t()).sum(-1)
    assert_close_rel(entries.values[:200], recomputed, 1e-4, "pair values vs E^T W_VO E")
    assert torch.all(entries.values[:-1] >= entries.values[1:]), "pairs are not sorted by value"
    allowed = frequent.allowed(vocab).nonzero().squeeze(1)
    gen = torch.Generator().manual_seed(0)
    sample_rows = allowed[torch.randint(len(allowed), (64,), generator=gen)]
    block = (e[:, sample_rows].t() @ w.value.weight.float()) @ w.output.weight.float() @ e[:, allowed]
    chosen = set(zip(entries.rows.tolist(), entries.cols.tolist()))
    smallest = float(entries.values.min())
    for a, i in enumerate(sample_rows.tolist()):
        for b, j in enumerate(allowed.tolist()):
            if (i, j) not in chosen and i != j:
                assert float(block[a, b]) <= smallest + 1e-4, f"pair ({i}, {j}) is larger than a returned one"
    torch.set_grad_enabled(True)
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


def test_alignment_equals_its_definition_on_the_real_model(real):
    """Recall at one position, recomputed from the definition: A = the union of the top-k tokens of the five
    most activated neurons' values, B = the top-k tokens of final_norm(h_l); recall = |A ∩ B| / k."""
    from huggingface_patch.embedding_space import ff_matrices
    from huggingface_patch.embedding_space.align import collect_activations

    model, tokenizer, _ = real
    texts = ["The capital of France is Paris, and the capital of Italy is Rome."]
    acts = collect_activations(model, tokenizer, texts, n_neurons=5, max_positions=1)
    result = parameter_alignment(model, tokenizer, texts, layers=[25], k_tokens=50, activations=acts)
    e = embedding_matrix(model).float()
    hidden = model_parts(model).final_norm(acts.states[26].to(torch.float32)).float()[0]
    b = set((hidden @ e).topk(50).indices.tolist())
    values = ff_matrices(model, 25)["value"].float()
    a = set()
    for neuron in acts.top_neurons[25][0].tolist():
        a |= set((values[neuron] @ e).topk(50).indices.tolist())
    row = next(r for r in result.rows if r["part"] == "value")
    assert row["recall"] == pytest.approx(len(a & b) / 50, abs=1e-5)
    assert 0 < row["recall"] <= 1


def test_gemma_unused_slots_are_special():
    """Gemma 3's tokenizer flags its ``<unusedN>`` slots special without listing them in ``all_special_ids``;
    the vocabulary must still treat them as special, so that no filter lets them through by default."""
    from huggingface_patch.loading import load_tokenizer

    tokenizer = load_tokenizer("gemma3-270m")
    vocab = vocabulary(tokenizer, 262144)
    unused = [tokenizer.convert_tokens_to_ids(f"<unused{n}>") for n in (0, 1640, 2041)]
    assert all(vocab.special[i] for i in unused), [vocab.display(i) for i in unused if not vocab.special[i]]
    kept = TokenFilter(only_ascii=True).allowed(vocab)
    assert not kept[unused].any() and kept[tokenizer.convert_tokens_to_ids("▁Paris")]
