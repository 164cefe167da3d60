"""Subject enrichment / "attributes rate" (Geva et al. 2023, §C).

The hidden state ``hidden_states[l]`` (``l = 0 … L-1``: the embeddings and the outputs of blocks 0 … L-2,
as in the paper's code) at a position is projected to the vocabulary (no final norm by default), the top
``top_k`` (500) tokens are decoded, tokens whose stripped lowercased form is a stopword or has length <= 2
are dropped, and the first ``keep`` (50) remaining tokens are compared with a reference set built from
text about the subject:

    rate = 100 * |top-keep tokens ∩ reference set| / (number kept, normally keep)

Tokens are compared by their stripped decoded form (case-sensitive). The paper's reference paragraphs
(Wikipedia) were never released: supply a CSV with columns ``subject,paragraphs`` (several rows per
subject are concatenated); ``huggingface_patch/data/example_paragraphs.csv`` is a small example.
"""

from __future__ import annotations

import csv
import os
from typing import Mapping, Sequence

import torch

from ..errors import HuggingfacePatchError
from ..layer_states import rank_and_top, residual_states
from .queries import FactQuery, length_batches, model_device, stack_ids
from .stopwords import is_filtered

#: the example reference CSV shipped with the package
EXAMPLE_PARAGRAPHS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data",
                                  "example_paragraphs.csv")

#: positions of the paper's figure
POSITIONS = ("first", "subject-first", "subject-last", "after-subject", "last")


class ParagraphsError(HuggingfacePatchError):
    """A reference CSV that cannot be used."""


def load_paragraphs(path: str) -> dict[str, str]:
    """``{subject: text}`` from a CSV with columns ``subject`` and ``paragraphs``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(2, "No such file", path)
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"subject", "paragraphs"} <= set(reader.fieldnames):
            raise ParagraphsError(f"{path} needs the columns 'subject' and 'paragraphs'")
        texts: dict[str, list[str]] = {}
        for row in reader:
            if row["subject"] and row["paragraphs"]:
                texts.setdefault(row["subject"].strip(), []).append(row["paragraphs"])
    return {subject: "\n".join(parts) for subject, parts in texts.items()}


class TokenStrings:
    """Decoded strings of every vocabulary id (decoded once; the filter runs on these)."""

    def __init__(self, tokenizer, vocab_size: int):
        self.strings = [tokenizer.decode([i]) for i in range(vocab_size)]
        self.filtered = torch.tensor([is_filtered(s) for s in self.strings], dtype=torch.bool)


def reference_set(tokenizer, text: str) -> set[str]:
    """The model-tokenized reference text: stripped decoded tokens, deduplicated, filtered."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return {tokenizer.decode([i]).strip() for i in set(ids) if not is_filtered(tokenizer.decode([i]))}


def filtered_top_tokens(logits: torch.Tensor, strings: TokenStrings, top_k: int = 500, keep: int = 50) -> list[str]:
    """The first ``keep`` tokens (stripped strings) among the ``top_k`` of ``logits`` ``(V,)`` that survive
    the filter."""
    return filtered_tokens(logits.float().topk(min(top_k, logits.shape[-1])).indices, strings, keep)


def filtered_tokens(ids: torch.Tensor, strings: TokenStrings, keep: int = 50) -> list[str]:
    """The first ``keep`` of the token ``ids`` ``(k,)`` (best first) that survive the filter, as stripped
    strings."""
    ids = ids.cpu()
    ids = ids[~strings.filtered[ids]][:keep]
    return [strings.strings[int(i)].strip() for i in ids]


def rate(tokens: Sequence[str], reference: set[str]) -> float:
    """``100 * |tokens ∩ reference| / len(tokens)`` (0 when no token survived the filter)."""
    return 100.0 * sum(t in reference for t in tokens) / len(tokens) if tokens else 0.0


@torch.no_grad()
def attributes_rate(model, tokenizer, queries: Sequence[FactQuery], references: Mapping[str, set[str]], *,
                    positions: Sequence[str] = POSITIONS, top_k: int = 500, keep: int = 50,
                    apply_final_norm: bool = False, max_rows: int = 64, strings: TokenStrings | None = None,
                    progress=None) -> list[dict]:
    """Records ``{index, subject, position, token_position, layer, rate, n_kept, top_tokens}`` for each query
    with a reference set, each position and each state: ``layer`` is the 0-based index of the block whose
    output is read, -1 for the embeddings (so ``hidden_states[l]`` is ``layer = l - 1``)."""
    device = model_device(model)
    strings = strings or TokenStrings(tokenizer, model.get_output_embeddings().weight.shape[0])
    usable = [q for q in queries if q.subject in references]
    records = []
    for batch in length_batches(usable, max_rows):
        states, _ = residual_states(model, stack_ids(batch, device), logits_to_keep=1)  # (L+1, B, T, H)
        cells = [(b, q, name, q.positions(name)[0]) for b, q in enumerate(batch) for name in positions]
        rows = states[:-1][:, [b for b, *_ in cells], [pos for *_, pos in cells]]  # (L, cells, H)
        # every cell's every state through the head in one blockwise pass (the weight is read once)
        top = rank_and_top(model, rows, 0, top_k, apply_final_norm).top  # (L, cells, top_k)
        for c, (_, q, name, pos) in enumerate(cells):
            for layer in range(rows.shape[0]):
                kept = filtered_tokens(top[layer, c], strings, keep)
                records.append(dict(index=q.index, subject=q.subject, position=name, token_position=pos,
                                    layer=layer - 1, rate=rate(kept, references[q.subject]), n_kept=len(kept),
                                    top_tokens=" ".join(kept[:10])))
        if progress is not None:
            progress.update(len(batch))
    return records


def summarize_rates(records: Sequence[dict], key: str = "position", value: str = "rate", *, clusters=None,
                    cluster_by: str = "relation", seed: int = 0, reference: str = "subject-last") -> dict:
    """Per ``key`` value (position) and layer: mean rate with pointwise cluster-bootstrap intervals
    (``summary``), the layer of each position's peak reported as selected (``peak``), and (``comparisons``)
    each fact's peak rate over layers at ``reference`` against its peak at every other position, in pairs
    (the paper's claim: the last subject position stands out)."""
    import numpy as np

    from .statistics import clustering_note, curve_rows, extremum, item_matrix, paired

    names = sorted({r[key] for r in records})
    out = {"summary": {}, "peak": {}, "comparisons": {}, **clustering_note(clusters, cluster_by)}
    peaks = {}
    for name in names:
        items, xs, matrix = item_matrix(records, "layer", lambda r: r[value], where=lambda r, n=name: r[key] == n)
        out["summary"][name] = curve_rows(items, xs, matrix, clusters, cluster_by, seed)
        out["peak"][name] = extremum(items, xs, matrix, clusters, cluster_by, seed, "max")
        with np.errstate(all="ignore"):
            peaks[name] = (items, np.nanmax(matrix, axis=1))
    if reference in peaks:
        items, ref = peaks[reference]
        for name in names:
            if name != reference and peaks[name][0] == items:
                out["comparisons"][f"{reference} vs {name}"] = {
                    "peak_over_layers": paired(ref, peaks[name][1], items, clusters, cluster_by, seed)}
    return out
