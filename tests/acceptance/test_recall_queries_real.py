"""The subject span on SmolLM2-135M's tokenizer (marked ``real_model``; the tiny-model tests are in
``tests/unit/test_recall_queries.py``)."""

from __future__ import annotations

import pytest
from helpers import RECALL_PROMPTS, subject_span_text

PROMPTS, _span_text = RECALL_PROMPTS, subject_span_text


@pytest.mark.real_model
def test_subject_span_on_smollm2_tokenizer(smollm2):
    _, tokenizer = smollm2
    for subject, prompt in PROMPTS + [("Beats Music", "Beats Music is owned by")]:
        ids, (start, end), text = _span_text(tokenizer, prompt, subject)
        assert text.strip() == subject, (prompt, tokenizer.convert_ids_to_tokens(ids))
