"""Shims for Transformers version drift, each with what it does and when it can go.

Tested floor: transformers 5.0 (developed against 5.23).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


def layer_output_tensor(output) -> torch.Tensor:
    """Decoder layers return a bare tensor in Transformers 5 and a tuple in 4.x; accept both.

    Can go once 4.x support is formally dropped (it is not tested).
    """
    return output[0] if isinstance(output, (tuple, list)) else output


@contextlib.contextmanager
def eager_attention(model: nn.Module):
    """Run ``model`` with eager attention (the only implementation that returns probabilities).

    Transformers 5 picks the attention function per call from ``config._attn_implementation``, so switching
    it with ``set_attn_implementation`` and back is enough; a model already on eager is left untouched.
    """
    previous = getattr(model.config, "_attn_implementation", "eager")
    if previous == "eager":
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(previous)
