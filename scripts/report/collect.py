"""Read the runs of ``scripts/reproduce.py`` into ``results.json``: per step its provenance, the figures the
report shows (from the step's own JSON files), its figures (copied, with their sha256) and its per-item table
(compressed into ``docs/results/items/``). A step without a ``run.json`` is listed as missing, never filled in."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import math
import os
import shutil

from huggingface_patch.atomic import NUMBER_TEXT

from .paths import FIGURES, ITEMS, REPO

#: the per-item table of each step, by step name (the rows are the step's items)
ITEM_TABLES = {"knockout": "knockout.csv", "extraction": "extraction.csv", "extraction_final_norm": "extraction.csv",
               "attributes_rate": "attributes_rate.csv", "attributes_rate_final_norm": "attributes_rate.csv",
               "sublayer": "sublayer.csv", "patching": "patching.csv", "all": "saturation_layers.csv",
               "random_init": "saturation_layers.csv", "ablation": "ablation_pairs.csv",
               "benchmark": "faithfulness.csv", "align": "align.csv", "path_length": "path_length_tokens.csv",
               "deltalp": "deltalp.csv"}
#: columns left out of the committed per-item tables: readable token lists, re-derivable from the model
DROPPED_COLUMNS = {"top_tokens", "text"}


def read_json(path: str):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def provenance(folder: str) -> dict:
    """What produced a step's folder, from its ``run.json`` (and ``reproduce.json``: seconds and items)."""
    record = read_json(os.path.join(folder, "run.json"))
    model = record.get("model") or {}
    environment = record.get("environment") or {}
    out = {"tool": record.get("tool"), "source": environment.get("source"),
           "package": environment.get("huggingface_patch"), "model": model.get("name"),
           "weights_fingerprint": model.get("weights_fingerprint"),
           "config_fingerprint": model.get("config_fingerprint"), "settings": record.get("settings"),
           "settings_sha256": record.get("settings_sha256"), "inputs": record.get("inputs") or {},
           "run_json_sha256": sha256(os.path.join(folder, "run.json"))}
    if "models" in record:  # a comparison of several models (path length)
        out["models"] = [{"name": m.get("name"), "weights_fingerprint": m.get("weights_fingerprint"),
                          "start_token": m.get("start_token")} for m in record["models"]]
    marker = os.path.join(folder, "reproduce.json")
    if os.path.isfile(marker):
        started = read_json(marker)
        for key in ("seconds", "items", "seconds_per_item", "forward_pass_equivalents_per_item", "threads",
                    "load_average", "cpus"):
            if started.get(key) is not None:
                out[key] = started[key]
        if started.get("source_at_start"):
            out["source"] = started["source_at_start"]
    return out


def _pick(data: dict, *keys: str) -> dict:
    return {k: data[k] for k in keys if k in data}


def _mean(values) -> float:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(values) / len(values) if values else math.nan


# ------------------------------------------------------------------------------------------- readers


def _recall_summary(folder: str, table: str, summary: str) -> dict:
    """The summary of a recall step, read through :class:`RecallResult` (the run's own files only)."""
    from huggingface_patch.recall.result import RecallResult

    return RecallResult.from_folder(folder, table, summary).summary


def read_knockout(folder: str) -> dict:
    data = _recall_summary(folder, "knockout.csv", "knockout_summary.json")
    return _pick(data, "facts_total", "facts_known", "facts_used", "sample", "window", "window_rule",
                 "largest_drop", "comparisons", "cluster_by", "clusters", "metric")


def read_extraction(folder: str) -> dict:
    data = _recall_summary(folder, "extraction.csv", "extraction_summary.json")
    return _pick(data, "facts_total", "facts_known", "facts_used", "n_examples", "final_norm", "num_layers",
                 "per_example_rate", "per_example_interval", "attention_vs_mlp", "examples_with_any_extraction",
                 "attention_first_pct", "cluster_by", "clusters")


def read_attributes_rate(folder: str) -> dict:
    data = _recall_summary(folder, "attributes_rate.csv", "attributes_rate_summary.json")
    return _pick(data, "facts_total", "facts_known", "facts_used", "peak", "comparisons", "cluster_by", "clusters")


def read_sublayer(folder: str) -> dict:
    data = _recall_summary(folder, "sublayer.csv", "sublayer_summary.json")
    out = _pick(data, "facts_used", "measure_layer", "measure_rule", "window", "window_rule", "largest_drop",
                "comparisons", "position", "metric")
    out["baseline"] = (data["summary"].get("none") or [{}])[0]
    out["early_means"] = {kind: _mean([r["mean"] for r in rows if r["layer"] < data["measure_layer"] / 3])
                          for kind, rows in data["summary"].items() if kind != "none"}
    return out


def read_patching(folder: str) -> dict:
    data = _recall_summary(folder, "patching.csv", "patching_summary.json")
    return _pick(data, "facts_used", "n_examples", "sources", "unpatched", "patched", "comparisons", "cluster_by",
                 "clusters")


def read_saturation(folder: str) -> dict:
    from huggingface_patch.saturation.result import SaturationResult

    result = SaturationResult.from_folder(folder)
    parts = result.summaries
    out = {"layers": _pick(parts["layers"], "num_layers", "k", "positions", "kept_positions", "filter",
                           "fraction_top1_saturated", "ranks")}
    if "order" in parts:
        order = parts["order"]
        out["order"] = {"kendall": order["kendall"], "tau_interval": order.get("tau_interval")}
        for test in ("paper", "selection_aware"):
            out["order"]["kendall"].get(test, {}).pop("null", None)
    if "probe" in parts:
        probe = parts["probe"]
        out["probe"] = _pick(probe, "examples", "positions", "chance", "folds_grouped_by", "examples_per_task")
        out["probe"]["probe"] = _pick(probe["probe"], "balanced_accuracy", "balanced_accuracy_se", "folds")
        out["probe"]["gaussian_control"] = _pick(probe["class_scalar_gaussian_control"], "balanced_accuracy",
                                                 "balanced_accuracy_se")
        out["probe"]["permuted_labels"] = _pick(probe["permuted_labels"], "permutations", "balanced_accuracy_mean",
                                                "balanced_accuracy_sd", "p_value")
    if "early_exit" in parts:
        early = parts["early_exit"]
        curves = early.get("curves", {})
        out["early_exit"] = {"test_positions": early.get("test_positions"), "note": early.get("note"),
                             "comparisons": early.get("comparisons", {}),
                             **{m: curves[m][0] for m in ("probe", "oracle", "full") if curves.get(m)}}
    if "lm" in parts:
        out["lm"] = _pick(parts["lm"], "late", "early", "z", "p_value", "small_group", "top1_wrong", "late_margin")
    if result.skipped:
        out["skipped"] = result.skipped
    return out


def read_deltalp(folder: str) -> dict:
    from huggingface_patch.stored import StoredFolder

    data = StoredFolder(folder).json("deltalp_summary.json")  # the 112k-row table is not needed here
    histogram = {int(k): v for k, v in data["distance_histogram"].items()}
    n = data["n_targets_with_argmax"]
    return {"targets": n, "histogram": histogram, "previous": histogram.get(1, 0),
            "within5": sum(v for k, v in histogram.items() if k <= 5), "mean_distance": data.get("mean_distance"),
            "window": data.get("window")}


def read_ablation(folder: str) -> dict:
    from huggingface_patch.attribution.ablation import AblationStudy

    return _pick(AblationStudy.from_folder(folder).stats, "n", "spearman", "spearman_p", "pearson", "pearson_p",
                 "spearman_interval")


def read_select(folder: str) -> dict:
    from huggingface_patch.embedding_space.reports import SelectionReport

    selection = SelectionReport.from_folder(folder).selection
    return {"rule": selection.get("rule"), "chosen": selection.get("chosen", [])}


def read_align(folder: str) -> dict:
    from huggingface_patch.embedding_space.reports import AlignmentReport

    report = AlignmentReport.from_folder(folder)
    parts: dict = {}
    for row in report.result.rows:
        entry = parts.setdefault(row["part"], {"recall": [], "baseline": []})
        entry["recall"].append(row["recall"])
        entry["baseline"].append(row["baseline"])
    summary = {p: {"mean_recall": _mean(v["recall"]), "mean_baseline": _mean(v["baseline"]),
                   "layers_above": sum(r > b for r, b in zip(v["recall"], v["baseline"])), "layers": len(v["recall"])}
               for p, v in parts.items()}
    return {"positions": report.result.positions, "parts": summary,
            **_pick(report.settings, "comparisons", "random_seed")}


def read_reading(folder: str) -> dict:
    """An FF / VO / QK reading: its top tokens or token pairs (the first 8)."""
    from huggingface_patch.stored import StoredFolder

    stored = StoredFolder(folder)
    names = stored.named("", ".json")
    if not names:
        return {}
    data = stored.json(names[0])
    if "top" in data and isinstance(data["top"], dict):  # FF: key and value token lists
        return {"kind": "ff", "top": {part: tokens[:8] for part, tokens in data["top"].items()}}
    pairs = []
    for row in (data.get("top") or [])[:6]:
        first = row.get("source_token", row.get("query_token"))
        second = row.get("target_token", row.get("key_token"))
        pairs.append([first, second])
    return {"kind": "pairs", "pairs": pairs}


def read_faithfulness(folder: str) -> dict:
    from huggingface_patch.faithfulness.benchmark import FaithfulnessResult

    result = FaithfulnessResult.from_folder(folder)
    data = dict(result.settings, summary=result.summary, comparisons=result.comparisons, cost=result.cost,
                conservation=result.conservation)
    return _pick(data, "methods", "metrics", "corpus_items", "task_items", "candidates_tried", "summary",
                 "comparisons", "cost", "forward_seconds", "seed", "quantity", "conservation")


def read_path_length(folder: str) -> dict:
    from huggingface_patch.stored import StoredFolder

    data = StoredFolder(folder).json("path_length_summary.json")  # the step table (a million rows) is not needed
    keep = ("model", "num_layers", "tokens", "tokens_with_next", "pearson_next_logit", "spearman_next_logit",
            "pearson_next_logprob", "spearman_next_logprob", "mean_path_length", "mean_path_length_per_layer",
            "mean_tortuosity", "spearman_next_logit_interval")
    models = [{k: row.get(k) for k in keep if k in row} for row in data["models"]]
    for row in models:
        if row.get("spearman_next_logit_interval") is None:  # runs before the summary had it
            row["spearman_next_logit_interval"] = _path_length_interval(folder, row["model"])
    return {"models": models, "definition": data.get("definition")}


def _path_length_interval(folder: str, model: str) -> dict:
    """The Spearman correlation of path length and next-token logit with a cluster-bootstrap interval over
    documents, from the run's token table (positions >= 1 with a next token, as the summary's estimate;
    seed 0), for runs whose summary did not carry it."""
    from huggingface_patch.stats.correlation import correlation_interval

    x, y, documents = [], [], []
    with open(os.path.join(folder, "path_length_tokens.csv"), encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["model"] == model and int(row["position"]) >= 1 and row["next_logit"] != "":
                x.append(float(_compact(row["path_length"])))
                y.append(float(_compact(row["next_logit"])))
                documents.append(row["document"])
    return correlation_interval(x, y, documents, method="spearman", cluster_by="document", seed=0).to_dict()


#: reader of each step, by step name (the embedding readings ``ff_L*``, ``vo_L*``, ``qk_L*`` share one)
READERS = {"knockout": read_knockout, "extraction": read_extraction, "extraction_final_norm": read_extraction,
           "attributes_rate": read_attributes_rate, "attributes_rate_final_norm": read_attributes_rate,
           "sublayer": read_sublayer, "patching": read_patching, "all": read_saturation,
           "random_init": read_saturation, "deltalp": read_deltalp, "ablation": read_ablation,
           "select": read_select, "align": read_align, "benchmark": read_faithfulness,
           "path_length": read_path_length}


def reader_of(step: str):
    if step.split("_L")[0] in ("ff", "vo", "qk"):
        return read_reading
    return READERS[step]


# ------------------------------------------------------------------------------- tables and figures


def _compact(value: str) -> str:
    """A number cell with 6 significant digits (the tables stay exact enough to re-derive every figure). A
    number behind the spreadsheet guard ``'`` (before 0.2.0's fix, negative numbers formatted as text got one)
    is read as the number."""
    if value.startswith("'") and NUMBER_TEXT.fullmatch(value[1:]):
        value = value[1:]
    try:
        number = float(value)
    except ValueError:
        return value
    if number.is_integer() and "." not in value and "e" not in value.lower():
        return value
    return f"{number:.6g}"


def compress_table(source: str, target: str) -> dict:
    """``source`` CSV -> gzip'd ``target`` without :data:`DROPPED_COLUMNS`, numbers to 6 significant digits;
    deterministic bytes (no timestamp), written atomically. Returns ``{file, rows, sha256, dropped}``."""
    with open(source, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        keep = [i for i, name in enumerate(header) if name not in DROPPED_COLUMNS]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([header[i] for i in keep])
        rows = 0
        for row in reader:
            writer.writerow([_compact(row[i]) for i in keep])
            rows += 1
    os.makedirs(os.path.dirname(target), exist_ok=True)
    raw = gzip.compress(buffer.getvalue().encode("utf-8"), compresslevel=9, mtime=0)
    with open(target + ".tmp", "wb") as handle:
        handle.write(raw)
    os.replace(target + ".tmp", target)
    return {"file": os.path.relpath(target, REPO), "rows": rows, "sha256": hashlib.sha256(raw).hexdigest(),
            "source_sha256": sha256(source), "dropped": [header[i] for i in range(len(header)) if i not in keep]}


def figure_name(model: str, step: str, png: str) -> str:
    stem = os.path.splitext(png)[0]
    return f"results_{model}_{step}.png" if stem == step else f"results_{model}_{step}_{stem}.png"


def copy_figures(folder: str, model: str, step: str) -> list[dict]:
    """Every PNG the step wrote, copied into ``docs/figures`` with its sha256."""
    out = []
    for png in sorted(n for n in os.listdir(folder) if n.endswith(".png")):
        name = figure_name(model, step, png)
        shutil.copyfile(os.path.join(folder, png), os.path.join(FIGURES, name))
        out.append({"file": name, "sha256": sha256(os.path.join(FIGURES, name)), "made_by": png})
    return out


# ------------------------------------------------------------------------------------------ collect


def collect_step(work: str, model: str, part: str, step: str, output: str) -> dict | None:
    """One step's entry of ``results.json`` (None when its folder has no complete run)."""
    if not os.path.isfile(os.path.join(output, "run.json")):
        return None
    entry = {"model": model, "part": part, "step": step, "provenance": provenance(output),
             "data": reader_of(step)(output)}
    entry["figures"] = copy_figures(output, model, step)
    table = ITEM_TABLES.get(step)
    if table and os.path.isfile(os.path.join(output, table)):
        target = os.path.join(ITEMS, f"{model}__{part}__{step}.csv.gz")
        entry["items_table"] = compress_table(os.path.join(output, table), target)
        _recount(entry["provenance"], entry["items_table"]["rows"], step)
    return entry


def _recount(provenance: dict, rows: int, step: str) -> None:
    """Runs made before ``reproduce.py`` counted CSV rows counted lines, and a token cell holding a newline made
    two; the per-item table's row count is the item count (the faithfulness table has a row per item and
    method, so its count stays). Seconds and forward passes per item are rescaled; the old count is kept."""
    counted = provenance.get("items")
    if step == "benchmark" or not counted or counted == rows or not rows:
        return
    provenance["items"], provenance["items_as_recorded"] = rows, counted
    for key in ("seconds_per_item", "forward_pass_equivalents_per_item"):
        if provenance.get(key) is not None:
            provenance[key] = round(provenance[key] * counted / rows, 4 if key == "seconds_per_item" else 3)
