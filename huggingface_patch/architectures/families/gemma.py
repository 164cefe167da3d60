"""Gemma, Gemma 2, Gemma 3 (text): Llama-shaped with Gemma's own pieces.

* RMSNorm multiplies by ``1 + weight`` (a gain offset of 1 in :class:`NormSpec`).
* The embedding is multiplied by ``sqrt(hidden_size)`` inside the embedding module, so the captured input
  of layer 0 already holds each source's scaled embedding.
* GeGLU MLP (``gelu_pytorch_tanh`` gate, frozen like Llama's).
* Gemma 2 and 3 put a norm before *and after* each sublayer ("sandwich": ``x + post(f(pre(x)))``); the
  post norm's scale is frozen from the real sublayer output.
* Sliding-window and global layers, attention-logit softcapping (Gemma 2) and Gemma 3's q/k norms live
  inside the captured attention probabilities; Gemma 2's final-logit softcapping is applied by
  :meth:`GemmaAdapter.readout` wherever logits are made from a state.
"""

from __future__ import annotations

from torch import nn

from ..base import LayerParts
from ..norm_specs import rms_norm_spec
from ..registry import register_architecture
from ..spec import AttentionSpec, MLPSpec, NormSpec, Readout, ResidualBlock
from .llama import LlamaAdapter


@register_architecture
class GemmaAdapter(LlamaAdapter):
    """Gemma, Gemma 2 and Gemma 3 (text); see the module docstring for what differs from Llama."""

    name = "gemma"
    model_types = ("gemma", "gemma2", "gemma3_text")
    summary = {"classes": "GemmaForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM (and their bare models)",
               "frozen": "RMSNorm scales (gain 1 + w) before and after each sublayer, attention probabilities "
                         "(sliding window, softcapping, q/k norms), GELU gate",
               "bias term": "attention_bias where set",
               "notes": "scaled embedding owned by its token; final-logit softcapping applied to logits only"}

    @staticmethod
    def _sandwich(layer: nn.Module) -> bool:
        return hasattr(layer, "post_feedforward_layernorm")

    def norm(self, module: nn.Module) -> NormSpec:
        return rms_norm_spec(module, weight_offset=1.0)

    def layer_parts(self, layer: nn.Module) -> LayerParts:
        if not self._sandwich(layer):
            return super().layer_parts(layer)
        return LayerParts(layer, layer.self_attn, layer.self_attn.o_proj, layer.mlp.down_proj,
                          layer.input_layernorm, layer.pre_feedforward_layernorm,
                          attention_update=layer.post_attention_layernorm, mlp_update=layer.post_feedforward_layernorm,
                          mlp=layer.mlp)

    def blocks(self, layer: nn.Module, attention: AttentionSpec, mlp: MLPSpec) -> list[ResidualBlock]:
        if not self._sandwich(layer):
            return super().blocks(layer, attention, mlp)
        return [ResidualBlock.single(attention, pre_norm=self.norm(layer.input_layernorm),
                                     output_norm=self.norm(layer.post_attention_layernorm)),
                ResidualBlock.single(mlp, pre_norm=self.norm(layer.pre_feedforward_layernorm),
                                     output_norm=self.norm(layer.post_feedforward_layernorm))]

    def readout(self, model: nn.Module) -> Readout:
        readout = super().readout(model)
        readout.softcap = getattr(model.config, "final_logit_softcapping", None)
        return readout

    def tiny_configs(self) -> dict:
        from transformers import Gemma2Config, Gemma3TextConfig, GemmaConfig

        from ..tiny import llama_shaped

        return {
            "gemma": llama_shaped(GemmaConfig, head_dim=16, attention_bias=True),
            # softcapping small enough to matter; sliding window shorter than the test inputs
            "gemma2": llama_shaped(Gemma2Config, head_dim=16, query_pre_attn_scalar=16, sliding_window=5,
                                   attn_logit_softcapping=5.0, final_logit_softcapping=3.0, attention_bias=True,
                                   layer_types=["sliding_attention", "full_attention", "sliding_attention"]),
            "gemma3": llama_shaped(Gemma3TextConfig, head_dim=16, query_pre_attn_scalar=16, sliding_window=5,
                                   attention_bias=True,
                                   layer_types=["sliding_attention", "sliding_attention", "full_attention"]),
        }
