"""Sublayer knockout (Geva et al. 2023): knock out the MLP or the attention of a window of layers at
every position and measure, at layer m, the attribute probability (default) or the attributes rate at the
last subject position. Attention kinds: 'attention-uniform' (the paper's quirk: uniform attention over
the causal prefix) and 'attention-zero' (true zero attention).

    python -m analysis.sublayer_knockout --model smollm2-135m --limit 50 --output-dir results/sublayer

Outputs: ``sublayer.csv`` (one row per fact, kind and start layer), ``sublayer_summary.json``,
``sublayer.png`` (mean value vs first knocked-out layer, one line per kind, dashed: no intervention).
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

logger = logging.getLogger("analysis.sublayer_knockout")


def build_parser() -> argparse.ArgumentParser:
    from huggingface_patch.recall.sublayer import KINDS, METRICS

    parser = ArgumentParser(prog="python -m analysis.sublayer_knockout", description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, "results/sublayer_knockout")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS),
                        help="what to knock out (default: all)")
    parser.add_argument("--measure-layer", type=positive_int, default=None,
                        help="0-based layer whose output is measured (default: 40/48 of the depth, 25 for 30 layers)")
    parser.add_argument("--window", type=positive_int, default=11,
                        help="layers knocked out from each start (default 11, the paper's effective value)")
    parser.add_argument("--metric", choices=METRICS, default=None,
                        help="default: attributes-rate with --paragraphs, else attribute-prob")
    parser.add_argument("--paragraphs", default=None, help="CSV subject,paragraphs for the attributes rate")
    parser.add_argument("--position", default="subject-last",
                        choices=["subject-last", "subject-first", "after-subject", "last", "first"],
                        help="position measured (default subject-last)")
    parser.add_argument("--top-k", type=positive_int, default=500, help="top tokens before filtering (default 500)")
    parser.add_argument("--final-norm", action="store_true", help="apply the final norm before projecting")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)

    def body():
        from tqdm import tqdm

        from huggingface_patch.architectures import model_parts
        from huggingface_patch.recall.attributes_rate import ParagraphsError, load_paragraphs, reference_set
        from huggingface_patch.recall.plots import plot_bands
        from huggingface_patch.recall.sublayer import default_measure_layer, sublayer_knockout, summarize_sublayer

        start = time.perf_counter()
        metric = args.metric or ("attributes-rate" if args.paragraphs else "attribute-prob")
        if metric == "attributes-rate" and not args.paragraphs:
            raise UsageError("--metric attributes-rate needs --paragraphs CSV")
        facts = load_checked_facts(args.facts)
        paragraphs = None
        if args.paragraphs:
            try:
                paragraphs = load_paragraphs(args.paragraphs)
            except ParagraphsError as exc:
                raise UsageError(str(exc)) from exc
        model, tokenizer, source = load_model(args)
        L = len(model_parts(model).layers)
        m = default_measure_layer(L) if args.measure_layer is None else args.measure_layer
        if not 0 < m < L:
            raise UsageError(f"--measure-layer must be between 1 and {L - 1} for this {L}-layer model")
        references = None
        if metric == "attributes-rate":
            facts = [f for f in facts if f["subject"] in paragraphs]
            if not facts:
                raise UsageError(f"no fact's subject appears in {args.paragraphs}")
            references = {s: reference_set(tokenizer, text) for s, text in paragraphs.items()}
        queries, known = known_queries(args, model, tokenizer, facts)
        with tqdm(total=len(queries), desc="sublayer knockout", unit="fact") as bar:
            records = sublayer_knockout(model, tokenizer, queries, kinds=args.kinds, measure_layer=m,
                                        window=args.window,
                                        metric=metric, position=args.position, references=references,
                                        top_k=args.top_k, apply_final_norm=args.final_norm,
                                        max_rows=args.batch_rows, progress=bar)
        summary = summarize_sublayer(records)
        elapsed = time.perf_counter() - start
        write_csv(records, output_path(args, "sublayer.csv"))
        write_json(dict(model=source.name, facts_total=len(facts), facts_known=known, facts_used=len(queries),
                        metric=metric, position=args.position, measure_layer=m, window=args.window,
                        seconds_total=round(elapsed, 1), summary=summary), output_path(args, "sublayer_summary.json"))
        baseline = summary.pop("none", [{"mean": float("nan")}])[0]["mean"]
        ylabel = "attributes rate (%)" if metric == "attributes-rate" else "attribute probability"
        plot_bands(summary, output_path(args, "sublayer.png"), hline=baseline, xlabel="first knocked-out layer",
                   ylabel=f"{ylabel} at layer {m + 1}",
                   title=f"{source.name}: sublayer knockout, {args.window} layers (n={len(queries)}; dotted: none)")
        logger.info("wrote %s (%d facts, %.0f s)", args.output_dir, len(queries), elapsed)

    return run_cli(body, parser.prog)


if __name__ == "__main__":
    raise SystemExit(main())
