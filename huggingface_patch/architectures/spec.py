"""Architecture-neutral description of the linear maps a decomposition needs (``docs/design.md``).

An adapter (``opt.py``, ``gemma.py``, ...) only says *where* each weight lives in the Hugging Face module
tree; it returns these small records and the engine (:mod:`huggingface_patch.engine`) does all the
arithmetic. Shapes use ``H`` = hidden size, ``F`` = MLP inner size, ``h`` = query heads, ``g`` = key/value
heads, ``d`` = head size, ``V`` = vocabulary.

A decoder layer is a list of residual blocks (:class:`ResidualBlock`) applied in order; each block is

    y = post_norm(x + sum_b output_norm_b(sublayer_b(pre_norm_b(x))))

with one :class:`Branch` per sublayer that reads the block input ``x``. Every arrangement in use is data
of this one form:

========================== =========================================================================
pre-norm (GPT-2, Llama)     two blocks, one branch each, ``pre_norm`` set
post-norm (OPT-350m)        two blocks, one branch each, ``post_norm`` set
sandwich (Gemma 2/3)        two blocks, one branch each, ``pre_norm`` and ``output_norm`` set
parallel (GPT-J, NeoX)      one block with two branches (attention and MLP) reading the same ``x``;
                            GPT-J's branches share one norm, NeoX's have one each
========================== =========================================================================
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

    def columns(self, start: int, stop: int) -> "Affine":
        """The map restricted to output columns ``start:stop`` (a view: fused projections, single heads)."""
        bias = None if self.bias is None else self.bias[start:stop]
        return Affine(self.weight[:, start:stop], bias)

    def select(self, index: torch.Tensor) -> "Affine":
        """The map restricted to the output columns ``index`` (a copy; for interleaved fused layouts)."""
        bias = None if self.bias is None else self.bias.index_select(0, index)
        return Affine(self.weight.index_select(1, index), bias)

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        """The map without its bias (what a token contribution goes through)."""
        return x @ self.weight.to(x.dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return y if self.bias is None else y + self.bias.to(x.dtype)

    @property
    def in_features(self) -> int:
        return self.weight.shape[0]

    @property
    def out_features(self) -> int:
        return self.weight.shape[1]

    @property
    def device(self) -> torch.device:
        return self.weight.device


@dataclass
class NormSpec:
    """LayerNorm (``kind='layer'``) or RMSNorm (``kind='rms'``) with optional gain and shift.

    The gain is ``weight + weight_offset`` (Gemma's RMSNorm multiplies by ``1 + weight``: offset 1).
    ``module`` is the model's own norm; the engine compares its output with the linear formula and sends
    the difference (the model's own round-off, e.g. an RMSNorm that computes in fp32 inside an fp64 model)
    to the bias term, so that the identity holds against the model's real states.
    """

    kind: str
    weight: torch.Tensor | None
    bias: torch.Tensor | None
    eps: float
    module: nn.Module | None = None
    weight_offset: float = 0.0

    def gain(self, dtype: torch.dtype) -> torch.Tensor | None:
        """The multiplicative gain ``(H,)`` in ``dtype`` (None: no gain)."""
        if self.weight is None:
            return None
        gain = self.weight.to(dtype)
        return gain + self.weight_offset if self.weight_offset else gain


@dataclass
class AttentionSpec:
    """Self-attention seen through its value/output path; the probabilities are captured from ``module``.

    ``value`` maps ``H -> g*d`` (or, with ``value_latent``, ``r -> g*d``) and ``output`` maps ``h*d -> H``.
    Query head ``j`` reads key/value head ``j // (h // g)``, as Hugging Face's ``repeat_kv`` does.
    ``value_clip``, ``value_latent``: see the fields. Everything that shapes the probabilities (RoPE, ALiBi,
    scaling, masks, sliding windows, q/k norms, logit softcapping) lives inside them.
    """

    module: nn.Module
    value: Affine
    output: Affine
    num_heads: int
    num_kv_heads: int
    head_dim: int
    #: OLMo's ``clip_qkv``: the values are clamped to ``[-c, c]``; a nonlinearity on the value path, frozen
    #: like an activation ratio (``clamp(z) / z`` of the real value ``z``)
    value_clip: float | None = None
    #: latent attention (DeepSeek V3): the values are ``value(norm(value_latent(y)))``, a low-rank latent
    #: ``H -> r`` through a norm whose scale is frozen at the real latent (like every norm), then ``value``
    #: maps ``r -> g*d``; None: ``value`` reads ``y`` directly
    value_latent: Affine | None = None
    value_latent_norm: "NormSpec | None" = None


@dataclass
class MLPSpec:
    """A feed-forward block.

    ``kind='act'``: ``out(act(inp(x)))`` (OPT, GPT-2, GPT-J, NeoX); ``kind='gated'``:
    ``down(act(gate(x)) * up(x))`` (Llama, Gemma, Phi-3 families). ``act_name`` is the Hugging Face
    activation name, used to pick the slope at 0.
    """

    kind: str
    act: Callable[[torch.Tensor], torch.Tensor]
    act_name: str
    inp: Affine | None = None
    out: Affine | None = None
    gate: Affine | None = None
    up: Affine | None = None
    down: Affine | None = None

    @property
    def width(self) -> int:
        """``F``, the number of neurons."""
        return (self.up if self.kind == "gated" else self.inp).out_features


def gated_activation(act: Callable[[torch.Tensor], torch.Tensor]):
    """The usual gated linearisation ``act(g) * u``: ``(output, coefficient on u, intercept)`` with the gate
    frozen (:class:`MoESpec` ``activation``)."""

    def linearize(gate: torch.Tensor, up: torch.Tensor):
        coefficient = act(gate)
        return coefficient * up, coefficient, None

    return linearize


@dataclass
class MoESpec:
    """A mixture-of-experts feed-forward block (``docs/design.md``: the router's choice and weights are frozen
    from the real forward pass, like attention probabilities).

    ``route(y (N, H)) -> (index (N, k), weights (N, k))``: the experts each token goes to and their routing
    weights, as the model computes them (after softmax, top-k and renormalisation). Expert ``e`` is
    ``down_e(a(gate_e y, up_e y))`` with weights in the ``x @ W`` convention: ``gate``/``up`` ``(E, H, F)``,
    ``down`` ``(E, F, H)``, biases ``(E, F)`` / ``(E, H)`` or None. ``activation(g, u) -> (output, coefficient,
    intercept)`` linearises ``a`` with ``output == coefficient * u + intercept`` (intercept None = 0): the
    contributions go through ``up``, the gate (and any clamp) is frozen, a constant part goes to the bias term.
    ``shared``: an always-on gated expert (Qwen2-MoE), multiplied per token by ``shared_gate(y) (N, 1)`` when
    given.
    """

    route: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    gate: torch.Tensor
    up: torch.Tensor
    down: torch.Tensor
    activation: Callable
    top_k: int
    gate_bias: torch.Tensor | None = None
    up_bias: torch.Tensor | None = None
    down_bias: torch.Tensor | None = None
    shared: "MLPSpec | None" = None
    shared_gate: Callable[[torch.Tensor], torch.Tensor] | None = None
    act_name: str = "silu"

    @property
    def num_experts(self) -> int:
        return self.gate.shape[0]

    @property
    def width(self) -> int:
        """Neurons active per token: ``top_k`` experts (and the shared expert) of ``F`` each."""
        return self.top_k * self.gate.shape[2] + (0 if self.shared is None else self.shared.width)

    def expert(self, index: int) -> "MLPSpec":
        """Expert ``index`` as a gated :class:`MLPSpec` (views of the weights; for readings of its neurons)."""
        def affine(weight, bias):
            return Affine(weight[index], None if bias is None else bias[index])

        return MLPSpec(kind="gated", act=lambda z: self.activation(z, torch.ones_like(z))[1], act_name=self.act_name,
                       gate=affine(self.gate, self.gate_bias), up=affine(self.up, self.up_bias),
                       down=affine(self.down, self.down_bias))


@dataclass
class Branch:
    """One sublayer of a residual block: ``scale * output_norm(sublayer(pre_norm(x)))`` (either norm may be
    absent; ``scale`` is a constant, Granite's ``residual_multiplier``, 1 elsewhere)."""

    sublayer: AttentionSpec | MLPSpec | MoESpec
    pre_norm: NormSpec | None = None
    output_norm: NormSpec | None = None
    scale: float = 1.0


@dataclass
class ResidualBlock:
    """``y = post_norm(x + sum of the branches' outputs)``, every branch reading the same ``x``."""

    branches: list[Branch]
    post_norm: NormSpec | None = None

    @classmethod
    def single(cls, sublayer: AttentionSpec | MLPSpec, pre_norm: NormSpec | None = None,
               output_norm: NormSpec | None = None, post_norm: NormSpec | None = None,
               scale: float = 1.0) -> "ResidualBlock":
        """A block with one branch (every sequential arrangement)."""
        return cls([Branch(sublayer, pre_norm, output_norm, scale)], post_norm)


@dataclass
class LayerSpec:
    """One decoder layer: its module (hooked for its real input and output) and its residual blocks."""

    module: nn.Module
    blocks: list[ResidualBlock] = field(default_factory=list)

    def branches(self):
        """Every branch of the layer, in order."""
        return [branch for block in self.blocks for branch in block.branches]

    @property
    def attention(self) -> AttentionSpec:
        return next(b.sublayer for b in self.branches() if isinstance(b.sublayer, AttentionSpec))

    @property
    def mlp(self) -> "MLPSpec | MoESpec":
        return next(b.sublayer for b in self.branches() if isinstance(b.sublayer, (MLPSpec, MoESpec)))


@dataclass
class ModelSpec:
    """Everything the engine needs from one model.

    ``final_norm`` and ``project_out`` turn the last layer's output into the state the LM head reads;
    ``position_module`` is the learned position-embedding module (None for RoPE models); ``embedding_shift``:
    see the field.
    """

    layers: list[LayerSpec]
    final_norm: NormSpec | None
    project_out: Affine | None
    positions_from_mask: bool
    position_module: nn.Module | None = None
    #: a constant ``(H,)`` in every position's input of layer 0 that belongs to no token: BLOOM's LayerNorm on
    #: the embeddings gives each source its normalised embedding and the shift goes to the bias term
    embedding_shift: torch.Tensor | None = None


@dataclass
class Readout:
    """How a state the LM head reads becomes logits: ``cap(state @ weight.T + bias)``.

    ``weight`` ``(V, H)`` (the paper's ``proj_weights``), ``bias`` ``(V,)`` or None (GPT-J's head has
    one), ``softcap`` the final-logit softcapping ``c`` of ``tanh(z / c) * c`` (Gemma 2) or None. The
    decomposition is of the state; softcapping is not linear, so it is applied to logits, never to
    contributions.
    """

    weight: torch.Tensor
    bias: torch.Tensor | None = None
    softcap: float | None = None

    @classmethod
    def of(cls, head: "Readout | torch.Tensor") -> "Readout":
        """A :class:`Readout` as it is, or a bare ``(V, H)`` weight as one (no bias, no softcapping)."""
        return head if isinstance(head, Readout) else cls(head)

    @property
    def vocab_size(self) -> int:
        return self.weight.shape[0]

    def raw(self, states: torch.Tensor) -> torch.Tensor:
        """Logits before softcapping ``(..., V)`` (in the states' dtype)."""
        # as rows: a strided (..., H) view (a slice of a layer stack) would otherwise take a batched product that
        # reads the whole (V, H) weight once per leading index (9x slower for Gemma 3's 262k vocabulary)
        rows = states.reshape(-1, states.shape[-1])
        logits = (rows @ self.weight.to(states.device, states.dtype).t()).view(*states.shape[:-1], -1)
        return logits if self.bias is None else logits + self.bias.to(states.device, states.dtype)

    def cap(self, logits: torch.Tensor) -> torch.Tensor:
        """Apply the final-logit softcapping (identity without one)."""
        if self.softcap is None:
            return logits
        return torch.tanh(logits / self.softcap) * self.softcap

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        """``cap(raw(states))`` ``(..., V)``."""
        return self.cap(self.raw(states))

    def to(self, device=None, dtype=None) -> "Readout":
        bias = None if self.bias is None else self.bias.detach().to(device=device, dtype=dtype)
        return Readout(self.weight.detach().to(device=device, dtype=dtype), bias, self.softcap)

    def describe(self) -> dict:
        """What a result file records about the read-out."""
        return {"vocab_size": self.vocab_size, "hidden_size": int(self.weight.shape[1]),
                "bias": self.bias is not None, "final_logit_softcapping": self.softcap}
