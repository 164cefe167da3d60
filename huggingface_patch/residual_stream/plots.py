"""Figures of the lens analyses (matplotlib on the Agg backend; nothing is saved here: callers use
``files.save_figure``)."""

from __future__ import annotations

import numpy as np
from matplotlib.colors import LogNorm

from ..files import pyplot

#: largest rank shown by the rank colour scale (as in the logit-lens write-up, log scale up to 2000)
RANK_VMAX = 2000

_COLOURS = {
    "prob": dict(cmap="Blues", label="probability of the final top-1", norm=None, vmin=0.0, vmax=1.0),
    "rank": dict(cmap="Blues_r", label="rank of the final top-1 (1 = top)", norm=LogNorm(1, RANK_VMAX)),
    "kl": dict(cmap="Reds", label="KL(p_final || p_layer) [nats]", norm=None, vmin=0.0, vmax=None),
    "next": dict(cmap="Greens", label="probability of the actual next token", norm=None, vmin=0.0, vmax=1.0),
}


def short_token(text: str, width: int = 7) -> str:
    """A token string fit for a cell: whitespace made visible, cut to ``width`` characters."""
    text = text.replace("\n", "\\n").replace("\t", "\\t")
    text = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)
    if text.startswith(" "):
        text = "_" + text[1:]
    return text if len(text) <= width else text[: width - 1] + "…"


def logit_lens_heatmap(values: np.ndarray, top_tokens: list[list[str]], row_labels: list[str],
                       input_tokens: list[str], next_tokens: list[str], colour: str, title: str = ""):
    """Heat map rows × positions (first row at the bottom) with each cell's top-1 token written in it.

    ``values`` ``(R, T)``: what :meth:`LogitLensResult.values` gives for ``colour``; ``top_tokens`` ``R`` lists
    of ``T`` strings; ``input_tokens`` label the bottom axis, ``next_tokens`` (the actual next tokens) the top.
    """
    plt = pyplot()
    style = _COLOURS[colour]
    rows, cols = values.shape
    fig, ax = plt.subplots(figsize=(max(6.0, 0.62 * cols + 2.5), max(4.0, 0.28 * rows + 1.8)))
    if style["norm"] is not None:
        image = ax.imshow(np.clip(values, 1, RANK_VMAX), aspect="auto", origin="lower", cmap=style["cmap"],
                          norm=LogNorm(1, RANK_VMAX), interpolation="nearest")
    else:
        vmax = style["vmax"] if style["vmax"] is not None else max(float(np.nanmax(values)), 1e-9)
        image = ax.imshow(values, aspect="auto", origin="lower", cmap=style["cmap"], vmin=style["vmin"], vmax=vmax,
                          interpolation="nearest")
    fontsize = 6 if cols <= 40 else 5
    for r in range(rows):
        for c in range(cols):
            rgba = image.cmap(image.norm(values[r, c]))
            light = (0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2]) > 0.5
            ax.text(c, r, short_token(top_tokens[r][c]), ha="center", va="center", fontsize=fontsize,
                    color="black" if light else "white")
    ax.set_yticks(range(rows), row_labels, fontsize=7)
    ax.set_xticks(range(cols), [short_token(t, 10) for t in input_tokens], rotation=90, fontsize=7)
    top = ax.secondary_xaxis("top")
    top.set_xticks(range(cols), [short_token(t, 10) for t in next_tokens], rotation=90, fontsize=7)
    ax.set_xlabel("input token (bottom) / actual next token (top)")
    ax.set_ylabel("layer")
    fig.colorbar(image, ax=ax, label=style["label"], fraction=0.03, pad=0.02)
    if title:
        ax.set_title(title, fontsize=9, pad=40)
    return fig


def cumulative_path_figure(panels: list[dict]):
    """One panel per model: cumulative path length vs relative depth ``l/L``, one line per token coloured by position.

    Each panel: ``name``, ``curves`` ``(N, L+1)``, ``positions`` ``(N,)`` (position 0 excluded by the caller).
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        curves, positions = np.asarray(panel["curves"]), np.asarray(panel["positions"])
        depth = np.linspace(0.0, 1.0, curves.shape[1])
        norm = plt.Normalize(positions.min() if positions.size else 0, positions.max() if positions.size else 1)
        cmap = plt.get_cmap("viridis")
        for curve, pos in zip(curves, positions):
            ax.plot(depth, curve, color=cmap(norm(pos)), lw=0.7, alpha=0.7)
        ax.set_title(f"{panel['name']} (positions >= 1)", fontsize=9)
        ax.set_xlabel("relative depth l / L")
        ax.set_ylabel("cumulative path length")
        fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="position")
    fig.tight_layout()
    return fig


def path_vs_logit_figure(panels: list[dict], target_label: str = "logit of the actual next token"):
    """One panel per model: path length vs target over positions >= 1; position 0's mean path length in the legend.

    Each panel: ``name``, ``pl``, ``target`` (positions >= 1), ``pl0``, ``target0`` (position 0), ``r`` (dict with
    ``pearson``/``spearman``).
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.8), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        ax.scatter(panel["pl"], panel["target"], s=8, alpha=0.6, label="positions >= 1")
        if len(panel["pl0"]):  # position 0 is far off the scale (huge norms): reported, not drawn
            ax.scatter([], [], s=0, label=f"position 0 (not drawn): mean PL {np.mean(panel['pl0']):.4g}")
        r = panel["r"]
        ax.set_title(f"{panel['name']}: Pearson {r['pearson']:.2f}, Spearman {r['spearman']:.2f}", fontsize=9)
        ax.set_xlabel("path length")
        ax.set_ylabel(target_label)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def step_profile_figure(profiles: dict[str, np.ndarray]):
    """Mean step norm ``||h_l - h_{l-1}||`` (positions >= 1) against relative depth ``l/L``, one line per model."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, steps in profiles.items():
        steps = np.asarray(steps)
        ax.plot(np.arange(1, len(steps) + 1) / len(steps), steps, marker=".", label=name)
    ax.set_xlabel("relative depth l / L")
    ax.set_ylabel("mean step norm (positions >= 1)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
