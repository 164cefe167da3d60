"""docs/results.md and the README's results block are rendered from docs/results/results.json, every figure there
names the run it comes from, and that run was made with the model the figure is reported for."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "docs", "results", "results.json")


def report_module():
    spec = importlib.util.spec_from_file_location("results_report", os.path.join(REPO, "scripts", "results_report.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def test_every_figure_and_table_is_in_the_repository(results):
    for name in results["figures"]:
        assert os.path.isfile(os.path.join(REPO, "docs", "figures", name)), f"figure {name} is missing"
    for name in results["tables"]:
        assert os.path.isfile(os.path.join(REPO, "docs", "results", name)), f"table {name} is missing"
    with open(os.path.join(REPO, "docs", "results.md"), encoding="utf-8") as handle:
        text = handle.read()
    for line in text.splitlines():
        if line.startswith("![") and "](figures/" in line:
            name = line.split("](figures/")[1].rstrip(")")
            assert os.path.isfile(os.path.join(REPO, "docs", "figures", name)), f"docs/results.md shows missing {name}"


def test_every_step_names_what_produced_it(results):
    assert results["sources"], "no runs recorded"
    for model, steps in results["sources"].items():
        for step, source in steps.items():
            where = f"{model} {step}"
            assert source["tool"], f"{where}: no tool"
            assert source["source"], f"{where}: no source commit"
            assert source["package"], f"{where}: no package version"
            if model != "both":
                assert source["model"] == model, f"{where}: run with {source['model']}, reported for {model}"
                assert source["weights_fingerprint"], f"{where}: no weights fingerprint"
            else:
                assert source["models"], f"{where}: the compared models are not recorded"
                for entry in source["models"]:
                    own = {s["weights_fingerprint"] for s in results["sources"].get(entry["name"], {}).values()}
                    assert not own or own == {entry["weights_fingerprint"]}, (
                        f"{where}: {entry['name']} ran with other weights than in its own runs")


def test_each_figure_points_at_a_recorded_step(results):
    def steps(node):
        if isinstance(node, dict):
            if "step" in node:
                yield node["step"]
            for value in node.values():
                yield from steps(value)

    for model, figures in results["models"].items():
        for step in steps(figures):
            assert step in results["sources"][model], f"{model}: figure from {step}, which has no run record"
    # one model's fingerprint throughout its runs: the figures of a model were not mixed from two models
    for model, sources in results["sources"].items():
        if model == "both":
            continue
        prints = {s["weights_fingerprint"] for s in sources.values()}
        assert len(prints) == 1, f"{model}: runs made with different weights: {sorted(prints)}"
