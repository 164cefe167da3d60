"""StableLM: LayerNorm (with shift), partial rotary positions, q/k/v biases and optional per-head q/k
LayerNorms (inside the attention probabilities), a SiLU-gated MLP, and a parallel residual
(``x + attn(ln(x)) + mlp(ln(x))``, one norm shared by both branches) or a sequential pre-norm one."""

from __future__ import annotations

from torch import nn

from ..base import LayerParts
from ..norm_specs import layer_norm_spec
from ..registry import register_architecture
from ..spec import AttentionSpec, Branch, MLPSpec, NormSpec, ResidualBlock
from .llama import LlamaAdapter


@register_architecture
class StableLmAdapter(LlamaAdapter):
    """StableLM (1, 2 and Zephyr): LayerNorm, parallel or sequential residual from the config."""

    name = "stablelm"
    model_types = ("stablelm",)
    summary = {"classes": "StableLmForCausalLM, StableLmModel",
               "frozen": "LayerNorm scales, attention probabilities (partial rotary, per-head q/k LayerNorm), "
                         "SiLU gate",
               "bias term": "LayerNorm shifts, q/k/v biases",
               "notes": "parallel residual (one shared norm) or sequential, from use_parallel_residual"}

    def norm(self, module: nn.Module) -> NormSpec:
        return layer_norm_spec(module)

    def layer_parts(self, layer: nn.Module) -> LayerParts:
        parallel = layer.post_attention_layernorm is None
        return LayerParts(layer, layer.self_attn, layer.self_attn.o_proj, layer.mlp.down_proj, layer.input_layernorm,
                          layer.input_layernorm if parallel else layer.post_attention_layernorm, parallel=parallel,
                          mlp=layer.mlp)

    def blocks(self, layer: nn.Module, attention: AttentionSpec, mlp: MLPSpec) -> list[ResidualBlock]:
        norm = self.norm(layer.input_layernorm)
        if layer.post_attention_layernorm is None:
            return [ResidualBlock([Branch(attention, norm), Branch(mlp, norm)])]
        return [ResidualBlock.single(attention, pre_norm=norm),
                ResidualBlock.single(mlp, pre_norm=self.norm(layer.post_attention_layernorm))]

    def tiny_configs(self) -> dict:
        from transformers import StableLmConfig

        from ..tiny import COMMON

        def config(parallel: bool, qk_layernorm: bool):
            return StableLmConfig(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                                  intermediate_size=96, max_position_embeddings=256, use_qkv_bias=True,
                                  qk_layernorm=qk_layernorm, use_parallel_residual=parallel, partial_rotary_factor=0.25,
                                  tie_word_embeddings=False, hidden_dropout=0.0, attention_dropout=0.0, **COMMON)

        return {"stablelm-parallel": config(True, True), "stablelm-sequential": config(False, False)}
