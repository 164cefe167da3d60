"""Memory estimate of a decomposition, and the block size a memory budget allows.

Everything is known before the forward pass (sizes from the model and the input), so a budget that cannot
be met is refused before anything large is allocated. Figures count tensors only, not the Python/torch
runtime (a few hundred MB), nor what the C allocator keeps after a free: with glibc's default settings,
blocks of a few MiB come from the heap once large frees have raised its mmap threshold, and the resident
set then grew up to 1.33x the estimate in the small streaming cases of ``tests/integration/
test_memory_estimate.py``, whose tensors stay under 0.93x of it. Where the budget is a hard limit, run with
``MALLOC_MMAP_THRESHOLD_=131072`` (large blocks go back to the system when freed) or leave that margin.

* fixed: the frozen coefficients (attention probabilities: the band ``L x B x h x T x W`` when the window is
  under half the input, else ``L x B x h x T x T`` or its triangle; MLP coefficients ``L x B x T x F``), the
  captured real states, and the outputs (``B x W x T x H``, none when streaming);
* forward: the capture forward pass's own transients (attention scores of one layer, the logits) and what
  freezing one layer holds at once (its full probabilities, MLP pre-activations, states);
* block: one block of ``S`` sources holds about ``S x w x (3F + 8H)`` numbers on the dense MLP path
  (MLP inner activations, states), ``S x w x 10H`` on the sparse path, plus the block's square of
  attention probabilities ``h x (S + w)^2`` (and its gather index when packed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import HuggingfacePatchError

#: block budget when no memory budget is given (bytes)
DEFAULT_BLOCK_MEMORY = 512 * 2**20

#: attention probabilities are stored packed (lower triangle, half the memory, a gather to read) when
#: all layers' probabilities would take more than this, or whenever a memory budget is given
PACK_ATTENTION_BYTES = 256 * 2**20


def attention_bytes(spec, batch: int, length: int, itemsize: int) -> int:
    """Memory of every layer's full attention probabilities ``L x B x h x T x T``."""
    return len(spec.layers) * batch * spec.layers[0].attention.num_heads * length * length * itemsize


def uses_band(length: int, window: int | None) -> bool:
    """Whether each layer keeps only the band of its probabilities a window reads (``2 W < T``: the band
    ``T x W`` is smaller than the triangle)."""
    return window is not None and 2 * window < length


def should_pack(spec, batch: int, length: int, itemsize: int, max_memory: int | None,
                window: int | None = None) -> bool:
    """Whether to store the attention probabilities packed (see :data:`PACK_ATTENTION_BYTES`); never when the
    band is kept instead (:func:`uses_band`)."""
    if uses_band(length, window):
        return False
    return max_memory is not None or attention_bytes(spec, batch, length, itemsize) > PACK_ATTENTION_BYTES


_UNITS = {"": 1, "b": 1, "k": 2**10, "kib": 2**10, "kb": 10**3, "m": 2**20, "mib": 2**20, "mb": 10**6,
          "g": 2**30, "gib": 2**30, "gb": 10**9, "t": 2**40, "tib": 2**40, "tb": 10**12}


class MemoryBudgetError(HuggingfacePatchError):
    """The requested decomposition cannot fit the memory budget (raised before allocating)."""


def parse_memory(value) -> int:
    """Bytes from ``4GB`` (10^9), ``4GiB`` / ``4G`` (2^30), ``512MiB``, ``1.5e9`` or an int."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number, unit = float(value), ""
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", str(value))
        if not match or match.group(2).lower() not in _UNITS:
            raise ValueError(f"memory budget must look like 4GB, 3.5GiB, 512MiB or a number of bytes, got {value!r}")
        number, unit = float(match.group(1)), match.group(2).lower()
    size = int(number * _UNITS[unit])
    if size <= 0:
        raise ValueError(f"memory budget must be positive, got {value!r}")
    return size


def format_bytes(size: float) -> str:
    """``1.50 GiB``, ``512 MiB`` or ``3.0 KiB``."""
    if size >= 2**30:
        return f"{size / 2**30:.2f} GiB"
    return f"{size / 2**20:.0f} MiB" if size >= 2**20 else f"{size / 2**10:.1f} KiB"


@dataclass
class MemoryEstimate:
    """Bytes of one decomposition call; ``total(S)`` is the estimated peak with blocks of ``S`` sources."""

    model: int
    fixed: int
    forward: int
    per_source_dense: int
    per_source_sparse: int
    length: int
    window: int
    #: per-block square of attention probabilities: ``square * (S + w)^2`` bytes
    square: int = 0
    #: what a streaming consumer holds besides the blocks (ΔLP: its chunk of logits and its table)
    consumer: int = 0

    def per_source(self, sparse: bool = False) -> int:
        return self.per_source_sparse if sparse else self.per_source_dense

    def block_bytes(self, block_size: int, sparse: bool = False) -> int:
        return block_size * self.per_source(sparse) + self.square * (block_size + self.window) ** 2

    def total(self, block_size: int, sparse: bool = False) -> int:
        return self.model + self.fixed + max(self.forward, self.block_bytes(block_size, sparse) + self.consumer)

    def describe(self, block_size: int, sparse: bool = False) -> str:
        consumer = f" + consumer {format_bytes(self.consumer)}" if self.consumer else ""
        return (f"estimated peak {format_bytes(self.total(block_size, sparse))} = model {format_bytes(self.model)}"
                f" + coefficients/states/outputs {format_bytes(self.fixed)} + max(forward pass "
                f"{format_bytes(self.forward)}, block of {block_size} sources "
                f"{format_bytes(self.block_bytes(block_size, sparse))}{consumer})")


def estimate(spec, batch: int, length: int, window: int, itemsize: int, model_bytes: int = 0,
             vocab: int = 0, output_layers: bool = False, streaming: bool = False, tangent: bool = False,
             packed: bool = True, consumer: int = 0) -> MemoryEstimate:
    """Estimate the memory of decomposing ``batch`` sequences of ``length`` tokens with ``window``
    (attention probabilities stored ``packed`` or in full); ``itemsize``: bytes per number of the
    compute dtype; ``tangent``: the tangent convention also keeps an MLP intercept per target."""
    c = itemsize
    layers = len(spec.layers)
    attention = spec.layers[0].attention
    heads = attention.num_heads
    hidden = attention.output.out_features
    inner = spec.layers[0].mlp.width
    w = min(window, length)
    band = uses_band(length, window)
    if band:
        triangle = length * w
    else:
        triangle = length * (length + 1) // 2 if packed else length * length
    per_layer = batch * (heads * triangle + length * inner * (2 if tangent else 1) + 4 * length * hidden)
    outputs = 0 if streaming else batch * w * length * hidden * (1 + (layers + 1 if output_layers else 0))
    fixed = c * (layers * per_layer + outputs + 2 * batch * length * hidden)
    # the capture pass: the attention scores of one layer (three copies in eager attention), the logits, and
    # what freezing one layer holds at once (its full probabilities, MLP pre-activations, states)
    freezing = c * batch * (heads * length * length + 2 * length * inner + 4 * length * hidden)
    if packed and not band:  # packing a layer holds its triangle next to the full square, and the triangle's index
        freezing += c * batch * heads * length * (length + 1) // 2 + 8 * length * (length + 1) // 2
    forward = 4 * batch * heads * length * length * 3 + 4 * batch * length * max(vocab, hidden) + freezing
    return MemoryEstimate(
        model=model_bytes,
        fixed=fixed,
        forward=forward,
        per_source_dense=c * batch * w * (3 * inner + 8 * hidden),
        per_source_sparse=c * batch * w * 10 * hidden,
        length=length,
        window=w,
        square=batch * (c * heads + (8 if packed or band else 0)),
        consumer=consumer,
    )


#: on CPU, blocks of about this many rows (sources x window) run fastest: their intermediate tensors stay in
#: cache and in the allocator's reused memory (OPT-125m shape, T = 512, window 50, 2 cores: 0.50 vs 0.575
#: forward passes per source in fp32 and 0.27 vs 0.31 in bf16, against blocks sized by memory alone).
#: Results do not depend on the block size (each source's rows are computed alike in any block).
CPU_BLOCK_ROWS = 2048


def planned_block_size(est: MemoryEstimate, budget: int | None, device, sparse: bool = False,
                       min_sources: int = 1) -> int:
    """The sources per block a decomposition on ``device`` uses when none is given: what ``budget`` allows
    (:func:`choose_block_size`), on CPU at most about :data:`CPU_BLOCK_ROWS` rows (never fewer than
    ``min_sources``)."""
    import torch

    block = choose_block_size(est, budget, sparse=sparse)
    if torch.device(device).type == "cpu":
        block = min(block, max(min_sources, CPU_BLOCK_ROWS // max(1, est.window)))
    return block


def choose_block_size(est: MemoryEstimate, budget: int | None = None, sparse: bool = False) -> int:
    """Sources per block: as many as fit ``budget`` (total bytes) or, without a budget,
    :data:`DEFAULT_BLOCK_MEMORY` for the block; at most ``T``. Raises :class:`MemoryBudgetError` if one source does
    not fit."""
    cap = max(1, est.length)
    if budget is None:
        limit, floor = DEFAULT_BLOCK_MEMORY, 0
    else:
        floor = est.model + est.fixed
        limit = budget - floor - est.consumer
        need = max(est.forward - est.consumer, est.block_bytes(1, sparse))
        if need > limit:
            raise MemoryBudgetError(
                f"the decomposition needs at least {format_bytes(floor + need)} but the memory budget is "
                f"{format_bytes(budget)}: raise the budget, or shorten the input (T = {est.length}) or the "
                f"window (W = {est.window})"
            )
    low, high = 1, cap  # largest block that fits (block bytes grow with the size)
    while low < high:
        mid = (low + high + 1) // 2
        if est.block_bytes(mid, sparse) <= limit:
            low = mid
        else:
            high = mid - 1
    return int(low)
