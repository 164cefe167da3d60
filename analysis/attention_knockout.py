"""Attention knockout (Geva et al. 2023): block the edges from the last position to the subject, the
non-subject positions, or the last position itself, over windows of k layers; plot the relative change
of the predicted token's probability per layer.

    python -m analysis.attention_knockout --model smollm2-135m --output-dir results/knockout

Outputs: ``knockout.csv`` (one row per fact, set and layer), ``knockout_summary.json`` (per set and layer:
mean and 95% CI; facts known; run time), ``queries.json`` (the facts used), ``knockout.png``.
"""

from __future__ import annotations

import argparse
import logging
import time

from huggingface_patch.cli import ArgumentParser, positive_int, run_cli, setup_logging, write_json
from huggingface_patch.recall.cli_common import (
    add_common_arguments,
    known_queries,
    load_checked_facts,
    load_model,
    output_path,
    write_csv,
)

logger = logging.getLogger("analysis.attention_knockout")


def build_parser() -> argparse.ArgumentParser:
    from huggingface_patch.recall.knockout import list_knockout_sets

    parser = ArgumentParser(prog="python -m analysis.attention_knockout", description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, "results/attention_knockout")
    parser.add_argument("--window", type=positive_int, default=9,
                        help="layers knocked out around each layer (default 9)")
    parser.add_argument("--sets", nargs="+", default=list_knockout_sets(), choices=list_knockout_sets(),
                        help="target sets (default: all)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)

    def body():
        from tqdm import tqdm

        from huggingface_patch.recall.knockout import attention_knockout, summarize
        from huggingface_patch.recall.plots import plot_bands

        start = time.perf_counter()
        facts = load_checked_facts(args.facts)
        model, tokenizer, source = load_model(args)
        loaded = time.perf_counter()
        queries, known = known_queries(args, model, tokenizer, facts)
        with tqdm(total=len(queries), desc="attention knockout", unit="fact") as bar:
            records = attention_knockout(model, queries, window=args.window, sets=args.sets,
                                         max_rows=args.batch_rows, progress=bar)
        summary = summarize(records)
        elapsed = time.perf_counter() - start
        write_csv(records, output_path(args, "knockout.csv"))
        write_json([q.summary() for q in queries], output_path(args, "queries.json"))
        write_json(dict(model=source.name, facts_file=args.facts, facts_total=len(facts), facts_known=known,
                        facts_used=len(queries), filter=args.filter, window=args.window,
                        seconds_total=round(elapsed, 1), seconds_loading=round(loaded - start, 1),
                        metric="(p_new - p_base) / p_base * 100", summary=summary),
                   output_path(args, "knockout_summary.json"))
        plot_bands(summary, output_path(args, "knockout.png"),
                   title=f"{source.name}: attention knockout from the last position "
                         f"(k={args.window}, n={len(queries)})",
                   ylabel="% change in prediction probability")
        logger.info("wrote %s (%d facts, %.0f s)", args.output_dir, len(queries), elapsed)

    return run_cli(body, parser.prog)


if __name__ == "__main__":
    raise SystemExit(main())
