"""Falcon: every variant Transformers loads.

* New decoder architecture (Falcon-40B/180B, Falcon 2): ``query_key_value`` grouped per key/value head as
  ``[its queries, key, value]``; attention and MLP in parallel from one or two input LayerNorms.
* Classic (Falcon-7B): multi-query (``[queries | key | value]``), parallel attention and MLP from one
  LayerNorm.
* RW-style: per-head ``(q, k, v)`` layout, sequential pre-norm blocks, ALiBi (inside the probabilities,
  with the mask), biases.
"""

from __future__ import annotations

import torch
from torch import nn

from ..base import ArchitectureAdapter, LayerParts, ModelParts
from ..norm_specs import layer_norm_spec
from ..registry import register_architecture
from ..spec import Affine, AttentionSpec, Branch, LayerSpec, MLPSpec, ModelSpec, ResidualBlock


def _norms(layer: nn.Module, config):
    """``(attention norm, MLP norm, parallel)`` modules of one layer, as its forward picks them."""
    if config.new_decoder_architecture and config.num_ln_in_parallel_attn == 2:
        return layer.ln_attn, layer.ln_mlp, True
    if config.new_decoder_architecture or config.parallel_attn:
        return layer.input_layernorm, layer.input_layernorm, True
    return layer.input_layernorm, layer.post_attention_layernorm, False


@register_architecture
class FalconAdapter(ArchitectureAdapter):
    """Falcon: grouped, multi-query or per-head fused query_key_value; parallel or sequential blocks."""

    name = "falcon"
    model_types = ("falcon",)
    summary = {"classes": "FalconForCausalLM, FalconModel",
               "frozen": "LayerNorm scales, attention probabilities (RoPE or ALiBi, grouped or multi-query), GELU "
                         "ratio act(z)/z",
               "bias term": "LayerNorm shifts, value rows of the query_key_value bias, dense and MLP biases where "
                            "set",
               "notes": "fused query_key_value by its layout; parallel (one or two norms) or sequential blocks"}

    def parts(self, model: nn.Module) -> ModelParts:
        base = self.base_model(model)
        layers = []
        for layer in base.h:
            attn_norm, mlp_norm, parallel = _norms(layer, model.config)
            layers.append(LayerParts(layer, layer.self_attention, layer.self_attention.dense, layer.mlp.dense_4h_to_h,
                                     attn_norm, mlp_norm, parallel=parallel, mlp=layer.mlp))
        return ModelParts(base, layers, base.ln_f, None, base.word_embeddings)

    @staticmethod
    def _fused(model: nn.Module, layer: nn.Module, which: int) -> Affine:
        """Query (0), key (1) or value (2) rows of ``query_key_value`` by its layout."""
        attn = layer.self_attention
        fused = Affine.from_linear(attn.query_key_value)
        d, heads, groups = attn.head_dim, attn.num_heads, attn.num_kv_heads
        if attn.new_decoder_architecture:
            per = heads // groups  # queries per key/value head, then its key, then its value
            slots = [list(range(per)), [per], [per + 1]][which]
            base = torch.arange(groups)[:, None] * (per + 2)
            heads_at = (base + torch.tensor(slots)[None, :]).reshape(-1)
        elif attn.multi_query:
            heads_at = [torch.arange(heads), torch.tensor([heads]), torch.tensor([heads + 1])][which]
        else:
            heads_at = torch.arange(heads) * 3 + which
        index = (heads_at[:, None] * d + torch.arange(d)[None, :]).reshape(-1)
        return fused.select(index.to(fused.weight.device))

    def spec(self, model: nn.Module) -> ModelSpec:
        base = self.base_model(model)
        layers = []
        for layer in base.h:
            attn = layer.self_attention
            attention = AttentionSpec(module=attn, value=self._fused(model, layer, 2),
                                      output=Affine.from_linear(attn.dense), num_heads=attn.num_heads,
                                      num_kv_heads=attn.num_kv_heads, head_dim=attn.head_dim)
            mlp = MLPSpec(kind="act", act=layer.mlp.act, act_name=model.config.activation,
                          inp=Affine.from_linear(layer.mlp.dense_h_to_4h),
                          out=Affine.from_linear(layer.mlp.dense_4h_to_h))
            attn_norm, mlp_norm, parallel = _norms(layer, model.config)
            first = layer_norm_spec(attn_norm)
            second = first if mlp_norm is attn_norm else layer_norm_spec(mlp_norm)
            if parallel:
                blocks = [ResidualBlock([Branch(attention, first), Branch(mlp, second)])]
            else:
                blocks = [ResidualBlock.single(attention, pre_norm=first), ResidualBlock.single(mlp, pre_norm=second)]
            layers.append(LayerSpec(layer, blocks))
        return ModelSpec(layers, layer_norm_spec(base.ln_f), None, self.positions_from_mask)

    def query_key(self, model: nn.Module, layer: int) -> tuple[Affine, Affine]:
        module = self.base_model(model).h[layer]
        return self._fused(model, module, 0), self._fused(model, module, 1)

    def tiny_configs(self) -> dict:
        from transformers import FalconConfig

        from ..tiny import COMMON

        def config(**extra):
            values = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, ffn_hidden_size=128,
                          hidden_dropout=0.0, attention_dropout=0.0, max_position_embeddings=256, bias=True, **COMMON)
            return FalconConfig(**{**values, **extra})

        return {"falcon-new": config(new_decoder_architecture=True, num_kv_heads=2, num_ln_in_parallel_attn=2),
                "falcon-new-1ln": config(new_decoder_architecture=True, num_kv_heads=2, num_ln_in_parallel_attn=1),
                "falcon-mqa": config(multi_query=True, parallel_attn=True, bias=False),
                "falcon-alibi": config(alibi=True, multi_query=False, parallel_attn=False)}
