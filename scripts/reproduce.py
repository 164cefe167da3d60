"""Regenerate every number and figure of ``docs/results.md``: each analysis on each bundled real model.

    bash scripts/reproduce.sh                         # every part, both models, then the report
    bash scripts/reproduce.sh --parts saturation      # one part (both models), then the report
    bash scripts/reproduce.sh --models smollm2-135m --parts deltalp
    bash scripts/reproduce.sh --report-only           # rebuild docs/results* from the runs already there
    bash scripts/reproduce.sh --list                  # the steps and their commands, nothing run
    bash scripts/reproduce.sh --jobs 2                # two lanes at once (a part of one model per process)

Each step is one command-line tool of this repository, run in a fresh process with its own progress bars,
writing into ``--work`` (default ``results/reproduce/{model}/{part}/{step}``). A step whose output folder holds
a complete run of the same command is skipped (``--force`` reruns it), so an interrupted reproduction resumes.
Wall-clock seconds per step and part go to ``{work}/timings.json`` and are printed at the end. ``--jobs N``
runs the parts as N lanes of processes (one model's part each, longest first by the recorded minutes, each
with ``cpus / N`` threads, its output in ``{work}/logs/``) and appends the run's wall-clock time to
``{work}/plan_runs.json``: the figure the two-hour target is about. Then
``scripts/results_report.py`` turns the runs into ``docs/results/*.json|csv``, ``docs/figures/*.png`` and
``docs/results.md``.

The settings of every part, and why, are in ``docs/results.md`` ("How the numbers were made").
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "scripts"))  # the report package (report.collect: the per-item tables)

from report.texts import essays_corpus, saturation_corpus  # noqa: E402

MODELS = ("smollm2-135m", "gemma3-270m")
PARTS = ("recall", "saturation", "deltalp", "embedding", "faithfulness", "path_length")
DATA = os.path.join(REPO, "huggingface_patch", "data")
ESSAYS = os.path.join(REPO, "examples", "essays.sentitems")
PARAGRAPHS = os.path.join(DATA, "reference_paragraphs.csv")
#: (target, source) pairs of the ΔLP-vs-ablation comparison
ABLATION_PAIRS = 1000
#: tokens per essay in that comparison (each pair reruns the model on the essay without one token)
ABLATION_TOKENS = 128
#: the faithfulness benchmark: random essay targets (24 tokens of context each) and known-answer items per task
FAITHFULNESS_TARGETS = 100
FAITHFULNESS_TASK_ITEMS = 200


@dataclass
class Step:
    """One tool run: ``module`` (``python -m``) or a script path, its arguments, and its output folder."""

    part: str
    model: str
    name: str
    argv: list[str]
    output: str

    @property
    def command(self) -> list[str]:
        return [sys.executable, *self.argv, "--output-dir", self.output]


def num_layers(model: str) -> int:
    """Decoder layers of a bundled model (from its converted folder's config)."""
    from transformers import AutoConfig

    from huggingface_patch.bundled import bundled_folder

    config = AutoConfig.from_pretrained(bundled_folder(model))
    return int(getattr(config, "num_hidden_layers", None) or config.text_config.num_hidden_layers)


def patching_sources(layers: int) -> list[str]:
    """The paper's sources ``hidden_states`` 0, 1, 5, 10, 20 of 48 scaled to ``layers``, as the 0-based blocks
    whose output is patched in (``hidden_states[l]`` is the output of block ``l - 1``; -1 = the embeddings;
    distinct, at most ``L - 3`` so that a later block exists to patch)."""
    scaled = sorted({0, 1, *(round(s * layers / 48) for s in (5, 10, 20))})
    return [str(s - 1) for s in scaled if s - 1 <= layers - 3]


@dataclass(frozen=True)
class Sizes:
    """A shorter run's sizes (None: the plan's). ``facts``: a random sample of N known facts in the recall part;
    ``items``: the first N articles of the saturation text; ``essays``: the first N essays for ΔLP; ``pairs``:
    ablation pairs; ``targets``: the faithfulness benchmark's random essay targets; ``task_items``: its
    known-answer items per task."""

    facts: int | None = None
    items: int | None = None
    essays: int | None = None
    pairs: int | None = None
    targets: int | None = None
    task_items: int | None = None


def steps_for(part: str, model: str, work: str, sizes: Sizes = Sizes()) -> list[Step]:
    """The steps of one part for one model (``path_length`` compares both models in one step)."""
    facts, items, essays, pairs = sizes.facts, sizes.items, sizes.essays, sizes.pairs
    out = os.path.join(work, model, part)
    limit = ["--sample", facts] if facts else []

    def step(name: str, *argv) -> Step:
        return Step(part, model, name, [str(a) for a in argv], os.path.join(out, name))

    if part == "recall":
        layers = num_layers(model)
        common = ["--model", model]
        # the attributes-rate steps read only the subjects with a reference paragraph (62), so no limit there
        return [
            step("knockout", "-m", "analysis.attention_knockout", *common, *limit),
            step("extraction", "-m", "analysis.attribute_extraction", *common, *limit),
            step("extraction_final_norm", "-m", "analysis.attribute_extraction", *common, *limit, "--final-norm"),
            step("attributes_rate", "-m", "analysis.attributes_rate", *common, "--paragraphs", PARAGRAPHS),
            step("attributes_rate_final_norm", "-m", "analysis.attributes_rate", *common, "--paragraphs",
                 PARAGRAPHS, "--final-norm"),
            step("sublayer", "-m", "analysis.sublayer_knockout", *common, "--metric", "attributes-rate",
                 "--paragraphs", PARAGRAPHS, "--final-norm", "--kinds", "mlp", "attention-uniform",
                 "attention-zero"),
            step("patching", "-m", "analysis.patching", "--model", model, *limit, "--final-norm",
                 "--sources", *patching_sources(layers)),
        ]
    if part == "saturation":
        corpus = saturation_corpus(work)
        common = ["--model", model, "--corpus", corpus, *(["--max-items", items] if items else [])]
        # one pass over the text for layers, order, probe, early exit and lm (the collection is the costly part);
        # the untrained control: the same architecture re-initialised (seed 0), the same text and tokenizer
        return [step("all", "-m", "analysis.saturation", "all", *common),
                step("random_init", "-m", "analysis.saturation", "all", *common, "--random-init", 0)]
    if part == "deltalp":
        corpus = essays_corpus(work, essays)
        return [
            step("deltalp", "-m", "analysis.deltalp", "--model", model, "--corpus", corpus, "--window", 50, "--html",
                 "--lens", "--plot-range", "0:0-39"),
            step("ablation", "-m", "analysis.ablation_agreement", "--model", model, "--corpus", corpus, "--window",
                 50, "--pairs", pairs or ABLATION_PAIRS, "--max-tokens", ABLATION_TOKENS),
        ]
    if part == "embedding":
        common = ["--model", model]
        return [
            step("select", "-m", "analysis.embedding_space", "select", *common, "--corpus", ESSAYS),
            step("align", "-m", "analysis.embedding_space", "align", *common, "--corpus", ESSAYS, "--only-ascii"),
            # the readings of the selected parameters are added once the selection exists (see expand)
        ]
    if part == "faithfulness":
        return [step("benchmark", "-m", "analysis.faithfulness", "--model", model, "--corpus", ESSAYS, "--items",
                     sizes.targets or FAITHFULNESS_TARGETS, "--task-items",
                     sizes.task_items or FAITHFULNESS_TASK_ITEMS)]
    if part == "path_length":
        both = [arg for name in MODELS for arg in ("--model", name)]
        corpus = saturation_corpus(work)
        return [Step(part, "both", "path_length", ["-m", "analysis.path_length", *both, "--corpus", corpus,
                                                    "--max-tokens", "256"], os.path.join(work, "both", part))]
    raise ValueError(part)


def expand(step: Step, selection: dict | None = None) -> list[Step]:
    """Steps that follow from a finished step's output: the FF / VO / QK readings of the selected parameters
    (``selection``: that output's ``selection.json``, read from the step's folder when not given)."""
    if step.name != "select":
        return []
    if selection is None:
        with open(os.path.join(step.output, "selection.json"), encoding="utf-8") as handle:
            selection = json.load(handle)
    base = os.path.dirname(step.output)
    follow = []
    for entry in selection["chosen"]:
        layer = entry["layer"]
        readings = (("ff", "--neuron", entry["neuron"], f"ff_L{layer}"),
                    ("vo", "--head", entry["vo_head"], f"vo_L{layer}"),
                    ("qk", "--head", entry["qk_head"], f"qk_L{layer}"))
        for command, flag, value, name in readings:
            if value is None:  # a mixture-of-experts layer has no dense neuron to read
                continue
            follow.append(Step(step.part, step.model, name,
                               ["-m", "analysis.embedding_space", command, "--model", step.model, "--layer",
                                str(layer), flag, str(value), "--only-ascii"], os.path.join(base, name)))
    return follow


def done(step: Step) -> bool:
    """The step's folder holds a complete run (``run.json``, written last) of this very command."""
    marker = os.path.join(step.output, "reproduce.json")
    if not (os.path.isfile(os.path.join(step.output, "run.json")) and os.path.isfile(marker)):
        return False
    with open(marker, encoding="utf-8") as handle:
        return json.load(handle).get("argv") == step.argv


class StepFailed(Exception):
    """A step's tool exited with an error (it printed its one-line message)."""


def count_items(step: Step) -> int | None:
    """Rows of the step's per-item table (None when it has none); the faithfulness benchmark's items are its
    targets and known-answer items (its table has a row per item and method)."""
    from report.collect import ITEM_TABLES

    if step.name == "benchmark":
        path = os.path.join(step.output, "faithfulness_summary.json")
        if not os.path.isfile(path):
            return None
        with open(path, encoding="utf-8") as handle:
            summary = json.load(handle)
        return summary["corpus_items"] + sum(summary["task_items"].values())
    name = ITEM_TABLES.get(step.name)
    path = os.path.join(step.output, name) if name else None
    if path is None or not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8", newline="") as handle:  # rows, not lines: a token cell may hold a newline
        return max(0, sum(1 for _ in csv.reader(handle)) - 1)


def forward_seconds(model: str) -> float:
    """Seconds of one forward pass of ``model`` on a known_1000 prompt (median of 15, batch 1, the last
    position's logits): the unit of every step's cost per item."""
    import statistics

    import torch

    from huggingface_patch.loading import load_model_and_tokenizer
    from huggingface_patch.recall.queries import load_facts

    loaded, tokenizer, _ = load_model_and_tokenizer(model, decomposed=False)
    prompts = [f["prompt"] for f in load_facts()[:15]]
    times = []
    with torch.no_grad():
        for prompt in prompts:
            ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
            start = time.perf_counter()
            loaded(input_ids=ids, use_cache=False, logits_to_keep=1)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(step: Step, index: int, total: int, forward: dict) -> dict:
    """Run one step in this process (its own progress bars on stderr; models are loaded once per process, see
    :func:`huggingface_patch.loading.reuse_models`); returns its timing record."""
    import importlib
    import runpy

    print(f"[{index}/{total}] {step.part} / {step.model} / {step.name}: {' '.join(step.command[1:])}", flush=True)
    from huggingface_patch import _source

    source = _source._read()  # the code the step imports (its run.json reads it too)
    argv = [*step.argv[2:], "--output-dir", step.output] if step.argv[0] == "-m" else [*step.argv[1:], "--output-dir",
                                                                                        step.output]
    start, load_before = time.perf_counter(), os.getloadavg()[0]
    if step.argv[0] == "-m":
        code = importlib.import_module(step.argv[1]).main(argv)
    else:
        saved = sys.argv
        sys.argv = [step.argv[0], *argv]
        try:
            code = runpy.run_path(step.argv[0], run_name="__main__").get("exit_code", 0)
        except SystemExit as exc:
            code = exc.code or 0
        finally:
            sys.argv = saved
    seconds = time.perf_counter() - start
    if code:
        raise StepFailed(f"step {step.part}/{step.model}/{step.name} failed (exit code {code}; its message is above); "
                         f"fix it and run again: finished steps are kept")
    items = count_items(step)
    import torch

    # what else ran: minutes taken beside other jobs overstate a step's cost, its forward passes per item do not
    record = {"seconds": round(seconds, 1), "items": items, "threads": torch.get_num_threads(),
              "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)], "cpus": os.cpu_count()}
    if items:
        record["seconds_per_item"] = round(seconds / items, 4)
        if step.model in forward:
            record["forward_pass_equivalents_per_item"] = round(seconds / items / forward[step.model], 3)
    with open(os.path.join(step.output, "reproduce.json"), "w", encoding="utf-8") as handle:
        json.dump({"argv": step.argv, **record, "source_at_start": source}, handle, indent=2)
    cost = f"; {items} items, {record.get('seconds_per_item', 0):.3g} s each" if items else ""
    if "forward_pass_equivalents_per_item" in record:
        cost += f" = {record['forward_pass_equivalents_per_item']:.2f} forward passes of a prompt"
    print(f"      done in {seconds / 60:.1f} min{cost}", flush=True)
    return record


def build_parser():
    from huggingface_patch.cli import ArgumentParser, positive_int

    parser = ArgumentParser(prog="reproduce.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    parser.add_argument("--work", default=os.path.join(REPO, "results", "reproduce"),
                        help="folder of the raw runs (default results/reproduce)")
    parser.add_argument("--facts", type=positive_int, default=None,
                        help="recall: a random sample of N known facts (seed 0; default every one; a shorter run)")
    parser.add_argument("--items", type=positive_int, default=None,
                        help="saturation: only the first N articles of its text (default all; a shorter run)")
    parser.add_argument("--essays", type=positive_int, default=None,
                        help="ΔLP: only the first N essays (default all; a shorter run)")
    parser.add_argument("--pairs", type=positive_int, default=None,
                        help=f"ΔLP vs ablation: this many pairs (default {ABLATION_PAIRS})")
    parser.add_argument("--targets", type=positive_int, default=None,
                        help=f"faithfulness: this many random essay targets (default {FAITHFULNESS_TARGETS})")
    parser.add_argument("--task-items", type=positive_int, default=None,
                        help=f"faithfulness: known-answer items per task (default {FAITHFULNESS_TASK_ITEMS}; the first "
                             "the model gets right in the seeded generator's order)")
    parser.add_argument("--steps", nargs="+", default=None, metavar="NAME",
                        help="only the steps of these names (as --list prints them, e.g. random_init)")
    parser.add_argument("--force", action="store_true", help="rerun steps that are already complete")
    parser.add_argument("--jobs", type=positive_int, default=1,
                        help="run the parts in this many lanes at once, one process per model and part, longest "
                             "first, each with cpus / N threads (default 1: every step in this process)")
    parser.add_argument("--list", action="store_true", help="print the steps and exit")
    parser.add_argument("--report-only", action="store_true", help="only rebuild the report from existing runs")
    parser.add_argument("--no-report", action="store_true", help="run the steps, do not rebuild the report")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    work = os.path.abspath(args.work)
    if args.report_only and not os.path.isfile(os.path.join(work, "timings.json")):
        print(f"reproduce.py: error: {work} holds no runs (no timings.json): the report would be empty, so docs/ is "
              "left as it is; give the --work folder of a reproduction", file=sys.stderr)
        return 2
    if not args.report_only:
        steps: list[Step] = []
        sizes = Sizes(args.facts, args.items, args.essays, args.pairs, args.targets, args.task_items)
        for model in args.models:  # model by model: each is loaded once for all its parts
            for part in args.parts:
                if part != "path_length":
                    steps.extend(steps_for(part, model, work, sizes))
        if "path_length" in args.parts:
            steps.extend(steps_for("path_length", MODELS[0], work))
        if args.steps:
            names = {step.name for step in steps}
            unknown = sorted(set(args.steps) - names)
            if unknown:
                parser.error(f"--steps {' '.join(unknown)}: no such step in the parts chosen; --list shows them")
            steps = [step for step in steps if step.name in args.steps]
        if args.list:
            for step in steps:
                print(f"{step.part:12} {step.model:14} {step.name:28} {' '.join(step.command[1:])}")
            if args.jobs > 1:
                from lanes import predicted

                order, lanes = predicted(steps, work, args.jobs)
                print(f"\n{args.jobs} lanes, longest unit first: " + ", ".join(f"{m}/{p}" for m, p in order)
                      + f"; the recorded minutes predict {max(lanes) / 60:.0f} min of wall time")
            return 0
        if args.jobs > 1:
            from lanes import run_lanes

            if run_lanes(steps, work, args, done, full=set(args.models) == set(MODELS) and set(args.parts) == set(PARTS)
                         and not args.steps and sizes == Sizes()):
                return 1
        else:
            try:
                run_steps(steps, work, args.force)
            except StepFailed as exc:
                print(f"reproduce.py: {exc}", file=sys.stderr)
                return 1
    if args.no_report:
        return 0
    command = [sys.executable, os.path.join(REPO, "scripts", "results_report.py"), "--work", work]
    return subprocess.run(command, cwd=REPO).returncode


def run_steps(steps: list[Step], work: str, force: bool) -> None:
    """Run the steps not yet complete, in this process, models loaded once; timings to ``{work}/timings.json``."""
    from report.timings import print_timings, read_timings, record_timing

    from huggingface_patch.loading import reuse_models

    queue, index, forward = list(steps), 0, {}
    with reuse_models():
        while queue:
            step = queue.pop(0)
            index += 1
            key = f"{step.part}/{step.model}/{step.name}"
            if done(step) and not force:
                print(f"[{index}/{index + len(queue)}] {key}: complete, skipped", flush=True)
            else:
                if step.model in MODELS and step.model not in forward:
                    forward[step.model] = forward_seconds(step.model)
                    print(f"      one forward pass of a fact prompt: {forward[step.model] * 1000:.1f} ms", flush=True)
                record_timing(work, key, run(step, index, index + len(queue), forward))
            queue[0:0] = expand(step)
    print_timings(read_timings(work))


if __name__ == "__main__":
    raise SystemExit(main())
