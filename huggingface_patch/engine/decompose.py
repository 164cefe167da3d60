"""Propagate the bias term and every block of sources through all layers (``docs/design.md``).

Sources never interact, so they are processed in blocks of ``block_size`` sources; for a block only the
targets inside each source's window (and inside the sequence) are computed. Memory in flight is about
``block_size x window x F`` per block regardless of the document length; in streaming mode each finished
block goes to a consumer instead of a ``(B, W, T, H)`` output.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import torch

from .frozen import FrozenModel
from .layouts import BlockLayout, FullLayout, block_scatter_index
from .memory import MemoryEstimate, choose_block_size, estimate
from .residual import finalize, propagate_layer
from .sparse import SPARSE_MIN_ROWS, plan_sparse

log = logging.getLogger(__name__)

@dataclass
class DecompositionResult:
    """Contributions in relative layout and the explicitly tracked bias term.

    ``decomposition``: ``(B, W, T, H)`` with ``W = min(window, T)``, entry ``[b, k, t]`` = contribution of
    source ``t - k`` to the state the LM head reads at target ``t`` (None in streaming mode); ``bias``:
    ``(B, T, H)``. ``layer_decompositions`` / ``layer_biases``: one entry per residual-stream state, index
    0 = the embeddings (input of layer 0), index ``l`` = output of layer ``l`` (before the final norm), or
    None. Padding positions are zero everywhere.
    """

    decomposition: torch.Tensor | None
    bias: torch.Tensor
    layer_decompositions: tuple[torch.Tensor, ...] | None = None
    layer_biases: tuple[torch.Tensor, ...] | None = None


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
                      output_layers: bool = False, progress: bool = False, mlp_path: str = "auto",
                      max_memory: int | None = None, consumer: Callable | None = None,
                      memory: MemoryEstimate | None = None) -> DecompositionResult:
    """Decompose every target into per-source contributions within ``window`` plus the bias term.

    ``mlp_path``: ``"auto"`` (sparse ReLU path where it pays off), ``"dense"`` or ``"sparse"``;
    ``max_memory``: total budget in bytes that chooses ``block_size`` when it is not given, with the
    estimate ``memory`` (computed here, without the model's weights, when not given).
    ``consumer(start, block)``: streaming mode. Each finished block ``(B, S, w, H')`` (sources
    ``start .. start+S-1``, entry ``[b, i, k]`` = contribution to target ``start+i+k``, zero past the end)
    is handed over and dropped; no ``(B, W, T, H)`` output is allocated and ``decomposition`` is None.
    """
    if window <= 0:
        raise ValueError(f"decomposition window must be a positive integer, got {window}")
    emb = frozen.embeddings
    batch, length, hidden = emb.shape
    window = min(window, length)
    fractions = plan_sparse(frozen, mlp_path, emb.device)
    sparse = any(mlp.sparse is not None for mlp in frozen.mlps())
    est = None
    if block_size is None:
        est = memory or estimate(frozen.spec, batch, length, window, emb.element_size(),
                                 output_layers=output_layers, streaming=consumer is not None)
        block_size = choose_block_size(est, max_memory, sparse=sparse)
    if sparse and mlp_path == "auto" and min(block_size, window) < SPARSE_MIN_ROWS:
        # too few rows per target to pay for gathering each target's weight rows: stay dense
        fractions = plan_sparse(frozen, "dense", emb.device)
        sparse = False
        if est is not None:
            block_size = choose_block_size(est, max_memory, sparse=False)
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, got {block_size}")
    log.debug("decomposition: T=%d W=%d block=%d sparse MLP layers=%d/%d (active fractions %s)", length, window,
              block_size, sum(mlp.sparse is not None for mlp in frozen.mlps()), len(fractions),
              ", ".join(f"{f:.2f}" for f in fractions))

    bias, layer_biases = bias_stream(frozen, output_layers)
    out = None if consumer is not None else bias.new_zeros(batch, window, length, bias.shape[-1])
    layer_outs = [emb.new_zeros(batch, window, length,
                                hidden) for _ in range(len(frozen.layers) + 1)] if output_layers else []
    valid = frozen.valid.to(emb.device)

    starts = range(0, length, block_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="source blocks", unit="block", leave=False)
    for start in starts:
        sources = min(block_size, length - start)
        layout = BlockLayout(start, sources, window, length)
        state = emb.new_zeros(batch, sources, layout.window, hidden)
        own = emb[:, start : start + sources]
        state[:, :, 0] = torch.where(valid[:, start : start + sources, None], own, torch.zeros((), dtype=emb.dtype,
                                                                                               device=emb.device))
        keep, flat = block_scatter_index(start, sources, layout.window, length, emb.device)
        if output_layers:
            _scatter(layer_outs[0], state, keep, flat)
        for index, (layer_spec, blocks) in enumerate(zip(frozen.spec.layers, frozen.layers)):
            state = propagate_layer(state, layer_spec, blocks, layout)
            if output_layers:
                _scatter(layer_outs[index + 1], state, keep, flat)
        final = finalize(state, frozen, layout)
        if consumer is not None:
            consumer(start, final)
        else:
            _scatter(out, final, keep, flat)
        del state, final

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
