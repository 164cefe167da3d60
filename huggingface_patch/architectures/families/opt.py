"""OPT: pre-LayerNorm (125m-style) and post-LayerNorm (350m-style, with ``project_in``/``project_out``)."""

from __future__ import annotations

from torch import nn

from ..base import ArchitectureAdapter, LayerParts, ModelParts
from ..norm_specs import layer_norm_spec
from ..registry import register_architecture
from ..spec import Affine, AttentionSpec, LayerSpec, MLPSpec, ModelSpec, ResidualBlock


@register_architecture
class OPTAdapter(ArchitectureAdapter):
    """OPT, pre- or post-LayerNorm from ``config.do_layer_norm_before``."""

    name = "opt"
    model_types = ("opt",)
    positions_from_mask = False  # OPT's learned positions already count from the first real token
    summary = {"classes": "OPTForCausalLM, OPTModel",
               "frozen": "LayerNorm scales, attention probabilities, ReLU mask",
               "bias term": "LayerNorm shifts, q/k/v/out and fc biases",
               "notes": "pre-LN (125m) and post-LN with project_in/out (350m); learned positions owned by their token"}

    def parts(self, model: nn.Module) -> ModelParts:
        decoder = self.base_model(model).decoder
        post = not model.config.do_layer_norm_before
        layers = [
            LayerParts(layer, layer.self_attn, layer.self_attn.out_proj, layer.fc2, layer.self_attn_layer_norm,
                       layer.final_layer_norm, attention_post_norm=layer.self_attn_layer_norm if post else None,
                       mlp=layer.fc1)
            for layer in decoder.layers
        ]
        return ModelParts(decoder, layers, decoder.final_layer_norm, decoder.project_out, decoder.embed_tokens,
                          decoder.project_in)

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
            mlp = MLPSpec(kind="act", act=layer.activation_fn, act_name=model.config.activation_function,
                          inp=Affine.from_linear(layer.fc1), out=Affine.from_linear(layer.fc2))
            ln_attn = layer_norm_spec(layer.self_attn_layer_norm)
            ln_mlp = layer_norm_spec(layer.final_layer_norm)
            if pre:
                blocks = [ResidualBlock.single(attention, pre_norm=ln_attn), ResidualBlock.single(mlp, pre_norm=ln_mlp)]
            else:
                blocks = [ResidualBlock.single(attention, post_norm=ln_attn),
                          ResidualBlock.single(mlp, post_norm=ln_mlp)]
            layers.append(LayerSpec(layer, blocks))
        final_norm = layer_norm_spec(decoder.final_layer_norm) if decoder.final_layer_norm is not None else None
        project_out = Affine(decoder.project_out.weight.t()) if decoder.project_out is not None else None
        return ModelSpec(layers, final_norm, project_out, self.positions_from_mask, decoder.embed_positions)

    def query_key(self, model: nn.Module, layer: int) -> tuple[Affine, Affine]:
        attn = self.base_model(model).decoder.layers[layer].self_attn
        return Affine.from_linear(attn.q_proj), Affine.from_linear(attn.k_proj)

    def tiny_configs(self) -> dict:
        from transformers import OPTConfig

        from ..tiny import COMMON

        shared = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, ffn_dim=128,
                      max_position_embeddings=128, dropout=0.0, **COMMON)
        # OPT-350m arrangement: post-LayerNorm, no final norm, project_in/project_out
        return {"opt-pre": OPTConfig(word_embed_proj_dim=64, do_layer_norm_before=True, **shared),
                "opt-post": OPTConfig(word_embed_proj_dim=32, do_layer_norm_before=False, **shared)}
