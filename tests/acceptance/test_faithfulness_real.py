"""The faithfulness benchmark on SmolLM2-135M: known-answer items and a small benchmark run (marked
``real_model``; the tiny-model tests are in ``tests/unit/test_faithfulness.py``)."""

from __future__ import annotations

import json

import pytest
from helpers import exit_code

from huggingface_patch.faithfulness.items import agreement_items, ioi_items


@pytest.mark.real_model
def test_known_answer_items_name_the_right_sources(smollm2):
    from huggingface_patch.corpus import StartToken

    _, tokenizer = smollm2
    start = StartToken(0, "<s>", "test")
    items = agreement_items(tokenizer, start, count=50) + ioi_items(tokenizer, start, count=50)
    assert len(items) == 100
    for item in items:
        right_text = tokenizer.decode([item.ids[p] for p in item.right])
        # the subject (agreement) and the indirect object (IOI) are the second word of every template
        assert right_text.strip() == item.text.split()[1].rstrip(","), (item.text, right_text)
        assert item.foil != item.answer and item.ids[0] == 0


@pytest.mark.real_model
def test_small_benchmark_on_smollm2(tmp_path):
    """The small version of the benchmark on the real model, every method (CI installs the extra)."""
    from analysis import faithfulness

    out = tmp_path / "smol"
    assert exit_code(faithfulness.main, ["--model", "smollm2-135m", "--items", 2, "--task-items", 2,
                                         "--output-dir", out]) == 0
    summary = json.loads((out / "faithfulness_summary.json").read_text())
    assert set(summary["task_items"]) == {"ioi", "agreement"}
    for method, metrics in summary["summary"].items():
        assert {"spearman_loo", "area_between", "lds", "mrr_ioi", "mrr_agreement"} <= set(metrics), method
