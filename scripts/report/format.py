"""Number, interval and table formatting of the report's Markdown."""

from __future__ import annotations

import math

#: the bundled models by their reproduce.py names, as the report names them
MODELS = {"smollm2-135m": "SmolLM2-135M", "gemma3-270m": "Gemma 3 270M"}


def num(value, digits: int = 1, scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value * scale:.{digits}f}"


def interval(entry: dict | None, digits: int = 1, scale: float = 1.0, unit: str = "") -> str:
    """``estimate [low, high]`` of an interval dict (``estimate``/``low``/``high``, or ``mean``/``ci_*``)."""
    if not entry:
        return "n/a"
    estimate = entry.get("estimate", entry.get("mean", entry.get("rate")))
    low, high = entry.get("low", entry.get("ci_low")), entry.get("high", entry.get("ci_high"))
    return f"{num(estimate, digits, scale)}{unit} [{num(low, digits, scale)}, {num(high, digits, scale)}]"


def pvalue(p) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def header(*columns: str) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
