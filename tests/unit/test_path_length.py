"""Path length of the residual stream: invariants on every tiny family, padding independence, CLI."""

from __future__ import annotations

import csv
import json
import math
import os

import pytest
import torch

from analysis.path_length import main
from huggingface_patch.layer_states import residual_states
from huggingface_patch.residual_stream.documents import pad_batch
from huggingface_patch.residual_stream.path_length import correlations, path_lengths
from huggingface_patch.testing import TINY_KINDS, build_tiny_model, save_tiny_model
from tests.helpers import assert_close_rel

#: padded vs alone (fp32 rounding of different matmul shapes), relative to the largest value
PADDING_TOLERANCE = 1e-5

SEQUENCES = [[2, 72, 101, 108, 108, 111, 32, 119, 111, 114], [2, 65, 66, 67], [2, 33, 34, 35, 36, 37, 38]]


@pytest.fixture(scope="module")
def models():
    return {kind: build_tiny_model(kind, decomposed=False) for kind in TINY_KINDS}


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_invariants(models, kind):
    model = models[kind]
    ids, mask = pad_batch(SEQUENCES, pad_id=1)
    result = path_lengths(model, ids, mask)
    for b in range(len(SEQUENCES)):
        one = result.sequence(b)
        assert (one["steps"] >= 0).all()
        assert (one["cumulative"][:, 0] == 0).all()
        assert (one["cumulative"].diff(dim=-1) >= 0).all(), "cumulative curve not monotone"
        assert torch.allclose(one["total"], one["steps"].sum(-1))
        assert (one["total"] >= one["straight"] * (1 - 1e-12)).all(), "path length below straight-line distance"
        assert torch.isnan(one["next_logit"][-1]) and not torch.isnan(one["next_logit"][:-1]).any()
    # the states are the raw residual stream (h_L before the final norm), as residual_states records it
    states, _ = residual_states(model, torch.tensor([SEQUENCES[0]]))
    alone = path_lengths(model, torch.tensor([SEQUENCES[0]]))
    assert_close_rel(alone.straight[0], (states[-1, 0] - states[0, 0]).double().norm(dim=-1), 1e-6, kind)
    assert_close_rel(alone.final_norm[0], states[-1, 0].double().norm(dim=-1), 1e-6, kind)


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_targets_match_model(models, kind):
    model = models[kind]
    ids = torch.tensor([SEQUENCES[0]])
    logits = model(input_ids=ids).logits[0].double()
    result = path_lengths(model, ids)
    expected = logits[:-1].gather(-1, ids[0, 1:, None])[:, 0]
    assert_close_rel(result.next_logit[0, :-1], expected, 1e-6, f"{kind} next-token logit")
    assert_close_rel(result.max_logit[0, :-1], logits[:-1].max(-1).values, 1e-6, f"{kind} max logit")
    assert torch.isnan(result.max_logit[0, -1]), "the last token predicts nothing: no max logit"
    logp = torch.log_softmax(logits, -1)[:-1].gather(-1, ids[0, 1:, None])[:, 0]
    assert_close_rel(result.next_logprob[0, :-1], logp, 1e-6, f"{kind} next-token log-prob")


@pytest.mark.parametrize("kind", TINY_KINDS)
@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_independent(models, kind, side):
    model = models[kind]
    ids, mask = pad_batch(SEQUENCES, pad_id=1, side=side)
    batch = path_lengths(model, ids, mask)
    for b, seq in enumerate(SEQUENCES):
        padded, alone = batch.sequence(b), path_lengths(model, torch.tensor([seq])).sequence(0)
        for field in ("steps", "cumulative", "straight", "next_logit", "max_logit"):
            assert_close_rel(padded[field].nan_to_num(), alone[field].nan_to_num(), PADDING_TOLERANCE,
                             f"{kind} {side} {field} of sequence {b}")


def test_deterministic(models):
    ids, mask = pad_batch(SEQUENCES, pad_id=1)
    first, second = path_lengths(models["llama"], ids, mask), path_lengths(models["llama"], ids, mask)
    assert torch.equal(first.steps, second.steps) and torch.equal(first.next_logit.nan_to_num(),
                                                                  second.next_logit.nan_to_num())


def test_correlations():
    x = torch.arange(10.0)
    assert correlations(x, 2 * x + 1)["pearson"] == pytest.approx(1.0)
    assert correlations(x, x**3)["spearman"] == pytest.approx(1.0)
    r = correlations([1.0, 2.0, float("nan"), 4.0], [1.0, 3.0, 5.0, 2.0])
    assert r["n"] == 3
    assert math.isnan(correlations([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])["pearson"])


# ---------------------------------------------------------------- command line

@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return [save_tiny_model(kind, str(root / kind)) for kind in ("gpt2", "opt-post")]


def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0 and "--model" in capsys.readouterr().out


def test_cli_two_models(tiny_folders, tmp_path, example_corpus):
    out = tmp_path / "out"
    argv = ["--corpus", example_corpus, "--output-dir", str(out), "--max-tokens", "40"]
    for folder in tiny_folders:
        argv += ["--model", folder]
    assert main(argv) == 0
    files = set(os.listdir(out))
    assert {"path_length_tokens.csv", "path_length_steps.csv", "path_length_summary.csv", "path_length_summary.json",
            "path_length_cumulative.png", "path_length_vs_logit.png", "path_length_steps.png"} <= files
    summary = json.loads((out / "path_length_summary.json").read_text())["models"]
    assert [row["model"] for row in summary] == ["gpt2", "opt-post"]
    for row in summary:
        assert -1 <= row["pearson_next_logit"] <= 1 and -1 <= row["spearman_next_logit"] <= 1
        assert row["mean_tortuosity"] >= 1 and row["mean_path_length_position0"] > 0
        interval = row["spearman_next_logit_interval"]  # documents resampled (tokens share their context)
        assert interval["cluster_by"] == "document" and interval["estimate"] == row["spearman_next_logit"]
        assert -1 <= interval["low"] <= interval["estimate"] <= interval["high"] <= 1
    with open(out / "path_length_tokens.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["model"] for r in rows} == {"gpt2", "opt-post"}
    # numbers formatted as text are written as numbers (no spreadsheet guard on "-5.1")
    assert all(not r[c].startswith("'") for r in rows for c in ("next_logit", "next_logprob", "max_logit"))
    assert all(float(r["path_length"]) >= float(r["straight"]) * (1 - 1e-9) for r in rows)
    with open(out / "path_length_steps.csv", newline="", encoding="utf-8") as handle:
        steps = list(csv.DictReader(handle))
    assert len(steps) == 3 * len(rows)  # 3 layers per tiny model


def _error(capsys, argv) -> str:
    from helpers import exit_code

    assert exit_code(main, argv) == 2
    err = capsys.readouterr().err  # progress bars of transformers may precede the message
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_cli_errors(tiny_folders, tmp_path, capsys):
    out = str(tmp_path / "out")
    model = ["--model", tiny_folders[0]]
    assert "not found" in _error(capsys, model + ["--corpus", str(tmp_path / "nope.txt"), "--output-dir", out])
    empty = tmp_path / "empty.sentitems"
    empty.write_text("")
    assert "empty" in _error(capsys, model + ["--corpus", str(empty), "--output-dir", out])
    assert "max-tokens" in _error(capsys, model + ["--text", "hello", "--max-tokens", "1", "--output-dir", out])
    config_only = tmp_path / "weird"
    config_only.mkdir()
    (config_only / "config.json").write_text('{"model_type": "no-such-model"}')
    err = _error(capsys, ["--model", str(config_only), "--text", "hello", "--output-dir", out])
    assert "could not load" in err or "unsupported" in err
