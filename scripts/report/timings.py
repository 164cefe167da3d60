"""``{work}/timings.json``: what each reproduction step cost (seconds, items, forward-pass equivalents)."""

from __future__ import annotations

import json
import os


def read_timings(work: str) -> dict:
    """``{"part/model/step": record}``; empty when no step has run."""
    path = os.path.join(work, "timings.json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def record_timing(work: str, key: str, record: dict) -> None:
    """Add one step's record, atomically; the file is read again first because another reproduce.py (other
    models, other parts) may share it."""
    timings = read_timings(work)
    timings[key] = record
    os.makedirs(work, exist_ok=True)
    path = os.path.join(work, "timings.json")
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(timings, handle, indent=2, sort_keys=True)
    os.replace(tmp, path)


def print_timings(timings: dict) -> None:
    """Minutes per part and model, and in total."""
    parts: dict[str, float] = {}
    for key, record in timings.items():
        seconds = record["seconds"] if isinstance(record, dict) else record
        part, model, _ = key.split("/", 2)
        parts[f"{part} / {model}"] = parts.get(f"{part} / {model}", 0.0) + seconds
    print("\nwall-clock time of the steps run so far (this machine):")
    for name, seconds in sorted(parts.items()):
        print(f"  {name:34} {seconds / 60:6.1f} min")
    print(f"  {'total':34} {sum(parts.values()) / 60:6.1f} min")


def schedule(costs: dict, jobs: int) -> tuple[list, list[float]]:
    """Longest first, each unit to the lane that frees first (units of unknown cost before every other):
    ``(order, lane seconds)``; the largest lane total is the wall time these costs predict."""
    order = sorted(costs, key=lambda u: (costs[u] is not None, -(costs[u] or 0.0)))
    lanes = [0.0] * max(1, jobs)
    for unit in order:
        lane = lanes.index(min(lanes))
        lanes[lane] += costs[unit] or 0.0
    return order, lanes
