"""Logit lens: parity with the model's logits on every tiny family, sub-layer rows, padding independence, CLI."""

from __future__ import annotations

import csv
import json
import os

import pytest
import torch

from analysis.logit_lens import main
from huggingface_patch.architectures import model_parts
from huggingface_patch.layer_states import project_to_vocab
from huggingface_patch.residual_stream.documents import pad_batch
from huggingface_patch.residual_stream.logit_lens import lens_states, logit_lens
from huggingface_patch.testing import TINY_KINDS, build_tiny_model, save_tiny_model
from tests.helpers import assert_close_rel

#: fp32 tolerance relative to max|logit| (lens at the last layer vs the model's logits; same ops, so tiny)
LOGIT_TOLERANCE = 1e-5
#: padded vs alone (different matmul shapes give fp32 rounding differences)
PADDING_TOLERANCE = 1e-4
#: absolute tolerance for KL (nats): tiny random models give near-uniform distributions and KL ~ 1e-4
KL_TOLERANCE = 1e-6

SEQUENCES = [[2, 72, 101, 108, 108, 111, 32, 119, 111, 114], [2, 65, 66, 67], [2, 33, 34, 35, 36, 37, 38]]


@pytest.fixture(scope="module")
def models():
    return {kind: build_tiny_model(kind, decomposed=False) for kind in TINY_KINDS}


@pytest.mark.parametrize("kind", TINY_KINDS)
@pytest.mark.parametrize("sublayers", [None, "residual", "output"])
def test_last_layer_equals_model_logits(models, kind, sublayers):
    model = models[kind]
    ids = torch.tensor([SEQUENCES[0]])
    read = lens_states(model, ids, None, sublayers)
    expected = model(input_ids=ids).logits
    assert read.labels[-1] == f"L{len(model_parts(model).layers)}"
    assert_close_rel(project_to_vocab(model, read.states[-1]), expected, LOGIT_TOLERANCE, f"{kind} lens at layer L")
    result = logit_lens(model, ids, None, sublayers)
    assert torch.equal(result.top_ids[-1], expected.argmax(-1))
    assert (result.target_ranks[-1] == 1).all()
    assert result.kl[-1].abs().max() < 1e-5
    assert (result.kl >= 0).all() and (result.target_ranks >= 1).all()


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_mid_layer_rows(models, kind):
    """'residual' rows are the stream after the attention block: the pre-LN MLP norm's input, or for post-LN OPT
    the tensor whose MLP residual add (then norm) gives the layer output; for parallel layers (whose MLP reads
    the layer input) the layer input plus what the attention adds."""
    model = models[kind]
    parts = model_parts(model)
    ids = torch.tensor([SEQUENCES[0]])
    seen = []
    post = getattr(model.config, "do_layer_norm_before", True) is False
    # what the MLP's norm reads (the MLP itself where there is no pre-norm: OLMo 2)
    hooks = [(layer.mlp_norm or layer.mlp).register_forward_hook(lambda m, a, o: seen.append(a[0]))
             for layer in parts.layers]
    try:
        read = lens_states(model, ids, None, "residual")
    finally:
        for h in hooks:
            h.remove()
    mids = read.states[[k == "attn" for k in read.kinds]]
    outs = lens_states(model, ids, None, "output")
    mlp_out = outs.states[[k == "mlp_out" for k in outs.kinds]]
    attn_out = outs.states[[k == "attn_out" for k in outs.kinds]]
    layer_states = read.states[[k == "layer" for k in read.kinds]]
    inputs = read.states[[k in ("embed", "layer") for k in read.kinds]]
    for index, mid in enumerate(mids):
        if parts.layers[index].parallel:
            assert_close_rel(mid, inputs[index] + attn_out[index], 1e-5, f"{kind} mid {index}")
            assert_close_rel(mid + mlp_out[index], layer_states[index], 1e-5, f"{kind} layer {index}")
        elif post:
            assert_close_rel(seen[index].reshape(mid.shape), mid + mlp_out[index], 1e-5, f"{kind} mid {index}")
            assert_close_rel(parts.layers[index].mlp_norm(mid + mlp_out[index]), layer_states[index], 1e-5, kind)
        else:
            assert_close_rel(mid, seen[index].reshape(mid.shape), 1e-5, f"{kind} mid {index}")
            assert_close_rel(mid + mlp_out[index], layer_states[index], 1e-5, f"{kind} layer {index}")


@pytest.mark.parametrize("kind", TINY_KINDS)
@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_independent(models, kind, side):
    model = models[kind]
    ids, mask = pad_batch(SEQUENCES, pad_id=1, side=side)
    batch = logit_lens(model, ids, mask, "output")
    for b, seq in enumerate(SEQUENCES):
        alone = logit_lens(model, torch.tensor([seq]), None, "output")
        keep = mask[b].bool()
        kl_diff = (batch.kl[:, b][:, keep] - alone.kl[:, 0]).abs().max()
        assert kl_diff <= KL_TOLERANCE, f"{kind} {side} KL of sequence {b} differs by {kl_diff:.3e}"
        for field in ("top_probs", "target_probs", "target_logits"):
            assert_close_rel(getattr(batch, field)[:, b][:, keep], getattr(alone, field)[:, 0], PADDING_TOLERANCE,
                             f"{kind} {side} {field} of sequence {b}")
        assert torch.equal(batch.target_ids[b][keep], alone.target_ids[0])


def test_deterministic(models):
    ids, mask = pad_batch(SEQUENCES, pad_id=1)
    first, second = logit_lens(models["gpt2"], ids, mask), logit_lens(models["gpt2"], ids, mask)
    assert torch.equal(first.kl, second.kl) and torch.equal(first.target_ranks, second.target_ranks)


# ---------------------------------------------------------------- command line

@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return save_tiny_model("opt-post", str(tmp_path_factory.mktemp("tiny") / "opt-post"))


def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0 and "--colour" in capsys.readouterr().out


def test_cli_writes_outputs(tiny_folder, tmp_path):
    out = tmp_path / "out"
    code = main(["--model", tiny_folder, "--text", "The keys are on the table.", "--output-dir", str(out),
                 "--colour", "prob", "--colour", "rank", "--colour", "kl", "--sublayers", "residual"])
    assert code == 0
    name = "opt-post"
    files = sorted(os.listdir(out))
    assert f"logit_lens_{name}.csv" in files and f"logit_lens_{name}.json" in files
    assert {f"logit_lens_{name}_doc0_{c}.png" for c in ("prob", "rank", "kl")} <= set(files)
    data = json.loads((out / f"logit_lens_{name}.json").read_text())
    assert data["rows"][0] == "emb" and data["rows"][-1] == "L3" and "L1.attn" in data["rows"]
    assert all(rank == 1 for rank in data["documents"][0]["final_top1_rank"][-1])
    with open(out / f"logit_lens_{name}.csv", newline="", encoding="utf-8") as handle:
        lines = list(csv.reader(handle))
    assert lines[0][:3] == ["document", "row", "label"]
    assert len(lines) == 1 + len(data["rows"]) * len(data["documents"][0]["tokens"])
    assert not [f for f in files if f.startswith(".tmp-")]


def _error(capsys, argv) -> str:
    from helpers import exit_code

    assert exit_code(main, argv) == 2
    err = capsys.readouterr().err  # progress bars of transformers may precede the message
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_cli_errors(tiny_folder, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert "not found" in _error(capsys, ["--model", tiny_folder, "--corpus", str(tmp_path / "nope.txt"),
                                          "--output-dir", out])
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n\n")
    assert "empty" in _error(capsys, ["--model", tiny_folder, "--corpus", str(empty), "--output-dir", out])
    assert "colour" in _error(capsys, ["--model", tiny_folder, "--text", "hi there", "--colour", "rainbow",
                                       "--output-dir", out])
    assert "sublayers" in _error(capsys, ["--model", tiny_folder, "--text", "hi there", "--sublayers", "x",
                                          "--output-dir", out])
    assert "model folder not found" in _error(capsys, ["--model", str(tmp_path / "missing"), "--text", "hi",
                                                       "--output-dir", out])


def test_cli_unsupported_architecture(tmp_path, capsys):
    from helpers import save_unsupported_model

    folder = save_unsupported_model(tmp_path / "mamba")
    err = _error(capsys, ["--model", str(folder), "--text", "hello", "--output-dir", str(tmp_path / "out")])
    assert "unsupported architecture" in err
