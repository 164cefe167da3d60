"""How faithful ΔLP is next to the attribution methods people use, each computed by its own package.

    python -m analysis.faithfulness --model smollm2-135m --output-dir out/faithfulness

Every method scores the same items: random next-token targets of a text (``--items``, ``--context`` tokens
before each), and two tasks with a known answer generated from templates (indirect-object identification,
subject-verb agreement across an attractor; ``--task-items`` each, kept only where the model gets the answer
right). Metrics: agreement with leave-one-out, deletion curves (MoRF / LeRF and the area between), the linear
datamodeling score, the reciprocal rank of the right source; each with a cluster-bootstrap interval, ΔLP
paired against every other method (Holm-adjusted), and the cost of each method in forward passes.

Writes ``faithfulness.csv`` (per item and method), ``faithfulness_scores.csv`` (every score, with its token),
``faithfulness_curves.csv``, ``faithfulness_summary.json``, ``faithfulness.png`` and ``run.json``. The peer
methods need the ``[compare]`` packages (captum, lxt): ``bash scripts/install.sh`` installs them. See
docs/faithfulness.md.
"""

from __future__ import annotations

import argparse
import logging

from huggingface_patch.cli import ArgumentParser, UsageError, add_model_arguments, non_negative_int, positive_int
from huggingface_patch.corpus import EXAMPLE_ESSAYS
from huggingface_patch.faithfulness.benchmark import METHODS, METRIC_GROUPS
from huggingface_patch.tool import Outcome, run_tool

log = logging.getLogger("analysis.faithfulness")
PROG = "python -m analysis.faithfulness"


def build_parser() -> argparse.ArgumentParser:
    from huggingface_patch.faithfulness.methods import list_methods

    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list_methods(), metavar="METHOD",
                        help=f"attribution methods (default all: {', '.join(METHODS)})")
    parser.add_argument("--metrics", nargs="+", default=list(METRIC_GROUPS), choices=METRIC_GROUPS,
                        metavar="METRIC", help=f"metric groups (default all: {', '.join(METRIC_GROUPS)})")
    parser.add_argument("--corpus", default=EXAMPLE_ESSAYS,
                        help="sentitems or plain-text file of the random targets (default: the bundled essays)")
    parser.add_argument("--items", type=non_negative_int, default=200,
                        help="random corpus targets (default 200; 0: the known-answer tasks only)")
    parser.add_argument("--context", type=positive_int, default=24,
                        help="tokens of context before each corpus target, the target included (default 24)")
    parser.add_argument("--task-items", type=non_negative_int, default=200,
                        help="known-answer items per task that the model gets right (default 200; 0: none)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    parser.add_argument("--output-dir", default="faithfulness_output", help="folder for CSV/JSON/PNG (created)")
    parser.add_argument("--no-plots", action="store_true", help="write CSV/JSON only")
    return parser


def check_arguments(args) -> None:
    """Refuse, before anything loads, settings that cannot give a result."""
    from huggingface_patch.faithfulness.methods import INSTALL_HINT, missing_package

    missing = [f"{m} ({missing_package(m)})" for m in args.methods if missing_package(m)]
    if missing:
        raise UsageError(f"{', '.join(missing)} need packages that are not installed: {INSTALL_HINT}, or leave "
                         "these methods out of --methods")
    if "agreement" in args.metrics and "leave-one-out" not in args.methods:
        args.methods.append("leave-one-out")  # the reference of the agreement metrics is also a method
    corpus_metrics = {"agreement", "deletion", "lds"} & set(args.metrics)
    if not (corpus_metrics and args.items) and not ("known-answer" in args.metrics and args.task_items):
        raise UsageError("nothing to score: give --items above 0 with a corpus metric, or --task-items above 0 "
                         "with --metrics known-answer")
    if args.context < 4:
        raise UsageError(f"--context must be at least 4 tokens, got {args.context}")
    if str(args.bos).lower() == "none":
        raise UsageError("the benchmark needs a start token (position 0 is never a source): use --bos auto or "
                         "name a token")


def run(args, bundle) -> Outcome:
    from huggingface_patch.faithfulness.benchmark import run_benchmark
    from huggingface_patch.faithfulness.items import corpus_items, known_answer_items, with_texts
    from huggingface_patch.records import analysis_record, describe_file
    from huggingface_patch.residual_stream.documents import load_documents

    model, tokenizer, source, start = bundle.model, bundle.tokenizer, bundle.source, bundle.start
    if start.id is None:
        raise UsageError(f"{source.name} has no start token: name one with --bos")
    documents = load_documents(args.corpus) if args.items else []
    corpus = corpus_items(tokenizer, documents, start, args.items, args.context, args.seed) if args.items else []
    tasks, tried = [], {}
    if "known-answer" in args.metrics and args.task_items:
        for task in ("ioi", "agreement"):
            kept, tried[task] = known_answer_items(model, tokenizer, start, task, args.task_items, args.seed)
            log.info("%s: the model gets %d of %d candidates right", task, len(kept), tried[task])
            tasks += kept
    with_texts(corpus + tasks, tokenizer)
    settings = dict(methods=args.methods, metrics=args.metrics, items=args.items, context=args.context,
                    task_items=args.task_items, seed=args.seed, dtype=args.dtype)
    inputs = {"corpus": describe_file(args.corpus)} if args.items else {}
    record = analysis_record(PROG, settings, model=model, model_name=source.name, model_argument=args.model,
                             tokenizer=tokenizer, inputs=inputs)
    record["start_token"] = start.describe()
    record["candidates_tried"] = tried
    done = {}

    def write(out) -> None:  # the benchmark runs inside the result folder: a refused folder costs no work
        result = run_benchmark(model, corpus, tasks, args.methods, args.metrics, seed=args.seed,
                               tokenizer=tokenizer, model_path=source.path, model_kwargs=source.kwargs)
        result.settings["candidates_tried"] = tried
        result.write(out, source.name, plots=not args.no_plots)
        done["result"] = result

    def report() -> str:
        return "; ".join(f"{method}: " + ", ".join(f"{k} {v['estimate']:.3f}" for k, v in metrics.items())
                         for method, metrics in done["result"].summary.items())

    return Outcome(record, write, report)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.methods = list(dict.fromkeys(args.methods))
    return run_tool(PROG, args, run, check=_check, log=log)


def _check(args) -> None:
    from huggingface_patch.residual_stream.documents import load_documents

    check_arguments(args)
    if args.items:
        load_documents(args.corpus)  # a missing or empty corpus fails before the model loads


if __name__ == "__main__":
    raise SystemExit(main())
