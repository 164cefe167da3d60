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

import run_decompose
from huggingface_patch.testing import save_tiny_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
    """The four file names of piece ``number`` (d_, b_, o_, i_)."""
    return [f"{prefix}_{CORPUS}_{MODEL}_{number}.pt" for prefix in "dboi"]


def expected_names() -> list[str]:
    """Every file of a complete run, sorted."""
    return sorted([name for n in range(PIECES) for name in piece_files(n)] + [f"{MODEL}_proj_weights.pt"])


def mtimes(folder) -> dict[str, int]:
    """Modification time (ns) of each entry of the folder."""
    return {name: os.stat(os.path.join(folder, name)).st_mtime_ns for name in os.listdir(folder)}


def assert_same_tensors(mine, reference, files=None) -> None:
    """The files (default: all pieces' files) hold bit-identical tensors in both folders."""
    for name in files if files is not None else expected_names():
        a = torch.load(os.path.join(mine, name))
        b = torch.load(os.path.join(reference, name))
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert torch.equal(a, b), f"{name} differs"


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
    """The piece numbers run_decompose computes (the real decompose_piece, counted)."""
    calls = []
    real = run_decompose.decompose_piece

    def counting(model, piece, number, **kwargs):
        calls.append(number)
        return real(model, piece, number, **kwargs)

    monkeypatch.setattr(run_decompose, "decompose_piece", counting)
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
    owners = {}
    for rank in range(world_size):
        mine, todo = run_decompose.select_pieces(PIECES, str(tmp_path), CORPUS, MODEL, rank=rank, world_size=world_size)
        assert mine == todo  # nothing written yet
        for number in mine:
            assert number % world_size == rank and number not in owners
            owners[number] = rank
    assert sorted(owners) == list(range(PIECES))


def test_one_rank_writes_only_its_pieces(setup, tmp_path, counted):
    """run() as rank 1 of 2 (no process group needed): the odd pieces, global numbers, no projection file."""
    from huggingface_patch.corpus import read_sentitems
    from huggingface_patch.loading import load_model_and_tokenizer

    corpus, model_folder, reference = setup
    model, tokenizer, source = load_model_and_tokenizer(model_folder)
    pieces = run_decompose.prepare_pieces(read_sentitems(corpus), tokenizer, model.config)
    assert len(pieces) == PIECES
    out = str(tmp_path / "out")
    done = run_decompose.run(model, pieces, CORPUS, source.name, int(WINDOW), out, rank=1, world_size=2)
    assert done == counted == [1, 3, 5, 7]
    expected = sorted(name for n in done for name in piece_files(n))
    assert names(out) == expected
    assert_same_tensors(out, reference, expected)


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
    assert_same_tensors(out, reference, [f"{MODEL}_proj_weights.pt"])
    log = result.stderr
    assert f"{PIECES} pieces in total; 5 for this process [rank 0/2]; 0 of them already complete" in log
    assert f"{PIECES} pieces in total; 4 for this process [rank 1/2]; 0 of them already complete" in log


# ----------------------------------------------------------------------------------------------------------
# resuming


def test_rerun_of_complete_folder_computes_nothing(setup, tmp_path, monkeypatch, caplog):
    """A rerun into a complete folder runs the model on no piece and rewrites no file."""
    corpus, model, reference = setup
    out = copy_of(reference, tmp_path)
    before = mtimes(out)

    def no_forward(*args, **kwargs):
        raise AssertionError("a complete piece was recomputed")

    monkeypatch.setattr(run_decompose, "decompose_piece", no_forward)
    caplog.set_level(logging.INFO, logger="run_decompose")
    assert run_decompose.main([corpus, model, WINDOW, "--output-dir", out]) == 0
    assert mtimes(out) == before  # not even the projection weights are rewritten
    assert (f"{PIECES} pieces in total; {PIECES} for this process; {PIECES} of them already complete (skipped), "
            "0 to compute") in caplog.text


@pytest.mark.parametrize("case", ["missing-d", "missing-i", "interrupted", "stray-tmp"])
def test_resume_recomputes_only_incomplete_pieces(setup, tmp_path, counted, case):
    """Only a piece with missing files is recomputed; leftover temporary files do not confuse resuming."""
    corpus, model, reference = setup
    out = copy_of(reference, tmp_path)
    d, b, o, i = piece_files(4)
    stray = None
    if case == "missing-d":  # a deleted file
        os.remove(os.path.join(out, d))
    elif case == "missing-i":  # stopped after o_ was renamed, before i_
        os.remove(os.path.join(out, i))
    elif case == "interrupted":  # stopped while writing b_: d_ renamed, b_ only a temporary file, o_ and i_ absent
        for name in (b, o, i):
            os.remove(os.path.join(out, name))
        stray = os.path.join(out, f".tmp-k3j_x9q1-{b}")
    else:  # a temporary file next to a complete piece (a crash while rewriting it): the piece stays as it is
        stray = os.path.join(out, f".tmp-k3j_x9q1-{piece_files(2)[0]}")
    if stray:
        with open(stray, "wb") as handle:
            handle.write(b"partial")
    # a temporary file of a piece 14 (of another run) whose name ends like piece 4's: never touched
    other = os.path.join(out, f".tmp-abcdefgh-d_{CORPUS}_{MODEL}_14.pt")
    with open(other, "wb") as handle:
        handle.write(b"x")
    before = mtimes(out)

    assert run_decompose.main([corpus, model, WINDOW, "--output-dir", out]) == 0

    expected_calls = [] if case == "stray-tmp" else [4]
    assert counted == expected_calls
    after = mtimes(out)
    untouched = [name for name in before if name not in piece_files(4) or not expected_calls]
    if case == "interrupted":
        untouched.remove(os.path.basename(stray))
    assert {name: after.get(name) for name in untouched} == {name: before[name] for name in untouched}
    leftovers = [os.path.basename(other)] + ([os.path.basename(stray)] if case == "stray-tmp" else [])
    assert names(out) == sorted(expected_names() + leftovers)
    assert_same_tensors(out, reference)


def test_no_resume_recomputes_everything(setup, tmp_path, counted):
    """``--no-resume`` recomputes every piece, to the same tensors, and cleans their temporary files."""
    corpus, model, reference = setup
    out = copy_of(reference, tmp_path)
    with open(os.path.join(out, f".tmp-zzzzzzzz-{piece_files(0)[1]}"), "wb") as handle:
        handle.write(b"partial")
    assert run_decompose.main([corpus, model, WINDOW, "--output-dir", out, "--no-resume"]) == 0
    assert counted == list(range(PIECES))
    assert names(out) == expected_names()  # the temporary file of a recomputed piece is cleaned up
    assert_same_tensors(out, reference)


def test_stale_temporary_files_match_exact_names(tmp_path):
    """Only ``.tmp-<random>-<name>`` of exactly the given names are found."""
    for entry in (".tmp-abc_123-d_c_m_1.pt", ".tmp-abc_123-d_c_m_11.pt", ".tmp-xyz-d_xc_m_1.pt", "d_c_m_1.pt",
                  ".tmp-abc-i_c_m_1.pt.bak"):
        (tmp_path / entry).write_bytes(b"")
    found = run_decompose.stale_temporary_files(str(tmp_path), ["d_c_m_1.pt", "i_c_m_1.pt"])
    assert [os.path.basename(path) for path in found] == [".tmp-abc_123-d_c_m_1.pt"]


def test_plain_run_creates_no_process_group(monkeypatch):
    """Without WORLD_SIZE > 1: rank 0 of 1, no PartialState, no process group."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = run_decompose.process_info(None)
    assert (info.rank, info.world_size, info.device, info.state) == (0, 1, None, None)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert run_decompose.process_info("cpu").state is None
    assert not torch.distributed.is_initialized()
