"""Attribute extraction (Geva et al. 2023): project the attention output and the MLP output at the last
position of every layer to the vocabulary; an extraction event is the attribute (the model's top-1
prediction) at rank 0. Per-layer rates, per-example rates, and how often attention extracts first.

    python -m analysis.attribute_extraction --model smollm2-135m --limit 200 --output-dir results/extraction

Outputs: ``extraction.csv`` (one row per fact, sublayer, layer: rank, score, extraction, top-10 tokens),
``extraction_summary.json``, ``extraction.png`` (extraction rate per layer).
"""

from __future__ import annotations

import argparse
import logging
import time

from huggingface_patch.cli import ArgumentParser, run_cli, setup_logging, write_json
from huggingface_patch.recall.cli_common import (
    add_common_arguments,
    known_queries,
    load_checked_facts,
    load_model,
    output_path,
    write_csv,
)

logger = logging.getLogger("analysis.attribute_extraction")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m analysis.attribute_extraction", description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, "results/attribute_extraction")
    parser.add_argument("--final-norm", action="store_true",
                        help="apply the final norm before projecting (default: no norm, as in the paper)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)

    def body():
        from tqdm import tqdm

        from huggingface_patch.recall.extraction import attribute_extraction, num_layers, summarize_extraction
        from huggingface_patch.recall.plots import plot_lines

        start = time.perf_counter()
        facts = load_checked_facts(args.facts)
        model, tokenizer, source = load_model(args)
        queries, known = known_queries(args, model, tokenizer, facts)
        with tqdm(total=len(queries), desc="attribute extraction", unit="fact") as bar:
            records = attribute_extraction(model, tokenizer, queries, apply_final_norm=args.final_norm,
                                           max_rows=args.batch_rows, progress=bar)
        L = num_layers(model)
        summary = summarize_extraction(records, L)
        elapsed = time.perf_counter() - start
        write_csv(records, output_path(args, "extraction.csv"))
        write_json(dict(model=source.name, facts_total=len(facts), facts_known=known, facts_used=len(queries),
                        filter=args.filter, final_norm=args.final_norm, seconds_total=round(elapsed, 1), **summary),
                   output_path(args, "extraction_summary.json"))
        layers = list(range(1, L + 1))
        plot_lines({f"{k} (any layer: {summary['per_example_rate'][k]:.0f}%)": (layers, v)
                    for k, v in summary["per_layer_rate"].items()},
                   output_path(args, "extraction.png"), xlabel="layer", ylabel="attribute extraction rate (%)",
                   title=f"{source.name}: attribute extraction at the last position (n={len(queries)})")
        logger.info("wrote %s (%d facts, %.0f s)", args.output_dir, len(queries), elapsed)

    return run_cli(body, parser.prog)


if __name__ == "__main__":
    raise SystemExit(main())
