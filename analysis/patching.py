"""Patching early representations (Geva et al. 2023): replace the input of layer l at the subject,
non-subject or last positions with the hidden state of an earlier layer l' and measure attention
extraction at l (per-example rate over layers l > l', against the unpatched rate).

    python -m analysis.patching --model smollm2-135m --limit 20 --output-dir results/patching

Outputs: ``patching.csv`` (one row per fact, set, source layer and layer: rank, extraction),
``patching_summary.json``, ``patching.png`` (per-example extraction rate vs source layer).
"""

from __future__ import annotations

import argparse
import logging
import time

from huggingface_patch.cli import ArgumentParser, non_negative_int, run_cli, setup_logging, write_json
from huggingface_patch.recall.cli_common import (
    add_common_arguments,
    known_queries,
    load_checked_facts,
    load_model,
    output_path,
    write_csv,
)

logger = logging.getLogger("analysis.patching")


def build_parser() -> argparse.ArgumentParser:
    from huggingface_patch.recall.patching import DEFAULT_SOURCES, POSITION_SETS

    parser = ArgumentParser(prog="python -m analysis.patching", description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, "results/patching")
    parser.add_argument("--sources", nargs="+", type=non_negative_int, default=list(DEFAULT_SOURCES),
                        help="source layers l' (hidden_states index; default 0 1 5 10 20; those >= L-1 are dropped)")
    parser.add_argument("--sets", nargs="+", choices=POSITION_SETS, default=list(POSITION_SETS),
                        help="positions patched (default: all)")
    parser.add_argument("--final-norm", action="store_true", help="apply the final norm before projecting")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)

    def body():
        from tqdm import tqdm

        from huggingface_patch.recall.patching import patching_extraction, summarize_patching
        from huggingface_patch.recall.plots import plot_lines

        start = time.perf_counter()
        facts = load_checked_facts(args.facts)
        model, tokenizer, source = load_model(args)
        queries, known = known_queries(args, model, tokenizer, facts)
        with tqdm(total=len(queries), desc="patching", unit="fact") as bar:
            records = patching_extraction(model, queries, sources=args.sources, position_sets=args.sets,
                                          apply_final_norm=args.final_norm, max_rows=args.batch_rows, progress=bar)
        summary = summarize_patching(records)
        elapsed = time.perf_counter() - start
        write_csv(records, output_path(args, "patching.csv"))
        write_json(dict(model=source.name, facts_total=len(facts), facts_known=known, facts_used=len(queries),
                        seconds_total=round(elapsed, 1), **summary), output_path(args, "patching_summary.json"))
        series = {f"patch {name}": (summary["sources"], rates) for name, rates in summary["patched"].items()}
        series["no patching"] = (summary["sources"], summary["unpatched"])
        plot_lines(series, output_path(args, "patching.png"), xlabel="source layer l' (hidden_states index)",
                   ylabel="% examples with attention extraction",
                   title=f"{source.name}: patching early representations (n={len(queries)})")
        logger.info("wrote %s (%d facts, %.0f s)", args.output_dir, len(queries), elapsed)

    return run_cli(body, parser.prog)


if __name__ == "__main__":
    raise SystemExit(main())
