"""Propagate the bias term and every block of sources through all layers (``docs/design.md``).

Sources never interact, so they are processed in blocks of ``block_size`` sources; for a block only the
targets inside each source's window (and inside the sequence) are computed. Memory in flight is about
``block_size x window x F`` per block regardless of the document length; in streaming mode each finished
block goes to a consumer instead of a ``(B, W, T, H)`` output.

The identity is checked on every run: a target ``t < W`` has all its sources inside the window, so for
those targets the contributions plus the bias term must give the real state, at the embeddings, after
every layer and after the final norm. The exact path refuses a result that misses it
(:class:`~.frozen.DecompositionMismatchError`); the fast modes (:mod:`.precision`) report it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import torch

from .frozen import RECOMPUTE_TOLERANCE, DecompositionMismatchError, FrozenModel
from .layouts import BlockLayout, FullLayout, block_scatter_index
from .memory import MemoryEstimate, estimate, planned_block_size
from .precision import IDENTITY_TOLERANCE, Precision
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
    None. Padding positions are zero everywhere. ``identity_errors``: ``(L + 2,)`` the largest
    ``|sum of contributions + bias - real state|`` over the targets ``t < W`` relative to max|h|, at the
    embeddings, after each layer and at the state the LM head reads; ``precision``: the mode's name.
    """

    decomposition: torch.Tensor | None
    bias: torch.Tensor
    layer_decompositions: tuple[torch.Tensor, ...] | None = None
    layer_biases: tuple[torch.Tensor, ...] | None = None
    identity_errors: torch.Tensor | None = None
    precision: str = "fp32"

    @property
    def identity_error(self) -> float:
        """The largest of :attr:`identity_errors`."""
        return float(self.identity_errors.max()) if self.identity_errors is not None else float("nan")


class IdentityCheck:
    """Sums the contributions of the targets ``t < n`` (all their sources are in the window) at every
    residual-stream state, to compare them with the real states once every block is done."""

    def __init__(self, frozen: FrozenModel, head: int, head_biases: list[torch.Tensor]):
        self.frozen, self.head = frozen, head
        self.biases = head_biases  # (B, n, H) per state: embeddings, each layer, final
        self.sums = [torch.zeros_like(b) for b in head_biases]

    def add(self, index: int, start: int, state: torch.Tensor) -> None:
        """Add a block ``(B, S, w, H)`` of state ``index`` (its entries with target ``< n``)."""
        if start >= self.head:
            return
        _, sources, window, hidden = state.shape
        target = (start + torch.arange(sources)[:, None] + torch.arange(window)[None, :]).reshape(-1)
        keep = target < self.head
        rows = state.reshape(state.shape[0], -1, hidden)[:, keep.to(state.device)]
        total = self.sums[index]
        total.index_add_(1, target[keep].to(total.device), rows.to(total.device, total.dtype))

    def errors(self) -> torch.Tensor:
        """``(L + 2,)`` relative identity error per state (0 where no target is real)."""
        frozen, n = self.frozen, self.head
        first = frozen.embeddings if frozen.bias_init is None else frozen.embeddings + frozen.bias_init
        reals = [first, *frozen.layer_states, frozen.final_state]
        out = []
        for total, bias, real in zip(self.sums, self.biases, reals):
            real = real[:, :n].to(total.device, total.dtype)
            valid = frozen.valid[:, :n].to(total.device)
            diff = (total + bias.to(total.device) - real).abs().amax(-1)[valid]
            top = real.abs().amax(-1)[valid]
            out.append(float(diff.max() / top.max().clamp_min(1e-30)) if diff.numel() else 0.0)
        return torch.tensor(out, dtype=torch.float64)


def bias_stream(frozen: FrozenModel, output_layers: bool,
                head: int = 0) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """The bias term after the final norm ``(B, T, H')``, optionally after every layer (embeddings first),
    and its first ``head`` targets ``(B, head, H)`` at every state (embeddings, each layer, final)."""
    layout = FullLayout(frozen.length)
    valid = frozen.valid

    def masked(state: torch.Tensor) -> torch.Tensor:
        zero = torch.zeros((), dtype=state.dtype, device=state.device)
        return torch.where(valid[:, : state.shape[1]].to(state.device)[..., None], state, zero)

    state = frozen.bias_init if frozen.bias_init is not None else torch.zeros_like(frozen.embeddings)
    per_layer = [state] if output_layers else []
    heads = [masked(state[:, :head])]
    for layer_spec, blocks in zip(frozen.spec.layers, frozen.layers):
        state = propagate_layer(state, layer_spec, blocks, layout)
        if output_layers:
            per_layer.append(state)
        heads.append(masked(state[:, :head]))
    final = masked(finalize(state, frozen, layout))
    heads.append(final[:, :head])
    return final, [masked(s) for s in per_layer], heads


def run_decomposition(frozen: FrozenModel, window: int, block_size: int | None = None,
                      output_layers: bool = False, progress: bool = False, mlp_path: str = "auto",
                      max_memory: int | None = None, consumer: Callable | None = None,
                      memory: MemoryEstimate | None = None,
                      precision: str | Precision = "fp32") -> DecompositionResult:
    """Decompose every target into per-source contributions within ``window`` plus the bias term.

    ``mlp_path``: ``"auto"`` (sparse ReLU path where it pays off), ``"dense"`` or ``"sparse"``;
    ``max_memory``: total budget in bytes that chooses ``block_size`` when it is not given, with the
    estimate ``memory`` (computed here, without the model's weights, when not given).
    ``consumer(start, block)``: streaming mode. Each finished block ``(B, S, w, H')`` (sources
    ``start .. start+S-1``, entry ``[b, i, k]`` = contribution to target ``start+i+k``, zero past the end)
    is handed over and dropped; no ``(B, W, T, H)`` output is allocated and ``decomposition`` is None.
    ``precision``: ``"fp32"`` (exact), ``"bf16"`` or ``"tf32"`` for the products of the source blocks
    (:mod:`.precision`).
    """
    if window <= 0:
        raise ValueError(f"decomposition window must be a positive integer, got {window}")
    emb = frozen.embeddings
    batch, length, hidden = emb.shape
    window = min(window, length)
    block_size = _plan_blocks(frozen, window, block_size, output_layers, mlp_path, max_memory, consumer, memory)
    mode = precision if isinstance(precision, Precision) else Precision(precision)
    bias, layer_biases, head_biases = _biases(frozen, window, output_layers)
    identity = IdentityCheck(frozen, window, head_biases)
    out = None if consumer is not None else bias.new_zeros(batch, window, length, bias.shape[-1])
    layer_outs = [emb.new_zeros(batch, window, length,
                                hidden) for _ in range(len(frozen.layers) + 1)] if output_layers else []

    starts = range(0, length, block_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="source blocks", unit="block", leave=False)
    with mode.active():
        for start in starts:
            _decompose_block(frozen, start, min(block_size, length - start), window, mode, identity, out,
                             layer_outs, consumer)
    errors = _report_identity(identity.errors(), mode, frozen)
    return DecompositionResult(
        decomposition=out,
        bias=bias,
        layer_decompositions=tuple(layer_outs) if output_layers else None,
        layer_biases=tuple(layer_biases) if output_layers else None,
        identity_errors=errors,
        precision=mode.name,
    )


def _plan_blocks(frozen: FrozenModel, window: int, block_size: int | None, output_layers: bool, mlp_path: str,
                 max_memory: int | None, consumer: Callable | None, memory: MemoryEstimate | None) -> int:
    """Mark the MLPs for the sparse or dense path and return the sources per block (``block_size`` when given,
    else from the memory estimate)."""
    emb = frozen.embeddings
    batch, length, _ = emb.shape
    fractions = plan_sparse(frozen, mlp_path, emb.device)
    sparse = any(mlp.sparse is not None for mlp in frozen.mlps())
    est = None
    if block_size is None:
        est = memory or estimate(frozen.spec, batch, length, window, emb.element_size(),
                                 output_layers=output_layers, streaming=consumer is not None,
                                 consumer=getattr(consumer, "memory_bytes", 0))
        block_size = _automatic_block(est, max_memory, sparse, emb.device, window)
    if sparse and mlp_path == "auto" and min(block_size, window) < SPARSE_MIN_ROWS:
        # too few rows per target to pay for gathering each target's weight rows: stay dense
        fractions = plan_sparse(frozen, "dense", emb.device)
        sparse = False
        if est is not None:
            block_size = _automatic_block(est, max_memory, False, emb.device, window)
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, got {block_size}")
    log.debug("decomposition: T=%d W=%d block=%d sparse MLP layers=%d/%d (active fractions %s)", length, window,
              block_size, sum(mlp.sparse is not None for mlp in frozen.mlps()), len(fractions),
              ", ".join(f"{f:.2f}" for f in fractions))
    return block_size


def _biases(frozen: FrozenModel, window: int, output_layers: bool):
    """``(bias, layer_biases, head_biases)``: carried through by the freezer when it kept what ``window``
    reads, else computed."""
    carried = frozen.bias
    if carried is not None and carried.window < window:
        raise ValueError(f"this frozen model keeps what a window of {carried.window} reads; it cannot be decomposed "
                         f"with window {window}: freeze it again with the larger window")
    if carried is not None and carried.window >= window and (carried.layers is not None or not output_layers):
        bias, layer_biases, head_biases = carried.final, carried.layers or [], [h[:, :window] for h in carried.heads]
    else:
        bias, layer_biases, head_biases = bias_stream(frozen, output_layers, head=window)
    return bias, layer_biases, head_biases


def _automatic_block(est: MemoryEstimate, max_memory: int | None, sparse: bool, device: torch.device,
                     window: int) -> int:
    """Sources per block when the caller gave none (:func:`~.memory.planned_block_size`; never fewer than the
    sparse path needs)."""
    return planned_block_size(est, max_memory, device, sparse=sparse, min_sources=SPARSE_MIN_ROWS if sparse else 1)


def _decompose_block(frozen: FrozenModel, start: int, sources: int, window: int, mode: Precision,
                     identity: IdentityCheck, out: torch.Tensor | None, layer_outs: list[torch.Tensor],
                     consumer: Callable | None) -> None:
    """Push sources ``start .. start+sources-1`` through every layer and hand the result on."""
    emb, valid = frozen.embeddings, frozen.valid.to(frozen.embeddings.device)
    batch, length, hidden = emb.shape
    layout = BlockLayout(start, sources, window, length)
    state = emb.new_zeros(batch, sources, layout.window, hidden)
    own = emb[:, start : start + sources]
    state[:, :, 0] = torch.where(valid[:, start : start + sources, None], own,
                                 torch.zeros((), dtype=emb.dtype, device=emb.device))
    keep, flat = block_scatter_index(start, sources, layout.window, length, emb.device)
    identity.add(0, start, state)
    if layer_outs:
        _scatter(layer_outs[0], state, keep, flat)
    for index, (layer_spec, blocks) in enumerate(zip(frozen.spec.layers, frozen.layers)):
        state = propagate_layer(state, layer_spec, blocks, layout, mode)
        identity.add(index + 1, start, state)
        if layer_outs:
            _scatter(layer_outs[index + 1], state, keep, flat)
    final = finalize(state, frozen, layout, mode)
    identity.add(len(frozen.layers) + 1, start, final)
    if consumer is not None:
        consumer(start, final)
    else:
        _scatter(out, final, keep, flat)


def _report_identity(errors: torch.Tensor, mode: Precision, frozen: FrozenModel) -> torch.Tensor:
    """Refuse (exact path) or log (fast modes) an identity error above the stated tolerance."""
    worst = float(errors.max()) if errors.numel() else 0.0
    if mode.name == "fp32":  # the same tolerance as the layer-by-layer recomputation check
        tolerance = RECOMPUTE_TOLERANCE.get(frozen.model_dtype, 5e-2)
        if not worst <= tolerance:
            state = int(errors.argmax())
            raise DecompositionMismatchError(
                f"the contributions plus the bias term miss the real state by {worst:.3e} x max|h| at state "
                f"{state} (0 = embeddings, {len(errors) - 1} = the LM head's input; tolerance {tolerance:g}): "
                "this model's layers are not decomposed correctly, so no decomposition is returned")
        return errors
    tolerance = IDENTITY_TOLERANCE[mode.name]
    # within the stated tolerance this is routine (debug: a line per piece would break the progress bars)
    level = logging.WARNING if not worst <= tolerance else logging.DEBUG
    log.log(level, "decomposition in %s: identity error %.2e x max|h| (stated tolerance %g)", mode.name, worst,
            tolerance)
    return errors

def _scatter(out: torch.Tensor, state: torch.Tensor, keep: torch.Tensor, flat: torch.Tensor) -> None:
    """Write a block ``(B, S, W, H)`` into a relative-layout output ``(B, W, T, H)``."""
    batch, window, length, hidden = out.shape
    flat_out = out.view(batch, window * length, hidden)
    rows = state.to(out.device).reshape(batch, -1, hidden)[:, keep.to(out.device)]
    flat_out[:, flat.to(out.device)] = rows
