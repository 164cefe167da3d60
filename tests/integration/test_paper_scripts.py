"""The paper's two scripts reproduce the paper's own outputs on the opt-tiny fixture, and reject bad input."""

from __future__ import annotations

import os
import re
import shutil

import pytest
import torch
from helpers import FIXTURES  # noqa: E402

import representations_to_deltalp
import run_decompose
from huggingface_patch.testing import save_tiny_model

REFERENCE = os.path.join(FIXTURES, "paper-reference")
OPT_TINY = os.path.join(FIXTURES, "opt-tiny")
CORPUS = os.path.join(REFERENCE, "stories.sentitems")
TENSOR_TOLERANCE = 1e-5  # the fixture README: tensors to float round-off (about 1e-5)
NUMBER_TOLERANCE = 1e-4  # ΔLP text numbers to round-off
NUMBER = re.compile(r"-?\d+\.\d+(?:e-?\d+)?|-?inf|nan")


@pytest.fixture(scope="module")
def decomposed_fixture(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("paper") / "output")
    assert run_decompose.main([CORPUS, OPT_TINY, "8", "--output-dir", out]) == 0
    return out


def test_files_match_paper_reference(decomposed_fixture):
    names = sorted(os.listdir(decomposed_fixture))
    expected = [f"{p}_stories_opt-tiny_{i}.pt" for p in "bdio" for i in range(4)] + ["opt-tiny_proj_weights.pt"]
    records = [f"r_stories_opt-tiny_{i}.json" for i in range(4)] + ["run.json"]
    assert names == sorted(expected + records)
    for i in range(4):
        ids = torch.load(os.path.join(decomposed_fixture, f"i_stories_opt-tiny_{i}.pt"))
        assert torch.equal(ids, torch.load(os.path.join(REFERENCE, f"i_stories_opt-tiny_{i}.pt"))), f"ids of batch {i}"
        for prefix in "do":
            mine = torch.load(os.path.join(decomposed_fixture, f"{prefix}_stories_opt-tiny_{i}.pt"))
            theirs = torch.load(os.path.join(REFERENCE, f"{prefix}_stories_opt-tiny_{i}.pt"))
            assert mine.shape == theirs.shape, f"{prefix}_ batch {i}: {mine.shape} vs {theirs.shape}"
            worst = float((mine - theirs).abs().max())
            assert worst <= TENSOR_TOLERANCE, f"{prefix}_ batch {i}: largest difference {worst:.2e}"
        d = torch.load(os.path.join(decomposed_fixture, f"d_stories_opt-tiny_{i}.pt"))
        b = torch.load(os.path.join(decomposed_fixture, f"b_stories_opt-tiny_{i}.pt"))
        o = torch.load(os.path.join(decomposed_fixture, f"o_stories_opt-tiny_{i}.pt"))
        assert b.shape == o.shape
        # with the window 8 < T only in-window sources are kept: the identity holds for the first 8 targets
        worst = float((d.sum(0)[:8] + b[0, :8] - o[0, :8]).abs().max())
        assert worst <= 1e-4 * float(o.abs().max()), f"identity on the first targets: {worst:.2e}"
    proj = torch.load(os.path.join(decomposed_fixture, "opt-tiny_proj_weights.pt"))
    assert torch.allclose(proj, torch.load(os.path.join(REFERENCE, "opt-tiny_proj_weights.pt")).detach())


@pytest.mark.parametrize("batch", range(4))
def test_deltalp_text_matches_paper_line_for_line(decomposed_fixture, batch, capsys):
    identifier = f"stories_opt-tiny_{batch}"
    assert representations_to_deltalp.main([identifier, OPT_TINY, "--output-dir", decomposed_fixture]) == 0
    mine = capsys.readouterr().out.splitlines()
    with open(os.path.join(REFERENCE, f"{identifier}.deltalp"), encoding="utf-8") as handle:
        theirs = handle.read().splitlines()
    assert len(mine) == len(theirs)
    for number, (a, b) in enumerate(zip(mine, theirs)):
        assert NUMBER.sub("#", a) == NUMBER.sub("#", b), f"line {number + 1}: {a!r} vs {b!r}"
        for x, y in zip(NUMBER.findall(a), NUMBER.findall(b)):
            assert abs(float(x) - float(y)) <= NUMBER_TOLERANCE, f"line {number + 1}: {x} vs {y}"


def _run_error(capsys, func, argv):
    code = func(argv)
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize("case", ["missing", "empty", "no-article", "zero", "negative", "not-number"])
def test_run_decompose_bad_input(tmp_path, capsys, case):
    corpus = tmp_path / "c.sentitems"
    window = "4"
    if case == "missing":
        corpus = tmp_path / "nope.sentitems"
    elif case == "empty":
        corpus.write_text("")
    elif case == "no-article":
        corpus.write_text("Just a sentence.\n")
    else:
        corpus.write_text("!ARTICLE\nHello there.\n")
        window = {"zero": "0", "negative": "-3", "not-number": "four"}[case]
    out = tmp_path / "out"
    code, err = _run_error(capsys, run_decompose.main, [str(corpus), OPT_TINY, window, "--output-dir", str(out)])
    assert code == 2
    assert len(err.splitlines()) == 1 and "error" in err and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


def test_run_decompose_unsupported_architecture(tmp_path, capsys):
    from transformers import BertConfig, BertForMaskedLM

    folder = tmp_path / "bert"
    BertForMaskedLM(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                               vocab_size=260)).save_pretrained(folder)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(os.path.join(OPT_TINY, name), folder / name)
    corpus = tmp_path / "c.sentitems"
    corpus.write_text("!ARTICLE\nHello.\n")
    capsys.readouterr()
    code, err = _run_error(capsys, run_decompose.main, [str(corpus), str(folder), "4", "--output-dir",
                                                        str(tmp_path / "o")])
    assert code == 2 and "unsupported architecture" in err and "opt" in err and len(err.splitlines()) == 1


def test_the_papers_own_files_are_read_only_when_asked(capsys):
    """The reference folder holds the paper's own outputs, with no run record: refused by default (nothing
    checks that its files belong together), read with --allow-unrecorded."""
    code, err = _run_error(capsys, representations_to_deltalp.main, ["stories_opt-tiny_0", OPT_TINY, "--output-dir",
                                                                    REFERENCE])
    assert code == 2 and "--allow-unrecorded" in err and len(err.splitlines()) == 1
    assert representations_to_deltalp.main(["stories_opt-tiny_0", OPT_TINY, "--output-dir", REFERENCE,
                                            "--allow-unrecorded"]) == 0
    mine = capsys.readouterr().out.splitlines()
    with open(os.path.join(REFERENCE, "stories_opt-tiny_0.deltalp"), encoding="utf-8") as handle:
        theirs = handle.read().splitlines()
    assert [NUMBER.sub("#", line) for line in mine] == [NUMBER.sub("#", line) for line in theirs]


@pytest.mark.parametrize("kind", ["gpt2", "llama", "opt-post"])
def test_scripts_run_on_other_families(tmp_path, capsys, kind):
    folder = save_tiny_model(kind, str(tmp_path / kind))
    out = str(tmp_path / "out")
    assert run_decompose.main([CORPUS, folder, "5", "--output-dir", out]) == 0
    assert representations_to_deltalp.main([f"stories_{kind}_0", folder, "--output-dir", out]) == 0
    text = capsys.readouterr().out
    assert text.rstrip().splitlines()[-1].startswith("Max distance:")
    d = torch.load(os.path.join(out, f"d_stories_{kind}_0.pt"))
    ids = torch.load(os.path.join(out, f"i_stories_{kind}_0.pt"))
    assert d.shape[0] == 5 and d.shape[1] == ids.shape[1] and ids[0, 0].item() == 2
