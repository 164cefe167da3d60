"""Interventions of the recall analyses on tiny random models of every family: exact restoration (also on
error), no-op blocking, subject independence under full knockout, and the attention knockout modes."""

from __future__ import annotations

import copy

import pytest
import torch

from huggingface_patch.architectures import model_parts
from huggingface_patch.compat import eager_attention, layer_output_tensor
from huggingface_patch.recall.interventions import (
    block_attention_edges,
    edge_mask,
    knockout_attention,
    knockout_mlp,
    patch_layer_input,
    record_sublayer_outputs,
)
from huggingface_patch.testing import TINY_KINDS, build_tiny_model

FAMILIES = TINY_KINDS
IDS = torch.tensor([[40, 71, 83, 90, 101, 36, 120, 55, 77, 64], [41, 72, 84, 91, 102, 37, 121, 56, 78, 65]])
SUBJECT = (2, 5)  # token positions [2, 5)


@pytest.fixture(scope="module", params=FAMILIES)
def model(request):
    return build_tiny_model(request.param, decomposed=False)


def logits(model, ids=IDS):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def max_diff(a, b) -> float:
    return float((a - b).abs().max())


def hook_count(model) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


def all_interventions(model):
    L = len(model_parts(model).layers)
    T = IDS.shape[1]
    # keys just before the last position: inside every sliding window (Starcoder2 slides in every layer)
    blocked = {layer: edge_mask(T, [[T - 4, T - 3, T - 2]] * IDS.shape[0]) for layer in range(L)}
    source = torch.randn(IDS.shape[0], T, model.config.hidden_size)
    return {
        "edges": lambda: block_attention_edges(model, blocked),
        "mlp": lambda: knockout_mlp(model, range(L)),
        "attention-uniform": lambda: knockout_attention(model, range(L), mode="uniform"),
        "attention-zero": lambda: knockout_attention(model, range(L), mode="zero"),
        "patch": lambda: patch_layer_input(model, 1, source, [0, 3]),
        "record": lambda: record_sublayer_outputs(model),
    }


def test_interventions_change_then_restore_exactly(model):
    before = logits(model)
    hooks = hook_count(model)
    for name, make in all_interventions(model).items():
        with make():
            during = logits(model)
        if name != "record":
            assert not torch.allclose(during, before), f"{name} had no effect"
        after = logits(model)
        assert torch.equal(after, before), f"{name}: max diff {(after - before).abs().max():.3g}"
        assert hook_count(model) == hooks
        assert model.config._attn_implementation == "eager"


def test_interventions_restore_on_error(model):
    before = logits(model)
    hooks = hook_count(model)
    for name, make in all_interventions(model).items():
        with pytest.raises(RuntimeError, match="boom"):
            with make():
                logits(model)
                raise RuntimeError("boom")
        assert hook_count(model) == hooks, name
        assert torch.equal(logits(model), before), name


def test_blocking_nothing_changes_nothing(model):
    L = len(model_parts(model).layers)
    T = IDS.shape[1]
    nothing = {layer: torch.zeros(IDS.shape[0], T, T, dtype=torch.bool) for layer in range(L)}
    before = logits(model)
    with block_attention_edges(model, nothing):
        during = logits(model)
    assert torch.equal(during, before), f"max diff {(during - before).abs().max():.3g}"
    with knockout_mlp(model, []), knockout_attention(model, [], mode="uniform"):
        assert torch.equal(logits(model), before)


def _with_new_subject(ids: torch.Tensor) -> torch.Tensor:
    other = ids.clone()
    other[:, SUBJECT[0]:SUBJECT[1]] = torch.tensor([150, 160, 170])
    return other


def test_knocking_out_every_edge_to_the_subject_makes_output_subject_independent(model):
    # in float64: a mixture-of-experts block runs each expert on the rows routed to it together, so another
    # subject changes the other rows' float32 round-off (not their values)
    model = copy.deepcopy(model).double()
    L = len(model_parts(model).layers)
    T = IDS.shape[1]
    subject = list(range(*SUBJECT))
    later = list(range(SUBJECT[1], T))  # every position after the subject
    full = edge_mask(T, [subject] * IDS.shape[0], query=later)
    changed = _with_new_subject(IDS)
    # control: without the knockout the subject matters (so the test can fail)
    assert max_diff(logits(model, IDS)[:, -1], logits(model, changed)[:, -1]) > 1e-8
    # control: blocking only last -> subject is not enough (information flows through later positions)
    only_last = {layer: edge_mask(T, [subject] * IDS.shape[0]) for layer in range(L)}
    with block_attention_edges(model, only_last):
        partial_a, partial_b = logits(model, IDS)[:, -1], logits(model, changed)[:, -1]
    assert max_diff(partial_a, partial_b) > 1e-8
    with block_attention_edges(model, {layer: full for layer in range(L)}):
        a, b = logits(model, IDS), logits(model, changed)
    assert max_diff(a[:, SUBJECT[1]:], b[:, SUBJECT[1]:]) <= 1e-9  # every later position, the last included
    assert max_diff(a[:, : SUBJECT[0]], b[:, : SUBJECT[0]]) <= 1e-9  # before the subject
    assert max_diff(a[:, SUBJECT[0]], b[:, SUBJECT[0]]) > 1e-8  # the subject itself changes


def test_per_row_masks_match_single_rows(model):
    L = len(model_parts(model).layers)
    T = IDS.shape[1]
    rows = [[2, 3, 4], [0, 1]]
    with block_attention_edges(model, {layer: edge_mask(T, rows) for layer in range(L)}):
        both = logits(model)[:, -1]
    for r in range(2):
        with block_attention_edges(model, {layer: edge_mask(T, [rows[r]]) for layer in range(L)}):
            single = logits(model, IDS[r : r + 1])[:, -1]
        torch.testing.assert_close(both[r : r + 1], single, rtol=1e-5, atol=1e-5)


def test_uniform_quirk_gives_uniform_attention_over_the_causal_prefix(model):
    """Uniform over every key the layer may attend to: the causal prefix, cut to the sliding window where the
    layer has one (Gemma)."""
    with eager_attention(model), torch.no_grad():
        allowed = model(input_ids=IDS, use_cache=False, output_attentions=True).attentions[0] > 0
    with knockout_attention(model, [0], mode="uniform"), torch.no_grad():
        out = model(input_ids=IDS, use_cache=False, output_attentions=True)
    probs = out.attentions[0]  # (B, heads, T, T)
    T = IDS.shape[1]
    if (getattr(model.config, "sliding_window", None) or T) >= T:
        assert torch.equal(allowed[0, 0], torch.tril(torch.ones(T, T, dtype=torch.bool)))
    expected = allowed.float() / allowed.sum(-1, keepdim=True)
    if getattr(model_parts(model).layers[0].attention, "sinks", None) is not None:
        expected = torch.zeros_like(expected)  # GPT-OSS: the sink takes all of the attention
    torch.testing.assert_close(probs, expected, rtol=0, atol=1e-6)


def test_zero_attention_leaves_only_the_output_bias(model):
    parts = model_parts(model)
    with knockout_attention(model, [1], mode="zero"), record_sublayer_outputs(model, position=-1) as rec:
        logits(model)
    layer = parts.layers[1]
    bias = layer.attention_output.bias
    expected = torch.zeros(model.config.hidden_size) if bias is None else bias.detach()
    if layer.attention_update not in (layer.attention, layer.attention_output):  # Gemma: a norm after the sublayer
        expected = layer.attention_update(expected[None])[0]
    expected = expected * layer.update_scale  # Granite multiplies every update
    torch.testing.assert_close(rec["attention"][1], expected.expand_as(rec["attention"][1]), rtol=0, atol=1e-6)


def test_mlp_knockout_leaves_only_the_down_bias(model):
    parts = model_parts(model)
    with knockout_mlp(model, [0]), record_sublayer_outputs(model, position=-1) as rec:
        logits(model)
    layer = parts.layers[0]
    if not hasattr(layer.mlp_down, "experts"):
        bias = layer.mlp_down.bias
        expected = torch.zeros(model.config.hidden_size) if bias is None else bias.detach()
        if layer.mlp_update is not layer.mlp_down:  # Gemma: the norm after the MLP sees only the bias
            expected = layer.mlp_update(expected[None])[0]
    else:  # a mixture-of-experts block is knocked out as a whole: what it outputs for a zero input
        with torch.no_grad():
            zero = torch.zeros(1, 1, model.config.hidden_size)
            expected = layer_output_tensor(layer.mlp_down(zero))[0, 0]
    expected = expected * layer.update_scale  # Granite multiplies every update
    torch.testing.assert_close(rec["mlp"][0], expected.expand_as(rec["mlp"][0]), rtol=0, atol=1e-6)


def test_patching_layer_input_with_its_own_state_changes_nothing_and_with_another_run_swaps(model):
    from huggingface_patch.layer_states import residual_states

    states, _ = residual_states(model, IDS)
    before = logits(model)
    with patch_layer_input(model, 1, states[1], list(range(IDS.shape[1]))):
        torch.testing.assert_close(logits(model), before, rtol=0, atol=1e-5)
    other = IDS.flip(0)
    other_states, _ = residual_states(model, other)
    with patch_layer_input(model, 1, other_states[1], list(range(IDS.shape[1]))):
        swapped = logits(model)
    torch.testing.assert_close(swapped, logits(model, other), rtol=0, atol=1e-4)


def test_eager_is_switched_on_and_back():
    model = build_tiny_model("llama", decomposed=False, attn_implementation="sdpa")
    before = logits(model)
    T = IDS.shape[1]
    with block_attention_edges(model, {0: edge_mask(T, [[1, 2]] * 2)}):
        assert model.config._attn_implementation == "eager"
        logits(model)
    assert model.config._attn_implementation == "sdpa"
    torch.testing.assert_close(logits(model), before)
