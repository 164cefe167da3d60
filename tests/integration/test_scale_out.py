"""run_decompose.py across processes (torchrun / accelerate launch) and resuming an interrupted run."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch
from helpers import REPO  # noqa: E402

import run_decompose
from huggingface_patch.testing import save_tiny_model

SCRIPT = os.path.join(REPO, "run_decompose.py")
WINDOW = "4"
MODEL = "opt-scale"  # the model folder's name: MODEL in the output names
CORPUS = "scale"  # the corpus file's name up to its first dot

# The tiny OPT model reads 128 tokens (byte tokenizer: about one token per character). Articles of about
# 45, 211 and 354 characters give 1 + 3 + 5 = 9 pieces, overlapping as the paper cuts them.
ARTICLES = [
    ["The keys to the old cabinet are on the table."],
    ["Every morning the baker opens her shop before the sun comes up.",
     "The first customers are the nurses who finish their night shift at the hospital.",
     "They buy warm bread and talk about the patients they looked after."],
    ["When the river froze last winter, the children skated all the way to the mill.",
     "Their parents watched from the bridge and worried about the thin ice near the banks.",
     "Nobody fell in, and in spring the ice broke into large white plates that drifted away.",
     "The miller said he had not seen such a winter since he was a boy.",
     "The ice was gone by the first of May."],
]
PIECES = 9


def names(folder) -> list[str]:
    """The folder's entries, sorted."""
    return sorted(os.listdir(folder))


def piece_files(number: int) -> list[str]:
    """The four tensor files of piece ``number`` (d_, b_, o_, i_)."""
    return [f"{prefix}_{CORPUS}_{MODEL}_{number}.pt" for prefix in "dboi"]


def expected_names() -> list[str]:
    """Every file of a complete run, sorted: tensors, piece records, projection weights, run record."""
    pieces = [name for n in range(PIECES) for name in piece_files(n)]
    records = [f"r_{CORPUS}_{MODEL}_{n}.json" for n in range(PIECES)]
    return sorted(pieces + records + [f"{MODEL}_proj_weights.pt", "run.json"])


def tensor_names() -> list[str]:
    return sorted([name for n in range(PIECES) for name in piece_files(n)] + [f"{MODEL}_proj_weights.pt"])


def mtimes(folder) -> dict[str, int]:
    """Modification time (ns) of each entry of the folder."""
    return {name: os.stat(os.path.join(folder, name)).st_mtime_ns for name in os.listdir(folder)}


def assert_same_tensors(mine, reference, files=None) -> None:
    """The files (default: all tensor files) hold bit-identical tensors in both folders, written as identical
    bytes."""
    for name in files if files is not None else tensor_names():
        a = torch.load(os.path.join(mine, name))
        b = torch.load(os.path.join(reference, name))
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert torch.equal(a, b), f"{name} differs"
        with open(os.path.join(mine, name), "rb") as x, open(os.path.join(reference, name), "rb") as y:
            assert x.read() == y.read(), f"{name}: same tensor, other bytes"


@pytest.fixture(autouse=True)
def one_thread():
    """Run in-process on one thread, as the torchrun processes do (OMP_NUM_THREADS=1).

    Same arithmetic as theirs, and no oversubscription when the machine is busy.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """``(corpus, model folder, single-process output folder)``."""
    root = tmp_path_factory.mktemp("scale")
    corpus = root / f"{CORPUS}.sentitems"
    corpus.write_text("".join("!ARTICLE\n" + "".join(line + "\n" for line in lines) for lines in ARTICLES))
    model = save_tiny_model("opt-pre", str(root / MODEL))
    reference = str(root / "single")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert run_decompose.main([str(corpus), model, WINDOW, "--output-dir", reference]) == 0
    finally:
        torch.set_num_threads(threads)
    assert names(reference) == expected_names()
    return str(corpus), model, reference


@pytest.fixture
def counted(monkeypatch):
    """The piece numbers the pipeline computes (the real compute_piece, counted)."""
    from huggingface_patch import pipeline

    calls = []
    real = pipeline.compute_piece

    def counting(model, piece, window, **kwargs):
        calls.append(piece.ids)
        return real(model, piece, window, **kwargs)

    monkeypatch.setattr(pipeline, "compute_piece", counting)
    return calls


def copy_of(reference, tmp_path) -> str:
    """A copy of the reference output folder."""
    out = str(tmp_path / "out")
    shutil.copytree(reference, out)
    return out


def free_port() -> int:
    """A TCP port free right now on localhost."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ----------------------------------------------------------------------------------------------------------
# the split between processes


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 11])
def test_every_piece_goes_to_exactly_one_process(tmp_path, world_size):
    """Piece N goes to rank N % world_size, each piece to exactly one rank."""
    from huggingface_patch.pipeline import select_pieces

    owners = {}
    for rank in range(world_size):
        mine, _ = select_pieces(PIECES, None, rank=rank, world_size=world_size, resume=False)
        for number in mine:
            assert number % world_size == rank and number not in owners
            owners[number] = rank
    assert sorted(owners) == list(range(PIECES))


def test_one_rank_writes_only_its_pieces(setup, tmp_path, counted):
    """As rank 1 of 2 (no process group needed): the odd pieces, global numbers, no projection file, no run
    record (rank 0 writes those)."""
    from huggingface_patch.corpus import context_size, document_start, parse_sentitems, prepare_pieces, read_text
    from huggingface_patch.distributed import ProcessInfo
    from huggingface_patch.loading import load_model_and_tokenizer
    from huggingface_patch.pipeline import decompose_corpus, run_settings

    corpus, model_folder, reference = setup
    model, tokenizer, source = load_model_and_tokenizer(model_folder)
    text = read_text(corpus)
    start = document_start(model.config, tokenizer)
    pieces = prepare_pieces(parse_sentitems(text), tokenizer, model.config, start)
    assert len(pieces) == PIECES
    settings = run_settings(model, tokenizer, source.name, model_folder, corpus, text, int(WINDOW), start=start,
                            context=context_size(model.config))
    out = str(tmp_path / "out")
    done = decompose_corpus(model, tokenizer, pieces, settings, out, info=ProcessInfo(rank=1, world_size=2),
                            progress=False)
    assert done.computed == [1, 3, 5, 7] and len(counted) == 4
    expected = sorted([name for n in done.computed for name in piece_files(n)]
                      + [f"r_{CORPUS}_{MODEL}_{n}.json" for n in done.computed])
    assert names(out) == expected
    assert_same_tensors(out, reference, [name for n in done.computed for name in piece_files(n)])


@pytest.mark.slow
def test_two_processes_with_torchrun_match_one_process(setup, tmp_path):
    """Torchrun with 2 CPU processes: the same files, bit-identical tensors, each rank its own pieces."""
    corpus, model, reference = setup
    out = str(tmp_path / "multi")
    path = os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_port", str(free_port()),
               SCRIPT, corpus, model, WINDOW, "--output-dir", out, "--device", "cpu"]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert names(out) == expected_names()  # same names (global piece numbers), no temporary files left
    assert_same_tensors(out, reference)
    log = result.stderr
    assert f"{PIECES} pieces in total; 5 for this process [rank 0/2]; 0 of them already complete" in log
    assert f"{PIECES} pieces in total; 4 for this process [rank 1/2]; 0 of them already complete" in log


# ----------------------------------------------------------------------------------------------------------
# resuming


def test_rerun_of_complete_folder_computes_nothing(setup, tmp_path, counted, caplog):
    """A rerun into a complete folder runs the model on no piece and rewrites no data file."""
    corpus, model, reference = setup
    out = copy_of(reference, tmp_path)
    before = mtimes(out)
    caplog.set_level(logging.INFO)
    assert run_decompose.main([corpus, model, WINDOW, "--output-dir", out]) == 0
    assert counted == []
    after = mtimes(out)
    assert {k: v for k, v in after.items() if k != "run.json"} == {k: v for k, v in before.items() if k != "run.json"}
    assert (f"{PIECES} pieces in total; {PIECES} for this process; {PIECES} of them already complete (skipped), "
            "0 to compute") in caplog.text


@pytest.mark.parametrize("case", ["missing-d", "missing-record", "changed-o", "interrupted"])
def test_resume_recomputes_only_incomplete_pieces(setup, tmp_path, counted, case):
    """Only a piece whose files or record are missing or changed is recomputed; every temporary file goes."""
    corpus, model, reference = setup
    out = copy_of(reference, tmp_path)
    d, b, o, i = piece_files(4)
    record = f"r_{CORPUS}_{MODEL}_4.json"
    if case == "missing-d":
        os.remove(os.path.join(out, d))
    elif case == "missing-record":  # stopped after i_ was renamed, before the record
        os.remove(os.path.join(out, record))
    elif case == "changed-o":
        torch.save(torch.zeros(1), os.path.join(out, o))
    else:  # stopped while writing b_: d_ renamed, b_ only a temporary file, the rest absent
        for name in (b, o, i, record):
            os.remove(os.path.join(out, name))
        with open(os.path.join(out, f".tmp-k3j_x9q1-{b}"), "wb") as handle:
            handle.write(b"partial")
    with open(os.path.join(out, f".tmp-abcdefgh-d_{CORPUS}_{MODEL}_14.pt"), "wb") as handle:
        handle.write(b"x")  # a temporary file of an earlier, killed run
    before = mtimes(out)
    assert run_decompose.main([corpus, model, WINDOW, "--output-dir", out]) == 0
    assert len(counted) == 1
    after = mtimes(out)
    untouched = [name for name in tensor_names() if name not in piece_files(4)]
    assert {name: after[name] for name in untouched} == {name: before[name] for name in untouched}
    assert names(out) == expected_names()
    assert_same_tensors(out, reference)


def test_no_resume_recomputes_everything(setup, tmp_path, counted):
    """``--no-resume`` recomputes every piece, to the same tensors, and cleans temporary files."""
    corpus, model, reference = setup
    out = copy_of(reference, tmp_path)
    with open(os.path.join(out, f".tmp-zzzzzzzz-{piece_files(0)[1]}"), "wb") as handle:
        handle.write(b"partial")
    assert run_decompose.main([corpus, model, WINDOW, "--output-dir", out, "--no-resume"]) == 0
    assert len(counted) == PIECES
    assert names(out) == expected_names()
    assert_same_tensors(out, reference)


def test_plain_run_creates_no_process_group(monkeypatch):
    """Without WORLD_SIZE > 1: rank 0 of 1, no PartialState, no process group."""
    from huggingface_patch.distributed import process_info

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = process_info(None)
    assert (info.rank, info.world_size, info.device, info.state) == (0, 1, None, None)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert process_info("cpu").state is None
    assert not torch.distributed.is_initialized()


# ----------------------------------------------------------------------------------------------------------
# killed runs


def _kill_then_rerun(setup, tmp_path, when) -> str:
    """Start run_decompose.py in a subprocess, SIGKILL it when ``when(folder)`` first holds (or after its
    deadline), rerun to completion; returns the output folder."""
    import signal
    import time

    corpus, model, _ = setup
    out = str(tmp_path / "killed")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get(
        "PYTHONPATH")])))
    command = [sys.executable, SCRIPT, corpus, model, WINDOW, "--output-dir", out]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if when(out):
                break
            time.sleep(0.001)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait()
    assert run_decompose.main([corpus, model, WINDOW, "--output-dir", out]) == 0
    return out


@pytest.mark.slow
def test_sigkill_while_a_temporary_file_exists(setup, tmp_path):
    """Killed the moment a temporary file appears: the rerun leaves no temporary file and the outputs are the
    bytes of an uninterrupted run."""
    out = _kill_then_rerun(setup, tmp_path, lambda folder: os.path.isdir(folder) and any(
        name.startswith(".tmp-") and "_proj_" not in name for name in os.listdir(folder)))
    assert names(out) == expected_names()
    assert_same_tensors(out, setup[2])


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_at_a_random_moment(setup, tmp_path, seed):
    """Killed after a random number of the run's files exist: same result after a rerun."""
    import random

    target = random.Random(seed).randint(1, len(expected_names()) - 1)
    out = _kill_then_rerun(setup, tmp_path, lambda folder: os.path.isdir(folder) and len(os.listdir(folder)) >= target)
    assert names(out) == expected_names()
    assert_same_tensors(out, setup[2])
