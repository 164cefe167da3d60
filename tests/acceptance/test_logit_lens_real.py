"""The logit lens command line on SmolLM2-135M (marked ``real_model``; the tiny-model tests are in
``tests/unit/test_logit_lens.py``)."""

from __future__ import annotations

import json

import pytest

from analysis.logit_lens import main


@pytest.mark.real_model
def test_cli_real_model(tmp_path, example_corpus):
    out = tmp_path / "out"
    assert main(["--corpus", example_corpus, "--output-dir", str(out), "--max-documents", "1", "--max-tokens",
                 "16"]) == 0
    data = json.loads((out / "logit_lens_smollm2-135m.json").read_text())
    assert len(data["rows"]) == 31 and all(r == 1 for r in data["documents"][0]["final_top1_rank"][-1])
    assert (out / "logit_lens_smollm2-135m_doc0_prob.png").stat().st_size > 0
