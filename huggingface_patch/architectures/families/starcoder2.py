"""Starcoder2: LayerNorms, grouped key/value heads with biases, a sliding window (inside the probabilities)
and a plain GELU MLP with biases (``c_fc`` / ``c_proj``)."""

from __future__ import annotations

from torch import nn

from ..base import LayerParts
from ..norm_specs import layer_norm_spec
from ..registry import register_architecture
from ..spec import Affine, MLPSpec, NormSpec
from .llama import LlamaAdapter


@register_architecture
class Starcoder2Adapter(LlamaAdapter):
    """Starcoder2: Llama-shaped attention, LayerNorm, plain MLP."""

    name = "starcoder2"
    model_types = ("starcoder2",)
    summary = {"classes": "Starcoder2ForCausalLM, Starcoder2Model",
               "frozen": "LayerNorm scales, attention probabilities (RoPE, GQA, sliding window), GELU ratio act(z)/z",
               "bias term": "LayerNorm shifts, q/k/v/o biases, c_fc and c_proj biases",
               "notes": "plain MLP c_proj(act(c_fc x))"}

    def norm(self, module: nn.Module) -> NormSpec:
        return layer_norm_spec(module)

    def layer_parts(self, layer: nn.Module) -> LayerParts:
        return LayerParts(layer, layer.self_attn, layer.self_attn.o_proj, layer.mlp.c_proj, layer.input_layernorm,
                          layer.post_attention_layernorm, mlp=layer.mlp)

    def mlp(self, model: nn.Module, layer: nn.Module) -> MLPSpec:
        mlp = layer.mlp
        return MLPSpec(kind="act", act=mlp.act, act_name=model.config.hidden_act, inp=Affine.from_linear(mlp.c_fc),
                       out=Affine.from_linear(mlp.c_proj))

    def tiny_configs(self) -> dict:
        from transformers import Starcoder2Config

        from ..tiny import COMMON

        config = Starcoder2Config(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                                  intermediate_size=128, max_position_embeddings=256, use_bias=True, sliding_window=5,
                                  residual_dropout=0.0, embedding_dropout=0.0, attention_dropout=0.0,
                                  tie_word_embeddings=False, **COMMON)
        return {"starcoder2": config}
