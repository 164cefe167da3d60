"""Patching early representations (Geva et al. 2023, §B): replace the input of block ``l`` at the
subject, non-subject or last positions with the (clean) residual state of the same prompt at an earlier
point, the output of block ``s`` (``s = -1``: the embeddings), and check whether the attention output of
block ``l`` still extracts the attribute (rank 0 at the last position).

Layers are 0-based block indices. The paper's sources ``hidden_states[l']`` with ``l' = 0, 1, 5, 10, 20``
are the outputs of blocks ``s = l' - 1 = -1, 0, 4, 9, 19``; the patched blocks are ``l = s + 2 … L-1`` (the
paper's ``l > l'``: patching block ``s + 1``'s own input with its own input would change nothing).

Per example and source ``s``, "extraction" means an event at any of those blocks; the per-example rate is
compared with the unpatched rate over the same blocks.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..architectures import model_parts
from ..errors import InputError
from ..layer_states import rank_and_top
from .extraction import sublayer_extraction_ranks
from .queries import FactQuery, length_batches, model_device, stack_ids

POSITION_SETS = ("subject", "non-subject", "last")
#: the paper's ``hidden_states`` indices 0, 1, 5, 10, 20 as 0-based blocks whose output is patched in
DEFAULT_SOURCES = (-1, 0, 4, 9, 19)
#: patched items read out through the vocabulary together (a (rows x V-block) piece of logits at a time)
READOUT_ROWS = 1024


def usable_sources(model, sources: Sequence[int]) -> list[int]:
    """The source blocks that fit the model (``-1 <= s <= L - 3``: a block ``s + 2`` must exist to patch);
    :class:`~huggingface_patch.errors.InputError` when none does."""
    L = len(model_parts(model).layers)
    usable = [s for s in sources if -1 <= s <= L - 3]
    if not usable:
        raise InputError(f"no source layer of {list(sources)} fits this {L}-layer model: give 0-based blocks "
                         f"-1..{L - 3} (-1 = the embeddings)")
    return usable


@torch.no_grad()
def patching_extraction(model, queries: Sequence[FactQuery], *, sources: Sequence[int] = DEFAULT_SOURCES,
                        position_sets: Sequence[str] = POSITION_SETS, apply_final_norm: bool = False,
                        max_rows: int = 256, progress=None) -> list[dict]:
    """Records ``{index, subject, set, source_layer, layer, rank, extraction}`` (0-based blocks; the source is
    the block whose output is patched in, -1 the embeddings); ``set='none'`` rows are the unpatched attention
    ranks (``source_layer`` empty). Sources that do not fit the model are dropped.

    What is measured, the attention output of block ``l``, depends only on block ``l``'s input: each item
    runs block ``l`` alone on its patched input, with the arguments the model called it with in one clean
    pass (:class:`~.replay.LayerCalls`), and stops once the attention output exists; the same numbers as a
    whole forward pass per item, to round-off.
    """
    from .replay import LayerCalls, StopReplay, stop_after

    parts = model_parts(model)
    L = len(parts.layers)
    sources = usable_sources(model, sources)
    device = model_device(model)
    combos = [(name, src, layer) for name in position_sets for src in sources for layer in range(src + 2, L)]
    records = []
    for batch in length_batches(queries, max(1, max_rows // max(1, len(combos)))):
        ids = stack_ids(batch, device)
        T = batch[0].length
        targets = torch.tensor([q.target_id for q in batch], device=device)
        clean = sublayer_extraction_ranks(model, ids, targets, apply_final_norm)["attention"][0]  # (L, B)
        calls = LayerCalls(model, ids)
        items = [(b, q, name, src, layer) for b, q in enumerate(batch) for name, src, layer in combos]
        order, states = [], []
        for layer in range(1, L):
            here = [i for i, item in enumerate(items) if item[4] == layer]
            for lo in range(0, len(here), max_rows):
                chunk = here[lo : lo + max_rows]
                rows = torch.tensor([items[i][0] for i in chunk], device=device)
                positions = torch.zeros(len(chunk), T, 1, dtype=torch.bool, device=device)
                for r, i in enumerate(chunk):
                    positions[r, items[i][1].positions(items[i][2])] = True
                # the output of block s is the input of block s + 1 (the embeddings for s = -1)
                source = torch.stack([calls.inputs[items[i][3] + 1][items[i][0]] for i in chunk])
                hidden = torch.where(positions, source, calls.inputs[layer].index_select(0, rows))
                record: dict = {}
                with stop_after(parts.layers[layer].attention_update, record):
                    try:
                        calls.run(hidden, rows, layer, layer + 1)
                    except StopReplay:
                        pass
                order.extend(chunk)
                states.append(record["output"][:, -1])
        ranks = _ranks(model, torch.cat(states), targets.index_select(0, torch.tensor(
            [items[i][0] for i in order], device=device)), order, apply_final_norm)
        for b, q in enumerate(batch):
            for layer in range(L):
                rank = int(clean[layer, b])
                records.append(dict(index=q.index, subject=q.subject, set="none", source_layer="", layer=layer,
                                    rank=rank, extraction=int(rank == 0)))
        for i, (_, q, name, src, layer) in enumerate(items):
            records.append(dict(index=q.index, subject=q.subject, set=name, source_layer=src, layer=layer,
                                rank=ranks[i], extraction=int(ranks[i] == 0)))
        if progress is not None:
            progress.update(len(batch))
    return records


def _ranks(model, states: torch.Tensor, targets: torch.Tensor, order: list[int], apply_final_norm: bool) -> dict:
    """``{item: rank}`` of each state ``(R, H)`` (item ``order[r]``) and its target ``(R,)``, read out together:
    a (rows x V) product reads the head's weight once, where one per layer (a dozen rows each) was bound by
    reading it (Gemma 3: 262,144 x 640) again and again."""
    ranks: dict[int, int] = {}
    for lo in range(0, len(order), READOUT_ROWS):
        rank = rank_and_top(model, states[lo : lo + READOUT_ROWS], targets[lo : lo + READOUT_ROWS], 0,
                            apply_final_norm, logsumexp=False).rank
        for r, i in enumerate(order[lo : lo + READOUT_ROWS]):
            ranks[i] = int(rank[r])
    return ranks


def summarize_patching(records: Sequence[dict], clusters=None, cluster_by: str = "relation", seed: int = 0) -> dict:
    """Per set and source block ``s``: per-example extraction rate (% of examples with an attention extraction
    at some block ``l >= s + 2``), next to the unpatched rate over the same layers, and (``comparisons``) the
    patched vs unpatched event of each fact compared in pairs (McNemar, or a sign-flip test by cluster),
    with the rates' intervals."""
    import numpy as np

    from ..stats import paired_comparison
    from .statistics import clustering_note

    examples = sorted({r["index"] for r in records})
    labels = None if clusters is None else [clusters[i] for i in examples]
    clean = {(r["index"], r["layer"]) for r in records if r["set"] == "none" and r["extraction"]}
    patched: dict[tuple[str, int], set[int]] = {}
    sources = sorted({r["source_layer"] for r in records if r["set"] != "none"})
    sets = sorted({r["set"] for r in records if r["set"] != "none"})
    for r in records:
        if r["set"] != "none" and r["extraction"]:
            patched.setdefault((r["set"], r["source_layer"]), set()).add(r["index"])
    num_layers = max((r["layer"] for r in records), default=-1) + 1
    n = max(1, len(examples))
    summary = dict(n_examples=len(examples), sources=sources, unpatched=[], patched={}, comparisons={},
                   **clustering_note(clusters, cluster_by))
    unpatched = {}
    for src in sources:
        unpatched[src] = np.array([float(any((i, layer) in clean for layer in range(src + 2, num_layers)))
                                   for i in examples])
        summary["unpatched"].append(100.0 * unpatched[src].sum() / n)
    for name in sets:
        summary["patched"][name] = [100.0 * len(patched.get((name, src), ())) / n for src in sources]
        rows = []
        for src in sources:
            events = np.array([float(i in patched.get((name, src), ())) for i in examples])
            comparison = paired_comparison(events, unpatched[src], labels, cluster_by=cluster_by, seed=seed)
            rows.append({"source_layer": src, "patched_minus_unpatched": comparison.to_dict()})
        summary["comparisons"][name] = rows
    return summary
