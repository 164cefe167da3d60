"""The attribution CLIs (analysis.deltalp, analysis.ablation_agreement, analysis.decomposition_lens), in-process."""

from __future__ import annotations

import csv
import json
import os
import shutil

import pytest
import torch

from analysis import ablation_agreement, decomposition_lens
from analysis import deltalp as deltalp_cli
from huggingface_patch.testing import save_tiny_model


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return save_tiny_model("llama", str(tmp_path_factory.mktemp("models") / "tiny-llama"))


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "small.sentitems"
    path.write_text("!ARTICLE\nThe cat sat on the mat.\n!ARTICLE\nA dog ran home fast, then slept.\n")
    return str(path)


def _csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("module", [deltalp_cli, ablation_agreement, decomposition_lens])
def test_help(module, capsys):
    with pytest.raises(SystemExit) as info:
        module.main(["--help"])
    assert info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_deltalp_tokens_stitched(tiny_folder, small_corpus, tmp_path):
    out = tmp_path / "tok"
    assert deltalp_cli.main(["--model", tiny_folder, "--corpus", small_corpus, "--window", "6", "--context", "12",
                             "--plot-range", "0:0-10", "--output-dir", str(out)]) == 0
    rows = _csv(out / "deltalp.csv")
    keys = [(r["document"], r["target_index"], r["source_index"]) for r in rows]
    assert len(keys) == len(set(keys)), "a (target, source) pair appears twice after stitching"
    targets = {(r["document"], int(r["target_index"])): int(r["context_length"]) for r in rows}
    text = ["The cat sat on the mat.", "A dog ran home fast, then slept."]
    for d, sentence in enumerate(text):
        n = len(sentence.encode())
        assert sorted(i for (doc, i) in targets if doc == str(d)) == list(range(n))
        for i in range(n):  # piece length 12, advance 6: the most context a target can get
            best = i if i < 11 else 5 + (i - 5) % 6
            assert targets[(str(d), i)] == best, (d, i)
    summary = json.loads((out / "deltalp_summary.json").read_text())
    assert summary["units"] == "bits" and summary["n_targets"] == len(targets)
    assert sum(summary["distance_histogram"].values()) == summary["n_targets_with_argmax"]
    assert (out / "heatmap.png").stat().st_size > 0 and (out / "bars.png").stat().st_size > 0


def test_deltalp_words_foil_nats(tiny_folder, small_corpus, tmp_path):
    assert deltalp_cli.main(["--model", tiny_folder, "--corpus", small_corpus, "--words", "--units", "nats",
                             "--output-dir", str(tmp_path / "w")]) == 0
    rows = _csv(tmp_path / "w" / "deltalp.csv")
    assert {"source_end", "n_tokens", "n_tokens_removed"} <= set(rows[0])
    assert any(int(r["n_tokens"]) > 1 for r in rows)
    assert deltalp_cli.main(["--model", tiny_folder, "--corpus", small_corpus, "--foil", "x",
                             "--output-dir", str(tmp_path / "f")]) == 0
    rows = _csv(tmp_path / "f" / "deltalp.csv")
    assert rows[0]["foil"] == "x"


def test_deltalp_compare_conventions(tiny_folder, small_corpus, tmp_path):
    pytest.importorskip("huggingface_patch.engine.conventions")
    assert deltalp_cli.main(["--model", tiny_folder, "--corpus", small_corpus, "--compare-conventions",
                             "--output-dir", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "conventions.json").read_text())
    assert report["variants"] and all(-1 <= v["spearman"] <= 1 for v in report["variants"].values())


def test_deltalp_from_files_matches_fixture(fixtures_dir, tmp_path):
    folder = os.path.join(fixtures_dir, "paper-reference")
    assert deltalp_cli.main(["--from-files", folder, "--identifiers", "stories_opt-tiny_*", "--model",
                             os.path.join(fixtures_dir, "opt-tiny"), "--window", "8", "--allow-unrecorded",
                             "--output-dir", str(tmp_path)]) == 0
    rows = _csv(tmp_path / "deltalp.csv")
    first = [r for r in rows if r["document"] == "0" and r["target_index"] == "1"]
    assert [round(float(r["delta_lp"]), 4) for r in first] == [-0.2079, -0.5861]  # the paper's timestep 2


def _error(module, argv, capsys, needle):
    try:
        code = module.main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.replace("\r", "\n").splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err and needle in lines[0], err


def test_deltalp_errors(tiny_folder, small_corpus, fixtures_dir, tmp_path, capsys):
    out = ["--output-dir", str(tmp_path / "out")]
    _error(deltalp_cli, ["--model", tiny_folder, "--corpus", str(tmp_path / "nope.txt")] + out, capsys, "not found")
    _error(deltalp_cli, ["--model", tiny_folder, "--corpus", small_corpus, "--window", "0"] + out, capsys, "--window")
    _error(deltalp_cli, ["--model", tiny_folder, "--corpus", small_corpus, "--units", "decibans"] + out, capsys,
           "--units")
    _error(deltalp_cli, ["--model", tiny_folder, "--corpus", small_corpus, "--foil", "not one token"] + out, capsys,
           "unknown foil token")
    _error(deltalp_cli, ["--model", tiny_folder, "--corpus", small_corpus, "--plot-range", "7:0-3"] + out, capsys,
           "document 7 does not exist")
    broken = tmp_path / "files"
    shutil.copytree(os.path.join(fixtures_dir, "paper-reference"), broken)
    opt = os.path.join(fixtures_dir, "opt-tiny")
    _error(deltalp_cli, ["--from-files", str(broken), "--model", opt] + out, capsys, "--allow-unrecorded")
    unrecorded = ["--from-files", str(broken), "--model", opt, "--allow-unrecorded"] + out
    _error(deltalp_cli, unrecorded + ["--identifiers", "stories_opt-tiny_9"], capsys, "no piece")
    torch.save(torch.zeros(1, 5, 16), broken / "o_stories_opt-tiny_1.pt")
    _error(deltalp_cli, unrecorded, capsys, "do not belong together")
    os.remove(broken / "opt-tiny_proj_weights.pt")
    _error(deltalp_cli, unrecorded, capsys, "missing")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir()), "partial output written"


def test_ablation_agreement_cli(tiny_folder, small_corpus, tmp_path, capsys):
    assert ablation_agreement.main(["--model", tiny_folder, "--corpus", small_corpus, "--pairs", "12",
                                    "--max-tokens", "16", "--output-dir", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "ablation_summary.json").read_text())
    assert summary["n"] == 12 and -1 <= summary["spearman"] <= 1 and -1 <= summary["pearson"] <= 1
    assert len(_csv(tmp_path / "ablation_pairs.csv")) == 12
    assert (tmp_path / "ablation_scatter.png").stat().st_size > 0
    _error(ablation_agreement, ["--model", tiny_folder, "--corpus", small_corpus, "--window", "-1",
                                "--output-dir", str(tmp_path / "x")], capsys, "--window")
    _error(ablation_agreement, ["--model", tiny_folder, "--corpus", str(tmp_path / "none"),
                                "--output-dir", str(tmp_path / "x")], capsys, "not found")
    _error(ablation_agreement, ["--model", tiny_folder, "--corpus", small_corpus, "--units", "x",
                                "--output-dir", str(tmp_path / "x")], capsys, "--units")


def test_decomposition_lens_cli(tiny_folder, small_corpus, tmp_path, capsys):
    assert decomposition_lens.main(["--model", tiny_folder, "--text", "The cat sat", "--target", "5", "--top-k", "3",
                                    "--output-dir", str(tmp_path)]) == 0
    rows = _csv(tmp_path / "lens.csv")
    layers = {int(r["layer"]) for r in rows}
    assert layers == {0, 1, 2, 3} and len(rows) == 4 * 6 * 3
    data = json.loads((tmp_path / "lens.json").read_text())
    assert data["target"] == 5 and len(data["entries"]) == 4 * 6
    assert (tmp_path / "lens.png").stat().st_size > 0
    _error(decomposition_lens, ["--model", tiny_folder, "--text", "ab", "--target", "9",
                                "--output-dir", str(tmp_path / "x")], capsys, "--target")
    _error(decomposition_lens, ["--model", tiny_folder, "--corpus", str(tmp_path / "none"),
                                "--output-dir", str(tmp_path / "x")], capsys, "not found")
    _error(decomposition_lens, ["--model", tiny_folder, "--text", "ab", "--window", "0",
                                "--output-dir", str(tmp_path / "x")], capsys, "--window")
