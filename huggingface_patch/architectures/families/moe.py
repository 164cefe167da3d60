"""Mixture-of-experts families: Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE and GPT-OSS (Llama-shaped attention).

Every block routes each token to ``k`` of ``E`` experts; the router's choice and weights (after softmax,
top-k and renormalisation, as the model computes them) are frozen like attention probabilities, and each
contribution runs through the chosen experts only (:mod:`huggingface_patch.engine.moe`). Transformers 5
stores the experts as 3-D parameters; each adapter says how to read them as ``x @ W`` maps:

* Mixtral, Qwen2/3-MoE, OLMoE: ``gate_up_proj`` ``(E, 2F, H)`` (gate rows, then up rows), ``down_proj``
  ``(E, H, F)``, SiLU gate; Qwen2-MoE adds a shared expert gated per token by ``sigmoid(shared_expert_gate
  (x))`` (frozen); Qwen2/3-MoE can keep dense MLPs in some layers (``mlp_only_layers``).
* GPT-OSS: ``gate_up_proj`` ``(E, H, 2F)`` with gate and up interleaved, biases everywhere, and a clamped
  activation ``(clamp(u) + 1) * g' sigmoid(alpha g')`` with ``g' = min(g, limit)``: the gate part is frozen,
  the up clamp is a frozen ratio, and the constant ``+ 1`` belongs to the bias term. Attention sinks live
  inside the probabilities (the rows do not sum to 1).
"""

from __future__ import annotations

import torch
from torch import nn

from ..base import LayerParts
from ..registry import register_architecture
from ..spec import MLPSpec, MoESpec, gated_activation
from .llama import LlamaAdapter


def _route(router: nn.Module):
    """The router's own ``(logits, weights, index)`` as ``(index, weights)``."""

    def route(y: torch.Tensor):
        _, weights, index = router(y)
        return index, weights

    return route


class _MoEAdapter(LlamaAdapter):
    """Llama-shaped attention and norms; the MLP of a layer is a sparse block (``layer.mlp`` with ``gate`` /
    ``experts``) or, in some layers of some families, a dense MLP."""

    #: the name of the block's router module
    router_name = "gate"

    def _is_sparse(self, layer: nn.Module) -> bool:
        return hasattr(layer.mlp, "experts")

    def layer_parts(self, layer: nn.Module) -> LayerParts:
        if not self._is_sparse(layer):
            return super().layer_parts(layer)
        # knocking the block out zeroes its input; its output is what it adds to the residual
        return LayerParts(layer, layer.self_attn, layer.self_attn.o_proj, layer.mlp, layer.input_layernorm,
                          layer.post_attention_layernorm, mlp_update=layer.mlp, mlp=layer.mlp)

    def experts(self, block: nn.Module) -> dict:
        """``gate``, ``up`` ``(E, H, F)``, ``down`` ``(E, F, H)`` and biases of the experts (``x @ W`` views)."""
        experts = block.experts
        width = experts.gate_up_proj.shape[1] // 2
        return {"gate": experts.gate_up_proj[:, :width, :].transpose(1, 2),
                "up": experts.gate_up_proj[:, width:, :].transpose(1, 2),
                "down": experts.down_proj.transpose(1, 2), "activation": gated_activation(experts.act_fn)}

    def shared(self, model: nn.Module, block: nn.Module) -> dict:
        """The shared expert and its gate (none by default)."""
        return {}

    def mlp(self, model: nn.Module, layer: nn.Module) -> MLPSpec | MoESpec:
        if not self._is_sparse(layer):
            return super().mlp(model, layer)
        block = layer.mlp
        router = getattr(block, self.router_name)
        return MoESpec(route=_route(router), top_k=router.top_k, act_name=self.activation_name(model.config),
                       **self.experts(block), **self.shared(model, block))

    def expert_count(self, model: nn.Module) -> int:
        config = model.config
        return int(getattr(config, "num_local_experts", None) or config.num_experts)


@register_architecture
class MixtralAdapter(_MoEAdapter):
    """Mixtral: top-k routing over SiLU-gated experts."""

    name = "mixtral"
    model_types = ("mixtral",)
    summary = {"classes": "MixtralForCausalLM, MixtralModel",
               "frozen": "RMSNorm scales, attention probabilities (RoPE, GQA, sliding window), routing (experts and "
                         "weights), each expert's SiLU gate",
               "bias term": "none (no biases)",
               "notes": "each expert computed only for the rows routed to it"}

    def tiny_configs(self) -> dict:
        from transformers import MixtralConfig

        from ..tiny import llama_shaped

        return {"mixtral": llama_shaped(MixtralConfig, intermediate_size=32, num_local_experts=8,
                                        num_experts_per_tok=2, sliding_window=None, router_jitter_noise=0.0)}


@register_architecture
class Qwen2MoeAdapter(_MoEAdapter):
    """Qwen2-MoE: routed experts plus a shared expert with a sigmoid gate; optional dense layers."""

    name = "qwen2_moe"
    model_types = ("qwen2_moe",)
    summary = {"classes": "Qwen2MoeForCausalLM, Qwen2MoeModel",
               "frozen": "RMSNorm scales, attention probabilities, routing, each expert's SiLU gate, the shared "
                         "expert's sigmoid gate",
               "bias term": "q/k/v biases",
               "notes": "shared expert always on, scaled per token; mlp_only_layers stay dense"}

    def shared(self, model: nn.Module, block: nn.Module) -> dict:
        return {"shared": self.gated_mlp(model, block.shared_expert),
                "shared_gate": lambda y: torch.sigmoid(block.shared_expert_gate(y))}

    def tiny_configs(self) -> dict:
        from transformers import Qwen2MoeConfig

        from ..tiny import llama_shaped

        return {"qwen2_moe": llama_shaped(Qwen2MoeConfig, num_experts=4, num_experts_per_tok=2,
                                          moe_intermediate_size=32, shared_expert_intermediate_size=48,
                                          decoder_sparse_step=1, mlp_only_layers=[1], norm_topk_prob=False,
                                          qkv_bias=True, use_sliding_window=False)}


@register_architecture
class Qwen3MoeAdapter(_MoEAdapter):
    """Qwen3-MoE: routed experts (renormalised top-k), q/k norms; optional dense layers."""

    name = "qwen3_moe"
    model_types = ("qwen3_moe",)
    summary = {"classes": "Qwen3MoeForCausalLM, Qwen3MoeModel",
               "frozen": "RMSNorm scales, attention probabilities (q/k norms), routing, each expert's SiLU gate",
               "bias term": "attention_bias where set",
               "notes": "mlp_only_layers stay dense"}

    def tiny_configs(self) -> dict:
        from transformers import Qwen3MoeConfig

        from ..tiny import llama_shaped

        return {"qwen3_moe": llama_shaped(Qwen3MoeConfig, head_dim=16, num_experts=4, num_experts_per_tok=2,
                                          moe_intermediate_size=32, decoder_sparse_step=1, mlp_only_layers=[0],
                                          norm_topk_prob=True, attention_bias=True, use_sliding_window=False)}


@register_architecture
class OlmoeAdapter(_MoEAdapter):
    """OLMoE: OLMo-style q/k norms over the whole projection, routed experts."""

    name = "olmoe"
    model_types = ("olmoe",)
    summary = {"classes": "OlmoeForCausalLM, OlmoeModel",
               "frozen": "RMSNorm scales, attention probabilities (q/k norms, RoPE), routing, each expert's SiLU "
                         "gate",
               "bias term": "attention_bias where set",
               "notes": "each expert computed only for the rows routed to it"}

    def tiny_configs(self) -> dict:
        from transformers import OlmoeConfig

        from ..tiny import llama_shaped

        return {"olmoe": llama_shaped(OlmoeConfig, intermediate_size=32, num_experts=4, num_experts_per_tok=2,
                                      num_key_value_heads=4, norm_topk_prob=False)}


@register_architecture
class GptOssAdapter(_MoEAdapter):
    """GPT-OSS: attention sinks, biased experts with a clamped gated activation."""

    name = "gpt_oss"
    model_types = ("gpt_oss",)
    router_name = "router"
    summary = {"classes": "GptOssForCausalLM, GptOssModel",
               "frozen": "RMSNorm scales, attention probabilities (sinks, sliding windows), routing, each expert's "
                         "clamped gate g' sigmoid(alpha g') and its up clamp's ratio",
               "bias term": "q/k/v/o biases, expert biases, the activation's constant (u + 1) part",
               "notes": "interleaved gate/up columns; the sink's share of each row stays out of the sources"}

    def experts(self, block: nn.Module) -> dict:
        experts = block.experts
        limit, alpha = float(experts.limit), float(experts.alpha)

        def activation(gate: torch.Tensor, up: torch.Tensor):
            g = gate.clamp(max=limit)
            glu = g * torch.sigmoid(g * alpha)
            clipped = up.clamp(-limit, limit)
            zero = up == 0
            ratio = torch.where(zero, torch.ones_like(up), clipped / torch.where(zero, torch.ones_like(up), up))
            return (clipped + 1) * glu, glu * ratio, glu

        return {"gate": experts.gate_up_proj[..., ::2], "up": experts.gate_up_proj[..., 1::2],
                "gate_bias": experts.gate_up_proj_bias[..., ::2], "up_bias": experts.gate_up_proj_bias[..., 1::2],
                "down": experts.down_proj, "down_bias": experts.down_proj_bias, "activation": activation}

    @staticmethod
    def activation_name(config) -> str:
        return "gpt_oss_swiglu"

    def tiny_configs(self) -> dict:
        from transformers import GptOssConfig

        from ..tiny import llama_shaped

        # a small limit, so that the clamps act on a random model
        return {"gpt_oss": llama_shaped(GptOssConfig, head_dim=16, intermediate_size=32, num_local_experts=4,
                                        num_experts_per_tok=2, sliding_window=5, swiglu_limit=0.3,
                                        layer_types=["sliding_attention", "full_attention", "sliding_attention"])}
