"""Agreement of ΔLP with real ablation: for sampled (target, source) pairs, remove the source token from the
input, re-run the model, and compare the drop in the target's log-probability with ΔLP (Spearman, Pearson).

    python -m analysis.ablation_agreement --model smollm2-135m --corpus examples/corpus.sentitems --pairs 200

Outputs in ``--output-dir``: ``ablation_pairs.csv`` (document, target, source, tokens, delta_lp,
real_delta_lp), ``ablation_summary.json`` (correlations, settings), ``ablation_scatter.png`` and ``run.json``.
The library is :func:`huggingface_patch.attribution.ablation.ablation_study`.
"""

from __future__ import annotations

import argparse
import logging

from huggingface_patch.cli import ArgumentParser, add_model_arguments, non_negative_int, positive_int
from huggingface_patch.corpus import EXAMPLE_CORPUS
from huggingface_patch.tool import Outcome, run_tool

log = logging.getLogger("analysis.ablation_agreement")
PROG = "python -m analysis.ablation_agreement"


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--corpus", default=EXAMPLE_CORPUS,
                        help="sentitems or plain-text corpus (default: the shipped example, examples/corpus.sentitems)")
    parser.add_argument("--window", type=positive_int, default=50, help="sources kept per target (default 50)")
    parser.add_argument("--pairs", type=positive_int, default=200,
                        help="number of (target, source) pairs sampled (default 200)")
    parser.add_argument("--max-tokens", type=positive_int, default=128,
                        help="tokens of each document used (default 128)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--units", default="bits", choices=("bits", "nats"), help="bits (default) or nats")
    parser.add_argument("--output-dir", default="results/ablation_agreement", help="output folder")
    return parser


def run(args, bundle) -> Outcome:
    from huggingface_patch.attribution.ablation import ablation_study
    from huggingface_patch.corpus import read_corpus
    from huggingface_patch.records import analysis_record, describe_file

    study = ablation_study(bundle.model, bundle.tokenizer, read_corpus(args.corpus), bundle.start, window=args.window,
                           pairs=args.pairs, max_tokens=args.max_tokens, seed=args.seed, units=args.units)
    record = analysis_record(PROG, dict(study.settings, dtype=args.dtype), model=bundle.model,
                             model_name=bundle.source.name, model_argument=args.model, tokenizer=bundle.tokenizer,
                             inputs={"corpus": describe_file(args.corpus)})
    stats = study.stats
    return Outcome(record, lambda out: study.write(out, bundle.source.name),
                   f"Spearman {stats['spearman']:.3f}, Pearson {stats['pearson']:.3f} over {stats['n']} pairs")


def _check(args) -> None:
    from huggingface_patch.corpus import read_corpus

    read_corpus(args.corpus)  # a missing or empty corpus fails before the model loads


def main(argv: list[str] | None = None) -> int:
    return run_tool(PROG, build_parser().parse_args(argv), run, check=_check, log=log)


if __name__ == "__main__":
    raise SystemExit(main())
