"""Agreement of ΔLP with real ablation: for sampled (target, source) pairs, remove the source token from the
input, re-run the model, and compare the drop in the target's log-probability with ΔLP (Spearman, Pearson).

    python -m analysis.ablation_agreement --model smollm2-135m --corpus examples/corpus.sentitems --pairs 200

Outputs in ``--output-dir``: ``ablation_pairs.csv`` (document, target, source, tokens, delta_lp,
real_delta_lp), ``ablation_summary.json`` (correlations, settings) and ``ablation_scatter.png``.
"""

from __future__ import annotations

import argparse
import logging
import os
import random

from huggingface_patch.cli import ArgumentParser, UsageError, run_cli, setup_logging, write_json

logger = logging.getLogger("analysis.ablation_agreement")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m analysis.ablation_agreement", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="hub id, folder, .gguf file or smollm2-135m (default)")
    parser.add_argument("--corpus", default="examples/corpus.sentitems", help="sentitems or plain-text corpus")
    parser.add_argument("--window", type=int, default=50, help="sources kept per target (default 50)")
    parser.add_argument("--pairs", type=int, default=200, help="number of (target, source) pairs sampled (default 200)")
    parser.add_argument("--max-tokens", type=int, default=128, help="tokens of each document used (default 128)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--units", default="bits", help="bits (default) or nats")
    parser.add_argument("--output-dir", default="results/ablation_agreement", help="output folder")
    parser.add_argument("--device", default=None, help="torch device (default cpu)")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)

    def body():
        import time

        import torch
        from tqdm import tqdm

        from huggingface_patch.attribution.ablation import agreement, plot_agreement, real_ablation, sample_pairs
        from huggingface_patch.attribution.tables import UNITS, decompose_piece, write_rows
        from huggingface_patch.corpus import CorpusError, bos_token_id, read_corpus, tokenize_articles

        for name in ("window", "pairs", "max_tokens"):
            if getattr(args, name) <= 0:
                raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
        if args.units not in UNITS:
            raise UsageError(f"--units must be one of {', '.join(UNITS)}, got {args.units!r}")
        try:
            documents = read_corpus(args.corpus)
        except CorpusError as exc:
            raise UsageError(str(exc)) from None
        from huggingface_patch.loading import load_model_and_tokenizer

        start = time.perf_counter()
        model, tokenizer, source = load_model_and_tokenizer(args.model, device=args.device)
        try:
            bos = bos_token_id(model.config, tokenizer)
        except CorpusError as exc:
            raise UsageError(str(exc)) from None
        base = UNITS[args.units]
        sequences = [[bos] + ids[: args.max_tokens - 1] for ids in tokenize_articles(tokenizer, documents)]
        sequences = [s for s in sequences if len(s) >= 3]
        if not sequences:
            raise UsageError(f"{args.corpus} has no document of at least 2 tokens")
        rng = random.Random(args.seed)
        candidates = [sample_pairs(len(s), args.window, 10**9, random.Random(0), document=d)
                      for d, s in enumerate(sequences)]
        everything = [p for group in candidates for p in group]
        chosen = rng.sample(everything, min(args.pairs, len(everything)))
        by_doc: dict[int, list] = {}
        for pair in chosen:
            by_doc.setdefault(pair.document, []).append(pair)
        rows = []
        for document, pairs in tqdm(sorted(by_doc.items()), desc="documents", unit="doc"):
            ids = torch.tensor(sequences[document])
            analysis = decompose_piece(model, tokenizer, ids, args.window, document=document)
            delta = analysis.deltalp(base).delta
            for pair in pairs:
                pair.delta_lp = float(delta[pair.target - pair.source, pair.target])
            real_ablation(model, ids, pairs, base)
            for pair in pairs:
                rows.append(dict(document=document, target_index=pair.target,
                                 target_token=analysis.tokens[pair.target + 1],
                                 source_index=pair.source, source_token=analysis.tokens[pair.source],
                                 distance=pair.target - pair.source + 1, delta_lp=pair.delta_lp,
                                 real_delta_lp=pair.real_delta_lp))
        pairs = [p for group in by_doc.values() for p in group]
        stats = agreement([p.delta_lp for p in pairs], [p.real_delta_lp for p in pairs])
        elapsed = time.perf_counter() - start
        out = args.output_dir
        rows.sort(key=lambda r: (r["document"], r["target_index"], r["source_index"]))
        write_rows(rows, os.path.join(out, "ablation_pairs.csv"))
        write_json(dict(model=source.name, corpus=args.corpus, window=args.window, units=args.units, seed=args.seed,
                        max_tokens=args.max_tokens, pairs_requested=args.pairs, seconds=round(elapsed, 1),
                        positions="target/source are piece positions (0 = BOS, never removed)", **stats),
                   os.path.join(out, "ablation_summary.json"))
        plot_agreement(pairs, os.path.join(out, "ablation_scatter.png"), units=args.units,
                       title=f"{source.name}: ΔLP vs real ablation (n={stats['n']}, Spearman {stats['spearman']:.2f}, "
                             f"Pearson {stats['pearson']:.2f})")
        logger.info("Spearman %.3f, Pearson %.3f over %d pairs (%.0f s)", stats["spearman"], stats["pearson"],
                    stats["n"], elapsed)

    return run_cli(body, parser.prog)


if __name__ == "__main__":
    raise SystemExit(main())
