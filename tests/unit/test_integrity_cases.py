"""What a new user runs into, case by case (issue: nothing lost, nothing stale, one-line errors everywhere).

Each table case runs a command-line tool in-process on tiny inputs and states the outcome: the exit code, the
one line of stderr that must name the problem, and whether the output folder must be left exactly as it was
(compared file by file, content included). The silent wrong results that used to exit 0 are regression
tests below the table.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil

import pytest
import torch
from helpers import FIXTURES, REPO  # noqa: E402

import representations_to_deltalp
import run_decompose
from analysis import decomposition_lens, deltalp, embedding_space, logit_lens, saturation
from huggingface_patch.testing import save_tiny_model

OPT_TINY = os.path.join(FIXTURES, "opt-tiny")
TEXT = "!ARTICLE\nThe keys to the old cabinet are on the table.\n!ARTICLE\nNobody knows who left them there.\n"


def snapshot(folder) -> dict:
    """Every file under ``folder`` with its content hash (the folder 'unchanged' means equal snapshots)."""
    found = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, folder)] = hashlib.sha256(handle.read()).hexdigest()
    return found


def call(main, argv) -> int:
    try:
        return main([str(a) for a in argv])
    except SystemExit as exc:
        return exc.code


def one_line(err: str) -> str:
    lines = [line for line in err.replace("\r", "\n").splitlines() if "error" in line]
    assert len(lines) == 1 and "Traceback" not in err, f"expected one error line, got:\n{err[-1500:]}"
    return lines[0]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("integrity")
    (root / "corpus.sentitems").write_text(TEXT, encoding="utf-8")
    (root / "one.sentitems").write_text("!ARTICLE\nH\n", encoding="utf-8")
    (root / ("y" * 240 + ".sentitems")).write_text(TEXT, encoding="utf-8")
    decomposed = root / "decomposed"
    assert call(run_decompose.main, [root / "corpus.sentitems", OPT_TINY, 5, "--output-dir", decomposed]) == 0
    llama = save_tiny_model("llama", str(root / "llama"))
    gpt2 = save_tiny_model("gpt2", str(root / "gpt2"))
    return {"root": root, "decomposed": decomposed, "llama": llama, "gpt2": gpt2}


def _edited_record(work):
    folder = work["root"] / "edited"
    if not folder.exists():
        shutil.copytree(work["decomposed"], folder)
        record = json.loads((folder / "run.json").read_text())
        record["settings"]["readout"]["final_logit_softcapping"] = 30.0  # a setting that changes the numbers
        (folder / "run.json").write_text(json.dumps(record))
    return folder


def _wrong_types(work):
    folder = work["root"] / "wrong_types"
    if not folder.exists():
        shutil.copytree(work["decomposed"], folder)
        record = json.loads((folder / "run.json").read_text())
        record["pieces"] = 5
        (folder / "run.json").write_text(json.dumps(record))
    return folder


def _dir_for_file(work):
    folder = work["root"] / "dir_for_file"
    if not folder.exists():
        shutil.copytree(work["decomposed"], folder)
        os.remove(folder / "d_corpus_opt-tiny_0.pt")
        os.mkdir(folder / "d_corpus_opt-tiny_0.pt")
    return folder


def _facts_without_subject(work):
    path = work["root"] / "facts.json"
    path.write_text(json.dumps([{"subject": "Paris", "prompt": "The capital of France is"}]))
    return path


def _lens_folder(work):
    folder = work["root"] / "lens_of_gpt2"
    if not folder.exists():
        assert call(logit_lens.main, ["--model", work["gpt2"], "--text", "hello there", "--output-dir", folder]) == 0
    return folder


# name -> (tool, argv from work, the needle of the error line, the folder that must stay unchanged or None)
CASES = {
    "one-token article with --deltalp": (
        run_decompose.main, lambda w: [w["root"] / "one.sentitems", OPT_TINY, 5, "--deltalp", "--bos", "none",
                                       "--output-dir", w["root"] / "one_out"], "ΔLP needs", None),
    "corpus name too long for the file system": (
        run_decompose.main, lambda w: [w["root"] / ("y" * 240 + ".sentitems"), OPT_TINY, 5, "--output-dir",
                                       w["root"] / "long_out"], "bytes long", None),
    "edited run.json (a read-out setting)": (
        representations_to_deltalp.main, lambda w: ["corpus_opt-tiny_0", OPT_TINY, "--output-dir", _edited_record(w)],
        "changed after the run", None),
    "run.json with the wrong types": (
        representations_to_deltalp.main, lambda w: ["corpus_opt-tiny_0", OPT_TINY, "--output-dir", _wrong_types(w)],
        "wrong type", None),
    "the paper's second script on an analysis folder": (
        representations_to_deltalp.main, lambda w: ["corpus_opt-tiny_0", OPT_TINY, "--output-dir", _lens_folder(w)],
        "not of run_decompose.py", None),
    "a folder where a piece file should be": (
        representations_to_deltalp.main, lambda w: ["corpus_opt-tiny_0", OPT_TINY, "--output-dir", _dir_for_file(w)],
        "is a folder where a file", None),
    "an analysis into run_decompose.py's folder": (
        deltalp.main, lambda w: ["--from-files", w["decomposed"], "--model", OPT_TINY, "--output-dir",
                                 w["decomposed"]], "holds results of run_decompose.py", "decomposed"),
    "--from-files with a larger --window": (
        deltalp.main, lambda w: ["--from-files", w["decomposed"], "--model", OPT_TINY, "--window", 30, "--output-dir",
                                 w["root"] / "window_out"], "larger than the window", None),
    "--plot-range of a missing document (before the model runs)": (
        deltalp.main, lambda w: ["--model", OPT_TINY, "--corpus", w["root"] / "corpus.sentitems", "--plot-range",
                                 "9:0-5", "--output-dir", w["root"] / "plot_out"], "does not exist", None),
    "decomposition lens --top-k above the vocabulary": (
        decomposition_lens.main, lambda w: ["--model", OPT_TINY, "--top-k", 100000, "--output-dir",
                                            w["root"] / "lens_out"], "exceeds the vocabulary", None),
    "a second logit-lens model into the first one's folder": (
        logit_lens.main, lambda w: ["--model", w["llama"], "--text", "hello", "--output-dir", _lens_folder(w)],
        "another model", "lens_of_gpt2"),
    "a hub id that is not cached, offline": (
        logit_lens.main, lambda w: ["--model", "nobody-here/no-such-model", "--text", "hi", "--output-dir",
                                    w["root"] / "hub_out"], "cannot be reached", None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_case(name, work, capsys, monkeypatch):
    tool, argv, needle, unchanged = CASES[name]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    arguments = argv(work)
    before = snapshot(work[unchanged] if unchanged in work else work["root"] / unchanged) if unchanged else None
    capsys.readouterr()
    code = call(tool, arguments)
    err = capsys.readouterr().err
    assert code == 2, f"{name}: exit code {code}\n{err[-1500:]}"
    assert needle in one_line(err), f"{name}: {one_line(err)}"
    if unchanged:
        folder = work[unchanged] if unchanged in work else work["root"] / unchanged
        assert snapshot(folder) == before, f"{name}: the folder changed"


def test_embedding_readings_never_overwrite_each_other(work, capsys):
    """The README's ff then vo into one folder deleted the first result; now the second is refused."""
    folder = work["root"] / "params"
    assert call(embedding_space.main, ["ff", "--model", work["gpt2"], "--layer", 1, "--neuron", 3, "--output-dir",
                                       folder]) == 0
    before = snapshot(folder)
    capsys.readouterr()
    code = call(embedding_space.main, ["vo", "--model", work["gpt2"], "--layer", 1, "--head", 1, "--output-dir",
                                       folder])
    assert code == 2 and "another tool" in one_line(capsys.readouterr().err)
    assert snapshot(folder) == before


def test_no_resume_leaves_a_users_own_files(work, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    for name in ("b_baseline.pt", "r_review.json", "notes.txt"):
        (folder / name).write_text("mine")
    assert call(run_decompose.main, [work["root"] / "corpus.sentitems", OPT_TINY, 5, "--no-resume", "--output-dir",
                                     folder]) == 0
    for name in ("b_baseline.pt", "r_review.json", "notes.txt"):
        assert (folder / name).read_text() == "mine", name


def test_no_resume_replaces_a_damaged_record(work, tmp_path):
    folder = tmp_path / "damaged"
    shutil.copytree(work["decomposed"], folder)
    (folder / "run.json").write_text("{not json")
    assert call(run_decompose.main, [work["root"] / "corpus.sentitems", OPT_TINY, 5, "--no-resume", "--output-dir",
                                     folder]) == 0
    assert json.loads((folder / "run.json").read_text())["settings"]["window"] == 5


def test_start_up_cleans_only_what_a_dead_process_left(work, tmp_path):
    folder = tmp_path / "lens"
    folder.mkdir()
    live = folder / f".tmp-{os.getpid()}-in-flight"  # this process is alive: another writer's file
    dead = folder / ".tmp-999999999-run-left"  # a killed run's staging folder
    live.write_text("x")
    dead.mkdir()
    (dead / "big.csv").write_text("x" * 1000)
    assert call(logit_lens.main, ["--model", work["gpt2"], "--text", "hello", "--output-dir", folder]) == 0
    assert live.exists() and not dead.exists()


def test_output_dir_with_a_tilde_is_written_where_it_points(work, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert call(logit_lens.main, ["--model", work["gpt2"], "--text", "hello", "--output-dir=~/lens_home"]) == 0
    assert (tmp_path / "lens_home" / "run.json").is_file()
    assert not os.path.exists("~")


def test_saturation_all_on_a_short_text_writes_what_it_can(work, tmp_path, capsys):
    text = tmp_path / "short.sentitems"
    text.write_text("!ARTICLE\nThe cat sat.\n")
    assert call(saturation.main, ["all", "--model", work["gpt2"], "--corpus", text, "--output-dir", tmp_path / "s",
                                  "--no-progress"]) == 0
    skipped = json.loads((tmp_path / "s" / "saturation_skipped.json").read_text())["skipped"]
    assert "probe" in skipped and "not enough data" in skipped["probe"]
    assert (tmp_path / "s" / "saturation_layers.csv").is_file()


def test_defaults_work_outside_the_repository(work, tmp_path, monkeypatch):
    """The example corpus is package data: the tools' defaults do not depend on the current folder."""
    monkeypatch.chdir(tmp_path)
    assert call(saturation.main, ["layers", "--model", work["gpt2"], "--output-dir", tmp_path / "sat",
                                  "--no-progress"]) == 0


def test_a_full_disk_is_one_line_naming_the_file(capsys):
    from huggingface_patch.cli import run_cli

    def body():
        raise OSError(errno.ENOSPC, "No space left on device", "/some/where/d_corpus_0.pt")

    assert run_cli(body, "tool") == 2
    line = one_line(capsys.readouterr().err)
    assert "disk is full" in line and "d_corpus_0.pt" in line


def test_spreadsheet_formulas_are_not_written_raw():
    from huggingface_patch.files import csv_text

    text = csv_text([{"token": "=SUM(A1)", "value": -0.5}, {"token": "-1+cmd", "value": "-5.11282"},
                     {"token": "@x", "value": "+2e-3"}], ["token", "value"])
    assert "'=SUM(A1)" in text and "'-1+cmd" in text and "'@x" in text
    # numbers stay numbers, also when a writer formatted them as text
    assert ",-0.5\n" in text and ",-5.11282\n" in text and ",+2e-3\n" in text


def test_reproduce_refuses_an_empty_report_and_bad_arguments(tmp_path, capsys):
    import subprocess
    import sys

    repo = REPO
    docs = os.path.join(repo, "docs", "results.md")
    stamp = os.path.getmtime(docs) if os.path.exists(docs) else None
    for argv, needle in ((["--report-only", "--work", str(tmp_path)], "holds no runs"),
                         (["--parts", "bogus"], "invalid choice"), (["--facts", "-3"], "positive integer")):
        out = subprocess.run([sys.executable, os.path.join(repo, "scripts", "reproduce.py"), *argv],
                             capture_output=True, text=True, cwd=repo)
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and needle in out.stderr, out.stderr
    assert (os.path.getmtime(docs) if os.path.exists(docs) else None) == stamp


def test_a_failing_reproduction_step_is_one_line(tmp_path):
    import sys

    sys.path.insert(0, os.path.join(REPO, "scripts"))
    import reproduce

    step = reproduce.Step("recall", "none", "broken", ["-m", "analysis.logit_lens", "--model", str(tmp_path / "no"),
                                                         "--text", "hi"], str(tmp_path / "out"))
    with pytest.raises(reproduce.StepFailed, match="failed"):
        reproduce.run(step, 1, 1, {})


def test_a_reproduction_step_records_its_load(tmp_path):
    """A finished step's reproduce.json says how many threads it had and the load average before and after,
    so that minutes taken beside other jobs can be told apart."""
    import json
    import sys

    from huggingface_patch.testing import save_tiny_model

    sys.path.insert(0, os.path.join(REPO, "scripts"))
    import reproduce

    folder = save_tiny_model("llama", str(tmp_path / "tiny"))
    argv = ["-m", "analysis.logit_lens", "--model", folder, "--text", "hi there"]
    step = reproduce.Step("lens", "tiny", "lens", argv, str(tmp_path / "out"))
    record = reproduce.run(step, 1, 1, {})
    with open(tmp_path / "out" / "reproduce.json", encoding="utf-8") as handle:
        written = json.load(handle)
    assert written["threads"] >= 1 and written["cpus"] >= 1 and len(written["load_average"]) == 2, written
    assert record["seconds"] == written["seconds"]


def test_stream_deltalp_refuses_a_batch():
    """It used to join the rows of a (2, T) batch into one sequence and return its ΔLP (exit 0)."""
    from huggingface_patch.deltalp import stream_deltalp
    from huggingface_patch.errors import InputError
    from huggingface_patch.testing import build_tiny_model

    model = build_tiny_model("llama")
    with pytest.raises(InputError, match="one sequence"):
        stream_deltalp(model, torch.randint(3, 260, (2, 12)), 6)


def test_a_recall_record_names_the_resolved_start_token(work, tmp_path):
    from analysis import attention_knockout

    facts = tmp_path / "facts.json"
    facts.write_text(json.dumps([{"subject": "Iron", "prompt": "Iron is a kind of"}]))
    out = tmp_path / "knockout"
    assert call(attention_knockout.main, ["--model", work["llama"], "--facts", facts, "--filter", "none", "--window",
                                          1, "--output-dir", out]) == 0
    start = json.loads((out / "run.json").read_text())["settings"]["start_token"]
    assert isinstance(start, dict) and "id" in start


def test_a_facts_file_whose_subjects_are_not_in_the_prompts_says_so(work, capsys):
    from analysis import attention_knockout

    code = call(attention_knockout.main, ["--model", work["llama"], "--facts", _facts_without_subject(work),
                                          "--filter", "none", "--output-dir", work["root"] / "facts_out"])
    assert code == 2 and "subject appears in its prompt" in one_line(capsys.readouterr().err)
