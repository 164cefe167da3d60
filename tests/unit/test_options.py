"""``DecompositionOptions``: one validated set of settings; ``forward`` gives the same result from it as from
the loose keyword arguments, and refuses both at once."""

import pytest
import torch

from huggingface_patch import DecompositionOptions
from huggingface_patch.errors import InputError
from huggingface_patch.testing import build_tiny_model


@pytest.mark.parametrize("bad, match", [
    (dict(window=0), "decomposition_window must be a positive integer"),
    (dict(window=True), "decomposition_window must be a positive integer"),
    (dict(window=4, block_size=-1), "decomposition_block_size must be a positive integer"),
    (dict(window=4, max_memory="lots"), "decomposition_max_memory: memory budget must look like"),
    (dict(window=4, mlp_path="fast"), "decomposition_mlp_path must be one of auto, dense, sparse"),
    (dict(window=4, precision="fp8"), "unknown decomposition precision"),
])
def test_bad_options_are_refused_with_their_name(bad, match):
    with pytest.raises(InputError, match=match):
        DecompositionOptions(**bad)


def test_memory_budget_is_read_once():
    assert DecompositionOptions(window=3, max_memory="1GiB").max_memory == 2**30


def test_forward_from_options_equals_forward_from_keywords():
    model = build_tiny_model("llama").eval()
    ids = torch.randint(3, 200, (1, 9), generator=torch.Generator().manual_seed(0))
    loose = model(ids, decomposition_window=5, decomposition_block_size=2, output_layer_decompositions=True)
    options = DecompositionOptions(window=5, block_size=2, output_layers=True)
    packed = model(ids, decomposition_options=options)
    difference = (loose.decomposition - packed.decomposition).abs().max().item()
    assert difference == 0.0, f"largest difference {difference:.3e}"
    # and with every source in the window the identity holds: contributions plus bias give the final state
    whole = model(ids, decomposition_options=options.replace(window=ids.shape[1]))
    final = model(ids, output_hidden_states=True).hidden_states[-1]
    gap = (whole.decomposition.sum(1) + whole.decomposition_bias - final).abs().max().item()
    assert gap < 1e-4, f"identity: largest difference {gap:.3e}"


def test_options_and_loose_keywords_together_are_refused():
    model = build_tiny_model("llama").eval()
    ids = torch.randint(3, 200, (1, 6))
    with pytest.raises(InputError, match="pass either decomposition_options or decomposition_block_size"):
        model(ids, decomposition_options=DecompositionOptions(window=3), decomposition_block_size=2)


def test_forward_keyword_defaults_match_the_options_defaults():
    """Every loose ``forward`` keyword is one option field, and its default in ``forward`` is the field's own
    default (or None, which the options turn into that default): the two cannot drift apart."""
    import dataclasses
    import inspect

    from huggingface_patch.engine.options import FORWARD_KEYWORDS
    from huggingface_patch.modeling.mixin import _FORWARD_DEFAULTS, DecompositionMixin

    parameters = inspect.signature(DecompositionMixin.forward).parameters
    assert set(FORWARD_KEYWORDS) <= set(parameters), set(FORWARD_KEYWORDS) - set(parameters)
    assert set(_FORWARD_DEFAULTS) == set(FORWARD_KEYWORDS)
    fields = {field.name: field for field in dataclasses.fields(DecompositionOptions)}
    for keyword, name in FORWARD_KEYWORDS.items():
        default = parameters[keyword].default
        if default is None or fields[name].default is dataclasses.MISSING:
            continue
        expected = fields[name].default
        assert default == expected, f"{keyword}: forward says {default!r}, the options {expected!r}"
