"""Cohere (Command-R): a parallel block from one LayerNorm without shift (``x + attn(ln(x)) + mlp(ln(x))``),
optional per-head q/k norms (inside the attention probabilities), a SiLU-gated MLP, and ``logit_scale``
multiplying the logits (folded into the read-out's weight)."""

from __future__ import annotations

from torch import nn

from ..base import LayerParts
from ..registry import register_architecture
from ..spec import AttentionSpec, Branch, MLPSpec, NormSpec, Readout, ResidualBlock
from .llama import LlamaAdapter


@register_architecture
class CohereAdapter(LlamaAdapter):
    """Cohere: parallel attention and MLP from one shift-free LayerNorm; scaled logits."""

    name = "cohere"
    model_types = ("cohere",)
    summary = {"classes": "CohereForCausalLM, CohereModel",
               "frozen": "LayerNorm scales (no shift, shared by both branches), attention probabilities (RoPE, "
                         "optional q/k norms), SiLU gate",
               "bias term": "attention_bias where set",
               "notes": "parallel residual; logit_scale folded into the read-out"}

    def norm(self, module: nn.Module) -> NormSpec:
        return NormSpec("layer", module.weight, None, float(module.variance_epsilon), module)

    def layer_parts(self, layer: nn.Module) -> LayerParts:
        return LayerParts(layer, layer.self_attn, layer.self_attn.o_proj, layer.mlp.down_proj, layer.input_layernorm,
                          layer.input_layernorm, parallel=True, mlp=layer.mlp)

    def blocks(self, layer: nn.Module, attention: AttentionSpec, mlp: MLPSpec) -> list[ResidualBlock]:
        norm = self.norm(layer.input_layernorm)
        return [ResidualBlock([Branch(attention, norm), Branch(mlp, norm)])]

    def readout(self, model: nn.Module) -> Readout:
        head = super().readout(model)
        scale = float(model.config.logit_scale)
        return Readout(head.weight * scale, None if head.bias is None else head.bias * scale, head.softcap)

    def tiny_configs(self) -> dict:
        from transformers import CohereConfig

        from ..tiny import llama_shaped

        return {"cohere": llama_shaped(CohereConfig, attention_bias=True, use_qk_norm=True, logit_scale=0.5,
                                       layer_norm_eps=1e-5),
                "cohere-noqknorm": llama_shaped(CohereConfig, use_qk_norm=False, logit_scale=2.0, layer_norm_eps=1e-5)}
