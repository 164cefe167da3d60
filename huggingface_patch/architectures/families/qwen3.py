"""Qwen3: Llama-shaped, with per-head RMSNorms on queries and keys (``q_norm`` / ``k_norm``), which act
before the dot products and so live inside the captured attention probabilities."""

from __future__ import annotations

from ..registry import register_architecture
from .llama import LlamaAdapter


@register_architecture
class Qwen3Adapter(LlamaAdapter):
    """Qwen3: Llama-shaped; its q/k norms live inside the attention probabilities."""

    name = "qwen3"
    model_types = ("qwen3",)
    summary = {"classes": "Qwen3ForCausalLM, Qwen3Model",
               "frozen": "RMSNorm scales, attention probabilities (q/k norms, RoPE, GQA), SiLU gate",
               "bias term": "attention_bias where set",
               "notes": "q_norm/k_norm inside the probabilities"}

    def tiny_configs(self) -> dict:
        from transformers import Qwen3Config

        from ..tiny import llama_shaped

        return {"qwen3": llama_shaped(Qwen3Config, head_dim=16, attention_bias=True)}
