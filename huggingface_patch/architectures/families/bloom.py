"""BLOOM: a LayerNorm on the embeddings before layer 0, ALiBi positions, fused per-head ``query_key_value``.

* The embedding LayerNorm acts on each position's own token embedding, so each source owns its normalised
  embedding and the norm's shift goes to the bias term (``ModelSpec.embedding_shift``).
* ``query_key_value`` is laid out per head as ``(q, k, v)`` (viewed as ``(heads, 3, head_size)``); ALiBi and
  the mask live inside the attention probabilities.
* The attention and MLP modules add the residual themselves, so what each branch adds to the stream is the
  output of its last linear map (``dense``, ``dense_4h_to_h``).
* ``apply_residual_connection_post_layernorm`` (a residual taken after the norm) is not in any released
  checkpoint and is refused.
"""

from __future__ import annotations

import torch
from torch import nn

from ..base import ArchitectureAdapter, LayerParts, ModelParts
from ..norm_specs import layer_norm_spec
from ..registry import UnsupportedArchitectureError, register_architecture
from ..spec import Affine, AttentionSpec, LayerSpec, MLPSpec, ModelSpec, ResidualBlock


@register_architecture
class BloomAdapter(ArchitectureAdapter):
    """BLOOM: embedding LayerNorm, ALiBi, fused per-head query_key_value."""

    name = "bloom"
    model_types = ("bloom",)
    summary = {"classes": "BloomForCausalLM, BloomModel",
               "frozen": "LayerNorm scales (the embedding norm's too), attention probabilities (ALiBi), GELU "
                         "ratio act(z)/z",
               "bias term": "the embedding norm's shift, LayerNorm shifts, value rows of the query_key_value "
                            "bias, dense and MLP biases",
               "notes": "each source owns its normalised embedding; fused per-head (q, k, v) layout"}

    def parts(self, model: nn.Module) -> ModelParts:
        base = self.base_model(model)
        layers = [LayerParts(block, block.self_attention, block.self_attention.dense, block.mlp.dense_4h_to_h,
                             block.input_layernorm, block.post_attention_layernorm,
                             attention_update=block.self_attention.dense, mlp=block.mlp)
                  for block in base.h]
        return ModelParts(base, layers, base.ln_f, None, base.word_embeddings)

    @staticmethod
    def _fused(block: nn.Module, which: int) -> Affine:
        """Query (0), key (1) or value (2) rows of ``query_key_value`` by its per-head layout."""
        attn = block.self_attention
        fused = Affine.from_linear(attn.query_key_value)
        size = attn.head_dim
        index = (torch.arange(attn.num_heads)[:, None] * 3 * size + which * size + torch.arange(size)[None, :])
        return fused.select(index.reshape(-1).to(fused.weight.device))

    def spec(self, model: nn.Module) -> ModelSpec:
        config = model.config
        if config.apply_residual_connection_post_layernorm:
            raise UnsupportedArchitectureError("BLOOM with apply_residual_connection_post_layernorm=True (a residual "
                                               "taken after the norm) is not supported")
        if config.pretraining_tp > 1 and config.slow_but_exact:
            raise UnsupportedArchitectureError("BLOOM with slow_but_exact tensor-parallel slicing is not supported: "
                                               "set config.slow_but_exact = False")
        base = self.base_model(model)
        layers = []
        for block in base.h:
            attn = block.self_attention
            attention = AttentionSpec(module=attn, value=self._fused(block, 2), output=Affine.from_linear(attn.dense),
                                      num_heads=attn.num_heads, num_kv_heads=attn.num_heads, head_dim=attn.head_dim)
            mlp = MLPSpec(kind="act", act=block.mlp.gelu_impl, act_name="gelu_pytorch_tanh",
                          inp=Affine.from_linear(block.mlp.dense_h_to_4h),
                          out=Affine.from_linear(block.mlp.dense_4h_to_h))
            blocks = [ResidualBlock.single(attention, pre_norm=layer_norm_spec(block.input_layernorm)),
                      ResidualBlock.single(mlp, pre_norm=layer_norm_spec(block.post_attention_layernorm))]
            layers.append(LayerSpec(block, blocks))
        return ModelSpec(layers, layer_norm_spec(base.ln_f), None, self.positions_from_mask,
                         embedding_shift=base.word_embeddings_layernorm.bias)

    def context_size(self, config) -> int:
        """ALiBi sets no position limit and the config records none: 2,048, the length BLOOM was trained on."""
        return 2048

    def query_key(self, model: nn.Module, layer: int) -> tuple[Affine, Affine]:
        block = self.base_model(model).h[layer]
        return self._fused(block, 0), self._fused(block, 1)

    def tiny_configs(self) -> dict:
        from transformers import BloomConfig

        from ..tiny import COMMON

        return {"bloom": BloomConfig(hidden_size=64, n_layer=3, n_head=4, hidden_dropout=0.0, attention_dropout=0.0,
                                     **COMMON)}
