"""The readings of ``analysis.embedding_space`` as result objects that write their own outputs: a
neuron's top tokens (:func:`ff_report`), a head's top token pairs (:func:`pairs_report`), a t-SNE of top
tokens (:func:`tsne_report`), the parameters-vs-hidden-states alignment (:func:`alignment_report`) and the
rule-based choice of parameters to read (:func:`selection_report`).
Each ``write(folder, model_name)`` takes a :class:`~huggingface_patch.files.ResultFolder`."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InputError
from ..files import pyplot, save_figure, write_csv, write_json, write_text


def _bar_panels(panels: dict[str, list[tuple[str, float]]], title: str):
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 6), squeeze=False)
    for ax, (name, items) in zip(axes[0], panels.items()):
        labels = [t for t, _ in items][::-1]
        ax.barh(range(len(items)), [v for _, v in items][::-1], color="C0")
        ax.set_yticks(range(len(items)), labels, fontsize=8)
        ax.set_title(name, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


class WrittenVocabulary:
    """The token texts a written table holds (id -> readable text): the vocabulary of a report read back from
    its files (the tokenizer is not needed to show them again)."""

    def __init__(self, names: dict[int, str]):
        self.names = names

    def display(self, token_id: int) -> str:
        return self.names.get(int(token_id), f"<id {int(token_id)}>")


def _one_stem(stored, prefix: str) -> str:
    """The stem of the one ``prefix*.json`` result of a folder (one reading per run)."""
    from ..errors import RecordError

    names = stored.named(prefix, ".json")
    if len(names) != 1:
        raise RecordError(f"{stored.folder} holds {len(names)} {prefix}*.json results, expected one")
    return names[0][: -len(".json")]


@dataclass
class NeuronReport:
    """A neuron's top tokens per part (``key`` or ``gate``/``up``, and ``value``)."""

    layer: int
    neuron: int
    tops: dict
    vocab: object
    settings: dict

    def rows(self) -> list[dict]:
        n = max(len(ids) for ids, _ in self.tops.values())
        rows = []
        for rank in range(n):
            row = {"rank": rank + 1}
            for part, (ids, values) in self.tops.items():
                row[f"{part}_token"] = self.vocab.display(int(ids[rank])) if rank < len(ids) else ""
                row[f"{part}_score"] = round(float(values[rank]), 6) if rank < len(ids) else ""
            for part, (ids, _) in self.tops.items():
                row[f"{part}_id"] = int(ids[rank]) if rank < len(ids) else ""
            rows.append(row)
        return rows

    def write(self, folder, model_name: str) -> None:
        stem = f"ff_L{self.layer}_N{self.neuron}"
        write_csv(self.rows(), folder.path(stem + ".csv"))
        write_json(dict(self.settings, model=model_name, layer=self.layer, neuron=self.neuron,
                        top={part: [self.vocab.display(int(i)) for i in ids[:20]] for part, (ids,
                                                                                             _) in self.tops.items()}),
                   folder.path(stem + ".json"))
        panels = {part: [(self.vocab.display(int(i)), float(v)) for i, v in zip(ids[:25], values[:25])]
                  for part, (ids, values) in self.tops.items()}
        save_figure(_bar_panels(panels, f"{model_name}: layer {self.layer}, neuron {self.neuron} (part · E)"),
                    folder.path(stem + ".png"))

    @classmethod
    def from_folder(cls, folder: str) -> "NeuronReport":
        """The report :meth:`write` put into ``folder`` (its vocabulary: the token texts of the table)."""
        from ..stored import StoredFolder

        stored = StoredFolder(folder)
        stem = _one_stem(stored, "ff_L")
        written, rows = stored.json(stem + ".json"), stored.table(stem + ".csv")
        tops, names = {}, {}
        for part in written["top"]:
            kept = [r for r in rows if r[f"{part}_id"] is not None]
            tops[part] = (torch.tensor([r[f"{part}_id"] for r in kept]),
                          torch.tensor([float(r[f"{part}_score"]) for r in kept]))
            names.update({r[f"{part}_id"]: str(r[f"{part}_token"]) for r in kept})
        settings = {k: v for k, v in written.items() if k not in ("model", "layer", "neuron", "top")}
        return cls(written["layer"], written["neuron"], tops, WrittenVocabulary(names), settings)


def ff_report(model, vocab, layer: int, neuron: int, k: int, token_filter, *, embedding: str = "output",
              normalize: bool = False, bottom: bool = False, expert: int | None = None) -> NeuronReport:
    """A neuron's key(s) and value (of one ``expert`` in a mixture-of-experts layer), each read as its top ``k``
    tokens through ``E``."""
    from .readout import neuron_top_tokens

    tops = neuron_top_tokens(model, layer, neuron, k, allowed=token_filter.allowed(vocab), embedding=embedding,
                             normalize=normalize, largest=not bottom, expert=expert)
    return NeuronReport(layer, neuron, tops, vocab, dict(k=k, embedding=embedding, normalize=normalize, bottom=bottom,
                                                          expert=expert, filters=token_filter.describe()))


@dataclass
class PairsReport:
    """A head's top token pairs of ``Eᵀ W_VO E`` or ``Eᵀ W_QK E``."""

    kind: str
    layer: int
    head: int
    result: object
    vocab: object
    show: int
    settings: dict

    def write(self, folder, model_name: str) -> None:
        stem = f"{self.kind}_L{self.layer}_H{self.head}"
        rows = self.result.rows(self.vocab)
        write_csv(rows, folder.path(stem + ".csv"))
        write_json(dict(self.settings, model=model_name, map=self.kind, layer=self.layer, head=self.head,
                        tokens_allowed=self.result.allowed_tokens, pairs_returned=len(self.result.entries),
                        search=self.result.entries.stats, top=rows[: self.show]), folder.path(stem + ".json"))
        what = "Eᵀ W_VO E" if self.kind == "vo" else "Eᵀ W_QK E"
        save_figure(self._heatmap(f"{model_name}: {what}, layer {self.layer}, head {self.head}"),
                    folder.path(stem + ".png"))

    @classmethod
    def from_folder(cls, folder: str) -> "PairsReport":
        """The report :meth:`write` put into ``folder`` (``vo_`` or ``qk_``; its vocabulary: the token texts of
        the table)."""
        from ..stored import StoredFolder
        from .readout import PairResult
        from .topk import TopEntries

        stored = StoredFolder(folder)
        kind = "qk" if stored.named("qk_L", ".json") and not stored.named("vo_L", ".json") else "vo"
        stem = _one_stem(stored, kind + "_L")
        written, rows = stored.json(stem + ".json"), stored.table(stem + ".csv")
        first, second = ("source", "target") if kind == "vo" else ("query", "key")
        entries = TopEntries(torch.tensor([r[f"{first}_id"] for r in rows], dtype=torch.long),
                             torch.tensor([r[f"{second}_id"] for r in rows], dtype=torch.long),
                             torch.tensor([float(r["value"]) for r in rows]), stats=written["search"])
        names = {r[f"{side}_id"]: str(r[f"{side}_token"]) for r in rows for side in (first, second)}
        result = PairResult(kind, written["layer"], written["head"], entries, written["tokens_allowed"])
        settings = {k: written[k] for k in ("embedding", "normalize", "filters", "pair_exclusion")}
        return cls(kind, written["layer"], written["head"], result, WrittenVocabulary(names), len(written["top"]),
                   settings)

    def _heatmap(self, title: str):
        plt = pyplot()
        entries, vocab = self.result.entries, self.vocab
        n = min(self.show, len(entries))
        rows = list(dict.fromkeys(int(i) for i in entries.rows[:n]))[:20]
        cols = list(dict.fromkeys(int(j) for j in entries.cols[:n]))[:20]
        grid = torch.full((len(rows), len(cols)), float("nan"))
        lookup = {(int(i), int(j)): float(v) for i, j, v in zip(entries.rows, entries.cols, entries.values)}
        for a, i in enumerate(rows):
            for b, j in enumerate(cols):
                grid[a, b] = lookup.get((i, j), float("nan"))
        fig, ax = plt.subplots(figsize=(0.45 * len(cols) + 3, 0.35 * len(rows) + 2.5))
        image = ax.imshow(grid.numpy(), cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(cols)), [vocab.display(j) for j in cols], rotation=90, fontsize=8)
        ax.set_yticks(range(len(rows)), [vocab.display(i) for i in rows], fontsize=8)
        first, second = ("token attended to (row)", "token written (column)") if self.kind == "vo" else \
            ("query token (row)", "key token (column)")
        ax.set_ylabel(first)
        ax.set_xlabel(second)
        fig.colorbar(image, ax=ax, shrink=0.8, label="entry (blank: below threshold)")
        ax.set_title(title, fontsize=10)
        return fig


def pairs_report(model, vocab, kind: str, layer: int, head: int, token_filter, *, pair_exclusion: str = "near",
                 embedding: str = "output", min_k: int = 500, max_k: int = 250_000, th0: float = 1.0,
                 max_iters: int = 10, block_bytes: int = 64 * 2**20, show: int = 50, progress: bool = True,
                 normalize: bool = False) -> PairsReport:
    """The head's largest entries, found in blocks with the original threshold search."""
    from .readout import top_head_pairs

    if min_k > max_k:
        raise InputError(f"the fewest pairs ({min_k}) must not exceed the most ({max_k})")
    result = top_head_pairs(model, vocab, layer, head, kind, token_filter=token_filter, pair_exclusion=pair_exclusion,
                            embedding=embedding, min_k=min_k, max_k=max_k, th0=th0, max_iters=max_iters,
                            max_block_bytes=block_bytes, progress=progress, normalize=normalize)
    settings = dict(embedding=embedding, normalize=normalize, filters=token_filter.describe(),
                    pair_exclusion=pair_exclusion)
    return PairsReport(kind, layer, head, result, vocab, show, settings)


@dataclass
class TSNEReport:
    """A t-SNE of a neuron part's top tokens (table, PNG and interactive HTML)."""

    layer: int
    neuron: int
    part: str
    result: object

    def write(self, folder, model_name: str) -> None:
        from .tsne import plot_tsne, tsne_html

        stem = f"tsne_L{self.layer}_N{self.neuron}_{self.part}"
        title = (f"{model_name}: top {len(self.result.ids)} tokens of layer {self.layer} neuron {self.neuron} "
                 f"{self.part} · E")
        write_csv(self.result.rows(), folder.path(stem + ".csv"))
        save_figure(plot_tsne(self.result, title), folder.path(stem + ".png"))
        write_text(tsne_html(self.result, title), folder.path(stem + ".html"))

    @classmethod
    def from_folder(cls, folder: str) -> "TSNEReport":
        """The report :meth:`write` put into ``folder`` (layer, neuron and part from the file name)."""
        import re

        import numpy as np

        from ..errors import RecordError
        from ..stored import StoredFolder
        from .tsne import TSNEResult

        stored = StoredFolder(folder)
        names = stored.named("tsne_L", ".csv")
        match = re.fullmatch(r"tsne_L(\d+)_N(\d+)_(\w+)\.csv", names[0]) if len(names) == 1 else None
        if match is None:
            raise RecordError(f"{folder} holds {len(names)} t-SNE tables, expected one tsne_L<l>_N<n>_<part>.csv")
        rows = stored.table(names[0])
        axes = [a for a in "xyz" if a in rows[0]]
        coords = np.array([[r[a] for a in axes] for r in rows], dtype=float)
        result = TSNEResult([r["id"] for r in rows], [str(r["token"]) for r in rows],
                            [float(r["score"]) for r in rows], coords)
        return cls(int(match[1]), int(match[2]), match[3], result)


def tsne_report(model, vocab, layer: int, neuron: int, part: str, k: int, token_filter, *, embedding: str = "output",
                normalize: bool = False, components: int = 3, perplexity: float = 3.0, learning_rate: float = 10.0,
                seed: int = 0, expert: int | None = None) -> TSNEReport:
    """t-SNE of the embedding columns of a neuron part's top ``k`` tokens."""
    from .projections import embedding_matrix, ff_vectors
    from .tsne import tsne_top_tokens

    vectors = ff_vectors(model, layer, neuron, expert)
    if part not in vectors:
        raise InputError(f"part {part!r} does not exist in this model: choose from {', '.join(vectors)}")
    which = "output" if part == "value" else embedding
    result = tsne_top_tokens(vectors[part], embedding_matrix(model, which), vocab, k,
                             allowed=token_filter.allowed(vocab),
                             normalize=normalize, n_components=components, perplexity=perplexity,
                             learning_rate=learning_rate, seed=seed)
    return TSNEReport(layer, neuron, part, result)


@dataclass
class AlignmentReport:
    """Parameters vs hidden states: recall per layer and part against the random baseline."""

    result: object
    settings: dict

    def write(self, folder, model_name: str) -> None:
        from .align import plot_alignment

        write_csv(self.result.rows, folder.path("align.csv"))
        write_json(dict(self.settings, model=model_name, texts=self.result.texts, positions=self.result.positions,
                        recall="|A ∩ B| / |B|: A = union of top tokens of the top neurons' part · E, "
                               "B = top tokens of final_norm(h) · E; baseline: A from a random other position",
                        rows=self.result.rows), folder.path("align.json"))
        save_figure(plot_alignment(self.result, f"{model_name}: top-{self.settings['neurons']} neurons vs hidden state "
                                                f"(top-{self.settings['tokens']} tokens, {self.result.positions} "
                                                "positions)"), folder.path("align.png"))

    @classmethod
    def from_folder(cls, folder: str) -> "AlignmentReport":
        """The report :meth:`write` put into ``folder`` (checked against its ``run.json``)."""
        from ..stored import StoredFolder
        from .align import AlignmentResult

        written = StoredFolder(folder).json("align.json")
        result = AlignmentResult(written["rows"], written["positions"], written["texts"])
        settings = {k: v for k, v in written.items() if k not in ("model", "texts", "positions", "recall", "rows")}
        return cls(result, settings)


def alignment_report(model, tokenizer, vocab, texts: list[str], token_filter, *, layers=None, neurons: int = 5,
                     tokens: int = 50, max_positions: int = 1000, target: str = "layer", embedding: str = "output",
                     seed: int = 0, normalize: bool = False, start=None) -> AlignmentReport:
    """Recall of the hidden state's top tokens among the most activated neurons' top tokens, per layer,
    against a random position."""
    from .align import parameter_alignment
    from .projections import ParameterIndexError, num_layers

    n = num_layers(model)
    for layer in layers or []:
        if layer >= n:
            raise ParameterIndexError(f"layer {layer} is out of range: the model has {n} (layers 0..{n - 1})")
    result = parameter_alignment(model, tokenizer, texts, layers=layers, n_neurons=neurons, k_tokens=tokens,
                                 max_positions=max_positions, target=target, allowed=token_filter.allowed(vocab),
                                 embedding=embedding, seed=seed, normalize=normalize, start=start)
    settings = dict(neurons=neurons, tokens=tokens, target=target, embedding=embedding,
                    filters=token_filter.describe(), start=None if start is None else start.describe())
    return AlignmentReport(result, settings)


@dataclass
class SelectionReport:
    """The parameters a stated rule picks per layer (:func:`~.selection.select_parameters`)."""

    selection: dict

    def write(self, folder, model_name: str) -> None:
        rows = [{key: value for key, value in entry.items() if key != "head_norms"}
                for entry in self.selection["chosen"]]
        write_csv(rows, folder.path("selection.csv"))
        write_json(dict(self.selection, model=model_name), folder.path("selection.json"))

    @classmethod
    def from_folder(cls, folder: str) -> "SelectionReport":
        """The report :meth:`write` put into ``folder`` (checked against its ``run.json``)."""
        from ..stored import StoredFolder

        written = StoredFolder(folder).json("selection.json")
        return cls({k: v for k, v in written.items() if k != "model"})


def selection_report(model, tokenizer, texts: list[str], *, layers=None, neurons: int = 5,
                     max_positions: int = 1000, start=None) -> SelectionReport:
    """Per layer: the most often top-activated FF neuron and the heads with the largest ``W_VO``/``W_QK``."""
    from .selection import select_parameters

    selection = select_parameters(model, tokenizer, texts, layers=layers, neurons=neurons,
                                  max_positions=max_positions, start=start)
    selection["start"] = None if start is None else start.describe()
    return SelectionReport(selection)
