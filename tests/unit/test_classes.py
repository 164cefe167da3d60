"""The decomposing classes behave like their Hugging Face bases and load through from_pretrained, for every
family; unsupported families get one clear error."""

from __future__ import annotations

import pytest
import torch
import transformers
from helpers import assert_close_rel

import huggingface_patch as hp
from huggingface_patch.modeling.classes import builtin_class_names, decomposed_class_for
from huggingface_patch.testing import TINY_KINDS, build_tiny_model, save_tiny_model, tiny_config


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_auto_from_pretrained_picks_the_family_class(kind, tmp_path):
    """The Auto class loads ``Decomposed`` + the class Transformers itself picks, with the same logits with and
    without a window, and ``from huggingface_patch import Decomposed...`` names that same class."""
    folder = save_tiny_model(kind, str(tmp_path / kind))
    plain = transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    model = hp.AutoDecomposedModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    assert type(model).__name__ == "Decomposed" + type(plain).__name__
    assert type(model).__mro__[2] is type(plain)
    assert getattr(hp, type(model).__name__) is type(model)
    ids = torch.randint(3, 260, (1, 7))
    assert torch.equal(model(ids).logits, plain(ids).logits)
    assert torch.equal(model(ids, decomposition_window=3).logits, plain(ids).logits)


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_bare_models_decompose_last_hidden_state(kind, tmp_path):
    """The bare decoder class of every family decomposes its ``last_hidden_state``."""
    folder = save_tiny_model(kind, str(tmp_path / kind))
    cls = decomposed_class_for(tiny_config(kind), head=False)
    model = cls.from_pretrained(folder, attn_implementation="eager").eval()
    assert type(model).__name__ in builtin_class_names()
    with torch.no_grad():
        out = model(torch.randint(3, 260, (2, 6)), decomposition_window=6)
    assert_close_rel(out.decomposition.sum(1) + out.decomposition_bias, out.last_hidden_state, 1e-4,
                     f"{kind} bare model")


def test_unsupported_architecture_names_supported_ones():
    config = transformers.MambaConfig(hidden_size=32, num_hidden_layers=1, state_size=4, expand=2)
    with pytest.raises(ValueError) as info:
        hp.AutoDecomposedModelForCausalLM.from_config(config)
    message = str(info.value)
    assert "mamba" in message and all(name in message for name in hp.list_architectures())
    assert len(message.splitlines()) == 1


def test_unknown_class_name_is_an_attribute_error():
    with pytest.raises(AttributeError):
        hp.DecomposedNoSuchModel  # noqa: B018 (the lookup itself is what is tested)


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
    assert tiny_config("neox-parallel").use_parallel_residual
    assert not tiny_config("neox-sequential").use_parallel_residual


def test_every_builtin_family_owns_a_tiny_configuration():
    """A family added without tiny configurations would escape every test that runs over the families."""
    from huggingface_patch.architectures.registry import builtin_adapters

    for adapter in builtin_adapters():
        configs = adapter.tiny_configs()
        assert configs, f"the {adapter.name} adapter has no tiny_configs()"
        for kind, config in configs.items():
            assert config.model_type in adapter.model_types, (adapter.name, kind, config.model_type)
