"""Every linearization convention keeps the identity exact and changes what it says it changes."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_close_rel

from huggingface_patch.engine.conventions import Conventions
from huggingface_patch.testing import TINY_KINDS, build_tiny_model


@pytest.mark.parametrize("conventions", Conventions.all_variants(), ids=lambda c: c.name)
@pytest.mark.parametrize("kind", TINY_KINDS)
def test_identity_holds_for_every_convention(kind, conventions):
    model = build_tiny_model(kind).double()
    ids = torch.randint(3, 260, (1, 10), generator=torch.Generator().manual_seed(6))
    state = model(ids, output_hidden_states=True).hidden_states[-1]
    out = model(ids, decomposition_window=10, decomposition_conventions=conventions)
    assert_close_rel(out.decomposition.sum(1) + out.decomposition_bias, state, 1e-10, f"{kind} {conventions.name}")


def test_conventions_change_what_they_claim():
    ids = torch.randint(3, 260, (1, 10), generator=torch.Generator().manual_seed(7))
    gpt2 = build_tiny_model("gpt2").double()
    default = gpt2(ids, decomposition_window=10).decomposition
    tangent = gpt2(ids, decomposition_window=10,
                   decomposition_conventions=Conventions(activation="tangent")).decomposition
    assert float((default - tangent).abs().max()) > 1e-6  # GELU: ratio and tangent differ
    positions = gpt2(ids, decomposition_window=10, decomposition_conventions=Conventions(positions="bias"))
    assert float((positions.decomposition - default).abs().max()) > 1e-6
    opt = build_tiny_model("opt-pre").double()
    relu = opt(ids, decomposition_window=10).decomposition
    relu_tangent = opt(ids, decomposition_window=10, decomposition_conventions=Conventions(activation="tangent"))
    assert_close_rel(relu_tangent.decomposition, relu, 1e-12, "ReLU: tangent equals ratio")
    llama = build_tiny_model("llama").double()
    gate = llama(ids, decomposition_window=10).decomposition
    up = llama(ids, decomposition_window=10, decomposition_conventions=Conventions(gated="up")).decomposition
    assert float((gate - up).abs().max()) > 1e-6


def test_unknown_convention_is_rejected():
    with pytest.raises(ValueError, match="activation"):
        Conventions(activation="secant")
