"""Patching early representations (Geva et al. 2023, §B): replace the input of layer ``l`` at the
subject, non-subject or last positions with the (clean) residual state ``hidden_states[l']`` of an
earlier layer ``l' < l`` and check whether the attention output at ``l`` still extracts the attribute
(rank 0 at the last position).

Per example and source ``l'``, "extraction" means an event at any layer ``l > l'``; the per-example rate
is compared with the unpatched rate over the same layers.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import torch

from ..architectures import model_parts
from ..errors import InputError
from ..layer_states import residual_states
from .extraction import sublayer_extraction_ranks
from .interventions import patch_layer_input
from .queries import FactQuery, length_batches, model_device, stack_ids

POSITION_SETS = ("subject", "non-subject", "last")
DEFAULT_SOURCES = (0, 1, 5, 10, 20)


def usable_sources(model, sources: Sequence[int]) -> list[int]:
    """The source layers that fit the model (``0 <= l' < L - 1``: a later layer must exist to patch);
    :class:`~huggingface_patch.errors.InputError` when none does."""
    L = len(model_parts(model).layers)
    usable = [s for s in sources if 0 <= s < L - 1]
    if not usable:
        raise InputError(f"no source layer of {list(sources)} fits this {L}-layer model: give source layers "
                         f"0..{L - 2}")
    return usable


@torch.no_grad()
def patching_extraction(model, queries: Sequence[FactQuery], *, sources: Sequence[int] = DEFAULT_SOURCES,
                        position_sets: Sequence[str] = POSITION_SETS, apply_final_norm: bool = False,
                        max_rows: int = 256, progress=None) -> list[dict]:
    """Records ``{index, subject, set, source_layer, layer, rank, extraction}``; ``set='none'`` rows are the
    unpatched attention ranks (``source_layer=-1``). Sources ``>= L`` are dropped."""
    L = len(model_parts(model).layers)
    sources = usable_sources(model, sources)
    device = model_device(model)
    combos = [(name, src, layer) for name in position_sets for src in sources for layer in range(src + 1, L)]
    records = []
    for batch in length_batches(queries, max(1, max_rows // max(1, len(combos)))):
        ids = stack_ids(batch, device)
        targets = torch.tensor([q.target_id for q in batch], device=device)
        clean_states, _ = residual_states(model, ids)  # (L+1, B, T, H)
        clean = sublayer_extraction_ranks(model, ids, targets, apply_final_norm)["attention"][0]  # (L, B)
        for b, q in enumerate(batch):
            for layer in range(L):
                rank = int(clean[layer, b])
                records.append(dict(index=q.index, subject=q.subject, set="none", source_layer=-1, layer=layer,
                                    rank=rank, extraction=int(rank == 0)))
        rows = [(b, q, name, src, layer) for b, q in enumerate(batch) for name, src, layer in combos]
        for start in range(0, len(rows), max_rows):
            chunk = rows[start : start + max_rows]
            if not chunk:
                continue
            T = batch[0].length
            row_ids = ids[[b for b, *_ in chunk]]
            positions = torch.zeros(len(chunk), T, dtype=torch.bool, device=device)
            source = torch.stack([clean_states[src, b] for b, _, _, src, _ in chunk])  # (R, T, H)
            for r, (_, q, name, _, _) in enumerate(chunk):
                positions[r, q.positions(name)] = True
            with contextlib.ExitStack() as stack:
                for layer in range(1, L):
                    rows_here = torch.tensor([lay == layer for *_, lay in chunk], device=device)
                    if bool(rows_here.any()):
                        stack.enter_context(patch_layer_input(model, layer, source, positions, rows=rows_here))
                chunk_targets = torch.tensor([q.target_id for _, q, *_ in chunk], device=device)
                rank = sublayer_extraction_ranks(model, row_ids, chunk_targets, apply_final_norm)["attention"][0]
            for r, (_, q, name, src, layer) in enumerate(chunk):
                value = int(rank[layer, r])
                records.append(dict(index=q.index, subject=q.subject, set=name, source_layer=src, layer=layer,
                                    rank=value, extraction=int(value == 0)))
        if progress is not None:
            progress.update(len(batch))
    return records


def summarize_patching(records: Sequence[dict]) -> dict:
    """Per set and source layer: per-example extraction rate (% of examples with an attention extraction
    at some layer ``l > l'``), next to the unpatched rate over the same layers."""
    examples = sorted({r["index"] for r in records})
    clean = {(r["index"], r["layer"]) for r in records if r["set"] == "none" and r["extraction"]}
    patched: dict[tuple[str, int], set[int]] = {}
    sources = sorted({r["source_layer"] for r in records if r["set"] != "none"})
    sets = sorted({r["set"] for r in records if r["set"] != "none"})
    for r in records:
        if r["set"] != "none" and r["extraction"]:
            patched.setdefault((r["set"], r["source_layer"]), set()).add(r["index"])
    num_layers = max((r["layer"] for r in records), default=-1) + 1
    n = max(1, len(examples))
    summary = dict(n_examples=len(examples), sources=sources, unpatched=[], patched={})
    for src in sources:
        hit = sum(any((i, layer) in clean for layer in range(src + 1, num_layers)) for i in examples)
        summary["unpatched"].append(100.0 * hit / n)
    for name in sets:
        summary["patched"][name] = [100.0 * len(patched.get((name, src), ())) / n for src in sources]
    return summary
