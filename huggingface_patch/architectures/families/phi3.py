"""Phi-3: Llama-shaped with two fused projections. ``qkv_proj`` holds the query rows, then the key rows,
then the value rows (grouped key/value heads); ``gate_up_proj`` holds the gate half, then the up half.
Only the value rows and the up half act on contributions (views of the fused weights, no copy)."""

from __future__ import annotations

from torch import nn

from ..registry import register_architecture
from ..spec import Affine, AttentionSpec, MLPSpec
from .llama import LlamaAdapter


@register_architecture
class Phi3Adapter(LlamaAdapter):
    """Phi-3: Llama-shaped with fused ``qkv_proj`` and ``gate_up_proj``."""

    name = "phi3"
    model_types = ("phi3",)
    summary = {"classes": "Phi3ForCausalLM, Phi3Model",
               "frozen": "RMSNorm scales, attention probabilities (RoPE, GQA), SiLU gate",
               "bias term": "none (no biases in released checkpoints)",
               "notes": "fused qkv_proj (q, k, v) and gate_up_proj (gate, up) split by rows"}

    @staticmethod
    def _qkv(model: nn.Module, attn: nn.Module) -> tuple[Affine, Affine, Affine]:
        config = model.config
        fused = Affine.from_linear(attn.qkv_proj)
        q = config.num_attention_heads * attn.head_dim
        kv = config.num_key_value_heads * attn.head_dim
        return fused.columns(0, q), fused.columns(q, q + kv), fused.columns(q + kv, q + 2 * kv)

    def attention(self, model: nn.Module, layer: nn.Module) -> AttentionSpec:
        attn = layer.self_attn
        _, _, value = self._qkv(model, attn)
        return AttentionSpec(module=attn, value=value, output=Affine.from_linear(attn.o_proj),
                             num_heads=model.config.num_attention_heads,
                             num_kv_heads=model.config.num_key_value_heads, head_dim=attn.head_dim)

    def mlp(self, model: nn.Module, layer: nn.Module) -> MLPSpec:
        mlp = layer.mlp
        fused = Affine.from_linear(mlp.gate_up_proj)
        width = fused.out_features // 2
        return MLPSpec(kind="gated", act=mlp.activation_fn, act_name=self.activation_name(model.config),
                       gate=fused.columns(0, width), up=fused.columns(width, 2 * width),
                       down=Affine.from_linear(mlp.down_proj))

    def query_key(self, model: nn.Module, layer: int) -> tuple[Affine, Affine]:
        query, key, _ = self._qkv(model, self.base_model(model).layers[layer].self_attn)
        return query, key

    def tiny_configs(self) -> dict:
        from transformers import Phi3Config

        from ..tiny import llama_shaped

        return {"phi3": llama_shaped(Phi3Config, resid_pdrop=0.0, embd_pdrop=0.0, attention_dropout=0.0)}
