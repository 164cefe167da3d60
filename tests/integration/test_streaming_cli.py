"""``run_decompose.py --deltalp`` (streaming) and ``--max-memory``: same ΔLP as the two-script pipeline,
bounded memory, clean refusal, resumable."""

from __future__ import annotations

import os
import re

import pytest
import torch
from helpers import FIXTURES  # noqa: E402

import representations_to_deltalp
import run_decompose

OPT_TINY = os.path.join(FIXTURES, "opt-tiny")
CORPUS = os.path.join(FIXTURES, "paper-reference", "stories.sentitems")
NUMBER = re.compile(r"-?\d+\.\d+(?:e-?\d+)?|-?inf|nan")


def _numbers(text: str) -> list[float]:
    return [float(x) for x in NUMBER.findall(text)]


@pytest.fixture(scope="module")
def both_modes(tmp_path_factory):
    files = str(tmp_path_factory.mktemp("files"))
    stream = str(tmp_path_factory.mktemp("stream"))
    assert run_decompose.main([CORPUS, OPT_TINY, "8", "--output-dir", files]) == 0
    assert run_decompose.main([CORPUS, OPT_TINY, "8", "--output-dir", stream, "--deltalp", "--max-memory", "2GB"]) == 0
    return files, stream


def test_streaming_text_equals_two_script_pipeline(both_modes, capsys):
    files, stream = both_modes
    pieces = sorted(f for f in os.listdir(files) if f.startswith("i_"))
    assert pieces, "no pieces written"
    assert not any(f.startswith("d_") for f in os.listdir(stream)), "streaming mode must not write d_ files"
    for name in pieces:
        identifier = name[2:-3]
        capsys.readouterr()
        assert representations_to_deltalp.main([identifier, OPT_TINY, "--output-dir", files]) == 0
        expected = capsys.readouterr().out
        with open(os.path.join(stream, f"deltalp_{identifier}.txt"), encoding="utf-8") as handle:
            streamed = handle.read()
        assert NUMBER.sub("#", streamed) == NUMBER.sub("#", expected), f"{identifier}: text differs"
        a, b = _numbers(streamed), _numbers(expected)
        worst = max((abs(x - y) for x, y in zip(a, b) if x == x and y == y), default=0.0)
        assert worst <= 1e-4, f"{identifier}: largest number difference {worst:.3e}"
        table = torch.load(os.path.join(stream, f"deltalp_{identifier}.pt"), weights_only=True)
        ids = torch.load(os.path.join(files, name), weights_only=True)[0]
        assert torch.equal(table["ids"], ids)
        assert table["delta"].shape == (min(8, ids.numel()), ids.numel() - 1)


def test_streaming_rerun_skips_complete_pieces(both_modes, caplog):
    _, stream = both_modes
    before = {f: os.path.getmtime(os.path.join(stream, f)) for f in os.listdir(stream)}
    with caplog.at_level("INFO"):
        assert run_decompose.main([CORPUS, OPT_TINY, "8", "--output-dir", stream, "--deltalp"]) == 0
    after = {f: os.path.getmtime(os.path.join(stream, f)) for f in os.listdir(stream)}
    assert before == after
    assert "already complete" in caplog.text


def test_max_memory_too_small_is_refused_with_one_line(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert run_decompose.main([CORPUS, OPT_TINY, "8", "--output-dir", out, "--max-memory", "1KB"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "memory budget is 1.0 KiB" in err[0] and "raise the budget" in err[0], err
    assert not os.path.exists(out) or not [f for f in os.listdir(out) if f.startswith(("d_", "i_", "deltalp_"))]


@pytest.mark.parametrize("value", ["lots", "-1GB"])
def test_max_memory_malformed(tmp_path, capsys, value):
    assert run_decompose.main([CORPUS, OPT_TINY, "8", "--output-dir", str(tmp_path), f"--max-memory={value}"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "--max-memory" in err[0], err
