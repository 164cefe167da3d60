"""The two bundled real models in fp32: SmolLM2-135M-Instruct (Llama) and Gemma 3 270M (``gemma3_text``).

Identity at every layer and at the output, logits equal to the plain Hugging Face class loaded separately
from the same folder, window invariance, padded batches, and each model's own " Paris" completion.
"""

from __future__ import annotations

import pytest
import torch
from helpers import assert_close_rel
from transformers import AutoModelForCausalLM

from huggingface_patch.loading import resolve_model

pytestmark = pytest.mark.real_model

#: identity at every layer within 1e-4 x max|h|
REAL_TOLERANCE = 1e-4
SENTENCE = "The keys to the old cabinet are on the table, but nobody knows who left them there."
MODELS = {
    "smollm2": ("smollm2-135m", "LlamaForCausalLM", "The capital of France is"),
    "gemma3": ("gemma3-270m", "Gemma3ForCausalLM", "The Eiffel Tower is located in the city of"),
}


@pytest.fixture(params=list(MODELS))
def real(request):
    """``(name, model, tokenizer)`` of each bundled model in turn."""
    model, tokenizer = request.getfixturevalue(request.param)
    return request.param, model, tokenizer


def test_answers_paris(real):
    name, model, tokenizer = real
    ids = tokenizer(MODELS[name][2], return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    assert tokenizer.decode(int(logits[0, -1].argmax())) == " Paris"


def test_gemma3_config_is_the_released_one(gemma3):
    config = gemma3[0].config
    assert (config.model_type, config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
            config.num_key_value_heads, config.head_dim, config.vocab_size, config.sliding_window) == \
        ("gemma3_text", 18, 640, 4, 1, 256, 262144, 512)
    assert config.layer_types.count("full_attention") == 3 and config.tie_word_embeddings
    assert gemma3[1]("x").input_ids[0] == config.bos_token_id == 2  # the tokenizer adds the BOS itself


def test_identity_every_layer_and_base_class_logits(real):
    name, model, tokenizer = real
    assert type(model).__name__ == "Decomposed" + MODELS[name][1]
    plain = AutoModelForCausalLM.from_pretrained(resolve_model(MODELS[name][0]).path, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    assert type(plain).__name__ == MODELS[name][1]
    ids = tokenizer(SENTENCE, return_tensors="pt").input_ids
    with torch.no_grad():
        reference = plain(ids, output_hidden_states=True)
        out = model(ids, decomposition_window=ids.shape[1], output_layer_decompositions=True, output_hidden_states=True)
    assert torch.equal(out.logits, reference.logits), f"{name}: logits differ from the base class"
    for layer in range(len(out.layer_decompositions) - 1):
        summed = out.layer_decompositions[layer].sum(1) + out.layer_decomposition_biases[layer]
        assert_close_rel(summed, reference.hidden_states[layer], REAL_TOLERANCE, f"{name} layer {layer}")
    final = out.decomposition.sum(1) + out.decomposition_bias
    assert_close_rel(final, reference.hidden_states[-1], REAL_TOLERANCE, f"{name} final state")


def test_window_invariance(real):
    name, model, tokenizer = real
    ids = tokenizer(SENTENCE, return_tensors="pt").input_ids
    with torch.no_grad():
        full = model(ids, decomposition_window=ids.shape[1]).decomposition
        part = model(ids, decomposition_window=4, decomposition_block_size=5).decomposition
    assert_close_rel(part, full[:, :4], 1e-5, f"{name} window 4 vs full")


def test_padded_batch_equivalence(real):
    name, model, tokenizer = real
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
                assert_close_rel(batch.decomposition[row, :, span], single.decomposition[0], 1e-4,
                                 f"{name} {side} row {row}")
