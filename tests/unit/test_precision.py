"""The fast modes (``decomposition_precision``): each within its stated tolerance of the exact path on every
family, the exact path untouched, the identity check refusing (exact) or reporting (fast) a wrong result.

``HFP_TEST_DEVICE=cuda`` runs the same tests on a GPU (``benchmarks/gpu_check.sh``), where ``tf32`` is tested
too; on CPU ``tf32`` must be refused.
"""

from __future__ import annotations

import json
import logging
import os

import pytest
import torch
from helpers import assert_close_rel

import run_decompose
from huggingface_patch.deltalp import compute_deltalp, stream_deltalp
from huggingface_patch.engine import decompose as decompose_module
from huggingface_patch.engine.frozen import DecompositionMismatchError
from huggingface_patch.engine.precision import IDENTITY_TOLERANCE, Precision
from huggingface_patch.errors import InputError
from huggingface_patch.testing import TINY_KINDS, build_tiny_model, save_tiny_model

DEVICE = os.environ.get("HFP_TEST_DEVICE", "cpu")
FAST = ("bf16", "tf32") if DEVICE.startswith("cuda") else ("bf16",)
#: stated tolerance of each fast mode's contributions against fp32, relative to max|contribution| (the
#: largest seen over the tiny families: bf16 8e-3)
CONTRIBUTION_TOLERANCE = {"bf16": 2e-2, "tf32": 1e-2}


def _model(kind: str):
    return build_tiny_model(kind).to(DEVICE)


def _ids(batch: int = 2, length: int = 40, seed: int = 1) -> torch.Tensor:
    return torch.randint(3, 250, (batch, length), generator=torch.Generator().manual_seed(seed)).to(DEVICE)


def _run(model, ids, precision, **options):
    options = dict(dict(decomposition_window=12, decomposition_block_size=5, output_layer_decompositions=True),
                   **options)
    return model(ids, decomposition_precision=precision, **options)


@pytest.mark.parametrize("precision", FAST)
@pytest.mark.parametrize("kind", TINY_KINDS)
def test_fast_mode_within_its_tolerance_of_fp32(kind, precision):
    model = _model(kind)
    ids = _ids()
    exact, fast = _run(model, ids, "fp32"), _run(model, ids, precision)
    tolerance = CONTRIBUTION_TOLERANCE[precision]
    for layer, (mine, theirs) in enumerate(zip(fast.layer_decompositions, exact.layer_decompositions)):
        assert_close_rel(mine, theirs, tolerance, f"{kind} {precision} contributions after layer {layer}")
    assert_close_rel(fast.decomposition, exact.decomposition, tolerance, f"{kind} {precision} final contributions")
    # the mode is really on: bf16 rounding leaves a trace (TF32 may round nothing on tiny products)
    if precision == "bf16":
        assert float((fast.decomposition - exact.decomposition).abs().max()) > 0, f"{kind}: bf16 changed nothing"
    # the bias term, the logits and the model's own states never change
    assert torch.equal(fast.decomposition_bias, exact.decomposition_bias), f"{kind}: the bias term changed"
    assert torch.equal(fast.logits, exact.logits), f"{kind}: the forward pass changed"
    assert fast.decomposition_precision == precision and exact.decomposition_precision == "fp32"
    worst = float(fast.decomposition_identity_errors.max())
    assert worst <= IDENTITY_TOLERANCE[precision], f"{kind} {precision}: identity error {worst:.3e}"


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_identity_errors_are_reported_per_state(kind):
    """``decomposition_identity_errors``: one entry per state (embeddings, each layer, the head's input), and
    each one agrees with the sum of the returned contributions for the targets inside the window."""
    model = _model(kind)
    ids = _ids(batch=1, length=30)
    out = _run(model, ids, "fp32", decomposition_window=30)
    errors = out.decomposition_identity_errors
    assert errors.shape == (len(out.layer_decompositions) + 1,)
    assert float(errors.max()) <= 1e-5, f"{kind}: identity error {float(errors.max()):.3e}"
    with torch.no_grad():
        states = model(ids, output_hidden_states=True).hidden_states
    summed = out.decomposition.sum(1) + out.decomposition_bias
    recomputed = float((summed - states[-1]).abs().max() / states[-1].abs().max())
    assert abs(recomputed - float(errors[-1])) <= 1e-6, f"{kind}: reported {float(errors[-1]):.3e}, " \
        f"recomputed {recomputed:.3e}"


def test_sparse_mlp_path_in_bf16():
    model = _model("opt-pre")
    ids = _ids(batch=1, length=48)
    options = dict(decomposition_window=40, decomposition_block_size=40)
    exact = _run(model, ids, "fp32", decomposition_mlp_path="sparse", **options)
    fast = _run(model, ids, "bf16", decomposition_mlp_path="sparse", **options)
    assert_close_rel(fast.decomposition, exact.decomposition, CONTRIBUTION_TOLERANCE["bf16"], "sparse bf16")
    assert float((fast.decomposition - exact.decomposition).abs().max()) > 0


def _break_first_block(monkeypatch):
    """Make the engine add a wrong vector to every contribution it hands out (the freeze check cannot see it)."""
    real = decompose_module.finalize

    def wrong(state, frozen, layout, precision=None):
        out = real(state, frozen, layout, precision) if precision is not None else real(state, frozen, layout)
        return out if layout.is_bias else out + 0.05 * out.abs().amax()

    monkeypatch.setattr(decompose_module, "finalize", wrong)


def test_exact_path_refuses_a_result_that_misses_the_identity(monkeypatch):
    model = _model("llama")
    _break_first_block(monkeypatch)
    with pytest.raises(DecompositionMismatchError, match="miss the real state"):
        model(_ids(), decomposition_window=12)


def test_fast_mode_reports_instead_of_raising(monkeypatch, caplog):
    model = _model("llama")
    _break_first_block(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="huggingface_patch.engine.decompose"):
        out = model(_ids(), decomposition_window=12, decomposition_precision="bf16")
    assert float(out.decomposition_identity_errors[-1]) > IDENTITY_TOLERANCE["bf16"]
    assert any("identity error" in record.getMessage() for record in caplog.records)


def test_default_is_the_exact_path():
    """The default is fp32 and takes no fast-mode branch: the same bits as asking for fp32."""
    model = _model("gpt2")
    ids = _ids()
    default = model(ids, decomposition_window=12)
    explicit = model(ids, decomposition_window=12, decomposition_precision="fp32")
    assert torch.equal(default.decomposition, explicit.decomposition)
    assert default.decomposition_precision == "fp32"
    assert not Precision("fp32").half and not Precision("tf32").half and Precision("bf16").half


@pytest.mark.skipif(DEVICE.startswith("cuda"), reason="tf32 is a CUDA mode")
def test_tf32_refused_off_cuda():
    model = _model("llama")
    with pytest.raises(InputError, match="tf32.*CUDA"):
        model(_ids(), decomposition_window=5, decomposition_precision="tf32")
    with pytest.raises(InputError, match="unknown decomposition precision"):
        model(_ids(), decomposition_window=5, decomposition_precision="fp8")


@pytest.mark.parametrize("kind", ["llama", "gemma2", "gptj"])
def test_deltalp_in_bf16_close_to_fp32(kind):
    """Streaming and in-memory ΔLP in bf16 (decomposition and head product) against exact ΔLP: median
    difference under 0.01 bits, every value within 0.5 bits (tiny random models have flat distributions)."""
    model = _model(kind)
    ids = _ids(batch=1, length=36)[0]
    exact = stream_deltalp(model, ids, window=10)
    fast = stream_deltalp(model, ids, window=10, precision="bf16")
    out = model(ids[None], decomposition_window=10, decomposition_precision="bf16", output_hidden_states=True)
    head = model.get_output_embeddings()
    seen = {}
    handle = head.register_forward_pre_hook(lambda module, args: seen.__setitem__("x", args[0]))
    model(ids[None])
    handle.remove()
    from huggingface_patch.architectures import readout

    in_memory = compute_deltalp(seen["x"][0], out.decomposition[0], readout(model), ids, precision="bf16")
    for name, result in (("stream", fast), ("in memory", in_memory)):
        diff = (result.delta - exact.delta).abs()
        diff = diff[~torch.isnan(diff)]
        assert diff.numel() > 0
        assert float(diff.median()) < 0.01, f"{kind} {name}: median |ΔLP diff| {float(diff.median()):.4f} bits"
        assert float(diff.max()) < 0.5, f"{kind} {name}: max |ΔLP diff| {float(diff.max()):.4f} bits"
    assert fast.identity_error is not None and fast.identity_error <= IDENTITY_TOLERANCE["bf16"]


def test_run_decompose_records_the_precision(tmp_path, example_corpus):
    folder = save_tiny_model("llama", str(tmp_path / "model"))
    out = tmp_path / "out"
    assert run_decompose.main([example_corpus, folder, "8", "--output-dir", str(out), "--precision", "bf16"]) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["settings"]["precision"] == "bf16"
    piece = json.loads(next(out.glob("r_*.json")).read_text())
    assert 0 < piece["identity_error"] <= IDENTITY_TOLERANCE["bf16"]
    # the same folder with another precision is another run
    assert run_decompose.main([example_corpus, folder, "8", "--output-dir", str(out)]) == 2


def test_tf32_on_the_command_line_is_one_line(tmp_path, example_corpus, capsys):
    folder = save_tiny_model("llama", str(tmp_path / "model"))
    code = run_decompose.main([example_corpus, folder, "8", "--output-dir", str(tmp_path / "o"), "--precision",
                               "tf32", "--device", "cpu"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tf32" in err[0] and "CUDA" in err[0], err
