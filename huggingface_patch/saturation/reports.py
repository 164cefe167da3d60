"""The saturation subcommands as library functions: each computes one part of the analysis from the collected
:class:`~.layers.SaturationData` and returns it as a :class:`~.result.SaturationPart` (its table, summary,
figure and one-line report), which writes itself; :func:`saturation_analysis` runs several into one
:class:`~.result.SaturationResult` (``analysis.saturation``).

``settings`` is a :class:`~.settings.SaturationSettings` (the CLI builds it from its options)."""

from __future__ import annotations

import logging
import math
import os

import numpy as np

from ..errors import InputError
from .result import SaturationPart, SaturationResult
from .settings import SaturationSettings

log = logging.getLogger(__name__)


def _meta(settings, backend, data) -> dict:
    return {"model": settings.model, "modality": backend.kind, "num_layers": data.num_layers, "k": data.k,
            "positions": data.size, "kept_positions": int(data.kept.sum())}


def part_layers(settings: SaturationSettings, backend, data) -> SaturationPart:
    """The saturation layers of every position, their summary and distribution."""
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
    summary = {**_meta(settings, backend, data), **summarize_layers(data)}
    title = f"Saturation layers ({os.path.basename(str(settings.model))})"
    line = (f"{summary['kept_positions']} of {summary['positions']} positions kept; mean s_i per rank: "
            + ", ".join(f"{r['mean_saturation_layer']:.2f}" for r in summary["ranks"]))
    return SaturationPart("layers", summary, rows, line=line,
                          figure=lambda: plot_saturation_layers(data.saturation[kept], data.num_layers, title))


def backend_label(data, n: int) -> str:
    """The name of position ``n``'s input (document or file)."""
    return data.items[int(data.item[n])].label


def part_order(settings: SaturationSettings, backend, data) -> SaturationPart:
    """Both Kendall tau tests (the paper's and the selection-aware one), the per-position taus and the
    rank-correspondence plot."""
    return order_part(order_inputs(data), settings, _meta(settings, backend, data),
                      os.path.basename(str(settings.model)), [backend_label(data, n) for n in range(data.size)])


def order_inputs(data) -> dict:
    """What the ordering analysis reads from :class:`~.layers.SaturationData`."""
    return {"saturation": data.saturation, "num_layers": data.num_layers, "position": data.position,
            "document": data.document, "filter_limit": math.floor(data.filter_fraction * data.num_layers)}


def order_part(inputs: dict, settings: SaturationSettings, meta: dict, name: str, labels: list[str]) -> SaturationPart:
    """:func:`~.ordering.order_analysis` on ``inputs`` (see :func:`order_inputs`): ``saturation_order.json``,
    ``saturation_order_positions.csv`` and the rank-correspondence figure."""
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
    correspondence = result["rank_correspondence"]
    title = f"Rank correspondence: {name} (n = {correspondence['positions']})"
    paper, aware = result["kendall"]["paper"], result["kendall"]["selection_aware"]
    line = (f"strict Kendall tau = {aware['tau']:.4f} over {aware['positions']} positions; selection-aware "
            f"permutation test ({aware['permutations']} shuffles): {aware['p_text']} (null mean "
            f"{aware['null_mean']:.4f}); the paper's test, biased by the filter: {paper['p_text']}")
    return SaturationPart("order", {**meta, **result}, rows,
                          ["item", "position", "c", "tau"] + [f"s{i + 1}" for i in range(sat.shape[1])],
                          figure=lambda: plot_rank_correspondence(correspondence, title), line=line)


def part_probe(settings: SaturationSettings, backend, data) -> SaturationPart:
    """The task-probing results (grouped folds, the paper's control, the permuted-label null) and plot."""
    from .plots import plot_probe
    from .probe import probe_tasks

    result = probe_tasks(data, first_layer=settings.first_layer, folds=settings.folds,
                         min_per_class=settings.min_per_class, seed=settings.seed, groups=settings.probe_groups,
                         permutations=settings.probe_permutations)
    probe, null = result["probe"], result["permuted_labels"]
    line = (f"task probe: balanced accuracy {probe['balanced_accuracy']:.3f} ± {probe['balanced_accuracy_se']:.3f} "
            f"(folds grouped by {result['folds_grouped_by']}; chance {result['chance']:.2f}; permuted labels "
            f"{null['balanced_accuracy_mean']:.3f}, p = {null['p_value']:.3g}; the paper's Gaussian control "
            f"{result['class_scalar_gaussian_control']['balanced_accuracy']:.3f})")
    return SaturationPart("probe", {**_meta(settings, backend, data), **result}, figure=lambda: plot_probe(result),
                          line=line)


def part_intervene(settings: SaturationSettings, backend, data) -> SaturationPart:
    """The residual-implant trials, their summary and plot."""
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
    at_zero = summary["by_offset"].get(0, {}).get("success_rate", float("nan"))
    return SaturationPart("intervene", {**_meta(settings, backend, data), "criteria": criteria,
                                        "candidate_pairs": len(pairs), **summary},
                          trials, list(trials[0]) if trials else ["donor"], figure=lambda: plot_intervention(summary),
                          line=f"{summary['pairs']} pairs, {summary['trials']} trials; success rate at offset 0: "
                               f"{at_zero:.3f}")


def part_early_exit(settings: SaturationSettings, backend, data) -> SaturationPart:
    """The early-exit curves of every rule and their plot."""
    from .early_exit import early_exit
    from .plots import plot_early_exit

    result = early_exit(data, first_layer=settings.first_layer, test_fraction=settings.test_fraction,
                        min_per_class=settings.min_per_class, seed=settings.seed)
    rows = [{"method": method, **point} for method, points in result["curves"].items() for point in points]
    line = next((f"{method}: accuracy {result['curves'][method][0]['accuracy']:.3f}, speed-up "
                 f"{result['curves'][method][0]['speedup']:.2f}" for method in ("probe", "oracle", "full")
                 if method in result["curves"]), None)
    return SaturationPart("early_exit", {**_meta(settings, backend, data), **result}, rows,
                          figure=lambda: plot_early_exit(result), line=line)


def part_lm(settings: SaturationSettings, backend, data) -> SaturationPart:
    """The rank-2 accuracy comparison and its plot."""
    from .lm import rank2_accuracy
    from .plots import plot_lm

    if data.k < 2:
        raise InputError("the lm analysis needs k of 2 or more")
    result = rank2_accuracy(data, settings.late_margin)
    late, early = result["late"], result["early"]
    line = (f"rank-2 accuracy (top-1 wrong): late {late['rank2_accuracy']:.3f} (n={late['positions']}), "
            f"early {early['rank2_accuracy']:.3f} (n={early['positions']}); z = {result['z']:.3f}, "
            f"p = {result['p_value']:.3g}")
    return SaturationPart("lm", {**_meta(settings, backend, data), **result}, figure=lambda: plot_lm(result),
                          line=line)



SUBCOMMANDS = {"layers": part_layers, "order": part_order, "probe": part_probe, "intervene": part_intervene,
               "early-exit": part_early_exit, "lm": part_lm}


def saturation_analysis(settings: SaturationSettings, backend, data, commands) -> SaturationResult:
    """The parts ``commands`` (names of :data:`SUBCOMMANDS`) as one result. Of several, a part that cannot be
    computed on this input (an :class:`InputError`, e.g. no task labels for the probe) is skipped, with its
    reason, and the others are kept; a single one raises."""
    result = SaturationResult()
    for name in commands:
        try:
            result.parts[name] = SUBCOMMANDS[name](settings, backend, data)
        except InputError as exc:
            if len(commands) == 1:
                raise
            result.skipped[name] = str(exc).strip().splitlines()[0]
    return result
