"""Propagate the bias term and every block of sources through all layers (DESIGN.md §1-3).

Sources never interact, so they are processed in blocks of ``block_size`` sources; for a block only the
targets inside each source's window are computed. Memory in flight is ``block_size x window x F`` per
block regardless of the document length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .frozen import FrozenModel
from .layouts import block_scatter_index
from .propagate import BlockLayout, FullLayout, finalize, propagate_layer

#: default memory budget for one block's intermediates (bytes)
DEFAULT_BLOCK_MEMORY = 512 * 2**20


@dataclass
class DecompositionResult:
    """Contributions in relative layout and the explicitly tracked bias term.

    ``decomposition``: ``(B, W, T, H)`` with ``W = min(window, T)``, entry ``[b, k, t]`` = contribution of
    source ``t - k`` to the state the LM head reads at target ``t``; ``bias``: ``(B, T, H)``.
    ``layer_decompositions`` / ``layer_biases``: one entry per residual-stream state, index 0 = the
    embeddings (input of layer 0), index ``l`` = output of layer ``l`` (before the final norm), or None.
    Padding positions are zero everywhere.
    """

    decomposition: torch.Tensor
    bias: torch.Tensor
    layer_decompositions: tuple[torch.Tensor, ...] | None = None
    layer_biases: tuple[torch.Tensor, ...] | None = None


def choose_block_size(length: int, window: int, hidden: int, inner: int, itemsize: int,
                      budget: int = DEFAULT_BLOCK_MEMORY) -> int:
    """Sources per block so that one block's largest intermediates fit in ``budget`` bytes.

    A block of S sources holds about ``S * W * (F + 4H)`` numbers (MLP inner activations, states, and the
    attention rows spanning ``S + W - 1`` positions); S is also kept <= max(W, 64) so that the attention
    rows are not mostly empty.
    """
    per_source = window * (inner + 4 * hidden) * itemsize
    size = max(1, budget // max(per_source, 1))
    return int(max(1, min(size, length, max(window, 64))))


def bias_stream(frozen: FrozenModel, output_layers: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The bias term after the final norm ``(B, T, H')`` and, optionally, after every layer."""
    layout = FullLayout(frozen.length)
    state = frozen.bias_init if frozen.bias_init is not None else torch.zeros_like(frozen.embeddings)
    per_layer = [state] if output_layers else []
    for layer_spec, blocks in zip(frozen.spec.layers, frozen.layers):
        state = propagate_layer(state, layer_spec, blocks, layout)
        if output_layers:
            per_layer.append(state)
    final = finalize(state, frozen, layout)
    zero = torch.zeros((), dtype=final.dtype, device=final.device)
    final = torch.where(frozen.valid.to(final.device)[..., None], final, zero)
    per_layer = [torch.where(frozen.valid.to(s.device)[..., None], s, zero.to(s.device)) for s in per_layer]
    return final, per_layer


def run_decomposition(frozen: FrozenModel, window: int, block_size: int | None = None,
                      output_layers: bool = False, progress: bool = False) -> DecompositionResult:
    """Decompose every target into per-source contributions within ``window`` plus the bias term."""
    if window <= 0:
        raise ValueError(f"decomposition window must be a positive integer, got {window}")
    emb = frozen.embeddings
    batch, length, hidden = emb.shape
    window = min(window, length)
    if window > frozen.pad:
        raise ValueError("frozen coefficients were padded for a smaller window")
    if block_size is None:
        inner = max(b.coefficient.shape[-1] for b in frozen.layers[0] if b.coefficient.dim() == 3)
        block_size = choose_block_size(length, window, hidden, inner, emb.element_size())
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, got {block_size}")

    bias, layer_biases = bias_stream(frozen, output_layers)
    out = bias.new_zeros(batch, window, length, bias.shape[-1])
    layer_outs = [emb.new_zeros(batch, window, length, hidden) for _ in range(len(frozen.layers) + 1)] if output_layers else []
    valid = frozen.valid.to(emb.device)

    starts = range(0, length, block_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="source blocks", unit="block", leave=False)
    for start in starts:
        sources = min(block_size, length - start)
        layout = BlockLayout(start, sources, window, length)
        state = emb.new_zeros(batch, sources, window, hidden)
        own = emb[:, start : start + sources]
        state[:, :, 0] = torch.where(valid[:, start : start + sources, None], own, torch.zeros((), dtype=emb.dtype, device=emb.device))
        keep, flat = block_scatter_index(start, sources, window, length, emb.device)
        if output_layers:
            _scatter(layer_outs[0], state, keep, flat)
        for index, (layer_spec, blocks) in enumerate(zip(frozen.spec.layers, frozen.layers)):
            state = propagate_layer(state, layer_spec, blocks, layout)
            if output_layers:
                _scatter(layer_outs[index + 1], state, keep, flat)
        _scatter(out, finalize(state, frozen, layout), keep, flat)

    return DecompositionResult(
        decomposition=out,
        bias=bias,
        layer_decompositions=tuple(layer_outs) if output_layers else None,
        layer_biases=tuple(layer_biases) if output_layers else None,
    )


def _scatter(out: torch.Tensor, state: torch.Tensor, keep: torch.Tensor, flat: torch.Tensor) -> None:
    """Write a block ``(B, S, W, H)`` into a relative-layout output ``(B, W, T, H)``."""
    batch, window, length, hidden = out.shape
    flat_out = out.view(batch, window * length, hidden)
    rows = state.to(out.device).reshape(batch, -1, hidden)[:, keep.to(out.device)]
    flat_out[:, flat.to(out.device)] = rows
