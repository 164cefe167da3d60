"""``layers`` and ``order`` on the real SmolLM2-135M with the example corpus (marked ``real_model``)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from analysis.saturation import main


@pytest.mark.real_model
def test_layers_and_order_on_smollm2(smollm2, example_corpus, tmp_path, monkeypatch):
    """The ``layers`` and ``order`` subcommands on SmolLM2 (the session's loaded model is reused)."""
    from huggingface_patch import loading

    model, tokenizer = smollm2
    source = loading.ModelSource("smollm2", "smollm2-135m")
    monkeypatch.setattr(loading, "load_model_and_tokenizer", lambda *args, **kwargs: (model, tokenizer, source))
    for command in ("layers", "order"):
        assert main([command, "--corpus", example_corpus, "--output-dir", str(tmp_path / command),
                     "--no-progress"]) == 0

    with open(tmp_path / "layers" / "saturation_layers.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    sat = np.array([[int(row[f"s{i}"]) for i in range(1, 6)] for row in rows])
    assert len(rows) > 100 and sat.min() >= 0 and sat.max() <= 29
    known = [row for row in rows if int(row["target"]) >= 0]
    # the last lens layer is the model's own prediction: far above chance on ordinary English text
    assert np.mean([row["t1"] == row["target"] for row in known]) > 0.2
    kept = sat[:, 0] <= 25  # floor(0.85 * 30)
    assert [row["kept"] == "True" for row in rows] == kept.tolist()

    summary = json.loads((tmp_path / "order" / "saturation_order.json").read_text())
    assert summary["num_layers"] == 30 and summary["kept_positions"] == int(kept.sum())
    for kendall in (summary["kendall"]["paper"], summary["kendall"]["selection_aware"]):
        assert kendall["permutations"] == 1000 and kendall["positions"] > 0 and np.isfinite(kendall["tau"])
        assert 0 < kendall["p_value"] <= 1
    assert summary["kendall"]["paper"]["tau"] == summary["kendall"]["selection_aware"]["tau"]
    assert (tmp_path / "order" / "saturation_rank_correspondence.png").stat().st_size > 0
