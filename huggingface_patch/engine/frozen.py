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

from ..architectures.spec import AttentionSpec, ModelSpec
from .attention import attention_real, mask_padding_attention
from .conventions import DEFAULT, Conventions
from .mlp import FrozenMLP, freeze_mlp
from .norms import FrozenNorm, freeze_norm
from .packed import PackedCausal
from .residual import FrozenBlock, FrozenBranch

# Largest allowed |recomputed - Hugging Face| relative to max|h|, per compute precision of the model.
RECOMPUTE_TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 5e-2, torch.bfloat16: 5e-2}


class DecompositionMismatchError(RuntimeError):
    """The engine's recomputation of the real residual stream disagrees with the model."""


@dataclass
class FrozenModel:
    """All frozen coefficients of one forward pass, plus the real states they came from.

    ``embeddings``: ``(B, T, H)`` input of layer 0 (each source owns its own row); ``valid``: ``(B, T)``
    bool; ``layers[l]``: the frozen blocks of layer ``l``; ``final_norm``: the frozen final norm or None;
    ``layer_states[l]``: the real output of layer ``l``; ``final_state``: the real post-final-norm state.
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
) -> FrozenModel:
    """Compute every frozen coefficient and check the recomputed real stream layer by layer.

    ``attention[l]``: layer ``l``'s captured probabilities (the caller's list; each entry is dropped once
    used, as they are the largest thing kept). ``position_embeddings`` ``(B or 1, T, H)``: the learned
    position embeddings, needed only for ``conventions.positions == "bias"``.
    """
    dtype = compute_dtype(model_dtype)
    layers: list[list[FrozenBlock]] = []
    for index, (layer, x_in) in enumerate(zip(spec.layers, layer_inputs)):
        device = layer.attention.value.device
        layer_valid = valid.to(device)
        x = x_in.to(device=device, dtype=dtype)
        blocks = []
        for block in layer.blocks:
            normed: dict = {}
            branches, total = [], None
            for branch in block.branches:
                pre, y = None, x
                if branch.pre_norm is not None:
                    key = id(branch.pre_norm)
                    if key not in normed:
                        normed[key] = freeze_norm(branch.pre_norm, x, layer_valid, model_dtype)
                    y, pre = normed[key]
                if isinstance(branch.sublayer, AttentionSpec):
                    sublayer = attention[index].to(device=device, dtype=dtype)
                    attention[index] = None  # drop our reference early (T^2 per head)
                    if not isinstance(sublayer, PackedCausal):  # packed ones come masked from capture()
                        sublayer = mask_padding_attention(sublayer, layer_valid)
                    out = attention_real(branch.sublayer, y, sublayer)
                else:
                    sublayer, out = freeze_mlp(branch.sublayer, y, layer_valid, conventions)
                output_norm = None
                if branch.output_norm is not None:
                    out, output_norm = freeze_norm(branch.output_norm, out, layer_valid, model_dtype)
                branches.append(FrozenBranch(pre, sublayer, output_norm))
                total = out if total is None else total + out
            x = x + total
            post = None
            if block.post_norm is not None:
                x, post = freeze_norm(block.post_norm, x, layer_valid, model_dtype)
            blocks.append(FrozenBlock(branches, post))
        if check:
            _check(f"layer {index}", x, layer_outputs[index].to(device), layer_valid, model_dtype)
        layers.append(blocks)

    last = layer_outputs[-1]
    device = last.device
    x = last.to(dtype)
    final = None
    if spec.final_norm is not None:
        x, final = freeze_norm(spec.final_norm, x, valid.to(device), model_dtype)
    if spec.project_out is not None:
        x = spec.project_out(x)
    if check:
        _check("final state", x, final_state.to(device), valid.to(device), model_dtype)
    embeddings = layer_inputs[0].to(dtype)
    bias_init = None
    if conventions.positions == "bias" and position_embeddings is not None:
        bias_init = position_embeddings.to(device=embeddings.device, dtype=dtype).expand_as(embeddings)
        bias_init = torch.where(valid.to(embeddings.device)[..., None], bias_init, torch.zeros((), dtype=dtype))
        embeddings = embeddings - bias_init
    return FrozenModel(
        spec=spec,
        embeddings=embeddings,
        bias_init=bias_init,
        conventions=conventions,
        valid=valid,
        layers=layers,
        final_norm=final,
        layer_states=[o.to(dtype) for o in layer_outputs],
        final_state=x,
    )
