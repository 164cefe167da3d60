"""The subject span on SmolLM2-135M's tokenizer (marked ``real_model``; the tiny-model tests are in
``tests/unit/test_recall_queries.py``)."""

from __future__ import annotations

import pytest

from huggingface_patch.recall.queries import encode_prompt, find_subject, subject_token_span

#: subjects whose tokens are word pieces of several kinds (the unit tests use the same on a byte tokenizer)
PROMPTS = [
    ("Vinson Massif", "Vinson Massif is located in the continent of"),
    ("Roman Republic", "The capital of Roman Republic is"),
    ("Audible.com", "Audible.com is owned by"),
    ("Iron Man", "Iron Man is affiliated with the"),
]


def _span_text(tokenizer, prompt, subject):
    ids, offsets = encode_prompt(tokenizer, prompt)
    start, end = subject_token_span(offsets, *find_subject(prompt, subject))
    return ids, (start, end), tokenizer.decode(ids[start:end])


@pytest.mark.real_model
def test_subject_span_on_smollm2_tokenizer(smollm2):
    _, tokenizer = smollm2
    for subject, prompt in PROMPTS + [("Beats Music", "Beats Music is owned by")]:
        ids, (start, end), text = _span_text(tokenizer, prompt, subject)
        assert text.strip() == subject, (prompt, tokenizer.convert_ids_to_tokens(ids))
