"""ΔLP against real ablation on SmolLM2-135M (marked ``real_model``; the tiny-model tests are in
``tests/unit/test_attribution.py``)."""

from __future__ import annotations

import random

import pytest
import torch

from huggingface_patch.attribution.ablation import agreement, real_ablation, sample_pairs
from huggingface_patch.attribution.tables import (
    analyse_piece,
)


@pytest.mark.real_model
def test_ablation_agreement_on_smollm2(smollm2):
    model, tokenizer = smollm2
    text = "The capital of France is Paris, and the capital of Italy is Rome."
    ids = torch.tensor([model.config.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"])
    analysis = analyse_piece(model, tokenizer, ids, window=8)  # a short window keeps the test fast
    pairs = sample_pairs(len(ids), 8, 10**6, random.Random(0))  # every pair: one re-run per source anyway
    delta = analysis.deltalp().delta
    for pair in pairs:
        pair.delta_lp = float(delta[pair.target - pair.source, pair.target])
    real_ablation(model, ids, pairs)
    stats = agreement([p.delta_lp for p in pairs], [p.real_delta_lp for p in pairs])
    assert stats["n"] == len(pairs) > 50
    assert stats["spearman"] > 0.2 and stats["spearman_p"] < 0.01, stats
