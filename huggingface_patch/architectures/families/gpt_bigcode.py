"""GPT-BigCode (SantaCoder, StarCoder 1): GPT-2's pre-LayerNorm blocks and learned positions with
``nn.Linear`` weights and a fused ``c_attn``: multi-query (one key/value head; columns ``[queries | key |
value]``) or, without ``multi_query``, laid out per head as ``(q, k, v)``."""

from __future__ import annotations

import torch
from torch import nn

from ..base import ArchitectureAdapter, LayerParts, ModelParts
from ..norm_specs import layer_norm_spec
from ..registry import register_architecture
from ..spec import Affine, AttentionSpec, LayerSpec, MLPSpec, ModelSpec, ResidualBlock


@register_architecture
class GPTBigCodeAdapter(ArchitectureAdapter):
    """GPT-BigCode: multi-query or per-head fused ``c_attn``."""

    name = "gpt_bigcode"
    model_types = ("gpt_bigcode",)
    summary = {"classes": "GPTBigCodeForCausalLM, GPTBigCodeModel",
               "frozen": "LayerNorm scales, attention probabilities (multi-query), GELU ratio act(z)/z",
               "bias term": "LayerNorm shifts, the value columns of the c_attn bias, c_proj and MLP biases",
               "notes": "fused c_attn by its layout (multi-query: [q | k | v]; else per head q, k, v); learned "
                        "positions owned by their token"}

    def parts(self, model: nn.Module) -> ModelParts:
        base = self.base_model(model)
        layers = [LayerParts(block, block.attn, block.attn.c_proj, block.mlp.c_proj, block.ln_1, block.ln_2,
                             mlp=block.mlp)
                  for block in base.h]
        return ModelParts(base, layers, base.ln_f, None, base.wte)

    @staticmethod
    def _fused(model: nn.Module, block: nn.Module, which: int) -> Affine:
        """Query (0), key (1) or value (2) columns of ``c_attn`` by its layout."""
        attn = block.attn
        fused = Affine.from_linear(attn.c_attn)
        hidden, head = attn.embed_dim, attn.head_dim
        if attn.multi_query:
            bounds = (0, hidden, hidden + head, hidden + 2 * head)
            return fused.columns(bounds[which], bounds[which + 1])
        heads = attn.num_heads
        index = (torch.arange(heads)[:, None] * 3 * head + which * head + torch.arange(head)[None, :]).reshape(-1)
        return fused.select(index.to(fused.weight.device))

    def spec(self, model: nn.Module) -> ModelSpec:
        base = self.base_model(model)
        layers = []
        for block in base.h:
            attn = block.attn
            attention = AttentionSpec(module=attn, value=self._fused(model, block, 2),
                                      output=Affine.from_linear(attn.c_proj), num_heads=attn.num_heads,
                                      num_kv_heads=attn.kv_heads, head_dim=attn.head_dim)
            mlp = MLPSpec(kind="act", act=block.mlp.act, act_name=model.config.activation_function,
                          inp=Affine.from_linear(block.mlp.c_fc), out=Affine.from_linear(block.mlp.c_proj))
            blocks = [ResidualBlock.single(attention, pre_norm=layer_norm_spec(block.ln_1)),
                      ResidualBlock.single(mlp, pre_norm=layer_norm_spec(block.ln_2))]
            layers.append(LayerSpec(block, blocks))
        return ModelSpec(layers, layer_norm_spec(base.ln_f), None, self.positions_from_mask, base.wpe)

    def query_key(self, model: nn.Module, layer: int) -> tuple[Affine, Affine]:
        block = self.base_model(model).h[layer]
        return self._fused(model, block, 0), self._fused(model, block, 1)

    def tiny_configs(self) -> dict:
        from transformers import GPTBigCodeConfig

        from ..tiny import COMMON

        def config(multi_query: bool):
            return GPTBigCodeConfig(n_embd=64, n_layer=3, n_head=4, n_inner=128, n_positions=128,
                                    multi_query=multi_query, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                    **COMMON)

        return {"gpt_bigcode-mqa": config(True), "gpt_bigcode-mha": config(False)}
