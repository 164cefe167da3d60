"""``python -m analysis.embedding_space``.

Help, runs on tiny saved models writing their outputs, and one-line errors with exit code 2 for bad input.
"""

from __future__ import annotations

import csv
import json
import os

import pytest
from helpers import save_unsupported_model

from analysis.embedding_space import main
from huggingface_patch.testing import save_tiny_model

SUBCOMMANDS = ("ff", "vo", "qk", "tsne", "align")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Tiny models saved with the byte-level tokenizer: a Llama (GQA, untied) and a GPT-2 (Conv1D, tied)."""
    root = tmp_path_factory.mktemp("embedding_space_models")
    return {kind: save_tiny_model(kind, str(root / kind)) for kind in ("llama", "gpt2", "opt-post")}


@pytest.fixture(scope="module")
def unsupported(tmp_path_factory):
    """A saved BLOOM model (a causal LM family without an architecture adapter)."""
    return save_unsupported_model(tmp_path_factory.mktemp("mamba"))


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help(capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--model" in text and "--output-dir" in text and "--only-ascii" in text


def test_top_level_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert all(c in text for c in SUBCOMMANDS)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_ff_writes_side_by_side_table(saved, tmp_path, capsys, kind):
    code, _, err = _run(capsys, "ff", "--model", saved[kind], "--output-dir", tmp_path, "--layer", 1, "--neuron", 3,
                        "--k", 15, "--only-ascii")
    assert code == 0, err
    rows = _rows(tmp_path / "ff_L1_N3.csv")
    assert len(rows) == 15
    parts = ("gate", "up", "value") if kind == "llama" else ("key", "value")
    assert all(f"{p}_token" in rows[0] and f"{p}_score" in rows[0] for p in parts)
    summary = json.loads((tmp_path / "ff_L1_N3.json").read_text())
    assert summary["filters"]["only_ascii"] and set(summary["top"]) == set(parts)
    assert (tmp_path / "ff_L1_N3.png").stat().st_size > 1000
    code, _, err = _run(capsys, "ff", "--model", saved[kind], "--output-dir", tmp_path / "bottom", "--layer", 1,
                        "--neuron", 3, "--k", 5, "--bottom")
    assert code == 0, err
    scores = [float(r["value_score"]) for r in _rows(tmp_path / "bottom" / "ff_L1_N3.csv")]
    assert scores == sorted(scores) and scores[0] < 0


@pytest.mark.parametrize("command", ["vo", "qk"])
@pytest.mark.parametrize("kind", ["llama", "opt-post"])
def test_head_pairs_write_csv_json_png(saved, tmp_path, capsys, command, kind):
    code, _, err = _run(capsys, command, "--model", saved[kind], "--output-dir", tmp_path, "--layer", 2, "--head", 1,
                        "--min-k", 30, "--max-k", 300, "--only-alnum", "--show", 10, "--no-progress")
    assert code == 0, err
    stem = tmp_path / f"{command}_L2_H1"
    rows = _rows(f"{stem}.csv")
    assert 30 <= len(rows) <= 300
    values = [float(r["value"]) for r in rows]
    assert values == sorted(values, reverse=True)
    summary = json.loads(open(f"{stem}.json").read())
    assert summary["pairs_returned"] == len(rows) and len(summary["top"]) == 10
    assert summary["search"]["min_k"] == 30 and summary["search"]["block_bytes"] > 0
    assert os.path.getsize(f"{stem}.png") > 1000
    first, second = ("source_token", "target_token") if command == "vo" else ("query_token", "key_token")
    assert all(r[first].lstrip("#").isalnum() and r[second].lstrip("#").isalnum() for r in rows)


def test_tsne_writes_png_html_csv(saved, tmp_path, capsys):
    code, _, err = _run(capsys, "tsne", "--model", saved["gpt2"], "--output-dir", tmp_path, "--layer", 0, "--neuron", 2,
                        "--part", "key", "--k", 20, "--components", 2)
    assert code == 0, err
    rows = _rows(tmp_path / "tsne_L0_N2_key.csv")
    assert len(rows) == 20 and {"x", "y"} <= set(rows[0]) and "z" not in rows[0]
    page = (tmp_path / "tsne_L0_N2_key.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<script>" in page and "http" not in page.split("<script>")[0]
    assert (tmp_path / "tsne_L0_N2_key.png").stat().st_size > 1000


def test_align_writes_recall_per_layer(saved, tmp_path, capsys, example_corpus):
    code, _, err = _run(capsys, "align", "--model", saved["llama"], "--output-dir", tmp_path,
                        "--corpus", example_corpus, "--max-positions", 40, "--tokens", 20, "--layers", 0, 2)
    assert code == 0, err
    rows = _rows(tmp_path / "align.csv")
    expected = [(layer, p) for layer in ("0", "2") for p in ("gate", "up", "value")]
    assert [(r["layer"], r["part"]) for r in rows] == expected
    summary = json.loads((tmp_path / "align.json").read_text())
    assert summary["positions"] == 40 and len(summary["rows"]) == 6
    assert (tmp_path / "align.png").stat().st_size > 1000


def _assert_one_line_error(code, err, *fragments):
    assert code == 2
    lines = [line for line in err.strip().splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("argv,fragment", [
    (["ff", "--layer", "3", "--neuron", "0"], "layer 3 is out of range"),
    (["ff", "--layer", "0", "--neuron", "96"], "neuron 96 is out of range"),
    (["vo", "--layer", "0", "--head", "4"], "head 4 is out of range"),
    (["qk", "--layer", "9", "--head", "0"], "layer 9 is out of range"),
    (["tsne", "--layer", "0", "--neuron", "1000"], "neuron 1000 is out of range"),
    (["tsne", "--layer", "0", "--neuron", "1", "--part", "key"], "part 'key' does not exist"),
    (["align", "--layers", "0", "7"], "layer 7 is out of range"),
    (["vo", "--layer", "0", "--head", "0", "--min-k", "50", "--max-k", "10"], "--min-k (50) must not exceed"),
    (["ff", "--layer", "0", "--neuron", "0", "--word-list", "/nonexistent/words.txt"], "word-list file not found"),
    (["align", "--corpus", "/nonexistent/corpus.txt"], "not found"),
])
def test_bad_input_gives_one_line_error(saved, tmp_path, capsys, argv, fragment):
    code, _, err = _run(capsys, *argv, "--model", saved["llama"], "--output-dir", tmp_path)
    _assert_one_line_error(code, err, fragment)


def test_filters_that_leave_nothing_are_an_error(saved, tmp_path, capsys):
    words = tmp_path / "words.txt"
    words.write_text("zzzz-not-a-token\n")
    code, _, err = _run(capsys, "vo", "--model", saved["llama"], "--output-dir", tmp_path, "--layer", 0, "--head", 0,
                        "--word-list", words)
    _assert_one_line_error(code, err, "filters leave no token")


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_unsupported_model_is_an_error(unsupported, tmp_path, capsys, command):
    extra = {"ff": ["--layer", "0", "--neuron", "0"], "vo": ["--layer", "0", "--head", "0"],
             "qk": ["--layer", "0", "--head", "0"], "tsne": ["--layer", "0", "--neuron", "0"], "align": []}[command]
    code, _, err = _run(capsys, command, "--model", unsupported, "--output-dir", tmp_path, *extra)
    _assert_one_line_error(code, err, "unsupported architecture 'mamba'")


def test_missing_model_folder_is_an_error(tmp_path, capsys):
    code, _, err = _run(capsys, "ff", "--model", tmp_path / "no-such-model", "--output-dir", tmp_path,
                        "--layer", "0", "--neuron", "0")
    _assert_one_line_error(code, err, "model folder not found")


def test_argparse_rejects_negative_indices(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["ff", "--layer", "-1", "--neuron", "0"])
    assert exit_info.value.code == 2
    assert "non-negative" in capsys.readouterr().err
