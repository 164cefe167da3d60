"""GPT-2 (``Conv1D`` weights are stored ``(in, out)``; ``c_attn`` packs query, key and value)."""

from __future__ import annotations

from torch import nn

from .base import ArchitectureAdapter, LayerParts, ModelParts
from .norms import layer_norm_spec
from .spec import Affine, AttentionSpec, LayerSpec, MLPSpec, ModelSpec, ResidualBlock


class GPT2Adapter(ArchitectureAdapter):
    name = "gpt2"
    model_types = ("gpt2",)

    def parts(self, model: nn.Module) -> ModelParts:
        base = self.base_model(model)
        layers = [LayerParts(block, block.attn, block.mlp.c_proj, block.ln_1, block.ln_2) for block in base.h]
        return ModelParts(base, layers, base.ln_f, None)

    def spec(self, model: nn.Module) -> ModelSpec:
        base = self.base_model(model)
        hidden = model.config.hidden_size
        layers = []
        for block in base.h:
            attn = block.attn
            if getattr(model.config, "add_cross_attention", False):
                raise ValueError("GPT-2 with cross-attention is not supported by the decomposition")
            value = Affine(attn.c_attn.weight[:, 2 * hidden :], attn.c_attn.bias[2 * hidden :])
            attention = AttentionSpec(
                module=attn,
                value=value,
                output=Affine(attn.c_proj.weight, attn.c_proj.bias),
                num_heads=attn.num_heads,
                num_kv_heads=attn.num_heads,
                head_dim=attn.head_dim,
            )
            mlp = MLPSpec(
                kind="act",
                act=block.mlp.act,
                act_name=model.config.activation_function,
                inp=Affine(block.mlp.c_fc.weight, block.mlp.c_fc.bias),
                out=Affine(block.mlp.c_proj.weight, block.mlp.c_proj.bias),
            )
            blocks = [
                ResidualBlock(attention, pre_norm=layer_norm_spec(block.ln_1)),
                ResidualBlock(mlp, pre_norm=layer_norm_spec(block.ln_2)),
            ]
            layers.append(LayerSpec(block, blocks))
        return ModelSpec(layers, layer_norm_spec(base.ln_f), None, self.positions_from_mask, base.wpe)
