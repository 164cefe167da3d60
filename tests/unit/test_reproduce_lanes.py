"""``reproduce.py --jobs N``: units (one model's part) go to lanes longest first, each lane's child gets the
run's sizes, and the run's wall-clock time, its failures and whether it was the whole plan from scratch are
recorded in ``plan_runs.json``."""

from __future__ import annotations

import argparse
import json
import os
import sys

from helpers import REPO

sys.path.insert(0, os.path.join(REPO, "scripts"))

import lanes  # noqa: E402
import reproduce  # noqa: E402
from report.timings import schedule  # noqa: E402


def test_schedule_puts_unknown_units_first_then_the_longest_on_the_freest_lane():
    costs = {"a": 10.0, "b": 7.0, "c": 5.0, "d": 4.0, "new": None}
    order, lanes = schedule(costs, 2)
    assert order == ["new", "a", "b", "c", "d"]
    # new -> lane 0 (0), a -> lane 0 (10), b -> lane 1 (7), c -> lane 1 (12), d -> lane 0 (14)
    assert lanes == [14.0, 12.0]
    assert schedule(costs, 1)[1] == [26.0]


def _args(**given) -> argparse.Namespace:
    values = dict(facts=None, items=None, essays=None, pairs=None, targets=None, task_items=None, steps=None,
                  force=False, jobs=2)
    values.update(given)
    return argparse.Namespace(**values)


def test_a_units_command_carries_the_sizes_steps_and_force(tmp_path):
    steps = [reproduce.Step("recall", "m", "knockout", [], ""), reproduce.Step("recall", "m", "patching", [], ""),
             reproduce.Step("deltalp", "m", "deltalp", [], ""),
             reproduce.Step("path_length", "both", "path_length", [], "")]
    assert lanes.units(steps) == [("m", "recall"), ("m", "deltalp"), ("both", "path_length")]
    command = lanes.unit_command(("m", "recall"), steps, str(tmp_path), _args(facts=5, steps=["patching"],
                                                                                  force=True))
    assert command[2:] == ["--parts", "recall", "--work", str(tmp_path), "--no-report", "--models", "m",
                           "--facts", "5", "--steps", "patching", "--force"]
    both = lanes.unit_command(("both", "path_length"), steps, str(tmp_path), _args())
    assert "--models" not in both, "path length compares both models in one step"


def test_lanes_run_every_unit_and_record_the_wall_time_and_failures(tmp_path, monkeypatch):
    steps = [reproduce.Step(part, model, "x", [], str(tmp_path / model / part))
             for model in ("m1", "m2") for part in ("p1", "p2")]
    marks = tmp_path / "marks"
    marks.mkdir()

    def command(unit, steps, work, args):
        code = 3 if unit == ("m2", "p2") else 0
        return [sys.executable, "-c", f"open({str(marks / '__'.join(unit))!r}, 'w').close(); "
                                      f"import os; print(os.environ['OMP_NUM_THREADS']); raise SystemExit({code})"]

    monkeypatch.setattr(lanes, "unit_command", command)
    failed = lanes.run_lanes(steps, str(tmp_path), _args(), lambda step: False, full=True)
    assert failed == 1
    assert sorted(os.listdir(marks)) == ["m1__p1", "m1__p2", "m2__p1", "m2__p2"], "every unit ran"
    runs = json.loads((tmp_path / "plan_runs.json").read_text())
    assert len(runs) == 1 and runs[0]["jobs"] == 2 and runs[0]["failed"] == [["m2", "p2"]]
    assert runs[0]["whole_plan"] is False, "a run with a failed unit is not the whole plan"
    assert runs[0]["wall_seconds"] >= 0 and runs[0]["units"][0] in (["m1", "p1"], ["m2", "p2"])
    log = (tmp_path / "logs" / "m1__p1.log").read_text().strip()
    assert log == os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // 2))), log
