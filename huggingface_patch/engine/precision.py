"""Matmul precision of the source blocks: the exact path and the two fast modes.

Only the work on blocks of sources changes (value and output projections, the attention mixing, the MLP's
two products, OPT's ``project_out``); norms, residual sums and the contributions handed out stay in the
compute dtype, and the bias term, the frozen coefficients and the model's own forward pass are always exact.

* ``fp32`` (default): every product in the compute dtype (fp32, fp64 for fp64 models), exactly as before
  fast modes existed.
* ``bf16``: both inputs of each product rounded to bf16, the product accumulated in fp32 and returned in
  fp32 (on CUDA in one step through ``out_dtype``; PyTorch's CPU kernels accumulate in fp32 but return bf16,
  which the next elementwise step widens: one more rounding per product). The attention mixing and the MLP
  coefficient's scaling run in bf16 too (a mixed-dtype multiply over a whole block costs more than the
  product saves); residual sums, norms and the contributions handed out stay fp32.
* ``tf32`` (CUDA only): TF32 tensor-core matmuls for the same products, switched on only while the source
  blocks run.

The fast modes are measured against ``fp32`` by ``benchmarks/bench_decompose.py --precision``; their
identity error (:func:`~huggingface_patch.engine.decompose.run_decomposition`) is reported, not refused,
against :data:`IDENTITY_TOLERANCE`.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from ..errors import InputError

PRECISIONS = ("fp32", "bf16", "tf32")

#: stated tolerance of the identity (contributions + bias vs the real state), relative to max|h|; the
#: exact path raises above it, the fast modes log a warning
IDENTITY_TOLERANCE = {"fp32": 1e-4, "bf16": 2e-2, "tf32": 1e-2}


def check_precision(name: str, device: torch.device | str | None = None) -> str:
    """Validate a precision name (and that ``tf32`` runs on CUDA); returns it."""
    if name not in PRECISIONS:
        raise InputError(f"unknown decomposition precision {name!r}: choose from {', '.join(PRECISIONS)}")
    if name == "tf32" and device is not None and torch.device(device).type != "cuda":
        raise InputError("decomposition precision 'tf32' needs a CUDA device (TF32 is a GPU matmul mode): "
                         "use 'bf16' on this device")
    return name


class Precision:
    """The products of one decomposition: :meth:`linear` (``x @ affine.weight``, no bias), the operands of
    the attention mixing (:meth:`mixing_operands`) and :meth:`mm` (the sparse MLP path)."""

    def __init__(self, name: str = "fp32", round_mixing: bool = True):
        self.name = check_precision(name)
        self.half = name == "bf16"  # tf32 changes the matmul unit, not the code path
        # False keeps the attention mixing in fp32 (to measure what the mixing adds to the error)
        self.round_mixing = round_mixing
        self._weights: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._out_dtype: dict[str, bool] = {}

    def weight(self, weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """A weight as this precision's products read it: in ``dtype`` (exact), or in bf16, converted once per
        decomposition (the original is kept with the copy so that its ``id`` stays unique)."""
        if not self.half:
            return weight.to(dtype)
        entry = self._weights.get(id(weight))
        if entry is None or entry[0] is not weight:
            entry = (weight, weight.to(torch.bfloat16))
            self._weights[id(weight)] = entry
        return entry[1]

    def coefficient(self, coefficient: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """A per-target MLP coefficient ``(B, T, F)`` in the dtype of the product it scales (bf16 products
        are scaled in bf16: a mixed-dtype multiply over a whole block costs more than the product's gain)."""
        return coefficient if coefficient.dtype == dtype else self.weight(coefficient, dtype)

    def _product(self, op, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``op(a, b)`` of bf16 inputs: in fp32 where the backend can return it (CUDA's ``out_dtype``), else
        in bf16 as the backend's kernel returns it (accumulated in fp32 inside)."""
        kind = a.device.type
        if self._out_dtype.get(kind, True):
            try:
                return op(a, b, out_dtype=torch.float32)
            except (NotImplementedError, RuntimeError, TypeError):
                self._out_dtype[kind] = False
        return op(a, b)

    def linear(self, x: torch.Tensor, affine) -> torch.Tensor:
        """``x @ weight`` (``x`` ``(..., in)`` -> ``(..., out)``) in this precision. Exact: in ``x.dtype``.
        bf16: in whatever dtype the backend returns (bf16 on CPU, fp32 on CUDA); the elementwise operation
        that follows widens it to fp32 (see :meth:`widen`), so no separate conversion pass is spent on it."""
        if not self.half:
            return affine.linear(x)
        weight = self.weight(affine.weight, x.dtype)
        flat = x.reshape(-1, x.shape[-1]).to(torch.bfloat16)
        out = self._product(torch.mm, flat, weight)
        return out.view(*x.shape[:-1], weight.shape[-1])

    def mixing_operands(self, probs: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The attention mixing's operands ``(probs, values)`` in the dtype it runs in: both bf16 when the
        mixing is rounded, else the compute dtype (values widened once per block)."""
        if not self.half:
            return probs, values
        if self.round_mixing:
            return probs.to(torch.bfloat16), values.to(torch.bfloat16)
        return probs, values.to(probs.dtype)

    @staticmethod
    def widen(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``x`` in ``dtype`` (no copy when it already is): where a product's result must be fp32 on its own."""
        return x if x.dtype == dtype else x.to(dtype)

    def mm(self, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``torch.mm(a, b)`` into ``out`` (or a new tensor, as :meth:`linear` returns it); ``b`` as :meth:`weight`
        returns it."""
        if not self.half:
            return torch.mm(a, b, out=out)
        result = self._product(torch.mm, a.to(torch.bfloat16), b)
        if out is None:
            return result
        out.copy_(result)
        return out

    @contextmanager
    def active(self):
        """The matmul mode for the source blocks (TF32 switched on only inside, restored after)."""
        if self.name != "tf32":
            yield self
            return
        before = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("high")
        try:
            yield self
        finally:
            torch.set_float32_matmul_precision(before)


EXACT = Precision("fp32")
