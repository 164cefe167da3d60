"""Dissecting factual recall (Geva et al. 2023): query preparation, interventions as context managers,
and the attention-knockout, attribute-extraction, sublayer-knockout, patching and attributes-rate
analyses. See ``docs/recall.md``; the command-line tools are ``python -m analysis.<name>``.

Submodules are imported lazily by the user (``from huggingface_patch.recall.knockout import ...``); only
the most used names are re-exported here.
"""

from __future__ import annotations

from .interventions import (
                            block_attention_edges,
                            edge_mask,
                            knockout_attention,
                            knockout_mlp,
                            patch_layer_input,
                            record_sublayer_outputs,
)
from .queries import DEFAULT_FACTS, FactQuery, FactsError, load_facts, prepare_queries, subject_token_span

__all__ = [
    "DEFAULT_FACTS",
    "FactQuery",
    "FactsError",
    "block_attention_edges",
    "edge_mask",
    "knockout_attention",
    "knockout_mlp",
    "load_facts",
    "patch_layer_input",
    "prepare_queries",
    "record_sublayer_outputs",
    "subject_token_span",
]
