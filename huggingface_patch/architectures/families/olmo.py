"""OLMo, OLMo 2 and OLMo 3 (AI2's open-data models): Llama-shaped with their own norms.

* OLMo: a LayerNorm with no gain and no shift (computed in fp32); ``clip_qkv`` clamps queries, keys and
  values to ``[-c, c]``: the query and key clamps live inside the attention probabilities, the value clamp
  is a nonlinearity on the value path, frozen like an activation ratio (``value_clip``).
* OLMo 2 / 3: no norm before a sublayer; an RMSNorm on each sublayer's *output* before the residual add,
  ``x + norm(f(x))``, its scale frozen from the real sublayer output; q/k RMSNorms over the whole projection
  (inside the probabilities); OLMo 3's sliding-window layers likewise.
"""

from __future__ import annotations

from torch import nn

from ..base import LayerParts
from ..norm_specs import rms_norm_spec
from ..registry import register_architecture
from ..spec import AttentionSpec, MLPSpec, NormSpec, ResidualBlock
from .llama import LlamaAdapter


@register_architecture
class OlmoAdapter(LlamaAdapter):
    """OLMo (1): non-parametric LayerNorm, optional ``clip_qkv``."""

    name = "olmo"
    model_types = ("olmo",)
    summary = {"classes": "OlmoForCausalLM, OlmoModel",
               "frozen": "LayerNorm scales (no gain, no shift), attention probabilities (RoPE; q/k clip inside), "
                         "the value clip's ratio clamp(z)/z, SiLU gate",
               "bias term": "none (no biases)",
               "notes": "clip_qkv on the values is a frozen nonlinearity of the value path"}

    def norm(self, module: nn.Module) -> NormSpec:
        return NormSpec("layer", None, None, 1e-5, module)  # OlmoLayerNorm's eps is fixed at 1e-5

    def attention(self, model: nn.Module, layer: nn.Module) -> AttentionSpec:
        spec = super().attention(model, layer)
        clip = getattr(model.config, "clip_qkv", None)
        spec.value_clip = None if clip is None else float(clip)
        return spec

    def tiny_configs(self) -> dict:
        from transformers import OlmoConfig

        from ..tiny import llama_shaped

        # a clip small enough that the values of a random model hit it
        return {"olmo": llama_shaped(OlmoConfig, attention_bias=False, clip_qkv=0.2),
                "olmo-noclip": llama_shaped(OlmoConfig, attention_bias=False, clip_qkv=None)}


@register_architecture
class Olmo2Adapter(LlamaAdapter):
    """OLMo 2 and OLMo 3: norms on the sublayer outputs, q/k norms."""

    name = "olmo2"
    model_types = ("olmo2", "olmo3")
    summary = {"classes": "Olmo2ForCausalLM, Olmo3ForCausalLM (and their bare models)",
               "frozen": "RMSNorm scales on each sublayer's output (x + norm(f(x))), attention probabilities "
                         "(q/k norms, RoPE, OLMo 3's sliding windows), SiLU gate",
               "bias term": "attention_bias where set",
               "notes": "no pre-norm: each output norm's scale is frozen from the real sublayer output"}

    def layer_parts(self, layer: nn.Module) -> LayerParts:
        return LayerParts(layer, layer.self_attn, layer.self_attn.o_proj, layer.mlp.down_proj, None, None,
                          attention_update=layer.post_attention_layernorm,
                          mlp_update=layer.post_feedforward_layernorm, mlp=layer.mlp)

    def blocks(self, layer: nn.Module, attention: AttentionSpec, mlp: MLPSpec) -> list[ResidualBlock]:
        return [ResidualBlock.single(attention, output_norm=rms_norm_spec(layer.post_attention_layernorm)),
                ResidualBlock.single(mlp, output_norm=rms_norm_spec(layer.post_feedforward_layernorm))]

    def tiny_configs(self) -> dict:
        from transformers import Olmo2Config, Olmo3Config

        from ..tiny import llama_shaped

        return {"olmo2": llama_shaped(Olmo2Config, attention_bias=True),
                "olmo3": llama_shaped(Olmo3Config, attention_bias=True, sliding_window=5,
                                      layer_types=["sliding_attention", "sliding_attention", "full_attention"])}
