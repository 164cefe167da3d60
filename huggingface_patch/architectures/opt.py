"""OPT (pre-LayerNorm 125m-style and post-LayerNorm 350m-style with ``project_in``/``project_out``)."""

from __future__ import annotations

from torch import nn

from .base import ArchitectureAdapter, LayerParts, ModelParts
from .spec import Affine, AttentionSpec, LayerSpec, MLPSpec, ModelSpec, ResidualBlock
from .norms import layer_norm_spec


class OPTAdapter(ArchitectureAdapter):
    name = "opt"
    model_types = ("opt",)
    positions_from_mask = False  # OPT's learned positions already count from the first real token

    def parts(self, model: nn.Module) -> ModelParts:
        decoder = self.base_model(model).decoder
        layers = [
            LayerParts(layer, layer.self_attn, layer.fc2, layer.self_attn_layer_norm, layer.final_layer_norm)
            for layer in decoder.layers
        ]
        return ModelParts(decoder, layers, decoder.final_layer_norm, decoder.project_out)

    def spec(self, model: nn.Module) -> ModelSpec:
        decoder = self.base_model(model).decoder
        pre = model.config.do_layer_norm_before
        layers = []
        for layer in decoder.layers:
            attn = layer.self_attn
            attention = AttentionSpec(
                module=attn,
                value=Affine.from_linear(attn.v_proj),
                output=Affine.from_linear(attn.out_proj),
                num_heads=attn.num_heads,
                num_kv_heads=attn.num_heads,
                head_dim=attn.head_dim,
            )
            mlp = MLPSpec(
                kind="act",
                act=layer.activation_fn,
                act_name=model.config.activation_function,
                inp=Affine.from_linear(layer.fc1),
                out=Affine.from_linear(layer.fc2),
            )
            ln_attn = layer_norm_spec(layer.self_attn_layer_norm)
            ln_mlp = layer_norm_spec(layer.final_layer_norm)
            blocks = (
                [ResidualBlock(attention, pre_norm=ln_attn), ResidualBlock(mlp, pre_norm=ln_mlp)]
                if pre
                else [ResidualBlock(attention, post_norm=ln_attn), ResidualBlock(mlp, post_norm=ln_mlp)]
            )
            layers.append(LayerSpec(layer, blocks))
        final_norm = layer_norm_spec(decoder.final_layer_norm) if decoder.final_layer_norm is not None else None
        project_out = Affine(decoder.project_out.weight.t()) if decoder.project_out is not None else None
        return ModelSpec(layers, final_norm, project_out, self.positions_from_mask, decoder.embed_positions)
