"""The decomposing classes behave like their Hugging Face bases and load through from_pretrained."""

from __future__ import annotations

import pytest
import torch
import transformers

import huggingface_patch as hp
from huggingface_patch.testing import build_tiny_model, save_tiny_model, tiny_config

PAIRS = [
    (hp.DecomposedOPTForCausalLM, transformers.OPTForCausalLM),
    (hp.DecomposedOPTModel, transformers.OPTModel),
    (hp.DecomposedGPT2LMHeadModel, transformers.GPT2LMHeadModel),
    (hp.DecomposedGPT2Model, transformers.GPT2Model),
    (hp.DecomposedLlamaForCausalLM, transformers.LlamaForCausalLM),
    (hp.DecomposedLlamaModel, transformers.LlamaModel),
]


@pytest.mark.parametrize("cls,base", PAIRS, ids=[p[0].__name__ for p in PAIRS])
def test_subclass_of_base(cls, base):
    assert issubclass(cls, base)


@pytest.mark.parametrize("kind", ["opt-pre", "opt-post", "gpt2", "llama"])
def test_auto_from_pretrained_picks_class(kind, tmp_path):
    folder = save_tiny_model(kind, str(tmp_path / kind))
    model = hp.AutoDecomposedModelForCausalLM.from_pretrained(folder, attn_implementation="eager")
    expected = {"opt-pre": "DecomposedOPTForCausalLM", "opt-post": "DecomposedOPTForCausalLM",
                "gpt2": "DecomposedGPT2LMHeadModel", "llama": "DecomposedLlamaForCausalLM"}[kind]
    assert type(model).__name__ == expected
    plain = transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager")
    ids = torch.randint(3, 260, (1, 7))
    assert torch.equal(model(ids).logits, plain(ids).logits)
    assert torch.equal(model(ids, decomposition_window=3).logits, plain(ids).logits)


@pytest.mark.parametrize("kind,cls", [("opt-post", hp.DecomposedOPTModel), ("gpt2", hp.DecomposedGPT2Model),
                                      ("llama", hp.DecomposedLlamaModel)])
def test_bare_models_decompose_last_hidden_state(kind, cls, tmp_path):
    folder = save_tiny_model(kind, str(tmp_path / kind))
    model = cls.from_pretrained(folder).eval()
    out = model(torch.randint(3, 260, (2, 6)), decomposition_window=6)
    recon = out.decomposition.sum(1) + out.decomposition_bias
    assert float((recon - out.last_hidden_state).abs().max()) < 1e-4 * float(out.last_hidden_state.abs().max())


def test_unsupported_architecture_names_supported_ones():
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    with pytest.raises(ValueError) as info:
        hp.AutoDecomposedModelForCausalLM.from_config(config)
    message = str(info.value)
    assert "bert" in message and "opt" in message and "gpt2" in message and "llama" in message


def test_without_window_behaves_as_base_class():
    model = build_tiny_model("gpt2")
    ids = torch.randint(3, 260, (1, 5))
    out = model(ids)
    assert type(out).__name__ == "CausalLMOutputWithCrossAttentions"
    assert not hasattr(out, "decomposition")
    with pytest.raises(ValueError):
        model(ids, output_layer_decompositions=True)


def test_config_dec_len_is_the_default_window():
    model = build_tiny_model("opt-pre")
    model.config.dec_len = 3
    out = model(torch.randint(3, 260, (1, 8)))
    assert out.decomposition.shape == (1, 3, 8, 64)


@pytest.mark.parametrize("window", [0, -2, 1.5, True])
def test_bad_window_is_rejected(window):
    model = build_tiny_model("opt-pre")
    with pytest.raises(ValueError, match="positive integer"):
        model(torch.randint(3, 260, (1, 4)), decomposition_window=window)


def test_sdpa_model_still_decomposes_and_is_restored():
    model = build_tiny_model("llama", attn_implementation="sdpa")
    ids = torch.randint(3, 260, (1, 6))
    before = model(ids).logits
    out = model(ids, decomposition_window=6)
    assert model.config._attn_implementation == "sdpa"
    assert float((out.logits - before).abs().max()) < 1e-5
    assert out.decomposition.shape == (1, 6, 6, 64)


def test_return_dict_false_gives_tuple():
    model = build_tiny_model("opt-pre")
    out = model(torch.randint(3, 260, (1, 4)), decomposition_window=2, return_dict=False)
    assert isinstance(out, tuple)


def test_tiny_config_kinds():
    assert tiny_config("opt-post").do_layer_norm_before is False
    assert tiny_config("llama").num_key_value_heads < tiny_config("llama").num_attention_heads
