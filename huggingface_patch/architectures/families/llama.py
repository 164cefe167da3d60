"""Llama, Mistral, Qwen2: RMSNorm, gated MLP, grouped-query attention, RoPE inside the attention
probabilities (Mistral's sliding window too); Qwen2's q/k/v biases and any ``attention_bias`` /
``mlp_bias`` go to the bias term.

:class:`LlamaAdapter` is also the base of the other Llama-shaped families (Qwen3, Phi-3, Gemma): they
override only the pieces that differ (:meth:`attention`, :meth:`mlp`, :meth:`norm`, :meth:`blocks`).
"""

from __future__ import annotations

from torch import nn

from ..base import ArchitectureAdapter, LayerParts, ModelParts
from ..norm_specs import rms_norm_spec
from ..registry import register_architecture
from ..spec import Affine, AttentionSpec, LayerSpec, MLPSpec, ModelSpec, NormSpec, ResidualBlock


@register_architecture
class LlamaAdapter(ArchitectureAdapter):
    """Llama, Mistral and Qwen2, and the base of the other Llama-shaped adapters."""

    name = "llama"
    model_types = ("llama", "mistral", "qwen2")
    summary = {"classes": "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM (and their bare models)",
               "frozen": "RMSNorm scales, attention probabilities (RoPE, GQA, sliding window), SiLU gate",
               "bias term": "q/k/v biases (Qwen2), attention_bias / mlp_bias where set",
               "notes": "gate frozen like attention: W_down(act(gate(x)) * W_up c)"}

    def parts(self, model: nn.Module) -> ModelParts:
        base = self.base_model(model)
        layers = [self.layer_parts(layer) for layer in base.layers]
        return ModelParts(base, layers, base.norm, None, base.embed_tokens)

    def layer_parts(self, layer: nn.Module) -> LayerParts:
        return LayerParts(layer, layer.self_attn, layer.self_attn.o_proj, layer.mlp.down_proj,
                          layer.input_layernorm, layer.post_attention_layernorm, mlp=layer.mlp)

    def norm(self, module: nn.Module) -> NormSpec:
        return rms_norm_spec(module)

    def attention(self, model: nn.Module, layer: nn.Module) -> AttentionSpec:
        attn = layer.self_attn
        heads = model.config.num_attention_heads
        return AttentionSpec(module=attn, value=Affine.from_linear(attn.v_proj), output=Affine.from_linear(attn.o_proj),
                             num_heads=heads, num_kv_heads=heads // attn.num_key_value_groups, head_dim=attn.head_dim)

    def mlp(self, model: nn.Module, layer: nn.Module) -> MLPSpec:
        return self.gated_mlp(model, layer.mlp)

    def gated_mlp(self, model: nn.Module, module: nn.Module) -> MLPSpec:
        """``down(act(gate(x)) * up(x))`` from a module with ``act_fn``, ``gate_proj``, ``up_proj``, ``down_proj``
        (a dense MLP, or the shared expert of a mixture-of-experts block)."""
        return MLPSpec(kind="gated", act=module.act_fn, act_name=self.activation_name(model.config),
                       gate=Affine.from_linear(module.gate_proj), up=Affine.from_linear(module.up_proj),
                       down=Affine.from_linear(module.down_proj))

    @staticmethod
    def activation_name(config) -> str:
        return getattr(config, "hidden_act", None) or config.hidden_activation

    def blocks(self, layer: nn.Module, attention: AttentionSpec, mlp: MLPSpec) -> list[ResidualBlock]:
        """Pre-norm: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``."""
        return [ResidualBlock.single(attention, pre_norm=self.norm(layer.input_layernorm)),
                ResidualBlock.single(mlp, pre_norm=self.norm(layer.post_attention_layernorm))]

    def spec(self, model: nn.Module) -> ModelSpec:
        base = self.base_model(model)
        layers = [LayerSpec(layer, self.blocks(layer, self.attention(model, layer), self.mlp(model, layer)))
                  for layer in base.layers]
        return ModelSpec(layers, self.norm(base.norm), None, self.positions_from_mask)

    def query_key(self, model: nn.Module, layer: int) -> tuple[Affine, Affine]:
        attn = self.base_model(model).layers[layer].self_attn
        return Affine.from_linear(attn.q_proj), Affine.from_linear(attn.k_proj)

    def tiny_configs(self) -> dict:
        from transformers import LlamaConfig, MistralConfig, Qwen2Config

        from ..tiny import llama_shaped

        return {"llama": llama_shaped(LlamaConfig, attention_bias=True, mlp_bias=True),
                "mistral": llama_shaped(MistralConfig, sliding_window=None),
                "qwen2": llama_shaped(Qwen2Config, sliding_window=None)}
