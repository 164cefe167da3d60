"""The lens analyses over a corpus, as tables and figures: :class:`LogitLensReport` (``analysis.logit_lens``)
and :class:`PathLengthReport` (``analysis.path_length``); each writes its own outputs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..stats.correlation import correlation_interval
from ..tokens import raw_tokens, token_texts
from .documents import pad_batch, pad_id_of
from .logit_lens import logit_lens
from .path_length import CORRELATION_TARGETS, correlations, path_lengths

LOGIT_LENS_COLUMNS = ["document", "row", "label", "layer", "kind", "position", "token", "token_raw", "next_token",
                      "top1", "top1_prob", "final_top1", "final_top1_prob", "final_top1_rank", "next_token_prob",
                      "next_token_rank", "kl_final_layer"]


@dataclass
class LogitLensReport:
    """The logit lens of several documents: ``documents`` (one dict of matrices per document), ``rows`` (the
    CSV rows) and the lens row ``labels``."""

    model_name: str
    labels: list[str]
    documents: list[dict]
    rows: list[list]
    settings: dict

    def write(self, folder, colours=("prob",), plots: bool = True) -> None:
        """``logit_lens_<model>.csv`` and ``.json`` and, unless ``plots`` is False, one heat map per document
        and colour, into a :class:`~huggingface_patch.files.ResultFolder`."""
        from ..files import save_figure, write_csv, write_json
        from .plots import logit_lens_heatmap

        name = self.model_name
        write_csv(self.rows, folder.path(f"logit_lens_{name}.csv"), LOGIT_LENS_COLUMNS)
        write_json(dict(self.settings, model_name=name, rows=self.labels, rank_convention="1 = top token",
                        kl="KL(p_final || p_row) in nats", documents=[{k: v for k, v in d.items() if k != "_values"}
                                                                       for d in self.documents]),
                   folder.path(f"logit_lens_{name}.json"))
        if not plots:
            return
        for doc in self.documents:
            for colour in colours:
                title = f"logit lens, {name}, document {doc['document']}, colour: {colour}"
                fig = logit_lens_heatmap(doc["_values"][colour], doc["top1"], self.labels, doc["tokens"],
                                         doc["next_tokens"], colour, title)
                save_figure(fig, folder.path(f"logit_lens_{name}_doc{doc['document']}_{colour}.png"))

    @classmethod
    def from_folder(cls, folder: str) -> "LogitLensReport":
        """The report :meth:`write` put into ``folder``; the heat maps' values are rebuilt from the documents'
        matrices (every colour mode), so the read-back report writes the same figures."""
        from ..stored import StoredFolder
        from .logit_lens import COLOUR_MODES

        stored = StoredFolder(folder)
        names = stored.named("logit_lens_", ".json")
        if len(names) != 1:
            from ..errors import RecordError

            raise RecordError(f"{folder} holds {len(names)} logit_lens_<model>.json results, expected one")
        written = stored.json(names[0])
        name = written["model_name"]
        # the rows hold the numbers as the formatted text they were written with
        rows = [[row[c] for c in LOGIT_LENS_COLUMNS] for row in stored.table(f"logit_lens_{name}.csv", typed=False)]
        documents = written["documents"]
        matrix = dict(zip(COLOUR_MODES, ("final_top1_prob", "final_top1_rank", "kl", "next_token_prob")))
        for doc in documents:
            doc["_values"] = {colour: np.array(doc[key], dtype=np.float32) for colour, key in matrix.items()}
        settings = {k: v for k, v in written.items()
                    if k not in ("model_name", "rows", "rank_convention", "kl", "documents")}
        return cls(name, written["rows"], documents, rows, settings)


@torch.no_grad()
def logit_lens_report(model, tokenizer, sequences: list[list[int]], model_name: str, *, sublayers=None,
                      batch_size: int = 4, colours=("prob",), progress: bool = True) -> LogitLensReport:
    """Run the logit lens over ``sequences`` (token ids, start token included) in right-padded batches."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    rows, documents, labels = [], [], None
    for start in tqdm(range(0, len(sequences), batch_size), desc=f"logit lens {model_name}", unit="batch",
                      disable=not progress):
        batch = sequences[start : start + batch_size]
        ids, mask = pad_batch(batch, pad_id_of(tokenizer), "right")
        result = logit_lens(model, ids.to(device), mask.to(device), sublayers)
        labels = result.labels
        for b, seq in enumerate(batch):
            doc, n = start + b, len(seq)
            tokens, raws = token_texts(tokenizer, seq), raw_tokens(tokenizer, seq)
            next_tokens = tokens[1:] + [""]
            top = [token_texts(tokenizer, result.top_ids[r, b, :n].tolist()) for r in range(len(labels))]
            final_top = token_texts(tokenizer, result.target_ids[b, :n].tolist())
            entry = {"document": doc, "tokens": tokens, "tokens_raw": raws, "token_ids": seq,
                     "next_tokens": next_tokens,
                     "final_top1": final_top, "top1": top}
            for key, tensor in (("top1_prob", result.top_probs), ("final_top1_prob", result.target_probs),
                                ("final_top1_rank", result.target_ranks), ("next_token_prob", result.next_probs),
                                ("next_token_rank", result.next_ranks), ("kl", result.kl)):
                entry[key] = tensor[:, b, :n].tolist()
            entry["_values"] = {c: result.values(c)[:, b, :n].float().cpu().numpy() for c in colours}
            documents.append(entry)
            for r, label in enumerate(labels):
                for t in range(n):
                    has_next = t + 1 < n
                    rows.append([doc, r, label, result.layers[r], result.kinds[r], t, tokens[t], raws[t],
                                 next_tokens[t], top[r][t], f"{float(result.top_probs[r, b, t]):.6g}", final_top[t],
                                 f"{float(result.target_probs[r, b, t]):.6g}", int(result.target_ranks[r, b, t]),
                                 f"{float(result.next_probs[r, b, t]):.6g}" if has_next else "",
                                 int(result.next_ranks[r, b, t]) if has_next else "",
                                 f"{float(result.kl[r, b, t]):.6g}"])
    settings = {"sublayers": sublayers}
    return LogitLensReport(model_name, labels, documents, rows, settings)


@dataclass
class ModelPaths:
    """One model's per-token path lengths (``tokens``: dicts with the token's numbers and its step arrays)."""

    name: str
    argument: str
    num_layers: int
    tokens: list[dict]

    def summary(self) -> dict:
        """The model's row of the comparison table: correlations over positions >= 1 that have a next token;
        position 0 reported separately."""
        rest = [t for t in self.tokens if t["position"] > 0]
        first = [t for t in self.tokens if t["position"] == 0]
        row = {"model": self.name, "model_arg": self.argument, "num_layers": self.num_layers, "tokens": len(rest),
               "tokens_with_next": sum(not math.isnan(t["next_logit"]) for t in rest)}
        pl = np.array([t["path_length"] for t in rest])
        for target in CORRELATION_TARGETS:
            r = correlations(pl, [t[target] for t in rest])
            row[f"pearson_{target}"], row[f"spearman_{target}"] = r["pearson"], r["spearman"]
        # tokens of one document share their context: the interval resamples documents
        row["spearman_next_logit_interval"] = correlation_interval(
            pl, [t["next_logit"] for t in rest], [t["document"] for t in rest], method="spearman",
            cluster_by="document", seed=0).to_dict()
        row["mean_path_length"] = float(pl.mean()) if pl.size else math.nan
        row["mean_path_length_per_layer"] = row["mean_path_length"] / self.num_layers
        row["mean_tortuosity"] = float(np.mean([t["path_length"] / t["straight"] for t in rest])) if rest else math.nan
        row["mean_path_length_position0"] = float(np.mean([t["path_length"] for t in first])) if first else math.nan
        row["mean_next_logit_position0"] = float(np.nanmean([t["next_logit"] for t in first])) if first else math.nan
        return row


@torch.no_grad()
def model_paths(model, tokenizer, sequences: list[list[int]], name: str, argument: str, batch_size: int = 8,
                progress: bool = True) -> ModelPaths:
    """Per-token path lengths of one model over ``sequences``."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    tokens = []
    for start in tqdm(range(0, len(sequences), batch_size), desc=f"path length {name}", unit="batch",
                      disable=not progress):
        batch = sequences[start : start + batch_size]
        ids, mask = pad_batch(batch, pad_id_of(tokenizer), "right")
        result = path_lengths(model, ids.to(device), mask.to(device))
        for b, seq in enumerate(batch):
            one = {k: v.cpu() for k, v in result.sequence(b).items()}
            texts = token_texts(tokenizer, seq)
            for t in range(len(seq)):
                tokens.append({"document": start + b, "position": t, "token": texts[t],
                               "next_token": texts[t + 1] if t + 1 < len(seq) else "",
                               "path_length": float(one["total"][t]), "straight": float(one["straight"][t]),
                               "final_norm": float(one["final_norm"][t]), "next_logit": float(one["next_logit"][t]),
                               "next_logprob": float(one["next_logprob"][t]), "max_logit": float(one["max_logit"][t]),
                               "steps": one["steps"][t].numpy(), "cumulative": one["cumulative"][t].numpy()})
    return ModelPaths(name, argument, len(tokens[0]["steps"]), tokens)


TOKEN_COLUMNS = ["model", "document", "position", "token", "next_token", "path_length", "straight", "tortuosity",
                 "final_norm", "next_logit", "next_logprob", "max_logit"]


def _fmt(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{float(value):.6g}"


@dataclass
class PathLengthReport:
    """Path lengths of one or more models over the same documents, and their comparison table."""

    models: list[ModelPaths]
    settings: dict = field(default_factory=dict)
    #: the comparison table as the run computed it from full-precision values; a report read back from files
    #: keeps it (its tables hold 6 significant digits, which would move the correlations by round-off)
    computed: list[dict] | None = None

    def summary(self) -> list[dict]:
        return self.computed if self.computed is not None else [m.summary() for m in self.models]

    def write(self, folder, plots: bool = True) -> None:
        """``path_length_tokens.csv``, ``path_length_steps.csv``, ``path_length_summary.csv`` / ``.json`` and
        (unless ``plots`` is False) three figures, into a :class:`~huggingface_patch.files.ResultFolder`."""
        from ..files import write_csv, write_json

        token_rows, step_rows = [], []
        for model in self.models:
            for t in model.tokens:
                tortuosity = t.get("tortuosity", t["path_length"] / t["straight"])  # as written, when read back
                token_rows.append([model.name, t["document"], t["position"], t["token"], t["next_token"],
                                   _fmt(t["path_length"]), _fmt(t["straight"]), _fmt(tortuosity),
                                   _fmt(t["final_norm"]), _fmt(t["next_logit"]), _fmt(t["next_logprob"]),
                                   _fmt(t["max_logit"])])
                for layer in range(1, model.num_layers + 1):
                    step_rows.append([model.name, t["document"], t["position"], layer,
                                      f"{layer / model.num_layers:.4g}", _fmt(t["steps"][layer - 1]),
                                      _fmt(t["cumulative"][layer])])
        write_csv(token_rows, folder.path("path_length_tokens.csv"), TOKEN_COLUMNS)
        write_csv(step_rows, folder.path("path_length_steps.csv"),
                  ["model", "document", "position", "layer", "relative_depth", "step_norm", "cumulative"])
        summary = self.summary()
        columns = [c for c in summary[0] if not isinstance(summary[0][c], dict)]  # intervals: in the JSON
        write_csv([[_fmt(row[c]) if isinstance(row[c], float) else row[c] for c in columns] for row in summary],
                  folder.path("path_length_summary.csv"), columns)
        write_json(dict(self.settings, definition="step_l = ||h_l - h_{l-1}||, h_0 embeddings, h_L before the final "
                                                  "norm; correlations over positions >= 1 with a next token",
                        models=summary), folder.path("path_length_summary.json"))
        if plots:
            self._plots(folder, summary)

    @classmethod
    def from_folder(cls, folder: str) -> "PathLengthReport":
        """The report :meth:`write` put into ``folder``: every model's tokens with their step and cumulative
        arrays, rebuilt from the two tables (numbers as written: 6 significant digits)."""
        from ..stored import StoredFolder

        stored = StoredFolder(folder)
        written = stored.json("path_length_summary.json")
        steps: dict = {}
        for row in stored.table("path_length_steps.csv"):
            steps.setdefault((str(row["model"]), row["document"], row["position"]), []).append(
                (row["step_norm"], row["cumulative"]))
        by_model: dict = {}
        for row in stored.table("path_length_tokens.csv"):
            walk = steps[(str(row["model"]), row["document"], row["position"])]
            # tortuosity as written (the ratio of the 6-digit values would differ in the last digit)
            token = {key: row[key] if row[key] is not None else math.nan for key in TOKEN_COLUMNS[1:]}
            token["token"], token["next_token"] = str(row["token"] or ""), str(row["next_token"] or "")
            token["steps"] = np.array([step for step, _ in walk], dtype=float)
            token["cumulative"] = np.array([0.0] + [total for _, total in walk], dtype=float)
            by_model.setdefault(str(row["model"]), []).append(token)
        models = [ModelPaths(m["model"], m["model_arg"], m["num_layers"], by_model[str(m["model"])])
                  for m in written["models"]]
        return cls(models, {k: v for k, v in written.items() if k not in ("definition", "models")},
                   computed=written["models"])

    def _plots(self, folder, summary) -> None:
        from ..files import save_figure
        from .plots import cumulative_path_figure, path_vs_logit_figure, step_profile_figure

        cumulative, scatter, profiles = [], [], {}
        for model, row in zip(self.models, summary):
            rest = [t for t in model.tokens if t["position"] > 0]
            first = [t for t in model.tokens if t["position"] == 0]
            cumulative.append({"name": model.name, "curves": np.stack([t["cumulative"] for t in rest]),
                               "positions": np.array([t["position"] for t in rest])})
            scatter.append({"name": model.name, "pl": [t["path_length"] for t in rest],
                            "target": [t["next_logit"] for t in rest], "pl0": [t["path_length"] for t in first],
                            "target0": [t["next_logit"] for t in first],
                            "r": {"pearson": row["pearson_next_logit"], "spearman": row["spearman_next_logit"]}})
            profiles[model.name] = np.stack([t["steps"] for t in rest]).mean(0)
        save_figure(cumulative_path_figure(cumulative), folder.path("path_length_cumulative.png"))
        save_figure(path_vs_logit_figure(scatter), folder.path("path_length_vs_logit.png"))
        save_figure(step_profile_figure(profiles), folder.path("path_length_steps.png"))
