"""GPT-NeoX (the Pythia models): one fused ``query_key_value`` projection laid out per head as
``(q, k, v)`` (its output is viewed as ``(heads, 3 * head_size)`` and chunked), so the value rows are
every third block of ``head_size`` rows, not a contiguous third; partial rotary positions (inside the
attention probabilities); separate LayerNorms for attention and MLP; ``use_parallel_residual`` True
(``x + attn(ln_1(x)) + mlp(ln_2(x))``) or False (sequential pre-norm), both in released checkpoints."""

from __future__ import annotations

import torch
from torch import nn

from ..base import ArchitectureAdapter, LayerParts, ModelParts
from ..norm_specs import layer_norm_spec
from ..registry import register_architecture
from ..spec import Affine, AttentionSpec, Branch, LayerSpec, MLPSpec, ModelSpec, ResidualBlock


@register_architecture
class GPTNeoXAdapter(ArchitectureAdapter):
    """GPT-NeoX / Pythia: fused per-head query_key_value, parallel or sequential residual."""

    name = "gpt_neox"
    model_types = ("gpt_neox",)
    summary = {"classes": "GPTNeoXForCausalLM, GPTNeoXModel",
               "frozen": "LayerNorm scales, attention probabilities (partial rotary), GELU ratio act(z)/z",
               "bias term": "LayerNorm shifts, value rows of the fused query_key_value bias, dense and MLP biases",
               "notes": "fused per-head (q, k, v) layout; parallel or sequential residual from the config"}

    def parts(self, model: nn.Module) -> ModelParts:
        base = self.base_model(model)
        parallel = bool(model.config.use_parallel_residual)
        layers = [LayerParts(layer, layer.attention, layer.attention.dense, layer.mlp.dense_4h_to_h,
                             layer.input_layernorm, layer.post_attention_layernorm, parallel=parallel,
                             mlp=layer.mlp)
                  for layer in base.layers]
        return ModelParts(base, layers, base.final_layer_norm, None, base.embed_in)

    @staticmethod
    def _fused(model: nn.Module, layer: nn.Module, which: int) -> Affine:
        """Query (0), key (1) or value (2) columns of the fused projection, by its per-head layout."""
        heads = model.config.num_attention_heads
        size = layer.attention.head_size
        fused = Affine.from_linear(layer.attention.query_key_value)
        index = (torch.arange(heads)[:, None] * 3 * size + which * size + torch.arange(size)[None, :]).reshape(-1)
        return fused.select(index.to(fused.weight.device))

    def spec(self, model: nn.Module) -> ModelSpec:
        base = self.base_model(model)
        heads = model.config.num_attention_heads
        layers = []
        for layer in base.layers:
            attention = AttentionSpec(module=layer.attention, value=self._fused(model, layer, 2),
                                      output=Affine.from_linear(layer.attention.dense), num_heads=heads,
                                      num_kv_heads=heads, head_dim=layer.attention.head_size)
            mlp = MLPSpec(kind="act", act=layer.mlp.act, act_name=model.config.hidden_act,
                          inp=Affine.from_linear(layer.mlp.dense_h_to_4h),
                          out=Affine.from_linear(layer.mlp.dense_4h_to_h))
            ln_attn, ln_mlp = layer_norm_spec(layer.input_layernorm), layer_norm_spec(layer.post_attention_layernorm)
            if model.config.use_parallel_residual:
                blocks = [ResidualBlock([Branch(attention, ln_attn), Branch(mlp, ln_mlp)])]
            else:
                blocks = [ResidualBlock.single(attention, pre_norm=ln_attn), ResidualBlock.single(mlp, pre_norm=ln_mlp)]
            layers.append(LayerSpec(layer, blocks))
        return ModelSpec(layers, layer_norm_spec(base.final_layer_norm), None, self.positions_from_mask)

    def query_key(self, model: nn.Module, layer: int) -> tuple[Affine, Affine]:
        module = self.base_model(model).layers[layer]
        return self._fused(model, module, 0), self._fused(model, module, 1)

    def tiny_configs(self) -> dict:
        from transformers import GPTNeoXConfig

        from ..tiny import COMMON

        def config(parallel: bool):
            return GPTNeoXConfig(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=128,
                                 max_position_embeddings=128, use_parallel_residual=parallel, attention_bias=True,
                                 hidden_dropout=0.0, attention_dropout=0.0, tie_word_embeddings=False, **COMMON)

        return {"neox-parallel": config(True), "neox-sequential": config(False)}
