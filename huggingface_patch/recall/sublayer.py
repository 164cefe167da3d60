"""Sublayer knockout (Geva et al. 2023, §D): knock out the MLP or the attention sublayers of a window of
layers at every position and measure, at a chosen layer ``m``, the attributes rate (or the attribute's
probability) at the last subject position.

For each start ``s = 0 … m-1`` the knocked-out layers are ``range(s, min(s + window, m))``; the paper's
code asks for 10 layers but its bounds give 11, so ``window`` defaults to 11. The measured state is the
output of layer ``m`` (``hidden_states[m + 1]``; the paper: layer 40 of GPT2-XL's 48). Kinds:

* ``mlp`` — MLP inner activation set to 0 (output = bias of the last linear);
* ``attention-uniform`` — the paper's quirk: every mask cell ``finfo.min`` => uniform attention over the
  causal prefix;
* ``attention-zero`` — true zero attention (output = output-projection bias).
"""

from __future__ import annotations

import contextlib
from typing import Mapping, Sequence

import torch

from ..architectures import model_parts
from ..layer_states import rank_and_top
from .attributes_rate import TokenStrings, filtered_tokens, rate
from .interventions import knockout_attention, knockout_mlp
from .queries import FactQuery, length_batches, model_device, stack_ids

KINDS = ("mlp", "attention-uniform", "attention-zero")
METRICS = ("attribute-prob", "attributes-rate")


def default_measure_layer(num_layers: int) -> int:
    """The paper's layer 40 of 48, scaled to ``num_layers`` (30 layers -> 25)."""
    from .depth import PAPER_MEASURE_LAYER, scaled

    return min(num_layers - 1, scaled(PAPER_MEASURE_LAYER, num_layers))


def knockout_window(start: int, window: int, measure_layer: int) -> range:
    """The layers knocked out from ``start``: ``window`` of them, stopping before the measured layer."""
    return range(start, min(start + window, measure_layer))


@contextlib.contextmanager
def _knockout_rows(model, kind: str, rows_of_layer: Mapping[int, torch.Tensor]):
    with contextlib.ExitStack() as stack:
        for layer, rows in rows_of_layer.items():
            if not bool(rows.any()):
                continue
            if kind == "mlp":
                stack.enter_context(knockout_mlp(model, [layer], rows=rows))
            else:
                stack.enter_context(knockout_attention(model, [layer], mode=kind.split("-", 1)[1], rows=rows))
        yield


def _measured_states(model, calls, items: list[tuple], kinds: Sequence[str], window: int, m: int,
                     pos: torch.Tensor) -> torch.Tensor:
    """``(len(items), H)``: the output of block ``m`` at each item's position, the item ``(row, query, kind,
    start)`` knocking ``kind`` out over the window from ``start`` (``'none'``: the clean state). Items of one
    start replay blocks ``start .. m`` together, each row with its own kind."""
    device = pos.device
    hidden = torch.empty(len(items), calls.outputs[m].shape[-1], dtype=calls.outputs[m].dtype, device=device)
    for i, (b, _, kind, _) in enumerate(items):
        if kind == "none":
            hidden[i] = calls.outputs[m][b, pos[b]]
    for start in range(m):
        chunk = [i for i, item in enumerate(items) if item[3] == start]
        rows = torch.tensor([items[i][0] for i in chunk], device=device)
        with contextlib.ExitStack() as stack:
            for kind in kinds:
                selected = torch.tensor([items[i][2] == kind for i in chunk])
                stack.enter_context(_knockout_rows(model, kind, {layer: selected for layer in
                                                                 knockout_window(start, window, m)}))
            out = calls.run(calls.inputs[start].index_select(0, rows), rows, start, m + 1)  # output of block m
        hidden[chunk] = out[torch.arange(len(chunk), device=device), pos.index_select(0, rows)]
    return hidden


@torch.no_grad()
def sublayer_knockout(model, tokenizer, queries: Sequence[FactQuery], *, kinds: Sequence[str] = KINDS,
                      measure_layer: int | None = None, window: int = 11, metric: str = "attribute-prob",
                      position: str = "subject-last", references: Mapping[str, set[str]] | None = None,
                      top_k: int = 500, keep: int = 50, apply_final_norm: bool = False, max_rows: int = 256,
                      progress=None) -> list[dict]:
    """Records ``{index, subject, kind, start, layers, value}`` (``kind='none'`` and ``start=-1``: no
    intervention). ``value`` is the attribute probability (``metric='attribute-prob'``, softmax of the
    projected state) or the attributes rate (``'attributes-rate'``, needs ``references``; queries without
    one are skipped).

    The blocks before a start ``s`` run as in the clean pass, and nothing after block ``m`` is measured: each
    item replays blocks ``s .. m`` only, from the clean input of block ``s`` with the arguments the model
    called them with (:class:`~.replay.LayerCalls`); the same numbers as a whole forward pass per item, to
    round-off."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}: choose from {', '.join(METRICS)}")
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"unknown knockout kind {kind!r}: choose from {', '.join(KINDS)}")
    L = len(model_parts(model).layers)
    m = default_measure_layer(L) if measure_layer is None else measure_layer
    if not 0 < m < L:
        raise ValueError(f"the measurement layer must be in 1..{L - 1}, got {m}")
    strings = None
    if metric == "attributes-rate":
        if not references:
            raise ValueError("metric 'attributes-rate' needs reference token sets")
        queries = [q for q in queries if q.subject in references]
        strings = TokenStrings(tokenizer, model.get_output_embeddings().weight.shape[0])
    from .replay import LayerCalls

    device = model_device(model)
    combos = [("none", -1)] + [(kind, s) for kind in kinds for s in range(m)]
    records = []
    for batch in length_batches(queries, max(1, max_rows // max(1, len(kinds)))):
        ids = stack_ids(batch, device)
        calls = LayerCalls(model, ids)  # blocks before a start are clean: replayed from their own arguments
        pos = torch.tensor([q.positions(position)[0] for q in batch], device=device)
        items = [(b, q, kind, s) for b, q in enumerate(batch) for kind, s in combos]
        hidden = _measured_states(model, calls, items, kinds, window, m, pos)
        for lo in range(0, len(items), max_rows):
            part = items[lo : lo + max_rows]
            targets = torch.tensor([q.target_id for _, q, _, _ in part], device=device)
            reading = rank_and_top(model, hidden[lo : lo + len(part)], targets, top_k if strings else 1,
                                   apply_final_norm)
            for r, (_, q, kind, s) in enumerate(part):
                if metric == "attribute-prob":
                    value = float(reading.probability[r])
                else:
                    value = rate(filtered_tokens(reading.top[r], strings, keep), references[q.subject])
                win = knockout_window(s, window, m) if s >= 0 else range(0)
                records.append(dict(index=q.index, subject=q.subject, kind=kind, start=s,
                                    layers=f"{win.start}-{win.stop - 1}" if len(win) else "", value=value))
        if progress is not None:
            progress.update(len(batch))
    return records


def summarize_sublayer(records: Sequence[dict], clusters=None, cluster_by: str = "relation", seed: int = 0) -> dict:
    """Per kind and start layer: mean value with pointwise intervals (``layer`` = start; ``none`` is one
    row), the start of the largest drop per kind (selected), and MLP vs each attention kind on the same facts
    (:func:`~.knockout.summarize`)."""
    from .knockout import summarize

    kinds = sorted({r["kind"] for r in records} - {"none"})
    pairs = [("mlp", kind) for kind in kinds if kind != "mlp"]
    return summarize([{**r, "set": r["kind"], "layer": r["start"], "relative_change": r["value"]} for r in records],
                     clusters=clusters, cluster_by=cluster_by, seed=seed, pairs=pairs)
