"""Architecture-neutral description of the linear maps a decomposition needs.

An architecture module (``opt.py``, ``gpt2.py``, ``llama.py``) only says *where* each weight lives in the
Hugging Face module tree; it returns these small records and the engine (``huggingface_patch.engine``)
does all the arithmetic. Shapes use ``H`` = hidden size, ``F`` = MLP inner size, ``h`` = query heads,
``g`` = key/value heads, ``d`` = head size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn


@dataclass
class Affine:
    """A linear map ``y = x @ weight + bias`` applied to the last dimension.

    ``weight`` is ``(in, out)``; for an ``nn.Linear`` it is the transposed view of its weight (no copy),
    for GPT-2's ``Conv1D`` it is the weight itself.
    """

    weight: torch.Tensor
    bias: torch.Tensor | None = None

    @classmethod
    def from_linear(cls, module: nn.Linear) -> "Affine":
        return cls(module.weight.t(), module.bias)

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        """The map without its bias (what a token contribution goes through)."""
        return x @ self.weight.to(x.dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return y if self.bias is None else y + self.bias.to(x.dtype)

    @property
    def device(self) -> torch.device:
        return self.weight.device


@dataclass
class NormSpec:
    """LayerNorm (``kind='layer'``) or RMSNorm (``kind='rms'``) with optional gain and shift.

    ``module`` is the model's own norm; the engine compares its output with the linear formula and sends
    the difference (the model's own round-off, e.g. Llama's RMSNorm computing in fp32 inside an fp64
    model) to the bias term, so that the identity holds against the model's real states.
    """

    kind: str
    weight: torch.Tensor | None
    bias: torch.Tensor | None
    eps: float
    module: nn.Module | None = None


@dataclass
class AttentionSpec:
    """Self-attention seen through its value/output path; the probabilities are captured from ``module``.

    ``value`` maps ``H -> g*d`` and ``output`` maps ``h*d -> H``. Query head ``j`` reads key/value head
    ``j // (h // g)``, as Hugging Face's ``repeat_kv`` does.
    """

    module: nn.Module
    value: Affine
    output: Affine
    num_heads: int
    num_kv_heads: int
    head_dim: int


@dataclass
class MLPSpec:
    """A feed-forward block.

    ``kind='act'``: ``out(act(inp(x)))`` (OPT, GPT-2); ``kind='gated'``: ``down(act(gate(x)) * up(x))``
    (Llama family). ``act_name`` is the Hugging Face activation name, used to pick the slope at 0.
    """

    kind: str
    act: Callable[[torch.Tensor], torch.Tensor]
    act_name: str
    inp: Affine | None = None
    out: Affine | None = None
    gate: Affine | None = None
    up: Affine | None = None
    down: Affine | None = None


@dataclass
class ResidualBlock:
    """``y = post_norm(x + sublayer(pre_norm(x)))``; either norm may be absent."""

    sublayer: AttentionSpec | MLPSpec
    pre_norm: NormSpec | None = None
    post_norm: NormSpec | None = None


@dataclass
class LayerSpec:
    """One decoder layer: its module (hooked for its real input and output) and its residual blocks."""

    module: nn.Module
    blocks: list[ResidualBlock] = field(default_factory=list)

    @property
    def attention(self) -> AttentionSpec:
        return next(b.sublayer for b in self.blocks if isinstance(b.sublayer, AttentionSpec))


@dataclass
class ModelSpec:
    """Everything the engine needs from one model.

    ``final_norm`` and ``project_out`` turn the last layer's output into the state the LM head reads;
    ``position_module`` is the learned position-embedding module (None for RoPE models).
    """

    layers: list[LayerSpec]
    final_norm: NormSpec | None
    project_out: Affine | None
    positions_from_mask: bool
    position_module: nn.Module | None = None
