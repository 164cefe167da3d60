"""The recall interventions that reuse a clean pass (a key/value cache of the prefix, or the blocks' own
call arguments) give the numbers of running the whole model once per item, on every tiny family: those
whole-model runs are computed here, independently, from the interventions' definitions."""

from __future__ import annotations

import pytest
import torch

from huggingface_patch.architectures import model_parts
from huggingface_patch.layer_states import project_to_vocab, record_residual_stream
from huggingface_patch.recall.interventions import block_attention_edges, edge_mask, knockout_attention, knockout_mlp
from huggingface_patch.recall.knockout import attention_knockout, knockout_positions, layer_window
from huggingface_patch.recall.queries import prepare_queries
from huggingface_patch.testing import TINY_KINDS, build_tiny_model, tokenizer_folder

FACTS = [
    {"subject": "Vinson Massif", "prompt": "Vinson Massif is in", "attribute": ""},
    {"subject": "Nokia", "prompt": "In Nokia, people speak", "attribute": ""},
    {"subject": "Iron", "prompt": "Iron is a", "attribute": ""},
]
#: relative tolerance of a probability recomputed along another path (float32 round-off)
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_folder())


@pytest.fixture(scope="module", params=list(TINY_KINDS))
def setup(request, tokenizer):
    model = build_tiny_model(request.param, decomposed=False)
    return model, prepare_queries(model, tokenizer, FACTS, filter="none")


def whole_model_knockout(model, query, name: str, layer: int, window: int) -> float:
    """p(target) with the edges from the last position to set ``name`` blocked in the window's layers,
    the whole prompt run through the whole model."""
    L = len(model_parts(model).layers)
    ids = torch.tensor([query.input_ids])
    edges = edge_mask(len(query.input_ids), [knockout_positions(name, query)])
    blocked = {index: edges for index in layer_window(layer, L, window)}
    with torch.no_grad(), block_attention_edges(model, blocked):
        logits = model(input_ids=ids, use_cache=False).logits[0, -1]
    return float(torch.softmax(logits.float(), -1)[query.target_id])


def test_cached_attention_knockout_equals_the_whole_model(setup):
    model, queries = setup
    records = attention_knockout(model, queries, window=3, max_rows=7)
    L = len(model_parts(model).layers)
    assert len(records) == 3 * 3 * L
    worst = 0.0
    for r in records:
        query = next(q for q in queries if q.index == r["index"])
        expected = whole_model_knockout(model, query, r["set"], r["layer"], 3)
        worst = max(worst, abs(r["p_new"] - expected) / max(expected, 1e-12))
    assert worst < TOLERANCE, f"largest relative difference {worst:.2e}"


def whole_model_patched_rank(model, query, name: str, source: int, layer: int) -> int:
    """The attention-extraction rank at block ``layer`` with its input patched at set ``name`` by the output of
    block ``source``, the whole prompt run through the whole model."""
    from huggingface_patch.layer_states import residual_states
    from huggingface_patch.recall.extraction import sublayer_extraction_ranks
    from huggingface_patch.recall.interventions import patch_layer_input

    ids = torch.tensor([query.input_ids])
    states, _ = residual_states(model, ids)
    with patch_layer_input(model, layer, states[source + 1], query.positions(name)):
        rank = sublayer_extraction_ranks(model, ids, torch.tensor([query.target_id]))["attention"][0]
    return int(rank[layer, 0])


def test_replayed_patching_equals_the_whole_model(setup):
    from huggingface_patch.recall.patching import patching_extraction

    model, queries = setup
    records = patching_extraction(model, queries, sources=[-1, 0], max_rows=5)
    patched = [r for r in records if r["set"] != "none"]
    assert patched
    for r in patched:
        query = next(q for q in queries if q.index == r["index"])
        assert r["rank"] == whole_model_patched_rank(model, query, r["set"], r["source_layer"], r["layer"]), r


def whole_model_sublayer_value(model, query, kind: str, layers, measure: int, position: int) -> float:
    """p(target) read from the state after block ``measure`` at ``position`` (no final norm) with the
    ``kind`` sublayer of ``layers`` knocked out at every position, the whole prompt through the whole model."""
    ids = torch.tensor([query.input_ids])
    if kind == "mlp":
        context = knockout_mlp(model, layers)
    else:
        context = knockout_attention(model, layers, mode=kind.split("-", 1)[1])
    with torch.no_grad(), context, record_residual_stream(model) as states:
        model(input_ids=ids, use_cache=False)
        hidden = states[measure + 1][0, position]
    logits = project_to_vocab(model, hidden, apply_final_norm=False).float()
    return float(torch.softmax(logits, -1)[query.target_id])


def test_replayed_sublayer_knockout_equals_the_whole_model(setup, tokenizer):
    from huggingface_patch.recall.sublayer import knockout_window, sublayer_knockout

    model, queries = setup
    L = len(model_parts(model).layers)
    m = L - 1
    records = sublayer_knockout(model, tokenizer, queries, measure_layer=m, window=2, max_rows=4)
    worst = 0.0
    for r in records:
        query = next(q for q in queries if q.index == r["index"])
        layers = list(knockout_window(r["start"], 2, m)) if r["kind"] != "none" else []
        expected = whole_model_sublayer_value(model, query, r["kind"] if layers else "mlp", layers, m,
                                              query.positions("subject-last")[0])
        worst = max(worst, abs(r["value"] - expected) / max(expected, 1e-12))
    assert worst < TOLERANCE, f"largest relative difference {worst:.2e}"


@pytest.mark.parametrize("final_norm", [False, True])
def test_blockwise_rank_and_top_equal_the_full_logits(setup, final_norm):
    from huggingface_patch.layer_states import rank_and_top

    model, _ = setup
    states = torch.randn(3, 4, model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([[5, 17, 100, 259]])
    logits = project_to_vocab(model, states, apply_final_norm=final_norm).float()
    rank, score, top = rank_and_top(model, states, targets, 7, final_norm, vocab_block=50)
    expected_score = logits.gather(-1, targets.expand(3, 4)[..., None])[..., 0]
    assert torch.allclose(score, expected_score, atol=1e-5)
    assert torch.equal(rank, (logits > expected_score[..., None]).sum(-1))
    assert torch.equal(top, logits.topk(7, dim=-1).indices)


def test_rank_only_readout_gives_the_same_ranks(setup):
    from huggingface_patch.layer_states import rank_and_top

    model, _ = setup
    states = torch.randn(5, model.config.hidden_size, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([3, 9, 44, 120, 250])
    full = rank_and_top(model, states, targets, 4, True, vocab_block=64)
    bare = rank_and_top(model, states, targets, 0, True, vocab_block=64, logsumexp=False)
    assert torch.equal(bare.rank, full.rank), f"ranks {bare.rank.tolist()} vs {full.rank.tolist()}"
    assert bare.top is None and bare.logsumexp is None
