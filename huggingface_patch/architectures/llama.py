"""Llama family: Llama, Mistral, Qwen2 (RMSNorm, gated MLP, grouped-query attention, RoPE inside the
attention probabilities; Qwen2's q/k/v biases and any ``attention_bias``/``mlp_bias`` are honoured)."""

from __future__ import annotations

from torch import nn

from .base import ArchitectureAdapter, LayerParts, ModelParts
from .norms import rms_norm_spec
from .spec import Affine, AttentionSpec, LayerSpec, MLPSpec, ModelSpec, ResidualBlock


class LlamaAdapter(ArchitectureAdapter):
    name = "llama"
    model_types = ("llama", "mistral", "qwen2")

    def parts(self, model: nn.Module) -> ModelParts:
        base = self.base_model(model)
        layers = [
            LayerParts(layer, layer.self_attn, layer.mlp.down_proj, layer.input_layernorm, layer.post_attention_layernorm)
            for layer in base.layers
        ]
        return ModelParts(base, layers, base.norm, None)

    def spec(self, model: nn.Module) -> ModelSpec:
        base = self.base_model(model)
        config = model.config
        layers = []
        for layer in base.layers:
            attn = layer.self_attn
            num_heads = config.num_attention_heads
            attention = AttentionSpec(
                module=attn,
                value=Affine.from_linear(attn.v_proj),
                output=Affine.from_linear(attn.o_proj),
                num_heads=num_heads,
                num_kv_heads=num_heads // attn.num_key_value_groups,
                head_dim=attn.head_dim,
            )
            mlp = MLPSpec(
                kind="gated",
                act=layer.mlp.act_fn,
                act_name=config.hidden_act,
                gate=Affine.from_linear(layer.mlp.gate_proj),
                up=Affine.from_linear(layer.mlp.up_proj),
                down=Affine.from_linear(layer.mlp.down_proj),
            )
            blocks = [
                ResidualBlock(attention, pre_norm=rms_norm_spec(layer.input_layernorm)),
                ResidualBlock(mlp, pre_norm=rms_norm_spec(layer.post_attention_layernorm)),
            ]
            layers.append(LayerSpec(layer, blocks))
        return ModelSpec(layers, rms_norm_spec(base.norm), None, self.positions_from_mask)
