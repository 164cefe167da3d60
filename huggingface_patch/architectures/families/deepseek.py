"""DeepSeek V3: multi-head latent attention, dense first layers, routed experts with a shared expert.

* Latent attention: ``kv_a_proj_with_mqa`` maps the normed state to a latent of ``kv_lora_rank`` values (plus a
  rotary key part shared by the heads), ``kv_a_layernorm`` (an RMSNorm) normalises the latent, and
  ``kv_b_proj`` expands it into each head's non-rotary key and its value. Only the value path carries
  contributions: latent → norm (scale frozen at the real latent, like every norm) → the value rows of
  ``kv_b_proj`` → ``o_proj``. Queries (low-rank through ``q_a_layernorm``) and keys, rotary parts included,
  shape the probabilities, which are captured.
* The first ``first_k_dense_replace`` layers have a dense SiLU-gated MLP; the others route each token to
  ``num_experts_per_tok`` of ``n_routed_experts`` (sigmoid scores, a correction bias that only chooses,
  group-limited top-k, renormalised and scaled by ``routed_scaling_factor``: all inside the router, whose
  output is frozen) plus an always-on shared expert.
"""

from __future__ import annotations

from torch import nn

from ..norm_specs import rms_norm_spec
from ..registry import UnsupportedArchitectureError, register_architecture
from ..spec import Affine, AttentionSpec
from .moe import _MoEAdapter


def _value_rows(attention: nn.Module) -> Affine:
    """The value part of ``kv_b_proj`` as an ``x @ W`` map ``r -> h*v`` (its output is laid out per head as
    ``[non-rotary key, value]``)."""
    weight = attention.kv_b_proj.weight  # (h * (nope + v), r)
    nope, v = attention.qk_nope_head_dim, attention.v_head_dim
    rows = weight.view(attention.num_heads, nope + v, -1)[:, nope:, :].reshape(attention.num_heads * v, -1)
    bias = attention.kv_b_proj.bias
    if bias is not None:
        bias = bias.view(attention.num_heads, nope + v)[:, nope:].reshape(-1)
    return Affine(rows.t(), bias)


def _latent(attention: nn.Module) -> Affine:
    """The latent part of ``kv_a_proj_with_mqa`` (its first ``kv_lora_rank`` outputs) as ``H -> r``."""
    projection, rank = attention.kv_a_proj_with_mqa, attention.kv_lora_rank
    bias = None if projection.bias is None else projection.bias[:rank]
    return Affine(projection.weight[:rank].t(), bias)


@register_architecture
class DeepseekV3Adapter(_MoEAdapter):
    """DeepSeek V3: latent attention's value path through its frozen latent norm; routed and shared experts."""

    name = "deepseek_v3"
    model_types = ("deepseek_v3",)
    summary = {"classes": "DeepseekV3ForCausalLM, DeepseekV3Model",
               "frozen": "RMSNorm scales (the value latent's too), attention probabilities (low-rank queries, "
                         "rotary key part), routing (group-limited top-k of sigmoid scores), each expert's SiLU gate",
               "bias term": "attention_bias where set",
               "notes": "latent attention: only the value path carries contributions; dense first layers; shared "
                        "expert always on; QK readings in embedding space are not defined"}

    def attention(self, model: nn.Module, layer: nn.Module) -> AttentionSpec:
        attn = layer.self_attn
        return AttentionSpec(module=attn, value=_value_rows(attn), output=Affine.from_linear(attn.o_proj),
                             num_heads=attn.num_heads, num_kv_heads=attn.num_heads, head_dim=attn.v_head_dim,
                             value_latent=_latent(attn), value_latent_norm=rms_norm_spec(attn.kv_a_layernorm))

    def shared(self, model: nn.Module, block: nn.Module) -> dict:
        return {"shared": self.gated_mlp(model, block.shared_experts)}

    def query_key(self, model: nn.Module, layer: int):
        raise UnsupportedArchitectureError(
            "deepseek_v3: latent attention has no single W_Q, W_K pair to read in embedding space (queries pass "
            "through a norm, keys share a rotary part); read VO heads or FF neurons instead")

    def tiny_configs(self) -> dict:
        from transformers import DeepseekV3Config

        from ..tiny import COMMON

        config = dict(hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=4, n_shared_experts=1, n_routed_experts=8,
                      num_experts_per_tok=2, n_group=2, topk_group=1, routed_scaling_factor=2.5,
                      first_k_dense_replace=1, norm_topk_prob=True, kv_lora_rank=16, q_lora_rank=24,
                      qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16, max_position_embeddings=256,
                      tie_word_embeddings=False, rms_norm_eps=1e-5)
        return {"deepseek_v3": DeepseekV3Config(**config, attention_bias=True, **COMMON),
                "deepseek_v3-noqlora": DeepseekV3Config(**dict(config, q_lora_rank=None), rope_interleave=False,
                                                        **COMMON)}
