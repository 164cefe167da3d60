"""Turn the runs of ``scripts/reproduce.py`` into the results report.

    python scripts/results_report.py                      # read results/reproduce, write the report
    python scripts/results_report.py --check              # exit 1 if docs/results.md or the README are stale

Reads every step folder under ``--work`` (``{model}/{part}/{step}``, each with the ``run.json`` its tool wrote)
and writes:

* ``docs/results/results.json``: every figure of the report, per model, with the provenance of the run it comes
  from (tool, source commit, package version, model and weights fingerprints, every setting, seconds);
* ``docs/results/*.csv``: the per-layer tables behind the figures;
* ``docs/figures/results_*.png``: each run's own figure, copied, and a screenshot of the ΔLP page;
* ``docs/results.md`` and the block of ``README.md`` between ``<!-- results:start -->`` and
  ``<!-- results:end -->``, both rendered from ``results.json`` alone (so ``--check`` can tell whether they
  are in step with it; ``tests/test_results_doc.py`` does).

A step whose folder has no ``run.json`` is reported as missing, never filled in. Runs made from different source
commits are allowed (the report is built over hours) and each figure names its own.
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import json
import math
import os
import shutil
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "docs", "results")
FIGURES = os.path.join(REPO, "docs", "figures")
REPORT = os.path.join(REPO, "docs", "results.md")
README = os.path.join(REPO, "README.md")
START, END = "<!-- results:start -->", "<!-- results:end -->"
MODELS = {"smollm2-135m": "SmolLM2-135M", "gemma3-270m": "Gemma 3 270M"}

#: the papers' own figures, for their models, with where they are stated
PAPERS = {
    "geva": "Geva, Bastings, Filippova, Globerson 2023, *Dissecting Recall of Factual Associations in "
            "Auto-Regressive Language Models* (EMNLP), GPT-2 XL (48 layers) and GPT-J (28 layers)",
    "lioubashevski": "Lioubashevski et al., *Looking Beyond the Top-1: Transformers Determine Top Tokens in Order* "
                     "(arXiv 2410.20210; ICML 2025), GPT-2 XL",
    "oh": "Oh & Schuler 2023, *Token-wise Decomposition of Autoregressive Language Model Hidden States for "
          "Analyzing Model Predictions* (ACL), GPT-2 and OPT models",
    "dar": "Dar, Geva, Gupta, Berant 2023, *Analyzing Transformers in Embedding Space* (ACL), GPT-2 medium",
}


# ----------------------------------------------------------------------------------------------- reading


def read_json(path: str):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def provenance(folder: str) -> dict:
    """What produced a step's folder, from its ``run.json`` (and ``reproduce.json``: the seconds it took)."""
    record = read_json(os.path.join(folder, "run.json"))
    model = record.get("model") or {}
    out = {"tool": record.get("tool"), "source": (record.get("environment") or {}).get("source"),
           "package": (record.get("environment") or {}).get("huggingface_patch"),
           "model": model.get("name"), "weights_fingerprint": model.get("weights_fingerprint"),
           "config_fingerprint": model.get("config_fingerprint"), "settings": record.get("settings"),
           "inputs": record.get("inputs") or {}}
    if "models" in record:  # a comparison of several models (path length)
        out["models"] = [{"name": m.get("name"), "weights_fingerprint": m.get("weights_fingerprint"),
                          "start_token": m.get("start_token")} for m in record["models"]]
    marker = os.path.join(folder, "reproduce.json")
    if os.path.isfile(marker):
        started = read_json(marker)
        out["seconds"] = started.get("seconds")
        # records made before the commit was read at import name the commit current when the run *ended*;
        # reproduce.py now notes the one current when it started the step
        out["source_read_at_start"] = "source_at_start" in started
        if started.get("source_at_start"):
            out["source"] = started["source_at_start"]
    return out


def wilson(hits: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson interval of a proportion, in percent."""
    if n <= 0:
        return (math.nan, math.nan)
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (100 * (centre - half), 100 * (centre + half))


def best_row(rows: list[dict], lowest: bool) -> dict:
    """The per-layer row with the lowest (or highest) mean."""
    finite = [r for r in rows if r.get("mean") is not None and not math.isnan(r["mean"])]
    return (min if lowest else max)(finite, key=lambda r: r["mean"]) if finite else {}


class Collector:
    """Reads the steps of one model into ``figures`` (numbers) and ``sources`` (provenance per step)."""

    def __init__(self, work: str, model: str):
        self.work, self.model = work, model
        self.figures: dict = {}
        self.sources: dict = {}
        self.missing: list[str] = []
        self.tables: dict[str, list[dict]] = {}
        self.pictures: list[tuple[str, str]] = []

    def folder(self, part: str, step: str) -> str | None:
        path = os.path.join(self.work, self.model, part, step)
        if not os.path.isfile(os.path.join(path, "run.json")):
            self.missing.append(f"{part}/{step}")
            return None
        self.sources[f"{part}/{step}"] = provenance(path)
        return path

    def picture(self, folder: str, name: str, label: str) -> None:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            self.pictures.append((path, f"results_{self.model}_{label}.png"))

    # --- Geva et al.
    def recall(self) -> None:
        out = {}
        folder = self.folder("recall", "knockout")
        if folder:
            data = read_json(os.path.join(folder, "knockout_summary.json"))
            sets = {}
            for name, rows in data["summary"].items():
                low = best_row(rows, lowest=True)
                sets[name] = dict(lowest_mean=low.get("mean"), ci=[low.get("ci_low"), low.get("ci_high")],
                                  at_layer=low.get("layer"), n=low.get("n"))
                self.tables.setdefault("knockout", []).extend(dict(model=self.model, set=name, **r) for r in rows)
            out["knockout"] = dict(facts=data["facts_used"], facts_known=data["facts_known"],
                                   facts_total=data["facts_total"], window=data["window"], sets=sets,
                                   step="recall/knockout")
            self.picture(folder, "knockout.png", "knockout")
        for step in ("extraction", "extraction_final_norm"):
            folder = self.folder("recall", step)
            if not folder:
                continue
            data = read_json(os.path.join(folder, "extraction_summary.json"))
            n = data["n_examples"]
            rates = {}
            for kind, pct in data["per_example_rate"].items():
                hits = round(pct * n / 100)
                rates[kind] = dict(pct=pct, ci=list(wilson(hits, n)), mean_layers=data["mean_extracting_layers"][kind])
            either = data["examples_with_any_extraction"]
            first = round(data["attention_first_pct"] * either / 100) if either else 0
            out[step] = dict(n=n, rates=rates, attention_first_pct=data["attention_first_pct"],
                             attention_first_ci=list(wilson(first, either)), with_any=either,
                             final_norm=data["final_norm"], step=f"recall/{step}")
            for kind, values in data["per_layer_rate"].items():
                self.tables.setdefault("extraction", []).extend(
                    dict(model=self.model, final_norm=data["final_norm"], sublayer=kind, layer=i + 1, rate_pct=v)
                    for i, v in enumerate(values))
            self.picture(folder, "extraction.png", step)
        for step in ("attributes_rate", "attributes_rate_final_norm"):
            folder = self.folder("recall", step)
            if not folder:
                continue
            data = read_json(os.path.join(folder, "attributes_rate_summary.json"))
            positions = {}
            for name, rows in data["summary"].items():
                top = best_row(rows, lowest=False)
                positions[name] = dict(highest_mean=top.get("mean"), ci=[top.get("ci_low"), top.get("ci_high")],
                                       at_layer=top.get("layer"), n=top.get("n"))
                self.tables.setdefault(step, []).extend(dict(model=self.model, position=name, **r) for r in rows)
            out[step] = dict(facts=data["facts_used"], positions=positions, step=f"recall/{step}")
            self.picture(folder, "attributes_rate.png", step)
        folder = self.folder("recall", "sublayer")
        if folder:
            data = read_json(os.path.join(folder, "sublayer_summary.json"))
            curves = dict(data["summary"])
            baseline = curves.pop("none", [{}])[0]
            kinds = {}
            for name, rows in curves.items():
                low = best_row(rows, lowest=True)
                early = [r for r in rows if r["layer"] < max(r2["layer"] for r2 in rows) / 3]
                kinds[name] = dict(lowest_mean=low.get("mean"), ci=[low.get("ci_low"), low.get("ci_high")],
                                   at_start=low.get("layer"),
                                   early_mean=(sum(r["mean"] for r in early) / len(early)) if early else None)
                self.tables.setdefault("sublayer", []).extend(dict(model=self.model, kind=name, **r) for r in rows)
            out["sublayer"] = dict(facts=data["facts_used"], window=data["window"],
                                   measure_layer=data["measure_layer"], baseline=baseline.get("mean"),
                                   baseline_ci=[baseline.get("ci_low"), baseline.get("ci_high")], kinds=kinds,
                                   step="recall/sublayer")
            self.picture(folder, "sublayer.png", "sublayer")
        folder = self.folder("recall", "patching")
        if folder:
            data = read_json(os.path.join(folder, "patching_summary.json"))
            cuts = {}
            for name, rates in data["patched"].items():
                relative = [(u - p) / u * 100 if u else math.nan for u, p in zip(data["unpatched"], rates)]
                best = max(range(len(relative)), key=lambda i: -math.inf if math.isnan(relative[i]) else relative[i])
                cuts[name] = dict(largest_cut_pct=relative[best], at_source=data["sources"][best],
                                  patched=rates[best], unpatched=data["unpatched"][best])
                self.tables.setdefault("patching", []).extend(
                    dict(model=self.model, set=name, source_layer=s, patched_pct=p, unpatched_pct=u)
                    for s, p, u in zip(data["sources"], rates, data["unpatched"]))
            out["patching"] = dict(n=data["n_examples"], sources=data["sources"], cuts=cuts, step="recall/patching")
            self.picture(folder, "patching.png", "patching")
        if out:
            self.figures["recall"] = out

    # --- Lioubashevski et al.
    def saturation(self) -> None:
        folder = self.folder("saturation", "all")
        if not folder:
            return
        layers = read_json(os.path.join(folder, "saturation_layers.json"))
        order = read_json(os.path.join(folder, "saturation_order.json"))
        probe = read_json(os.path.join(folder, "saturation_probe.json"))
        early = read_json(os.path.join(folder, "saturation_early_exit.json"))
        out = dict(num_layers=layers["num_layers"], k=layers["k"], positions=layers["positions"],
                   kept=layers["kept_positions"], ranks=layers["ranks"], step="saturation/all")
        kendall = order["kendall"]
        out["kendall"] = {key: kendall[key] for key in ("tau", "positions", "permutations", "p_value", "p_text",
                                                        "shuffled_mean", "shuffled_sd")}
        corr = order["rank_correspondence"]
        out["rank_correspondence"] = corr.get("mean_index_plus_one")
        out["probe"] = dict(balanced_accuracy=probe["probe"]["balanced_accuracy"],
                            se=probe["probe"]["balanced_accuracy_se"], chance=probe["chance"],
                            examples=probe["examples"], tasks=len(probe["examples_per_task"]),
                            gaussian_control=probe["gaussian_control"]["balanced_accuracy"])
        curves = early["curves"]
        exit_ = {"test_positions": early["test_positions"]}
        for method in ("probe", "oracle", "full"):
            if method in curves:
                exit_[method] = {k: curves[method][0][k] for k in ("accuracy", "speedup")}
        if "probe" in exit_:
            target = exit_["probe"]["speedup"]
            for method in ("margin", "cosine"):
                near = min(curves[method], key=lambda p: abs(p["speedup"] - target))
                exit_[method] = dict(accuracy=near["accuracy"], speedup=near["speedup"], threshold=near["threshold"])
        out["early_exit"] = exit_
        lm_path = os.path.join(folder, "saturation_lm.json")
        if os.path.isfile(lm_path):
            lm = read_json(lm_path)
            out["lm"] = dict(late=lm["late"], early=lm["early"], z=lm["z"], p_value=lm["p_value"])
        for row in layers["ranks"]:
            self.tables.setdefault("saturation_ranks", []).append(dict(model=self.model, **row))
        for name in ("saturation_layers", "saturation_rank_correspondence", "saturation_probe",
                     "saturation_early_exit"):
            self.picture(folder, name + ".png", name)
        self.figures["saturation"] = out

    # --- Oh & Schuler
    def deltalp(self) -> None:
        out = {}
        folder = self.folder("deltalp", "deltalp")
        if folder:
            data = read_json(os.path.join(folder, "deltalp_summary.json"))
            n = data["n_targets_with_argmax"]
            histogram = {int(k): v for k, v in data["distance_histogram"].items()}
            previous = histogram.get(1, 0)
            within = lambda d: sum(v for k, v in histogram.items() if k <= d)  # noqa: E731
            out["argmax"] = dict(targets=n, previous=previous, previous_pct=100 * previous / n if n else math.nan,
                                 previous_ci=list(wilson(previous, n)), within5_pct=100 * within(5) / n if n else None,
                                 mean_distance=data["mean_distance"], window=data.get("window"),
                                 histogram=histogram, step="deltalp/deltalp")
            for k in sorted(histogram):
                self.tables.setdefault("deltalp_distance", []).append(dict(model=self.model, distance=k,
                                                                           targets=histogram[k]))
            self.picture(folder, "heatmap.png", "deltalp_heatmap")
            page = os.path.join(folder, "deltalp_doc0.html")
            if os.path.isfile(page):
                out["page"] = page
        folder = self.folder("deltalp", "ablation")
        if folder:
            data = read_json(os.path.join(folder, "ablation_summary.json"))
            out["ablation"] = {k: data[k] for k in ("n", "spearman", "spearman_p", "pearson", "pearson_p")}
            out["ablation"]["step"] = "deltalp/ablation"
            self.picture(folder, "ablation_scatter.png", "ablation")
        if out:
            self.figures["deltalp"] = out

    # --- Dar et al.
    def embedding(self) -> None:
        out = {}
        folder = self.folder("embedding", "select")
        if folder:
            selection = read_json(os.path.join(folder, "selection.json"))
            out["rule"] = selection.get("rule")
            chosen = []
            for entry in selection["chosen"]:
                layer = entry["layer"]
                item = dict(layer=layer, neuron=entry["neuron"], vo_head=entry["vo_head"], qk_head=entry["qk_head"])
                ff = self._reading("ff", layer, f"ff_L{layer}_N{entry['neuron']}.json")
                if ff:
                    item["ff"] = {part: tokens[:8] for part, tokens in ff["top"].items()}
                for kind, head in (("vo", entry["vo_head"]), ("qk", entry["qk_head"])):
                    pairs = self._reading(kind, layer, f"{kind}_L{layer}_H{head}.json")
                    if pairs:
                        first, second = ("source", "target") if kind == "vo" else ("query", "key")
                        item[kind] = [[r[f"{first}_token"], r[f"{second}_token"]] for r in pairs["top"][:5]]
                chosen.append(item)
            out["chosen"] = chosen
        folder = self.folder("embedding", "align")
        if folder:
            data = read_json(os.path.join(folder, "align.json"))
            rows = data["rows"]
            parts = {}
            for row in rows:
                entry = parts.setdefault(row["part"], dict(recall=[], baseline=[]))
                entry["recall"].append(row["recall"])
                entry["baseline"].append(row["baseline"])
                self.tables.setdefault("align", []).append(dict(model=self.model, **row))
            out["align"] = dict(positions=data["positions"], tokens=data.get("tokens"), neurons=data.get("neurons"),
                                parts={p: dict(mean_recall=sum(v["recall"]) / len(v["recall"]),
                                               mean_baseline=sum(v["baseline"]) / len(v["baseline"]),
                                               layers_above=sum(r > b for r, b in zip(v["recall"], v["baseline"])),
                                               layers=len(v["recall"])) for p, v in parts.items()},
                                step="embedding/align")
            self.picture(folder, "align.png", "align")
        if out:
            self.figures["embedding"] = out

    def _reading(self, kind: str, layer: int, name: str) -> dict | None:
        folder = self.folder("embedding", f"{kind}_L{layer}")
        if not folder or not os.path.isfile(os.path.join(folder, name)):
            return None
        if kind == "ff":
            self.picture(folder, name.replace(".json", ".png"), f"{kind}_L{layer}")
        return read_json(os.path.join(folder, name))


def path_lengths(work: str, sources: dict, tables: dict) -> dict | None:
    folder = os.path.join(work, "both", "path_length", "path_length")
    if not os.path.isfile(os.path.join(folder, "run.json")):
        return None
    sources["path_length"] = provenance(folder)
    data = read_json(os.path.join(folder, "path_length_summary.json"))
    keep = ("model", "num_layers", "tokens", "tokens_with_next", "pearson_next_logit", "spearman_next_logit",
            "pearson_next_logprob", "spearman_next_logprob", "mean_path_length", "mean_path_length_per_layer",
            "mean_tortuosity")
    rows = [{k: row.get(k) for k in keep} for row in data["models"]]
    tables["path_length"] = rows
    return dict(models=rows, definition=data.get("definition"), step="path_length",
                pictures=[os.path.join(folder, n) for n in ("path_length_vs_logit.png", "path_length_cumulative.png")])


# ----------------------------------------------------------------------------------------------- writing


def write_text(text: str, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def write_table(rows: list[dict], path: str) -> None:
    columns: list[str] = []
    for row in rows:
        columns.extend(c for c in row if c not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_text(buffer.getvalue(), path)


def screenshot(page: str, target: str) -> bool:
    """A PNG of the ΔLP page with a target selected (Chromium through Playwright; False if unavailable)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return False
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return False
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1100, "height": 700}, device_scale_factor=1)
        tab.goto("file://" + os.path.abspath(page))
        tab.wait_for_selector(".tok")
        tab.locator(".tok").nth(40).click()
        tab.wait_for_timeout(300)
        tab.screenshot(path=target)
        browser.close()
    return True


def collect(work: str) -> dict:
    """Everything the report shows, from the runs under ``work``; figures copied into ``docs/figures``."""
    results = {"generated_by": "scripts/results_report.py (runs made by scripts/reproduce.sh)", "models": {},
               "missing": {}, "sources": {}}
    tables: dict[str, list[dict]] = {}
    pictures: list[tuple[str, str]] = []
    timings_path = os.path.join(work, "timings.json")
    timings = read_json(timings_path) if os.path.isfile(timings_path) else {}
    for model in MODELS:
        if not os.path.isdir(os.path.join(work, model)):
            continue
        c = Collector(work, model)
        c.recall()
        c.saturation()
        c.deltalp()
        c.embedding()
        page = c.figures.get("deltalp", {}).pop("page", None)
        if page and model == "smollm2-135m":
            if screenshot(page, os.path.join(FIGURES, "deltalp_page.png")):
                results["page_screenshot"] = "docs/figures/deltalp_page.png"
        results["models"][model] = c.figures
        results["missing"][model] = c.missing
        results["sources"][model] = c.sources
        for name, rows in c.tables.items():
            tables.setdefault(name, []).extend(rows)
        pictures.extend(c.pictures)
    shared_sources: dict = {}
    paths = path_lengths(work, shared_sources, tables)
    if paths:
        for picture in paths.pop("pictures"):
            pictures.append((picture, "results_path_length_" + os.path.basename(picture).replace("path_length_", "")))
        results["path_length"] = paths
        results["sources"]["both"] = shared_sources
    minutes: dict[str, float] = {}
    for key, seconds in timings.items():
        part, model, _ = key.split("/", 2)
        minutes[f"{part}/{model}"] = round(minutes.get(f"{part}/{model}", 0.0) + seconds / 60, 1)
    results["minutes"] = minutes
    os.makedirs(FIGURES, exist_ok=True)
    results["figures"] = []
    for source, name in pictures:
        shutil.copyfile(source, os.path.join(FIGURES, name))
        results["figures"].append(name)
    for name, rows in tables.items():
        write_table(rows, os.path.join(RESULTS, f"{name}.csv"))
    results["tables"] = sorted(f"{name}.csv" for name in tables)
    return results


# ----------------------------------------------------------------------------------------------- rendering


def f(value, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def ci(pair, digits: int = 1) -> str:
    return f"[{f(pair[0], digits)}, {f(pair[1], digits)}]"


def commit_of(results: dict, model: str, step: str) -> str:
    """The step's source commit, short; † where the record read it when the run ended (see the footnote)."""
    source = results["sources"].get(model, {}).get(step, {})
    commit = source.get("source") or "unknown"
    mark = "" if source.get("source_read_at_start", True) else " †"
    return commit[:7] + ("+modified" if commit.endswith("+modified") else "") + mark


def figure(results: dict, name: str, caption: str) -> str:
    return f"![{caption}](figures/{name})\n" if name in results.get("figures", []) else ""


def render(results: dict) -> str:
    """``docs/results.md`` from ``results.json`` alone."""
    lines = ["# Results on the bundled real models", "",
             "<!-- generated by scripts/results_report.py from docs/results/results.json: edit those, not this -->", "",
             "Every number below was produced by `bash scripts/reproduce.sh` on this project's 2-core CPU machine "
             "(one part alone: `bash scripts/reproduce.sh --parts saturation`), from the tools the README lists. "
             "Each figure names its n, its uncertainty where the paper gives one, the paper's own figure for its "
             "own (much larger) model, and the run it comes from (tool, source commit and model fingerprint are in "
             "`docs/results/results.json`). Where our figure differs from the paper's we say so; settings were "
             "fixed before the runs (`scripts/reproduce.py`) and not tuned afterwards.", ""]
    models = [m for m in MODELS if m in results["models"]]
    missing = {m: v for m, v in results.get("missing", {}).items() if v}
    if missing:
        lines += ["**Not run yet** (no `run.json`; nothing is filled in for them): "
                  + "; ".join(f"{MODELS[m]}: {', '.join(v)}" for m, v in missing.items()), ""]
    lines += _render_settings(results, models)
    lines += _render_recall(results, models)
    lines += _render_saturation(results, models)
    lines += _render_deltalp(results, models)
    lines += _render_embedding(results, models)
    lines += _render_paths(results)
    lines += _render_costs(results)
    return "\n".join(lines).rstrip() + "\n"


def _header(*columns: str) -> list[str]:
    """A Markdown table's header and separator lines."""
    return ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]


def _section(title: str, blurb: str, columns: tuple[str, ...], rows: list[str], paper: str) -> list[str]:
    """One ``###`` section: what is measured, the table, and the paper's own figure under it."""
    return [f"### {title}", "", blurb, "", *_header(*columns), *rows, "", paper, ""]


def _setting(results: dict, model: str, step: str, key: str):
    return ((results["sources"].get(model, {}).get(step) or {}).get("settings") or {}).get(key)


def _render_settings(results, models) -> list[str]:
    """What was run on each model, read from the runs' own records."""
    lines = ["## How the numbers were made", "",
             "`scripts/reproduce.py` fixes every setting (`--list` prints each step's command). Both models run "
             "in fp32 on the CPU with their document start token (`--bos auto`: SmolLM2's `<|endoftext|>`, Gemma's "
             "`<bos>`). Where a part was cut short to fit the 2-core machine, the cut is below and in each run's "
             "record; nothing was chosen after seeing a result.", ""]
    late = sorted(f"{MODELS.get(m, m)} {step}" for m, steps in results["sources"].items()
                  for step, source in steps.items() if not source.get("source_read_at_start", True))
    if late:
        lines += ["† The records of these runs were written before this project read the source commit when the "
                  "package is imported, so they name the commit checked out when the run *ended*: "
                  + ", ".join(late) + ". The code that ran is that commit or an earlier one of the same day; between "
                  "them only speed (a key/value cache in the known-facts filter, the lens read-out batched; same "
                  "results, tested) and reporting changed.", ""]
    for model in models:
        limit = _setting(results, model, "recall/knockout", "limit")
        items = _setting(results, model, "saturation/all", "max_items")
        patch = _setting(results, model, "recall/patching", "limit")
        parts = [f"recall: {'the first ' + str(limit) + ' known facts' if limit else 'every known fact'} "
                 f"(patching: the first {patch})" if patch else
                 f"recall: {'the first ' + str(limit) + ' known facts' if limit else 'every known fact'}",
                 f"saturation: {'the first ' + str(items) + ' articles' if items else 'the whole text'}"]
        lines.append(f"- {MODELS[model]}: " + "; ".join(parts) + ".")
    return lines + [""]


def _render_recall(results, models) -> list[str]:
    lines = ["## Factual recall (Geva et al. 2023)", "", f"Paper: {PAPERS['geva']}.", "",
             "Facts: the 1,209 prompts of `known_1000.json`, kept when the model's greedy continuation starts with "
             "the attribute (\"known\"). The knockout window is the paper's k = 9 of 48 layers scaled to depth "
             "(round(9 L / 48)); GPT-J's 28 layers give the paper's own k = 5.", ""]
    rows = []
    for model in models:
        recall = results["models"][model].get("recall", {})
        ko = recall.get("knockout")
        if ko:
            sets = ko["sets"]
            for name in ("subject", "non-subject", "last"):
                if name in sets:
                    s = sets[name]
                    rows.append(f"| {MODELS[model]} | knockout {name} → last (k = {ko['window']}) | "
                                f"{f(s['lowest_mean'])}% at layer {s['at_layer']} {ci(s['ci'])} | n = {ko['facts']} "
                                f"known of {ko['facts_total']} | {commit_of(results, model, ko['step'])} |")
    lines += _section("Attention knockout",
                      "Largest mean change of the attribute's probability when the last position cannot attend to a "
                      "set of positions in k consecutive layers (95% t-interval over facts).",
                      ("model", "knockout", "largest drop", "n", "source"), rows,
                      "Paper (GPT-2 XL, k = 9): blocking the non-subject (relation) positions hurts most in "
                      "early-to-middle layers, the subject positions in the upper-middle layers, last → last matters "
                      "little.")
    for model in models:
        lines.append(figure(results, f"results_{model}_knockout.png", f"{MODELS[model]} attention knockout"))
    rows = []
    for model in models:
        recall = results["models"][model].get("recall", {})
        for step in ("extraction", "extraction_final_norm"):
            e = recall.get(step)
            if not e:
                continue
            a, m = e["rates"].get("attention", {}), e["rates"].get("mlp", {})
            rows.append(f"| {MODELS[model]} | {'final norm' if e['final_norm'] else 'no norm (paper)'} | "
                        f"{f(a.get('pct'))}% {ci(a.get('ci', [None, None]))} | {f(m.get('pct'))}% "
                        f"{ci(m.get('ci', [None, None]))} | {f(e['attention_first_pct'])}% "
                        f"{ci(e['attention_first_ci'])} (of {e['with_any']}) | {e['n']} | "
                        f"{commit_of(results, model, e['step'])} |")
    lines += _section("Attribute extraction",
                      "Share of known facts where a sublayer's output, projected to the vocabulary at the last "
                      "position, ranks the attribute first at some layer (95% Wilson intervals). The paper projects "
                      "without the final norm; we report both.",
                      ("model", "projection", "MHSA extracts", "MLP extracts", "MHSA first", "n", "source"), rows,
                      "Paper (GPT-2 XL): about 68% of facts have an MHSA extraction event, about 17% an MLP one.")
    for model in models:
        lines.append(figure(results, f"results_{model}_extraction.png", f"{MODELS[model]} attribute extraction"))
    rows = []
    for model in models:
        recall = results["models"][model].get("recall", {})
        for step in ("attributes_rate", "attributes_rate_final_norm"):
            r = recall.get(step)
            if not r:
                continue
            for name in ("subject-last", "subject-first", "last", "after-subject", "first"):
                p = r["positions"].get(name)
                if p:
                    rows.append(f"| {MODELS[model]} | {'final norm' if 'final' in step else 'no norm (paper)'} | "
                                f"{name} | {f(p['highest_mean'])}% at layer {p['at_layer']} {ci(p['ci'])} | "
                                f"{p['n']} | {commit_of(results, model, r['step'])} |")
    lines += _section("Attributes rate",
                      "Share of the top-50 tokens of a position's hidden state (read through the unembedding) that "
                      "belong to the subject's reference paragraph's words, highest over layers (95% t-interval over "
                      "facts). Reference paragraphs: `huggingface_patch/data/reference_paragraphs.csv`, 62 subjects "
                      "written for this project (the paper used Wikipedia paragraphs).",
                      ("model", "projection", "position", "highest rate", "n", "source"), rows,
                      "Paper (GPT-2 XL): the last subject position reaches about 50% in the upper-intermediate "
                      "layers, far above every other position.")
    for model in models:
        lines.append(figure(results, f"results_{model}_attributes_rate_final_norm.png",
                            f"{MODELS[model]} attributes rate (final norm)"))
    rows = []
    for model in models:
        s = results["models"][model].get("recall", {}).get("sublayer")
        if not s:
            continue
        for name, k in s["kinds"].items():
            rows.append(f"| {MODELS[model]} | {name} | {f(k['lowest_mean'])}% from layer {k['at_start']} "
                        f"{ci(k['ci'])} | {f(k['early_mean'])}% | {f(s['baseline'])}% | {s['facts']} | "
                        f"{commit_of(results, model, s['step'])} |")
    lines += _section("Sublayer knockout",
                      "Attributes rate of the last subject position at the measure layer when a window of sublayers "
                      "starting at a given layer is knocked out (MLP output zeroed; attention replaced by uniform "
                      "weights or zeroed).",
                      ("model", "knocked out", "lowest rate", "mean over the first third", "none", "n", "source"),
                      rows, "Paper (GPT-2 XL, measured at layer 40): knocking out early MLP sublayers lowers the rate "
                      "much more than knocking out MHSA.")
    for model in models:
        lines.append(figure(results, f"results_{model}_sublayer.png", f"{MODELS[model]} sublayer knockout"))
    rows = []
    for model in models:
        p = results["models"][model].get("recall", {}).get("patching")
        if not p:
            continue
        for name, c in p["cuts"].items():
            rows.append(f"| {MODELS[model]} | {name} | {f(c['largest_cut_pct'])}% at source layer {c['at_source']} "
                        f"({f(c['unpatched'])}% → {f(c['patched'])}%) | {p['n']} | "
                        f"{commit_of(results, model, p['step'])} |")
    lines += _section("Patching early subject representations",
                      "Share of facts with an MHSA extraction event above layer l' when the subject positions' hidden "
                      "states from layer l' are patched in from a prompt about a different subject, relative to no "
                      "patching (a subset of the known facts: this intervention is the costliest).",
                      ("model", "patched positions", "largest relative cut", "n", "source"), rows,
                      "Paper (GPT-2 XL): patching in early subject representations cuts extraction by up to about "
                      "50%.")
    return lines


def _render_saturation(results, models) -> list[str]:
    lines = ["## Saturation of the top-k tokens (Lioubashevski et al.)", "", f"Paper: {PAPERS['lioubashevski']}.",
             "", "Text: the project's essays (`examples/essays.sentitems`, written for this project) followed by "
             "every known_1000 prompt completed with its attribute, one article each. k = 5; positions kept when "
             "the top-1 saturates by floor(0.85 L) (the paper's filter).", "",
             "| model | kept positions | strict Kendall tau | permutation p | task probe (balanced acc.) | chance | "
             "source |", "|---|---|---|---|---|---|---|"]
    for model in models:
        s = results["models"][model].get("saturation")
        if not s:
            continue
        k, p = s["kendall"], s["probe"]
        lines.append(f"| {MODELS[model]} | {s['kept']} of {s['positions']} | {f(k['tau'], 3)} over {k['positions']} "
                     f"(shuffled {f(k['shuffled_mean'], 3)} ± {f(k['shuffled_sd'], 3)}) | {k['p_text']} "
                     f"({k['permutations']} shuffles) | {f(p['balanced_accuracy'], 3)} ± {f(p['se'], 3)} over "
                     f"{p['examples']} (Gaussian control {f(p['gaussian_control'], 3)}) | {f(p['chance'], 2)} | "
                     f"{commit_of(results, model, s['step'])} |")
    lines += ["", "Paper: tau is positive with p < 0.001 on every model; an ICML reviewer reads the values as "
              "about 60% of rank pairs in order, i.e. tau ≈ 0.2. Chance for 5 tasks is 20%.", "",
              "Early exit (held-out positions): the probe exits at the first layer it predicts \"top-1 already "
              "fixed\"; the softmax-margin and cosine baselines are shown at their threshold closest to the "
              "probe's speed-up.", "", "| model | probe | margin | cosine | oracle (s_1) | n | source |",
              "|---|---|---|---|---|---|---|"]
    for model in models:
        s = results["models"][model].get("saturation")
        if not s or "probe" not in s["early_exit"]:
            continue
        e = s["early_exit"]
        cell = functools.partial(_exit_cell, e)
        lines.append(f"| {MODELS[model]} | {cell('probe')} | {cell('margin')} | {cell('cosine')} | {cell('oracle')} | "
                     f"{e['test_positions']} | {commit_of(results, model, s['step'])} |")
    lines += ["", "Paper (GPT-2 XL): the probe's early-exit accuracy is 40.0% against 35.9% and 37.5% for the "
              "baselines.", ""]
    for model in models:
        lines.append(figure(results, f"results_{model}_saturation_rank_correspondence.png",
                            f"{MODELS[model]} rank correspondence"))
    return lines


def _exit_cell(curves: dict, method: str) -> str:
    point = curves.get(method)
    return f"{100 * point['accuracy']:.1f}% at ×{point['speedup']:.2f}" if point else "n/a"


def _render_deltalp(results, models) -> list[str]:
    lines = ["## ΔLP: which context token matters most (Oh & Schuler 2023)", "", f"Paper: {PAPERS['oh']}.", "",
             "Text: the project's essays (`examples/essays.sentitems`; `essays2` = its first two, for the costlier "
             "model), window 50, exact (fp32) decomposition; the ablation comparison cuts each essay to 128 "
             "tokens. The argmax source excludes the start token, as in the paper.", "",
             "| model | targets | argmax is the previous token | within 5 tokens | mean distance | ΔLP vs real "
             "ablation | source |", "|---|---|---|---|---|---|---|"]
    for model in models:
        d = results["models"][model].get("deltalp", {})
        a, b = d.get("argmax"), d.get("ablation")
        if not a:
            continue
        agreement = (f"Spearman {f(b['spearman'], 3)}, Pearson {f(b['pearson'], 3)} over {b['n']} pairs"
                     if b else "not run")
        text = ((results["sources"][model].get(a["step"]) or {}).get("inputs") or {}).get("corpus") or {}
        name = os.path.splitext(text.get("file", "?"))[0] if isinstance(text, dict) else "?"
        lines.append(f"| {MODELS[model]} ({name}) | {a['targets']} | {f(a['previous_pct'])}% {ci(a['previous_ci'])} | "
                     f"{f(a['within5_pct'])}% | {f(a['mean_distance'], 2)} | {agreement} | "
                     f"{commit_of(results, model, a['step'])} |")
    lines += ["", "Paper: the most important context words are mostly collocational associates of the predicted "
              "word, then syntactic dependents and coreferents; repetitions of the same token matter. The paper "
              "gives no single previous-token share to set against ours; the real-ablation check is ours (ΔLP "
              "removes a token's contribution from the final state; real ablation removes the token from the "
              "input, so the two differ wherever a token also changes how the others are processed).", ""]
    if results.get("page_screenshot"):
        lines += ["The ΔLP page of the first essay (SmolLM2-135M), a target selected:", "",
                  "![ΔLP page](figures/deltalp_page.png)", ""]
    for model in models:
        lines.append(figure(results, f"results_{model}_ablation.png", f"{MODELS[model]} ΔLP vs ablation"))
    return lines


def _render_embedding(results, models) -> list[str]:
    lines = ["## Parameters read in embedding space (Dar et al. 2023)", "", f"Paper: {PAPERS['dar']}.", "",
             "Chosen by a rule stated before looking (`python -m analysis.embedding_space select`): at layers "
             "L/4, L/2, 3L/4 and L−1, the FF neuron most often among the top-5 activated over the essays, and the "
             "heads with the largest ‖W_VO‖ and ‖W_QK‖. Tokens are ASCII-only; ▁/Ġ shown as a space.", ""]
    for model in models:
        e = results["models"][model].get("embedding")
        if not e or "chosen" not in e:
            continue
        lines += [f"**{MODELS[model]}**", "", "| layer | FF neuron: value · E (top 8) | VO head: top pairs | "
                  "QK head: top pairs |", "|---|---|---|---|"]
        for c in e["chosen"]:
            value = ", ".join(f"`{t}`" for t in c.get("ff", {}).get("value", [])) or "n/a"
            vo = "; ".join(f"`{a}`→`{b}`" for a, b in c.get("vo", [])) or "n/a"
            qk = "; ".join(f"`{a}`→`{b}`" for a, b in c.get("qk", [])) or "n/a"
            lines.append(f"| {c['layer']} (neuron {c['neuron']}, VO head {c['vo_head']}, QK head {c['qk_head']}) | "
                         f"{value} | {vo} | {qk} |".replace("||", "|"))
        lines.append("")
    lines += ["Parameters vs hidden states: recall of the hidden state's top-50 tokens among the top tokens of "
              "the 5 most activated neurons' keys / values, against the same neurons read at a random other "
              "position.", "", "| model | part | mean recall | random baseline | layers above baseline | positions "
              "| source |", "|---|---|---|---|---|---|---|"]
    for model in models:
        a = results["models"][model].get("embedding", {}).get("align")
        if not a:
            continue
        for part, p in a["parts"].items():
            lines.append(f"| {MODELS[model]} | {part} | {f(p['mean_recall'], 3)} | {f(p['mean_baseline'], 3)} | "
                         f"{p['layers_above']} of {p['layers']} | {a['positions']} | "
                         f"{commit_of(results, model, a['step'])} |")
    lines += ["", "Paper (GPT-2 medium): aligned recall clearly above the random baseline, more so in the upper "
              "layers (bar plots; no numbers given).", ""]
    for model in models:
        lines.append(figure(results, f"results_{model}_align.png", f"{MODELS[model]} alignment"))
    return lines


def _render_paths(results) -> list[str]:
    p = results.get("path_length")
    if not p:
        return []
    lines = ["## Path length of the residual stream vs the next-token logit", "",
             f"Definition: {p['definition']}. Text: the same as the saturation analysis, cut to 256 tokens per "
             "document.", "", "| model | layers | tokens | Pearson / Spearman with next logit | with next log-prob | "
             "mean path length per layer | source |", "|---|---|---|---|---|---|---|"]
    for row in p["models"]:
        lines.append(f"| {row['model']} | {row['num_layers']} | {row['tokens_with_next']} | "
                     f"{f(row['pearson_next_logit'], 3)} / {f(row['spearman_next_logit'], 3)} | "
                     f"{f(row['pearson_next_logprob'], 3)} / {f(row['spearman_next_logprob'], 3)} | "
                     f"{f(row['mean_path_length_per_layer'], 2)} | {commit_of(results, 'both', 'path_length')} |")
    lines += ["", figure(results, "results_path_length_vs_logit.png", "path length vs next logit")]
    return lines


def _render_costs(results) -> list[str]:
    minutes = results.get("minutes") or {}
    if not minutes:
        return []
    lines = ["## What it cost", "", "Wall-clock minutes per part on the 2-core CPU machine (shared, so noisy):", "",
             "| part | minutes |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in sorted(minutes.items())]
    lines += [f"| total | {round(sum(minutes.values()), 1)} |", ""]
    return lines


def render_readme(results: dict) -> str:
    """The README's short results block."""
    lines = [START, "", "Headline figures (all of them, with n, intervals, the papers' figures and provenance: "
             "[docs/results.md](docs/results.md); regenerate with `bash scripts/reproduce.sh`):", "",
             "| | " + " | ".join(MODELS[m] for m in MODELS if m in results["models"]) + " |",
             "|---" * (1 + len(results["models"])) + "|"]
    models = [m for m in MODELS if m in results["models"]]

    def row(label, fn):
        cells = []
        for m in models:
            try:
                cells.append(fn(results["models"][m]))
            except (KeyError, TypeError):
                cells.append("not run")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    row("MHSA / MLP extraction (paper, GPT-2 XL: ~68% / ~17%)",
        lambda r: f"{f(r['recall']['extraction']['rates']['attention']['pct'])}% / "
                  f"{f(r['recall']['extraction']['rates']['mlp']['pct'])}%")
    row("strict Kendall tau (paper: ≈ 0.2, p < 0.001)",
        lambda r: f"{f(r['saturation']['kendall']['tau'], 3)} ({r['saturation']['kendall']['p_text']}, "
                  f"n = {r['saturation']['kendall']['positions']})")
    row("ΔLP argmax = previous token",
        lambda r: f"{f(r['deltalp']['argmax']['previous_pct'])}% of {r['deltalp']['argmax']['targets']}")
    row("ΔLP vs real ablation (Spearman)",
        lambda r: f"{f(r['deltalp']['ablation']['spearman'], 3)} (n = {r['deltalp']['ablation']['n']})")
    lines += ["", END]
    return "\n".join(lines)


def replace_block(text: str, block: str) -> str:
    start, end = text.index(START), text.index(END) + len(END)
    return text[:start] + block + text[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default=os.path.join(REPO, "results", "reproduce"))
    parser.add_argument("--check", action="store_true", help="only check docs/results.md and the README block")
    args = parser.parse_args(argv)
    results_path = os.path.join(RESULTS, "results.json")
    if args.check:
        results = read_json(results_path)
        with open(REPORT, encoding="utf-8") as handle:
            stale = handle.read() != render(results)
        with open(README, encoding="utf-8") as handle:
            readme = handle.read()
        stale_readme = replace_block(readme, render_readme(results)) != readme
        for name, bad in (("docs/results.md", stale), ("README.md results block", stale_readme)):
            if bad:
                print(f"{name} is not rendered from docs/results/results.json: run scripts/results_report.py")
        return int(stale or stale_readme)
    if not os.path.isdir(args.work):
        print(f"error: {args.work} holds no runs: run bash scripts/reproduce.sh first", file=sys.stderr)
        return 2
    results = collect(os.path.abspath(args.work))
    write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", results_path)
    write_text(render(results), REPORT)
    with open(README, encoding="utf-8") as handle:
        readme = handle.read()
    write_text(replace_block(readme, render_readme(results)), README)
    print(f"wrote {os.path.relpath(REPORT, REPO)}, {os.path.relpath(results_path, REPO)}, "
          f"{len(results['tables'])} tables and {len(results['figures'])} figures")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
