"""Freeze the nonlinear parts from the real forward pass and check the real residual stream layer by layer.

For every layer the real stream is recomputed from the captured layer input with the same linear maps
the contributions go through (:mod:`.norms`, :mod:`.attention`, :mod:`.mlp`) and compared with Hugging
Face's layer output: if a Transformers release changes a layer, this fails loudly instead of returning a
wrong decomposition.

Per-target coefficients are stored per position ``(B, T, ...)``, zero at padding positions so that
padding stays exactly zero; the block layout views them without copies (and zero-extends the few blocks
whose window runs past the end).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..architectures.spec import AttentionSpec, ModelSpec, MoESpec
from .attention import attention_real, mask_padding_attention
from .conventions import DEFAULT, Conventions
from .layouts import FullLayout
from .mlp import FrozenMLP, freeze_mlp
from .moe import FrozenMoE, freeze_moe
from .norms import FrozenNorm, freeze_norm
from .packed import BandCausal, PackedCausal
from .residual import FrozenBlock, FrozenBranch, finalize, propagate_layer

# Largest allowed |recomputed - Hugging Face| relative to max|h|, per compute precision of the model.
RECOMPUTE_TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 5e-2, torch.bfloat16: 5e-2}


class DecompositionMismatchError(RuntimeError):
    """The engine's recomputation of the real residual stream disagrees with the model."""


@dataclass
class BiasTerm:
    """The bias term carried while freezing (:class:`Freezer` with a window): ``final`` ``(B, T, H')`` at the
    LM head's input; ``layers`` ``(B, T, H)`` at the embeddings and after every layer (or None); ``heads``:
    its first ``min(window, T)`` targets at every state (embeddings, each layer, the head's input)."""

    final: torch.Tensor
    layers: list[torch.Tensor] | None
    heads: list[torch.Tensor]
    window: int


@dataclass
class FrozenModel:
    """All frozen coefficients of one forward pass, plus the real states they came from.

    ``embeddings``: ``(B, T, H)`` input of layer 0 (each source owns its own row); ``valid``: ``(B, T)``
    bool; ``layers[l]``: the frozen blocks of layer ``l``; ``final_norm``: the frozen final norm or None;
    ``layer_states[l]``: the real output of layer ``l``; ``final_state``: the real post-final-norm state;
    ``model_dtype``: the dtype the model computed in (its checks' tolerances follow it); ``bias``: the bias
    term when it was carried while freezing (see :class:`Freezer`), else None.
    """

    spec: ModelSpec
    embeddings: torch.Tensor
    valid: torch.Tensor
    layers: list[list[FrozenBlock]]
    final_norm: FrozenNorm | None
    layer_states: list[torch.Tensor]
    final_state: torch.Tensor
    bias_init: torch.Tensor | None = None
    conventions: Conventions = DEFAULT
    model_dtype: torch.dtype = torch.float32
    bias: BiasTerm | None = None

    @property
    def length(self) -> int:
        return self.embeddings.shape[1]

    def mlps(self) -> list[FrozenMLP]:
        """Every frozen MLP, in layer order."""
        return [branch.sublayer for blocks in self.layers for block in blocks for branch in block.branches
                if isinstance(branch.sublayer, FrozenMLP)]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Decompositions accumulate in fp32 for half-precision models and in the model's dtype otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check(name: str, mine: torch.Tensor, theirs: torch.Tensor, valid: torch.Tensor, model_dtype: torch.dtype):
    theirs = theirs.to(mine.dtype)
    diff = (mine - theirs).abs().amax(-1)[valid]
    scale = theirs.abs().amax(-1)[valid]
    if diff.numel() == 0:
        return
    worst, top = float(diff.max()), float(scale.max())
    tolerance = RECOMPUTE_TOLERANCE.get(model_dtype, 5e-2)
    if not worst <= tolerance * max(top, 1e-30):
        raise DecompositionMismatchError(
            f"{name}: the decomposition engine's recomputation differs from the model by {worst:.3e} "
            f"(max |h| = {top:.3e}, tolerance {tolerance:g} x max |h|); this Transformers version may have "
            "changed the layer, so no decomposition is returned"
        )


class Freezer:
    """Freezes a forward pass one layer at a time, in layer order: from the capture hooks while the model
    runs (:func:`~.capture.capture` ``on_layer``), or from stored states (:func:`freeze`).

    With a ``window``, each layer also carries the bias term through itself while its full attention
    probabilities are there, then keeps only the band of them that source blocks read
    (:class:`~.packed.BandCausal`), so a long input never holds every layer's ``T x T`` probabilities;
    ``output_layers`` keeps the bias term after every layer too. Without a window the probabilities are
    kept as given and the bias term is left to :func:`~.decompose.run_decomposition`.
    """

    def __init__(self, spec: ModelSpec, valid: torch.Tensor, model_dtype: torch.dtype, *, check: bool = True,
                 conventions: Conventions = DEFAULT, window: int | None = None, output_layers: bool = False):
        self.spec, self.valid, self.model_dtype, self.check = spec, valid, model_dtype, check
        self.conventions, self.window, self.output_layers = conventions, window, output_layers
        self.dtype = compute_dtype(model_dtype)
        self.layers: list[list[FrozenBlock]] = []
        self.layer_states: list[torch.Tensor] = []
        self.embeddings = self.bias_init = None
        self.bias = None  # the bias term at the current layer's input (with a window)
        self.layer_biases: list[torch.Tensor] = []
        self.head_biases: list[torch.Tensor] = []

    def start(self, embeddings: torch.Tensor, position_embeddings: torch.Tensor | None = None) -> None:
        """The input of layer 0 ``(B, T, H)``; ``position_embeddings`` ``(B or 1, T, H)`` is needed only for
        ``conventions.positions == "bias"`` (they go to the bias term)."""
        dtype, valid = self.dtype, self.valid
        self.embeddings = embeddings.detach().to(dtype)
        if self.conventions.positions == "bias" and position_embeddings is not None:
            bias_init = position_embeddings.detach().to(device=self.embeddings.device, dtype=dtype)
            bias_init = bias_init.expand_as(self.embeddings)
            zero = torch.zeros((), dtype=dtype, device=self.embeddings.device)
            self.bias_init = torch.where(valid.to(self.embeddings.device)[..., None], bias_init, zero)
            self.embeddings = self.embeddings - self.bias_init
        if self.spec.embedding_shift is not None:  # BLOOM: the embedding norm's shift belongs to no token
            shift = self.spec.embedding_shift.detach().to(device=self.embeddings.device, dtype=dtype)
            zero = torch.zeros((), dtype=dtype, device=self.embeddings.device)
            shift = torch.where(valid.to(self.embeddings.device)[..., None], shift.expand_as(self.embeddings), zero)
            self.embeddings = self.embeddings - shift
            self.bias_init = shift if self.bias_init is None else self.bias_init + shift
        if self.window is not None:
            self.bias = self.bias_init if self.bias_init is not None else torch.zeros_like(self.embeddings)
            self._keep_bias(self.bias)

    def _keep_bias(self, state: torch.Tensor) -> None:
        zero = torch.zeros((), dtype=state.dtype, device=state.device)
        masked = torch.where(self.valid.to(state.device)[..., None], state, zero)
        if self.output_layers:
            self.layer_biases.append(masked)
        self.head_biases.append(masked[:, : min(self.window, masked.shape[1])])

    def add_layer(self, index: int, x_in: torch.Tensor, x_out: torch.Tensor, attention) -> None:
        """Freeze layer ``index`` from its real input and output ``(B, T, H)`` and its captured probabilities
        ``(B, h, T, T)`` (or :class:`~.packed.PackedCausal`), checking the recomputed output."""
        if index != len(self.layers):
            raise RuntimeError(f"layer {index} frozen out of order (expected layer {len(self.layers)})")
        if self.embeddings is None:
            self.start(x_in)
        layer, model_dtype = self.spec.layers[index], self.model_dtype
        device = layer.attention.value.device
        valid = self.valid.to(device)
        x = x_in.detach().to(device=device, dtype=self.dtype)
        blocks = []
        for block in layer.blocks:
            normed: dict = {}
            branches, total = [], None
            for branch in block.branches:
                pre, y = None, x
                if branch.pre_norm is not None:
                    key = id(branch.pre_norm)
                    if key not in normed:
                        normed[key] = freeze_norm(branch.pre_norm, x, valid, model_dtype)
                    y, pre = normed[key]
                scale = latent_norm = None
                if isinstance(branch.sublayer, AttentionSpec):
                    sublayer = attention.to(device=device, dtype=self.dtype)
                    if not isinstance(sublayer, PackedCausal):  # packed ones come masked from capture()
                        sublayer = mask_padding_attention(sublayer, valid)
                    out, scale, latent_norm = attention_real(branch.sublayer, y, sublayer, valid, model_dtype)
                elif isinstance(branch.sublayer, MoESpec):
                    sublayer, out = freeze_moe(branch.sublayer, y, valid, self.conventions)
                else:
                    sublayer, out = freeze_mlp(branch.sublayer, y, valid, self.conventions)
                output_norm = None
                if branch.output_norm is not None:
                    out, output_norm = freeze_norm(branch.output_norm, out, valid, model_dtype)
                if branch.scale != 1.0:
                    out = out * branch.scale
                branches.append(FrozenBranch(pre, sublayer, output_norm, scale, latent_norm))
                total = out if total is None else total + out
            x = x + total
            post = None
            if block.post_norm is not None:
                x, post = freeze_norm(block.post_norm, x, valid, model_dtype)
            blocks.append(FrozenBlock(branches, post))
        if self.check:
            _check(f"layer {index}", x, x_out.detach().to(device), valid, model_dtype)
        if self.window is not None:
            self.bias = propagate_layer(self.bias, layer, blocks, FullLayout(x.shape[1]))
            self._keep_bias(self.bias)
            _keep_band(blocks, self.window)
        self.layers.append(blocks)
        self.layer_states.append(x_out.detach().to(self.dtype))

    def finish(self, final_state: torch.Tensor) -> FrozenModel:
        """Freeze the final norm (checked against ``final_state``, what the LM head reads) and return the
        :class:`FrozenModel`."""
        spec, valid = self.spec, self.valid
        last = self.layer_states[-1]
        device = last.device
        x = last
        final = None
        if spec.final_norm is not None:
            x, final = freeze_norm(spec.final_norm, x, valid.to(device), self.model_dtype)
        if spec.project_out is not None:
            x = spec.project_out(x)
        if self.check:
            _check("final state", x, final_state.detach().to(device), valid.to(device), self.model_dtype)
        frozen = FrozenModel(spec=spec, embeddings=self.embeddings, bias_init=self.bias_init,
                             conventions=self.conventions, valid=valid, layers=self.layers, final_norm=final,
                             layer_states=self.layer_states, final_state=x, model_dtype=self.model_dtype)
        if self.window is not None:
            layout = FullLayout(x.shape[1])
            bias = finalize(self.bias, frozen, layout)
            zero = torch.zeros((), dtype=bias.dtype, device=bias.device)
            bias = torch.where(valid.to(bias.device)[..., None], bias, zero)
            frozen.bias = BiasTerm(bias, self.layer_biases if self.output_layers else None,
                                   self.head_biases + [bias[:, : min(self.window, bias.shape[1])]], self.window)
        return frozen


def _keep_band(blocks: list[FrozenBlock], window: int) -> None:
    """Replace each attention branch's probabilities by the band a ``window`` reads, when that is smaller."""
    for block in blocks:
        for branch in block.branches:
            probs = branch.sublayer
            if isinstance(probs, (FrozenMLP, FrozenMoE)):
                continue
            length = probs.length if isinstance(probs, PackedCausal) else probs.shape[-1]
            if 2 * window < length:  # the band (T x W) is smaller than the triangle (T^2 / 2)
                branch.sublayer = BandCausal.from_full(probs, window)


def freeze(
    spec: ModelSpec,
    layer_inputs: list[torch.Tensor],
    layer_outputs: list[torch.Tensor],
    attention: list[torch.Tensor],
    final_state: torch.Tensor,
    valid: torch.Tensor,
    model_dtype: torch.dtype,
    check: bool = True,
    conventions: Conventions = DEFAULT,
    position_embeddings: torch.Tensor | None = None,
    window: int | None = None,
) -> FrozenModel:
    """Compute every frozen coefficient from stored states and check the recomputed real stream layer by
    layer (a :class:`Freezer` fed all layers at once).

    ``attention[l]``: layer ``l``'s captured probabilities (the caller's list; each entry is dropped once
    used, as they are the largest thing kept). ``position_embeddings`` ``(B or 1, T, H)``: the learned
    position embeddings, needed only for ``conventions.positions == "bias"``. ``window``: see
    :class:`Freezer`.
    """
    freezer = Freezer(spec, valid, model_dtype, check=check, conventions=conventions, window=window)
    freezer.start(layer_inputs[0], position_embeddings)
    for index, (x_in, x_out) in enumerate(zip(layer_inputs, layer_outputs)):
        probs, attention[index] = attention[index], None  # drop our reference early (T^2 per head)
        freezer.add_layer(index, x_in, x_out, probs)
    return freezer.finish(final_state)
