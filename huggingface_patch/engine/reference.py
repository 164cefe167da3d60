"""A deliberately plain per-source implementation of ``docs/design.md`` §1, for tests and benchmarks.

One source at a time, absolute positions, no blocks, no strided views, no shared code with the engine:
slow but easy to check by eye. It reads only the architecture records (which weights, which norms, how
the residual blocks are arranged) and computes every frozen coefficient itself from the captured real
forward pass.
"""

from __future__ import annotations

import torch

from ..architectures.spec import AttentionSpec, ModelSpec, NormSpec


def _gain(norm: NormSpec, dtype: torch.dtype):
    return None if norm.weight is None else norm.weight.to(dtype) + norm.weight_offset


def _formula(c: torch.Tensor, x: torch.Tensor, norm: NormSpec, is_bias: bool) -> torch.Tensor:
    """The norm frozen at the real input ``x`` applied to ``c`` (the shift only for the bias term)."""
    if norm.kind == "layer":
        c = (c - c.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + norm.eps)
    else:
        c = c / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps)
    gain = _gain(norm, c.dtype)
    if gain is not None:
        c = c * gain
    if is_bias and norm.bias is not None:
        c = c + norm.bias.to(c.dtype)
    return c


def _real_norm(x: torch.Tensor, norm: NormSpec) -> torch.Tensor:
    """The real norm output: the model's own module when known (it may round differently, e.g. an RMSNorm
    that computes in fp32), else the formula."""
    if norm.module is not None:
        return norm.module(x.to(norm.weight.dtype if norm.weight is not None else x.dtype)).to(x.dtype)
    return _formula(x, x, norm, True)


def _norm(c: torch.Tensor, x: torch.Tensor, norm: NormSpec, is_bias: bool) -> torch.Tensor:
    out = _formula(c, x, norm, is_bias)
    if is_bias and norm.module is not None:
        # the model's own rounding of its norm output belongs to no token
        out = out + _real_norm(x, norm) - _formula(x, x, norm, True)
    return out


def _attention(c: torch.Tensor, spec: AttentionSpec, probs: torch.Tensor, is_bias: bool) -> torch.Tensor:
    """C ``(T, H)``, probs ``(h, T, T)`` -> ``(T, H)``."""
    v = spec.value(c) if is_bias else spec.value.linear(c)
    groups = spec.num_heads // spec.num_kv_heads
    heads = []
    for head in range(spec.num_heads):
        kv = head // groups
        heads.append(probs[head] @ v[:, kv * spec.head_dim : (kv + 1) * spec.head_dim])
    mixed = torch.cat(heads, dim=-1)
    return spec.output(mixed) if is_bias else spec.output.linear(mixed)


def _ratio(act, act_name: str, z: torch.Tensor) -> torch.Tensor:
    """``act(z) / z``, and the activation's slope at 0 where ``z == 0`` (0 for ReLU, 1/2 for GELU/SiLU)."""
    slope = 0.0 if act_name == "relu" else 0.5
    safe = torch.where(z == 0, torch.ones_like(z), z)
    return torch.where(z == 0, torch.full_like(z, slope), act(z) / safe)


class _FrozenSublayer:
    """One sublayer frozen at its real (normed) input ``y`` ``(T, H)``: ``real`` is its real output."""

    def __init__(self, spec, y: torch.Tensor, probs: torch.Tensor):
        self.spec, self.probs = spec, probs
        if isinstance(spec, AttentionSpec):
            self.real = _attention(y, spec, probs, True)
        elif spec.kind == "gated":
            self.gate = spec.act(spec.gate(y))
            self.real = spec.down(self.gate * spec.up(y))
        else:
            z = spec.inp(y)
            self.ratio = _ratio(spec.act, spec.act_name, z)
            self.real = spec.out(spec.act(z))

    def __call__(self, c: torch.Tensor, is_bias: bool) -> torch.Tensor:
        spec = self.spec
        if isinstance(spec, AttentionSpec):
            return _attention(c, spec, self.probs, is_bias)
        if spec.kind == "gated":
            up = spec.up(c) if is_bias else spec.up.linear(c)
            return (spec.down if is_bias else spec.down.linear)(self.gate * up)
        inner = spec.inp(c) if is_bias else spec.inp.linear(c)
        return (spec.out if is_bias else spec.out.linear)(self.ratio * inner)


@torch.no_grad()
def reference_decomposition(spec: ModelSpec, layer_inputs, attention, dtype=torch.float64):
    """Contributions of every source ``(S, T, H)`` (absolute layout) and the bias ``(T, H)`` for batch item 0
    of an unpadded input, computed source by source (the default conventions)."""
    emb = layer_inputs[0][0].to(dtype)
    length = emb.shape[0]
    streams = [torch.zeros_like(emb) for _ in range(length + 1)]  # the last one is the bias term
    for s in range(length):
        streams[s][s] = emb[s]
    for layer, x_in, probs in zip(spec.layers, layer_inputs, attention):
        x = x_in[0].to(dtype)
        probs = probs[0].to(dtype)
        for block in layer.blocks:
            # the real pass through the block: each branch's input, frozen sublayer and real output
            frozen = []
            x_next = x
            for branch in block.branches:
                y_real = _real_norm(x, branch.pre_norm) if branch.pre_norm is not None else x
                sublayer = _FrozenSublayer(branch.sublayer, y_real, probs)
                out_real = sublayer.real
                if branch.output_norm is not None:
                    out_real = _real_norm(sublayer.real, branch.output_norm)
                frozen.append((branch, sublayer))
                x_next = x_next + out_real
            new_streams = []
            for index, c in enumerate(streams):
                is_bias = index == length
                total = torch.zeros_like(c)
                for branch, sublayer in frozen:
                    y = _norm(c, x, branch.pre_norm, is_bias) if branch.pre_norm is not None else c
                    out = sublayer(y, is_bias)
                    if branch.output_norm is not None:
                        out = _norm(out, sublayer.real, branch.output_norm, is_bias)
                    total = total + out
                new_streams.append(c + total)
            streams = new_streams
            if block.post_norm is not None:
                streams = [_norm(c, x_next, block.post_norm, i == length) for i, c in enumerate(streams)]
                x_next = _real_norm(x_next, block.post_norm)
            x = x_next
    if spec.final_norm is not None:
        streams = [_norm(c, x, spec.final_norm, i == length) for i, c in enumerate(streams)]
    if spec.project_out is not None:
        streams = [spec.project_out.linear(c) for c in streams]
    return torch.stack(streams[:length]), streams[length]
