"""Granite (IBM): Llama-shaped with four constants.

* ``embedding_multiplier`` scales the embeddings before layer 0 (inside the model's forward), so each source
  owns its scaled embedding (the captured input of layer 0);
* ``residual_multiplier`` scales each sublayer's output before the residual add: a constant on the branch
  (:class:`~huggingface_patch.architectures.spec.Branch` ``scale``), applied to every contribution;
* ``attention_multiplier`` is the softmax scaling, inside the attention probabilities;
* ``logits_scaling`` divides the logits: folded into the read-out's weight (the state the head reads is
  unchanged, so every read-out of a state or a contribution is divided alike).
"""

from __future__ import annotations

from torch import nn

from ..base import LayerParts
from ..registry import register_architecture
from ..spec import AttentionSpec, MLPSpec, Readout, ResidualBlock
from .llama import LlamaAdapter


@register_architecture
class GraniteAdapter(LlamaAdapter):
    """Granite: Llama with embedding, residual and attention multipliers and scaled logits."""

    name = "granite"
    model_types = ("granite",)
    summary = {"classes": "GraniteForCausalLM, GraniteModel",
               "frozen": "RMSNorm scales, attention probabilities (attention_multiplier, RoPE, GQA), SiLU gate",
               "bias term": "attention_bias / mlp_bias where set",
               "notes": "embedding_multiplier owned by each token; residual_multiplier scales every branch; "
                        "1 / logits_scaling folded into the read-out"}

    def layer_parts(self, layer: nn.Module) -> LayerParts:
        parts = super().layer_parts(layer)
        parts.update_scale = float(layer.residual_multiplier)
        return parts

    def blocks(self, layer: nn.Module, attention: AttentionSpec, mlp: MLPSpec) -> list[ResidualBlock]:
        scale = float(layer.residual_multiplier)
        return [ResidualBlock.single(attention, pre_norm=self.norm(layer.input_layernorm), scale=scale),
                ResidualBlock.single(mlp, pre_norm=self.norm(layer.post_attention_layernorm), scale=scale)]

    def readout(self, model: nn.Module) -> Readout:
        head = super().readout(model)
        scale = 1.0 / float(model.config.logits_scaling)
        return Readout(head.weight * scale, None if head.bias is None else head.bias * scale, head.softcap)

    def tiny_configs(self) -> dict:
        from transformers import GraniteConfig

        from ..tiny import llama_shaped

        return {"granite": llama_shaped(GraniteConfig, attention_bias=True, mlp_bias=True, embedding_multiplier=3.0,
                                        residual_multiplier=0.4, attention_multiplier=0.3, logits_scaling=4.0)}
