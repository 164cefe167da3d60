"""The one skeleton of the five recall tools (Geva et al. 2023): facts -> model -> known facts -> the
analysis -> summary -> CSV, JSON and plot, in one result folder with its ``run.json``.

Each tool (``analysis.attention_knockout`` and the others) is a :class:`RecallTool`: its own options, an
optional check before the model loads, the library call, its summary and its plot. Everything else is here.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from typing import Callable

from huggingface_patch.cli import ArgumentParser, UsageError, add_model_arguments, positive_int
from huggingface_patch.tool import Outcome, run_tool

#: what a ``layer`` number means in every recall table, summary and figure
LAYER_CONVENTION = "0-based index of the decoder block (its output, or its sublayer); -1 = the embeddings"


@dataclass
class RecallTool:
    """One recall analysis.

    ``files``: the table, summary and figure names; ``add_arguments(parser)``: its own options;
    ``prepare(args, facts) -> (facts, options)``: checks and set-up before the model loads (one-line errors);
    ``analyse(model, tokenizer, queries, args, options, progress) -> RecallResult`` (the library call);
    ``plot(summary, path, title, args, options)``.
    """

    name: str
    description: str
    default_output: str
    files: tuple[str, str, str]
    add_arguments: Callable
    analyse: Callable
    plot: Callable
    prepare: Callable | None = None
    check_model: Callable | None = None

    @property
    def prog(self) -> str:
        return f"python -m analysis.{self.name}"

    def parser(self) -> argparse.ArgumentParser:
        from huggingface_patch.recall.queries import DEFAULT_FACTS, FILTERS
        from huggingface_patch.recall.statistics import CLUSTER_BY

        parser = ArgumentParser(prog=self.prog, description=self.description)
        add_model_arguments(parser)
        parser.add_argument("--facts", default=DEFAULT_FACTS,
                            help="JSON list of facts with 'subject' and 'prompt' (default: the shipped "
                                 "known_1000.json)")
        parser.add_argument("--sample", type=positive_int, default=None, metavar="N",
                            help="a random sample of N of the facts the model knows (drawn with --seed; default: "
                                 "every known fact)")
        parser.add_argument("--seed", type=int, default=0,
                            help="seed of the sample and of every bootstrap (default 0; recorded)")
        parser.add_argument("--cluster", choices=CLUSTER_BY, default="relation",
                            help="what a cluster of facts is for the intervals and paired tests: facts of one "
                                 "'relation' (default) share a template and a kind of answer; 'subject'; 'none' "
                                 "(facts independent)")
        parser.add_argument("--filter", choices=FILTERS, default="greedy",
                            help="which facts to keep: 'greedy' (default) = greedy continuation starts with the "
                                 "attribute; 'first-token' = top-1 token is a prefix of the attribute; 'none' = keep "
                                 "all (for random test models). The top-1 token is the attribute in every case")
        parser.add_argument("--batch-rows", type=positive_int, default=256,
                            help="maximum rows per forward pass (default 256)")
        parser.add_argument("--output-dir", default=self.default_output,
                            help=f"output folder (default {self.default_output})")
        self.add_arguments(parser)
        return parser

    def main(self, argv: list[str] | None = None) -> int:
        args = self.parser().parse_args(argv)
        log = logging.getLogger(f"analysis.{self.name}")
        state: dict = {}

        def check(args) -> None:
            """The facts and the tool's own set-up, before the model loads (one-line errors)."""
            from huggingface_patch.recall.queries import load_facts

            state["started"] = time.perf_counter()
            facts = load_facts(args.facts)
            if not any(_subject_found(f) for f in facts):
                raise UsageError(f"no fact's subject appears in its prompt (fact 0: {facts[0]['subject']!r} is not in "
                                 f"{facts[0]['prompt']!r}): fix the facts file's 'subject' or 'prompt' fields")
            state["facts"], state["options"] = self.prepare(args, facts) if self.prepare is not None else (facts, {})

        return run_tool(self.prog, args, lambda args, bundle: self._run(args, bundle, state, log), check=check,
                        decomposed=False, log=log)

    def _run(self, args, bundle, state: dict, log) -> Outcome:
        """Known facts -> sample -> the analysis -> summary, as the result and its writer."""
        from tqdm.auto import tqdm

        from huggingface_patch.recall.queries import sample_queries
        from huggingface_patch.recall.statistics import cluster_labels
        from huggingface_patch.records import analysis_record, describe_file

        model, tokenizer, source, start = bundle.model, bundle.tokenizer, bundle.source, bundle.start
        facts, options, started = state["facts"], state["options"], state["started"]
        if self.check_model is not None:
            self.check_model(model, args, options)
        loaded = time.perf_counter()
        facts_file = describe_file(args.facts)
        known = _known(args, model, tokenizer, facts, facts_file, start, log)
        queries = sample_queries(known, args.sample, args.seed)
        options["clusters"] = cluster_labels(queries, args.cluster)
        with tqdm(total=len(queries), desc=self.name.replace("_", " "), unit="fact") as bar:
            result = self.analyse(model, tokenizer, queries, args, options, bar)
        summary = result.summary
        elapsed = time.perf_counter() - started
        settings = {k: v for k, v in vars(args).items() if k not in ("output_dir", "verbose", "device", "model")}
        settings["start_token"] = start.describe()  # what --bos resolved to, not just "auto"
        record = analysis_record(self.prog, settings, model=model, model_name=source.name, model_argument=args.model,
                                 tokenizer=tokenizer, inputs={"facts": facts_file})
        counts = dict(model=source.name, facts_total=len(facts), facts_known=len(known), facts_used=len(queries),
                      sample=dict(size=args.sample, seed=args.seed, drawn_from=len(known)), filter=args.filter,
                      start_token=start.describe(), layer_convention=LAYER_CONVENTION,
                      seconds_total=round(elapsed, 1), seconds_loading=round(loaded - started, 1))
        figure = self.files[2]
        result.summary = dict(counts, **summary)  # what the run knows first, then the analysis's own summary

        def write(out) -> None:
            result.write(out)
            self.plot(summary, out.path(figure), f"{source.name}: {{}} (n={len(queries)})", args, options)

        return Outcome(record, write, f"{len(queries)} facts")


def _known(args, model, tokenizer, facts: list[dict], facts_file: dict, start, log) -> list:
    """The queries of the facts the model knows (``--filter``); a usage error when it knows none."""
    from tqdm.auto import tqdm

    from huggingface_patch.recall.queries import known_queries

    with tqdm(total=len(facts), desc="filtering facts", unit="fact") as bar:
        # the model's answers to every fact are cached (keyed by config, weights, dtype, tokenizer,
        # facts, filter and start token), so the tools after the first one on a model skip the filter
        known, selection = known_queries(model, tokenizer, facts, facts_file["sha256"], filter=args.filter,
                                         start=start, batch_size=min(64, args.batch_rows), progress=bar)
    log.info("known facts: %s", {"cached": "read from the cache", "computed": "computed and cached"}[selection])
    if not known:
        raise UsageError(f"the model knows none of the {len(facts)} facts with --filter {args.filter}; "
                         "try --filter first-token or --filter none")
    log.info("the model knows %d of %d facts (filter %s)", len(known), len(facts), args.filter)
    return known


def _subject_found(fact: dict) -> bool:
    from huggingface_patch.recall.queries import find_subject

    try:
        find_subject(fact["prompt"], fact["subject"])
    except ValueError:
        return False
    return True
