"""The contract an architecture adapter fulfils, and the module-tree lookups analyses share.

Everything that depends on Hugging Face attribute names lives in the subclasses of
:class:`ArchitectureAdapter`; the decomposition engine and every analysis go through these methods only.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .spec import Affine, ModelSpec, Readout


@dataclass
class LayerParts:
    """Where the pieces of one decoder layer live, as hook points.

    ``layer``: its input and output are the residual stream. ``attention``: the self-attention module
    (takes ``attention_mask``; returns ``(output, probabilities)``). ``attention_output``: its output
    projection; the input is the heads' concatenated outputs (zero it and the sublayer writes only the
    projection's bias). ``attention_update``: the module whose output is what the attention branch adds
    to the residual (``attention`` itself, or Gemma's norm after it). ``mlp_down``: the MLP's last linear
    map; its input is the MLP's inner activation (zero it to knock the MLP out). ``mlp_update``: the
    module whose output is what the MLP branch adds to the residual. ``attention_norm`` / ``mlp_norm``:
    the norms that read the residual stream for each sublayer (the post-sublayer norms for post-norm
    OPT). ``attention_post_norm``: post-norm models only, the norm of ``x + attention`` whose output is
    the stream between the sublayers. ``parallel``: attention and MLP both read the layer input. ``mlp``: a
    module whose first input is what the MLP reads (the MLP itself, or OPT's ``fc1``). ``update_scale``: a
    constant the updates are multiplied by before the residual add (Granite's ``residual_multiplier``).
    """

    layer: nn.Module
    attention: nn.Module
    attention_output: nn.Module
    mlp_down: nn.Module
    attention_norm: nn.Module | None
    mlp_norm: nn.Module | None
    attention_update: nn.Module | None = None
    mlp_update: nn.Module | None = None
    attention_post_norm: nn.Module | None = None
    parallel: bool = False
    mlp: nn.Module | None = None
    update_scale: float = 1.0

    def __post_init__(self):
        if self.attention_update is None:
            self.attention_update = self.attention
        if self.mlp_update is None:
            self.mlp_update = self.mlp_down


@dataclass
class ModelParts:
    """Where the pieces of a whole decoder live.

    ``base``: the bare decoder; ``embeddings``: the token-embedding module; ``project_in`` /
    ``project_out``: OPT-350m's projections between embedding and hidden size (None elsewhere);
    ``final_norm``: the norm before the LM head (None for post-norm OPT).
    """

    base: nn.Module
    layers: list[LayerParts]
    final_norm: nn.Module | None
    project_out: nn.Module | None
    embeddings: nn.Module | None = None
    project_in: nn.Module | None = None


class ArchitectureAdapter:
    """Maps one family of Hugging Face models onto the engine's records.

    Subclasses set ``name`` and ``model_types`` (values of ``config.model_type``) and implement
    :meth:`parts`, :meth:`spec` and :meth:`query_key`; :meth:`readout` and :meth:`model_classes` have
    defaults that fit most families. ``summary`` is one line per topic for the README's family table.
    """

    name: str = ""
    model_types: tuple[str, ...] = ()
    #: whether Hugging Face numbers positions 0..T-1 regardless of left padding (then the decomposing
    #: classes derive ``position_ids`` from the attention mask, as ``generate`` does)
    positions_from_mask: bool = True
    #: what the README's table of families says: ``{"frozen": ..., "bias term": ...}``
    summary: dict[str, str] = {}

    def parts(self, model: nn.Module) -> ModelParts:
        raise NotImplementedError

    def spec(self, model: nn.Module) -> ModelSpec:
        raise NotImplementedError

    def query_key(self, model: nn.Module, layer: int) -> tuple[Affine, Affine]:
        """The query (``H -> h*d``) and key (``H -> g*d``) maps of ``layer`` (for ``W_QK`` readings)."""
        raise NotImplementedError

    def context_size(self, config) -> int | None:
        """The context length when the config gives no ``max_position_embeddings`` (None: unknown)."""
        return None

    def tiny_configs(self) -> dict:
        """``{kind: config}``: tiny random configurations of every variant of the family, for the tests
        (:mod:`huggingface_patch.testing` runs every identity, window, padding, class and command-line test
        on each). A built-in adapter without one fails a test."""
        return {}

    def readout(self, model: nn.Module) -> Readout:
        """The LM head as a :class:`Readout` (weight, bias if any; no softcapping by default)."""
        head = model.get_output_embeddings()
        if head is None:
            raise ValueError(f"{type(model).__name__} has no LM head: load the causal-LM class")
        return Readout(head.weight, getattr(head, "bias", None), None)

    def model_classes(self, config) -> tuple[type, type]:
        """``(causal LM class, bare model class)`` of a config (or config class): by default what
        Transformers' auto classes map it to, so a family registered with ``AutoModelForCausalLM.register``
        works as it is."""
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_MAPPING

        config_class = config if isinstance(config, type) else type(config)
        return MODEL_FOR_CAUSAL_LM_MAPPING[config_class], MODEL_MAPPING[config_class]

    @staticmethod
    def base_model(model: nn.Module) -> nn.Module:
        """The bare decoder model (``OPTModel``, ``GPT2Model``, ...) of a model with or without head."""
        return getattr(model, "base_model", model)
