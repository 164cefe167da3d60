"""``docs/design.md`` §1: contributions plus bias reproduce the real hidden state after every layer and at
the output."""

from __future__ import annotations

import pytest
import torch
from helpers import IDENTITY_TOLERANCE, assert_close_rel
from transformers import AutoModelForCausalLM

from huggingface_patch.architectures import get_adapter
from huggingface_patch.engine.capture import capture
from huggingface_patch.engine.layouts import relative_to_absolute
from huggingface_patch.engine.reference import reference_decomposition
from huggingface_patch.testing import TINY_KINDS, build_tiny_model


def _base_twin(model):
    """The plain Hugging Face class with the same weights (independent of the decomposing subclass)."""
    twin = AutoModelForCausalLM.from_config(model.config)
    twin.load_state_dict(model.state_dict())
    return twin.to(model.dtype).eval()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("kind", TINY_KINDS)
def test_identity_every_layer(kind, dtype):
    model = build_tiny_model(kind).to(dtype)
    base = _base_twin(model)
    ids = torch.randint(3, 260, (2, 17), generator=torch.Generator().manual_seed(1))
    out = model(ids, decomposition_window=17, output_layer_decompositions=True, output_hidden_states=True)
    ref = base(ids, output_hidden_states=True)
    tol = IDENTITY_TOLERANCE[dtype]
    # Hugging Face's hidden_states: 0 = embeddings, l = output of layer l, last = post-final-norm
    num_layers = len(out.layer_decompositions) - 1
    for layer in range(num_layers):
        summed = out.layer_decompositions[layer].sum(1) + out.layer_decomposition_biases[layer]
        assert_close_rel(summed, ref.hidden_states[layer], tol, f"{kind} {dtype} layer {layer}")
    final = out.decomposition.sum(1) + out.decomposition_bias
    assert_close_rel(final, ref.hidden_states[-1], tol, f"{kind} {dtype} final state")
    assert torch.equal(out.logits, ref.logits), f"{kind}: logits differ from the base class"
    for mine, theirs in zip(out.hidden_states, ref.hidden_states):
        assert torch.equal(mine, theirs), f"{kind}: hidden states differ from the base class"


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_contributions_match_per_source_reference(kind):
    """Each source's own contribution (not only the sum) equals a plain source-by-source computation."""
    model = build_tiny_model(kind).double()
    ids = torch.randint(3, 260, (1, 11), generator=torch.Generator().manual_seed(2))
    spec = get_adapter(model).spec(model)
    with capture(model, spec) as record:
        model(ids)
    expected, expected_bias = reference_decomposition(spec, record.layer_inputs, record.attention)
    out = model(ids, decomposition_window=11, decomposition_block_size=3)
    absolute = relative_to_absolute(out.decomposition)[0]
    assert_close_rel(absolute, expected, 1e-10, f"{kind} per-source contributions")
    state_scale = float((expected.sum(0) + expected_bias).abs().max())
    assert_close_rel(out.decomposition_bias[0], expected_bias, 1e-10, f"{kind} bias term", scale=state_scale)


def test_bias_is_tracked_not_subtracted():
    """The bias term is a real propagation: with all biases and shifts zero it vanishes (OPT pre-LN)."""
    model = build_tiny_model("opt-pre")
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.zero_()
    out = model(torch.randint(3, 260, (1, 9)), decomposition_window=9)
    assert float(out.decomposition_bias.abs().max()) < 1e-6
    assert float(out.decomposition.abs().max()) > 1e-2


def test_relative_layout_keeps_only_the_sources_in_the_window():
    """Contributions are zero outside the window and in rows with t - k < 0 (relative layout)."""
    model = build_tiny_model("gpt2")
    out = model(torch.randint(3, 260, (1, 10)), decomposition_window=4)
    d = out.decomposition[0]
    assert d.shape == (4, 10, 64)
    for k in range(4):
        assert float(d[k, :k].abs().max() if k else 0.0) == 0.0
        assert float(d[k, k:].abs().amax(-1).min()) > 0.0
