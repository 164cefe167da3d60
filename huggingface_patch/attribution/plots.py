"""Plots of ΔLP tables: heatmap targets × sources for a document range; bar chart of one target's sources;
layer × source heatmap of the decomposition lens.
"""

from __future__ import annotations

import math

import numpy as np

from ..files import pyplot as _pyplot
from ..files import save_figure
from ..tokens import show


def _label(token: str) -> str:
    """A token's text as a tick label: quoted (spaces visible), ``$`` escaped for matplotlib."""
    return show(str(token)).replace("$", r"\$")


def select_range(rows: list[dict], document, first: int, last: int) -> list[dict]:
    """Rows of ``document`` whose target index lies in ``[first, last]``."""
    return [r for r in rows if str(r["document"]) == str(document) and first <= r["target_index"] <= last]


def plot_heatmap(rows: list[dict], path: str, title: str = "", units: str = "bits") -> None:
    """Heatmap of ΔLP: one row per target, one column per source position (BOS = -1); blank outside windows."""
    if not rows:
        raise ValueError("no rows to plot: the chosen document range is empty")
    plt = _pyplot()
    targets = sorted({r["target_index"] for r in rows})
    sources = sorted({r["source_index"] for r in rows})
    ti = {t: i for i, t in enumerate(targets)}
    si = {s: i for i, s in enumerate(sources)}
    grid = np.full((len(targets), len(sources)), np.nan)
    target_tokens, source_tokens = {}, {}
    for r in rows:
        grid[ti[r["target_index"]], si[r["source_index"]]] = r["delta_lp"]
        target_tokens[r["target_index"]] = r["target_token"]
        source_tokens[r["source_index"]] = r["source_token"]
    finite = grid[np.isfinite(grid)]
    bound = float(np.abs(finite).max()) if finite.size else 1.0
    size = (max(4, 0.3 * len(sources) + 2), max(3, 0.3 * len(targets) + 1.5))
    fig, ax = plt.subplots(figsize=size)
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
    ax.set_xticks(range(len(sources)), [f"{_label(source_tokens[s])}" for s in sources], rotation=90, fontsize=7)
    ax.set_yticks(range(len(targets)), [f"{t}:{_label(target_tokens[t])}" for t in targets], fontsize=7)
    ax.set_xlabel("source token")
    ax.set_ylabel("predicted token (article index)")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label=f"ΔLP ({units})")
    save_figure(fig, path)


def plot_target_bars(rows: list[dict], path: str, title: str = "", units: str = "bits") -> None:
    """Bar chart of ΔLP per source for one target's rows."""
    if not rows:
        raise ValueError("no rows to plot")
    plt = _pyplot()
    rows = sorted(rows, key=lambda r: r["source_index"])
    values = [r["delta_lp"] for r in rows]
    fig, ax = plt.subplots(figsize=(max(4, 0.35 * len(rows) + 2), 3.5))
    colors = ["tab:red" if v > 0 else "tab:blue" for v in values]
    ax.bar(range(len(rows)), [0 if math.isnan(v) else v for v in values], color=colors)
    ax.set_xticks(range(len(rows)), [_label(r["source_token"]) for r in rows], rotation=90, fontsize=7)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_ylabel(f"ΔLP ({units})")
    ax.set_title(title or f"target {rows[0]['target_index']}: {_label(rows[0]['target_token'])}", fontsize=9)
    save_figure(fig, path)


def plot_lens_heatmap(matrix, layer_labels: list[str], source_labels: list[str], path: str, title: str = "",
                      colorbar: str = "logit contribution") -> None:
    """Heatmap layers × sources (e.g. each source's contribution to the next token's logit per layer)."""
    plt = _pyplot()
    grid = np.asarray(matrix, dtype=float)
    bound = float(np.abs(grid).max()) or 1.0
    fig, ax = plt.subplots(figsize=(max(4, 0.4 * len(source_labels) + 2), max(3, 0.22 * len(layer_labels) + 1.5)))
    image = ax.imshow(grid, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto", origin="lower")
    ax.set_xticks(range(len(source_labels)), [_label(s) for s in source_labels], rotation=90, fontsize=7)
    ax.set_yticks(range(len(layer_labels)), layer_labels, fontsize=6)
    ax.set_xlabel("source token")
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label=colorbar)
    save_figure(fig, path)
