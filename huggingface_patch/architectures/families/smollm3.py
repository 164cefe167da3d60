"""SmolLM3: Llama-shaped; some layers have no rotary positions (``no_rope_layers``), which lives inside the
attention probabilities."""

from __future__ import annotations

from ..registry import register_architecture
from .llama import LlamaAdapter


@register_architecture
class SmolLM3Adapter(LlamaAdapter):
    """SmolLM3: Llama with layers without rotary positions."""

    name = "smollm3"
    model_types = ("smollm3",)
    summary = {"classes": "SmolLM3ForCausalLM, SmolLM3Model",
               "frozen": "RMSNorm scales, attention probabilities (RoPE on some layers only, GQA), SiLU gate",
               "bias term": "attention_bias / mlp_bias where set",
               "notes": "the layers without positions differ only inside the probabilities"}

    def tiny_configs(self) -> dict:
        from transformers import SmolLM3Config

        from ..tiny import llama_shaped

        return {"smollm3": llama_shaped(SmolLM3Config, attention_bias=True, mlp_bias=True, no_rope_layers=[1, 0, 1],
                                        use_sliding_window=False)}
