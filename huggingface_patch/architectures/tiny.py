"""Pieces the adapters' tiny test configurations share (:meth:`ArchitectureAdapter.tiny_configs`).

Tiny models are random (hidden 64, 3 layers, the 260-token byte-level vocabulary of
:mod:`huggingface_patch.testing`), with biases and norm gains randomised by the tests, so that every
bias and every gain is exercised; grouped-query attention and sliding windows shorter than the test inputs
wherever a family has them.
"""

from __future__ import annotations

#: what every tiny config shares: the byte-level test vocabulary and its special ids
COMMON = dict(vocab_size=260, bos_token_id=2, eos_token_id=2, pad_token_id=1)


def llama_shaped(cls, **extra):
    """A Llama-shaped tiny config of class ``cls`` (hidden 64, 3 layers, 4 query and 2 key/value heads)."""
    values = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=96, max_position_embeddings=256, tie_word_embeddings=False, rms_norm_eps=1e-5)
    values.update(extra)
    return cls(**values, **COMMON)
