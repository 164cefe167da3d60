"""The contract an architecture module fulfils, and the module-tree lookups analyses share.

Everything that depends on Hugging Face attribute names lives in the subclasses of
:class:`ArchitectureAdapter`; analyses and the decomposition engine go through these methods only.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .spec import ModelSpec


@dataclass
class LayerParts:
    """Where the pieces of one decoder layer live.

    ``attention``: the self-attention module; its output (first element) is the attention sublayer output,
    output projection bias included, before the residual add.
    ``mlp_down``: the MLP's last linear map (``fc2`` / ``c_proj`` / ``down_proj``); its output is the MLP
    sublayer output and its *input* is the MLP's inner activation (zero it to knock the MLP out).
    ``attention_norm`` / ``mlp_norm``: the norms of the attention and MLP residual blocks.
    """

    layer: nn.Module
    attention: nn.Module
    mlp_down: nn.Module
    attention_norm: nn.Module | None
    mlp_norm: nn.Module | None


@dataclass
class ModelParts:
    """Where the pieces of a whole decoder live (``final_norm`` / ``project_out`` may be None)."""

    base: nn.Module
    layers: list[LayerParts]
    final_norm: nn.Module | None
    project_out: nn.Module | None


class ArchitectureAdapter:
    """Maps one family of Hugging Face models onto the engine's records.

    Subclasses set ``name`` and ``model_types`` (values of ``config.model_type``) and implement
    :meth:`parts` and :meth:`spec`.
    """

    name: str = ""
    model_types: tuple[str, ...] = ()
    #: whether Hugging Face numbers positions 0..T-1 regardless of left padding (then the decomposing
    #: classes derive ``position_ids`` from the attention mask, as ``generate`` does)
    positions_from_mask: bool = True

    def parts(self, model: nn.Module) -> ModelParts:
        raise NotImplementedError

    def spec(self, model: nn.Module) -> ModelSpec:
        raise NotImplementedError

    @staticmethod
    def base_model(model: nn.Module) -> nn.Module:
        """The bare decoder model (``OPTModel``, ``GPT2Model``, ``LlamaModel``) of a model with or without head."""
        return getattr(model, "base_model", model)
