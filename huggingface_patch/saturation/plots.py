"""Figures of the saturation analyses (matplotlib, Agg backend; saved atomically as PNG)."""

from __future__ import annotations

import numpy as np


def _plt():
    from ..files import pyplot

    return pyplot()


def _stars(p: float) -> str:
    if not np.isfinite(p):
        return "n/a"
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else "n.s."


def plot_saturation_layers(saturation: np.ndarray, num_layers: int, title: str = ""):
    """Distribution of ``s_i`` per rank (kept positions): one histogram line per rank."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.arange(num_layers + 1) - 0.5
    for i in range(saturation.shape[1]):
        counts, _ = np.histogram(saturation[:, i], bins=bins)
        ax.plot(np.arange(num_layers), counts / max(1, len(saturation)), marker="o", ms=3, label=f"rank {i + 1}")
    ax.set_xlabel("saturation layer s_i (0-indexed block; L-1 = not saturated)")
    ax.set_ylabel("fraction of positions")
    ax.set_title(title or "Saturation layers of the top-k tokens")
    ax.legend(fontsize=8)
    return fig


def plot_rank_correspondence(correspondence: dict, title: str = ""):
    """Mean (index among sorted saturation layers) + 1 per rank, ± SEM, with adjacent t-tests."""
    plt = _plt()
    means = np.array(correspondence["mean_index_plus_one"])
    sems = np.nan_to_num(np.array(correspondence["sem"]))
    ranks = np.arange(1, len(means) + 1)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.bar(ranks, means, yerr=sems, capsize=4, color="tab:blue", alpha=0.8, label="observed")
    ax.plot(ranks, ranks, "k--", lw=1, label="perfect order")
    top = float(np.nanmax(means + sems)) if len(means) else 1.0
    for test in correspondence["adjacent_t_tests"]:
        a, b = test["ranks"]
        ax.annotate(_stars(test["p_value"]), ((a + b) / 2, top * 1.05), ha="center", fontsize=8)
    ax.set_ylim(0, max(len(means), top) * 1.15 + 0.1)
    ax.set_xticks(ranks)
    ax.set_xlabel("rank in the final top-k")
    ax.set_ylabel("saturation order (mean index + 1, ± SEM)")
    ax.set_title(title or f"Rank correspondence (n = {correspondence['positions']})")
    ax.legend(fontsize=8, loc="upper left")
    return fig


def plot_probe(result: dict, title: str = ""):
    """Per-task ROC-AUC of the probe and of the paper's Gaussian control, and the probe's balanced accuracy
    against its permuted-label null."""
    plt = _plt()
    probe, control, null = result["probe"], result["class_scalar_gaussian_control"], result["permuted_labels"]
    tasks = sorted(probe["roc_auc_per_task"])
    x = np.arange(len(tasks))
    fig, (ax, right) = plt.subplots(1, 2, figsize=(8, 3.5), gridspec_kw={"width_ratios": [3, 2]})
    ax.bar(x - 0.2, [probe["roc_auc_per_task"][t] for t in tasks], 0.4, label="probe")
    ax.bar(x + 0.2, [control["roc_auc_per_task"][t] for t in tasks], 0.4, color="gray",
           label="Gaussian control (per class)")
    ax.axhline(0.5, color="k", ls="--", lw=1)
    ax.set_xticks(x, [f"task {t}" for t in tasks])
    ax.set_ylabel("ROC-AUC (one vs rest)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    if null["balanced_accuracies"]:
        right.hist(null["balanced_accuracies"], bins=10, color="gray", alpha=0.7, label="labels permuted in layer")
    right.axvline(probe["balanced_accuracy"], color="tab:blue", lw=2, label="probe")
    right.axvline(result["chance"], color="k", ls="--", lw=1, label="chance")
    right.set_xlabel(f"balanced accuracy (folds by {result['folds_grouped_by']})")
    right.set_ylabel("permutations")
    right.legend(fontsize=7)
    fig.suptitle(title or f"Task probing (chance {result['chance']:.2f}; permutation p = {null['p_value']:.3g})",
                 fontsize=10)
    fig.tight_layout()
    return fig


def plot_intervention(summary: dict, title: str = ""):
    """Success rate (new s_1 = implant layer, prediction unchanged) against the offset from the donor's s_1."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for key, label in (("by_offset", "all pairs"), ("donor_saturates_earlier", "donor saturates earlier")):
        rates = summary[key]
        offsets = sorted(int(d) for d in rates)
        ax.plot(offsets, [rates[d]["success_rate"] for d in offsets], marker="o", label=label)
    ax.axvline(0, color="k", lw=0.8, ls=":")
    ax.set_xlabel("implant layer - donor s_1")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title or f"Residual implant ({summary['pairs']} pairs)")
    ax.legend(fontsize=8)
    return fig


def plot_early_exit(result: dict, title: str = ""):
    """Accuracy against speed-up for every exit rule."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for method, points in result["curves"].items():
        xs = [p["speedup"] for p in points]
        ys = [p["accuracy"] for p in points]
        style = dict(marker="*", ms=12, ls="none") if len(points) == 1 else dict(marker="o", ms=4)
        ax.plot(xs, ys, label=method, **style)
    ax.set_xlabel("speed-up (L N / sum of exit layers)")
    ax.set_ylabel("accuracy")
    ax.set_title(title or "Early exit")
    ax.legend(fontsize=8)
    return fig


def plot_lm(result: dict, title: str = ""):
    """Rank-2 accuracy of the late and early groups."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4, 3.5))
    names = ["late", "early"]
    values = [result[n]["rank2_accuracy"] for n in names]
    ax.bar([f"{n}\n{result[n]['definition']}\n(n = {result[n]['positions']})" for n in names], np.nan_to_num(values),
           color=["tab:orange", "tab:green"])
    ax.set_ylabel("rank-2 accuracy (top-1 wrong)")
    ax.set_title(title or f"Rank-2 accuracy (z = {result['z']:.2f}, p = {result['p_value']:.3g})")
    return fig
