"""Run integrity: results are never stale or mixed, and every bad input is one line, exit code 2, nothing written.

* resuming: a rerun into a folder is refused (one line naming the difference and the fix) when its window,
  corpus content, model weights or start token differ; ``--no-resume`` leaves nothing of the earlier run;
* reading: files that do not come from one run, projection weights of another model, and a MODEL with
  another tokenizer are refused by ``representations_to_deltalp.py``;
* a table of bad inputs for both paper scripts: exit code 2, exactly one line on stderr, no traceback, the
  output folder unchanged;
* the API refuses unusable inputs before any work.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat

import pytest
import torch
from helpers import FIXTURES  # noqa: E402

import representations_to_deltalp
import run_decompose
from huggingface_patch.errors import InputError
from huggingface_patch.testing import build_tiny_model, save_tiny_model

OPT_TINY = os.path.join(FIXTURES, "opt-tiny")
TEXT = "!ARTICLE\nThe keys to the old cabinet are on the table.\n!ARTICLE\nEvery morning the baker opens her shop.\n"


def snapshot(folder) -> dict:
    """Every entry of a folder with its size and modification time (a missing folder: empty)."""
    if not os.path.isdir(folder):
        return {}
    result = {}
    for name in sorted(os.listdir(folder)):
        info = os.stat(os.path.join(folder, name))
        result[name] = (info.st_size, info.st_mtime_ns)
    return result


def one_line_error(capsys, main, argv, fragment: str, folder=None) -> str:
    """Run ``main(argv)``: exit code 2, exactly one stderr line containing ``fragment``, no traceback, ``folder``
    unchanged."""
    before = snapshot(folder) if folder is not None else None
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert code == 2, f"exit code {code}; stderr: {out.err}"
    assert len(lines) == 1, f"stderr is not one line: {out.err!r}"
    assert "Traceback" not in out.err and fragment in lines[0], lines[0]
    if folder is not None:
        assert snapshot(folder) == before, "the output folder changed"
    return lines[0]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "stories.sentitems"
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.fixture
def done(corpus, tmp_path):
    """A complete run of the opt-tiny fixture on ``corpus`` with window 4."""
    out = tmp_path / "out"
    assert run_decompose.main([str(corpus), OPT_TINY, "4", "--output-dir", str(out)]) == 0
    return out


# ----------------------------------------------------------------------------------------------------------
# resuming never mixes runs


def test_rerun_with_another_window_is_refused(done, corpus, capsys):
    line = one_line_error(capsys, run_decompose.main, [corpus, OPT_TINY, "8", "--output-dir", done], "window 4", done)
    assert "(this run: 8)" in line and "--no-resume" in line and "--output-dir" in line


def test_rerun_with_an_edited_corpus_is_refused(done, corpus, capsys):
    corpus.write_text(TEXT.replace("keys", "coins"), encoding="utf-8")
    one_line_error(capsys, run_decompose.main, [corpus, OPT_TINY, "4", "--output-dir", done], "corpus.sha256", done)


def test_rerun_with_another_model_of_the_same_name_is_refused(done, corpus, tmp_path, capsys):
    other = tmp_path / "other" / "opt-tiny"
    save_tiny_model("opt-pre", str(other), seed=7)
    one_line_error(capsys, run_decompose.main, [corpus, other, "4", "--output-dir", done], "fingerprint", done)


def test_rerun_with_another_start_token_is_refused(done, corpus, capsys):
    one_line_error(capsys, run_decompose.main, [corpus, OPT_TINY, "4", "--output-dir", done, "--bos", "none"],
                   "start.id", done)


def test_no_resume_leaves_nothing_of_the_earlier_run(done, corpus, tmp_path):
    from analysis import deltalp as deltalp_cli

    longer = tmp_path / "stories.sentitems"
    longer.write_text(TEXT + "!ARTICLE\nA third article, which the shorter rerun does not have.\n", encoding="utf-8")
    assert run_decompose.main([str(longer), OPT_TINY, "4", "--output-dir", str(done), "--no-resume"]) == 0
    assert json.loads((done / "run.json").read_text())["pieces"][-1] == "stories_opt-tiny_2"
    corpus.write_text(TEXT.split("!ARTICLE")[0] + "!ARTICLE" + TEXT.split("!ARTICLE")[1], encoding="utf-8")
    assert run_decompose.main([str(corpus), OPT_TINY, "4", "--output-dir", str(done), "--no-resume"]) == 0
    names = set(os.listdir(done))
    assert not any("stories_opt-tiny_1" in n or "stories_opt-tiny_2" in n for n in names), sorted(names)
    out = tmp_path / "tables"
    assert deltalp_cli.main(["--from-files", str(done), "--model", OPT_TINY, "--window", "4",
                             "--plot-range", "0:0-5", "--output-dir", str(out)]) == 0
    documents = {row.split(",")[0] for row in (out / "deltalp.csv").read_text().splitlines()[1:]}
    assert documents == {"0"}


def test_same_settings_resume_and_skip(done, corpus, caplog):
    import logging

    before = snapshot(done)
    caplog.set_level(logging.INFO)
    assert run_decompose.main([str(corpus), OPT_TINY, "4", "--output-dir", str(done)]) == 0
    assert "2 of them already complete (skipped), 0 to compute" in caplog.text
    after = snapshot(done)
    assert {k: v for k, v in after.items() if k != "run.json"} == {k: v for k, v in before.items() if k != "run.json"}


def test_a_piece_without_its_record_is_recomputed(done, corpus):
    record = done / "r_stories_opt-tiny_1.json"
    reference = (done / "d_stories_opt-tiny_1.pt").read_bytes()
    os.remove(record)
    (done / "d_stories_opt-tiny_1.pt").write_bytes(b"half a file")  # as if killed before the record was written
    assert run_decompose.main([str(corpus), OPT_TINY, "4", "--output-dir", str(done)]) == 0
    assert record.is_file() and (done / "d_stories_opt-tiny_1.pt").read_bytes() == reference


def test_start_up_removes_every_temporary_file(done, corpus):
    for name in (".tmp-abc123-d_stories_opt-tiny_0.pt", ".tmp-zz-opt-tiny_proj_weights.pt", ".tmp-run-x"):
        (done / name).write_bytes(b"partial")
    assert run_decompose.main([str(corpus), OPT_TINY, "4", "--output-dir", str(done)]) == 0
    assert not [n for n in os.listdir(done) if n.startswith(".tmp-")]


# ----------------------------------------------------------------------------------------------------------
# readers check what they read


def test_ids_of_another_corpus_are_refused(done, corpus, tmp_path, capsys):
    other_corpus = tmp_path / "other.sentitems"
    other_corpus.write_text(TEXT.replace("keys", "pens"), encoding="utf-8")  # same lengths, other tokens
    other = tmp_path / "other_out"
    assert run_decompose.main([str(other_corpus), OPT_TINY, "4", "--output-dir", str(other)]) == 0
    shutil.copy(other / "i_other_opt-tiny_0.pt", done / "i_stories_opt-tiny_0.pt")
    one_line_error(capsys, representations_to_deltalp.main, ["stories_opt-tiny_0", OPT_TINY, "--output-dir", done],
                   "is not the file run_decompose.py wrote")
    assert capsys.readouterr().out == ""


def test_projection_weights_of_another_vocabulary_are_refused(done, capsys):
    torch.save(torch.randn(300, 64), done / "opt-tiny_proj_weights.pt")
    one_line_error(capsys, representations_to_deltalp.main, ["stories_opt-tiny_0", OPT_TINY, "--output-dir", done],
                   "opt-tiny_proj_weights.pt is not the file")


def test_a_model_with_the_same_name_but_another_tokenizer_is_refused(done, tmp_path, capsys):
    twin = tmp_path / "twin" / "opt-tiny"
    shutil.copytree(OPT_TINY, twin)
    vocab = json.loads((twin / "vocab.json").read_text(encoding="utf-8"))
    a, b = list(vocab)[10], list(vocab)[11]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (twin / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    one_line_error(capsys, representations_to_deltalp.main, ["stories_opt-tiny_0", twin, "--output-dir", done],
                   "tokenizer")


def test_another_model_name_is_refused(done, tmp_path, capsys):
    other = save_tiny_model("opt-pre", str(tmp_path / "another"))
    one_line_error(capsys, representations_to_deltalp.main, ["stories_another_0", other, "--output-dir", done],
                   "MODEL 'opt-tiny'")


def test_an_incomplete_piece_is_refused(done, capsys):
    os.remove(done / "r_stories_opt-tiny_1.json")
    one_line_error(capsys, representations_to_deltalp.main, ["stories_opt-tiny_1", OPT_TINY, "--output-dir", done],
                   "incomplete")


@pytest.mark.parametrize("content,fragment", [
    (b"", "is empty"),
    ("dict", "holds a dict"),
    (os.urandom(300), "not a complete tensor file"),
    ("truncated", "not a complete tensor file"),
])
def test_broken_unrecorded_files_are_one_line(tmp_path, capsys, content, fragment):
    """Files without a record, read with --allow-unrecorded: a damaged file is named, never a traceback (and
    PyTorch's advice to load unsafely is never repeated)."""
    folder = tmp_path / "paper"
    shutil.copytree(os.path.join(FIXTURES, "paper-reference"), folder)
    target = folder / "d_stories_opt-tiny_0.pt"
    if content == "dict":
        torch.save({"d": torch.zeros(2)}, target)
    elif content == "truncated":
        target.write_bytes(target.read_bytes()[:200])
    else:
        target.write_bytes(content)
    line = one_line_error(capsys, representations_to_deltalp.main,
                          ["stories_opt-tiny_0", OPT_TINY, "--output-dir", folder, "--allow-unrecorded"], fragment)
    assert "weights_only" not in line


# ----------------------------------------------------------------------------------------------------------
# bad input: one line, exit code 2, nothing written


def _bad_inputs(tmp_path, corpus):
    folder_file = tmp_path / "a-file"
    folder_file.write_text("not a folder")
    latin = tmp_path / "latin.sentitems"
    latin.write_bytes(b"!ARTICLE\nThe first line is fine.\nCaf\xe9 au lait.\n")
    binary = tmp_path / "binary.sentitems"
    binary.write_bytes(b"!ARTICLE\n\x00\x01\x02binary")
    empty_model = tmp_path / "empty-model"
    empty_model.mkdir()
    truncated = tmp_path / "truncated" / "opt-tiny"
    shutil.copytree(OPT_TINY, truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    small_vocab = save_tiny_model("opt-pre", str(tmp_path / "small-vocab"), vocab_size=100)
    return {
        "not UTF-8": ([latin, OPT_TINY, "4"], "line 3"),
        "binary": ([binary, OPT_TINY, "4"], "binary"),
        "output dir is a file": ([corpus, OPT_TINY, "4", "--output-dir", folder_file], "is a file"),
        "output dir inside a file": ([corpus, OPT_TINY, "4", "--output-dir", folder_file / "sub"], "cannot be written"),
        "cuda without CUDA": ([corpus, OPT_TINY, "4", "--device", "cuda"], "CUDA is not available"),
        "bad device": ([corpus, OPT_TINY, "4", "--device", "nonsense"], "not a torch device"),
        "block size not a number": ([corpus, OPT_TINY, "4", "--block-size", "x"], "--block-size"),
        "block size zero": ([corpus, OPT_TINY, "4", "--block-size", "0"], "--block-size"),
        "empty model folder": ([corpus, empty_model, "4"], "has no config.json"),
        "truncated weights": ([corpus, truncated, "4"], "damaged or incomplete"),
        "vocabulary smaller than the tokenizer": ([corpus, small_vocab, "4"], "vocabulary has only 100"),
        "unknown start token": ([corpus, OPT_TINY, "4", "--bos", "<nope>"], "--bos"),
        "memory budget too small": ([corpus, OPT_TINY, "4", "--max-memory", "1KB"], "memory budget"),
        "memory budget not a size": ([corpus, OPT_TINY, "4", "--max-memory", "lots"], "--max-memory"),
        "missing corpus": ([tmp_path / "nope.sentitems", OPT_TINY, "4"], "not found"),
        "window zero": ([corpus, OPT_TINY, "0"], "DECOMPOSITION_LENGTH"),
    }


BAD = ["not UTF-8", "binary", "output dir is a file", "output dir inside a file", "cuda without CUDA", "bad device",
       "block size not a number", "block size zero", "empty model folder", "truncated weights",
       "vocabulary smaller than the tokenizer", "unknown start token", "memory budget too small",
       "memory budget not a size", "missing corpus", "window zero"]


@pytest.mark.parametrize("case", BAD)
def test_run_decompose_bad_input_is_one_line(case, corpus, tmp_path, capsys):
    if case == "cuda without CUDA" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    argv, fragment = _bad_inputs(tmp_path, corpus)[case]
    out = tmp_path / "out"
    if "--output-dir" not in argv:
        argv = argv + ["--output-dir", out]
    one_line_error(capsys, run_decompose.main, argv, fragment, tmp_path / "out")
    assert not out.exists() or not os.listdir(out), "files were written"


def test_unwritable_output_dir(corpus, tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    one_line_error(capsys, run_decompose.main, [corpus, OPT_TINY, "4", "--output-dir", locked / "out"],
                   "cannot be written")


def test_representations_to_deltalp_bad_options(capsys, done):
    one_line_error(capsys, representations_to_deltalp.main, ["stories_opt-tiny_0", OPT_TINY, "--block-size", "x"],
                   "unrecognized arguments")


def test_bom_and_crlf_are_accepted(tmp_path, corpus):
    crlf = tmp_path / "crlf" / "stories.sentitems"
    crlf.parent.mkdir()
    crlf.write_bytes(b"\xef\xbb\xbf" + TEXT.replace("\n", "\r\n").encode("utf-8"))
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_decompose.main([str(corpus), OPT_TINY, "4", "--output-dir", str(a)]) == 0
    assert run_decompose.main([str(crlf), OPT_TINY, "4", "--output-dir", str(b)]) == 0
    for name in ("i_stories_opt-tiny_0.pt", "i_stories_opt-tiny_1.pt"):
        assert torch.equal(torch.load(a / name), torch.load(b / name))


def test_ctrl_c_is_one_line_and_a_rerun_resumes(corpus, tmp_path, capsys, monkeypatch):
    from huggingface_patch import pipeline

    out = tmp_path / "out"
    real = pipeline.compute_piece
    calls = []

    def interrupt_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "compute_piece", interrupt_on_second)
    capsys.readouterr()
    assert run_decompose.main([str(corpus), OPT_TINY, "4", "--output-dir", str(out)]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("run_decompose.py: interrupted: 1 of 2 pieces are complete; a rerun with the same arguments "
                       "resumes")
    monkeypatch.setattr(pipeline, "compute_piece", real)
    assert run_decompose.main([str(corpus), OPT_TINY, "4", "--output-dir", str(out)]) == 0
    assert sorted(n for n in os.listdir(out) if n.startswith("r_")) == ["r_stories_opt-tiny_0.json",
                                                                          "r_stories_opt-tiny_1.json"]


# ----------------------------------------------------------------------------------------------------------
# the API refuses unusable inputs before any work


@pytest.mark.parametrize("case,fragment", [
    ("1-d ids", "input_ids[None]"),
    ("empty", "empty"),
    ("id too large", "outside the vocabulary"),
    ("negative id", "outside the vocabulary"),
    ("float ids", "integer token ids"),
    ("too long", "positions for 128"),
    ("all-zero mask", "no real token"),
    ("training mode", "model.eval()"),
])
def test_api_refuses_unusable_input(case, fragment):
    model = build_tiny_model("opt-pre")
    ids = torch.randint(3, 260, (1, 6))
    kwargs = {}
    if case == "1-d ids":
        ids = ids[0]
    elif case == "empty":
        ids = ids[:, :0]
    elif case == "id too large":
        ids[0, 2] = 260
    elif case == "negative id":
        ids[0, 2] = -1
    elif case == "float ids":
        ids = ids.float()
    elif case == "too long":
        ids = torch.randint(3, 260, (1, 129))
    elif case == "all-zero mask":
        ids = torch.randint(3, 260, (2, 6))
        kwargs["attention_mask"] = torch.tensor([[1] * 6, [0] * 6])
    elif case == "training mode":
        model.train()
    with pytest.raises(InputError, match=re.escape(fragment)):
        model(ids, decomposition_window=3, **kwargs)


def test_records_name_the_commit_read_when_the_run_started(monkeypatch):
    """The source commit in a record is the one read when the run started: a commit made during a long run does
    not rename the code that run used (no git call happens when a record is written)."""
    import re
    import subprocess

    from huggingface_patch import _source, records

    started = _source.commit()  # what run_cli does first

    def refuse(*args, **kwargs):
        raise AssertionError("git was called while writing a record")

    monkeypatch.setattr(subprocess, "run", refuse)
    assert records.environment()["source"] == started
    root = os.path.dirname(os.path.dirname(os.path.abspath(records.__file__)))
    if os.path.isdir(os.path.join(root, ".git")):
        assert re.fullmatch(r"[0-9a-f]{12}(\+modified)?", started or ""), started


def test_importing_the_package_runs_no_git():
    """``import huggingface_patch`` starts nothing: the source commit is read when a run starts."""
    import subprocess
    import sys

    code = ("import subprocess\n"
            "def refuse(*a, **k):\n    raise SystemExit('git ran at import')\n"
            "subprocess.run = refuse\nimport huggingface_patch\n"
            "from huggingface_patch import ArchitectureAdapter, HuggingfacePatchError, load_model_and_tokenizer\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr or done.stdout
