"""The path-length command line on the bundled real models (marked ``real_model``; the tiny-model tests are
in ``tests/unit/test_path_length.py``)."""

from __future__ import annotations

import json

import pytest

from analysis.path_length import main


@pytest.mark.real_model
def test_cli_real_model(tmp_path, example_corpus):
    out = tmp_path / "out"
    assert main(["--corpus", example_corpus, "--output-dir", str(out), "--no-plots"]) == 0
    row = json.loads((out / "path_length_summary.json").read_text())["models"][0]
    assert row["model"] == "smollm2-135m" and row["num_layers"] == 30 and row["tokens_with_next"] > 50
