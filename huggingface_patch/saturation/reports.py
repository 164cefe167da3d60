"""The saturation subcommands as library functions: each writes its tables and figure into a
:class:`~huggingface_patch.files.ResultFolder` and returns a one-line summary (``analysis.saturation``).

``settings`` is a :class:`~.settings.SaturationSettings` (the CLI builds it from its options)."""

from __future__ import annotations

import logging
import math
import os

import numpy as np

from ..errors import InputError
from ..files import save_figure, write_csv, write_json
from .settings import SaturationSettings

log = logging.getLogger(__name__)


def _meta(settings, backend, data) -> dict:
    return {"model": settings.model, "modality": backend.kind, "num_layers": data.num_layers, "k": data.k,
            "positions": data.size, "kept_positions": int(data.kept.sum())}


def cmd_layers(settings: SaturationSettings, backend, data, folder) -> str:
    """Write the saturation layers of every position, their summary and distribution."""
    from .layers import summarize_layers
    from .plots import plot_saturation_layers

    rows = []
    kept = data.kept
    for n in range(data.size):
        row = {"item": backend_label(data, n), "document": int(data.document[n]), "position": int(data.position[n]),
               "token_index": int(data.token_index[n]), "target": int(data.target[n]), "kept": bool(kept[n])}
        for i in range(data.k):
            row[f"t{i + 1}"] = int(data.top[n, i])
        for i in range(data.k):
            row[f"s{i + 1}"] = int(data.saturation[n, i])
        row["top1_text"] = backend.decode(int(data.top[n, 0]))
        rows.append(row)
    write_csv(rows, folder.path("saturation_layers.csv"))
    summary = {**_meta(settings, backend, data), **summarize_layers(data)}
    write_json(summary, folder.path("saturation_layers.json"))
    save_figure(plot_saturation_layers(data.saturation[kept], data.num_layers,
                                       f"Saturation layers ({os.path.basename(str(settings.model))})"),
                folder.path("saturation_layers.png"))
    return (f"{summary['kept_positions']} of {summary['positions']} positions kept; mean s_i per rank: "
            + ", ".join(f"{r['mean_saturation_layer']:.2f}" for r in summary["ranks"]))


def backend_label(data, n: int) -> str:
    """The name of position ``n``'s input (document or file)."""
    return data.items[int(data.item[n])].label


def cmd_order(settings: SaturationSettings, backend, data, folder) -> str:
    """Write both Kendall tau tests (the paper's and the selection-aware one), the per-position taus and the
    rank-correspondence plot."""
    return write_order(order_inputs(data), settings, folder, _meta(settings, backend, data),
                       os.path.basename(str(settings.model)), [backend_label(data, n) for n in range(data.size)])


def order_inputs(data) -> dict:
    """What the ordering analysis reads from :class:`~.layers.SaturationData`."""
    return {"saturation": data.saturation, "num_layers": data.num_layers, "position": data.position,
            "document": data.document, "filter_limit": math.floor(data.filter_fraction * data.num_layers)}


def write_order(inputs: dict, settings: SaturationSettings, folder, meta: dict, name: str, labels: list[str]) -> str:
    """Run :func:`~.ordering.order_analysis` on ``inputs`` (see :func:`order_inputs`) and write
    ``saturation_order.json``, ``saturation_order_positions.csv`` and the rank-correspondence figure."""
    from .ordering import order_analysis, position_taus
    from .plots import plot_rank_correspondence

    sat, L, limit = inputs["saturation"], inputs["num_layers"], inputs["filter_limit"]
    result = order_analysis(sat, L, limit, n_permutations=settings.permutations, seed=settings.seed,
                            min_ranks=settings.min_ranks, documents=inputs["document"])
    kept = np.flatnonzero(sat[:, 0] <= limit)
    taus, c = position_taus(sat[kept], L, settings.min_ranks)
    rows = [{"item": labels[n], "position": int(inputs["position"][n]), "c": int(c[j]),
             "tau": "" if math.isnan(taus[j]) else float(taus[j]),
             **{f"s{i + 1}": int(sat[n, i]) for i in range(sat.shape[1])}} for j, n in enumerate(kept)]
    write_csv(rows, folder.path("saturation_order_positions.csv"),
              ["item", "position", "c", "tau"] + [f"s{i + 1}" for i in range(sat.shape[1])])
    write_json({**meta, **result}, folder.path("saturation_order.json"))
    correspondence = result["rank_correspondence"]
    save_figure(plot_rank_correspondence(correspondence, f"Rank correspondence: {name} "
                                         f"(n = {correspondence['positions']})"),
                folder.path("saturation_rank_correspondence.png"))
    paper, aware = result["kendall"]["paper"], result["kendall"]["selection_aware"]
    return (f"strict Kendall tau = {aware['tau']:.4f} over {aware['positions']} positions; selection-aware "
            f"permutation test ({aware['permutations']} shuffles): {aware['p_text']} (null mean "
            f"{aware['null_mean']:.4f}); the paper's test, biased by the filter: {paper['p_text']}")


def cmd_probe(settings: SaturationSettings, backend, data, folder) -> str:
    """Write the task-probing results (grouped folds, the paper's control, the permuted-label null) and plot."""
    from .plots import plot_probe
    from .probe import probe_tasks

    result = probe_tasks(data, first_layer=settings.first_layer, folds=settings.folds,
                         min_per_class=settings.min_per_class, seed=settings.seed, groups=settings.probe_groups,
                         permutations=settings.probe_permutations)
    write_json({**_meta(settings, backend, data), **result}, folder.path("saturation_probe.json"))
    save_figure(plot_probe(result), folder.path("saturation_probe.png"))
    probe, null = result["probe"], result["permuted_labels"]
    return (f"task probe: balanced accuracy {probe['balanced_accuracy']:.3f} ± {probe['balanced_accuracy_se']:.3f} "
            f"(folds grouped by {result['folds_grouped_by']}; chance {result['chance']:.2f}; permuted labels "
            f"{null['balanced_accuracy_mean']:.3f}, p = {null['p_value']:.3g}; the paper's Gaussian control "
            f"{result['class_scalar_gaussian_control']['balanced_accuracy']:.3f})")


def cmd_intervene(settings: SaturationSettings, backend, data, folder) -> str:
    """Write the residual-implant trials, their summary and plot."""
    from .intervene import find_pairs, run_interventions
    from .plots import plot_intervention

    defaults = backend.pair_defaults
    criteria = {name: defaults[name] if getattr(settings, name) is None else getattr(settings, name)
                for name in ("max_distance", "min_gap", "min_saturation")}
    pairs = find_pairs(data, within_item=backend.pairs_within_item, **criteria)
    if not pairs:
        log.warning("no position pairs meet the criteria %s", criteria)
    trials, summary = run_interventions(backend, data, pairs, window=settings.window, max_pairs=settings.max_pairs,
                                        seed=settings.seed, progress=settings.progress)
    for trial in trials:
        trial["donor_item"] = backend_label(data, trial["donor"])
        trial["donor_position"] = int(data.position[trial["donor"]])
        trial["recipient_position"] = int(data.position[trial["recipient"]])
    write_csv(trials, folder.path("saturation_intervene.csv"), list(trials[0]) if trials else ["donor"])
    write_json({**_meta(settings, backend, data), "criteria": criteria, "candidate_pairs": len(pairs), **summary},
               folder.path("saturation_intervene.json"))
    save_figure(plot_intervention(summary), folder.path("saturation_intervene.png"))
    at_zero = summary["by_offset"].get(0, {}).get("success_rate", float("nan"))
    return f"{summary['pairs']} pairs, {summary['trials']} trials; success rate at offset 0: {at_zero:.3f}"


def cmd_early_exit(settings: SaturationSettings, backend, data, folder) -> str:
    """Write the early-exit curves of every rule and their plot."""
    from .early_exit import early_exit
    from .plots import plot_early_exit

    result = early_exit(data, first_layer=settings.first_layer, test_fraction=settings.test_fraction,
                        min_per_class=settings.min_per_class, seed=settings.seed)
    rows = [{"method": method, **point} for method, points in result["curves"].items() for point in points]
    write_csv(rows, folder.path("saturation_early_exit.csv"))
    write_json({**_meta(settings, backend, data), **result}, folder.path("saturation_early_exit.json"))
    save_figure(plot_early_exit(result), folder.path("saturation_early_exit.png"))
    for method in ("probe", "oracle", "full"):
        if method in result["curves"]:
            point = result["curves"][method][0]
            return f"{method}: accuracy {point['accuracy']:.3f}, speed-up {point['speedup']:.2f}"


def cmd_lm(settings: SaturationSettings, backend, data, folder) -> str:
    """Write the rank-2 accuracy comparison and its plot."""
    from .lm import rank2_accuracy
    from .plots import plot_lm

    if data.k < 2:
        raise InputError("the lm analysis needs k of 2 or more")
    result = rank2_accuracy(data, settings.late_margin)
    write_json({**_meta(settings, backend, data), **result}, folder.path("saturation_lm.json"))
    save_figure(plot_lm(result), folder.path("saturation_lm.png"))
    late, early = result["late"], result["early"]
    return (f"rank-2 accuracy (top-1 wrong): late {late['rank2_accuracy']:.3f} (n={late['positions']}), "
            f"early {early['rank2_accuracy']:.3f} (n={early['positions']}); z = {result['z']:.3f}, "
            f"p = {result['p_value']:.3g}")



SUBCOMMANDS = {"layers": cmd_layers, "order": cmd_order, "probe": cmd_probe, "intervene": cmd_intervene,
               "early-exit": cmd_early_exit, "lm": cmd_lm}
