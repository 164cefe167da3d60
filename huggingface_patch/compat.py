"""Shims for Transformers version drift and internals, each with what it does and when it can go.

Tested: Transformers 5.24, the release CI installs; ``setup.py`` asks for 5.24 or a later 5.x, and every
later release is checked by the per-layer comparison with the model (a changed layer fails loudly).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


def layer_output_tensor(output) -> torch.Tensor:
    """The tensor a hooked module returned: decoder layers and norms return a bare tensor, attention modules
    a tuple whose first element is the output."""
    return output[0] if isinstance(output, (tuple, list)) else output


def inherit_checkpoint_conversions(cls: type, base: type) -> None:
    """Let the decomposing subclass ``cls`` load checkpoints exactly as ``base`` does.

    Transformers 5 renames checkpoint keys while loading by looking up the model's *class name* (e.g.
    ``GPTNeoXForCausalLM`` maps ``embed_out`` to ``lm_head``) and skips the lookup for classes defined outside
    ``transformers`` unless their name was registered: without this a ``DecomposedGPTNeoXForCausalLM``
    would load Pythia checkpoints with a freshly initialised LM head. Registers ``base``'s mapping under
    ``cls``'s name; goes when Transformers looks conversions up along the class hierarchy.
    """
    from transformers.conversion_mapping import (
        get_checkpoint_conversion_mapping,
        register_checkpoint_conversion_mapping,
    )

    mapping = get_checkpoint_conversion_mapping(base.__name__)
    if mapping is not None:
        register_checkpoint_conversion_mapping(cls.__name__, mapping, overwrite=True)


@contextlib.contextmanager
def eager_attention(model: nn.Module):
    """Run ``model`` with eager attention (the only implementation that returns probabilities) and, for a
    float64 mixture-of-experts model, eager experts (Transformers 5 defaults to a grouped matmul that refuses
    float64; in other dtypes the model's own choice is kept, so the decomposing class gives its base class's
    logits bit for bit).

    Transformers 5 picks both implementations per call from the config, so switching them with
    ``set_attn_implementation`` / ``set_experts_implementation`` and back is enough; a model already on eager
    is left untouched.
    """
    previous = getattr(model.config, "_attn_implementation", "eager")
    experts = getattr(model.config, "_experts_implementation", None)
    switch_experts = (experts not in (None, "eager") and hasattr(model, "set_experts_implementation")
                      and getattr(model, "dtype", None) == torch.float64)
    if previous != "eager":
        model.set_attn_implementation("eager")
    if switch_experts:
        model.set_experts_implementation("eager")
    try:
        yield
    finally:
        if previous != "eager":
            model.set_attn_implementation(previous)
        if switch_experts:
            model.set_experts_implementation(experts)


def cached_step(model: nn.Module, input_ids: torch.Tensor, cache, **kwargs):
    """One forward pass that continues ``cache`` (None: start one); returns ``(output, cache)``. Transformers
    5.24 names the argument and the output field ``cache`` (``past_key_values`` is deprecated there)."""
    out = model(input_ids=input_ids, use_cache=True, cache=cache, **kwargs)
    return out, out.cache


def cache_prefix(cache, length: int):
    """A copy of the key/value ``cache`` holding only its first ``length`` positions, or None where the cut
    could not restore the cache exactly (a layer that cannot be cropped, or a sliding-window layer that has
    already dropped states). Transformers 5.24's ``crop`` takes the number of positions to remove."""
    import copy

    total = cache.get_seq_length()
    if not 0 < length <= total or not cache.is_croppable:
        return None
    if any(getattr(layer, "sliding_window", None) is not None and total >= layer.sliding_window
           for layer in cache.layers):
        return None
    cut = copy.deepcopy(cache)
    if length < total:
        cut.crop(length - total)
    return cut
