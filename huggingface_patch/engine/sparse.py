"""The MLP path whose cost follows the number of active neurons (``docs/design.md`` §3, ReLU models).

With ReLU, the frozen coefficient ``r = relu(z)/z`` is exactly 0 for every inactive neuron, so a target's
MLP only needs the rows of ``W_in``/``W_out`` of its active neurons. Inside a block of sources, the rows of
one target (one per source in its window) are gathered together and multiplied by just those rows:
``out = ((rows @ W_in[:, A]) * r[A]) @ W_out[A]``. The dropped terms are exact zeros, so the result equals
the dense path up to the order of floating-point summation.

It pays off on CPU when few neurons fire (trained OPT models: under 10% in most layers); the caller marks a
layer for it with :func:`plan_sparse` (automatic, or forced for tests and benchmarks). Automatically it
is used on CPU when at most :data:`SPARSE_MAX_ACTIVE` of the neurons fire and a block gives every target at
least :data:`SPARSE_MIN_ROWS` rows (short windows or tiny memory budgets stay dense).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .precision import EXACT, Precision

#: the sparse path is chosen automatically on CPU when at most this fraction of neurons is active
#: (OPT-125m-shaped benchmark, 2 CPU cores: 0.38 vs 0.63 forward passes per source at 10% active,
#: about even near 30%)
SPARSE_MAX_ACTIVE = 0.2

#: ... and when each target has at least this many rows (sources) in a block: every target's weight rows
#: are gathered once per block, which only pays off over enough rows (``min(block size, window)``)
SPARSE_MIN_ROWS = 32


@dataclass
class SparseMLP:
    """One layer's active neurons: for batch item ``b`` and target ``t`` the neurons
    ``index[offsets[b][t]:offsets[b][t+1]]`` with coefficients ``values[...]``; ``rows_in`` ``(F, H)`` and
    ``rows_out`` ``(F, H')``: the two weight matrices with one contiguous row per neuron."""

    index: torch.Tensor
    values: torch.Tensor
    offsets: list[list[int]]
    rows_in: torch.Tensor
    rows_out: torch.Tensor


def active_fraction(coefficient: torch.Tensor, valid: torch.Tensor) -> float:
    """Fraction of non-zero MLP coefficients ``(B, T, F)`` over the real (non-padding) positions."""
    nonzero = (coefficient != 0).sum(-1)[valid.to(coefficient.device)]
    return float(nonzero.sum()) / max(1, nonzero.numel() * coefficient.shape[-1])


def build_sparse(frozen_mlp) -> SparseMLP:
    """Index the active neurons of one :class:`~.mlp.FrozenMLP`."""
    coefficient = frozen_mlp.coefficient
    batch, length, _ = coefficient.shape
    mask = coefficient != 0
    counts = mask.sum(-1)  # (B, T)
    index = mask.nonzero()[:, 2]  # row-major: grouped by (b, t), ascending neuron
    offsets = torch.zeros(batch * length + 1, dtype=torch.long)
    offsets[1:] = counts.reshape(-1).cpu().cumsum(0)
    flat = offsets.tolist()
    per_item = [flat[b * length : (b + 1) * length + 1] for b in range(batch)]
    return SparseMLP(
        index=index,
        values=coefficient[mask],
        offsets=per_item,
        rows_in=frozen_mlp.linear_in.weight.t().contiguous(),
        rows_out=frozen_mlp.linear_out.weight.contiguous(),
    )


def plan_sparse(frozen_model, path: str, device: torch.device) -> list[float]:
    """Mark MLP blocks for the sparse path: ``path`` is ``"dense"``, ``"sparse"`` (every MLP whose
    coefficient has zeros) or ``"auto"`` (CPU and at most :data:`SPARSE_MAX_ACTIVE` active). Returns the
    active fraction of every MLP block."""
    if path not in ("auto", "dense", "sparse"):
        raise ValueError(f"mlp_path must be 'auto', 'dense' or 'sparse', got {path!r}")
    fractions = []
    for mlp in frozen_model.mlps():
        mlp.sparse = None
        fraction = active_fraction(mlp.coefficient, frozen_model.valid)
        fractions.append(fraction)
        use = path == "sparse" or (path == "auto" and torch.device(device).type == "cpu"
                                   and fraction <= SPARSE_MAX_ACTIVE)
        if use and fraction < 1.0:
            mlp.sparse = build_sparse(mlp)
    return fractions


def sparse_mlp(state: torch.Tensor, frozen_mlp, layout, precision: Precision = EXACT) -> torch.Tensor:
    """MLP of a source block ``(B, S, w, H)`` through the active neurons only -> ``(B, S, w, H')``."""
    sparse: SparseMLP = frozen_mlp.sparse
    batch, sources, window, hidden = state.shape
    order, bounds = layout.target_order()
    order = order.to(state.device)
    rows_in, rows_out = precision.weight(sparse.rows_in, state.dtype), precision.weight(sparse.rows_out, state.dtype)
    out = state.new_zeros(batch, sources * window, rows_out.shape[1])
    for b in range(batch):
        grouped = state[b].reshape(sources * window, hidden)[order]  # rows ordered by target
        result = grouped.new_zeros(grouped.shape[0], rows_out.shape[1])
        offsets = sparse.offsets[b]
        for r in range(len(bounds) - 1):
            lo, hi = bounds[r], bounds[r + 1]
            t = layout.start + r
            a, z = offsets[t], offsets[t + 1]
            if a == z or lo == hi:
                continue
            neurons = sparse.index[a:z]
            inner = precision.mm(grouped[lo:hi], rows_in.index_select(0, neurons).t())
            inner *= sparse.values[a:z].to(inner.dtype)
            precision.mm(inner, rows_out.index_select(0, neurons), out=result[lo:hi])
        out[b, order] = result
    return out.view(batch, sources, window, -1)
