"""Tiny random models of every supported family, built in code (for tests, examples and benchmarks).

Biases and norm weights are randomised (Hugging Face initialises them to 0 and 1), so the bias term of
the decomposition is really exercised. All tiny models share the byte-level tokenizer of the
``opt-tiny`` fixture (vocabulary 260, ``</s>`` = 2 as BOS/EOS, ``<pad>`` = 1), so any of them can be
saved to a folder and loaded by the command-line tools.
"""

from __future__ import annotations

import os
import shutil

import torch

#: kinds accepted by :func:`tiny_config` / :func:`build_tiny_model`, one or more per family
TINY_KINDS = ("opt-pre", "opt-post", "gpt2", "llama", "mistral", "qwen2", "gemma", "gemma2", "gemma3", "gptj",
              "neox-parallel", "neox-sequential", "phi3", "qwen3")

VOCAB = 260
_TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json")


def _llama_shaped(cls, extra: dict, common: dict):
    return cls(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
               intermediate_size=96, max_position_embeddings=256, tie_word_embeddings=False, rms_norm_eps=1e-5,
               **extra, **common)


def tiny_config(kind: str, **overrides):
    """A small config of the given kind (hidden 64, 3 layers; grouped-query attention where the family has
    it; sliding windows shorter than the test inputs; biases switched on wherever the family allows them)."""
    import transformers as tf

    common = dict(vocab_size=VOCAB, bos_token_id=2, eos_token_id=2, pad_token_id=1)
    if kind == "opt-pre":
        cfg = tf.OPTConfig(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, ffn_dim=128,
                           max_position_embeddings=128, word_embed_proj_dim=64, do_layer_norm_before=True,
                           dropout=0.0, **common)
    elif kind == "opt-post":
        # OPT-350m arrangement: post-LayerNorm, no final norm, project_in/project_out
        cfg = tf.OPTConfig(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, ffn_dim=128,
                           max_position_embeddings=128, word_embed_proj_dim=32, do_layer_norm_before=False,
                           dropout=0.0, **common)
    elif kind == "gpt2":
        cfg = tf.GPT2Config(n_embd=64, n_layer=3, n_head=4, n_positions=128, n_inner=128,
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common)
    elif kind in ("llama", "mistral", "qwen2"):
        cls = {"llama": tf.LlamaConfig, "mistral": tf.MistralConfig, "qwen2": tf.Qwen2Config}[kind]
        extra = {"sliding_window": None} if kind != "llama" else {"attention_bias": True, "mlp_bias": True}
        cfg = _llama_shaped(cls, extra, common)
    elif kind == "qwen3":
        cfg = _llama_shaped(tf.Qwen3Config, {"head_dim": 16, "attention_bias": True}, common)
    elif kind == "phi3":
        cfg = _llama_shaped(tf.Phi3Config, {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attention_dropout": 0.0}, common)
    elif kind == "gemma":
        cfg = _llama_shaped(tf.GemmaConfig, {"head_dim": 16, "attention_bias": True}, common)
    elif kind == "gemma2":
        # softcapping small enough to matter; sliding window shorter than the test inputs
        cfg = _llama_shaped(tf.Gemma2Config, {"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 5,
                                              "attn_logit_softcapping": 5.0, "final_logit_softcapping": 3.0,
                                              "attention_bias": True,
                                              "layer_types": ["sliding_attention", "full_attention",
                                                              "sliding_attention"]}, common)
    elif kind == "gemma3":
        cfg = _llama_shaped(tf.Gemma3TextConfig, {"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 5,
                                                  "attention_bias": True,
                                                  "layer_types": ["sliding_attention", "sliding_attention",
                                                                  "full_attention"]}, common)
    elif kind == "gptj":
        cfg = tf.GPTJConfig(n_embd=64, n_layer=3, n_head=4, n_inner=128, rotary_dim=8, n_positions=128,
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common)
    elif kind in ("neox-parallel", "neox-sequential"):
        cfg = tf.GPTNeoXConfig(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=128,
                               max_position_embeddings=128, use_parallel_residual=kind == "neox-parallel",
                               attention_bias=True, hidden_dropout=0.0, attention_dropout=0.0,
                               tie_word_embeddings=False, **common)
    else:
        raise ValueError(f"unknown tiny model kind {kind!r}: choose from {', '.join(TINY_KINDS)}")
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


@torch.no_grad()
def randomize_biases_and_norms(model: torch.nn.Module, seed: int = 0, scale: float = 0.1) -> torch.nn.Module:
    """Give every bias and every norm gain a random non-zero value (in place)."""
    gen = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "bias":
            param.copy_(torch.randn(param.shape, generator=gen) * scale)
        elif param.ndim == 1 and leaf == "weight":  # LayerNorm / RMSNorm gains
            param.copy_(1.0 + torch.randn(param.shape, generator=gen) * 0.3)
    return model


def build_tiny_model(kind: str, *, decomposed: bool = True, seed: int = 0, attn_implementation: str = "eager",
                     **overrides):
    """A tiny random causal LM of ``kind`` in eval mode (decomposing class unless ``decomposed=False``)."""
    from transformers import AutoModelForCausalLM

    config = tiny_config(kind, **overrides)
    config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    if decomposed:
        from .modeling.auto import AutoDecomposedModelForCausalLM

        model = AutoDecomposedModelForCausalLM.from_config(config)
    else:
        model = AutoModelForCausalLM.from_config(config)
    randomize_biases_and_norms(model, seed=seed)
    return model.eval()


def tokenizer_folder() -> str:
    """The folder of the byte-level tokenizer files shipped with the package."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "byte_tokenizer")


def save_with_tokenizer(model, folder: str) -> str:
    """Save ``model`` plus the byte-level tokenizer to ``folder`` (loadable by every command-line tool)."""
    from transformers import AutoTokenizer

    model.save_pretrained(folder)
    for name in _TOKENIZER_FILES:
        shutil.copy(os.path.join(tokenizer_folder(), name), os.path.join(folder, name))
    # also the fast tokenizer's own file: some families (Mistral, Phi-3) resolve their tokenizer class from
    # the model config and need it
    AutoTokenizer.from_pretrained(tokenizer_folder()).save_pretrained(folder)
    return folder


def save_tiny_model(kind: str, folder: str, *, seed: int = 0, **overrides) -> str:
    """Save a tiny random model of ``kind`` plus the byte-level tokenizer to ``folder``; returns it."""
    return save_with_tokenizer(build_tiny_model(kind, decomposed=False, seed=seed, **overrides), folder)
