"""Which parameters to read: a stated rule instead of browsing (for reports built on Dar et al. 2023).

For each chosen layer:

* the **FF neuron** most often among the ``n`` most activated neurons of that layer over a corpus's
  positions (the same activation statistic as the alignment experiment, :mod:`.align`; ties go to the lower
  index);
* the **attention heads** with the largest Frobenius norm of ``W_VO = W_V,h W_O,h`` and of
  ``W_QK = W_Q,h W_K,hᵀ`` (how much the head can write, and how sharply it can attend, before any input).

Default layers: ``⌊L/4⌋, ⌊L/2⌋, ⌊3L/4⌋, L-1``.
"""

from __future__ import annotations

import torch
from torch import nn

from .align import collect_activations
from .projections import (
    ParameterIndexError,
    ff_size,
    has_head_weights,
    head_weights,
    is_experts_layer,
    num_heads,
    num_layers,
)


def default_layers(count: int) -> list[int]:
    """``⌊L/4⌋, ⌊L/2⌋, ⌊3L/4⌋, L-1`` without repeats."""
    return sorted({count // 4, count // 2, (3 * count) // 4, count - 1})


def _frobenius(left: torch.Tensor, right: torch.Tensor) -> float:
    """``‖left @ right‖_F`` for factors ``(H, d)`` and ``(d, H)``, through ``d x d`` matrices."""
    left, right = left.double(), right.double()
    return float(torch.sqrt(torch.trace((left.t() @ left) @ (right @ right.t())).clamp_min(0)))


def head_norms(model: nn.Module, layer: int) -> dict[str, list[float]]:
    """``{"vo": [...], "qk": [...]}``: the Frobenius norm of each head's ``W_VO`` and ``W_QK`` in ``layer``."""
    norms: dict[str, list[float]] = {"vo": [], "qk": []}
    for head in range(num_heads(model, layer)):
        weights = head_weights(model, layer, head)
        norms["vo"].append(_frobenius(*weights.vo))
        norms["qk"].append(_frobenius(*weights.qk))
    return norms


@torch.no_grad()
def select_parameters(model: nn.Module, tokenizer, texts: list[str], *, layers: list[int] | None = None,
                      neurons: int = 5, max_positions: int = 1000, start=None) -> dict:
    """Apply the rule of the module to ``layers`` (default :func:`default_layers`); returns a JSON-ready dict
    with, per layer, the neuron, how many positions had it among their top ``neurons``, and the two heads
    with their norms (and every head's norms). ``start``: the start token put before each text
    (:func:`~.align.collect_activations`)."""
    count = num_layers(model)
    layers = default_layers(count) if layers is None else list(layers)
    for layer in layers:
        if not 0 <= layer < count:
            raise ParameterIndexError(f"layer {layer} is out of range: the model has {count} (layers 0..{count - 1})")
    activations = collect_activations(model, tokenizer, texts, n_neurons=neurons, max_positions=max_positions,
                                      start_token=start)
    positions = activations.top_neurons.shape[1]
    chosen = []
    for layer in layers:
        if has_head_weights(model, layer):
            norms = head_norms(model, layer)
            vo = max(range(len(norms["vo"])), key=lambda h: norms["vo"][h])
            qk = max(range(len(norms["qk"])), key=lambda h: norms["qk"][h])
            entry = {"layer": layer, "vo_head": vo, "vo_norm": norms["vo"][vo], "qk_head": qk,
                     "qk_norm": norms["qk"][qk], "head_norms": norms}
        else:
            entry = {"layer": layer, "vo_head": None, "qk_head": None,
                     "head_note": "latent attention: no fixed W_VO or W_QK to read"}
        if is_experts_layer(model, layer):
            entry.update(neuron=None, neuron_note="a mixture of experts: no dense neuron (read an expert's with "
                                                  "ff --expert)")
        else:
            counts = torch.bincount(activations.top_neurons[layer].flatten(), minlength=ff_size(model, layer))
            neuron = int(counts.argmax())
            entry.update(neuron=neuron, neuron_top_count=int(counts[neuron]),
                         neuron_top_share=float(counts[neuron]) / max(1, positions))
        chosen.append(entry)
    return {"rule": ("per layer: the FF neuron most often among the top-%d activated neurons over the corpus "
                     "positions; the heads with the largest Frobenius norm of W_VO and of W_QK" % neurons),
            "layers": layers, "positions": positions, "texts": activations.texts_used, "neurons": neurons,
            "chosen": chosen}
