"""Turn the runs of ``scripts/reproduce.py`` into the results report.

    python scripts/results_report.py                      # read results/reproduce, write the report
    python scripts/results_report.py --check              # exit 1 if docs/results.md or the README are stale

For every step ``scripts/reproduce.py --list`` plans (and the embedding readings its selection adds), reads the
step's folder under ``--work`` and writes:

* ``docs/results/results.json``: per step its provenance (tool, source commit, package version, model and
  weights fingerprints, every setting and its hash, the run record's sha256, seconds, items, forward passes per
  item), the figures the report shows, its figures (with sha256) and its per-item table;
* ``docs/results/items/*.csv.gz``: every step's per-item table, compact;
* ``docs/figures/results_*.png``: each run's own figures (every other file there is removed: each figure comes
  from a recorded run), and a screenshot of the ΔLP page;
* ``docs/results.md`` and the README block between ``<!-- results:start -->`` and ``<!-- results:end -->``,
  rendered from ``results.json`` alone (``--check`` and ``tests/unit/test_results_doc.py`` compare).

A planned step with no complete run under ``--work`` keeps its entry of the committed report if every figure and
table it names is there unchanged (``--no-keep``: listed as missing); it is never filled in otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from report.collect import _recount, collect_step, sha256  # noqa: E402
from report.paths import FIGURES, README, REPO, REPORT, RESULTS  # noqa: E402
from report.render import END, START, render, render_readme, shown_steps  # noqa: E402

__all__ = ["END", "START", "planned_steps", "render", "render_readme", "replace_block", "shown_steps"]


def planned_steps(work: str, previous: dict | None = None) -> list:
    """Every step of the full plan (``reproduce.py``'s parts on both models, then path length), with the
    embedding readings of each selection: the one under ``work``, else the one ``previous`` (the committed
    ``results.json``) keeps, so that a fresh checkout's report still plans, and so keeps, the readings of a
    selection it did not rerun."""
    import reproduce

    steps = []
    for model in reproduce.MODELS:
        for part in reproduce.PARTS:
            if part != "path_length":
                steps.extend(reproduce.steps_for(part, model, work))
    steps.extend(reproduce.steps_for("path_length", reproduce.MODELS[0], work))
    out = []
    for step in steps:
        out.append(step)
        if step.name != "select":
            continue
        if os.path.isfile(os.path.join(step.output, "selection.json")):
            out.extend(reproduce.expand(step))
            continue
        kept = (previous or {}).get("steps", {}).get(step_key(step))
        if kept is not None:
            out.extend(reproduce.expand(step, kept["data"]))  # holds the run's "chosen"
    return out


def step_key(step) -> str:
    return f"{step.model}/{step.part}/{step.name}"


def screenshot(page: str, target: str) -> bool:
    """A PNG of the ΔLP page with a target selected (Chromium through Playwright; False if unavailable)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return False
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return False
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1100, "height": 700}, device_scale_factor=1)
        tab.goto("file://" + os.path.abspath(page))
        tab.wait_for_selector(".tok")
        tab.locator(".tok").nth(40).click()
        tab.wait_for_timeout(300)
        tab.screenshot(path=target)
        browser.close()
    return True


def kept_entry(previous: dict, key: str) -> dict | None:
    """``key``'s entry in the committed ``results.json`` when its raw run is not under ``--work`` (the runs are
    not committed, a fresh checkout has none), provided every file it names is still there unchanged: its figures
    and its per-item table, by sha256. The entry keeps its provenance (commit, settings, fingerprints) and says it
    was kept."""
    entry = previous.get("steps", {}).get(key)
    if entry is None:
        return None
    files = [(os.path.join(FIGURES, f["file"]), f["sha256"]) for f in entry.get("figures", [])]
    table = entry.get("items_table")
    if table:
        files.append((os.path.join(REPO, table["file"]), table["sha256"]))
    if not all(os.path.isfile(path) and sha256(path) == digest for path, digest in files):
        return None
    entry = json.loads(json.dumps(entry))  # a copy: the recount below must not change ``previous``
    if table and table.get("rows"):
        _recount(entry.setdefault("provenance", {}), table["rows"], entry.get("step", key.split("/")[-1]))
    return {**entry, "kept_from_earlier_report": True}


def collect(work: str, keep: bool = True) -> dict:
    """Everything the report shows, from the runs under ``work``; with ``keep``, a step without a run there keeps
    its entry of the committed report (:func:`kept_entry`)."""
    os.makedirs(FIGURES, exist_ok=True)
    previous = {}
    if keep and os.path.isfile(os.path.join(RESULTS, "results.json")):
        with open(os.path.join(RESULTS, "results.json"), encoding="utf-8") as handle:
            previous = json.load(handle)
    results = {"generated_by": "scripts/results_report.py from the runs of scripts/reproduce.py",
               "planned_models": ["smollm2-135m", "gemma3-270m"], "steps": {}, "missing": [], "figures": {}}
    for step in planned_steps(work, previous):
        key = step_key(step)
        entry = collect_step(work, step.model, step.part, step.name, step.output) or kept_entry(previous, key)
        if entry is None:
            results["missing"].append(key)
            continue
        results["steps"][key] = entry
        for figure in entry["figures"]:
            results["figures"][figure["file"]] = {"sha256": figure["sha256"], "step": key,
                                                  "run_json_sha256": entry["provenance"]["run_json_sha256"]}
    plan_runs = os.path.join(work, "plan_runs.json")  # reproduce.py --jobs: wall-clock time of whole runs
    if os.path.isfile(plan_runs):
        with open(plan_runs, encoding="utf-8") as handle:
            whole = [run for run in json.load(handle) if run.get("whole_plan")]
        if whole:
            results["whole_plan_runs"] = whole
    elif previous.get("whole_plan_runs"):
        results["whole_plan_runs"] = previous["whole_plan_runs"]
    page_step = "smollm2-135m/deltalp/deltalp"
    if page_step in results["steps"]:
        folder = os.path.join(work, "smollm2-135m", "deltalp", "deltalp")
        page = os.path.join(folder, "deltalp_doc0.html")
        target = os.path.join(FIGURES, "deltalp_page.png")
        if os.path.isfile(page) and screenshot(page, target):
            results["page_screenshot"] = "docs/figures/deltalp_page.png"
            results["figures"]["deltalp_page.png"] = {
                "sha256": sha256(target), "step": page_step, "made_by": "a screenshot of deltalp_doc0.html",
                "run_json_sha256": results["steps"][page_step]["provenance"]["run_json_sha256"]}
        elif results["steps"][page_step].get("kept_from_earlier_report"):
            shot = previous.get("figures", {}).get("deltalp_page.png")
            if shot and os.path.isfile(target) and sha256(target) == shot["sha256"]:
                results["page_screenshot"] = previous["page_screenshot"]
                results["figures"]["deltalp_page.png"] = shot
    for name in os.listdir(FIGURES):  # every figure comes from a recorded run
        if name not in results["figures"]:
            os.remove(os.path.join(FIGURES, name))
    return results


def replace_block(text: str, block: str) -> str:
    start, end = text.index(START), text.index(END) + len(END)
    return text[:start] + block + text[end:]


def write_text(text: str, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default=os.path.join(REPO, "results", "reproduce"))
    parser.add_argument("--check", action="store_true", help="only check docs/results.md and the README block")
    parser.add_argument("--no-keep", action="store_true",
                        help="list a step without a run under --work as missing, even if the committed report has it")
    args = parser.parse_args(argv)
    results_path = os.path.join(RESULTS, "results.json")
    if args.check:
        with open(results_path, encoding="utf-8") as handle:
            results = json.load(handle)
        with open(REPORT, encoding="utf-8") as handle:
            stale = handle.read() != render(results)
        with open(README, encoding="utf-8") as handle:
            readme = handle.read()
        stale_readme = replace_block(readme, render_readme(results)) != readme
        for name, bad in (("docs/results.md", stale), ("README.md results block", stale_readme)):
            if bad:
                print(f"{name} is not rendered from docs/results/results.json: run scripts/results_report.py")
        return int(stale or stale_readme)
    if not os.path.isdir(args.work):
        print(f"results_report.py: error: {args.work} holds no runs: run bash scripts/reproduce.sh first",
              file=sys.stderr)
        return 2
    results = collect(os.path.abspath(args.work), keep=not args.no_keep)
    for name in os.listdir(RESULTS):  # tables of earlier report versions: the per-item tables replace them
        if name.endswith(".csv"):
            os.remove(os.path.join(RESULTS, name))
    text = json.dumps(results, indent=1, ensure_ascii=False) + "\n"
    write_text(text, results_path)
    results = json.loads(text)  # render from exactly what the file holds (as --check and the test do)
    write_text(render(results), REPORT)
    with open(README, encoding="utf-8") as handle:
        readme = handle.read()
    write_text(replace_block(readme, render_readme(results)), README)
    print(f"wrote {os.path.relpath(REPORT, REPO)} and {os.path.relpath(results_path, REPO)}: "
          f"{len(results['steps'])} runs, {len(results['missing'])} missing, {len(results['figures'])} figures")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
