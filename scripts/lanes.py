"""``reproduce.py --jobs N``: the plan's parts as N lanes of child processes.

A unit is one model's part (path length: both models' one step), run as its own ``reproduce.py`` process so that
its model loads once; units go to the lane that frees first, longest first by the minutes ``timings.json``
recorded (units never run before go first). Each child gets ``cpus / N`` threads unless ``OMP_NUM_THREADS`` is
set, and writes its output to ``{work}/logs/{model}__{part}.log``. The run's wall-clock time is appended to
``{work}/plan_runs.json``; ``whole_plan`` says whether it was every part of both models at the plan's sizes,
from scratch (``--force`` or nothing complete before) and without a failure: only such a run measures the
two-hour target.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def units(steps: list) -> list[tuple[str, str]]:
    """The ``(model, part)`` units of ``steps`` in their order (path length: ``("both", "path_length")``): a
    unit is one process of a lane, loading its model once."""
    seen: list[tuple[str, str]] = []
    for step in steps:
        if (step.model, step.part) not in seen:
            seen.append((step.model, step.part))
    return seen


def unit_seconds(unit: tuple[str, str], timings: dict) -> float | None:
    """The recorded seconds of a unit's steps (``timings.json``; None when none has run)."""
    model, part = unit
    found = [r["seconds"] if isinstance(r, dict) else r for key, r in timings.items()
             if key.startswith(f"{part}/{model}/")]
    return sum(found) if found else None


def unit_command(unit: tuple[str, str], steps: list, work: str, args) -> list[str]:
    """The ``reproduce.py`` command of one unit: the same sizes, ``--force`` and step names, no report."""
    model, part = unit
    command = [sys.executable, os.path.join(HERE, "reproduce.py"), "--parts", part, "--work", work, "--no-report"]
    if model != "both":
        command += ["--models", model]
    for flag, value in (("--facts", args.facts), ("--items", args.items), ("--essays", args.essays),
                        ("--pairs", args.pairs), ("--targets", args.targets), ("--task-items", args.task_items)):
        if value is not None:
            command += [flag, str(value)]
    if args.steps:
        command += ["--steps", *sorted({s.name for s in steps if (s.model, s.part) == unit} & set(args.steps))]
    return command + (["--force"] if args.force else [])


def predicted(steps: list, work: str, jobs: int) -> tuple[list, list[float]]:
    """The units of ``steps`` in the order the lanes take them, and each lane's seconds by ``timings.json``."""
    from report.timings import read_timings, schedule

    return schedule({u: unit_seconds(u, read_timings(work)) for u in units(steps)}, jobs)


def run_lanes(steps: list, work: str, args, done, full: bool) -> int:
    """Run the units of ``steps`` in ``args.jobs`` lanes of child processes; append the wall time to
    ``{work}/plan_runs.json``. ``done(step)``: whether a step's folder holds its complete run (a resumed run
    is not a whole-plan run from scratch). Returns the number of units that failed (their logs say why)."""
    from datetime import datetime, timezone

    from report.timings import print_timings, read_timings

    from huggingface_patch import _source

    jobs = args.jobs
    order, lanes = predicted(steps, work, jobs)
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // jobs))
    env = dict(os.environ, OMP_NUM_THREADS=threads, PYTHONPATH=os.pathsep.join(
        p for p in (REPO, os.environ.get("PYTHONPATH")) if p))
    logs = os.path.join(work, "logs")
    os.makedirs(logs, exist_ok=True)
    fresh = args.force or not any(done(step) for step in steps)
    print(f"{len(order)} units in {jobs} lanes, {threads} thread(s) each; the recorded minutes predict "
          f"{max(lanes) / 60:.0f} min of wall time" + (" (some units have no record)" if 0.0 in lanes else ""),
          flush=True)
    start, load_before, source = time.perf_counter(), os.getloadavg()[0], _source._read()
    started = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    pending, running, failed = list(order), {}, []
    while pending or running:
        while pending and len(running) < jobs:
            unit = pending.pop(0)
            log = open(os.path.join(logs, f"{unit[0]}__{unit[1]}.log"), "w", encoding="utf-8")
            running[subprocess.Popen(unit_command(unit, steps, work, args), cwd=REPO, env=env, stdout=log,
                                     stderr=subprocess.STDOUT)] = (unit, time.perf_counter(), log)
            print(f"  started {unit[0]} / {unit[1]} (log: {log.name})", flush=True)
        time.sleep(1.0)
        for process in [p for p in running if p.poll() is not None]:
            unit, began, log = running.pop(process)
            log.close()
            status = "done" if process.returncode == 0 else f"FAILED (exit code {process.returncode}; see {log.name})"
            if process.returncode:
                failed.append(unit)
            print(f"  {status}: {unit[0]} / {unit[1]} in {(time.perf_counter() - began) / 60:.1f} min", flush=True)
    wall = time.perf_counter() - start
    record = {"jobs": jobs, "threads_per_job": int(threads), "units": [list(u) for u in order],
              "whole_plan": full and fresh and not failed, "fresh": fresh, "failed": [list(u) for u in failed],
              "wall_seconds": round(wall, 1), "cpus": os.cpu_count(), "source_at_start": source,
              "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
              "started": started}
    append_run(work, record)
    print_timings(read_timings(work))
    print(f"wall-clock time of this run: {wall / 60:.1f} min in {jobs} lanes"
          + ("" if record["whole_plan"] else " (not the whole plan from scratch: resumed, cut down or failed)"))
    if failed:
        print(f"reproduce.py: {len(failed)} unit(s) failed: "
              + ", ".join(f"{m} / {p}" for m, p in failed) + f"; their logs are in {logs}", file=sys.stderr)
    return len(failed)


def append_run(work: str, record: dict) -> None:
    """Append one run's record to ``{work}/plan_runs.json``, atomically."""
    path = os.path.join(work, "plan_runs.json")
    runs = []
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as handle:
            runs = json.load(handle)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump([*runs, record], handle, indent=2)
    os.replace(tmp, path)
