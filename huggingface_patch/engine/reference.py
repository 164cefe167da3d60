"""A deliberately plain per-source implementation of ``docs/design.md`` §1, for tests and benchmarks.

One source at a time, absolute positions, no blocks, no strided views, no shared code with the engine:
slow but easy to check by eye. It reads only the architecture records (which weights, which norms, how
the residual blocks are arranged) and computes every frozen coefficient itself from the captured real
forward pass.
"""

from __future__ import annotations

import torch

from ..architectures.spec import AttentionSpec, ModelSpec, MoESpec, NormSpec


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


def _attention(c: torch.Tensor, spec: AttentionSpec, probs: torch.Tensor, is_bias: bool,
               value_ratio: torch.Tensor | None = None, latent: torch.Tensor | None = None) -> torch.Tensor:
    """C ``(T, H)``, probs ``(h, T, T)`` -> ``(T, H)``; ``value_ratio`` ``(T, g*d)``: OLMo's clipped values,
    ``clamp(z) / z`` at each position; ``latent`` ``(T, r)``: the real value latent of latent attention, at
    which its norm is frozen."""
    if spec.value_latent is not None:
        z = spec.value_latent(c) if is_bias else spec.value_latent.linear(c)
        c = _norm(z, latent, spec.value_latent_norm, is_bias)
    v = spec.value(c) if is_bias else spec.value.linear(c)
    if value_ratio is not None:
        v = v * value_ratio
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


class _FrozenExperts:
    """A mixture-of-experts block frozen at ``y`` ``(T, H)``, token by token: the routed experts, their
    weights, and each one's coefficient on ``up`` and constant part."""

    def __init__(self, spec: MoESpec, y: torch.Tensor):
        self.spec = spec
        index, weights = spec.route(y.to(spec.gate.dtype))
        self.routes = []  # per token: [(expert, weight, coefficient (F,), constant (F,) or None)]
        self.real = torch.zeros_like(y)
        for t in range(y.shape[0]):
            chosen = []
            for e, w in zip(index[t].tolist(), weights[t].to(y.dtype)):
                gate = y[t] @ spec.gate[e].to(y.dtype) + (0 if spec.gate_bias is None else spec.gate_bias[e])
                up = y[t] @ spec.up[e].to(y.dtype) + (0 if spec.up_bias is None else spec.up_bias[e])
                activated, coefficient, constant = spec.activation(gate, up)
                expert_out = activated @ spec.down[e].to(y.dtype)
                if spec.down_bias is not None:
                    expert_out = expert_out + spec.down_bias[e]
                self.real[t] += w * expert_out
                chosen.append((e, w, coefficient, constant))
            self.routes.append(chosen)
        self.shared = self.shared_scale = None
        if spec.shared is not None:
            self.shared = _FrozenSublayer(spec.shared, y, None)
            self.shared_scale = spec.shared_gate(y).to(y.dtype) if spec.shared_gate is not None else 1.0
            self.real = self.real + self.shared_scale * self.shared.real

    def __call__(self, c: torch.Tensor, is_bias: bool) -> torch.Tensor:
        spec = self.spec
        out = torch.zeros_like(c)
        for t, chosen in enumerate(self.routes):
            for e, w, coefficient, constant in chosen:
                up = c[t] @ spec.up[e].to(c.dtype)
                if is_bias and spec.up_bias is not None:
                    up = up + spec.up_bias[e]
                inner = coefficient * up
                if is_bias and constant is not None:
                    inner = inner + constant
                expert_out = inner @ spec.down[e].to(c.dtype)
                if is_bias and spec.down_bias is not None:
                    expert_out = expert_out + spec.down_bias[e]
                out[t] += w * expert_out
        if self.shared is not None:
            out = out + self.shared_scale * self.shared(c, is_bias)
        return out


class _FrozenSublayer:
    """One sublayer frozen at its real (normed) input ``y`` ``(T, H)``: ``real`` is its real output."""

    def __new__(cls, spec, y: torch.Tensor, probs: torch.Tensor):
        if isinstance(spec, MoESpec):
            return _FrozenExperts(spec, y)
        return super().__new__(cls)

    def __init__(self, spec, y: torch.Tensor, probs: torch.Tensor):
        self.spec, self.probs, self.value_ratio, self.latent = spec, probs, None, None
        if isinstance(spec, AttentionSpec):
            if spec.value_latent is not None:
                self.latent = spec.value_latent(y)
            if spec.value_clip is not None:
                z = spec.value(y if self.latent is None else _real_norm(self.latent, spec.value_latent_norm))
                safe = torch.where(z == 0, torch.ones_like(z), z)
                self.value_ratio = torch.where(z == 0, torch.ones_like(z),
                                               z.clamp(-spec.value_clip, spec.value_clip) / safe)
            self.real = _attention(y, spec, probs, True, self.value_ratio, self.latent)
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
            return _attention(c, spec, self.probs, is_bias, self.value_ratio, self.latent)
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
    if spec.embedding_shift is not None:  # BLOOM's embedding-norm shift: in every position, owned by no token
        shift = spec.embedding_shift.detach().to(dtype)
        emb = emb - shift
        streams[length] = streams[length] + shift
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
                x_next = x_next + out_real * branch.scale
            new_streams = []
            for index, c in enumerate(streams):
                is_bias = index == length
                total = torch.zeros_like(c)
                for branch, sublayer in frozen:
                    y = _norm(c, x, branch.pre_norm, is_bias) if branch.pre_norm is not None else c
                    out = sublayer(y, is_bias)
                    if branch.output_norm is not None:
                        out = _norm(out, sublayer.real, branch.output_norm, is_bias)
                    total = total + out * branch.scale
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
