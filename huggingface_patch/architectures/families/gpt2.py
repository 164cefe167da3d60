"""GPT-2 (``Conv1D`` weights are stored ``(in, out)``; ``c_attn`` packs query, key and value)."""

from __future__ import annotations

from torch import nn

from ..base import ArchitectureAdapter, LayerParts, ModelParts
from ..norm_specs import layer_norm_spec
from ..registry import register_architecture
from ..spec import Affine, AttentionSpec, LayerSpec, MLPSpec, ModelSpec, ResidualBlock


@register_architecture
class GPT2Adapter(ArchitectureAdapter):
    """GPT-2: pre-LayerNorm blocks, ``Conv1D`` weights, learned positions."""

    name = "gpt2"
    model_types = ("gpt2",)
    summary = {"classes": "GPT2LMHeadModel, GPT2Model",
               "frozen": "LayerNorm scales, attention probabilities, GELU ratio act(z)/z",
               "bias term": "LayerNorm shifts, c_attn value and c_proj biases, MLP biases",
               "notes": "fused c_attn (value = last third); learned positions owned by their token"}

    def parts(self, model: nn.Module) -> ModelParts:
        base = self.base_model(model)
        layers = [LayerParts(block, block.attn, block.attn.c_proj, block.mlp.c_proj, block.ln_1, block.ln_2,
                             mlp=block.mlp)
                  for block in base.h]
        return ModelParts(base, layers, base.ln_f, None, base.wte)

    def _c_attn(self, model: nn.Module, layer: int) -> tuple[Affine, int]:
        attn = self.base_model(model).h[layer].attn
        return Affine(attn.c_attn.weight, attn.c_attn.bias), model.config.hidden_size

    def spec(self, model: nn.Module) -> ModelSpec:
        if getattr(model.config, "add_cross_attention", False):
            raise ValueError("GPT-2 with cross-attention is not supported by the decomposition")
        base = self.base_model(model)
        layers = []
        for index, block in enumerate(base.h):
            packed, hidden = self._c_attn(model, index)
            attention = AttentionSpec(module=block.attn, value=packed.columns(2 * hidden, 3 * hidden),
                                      output=Affine(block.attn.c_proj.weight, block.attn.c_proj.bias),
                                      num_heads=block.attn.num_heads, num_kv_heads=block.attn.num_heads,
                                      head_dim=block.attn.head_dim)
            mlp = MLPSpec(kind="act", act=block.mlp.act, act_name=model.config.activation_function,
                          inp=Affine(block.mlp.c_fc.weight, block.mlp.c_fc.bias),
                          out=Affine(block.mlp.c_proj.weight, block.mlp.c_proj.bias))
            blocks = [ResidualBlock.single(attention, pre_norm=layer_norm_spec(block.ln_1)),
                      ResidualBlock.single(mlp, pre_norm=layer_norm_spec(block.ln_2))]
            layers.append(LayerSpec(block, blocks))
        return ModelSpec(layers, layer_norm_spec(base.ln_f), None, self.positions_from_mask, base.wpe)

    def query_key(self, model: nn.Module, layer: int) -> tuple[Affine, Affine]:
        packed, hidden = self._c_attn(model, layer)
        return packed.columns(0, hidden), packed.columns(hidden, 2 * hidden)

    def tiny_configs(self) -> dict:
        from transformers import GPT2Config

        from ..tiny import COMMON

        return {"gpt2": GPT2Config(n_embd=64, n_layer=3, n_head=4, n_positions=128, n_inner=128, resid_pdrop=0.0,
                                   embd_pdrop=0.0, attn_pdrop=0.0, **COMMON)}
