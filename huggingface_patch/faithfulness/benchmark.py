"""The faithfulness benchmark: every method on the same items, every metric with its interval, the cost.

:func:`run_benchmark` scores the items with each method (timed), then computes the metrics of
:mod:`.metrics`: agreement with leave-one-out and the deletion curves and LDS on the corpus items, the mean
reciprocal rank on the known-answer tasks. :class:`FaithfulnessResult` holds the per-item table, the
summary with intervals (cluster bootstrap by the item's cluster: the document, the IOI template, the subject
noun), the paired comparisons of ΔLP with every other method and the LRP methods' conservation (their
relevances' sum against the logit they explain), and writes itself (CSV, JSON, figure).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..stats import bootstrap_mean, holm, paired_comparison
from .items import Item
from .methods import attribute_items, check_finite, values_of
from .metrics import FRACTIONS, LDS_SUBSETS, agreement, deletion_curves, lds, lds_subsets, reciprocal_rank, subset_drops

#: the methods the benchmark compares (ours first), in the order of its tables
METHODS = ("deltalp", "dla", "leave-one-out", "replace-neutral", "input-x-gradient", "integrated-gradients",
           "attnlrp", "cp-lrp", "attention-last", "attention-rollout", "random")
#: which metrics apply to which task
CORPUS_METRICS = ("spearman_loo", "top1_loo", "area_between", "lds")
TASK_METRICS = ("mrr",)


@dataclass
class FaithfulnessResult:
    """``rows``: one per (item, method) with every metric that applies; ``scores``: one per (item, method,
    source) with the score; ``curves``: per method the mean MoRF and
    LeRF curves; ``summary``: per method and metric the mean with its interval; ``comparisons``: ΔLP minus each
    other method, paired by item; ``cost``: per method seconds and forward-pass equivalents per item;
    ``conservation``: :func:`conservation` (empty without an LRP method, and in runs made before it)."""

    rows: list[dict]
    scores: list[dict]
    curves: dict
    summary: dict
    comparisons: dict
    cost: dict
    settings: dict = field(default_factory=dict)
    conservation: dict = field(default_factory=dict)

    def write(self, folder, model_name: str, plots: bool = True) -> None:
        """``faithfulness.csv`` (per item), ``faithfulness_summary.json``, ``faithfulness_curves.csv`` and
        ``faithfulness.png``, ``faithfulness_scores.csv`` (every score) into a
        :class:`~huggingface_patch.files.ResultFolder`."""
        from ..files import save_figure, write_csv, write_json

        write_csv(self.rows, folder.path("faithfulness.csv"),
                  ["task", "item", "cluster", "method", *CORPUS_METRICS, *TASK_METRICS, "relevance_sum", "explained",
                   "text", "answer", "foil"])
        write_csv(self.scores, folder.path("faithfulness_scores.csv"),
                  ["task", "item", "method", "position", "token", "score"])
        if self.curves:
            curve_rows = [{"method": m, "fraction": f, "morf": c["morf"][i], "lerf": c["lerf"][i]}
                          for m, c in self.curves.items() for i, f in enumerate(FRACTIONS)]
            write_csv(curve_rows, folder.path("faithfulness_curves.csv"), ["method", "fraction", "morf", "lerf"])
        write_json(dict(self.settings, model=model_name, summary=self.summary, comparisons=self.comparisons,
                        cost=self.cost, conservation=self.conservation), folder.path("faithfulness_summary.json"))
        if plots:
            save_figure(plot_summary(self, model_name), folder.path("faithfulness.png"))

    @classmethod
    def from_folder(cls, folder: str) -> "FaithfulnessResult":
        """The result :meth:`write` put into ``folder`` (checked against its ``run.json``)."""
        from ..stored import StoredFolder

        stored = StoredFolder(folder)
        written = stored.json("faithfulness_summary.json")
        curves: dict = {}
        if stored.has("faithfulness_curves.csv"):
            for row in stored.table("faithfulness_curves.csv"):
                curve = curves.setdefault(row["method"], {"morf": [], "lerf": []})
                curve["morf"].append(row["morf"])
                curve["lerf"].append(row["lerf"])
        settings = {k: v for k, v in written.items()
                    if k not in ("model", "summary", "comparisons", "cost", "conservation")}
        return cls(stored.table("faithfulness.csv"), stored.table("faithfulness_scores.csv"), curves,
                   written["summary"], written["comparisons"], written["cost"], settings,
                   written.get("conservation") or {})


def _forward_seconds(model, items: list[Item]) -> float:
    """Median seconds of one forward pass of an item (the cost unit)."""
    times = []
    for item in items[:10]:
        start = time.perf_counter()
        values_of(model, [item.ids], item)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def score_all(model, items: list[Item], methods, progress=None, details: dict | None = None,
              **options) -> tuple[dict, dict]:
    """``(scores {method: [per item]}, seconds {method: total})``; a method run in its own process reports
    its own compute time (``timing``), so that no method's cost includes loading a model. ``details``, when
    given, collects per method what a method reports beside its scores (LRP: its conservation, lists per
    item)."""
    scores, seconds = {}, {}
    for method in methods:
        timing, extra = {}, {}
        start = time.perf_counter()
        scores[method] = attribute_items(model, items, method, timing=timing, details=extra, **options)
        if details is not None and extra:
            details[method] = extra
        seconds[method] = timing.get("seconds", time.perf_counter() - start)
        check_finite(scores[method], method)
        if progress is not None:
            progress.update(1)
    return scores, seconds


#: the metric groups ``--metrics`` chooses from
METRIC_GROUPS = ("agreement", "deletion", "lds", "known-answer")


def run_benchmark(model, corpus: list[Item], tasks: list[Item], methods=METHODS, metrics=METRIC_GROUPS, *,
                  seed: int = 0, progress=True, **options) -> FaithfulnessResult:
    """Every method on the items; ``corpus`` items get the ``agreement`` (with leave-one-out), ``deletion``
    (MoRF/LeRF curves) and ``lds`` metrics, ``tasks`` items (known answers) the reciprocal rank. ``options``
    go to the methods (``tokenizer``, ``model_path``, ``model_kwargs``)."""
    from tqdm.auto import tqdm

    methods, metrics = list(methods), set(metrics)
    tasks = tasks if "known-answer" in metrics else []
    corpus = corpus if metrics & {"agreement", "deletion", "lds"} else []
    everything = corpus + tasks
    if not everything:
        raise InputError("no items to score: give corpus items or known-answer tasks")
    with tqdm(total=len(methods), desc="attribution methods", disable=not progress) as bar:
        details: dict = {}
        scores, seconds = score_all(model, everything, methods, progress=bar, details=details, seed=seed, **options)
    forward = _forward_seconds(model, everything)
    loo = None
    if "agreement" in metrics and corpus:
        loo = scores["leave-one-out"] if "leave-one-out" in scores else \
            score_all(model, corpus, ["leave-one-out"])[0]["leave-one-out"]
    rows, curves_sum = [], {m: {"morf": np.zeros(len(FRACTIONS)), "lerf": np.zeros(len(FRACTIONS))} for m in methods}
    for index, item in enumerate(tqdm(corpus, desc="deletion curves and LDS", disable=not progress)):
        per_method = {m: scores[m][index] for m in methods}
        row = {m: _row(item, index, m) for m in methods}
        if loo is not None:
            for m in methods:
                row[m].update(agreement(per_method[m], loo[index]))
        if "deletion" in metrics:
            curves = deletion_curves(model, item, per_method)
            for m in methods:
                curves_sum[m]["morf"] += curves[m]["morf"]
                curves_sum[m]["lerf"] += curves[m]["lerf"]
                row[m]["area_between"] = curves[m]["area_between"]
        if "lds" in metrics:
            subsets = lds_subsets(item, seed + index)
            drops = subset_drops(model, item, subsets)
            for m in methods:
                row[m]["lds"] = lds(per_method[m], subsets, drops)
        rows.extend(row.values())
    for offset, item in enumerate(tasks):
        index = len(corpus) + offset
        for m in methods:
            rows.append(dict(_row(item, index, m), mrr=reciprocal_rank(scores[m][index], item)))
    _attach_details(rows, details)
    curves = {} if "deletion" not in metrics or not corpus else \
        {m: {k: (v / len(corpus)).tolist() for k, v in c.items()} for m, c in curves_sum.items()}
    summary, comparisons = _summarize(rows, methods, seed)
    cost = {m: {"seconds": round(seconds[m], 2), "seconds_per_item": seconds[m] / len(everything),
                "forward_pass_equivalents_per_item": seconds[m] / len(everything) / forward} for m in methods}
    settings = {"methods": methods, "metrics": sorted(metrics), "corpus_items": len(corpus),
                "task_items": {t: sum(i.task == t for i in tasks) for t in sorted({i.task for i in tasks})},
                "fractions": list(FRACTIONS), "lds_subsets": LDS_SUBSETS, "seed": seed, "forward_seconds": forward,
                "quantity": "log p(answer), minus log p(foil) for a contrast (natural log); LRP and DLA explain the "
                            "logit (difference)",
                "intervals": "95 % cluster bootstrap of the mean over items (clusters: document, IOI template, "
                             "subject noun); comparisons paired by item, sign-flip test on cluster sums"}
    return FaithfulnessResult(rows, _score_rows(everything, scores), curves, summary, comparisons, cost, settings,
                              conservation(rows))


#: a relevance sum within this share of the quantity it explains counts as conserved
CONSERVED_WITHIN = 0.05


def conservation(rows: list[dict]) -> dict:
    """Per method that reports it (LRP) and task: how its relevances, every input position's summed, compare
    with the logit (difference) they explain; LRP's rules are meant to keep the two equal. ``ratio`` is sum /
    explained per item: its median and quartiles, and the share of items within :data:`CONSERVED_WITHIN` of 1."""
    out: dict = {}
    for row in rows:
        if "relevance_sum" not in row:
            continue
        out.setdefault(row["method"], {}).setdefault(row["task"], []).append(row["relevance_sum"] / row["explained"]
                                                                             if row["explained"] else math.nan)
    summary: dict = {}
    for method, tasks in out.items():
        summary[method] = {}
        for task, ratios in tasks.items():
            ratios = np.asarray(ratios, float)
            finite = ratios[np.isfinite(ratios)]
            quartiles = np.percentile(finite, [25, 50, 75]) if finite.size else [math.nan] * 3
            summary[method][task] = {"items": int(ratios.size), "median_ratio": float(quartiles[1]),
                                     "quartiles": [float(quartiles[0]), float(quartiles[2])],
                                     "share_conserved": float(np.mean(np.abs(finite - 1) <= CONSERVED_WITHIN))
                                     if finite.size else math.nan, "within": CONSERVED_WITHIN}
    return summary


def _attach_details(rows: list[dict], details: dict) -> None:
    """Put what a method reported beside its scores (LRP's relevance sum and the logit it explains) on its
    rows."""
    for row in rows:
        extra = details.get(row["method"])
        if extra:
            row["relevance_sum"] = extra["relevance_sum"][row["item"]]
            row["explained"] = extra["explained"][row["item"]]


def _row(item: Item, index: int, method: str) -> dict:
    return {"task": item.task, "item": index, "cluster": item.cluster, "method": method, "text": item.text,
            "answer": item.answer_text, "foil": item.foil_text}


def _score_rows(items: list[Item], scores: dict) -> list[dict]:
    return [{"task": item.task, "item": index, "method": method, "position": position,
             "token": item.tokens[position] if item.tokens else "", "score": float(value)}
            for method, per_item in scores.items() for index, item in enumerate(items)
            for position, value in zip(item.sources, per_item[index])]


def _metric_values(rows, method, metric, task=None):
    chosen = [r for r in rows if r["method"] == method and metric in r and (task is None or r["task"] == task)]
    return [r[metric] for r in chosen], [r["cluster"] for r in chosen], [r["item"] for r in chosen]


#: what the items of each task are clustered by (the unit the intervals resample)
CLUSTER_BY = {"corpus": "document", "ioi": "template", "agreement": "subject noun", "window": "sequence"}


def _metric_keys(rows: list[dict]) -> list[tuple[str, str | None]]:
    """``(metric, task)`` pairs present in ``rows``: the corpus metrics, then the reciprocal rank per task."""
    keys = [(metric, None) for metric in CORPUS_METRICS if any(metric in r for r in rows)]
    return keys + [("mrr", task) for task in sorted({r["task"] for r in rows if "mrr" in r})]


def _summarize(rows: list[dict], methods: list[str], seed: int) -> tuple[dict, dict]:
    """Per method and metric the mean with its cluster-bootstrap interval; ΔLP minus every other method paired
    by item, with Holm-adjusted p-values over the whole family of comparisons (``p_holm``)."""
    summary, comparisons, family = {}, {}, []
    keys = _metric_keys(rows)

    def task_of(metric, task):
        return task or next(r["task"] for r in rows if metric in r)

    for method in methods:
        summary[method] = {}
        for metric, task in keys:
            values, clusters, _ = _metric_values(rows, method, metric, task)
            name = metric if task is None else f"{metric}_{task}"
            summary[method][name] = bootstrap_mean(values, clusters, cluster_by=CLUSTER_BY.get(task_of(metric, task)),
                                                   seed=seed).to_dict()
    if "deltalp" in methods:
        for other in methods:
            if other == "deltalp":
                continue
            comparisons[other] = {}
            for metric, task in keys:
                ours, clusters, _ = _metric_values(rows, "deltalp", metric, task)
                theirs, _, _ = _metric_values(rows, other, metric, task)
                name = metric if task is None else f"{metric}_{task}"
                comparisons[other][name] = paired_comparison(
                    ours, theirs, clusters, cluster_by=CLUSTER_BY.get(task_of(metric, task)), seed=seed).to_dict()
                family.append(comparisons[other][name])
    for entry, adjusted in zip(family, holm([c["p_value"] for c in family])):
        entry["p_holm"] = adjusted
    return summary, comparisons


def plot_summary(result: FaithfulnessResult, model_name: str):
    """Left: mean MoRF (solid) and LeRF (dashed) curves per method; right: each metric's mean with its interval."""
    from ..files import pyplot

    plt = pyplot()
    metrics = list(next(iter(result.summary.values())))
    methods = list(result.summary)
    panels = len(metrics) + bool(result.curves)
    columns = min(panels, 3)
    rows = -(-panels // columns)
    fig, grid = plt.subplots(rows, columns, figsize=(4.6 * columns, 4.2 * rows), squeeze=False)
    axes = list(grid.ravel())
    for spare in axes[panels:]:
        spare.set_visible(False)
    colours = plt.cm.tab20(np.linspace(0, 1, max(2, len(methods))))
    if result.curves:
        curve_axis = axes.pop(0)
        for colour, (method, curves) in zip(colours, result.curves.items()):
            curve_axis.plot(FRACTIONS, curves["morf"], color=colour, label=method)
            curve_axis.plot(FRACTIONS, curves["lerf"], color=colour, ls="--")
        curve_axis.set_xlabel("share of the sources removed")
        curve_axis.set_ylabel("change of the quantity (nats)")
        curve_axis.set_title("removal curves: MoRF solid, LeRF dashed", fontsize=9)
        curve_axis.legend(fontsize=6)
    for ax, metric in zip(axes, metrics):
        est = [result.summary[m][metric]["estimate"] for m in methods]
        low = [result.summary[m][metric]["low"] for m in methods]
        high = [result.summary[m][metric]["high"] for m in methods]
        y = np.arange(len(methods))
        err = [np.nan_to_num(np.array(est) - np.array(low)), np.nan_to_num(np.array(high) - np.array(est))]
        ax.barh(y, np.nan_to_num(est), xerr=err, color=colours[: len(methods)], alpha=0.8)
        ax.set_yticks(y, methods, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(metric, fontsize=9)
        ax.axvline(0, color="k", lw=0.5)
    fig.suptitle(f"{model_name}: faithfulness of token attributions (95 % cluster-bootstrap intervals)", fontsize=10)
    fig.tight_layout()
    return fig
