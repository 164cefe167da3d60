"""GPT-J: attention and MLP in parallel, both reading one shared LayerNorm of the layer input
(``x + attn(ln_1(x)) + mlp(ln_1(x))``); rotary positions (inside the attention probabilities), no
attention biases, GELU MLP with biases, and an LM head with a bias (kept in the read-out)."""

from __future__ import annotations

from torch import nn

from ..base import ArchitectureAdapter, LayerParts, ModelParts
from ..norm_specs import layer_norm_spec
from ..registry import register_architecture
from ..spec import Affine, AttentionSpec, Branch, LayerSpec, MLPSpec, ModelSpec, ResidualBlock


@register_architecture
class GPTJAdapter(ArchitectureAdapter):
    """GPT-J: one parallel residual block per layer, both branches reading ``ln_1``."""

    name = "gptj"
    model_types = ("gptj",)
    summary = {"classes": "GPTJForCausalLM, GPTJModel",
               "frozen": "LayerNorm scales (one norm shared by both branches), attention probabilities (rotary), "
                         "GELU ratio act(z)/z",
               "bias term": "LayerNorm shifts, MLP biases (the LM head's bias is part of the read-out)",
               "notes": "parallel residual: both sublayers read the contributions of the layer input"}

    def parts(self, model: nn.Module) -> ModelParts:
        base = self.base_model(model)
        layers = [LayerParts(block, block.attn, block.attn.out_proj, block.mlp.fc_out, block.ln_1, block.ln_1,
                             parallel=True, mlp=block.mlp) for block in base.h]
        return ModelParts(base, layers, base.ln_f, None, base.wte)

    def spec(self, model: nn.Module) -> ModelSpec:
        base = self.base_model(model)
        layers = []
        for block in base.h:
            attn = block.attn
            attention = AttentionSpec(module=attn, value=Affine.from_linear(attn.v_proj),
                                      output=Affine.from_linear(attn.out_proj), num_heads=attn.num_attention_heads,
                                      num_kv_heads=attn.num_attention_heads, head_dim=attn.head_dim)
            mlp = MLPSpec(kind="act", act=block.mlp.act, act_name=model.config.activation_function,
                          inp=Affine.from_linear(block.mlp.fc_in), out=Affine.from_linear(block.mlp.fc_out))
            shared = layer_norm_spec(block.ln_1)
            layers.append(LayerSpec(block, [ResidualBlock([Branch(attention, shared), Branch(mlp, shared)])]))
        return ModelSpec(layers, layer_norm_spec(base.ln_f), None, self.positions_from_mask)

    def query_key(self, model: nn.Module, layer: int) -> tuple[Affine, Affine]:
        attn = self.base_model(model).h[layer].attn
        return Affine.from_linear(attn.q_proj), Affine.from_linear(attn.k_proj)

    def tiny_configs(self) -> dict:
        from transformers import GPTJConfig

        from ..tiny import COMMON

        return {"gptj": GPTJConfig(n_embd=64, n_layer=3, n_head=4, n_inner=128, rotary_dim=8, n_positions=128,
                                   resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **COMMON)}
