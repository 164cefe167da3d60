"""docs/results.md and the README's results block are rendered from docs/results/results.json; every step the
reproduction plans has a section; every figure and per-item table there is the one its recorded run made; and
a model's figures all come from one model's weights."""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import json
import os
import re
import sys

import pytest
from helpers import REPO  # noqa: E402

RESULTS = os.path.join(REPO, "docs", "results", "results.json")


def report_module():
    spec = importlib.util.spec_from_file_location("results_report", os.path.join(REPO, "scripts", "results_report.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sha256(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


@pytest.fixture(scope="module")
def results():
    if not os.path.isfile(RESULTS):
        pytest.fail("docs/results/results.json is missing: run bash scripts/reproduce.sh")
    with open(RESULTS, encoding="utf-8") as handle:
        return json.load(handle)


def test_report_and_readme_are_rendered_from_the_results(results):
    report = report_module()
    with open(os.path.join(REPO, "docs", "results.md"), encoding="utf-8") as handle:
        assert handle.read() == report.render(results), "docs/results.md is stale: run scripts/results_report.py"
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as handle:
        readme = handle.read()
    assert report.replace_block(readme, report.render_readme(results)) == readme, (
        "the README's results block is stale: run scripts/results_report.py")


def test_every_planned_step_has_a_section(results, tmp_path):
    """Each step of ``reproduce.py --list`` is named by the report: shown with its run, or said to be missing
    (a step whose output the report does not read would otherwise vanish silently)."""
    report = report_module()
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    planned = {report.step_key(step) for step in report.planned_steps(str(tmp_path), results)}
    shown = report.shown_steps(results)
    assert planned - shown == set(), f"planned steps the report never names: {sorted(planned - shown)}"
    assert set(results["steps"]) | set(results["missing"]) >= planned, "a planned step is neither run nor missing"


def test_a_fresh_checkout_plans_every_committed_step(results, tmp_path):
    """With no runs under ``--work`` (a fresh checkout: the raw runs are not committed), the plan still holds
    every step of the committed report, the embedding readings of a selection that was not rerun included, so
    the report keeps them instead of dropping them as "not run"."""
    report = report_module()
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    planned = {report.step_key(step) for step in report.planned_steps(str(tmp_path), results)}
    dropped = set(results["steps"]) - planned
    assert dropped == set(), f"committed steps a fresh checkout would drop: {sorted(dropped)}"


def test_every_figure_is_from_a_recorded_run(results):
    on_disk = set(os.listdir(os.path.join(REPO, "docs", "figures")))
    assert on_disk == set(results["figures"]), (
        f"figures without a run record: {sorted(on_disk - set(results['figures']))}; "
        f"recorded but absent: {sorted(set(results['figures']) - on_disk)}")
    for name, figure in results["figures"].items():
        assert sha256(os.path.join(REPO, "docs", "figures", name)) == figure["sha256"], f"{name} changed since its run"
        step = results["steps"].get(figure["step"])
        assert step is not None, f"{name}: made by {figure['step']}, which has no run"
        assert figure["run_json_sha256"] == step["provenance"]["run_json_sha256"], f"{name}: from another run"


def test_every_per_item_table_is_committed_unchanged(results):
    for key, step in results["steps"].items():
        table = step.get("items_table")
        if table:
            path = os.path.join(REPO, table["file"])
            assert os.path.isfile(path), f"{key}: {table['file']} is missing"
            assert sha256(path) == table["sha256"], f"{key}: {table['file']} differs from its record"
    total = sum(os.path.getsize(p) for p in glob.glob(os.path.join(REPO, "docs", "results", "items", "*")))
    assert total < 20 * 2**20, f"the per-item tables take {total / 2**20:.1f} MiB: keep them compact"


def test_every_step_names_what_produced_it(results):
    assert results["steps"], "no runs recorded"
    fingerprints: dict[str, set] = {}
    for key, step in results["steps"].items():
        source = step["provenance"]
        model = key.split("/")[0]
        for field in ("tool", "source", "package", "run_json_sha256"):
            assert source.get(field), f"{key}: no {field}"
        if model == "both":
            assert source["models"], f"{key}: the compared models are not recorded"
            continue
        assert source["model"] == model or source["model"].startswith(model), (
            f"{key}: run with {source['model']}, reported for {model}")
        fingerprints.setdefault(model, set()).add(source["weights_fingerprint"])
    # one weights fingerprint per model, except the untrained control (re-initialised on purpose)
    for model in fingerprints:
        trained = {results["steps"][k]["provenance"]["weights_fingerprint"] for k in results["steps"]
                   if k.startswith(model + "/") and not k.endswith("/random_init")}
        assert len(trained) == 1, f"{model}: runs made with different weights: {sorted(trained)}"


def test_every_figure_a_page_shows_exists():
    pages = [os.path.join(REPO, "README.md"), *glob.glob(os.path.join(REPO, "docs", "*.md"))]
    for page in pages:
        with open(page, encoding="utf-8") as handle:
            text = handle.read()
        for name in re.findall(r"\]\((?:docs/)?figures/([^)\s]+)\)", text):
            assert os.path.isfile(os.path.join(REPO, "docs", "figures", name)), (
                f"{os.path.relpath(page, REPO)} shows figures/{name}, which does not exist")


def test_a_kept_entry_needs_its_files_unchanged(tmp_path, monkeypatch):
    """A step without a raw run keeps its committed entry only while its figure and table are byte-identical."""
    module = report_module()
    figures, repo = tmp_path / "figures", tmp_path
    figures.mkdir()
    (figures / "f.png").write_bytes(b"png")
    (tmp_path / "t.csv.gz").write_bytes(b"table")
    monkeypatch.setattr(module, "FIGURES", str(figures))
    monkeypatch.setattr(module, "REPO", str(repo))
    entry = {"provenance": {"source": "abc"}, "figures": [{"file": "f.png", "sha256": sha256(figures / "f.png")}],
             "items_table": {"file": "t.csv.gz", "sha256": sha256(tmp_path / "t.csv.gz")}}
    previous = {"steps": {"m/p/s": entry}}
    kept = module.kept_entry(previous, "m/p/s")
    assert kept is not None and kept["kept_from_earlier_report"] and kept["provenance"] == entry["provenance"]
    assert module.kept_entry(previous, "m/p/other") is None
    (figures / "f.png").write_bytes(b"changed")
    assert module.kept_entry(previous, "m/p/s") is None, "a changed figure must not be kept"
    (figures / "f.png").write_bytes(b"png")
    (tmp_path / "t.csv.gz").unlink()
    assert module.kept_entry(previous, "m/p/s") is None, "a missing table must not be kept"


def test_item_counts_are_table_rows(tmp_path):
    """An item count recorded as lines of a CSV whose token cells hold newlines is corrected to its rows, and the
    per-item cost with it; the recorded count is kept beside it."""
    from report.collect import _recount, compress_table

    source = tmp_path / "items.csv"
    source.write_text('position,token\n0,"a\nb"\n1,c\n', encoding="utf-8")
    table = compress_table(str(source), str(tmp_path / "items.csv.gz"))
    assert table["rows"] == 2
    provenance = {"items": 3, "seconds_per_item": 1.0, "forward_pass_equivalents_per_item": 0.3}
    _recount(provenance, table["rows"], "all")
    assert provenance == {"items": 2, "items_as_recorded": 3, "seconds_per_item": 1.5,
                          "forward_pass_equivalents_per_item": 0.45}
    faithfulness = {"items": 3}
    _recount(faithfulness, 12, "benchmark")
    assert faithfulness == {"items": 3}, "the faithfulness table has a row per item and method"


def test_a_smaller_faithfulness_run_is_said_to_be(results):
    """A faithfulness run on fewer items than the plan's gets a caveat with its sizes and seed; one on the plan's
    sizes gets none."""
    import copy

    report = report_module()
    from reproduce import FAITHFULNESS_TARGETS, FAITHFULNESS_TASK_ITEMS

    changed = copy.deepcopy(results)
    changed["steps"].pop("gemma3-270m/faithfulness/benchmark", None)  # only the run made here is sized
    data = {"corpus_items": 50, "task_items": {"ioi": 50, "agreement": 50}, "seed": 0, "summary": {},
            "candidates_tried": {"ioi": 57, "agreement": 61}}
    changed["steps"]["smollm2-135m/faithfulness/benchmark"] = {
        "model": "smollm2-135m", "part": "faithfulness", "step": "benchmark", "data": data,
        "provenance": {"source": "abc"}, "figures": []}
    page = report.render(changed)
    assert ("SmolLM2-135M: 50 random essay targets (seed 0) and the first known-answer items the model gets right "
            "in the seeded generators' order (ioi 50 of 57 tried, agreement 50 of 61 tried), fewer than the plan's "
            f"{FAITHFULNESS_TARGETS} and {FAITHFULNESS_TASK_ITEMS} per task") in page
    data.update(corpus_items=FAITHFULNESS_TARGETS, task_items={"ioi": FAITHFULNESS_TASK_ITEMS,
                                                                "agreement": FAITHFULNESS_TASK_ITEMS})
    assert "Faithfulness sizes" not in report.render(changed)


def test_the_faithfulness_reading_says_when_holm_cannot_reach_05():
    """With 11 clusters the exact sign-flip p-value is at least 2/2^11; over 60 comparisons Holm cannot bring it
    under 0.05, and the reading says so instead of calling the methods indistinguishable; an interval that
    excludes 0 is reported as unadjusted, and not at all from fewer than 5 clusters."""
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    from report.render_attribution import AttributionSections

    def comparison(low, high, clusters, p_holm=1.0):
        return {"difference": {"estimate": (low + high) / 2, "low": low, "high": high, "clusters": clusters},
                "p_value": 2 / 2 ** clusters, "p_holm": p_holm}

    metrics = {f"m{i}": comparison(-0.5, -0.1, 11) for i in range(6)}
    metrics["few"] = comparison(0.1, 0.2, 3)
    d = {"comparisons": {f"method{j}": dict(metrics) for j in range(9)}}
    text = AttributionSections._faithfulness_reading(d)
    assert "not distinguishable" in text and "below method0" in text
    assert "cannot go below p = 0.00098 with 11 clusters" in text and "Holm over 63 comparisons" in text
    assert "above" not in text.split("cannot go below")[0], "3 clusters are too few to read an interval"
    d = {"comparisons": {"method0": {"m": comparison(-0.5, -0.1, 20, p_holm=0.01)}}}
    text = AttributionSections._faithfulness_reading(d)
    assert text.startswith("ΔLP is worse than method0 on m") and "cannot go below" not in text


def test_early_exit_counts_only_baselines_at_the_probes_cost():
    """A baseline whose nearest threshold runs at a different speed-up trades accuracy for cost: beating it
    (Gemma: cosine at x1.50 against the probe's x1.27) is reported, marked and not counted."""
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    from report.verdicts import early_exit

    def c(estimate, probe, base):
        return {"accuracy_probe_minus_baseline": {"difference": {"estimate": estimate, "low": estimate - 0.01,
                                                                 "high": estimate + 0.01}, "p_value": 0.001},
                "probe_speedup": probe, "baseline_speedup": base}

    text = early_exit({"comparisons": {"margin": c(-0.05, 1.27, 1.28), "cosine": c(0.08, 1.27, 1.50)}})
    assert text.startswith("**Disagrees.**") and "cosine +8.0 points" in text and "not counted" in text
    assert early_exit({"comparisons": {"a": c(0.05, 1.3, 1.3), "b": c(-0.05, 1.3, 1.31)}}).startswith("**Mixed.**")
    assert early_exit({"comparisons": {"a": c(0.05, 1.3, 1.3)}}).startswith("**Agrees.**")
    assert early_exit({"comparisons": {"a": c(0.05, 1.3, 2.0)}}).startswith("**Cannot compare.**")


def test_the_shared_cores_mark_holds_only_for_the_runs_it_names():
    """A run known to have shared the cores is marked in "What it cost"; a rerun of the same step is not."""
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    from report.render import SHARED_CORES, Report

    key, digest = next(iter(SHARED_CORES.items()))
    def steps(sha):
        return {"steps": {key: {"provenance": {"seconds": 60.0, "run_json_sha256": sha}}}}

    marked = [line for line in Report(steps(digest + "0" * 48)).costs() if line.startswith(f"| `{key}`")]
    assert marked and marked[0].startswith(f"| `{key}` ¹ |"), marked
    rerun = [line for line in Report(steps("f" * 64)).costs() if line.startswith(f"| `{key}`")]
    assert rerun and rerun[0].startswith(f"| `{key}` |"), rerun


def test_a_run_that_recorded_its_load_is_marked_from_it():
    """A run with a recorded load is marked when the load at its start or end is at least one above its threads
    (another job beside it), and not otherwise, unless :data:`SHARED_CORES` names that exact run (a job beside
    it that the lagging one-minute load missed)."""
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    from report.render import SHARED_CORES, shared_cores

    key, digest = next(iter(SHARED_CORES.items()))
    run = {"run_json_sha256": digest + "0" * 48, "threads": 1}
    assert shared_cores("x/y/z", {**run, "load_average": [1.1, 2.05]})
    assert shared_cores("x/y/z", {**run, "load_average": [5.08, 1.0]})
    assert not shared_cores("x/y/z", {**run, "load_average": [0.92, 1.4]})
    assert shared_cores(key, {**run, "load_average": [0.92, 1.4]})
    assert not shared_cores(key, {**run, "run_json_sha256": "f" * 64, "load_average": [0.92, 1.4]})
    assert not shared_cores("x/y/z", {"threads": 2, "load_average": [2.3, 2.9]})


def test_the_cost_section_shows_the_two_lane_estimate_and_a_measured_whole_run(results):
    """Without a whole-plan run the page says none was timed and predicts the two-lane wall time from the table;
    with one (``reproduce.py --jobs``), its wall-clock time decides the two-hour target."""
    report = report_module()
    page = report.render(results)
    if not results.get("whole_plan_runs"):
        assert "No whole-plan run has been timed from start to end." in page
    assert "`reproduce.py --jobs 2`" in page
    run = {"jobs": 2, "threads_per_job": 1, "wall_seconds": 100 * 60.0, "started": "2026-01-01T00:00:00+00:00",
           "source_at_start": "0123456789abcdef", "whole_plan": True}
    page = report.render(dict(results, whole_plan_runs=[run]))
    assert "took **100.0 min** of wall time" in page and "**Met.**" in page
    page = report.render(dict(results, whole_plan_runs=[dict(run, wall_seconds=200 * 60.0)]))
    assert "took **200.0 min**" in page and "**Not met**" in page
    quick = json.loads(json.dumps(results))  # a table summing to under 2 h does not outvote a slow measured run
    for entry in quick["steps"].values():
        if entry["provenance"].get("seconds") is not None:
            entry["provenance"]["seconds"] = 1.0
    page = report.render(dict(quick, missing=[], whole_plan_runs=[dict(run, wall_seconds=200 * 60.0)]))
    assert "**Not met**" in page and "**Met.**" not in page
