"""Attribute extraction (Geva et al. 2023, §B): project the attention output and the MLP output at the
last position of every layer to the vocabulary and check whether the attribute (the model's own top-1
prediction) is at rank 0.

Projection: ``x · Eᵀ`` through the LM head, without the final norm by default (the paper's convention);
``apply_final_norm=True`` applies it first.
"""

from __future__ import annotations

import json
from typing import Sequence

import torch

from ..architectures import model_parts
from ..layer_states import rank_and_top
from .interventions import record_sublayer_outputs
from .queries import FactQuery, length_batches, model_device, stack_ids

SUBLAYERS = ("attention", "mlp")


@torch.no_grad()
def sublayer_extraction_ranks(model, ids: torch.Tensor, targets: torch.Tensor, apply_final_norm: bool = False,
                              top: int = 10) -> dict[str, tuple]:
    """One forward pass; for each sublayer ``(rank (L, B), score (L, B), top ids (L, B, top))``."""
    with record_sublayer_outputs(model, position=-1) as record:
        model(input_ids=ids, use_cache=False, logits_to_keep=1)
    out = {}
    for kind in SUBLAYERS:
        states = torch.stack(record[kind])  # (L, B, H)
        out[kind] = rank_and_top(model, states, targets.view(1, -1), top, apply_final_norm)
    return out


@torch.no_grad()
def attribute_extraction(model, tokenizer, queries: Sequence[FactQuery], *, apply_final_norm: bool = False,
                         top: int = 10, max_rows: int = 256, progress=None) -> list[dict]:
    """Records ``{index, subject, sublayer, layer, rank, score, extraction, top_tokens}`` for every query,
    sublayer (``attention``/``mlp``) and 0-based layer; ``top_tokens`` is a JSON list of strings."""
    device = model_device(model)
    records = []
    for batch in length_batches(queries, max_rows):
        ids = stack_ids(batch, device)
        targets = torch.tensor([q.target_id for q in batch], device=device)
        result = sublayer_extraction_ranks(model, ids, targets, apply_final_norm, top)
        for kind, (rank, score, top_ids) in result.items():
            for layer in range(rank.shape[0]):
                for b, q in enumerate(batch):
                    records.append(dict(index=q.index, subject=q.subject, sublayer=kind, layer=layer,
                                        rank=int(rank[layer, b]), score=float(score[layer, b]),
                                        extraction=int(rank[layer, b] == 0),
                                        top_tokens=json.dumps([tokenizer.decode([int(t)]) for t in top_ids[layer, b]],
                                                              ensure_ascii=False)))
        if progress is not None:
            progress.update(len(batch))
    return records


def summarize_extraction(records: Sequence[dict], num_layers: int, clusters=None, cluster_by: str = "relation",
                         seed: int = 0) -> dict:
    """Per-layer rates, per-example rates (any layer), mean number of extracting layers per example, and
    the share of examples where attention extracts no later than the MLP; every rate with its interval
    (Wilson, or the cluster bootstrap by ``cluster_by`` when ``clusters`` ``{fact index: cluster}`` is
    given) and attention vs MLP compared on the same facts (``attention_vs_mlp``: McNemar, or a sign-flip
    test by cluster).

    ``attention_first_pct``: among examples with an extraction event in either sublayer, the percentage
    whose first attention extraction layer is <= the first MLP extraction layer (no MLP event counts as
    "later"; no attention event as "not first").
    """
    import numpy as np

    from ..stats import rate_interval
    from .statistics import clustering_note, item_matrix, paired, rate_rows

    examples = sorted({r["index"] for r in records})
    layers_of: dict[tuple[str, int], list[int]] = {}
    per_layer = {kind: [0] * num_layers for kind in SUBLAYERS}
    for r in records:
        if r["extraction"]:
            per_layer[r["sublayer"]][r["layer"]] += 1
            layers_of.setdefault((r["sublayer"], r["index"]), []).append(r["layer"])
    n = max(1, len(examples))
    labels = None if clusters is None else [clusters[i] for i in examples]
    summary = dict(n_examples=len(examples), **clustering_note(clusters, cluster_by),
                   per_layer_rate={k: [100.0 * c / n for c in v] for k, v in per_layer.items()},
                   per_layer_interval={}, per_example_rate={}, per_example_interval={}, mean_extracting_layers={})
    any_event = {}
    for kind in SUBLAYERS:
        items, xs, matrix = item_matrix(records, "layer", lambda r: r["extraction"],
                                        where=lambda r, k=kind: r["sublayer"] == k)
        summary["per_layer_interval"][kind] = rate_rows(items, xs, matrix, clusters, cluster_by, seed)
        any_event[kind] = np.array([float((kind, i) in layers_of) for i in examples])
        summary["per_example_rate"][kind] = 100.0 * any_event[kind].sum() / n
        summary["per_example_interval"][kind] = rate_interval(any_event[kind], labels, cluster_by=cluster_by,
                                                              seed=seed).to_dict()
        summary["mean_extracting_layers"][kind] = sum(len(layers_of.get((kind, i), [])) for i in examples) / n
    summary["attention_vs_mlp"] = paired(any_event["attention"], any_event["mlp"], examples, clusters, cluster_by,
                                         seed)
    first, either = 0, 0
    for i in examples:
        a = min(layers_of.get(("attention", i), [float("inf")]))
        m = min(layers_of.get(("mlp", i), [float("inf")]))
        if a == float("inf") and m == float("inf"):
            continue
        either += 1
        first += a <= m
    summary["examples_with_any_extraction"] = either
    summary["attention_first_pct"] = 100.0 * first / either if either else float("nan")
    return summary


def num_layers(model) -> int:
    """Number of decoder layers."""
    return len(model_parts(model).layers)
