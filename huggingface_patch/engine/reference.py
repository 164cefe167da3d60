"""A deliberately plain per-source implementation of DESIGN.md §1, for tests and benchmarks.

One source at a time, absolute positions, no blocks, no strided views: slow but easy to check by eye.
It shares only the architecture records (which weights) with the engine, and computes every frozen
coefficient itself from the captured real forward pass.
"""

from __future__ import annotations

import torch

from ..architectures.spec import AttentionSpec, ModelSpec, NormSpec
from .frozen import mlp_ratio  # noqa: F401  (default ratio convention only)


def _norm(c: torch.Tensor, x: torch.Tensor, norm: NormSpec, is_bias: bool) -> torch.Tensor:
    out = _formula(c, x, norm, is_bias)
    if is_bias and norm.module is not None:
        # the model's own rounding of its norm output belongs to no token
        out = out + _real_norm(x, norm) - _formula(x, x, norm, True)
    return out


def _formula(c: torch.Tensor, x: torch.Tensor, norm: NormSpec, is_bias: bool) -> torch.Tensor:
    if norm.kind == "layer":
        c = (c - c.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + norm.eps)
    else:
        c = c / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps)
    if norm.weight is not None:
        c = c * norm.weight.to(c.dtype)
    if is_bias and norm.bias is not None:
        c = c + norm.bias.to(c.dtype)
    return c


def _real_norm(x: torch.Tensor, norm: NormSpec) -> torch.Tensor:
    """The real norm output: the model's own module when known (it may round differently, e.g. Llama's
    RMSNorm computes in fp32), else the formula."""
    if norm.module is not None:
        return norm.module(x.to(norm.weight.dtype if norm.weight is not None else x.dtype)).to(x.dtype)
    return _formula(x, x, norm, True)


def _attention(c: torch.Tensor, spec: AttentionSpec, probs: torch.Tensor, is_bias: bool) -> torch.Tensor:
    """c ``(T, H)``, probs ``(h, T, T)`` -> ``(T, H)``."""
    v = spec.value(c) if is_bias else spec.value.linear(c)
    groups = spec.num_heads // spec.num_kv_heads
    heads = []
    for head in range(spec.num_heads):
        kv = head // groups
        heads.append(probs[head] @ v[:, kv * spec.head_dim : (kv + 1) * spec.head_dim])
    mixed = torch.cat(heads, dim=-1)
    return spec.output(mixed) if is_bias else spec.output.linear(mixed)


@torch.no_grad()
def reference_decomposition(spec: ModelSpec, layer_inputs, attention, dtype=torch.float64):
    """Contributions of every source ``(S, T, H)`` (absolute layout) and the bias ``(T, H)`` for batch item 0
    of an unpadded input, computed source by source."""
    emb = layer_inputs[0][0].to(dtype)
    length = emb.shape[0]
    streams = [torch.zeros_like(emb) for _ in range(length + 1)]  # last one is the bias term
    for s in range(length):
        streams[s][s] = emb[s]
    for layer, x_in, probs in zip(spec.layers, layer_inputs, attention):
        x = x_in[0].to(dtype)
        probs = probs[0].to(dtype)
        for block in layer.blocks:
            y_real = _real_norm(x, block.pre_norm) if block.pre_norm is not None else x
            if isinstance(block.sublayer, AttentionSpec):
                update_real = _attention(y_real, block.sublayer, probs, True)
            else:
                mlp = block.sublayer
                if mlp.kind == "gated":
                    gate = mlp.act(mlp.gate(y_real))
                    update_real = mlp.down(gate * mlp.up(y_real))
                else:
                    activated, ratio = mlp_ratio(mlp, mlp.inp(y_real))
                    update_real = mlp.out(activated)
            new_streams = []
            for index, c in enumerate(streams):
                is_bias = index == length
                y = _norm(c, x, block.pre_norm, is_bias) if block.pre_norm is not None else c
                if isinstance(block.sublayer, AttentionSpec):
                    update = _attention(y, block.sublayer, probs, is_bias)
                elif block.sublayer.kind == "gated":
                    mlp = block.sublayer
                    update = (mlp.down if is_bias else mlp.down.linear)(gate * (mlp.up(y) if is_bias else mlp.up.linear(y)))
                else:
                    mlp = block.sublayer
                    update = (mlp.out if is_bias else mlp.out.linear)(ratio * (mlp.inp(y) if is_bias else mlp.inp.linear(y)))
                new_streams.append(c + update)
            streams = new_streams
            x_next = x + update_real
            if block.post_norm is not None:
                streams = [_norm(c, x_next, block.post_norm, i == length) for i, c in enumerate(streams)]
                x_next = _real_norm(x_next, block.post_norm)
            x = x_next
    if spec.final_norm is not None:
        streams = [_norm(c, x, spec.final_norm, i == length) for i, c in enumerate(streams)]
    if spec.project_out is not None:
        streams = [spec.project_out.linear(c) for c in streams]
    return torch.stack(streams[:length]), streams[length]
