"""Matplotlib figures of the recall analyses (Agg backend; saved atomically with ``files.save_figure``).

Layers are shown as the tables hold them: 0-based block indices, -1 = the embeddings (the paper plots
``layer + 1``); bands are the summaries' intervals (pointwise, cluster bootstrap or Wilson).
"""

from __future__ import annotations

from typing import Mapping, Sequence

from ..files import pyplot as _pyplot
from ..files import save_figure


def plot_bands(summary: Mapping[str, Sequence[dict]], path: str, *, title: str, ylabel: str,
               xlabel: str = "layer (0-based block index)", hline: float | None = 0.0, value: str = "mean") -> None:
    """One line per key with its shaded 95% band; ``summary[key]`` rows ``{layer, <value>, ci_low, ci_high}``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, rows in summary.items():
        x = [r["layer"] for r in rows]
        line, = ax.plot(x, [r[value] for r in rows], label=name, linewidth=1.8)
        if all("ci_low" in r for r in rows):
            ax.fill_between(x, [r["ci_low"] for r in rows], [r["ci_high"] for r in rows], alpha=0.2,
                            color=line.get_color())
    if hline is not None:
        ax.axhline(hline, color="grey", linewidth=0.8, linestyle=":")
    _finish(fig, ax, path, title, xlabel, ylabel)


def _finish(fig, ax, path: str, title: str, xlabel: str, ylabel: str) -> None:
    """Labels, legend and grid of a recall figure, then write it."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def plot_lines(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str, *, title: str,
               ylabel: str, xlabel: str, hlines: Mapping[str, float] | None = None) -> None:
    """Plain lines ``{label: (x, y)}`` plus optional labelled horizontal reference lines."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for label, (x, y) in series.items():
        ax.plot(list(x), list(y), marker="o", markersize=3, label=label, linewidth=1.6)
    for label, value in (hlines or {}).items():
        ax.axhline(value, linestyle="--", color="black", linewidth=1.0, label=label)
    _finish(fig, ax, path, title, xlabel, ylabel)
