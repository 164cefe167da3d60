"""Subject enrichment / attributes rate (Geva et al. 2023): project hidden states at the first, subject
first, subject last, after-subject and last positions of every layer to the vocabulary, keep the top 50
non-stopword tokens (of the top 500) and measure their overlap with a reference text about the subject.

    python -m analysis.attributes_rate --model smollm2-135m --paragraphs my_paragraphs.csv --output-dir results/rate

The reference CSV has columns ``subject,paragraphs`` (default: the small example shipped with the
package); facts whose subject has no paragraph are skipped. Outputs: ``attributes_rate.csv`` (one row
per fact, position, layer), ``attributes_rate_summary.json``, ``attributes_rate.png``.
"""

from __future__ import annotations

import argparse
import logging
import time

from huggingface_patch.cli import ArgumentParser, UsageError, positive_int, run_cli, setup_logging, write_json
from huggingface_patch.recall.cli_common import (
    add_common_arguments,
    known_queries,
    load_checked_facts,
    load_model,
    output_path,
    write_csv,
)

logger = logging.getLogger("analysis.attributes_rate")


def build_parser() -> argparse.ArgumentParser:
    from huggingface_patch.recall.attributes_rate import EXAMPLE_PARAGRAPHS, POSITIONS

    parser = ArgumentParser(prog="python -m analysis.attributes_rate", description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, "results/attributes_rate")
    parser.add_argument("--paragraphs", default=EXAMPLE_PARAGRAPHS,
                        help="CSV with columns subject,paragraphs (default: the shipped example)")
    parser.add_argument("--positions", nargs="+", choices=POSITIONS, default=list(POSITIONS))
    parser.add_argument("--top-k", type=positive_int, default=500, help="top tokens before filtering (default 500)")
    parser.add_argument("--keep", type=positive_int, default=50, help="tokens kept after filtering (default 50)")
    parser.add_argument("--final-norm", action="store_true", help="apply the final norm before projecting")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)

    def body():
        from tqdm import tqdm

        from huggingface_patch.recall.attributes_rate import (
            ParagraphsError,
            attributes_rate,
            load_paragraphs,
            reference_set,
            summarize_rates,
        )
        from huggingface_patch.recall.plots import plot_bands

        start = time.perf_counter()
        facts = load_checked_facts(args.facts)
        try:
            paragraphs = load_paragraphs(args.paragraphs)
        except ParagraphsError as exc:
            raise UsageError(str(exc)) from exc
        facts = [f for f in facts if f["subject"] in paragraphs]
        if not facts:
            raise UsageError(f"no fact's subject appears in {args.paragraphs}")
        model, tokenizer, source = load_model(args)
        references = {s: reference_set(tokenizer, text) for s, text in paragraphs.items()}
        queries, known = known_queries(args, model, tokenizer, facts)
        with tqdm(total=len(queries), desc="attributes rate", unit="fact") as bar:
            records = attributes_rate(model, tokenizer, queries, references, positions=args.positions,
                                      top_k=args.top_k, keep=args.keep, apply_final_norm=args.final_norm,
                                      max_rows=args.batch_rows, progress=bar)
        summary = summarize_rates(records)
        elapsed = time.perf_counter() - start
        write_csv(records, output_path(args, "attributes_rate.csv"))
        write_json(dict(model=source.name, facts_with_paragraphs=len(facts), facts_known=known,
                        facts_used=len(queries), top_k=args.top_k, keep=args.keep, seconds_total=round(elapsed, 1),
                        summary=summary), output_path(args, "attributes_rate_summary.json"))
        plot_bands(summary, output_path(args, "attributes_rate.png"), hline=None,
                   xlabel="layer (1 = embeddings)", ylabel="attributes rate (%)",
                   title=f"{source.name}: attributes rate by position (n={len(queries)})")
        logger.info("wrote %s (%d facts, %.0f s)", args.output_dir, len(queries), elapsed)

    return run_cli(body, parser.prog)


if __name__ == "__main__":
    raise SystemExit(main())
