"""Parameters in embedding space (Dar et al. 2023): read a model's weights as token-to-token maps.

    python -m analysis.embedding_space ff   --layer 20 --neuron 100 --output-dir results/embedding_space
    python -m analysis.embedding_space vo   --layer 10 --head 3 --only-alnum
    python -m analysis.embedding_space qk   --layer 10 --head 3 --only-alnum
    python -m analysis.embedding_space tsne --layer 20 --neuron 100 --part value
    python -m analysis.embedding_space align --corpus examples/corpus.sentitems
    python -m analysis.embedding_space select --corpus examples/essays.sentitems   # which neurons/heads to read

Outputs (in ``--output-dir``): ``ff_L{l}_N{n}.csv/.json/.png``, ``{vo,qk}_L{l}_H{h}.csv/.json/.png``,
``tsne_L{l}_N{n}_{part}.csv/.png/.html``, ``align.csv/.json/.png``, ``selection.csv/.json``; see
docs/embedding_space.md.
"""

from __future__ import annotations

import argparse
import logging

from huggingface_patch.cli import (
    ArgumentParser,
    UsageError,
    add_bos_argument,
    add_model_arguments,
    non_negative_int,
    positive_float,
    positive_int,
)
from huggingface_patch.corpus import EXAMPLE_CORPUS, EXAMPLE_ESSAYS
from huggingface_patch.tool import Outcome, run_tool

logger = logging.getLogger("analysis.embedding_space")
PROG = "python -m analysis.embedding_space"


def _common(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, bos=False)
    parser.add_argument("--output-dir", default="results/embedding_space", help="output folder (default %(default)s)")
    parser.add_argument("--embedding", choices=("output", "input"), default="output",
                        help="embedding for the read side (FF keys, VO rows, QK both sides): 'output' = LM head "
                             "(the paper, default) or 'input' = input embedding")
    filters = parser.add_argument_group("token filters")
    filters.add_argument("--only-ascii", action="store_true", help="keep tokens whose text is ASCII only")
    filters.add_argument("--only-alnum", action="store_true", help="keep tokens whose text is letters/digits only")
    filters.add_argument("--word-list", default=None, help="file of words (one a line): keep only tokens in it")
    filters.add_argument("--keep-special", action="store_true", help="keep special tokens (excluded by default)")
    filters.add_argument("--max-id", type=positive_int, default=None,
                         help="keep only token ids below this (BPE ids are ordered roughly by frequency)")
    parser.add_argument("--normalize", action="store_true",
                        help="unit-norm columns of E (not the paper's default for ff/vo/qk; an option of its t-SNE)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with its six subcommands."""
    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    _add_ff(sub)
    _add_pairs(sub)
    _add_tsne(sub)
    _add_align(sub)
    _add_select(sub)
    return parser


def _add_neuron(parser: argparse.ArgumentParser) -> None:
    """``--layer``, ``--neuron`` and, in a mixture-of-experts layer, ``--expert``."""
    parser.add_argument("--layer", type=non_negative_int, required=True)
    parser.add_argument("--neuron", type=non_negative_int, required=True)
    parser.add_argument("--expert", type=non_negative_int, default=None,
                        help="in a mixture-of-experts layer: which expert's neuron (required there)")


def _add_ff(sub) -> None:
    ff = sub.add_parser("ff", help="top tokens of a neuron's key(s) and value", description=(
        "Top tokens of one MLP neuron's key (OPT/GPT-2; Llama: gate and up) and value projected through E."))
    _common(ff)
    _add_neuron(ff)
    ff.add_argument("--k", type=positive_int, default=100, help="tokens per part (default 100)")
    ff.add_argument("--bottom", action="store_true",
                    help="most negative tokens instead of the top ones (a gated MLP's up · x may be negative)")


def _add_pairs(sub) -> None:
    for kind, what in (("vo", "Eᵀ W_VO E (token attended to -> token written)"),
                       ("qk", "Eᵀ W_QK E (query token -> key token)")):
        p = sub.add_parser(kind, help=f"top token pairs of {what}",
                           description=f"Token pairs with the largest entries of {what} for one head, computed in "
                                       "blocks with the original threshold search (approx_topk).")
        _common(p)
        p.add_argument("--layer", type=non_negative_int, required=True)
        p.add_argument("--head", type=non_negative_int, required=True)
        p.add_argument("--min-k", type=positive_int, default=500, help="fewest pairs returned (default 500)")
        p.add_argument("--max-k", type=positive_int, default=250_000, help="most pairs returned (default 250000)")
        p.add_argument("--th0", type=positive_float, default=1.0,
                       help="initial threshold (default 1, as the notebook)")
        p.add_argument("--max-iters", type=non_negative_int, default=10, help="bisection steps (default 10)")
        p.add_argument("--pairs", choices=("near", "identical", "none"), default="near",
                       help="exclude pairs of near-identical tokens (default), of identical ids only, or none")
        p.add_argument("--show", type=positive_int, default=50,
                       help="pairs in the JSON summary and the figure (default 50)")
        p.add_argument("--block-mb", type=positive_int, default=64,
                       help="memory of one block of the matrix in MiB (default 64)")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_tsne(sub) -> None:
    ts = sub.add_parser("tsne", help="t-SNE of a parameter vector's top tokens (PNG + HTML)",
                        description="t-SNE of the embedding columns of a neuron part's top tokens.")
    _common(ts)
    _add_neuron(ts)
    ts.add_argument("--part", choices=("key", "gate", "up", "value"), default="value",
                    help="which vector of the neuron (default value; Llama has gate/up instead of key)")
    ts.add_argument("--k", type=positive_int, default=100, help="tokens (default 100)")
    ts.add_argument("--components", type=int, choices=(2, 3), default=3, help="2-D or 3-D (default 3)")
    ts.add_argument("--perplexity", type=positive_float, default=3.0, help="default 3")
    ts.add_argument("--learning-rate", type=positive_float, default=10.0, help="default 10")
    ts.add_argument("--seed", type=int, default=0)


def _add_corpus(parser: argparse.ArgumentParser, default: str) -> None:
    """``--bos``, ``--corpus``, ``--neurons`` and ``--max-positions``: the corpus positions read."""
    _common(parser)
    add_bos_argument(parser)
    parser.add_argument("--corpus", default=default, help="sentitems or plain text (default %(default)s)")
    parser.add_argument("--neurons", type=positive_int, default=5,
                        help="most activated neurons per position (default 5)")
    parser.add_argument("--max-positions", type=positive_int, default=1000, help="positions used (default 1000)")


def _add_align(sub) -> None:
    al = sub.add_parser("align", help="parameters vs hidden states recall against a random baseline",
                        description="Recall of the hidden state's top tokens among the top tokens of the most "
                                    "activated neurons' keys/values, per layer, against a random position.")
    _add_corpus(al, EXAMPLE_CORPUS)
    al.add_argument("--layers", type=non_negative_int, nargs="+", default=None, help="layers (default all)")
    al.add_argument("--tokens", type=positive_int, default=50, help="top tokens compared (default 50)")
    al.add_argument("--target", choices=("layer", "final"), default="layer",
                    help="hidden state of the same layer (default) or of the last layer")
    al.add_argument("--seed", type=int, default=0)


def _add_select(sub) -> None:
    se = sub.add_parser("select", help="a stated rule picks the neurons and heads to read, per layer",
                        description="Per layer: the FF neuron most often among the top activated neurons over the "
                                    "corpus positions, and the heads with the largest Frobenius norm of W_VO and "
                                    "W_QK (default layers: L/4, L/2, 3L/4, L-1).")
    _add_corpus(se, EXAMPLE_ESSAYS)
    se.add_argument("--layers", type=non_negative_int, nargs="+", default=None,
                    help="layers (default L/4, L/2, 3L/4, L-1)")


# --------------------------------------------------------------------------- the subcommands


def _token_filter(args):
    from huggingface_patch.embedding_space import TokenFilter, read_word_list

    words = read_word_list(args.word_list) if args.word_list else None
    return TokenFilter(only_ascii=args.only_ascii, only_alnum=args.only_alnum, word_list=words,
                       keep_special=args.keep_special, max_id=args.max_id)


def report_for(args, model, tokenizer, vocab, token_filter, start=None):
    """The subcommand's report (see :mod:`huggingface_patch.embedding_space.reports`); ``start``: the start
    token of the corpus texts (align, select)."""
    from huggingface_patch.embedding_space import reports

    common = dict(embedding=args.embedding, normalize=args.normalize)
    if args.command == "ff":
        return reports.ff_report(model, vocab, args.layer, args.neuron, args.k, token_filter, bottom=args.bottom,
                                 expert=args.expert, **common)
    if args.command in ("vo", "qk"):
        return reports.pairs_report(model, vocab, args.command, args.layer, args.head, token_filter,
                                    pair_exclusion=args.pairs, min_k=args.min_k, max_k=args.max_k, th0=args.th0,
                                    max_iters=args.max_iters, block_bytes=args.block_mb * 2**20, show=args.show,
                                    progress=not args.no_progress, **common)
    if args.command == "tsne":
        return reports.tsne_report(model, vocab, args.layer, args.neuron, args.part, args.k, token_filter,
                                   components=args.components, perplexity=args.perplexity,
                                   learning_rate=args.learning_rate, seed=args.seed, expert=args.expert, **common)
    from huggingface_patch.corpus import read_corpus

    if args.command == "select":
        return reports.selection_report(model, tokenizer, read_corpus(args.corpus), layers=args.layers,
                                        neurons=args.neurons, max_positions=args.max_positions, start=start)
    return reports.alignment_report(model, tokenizer, vocab, read_corpus(args.corpus), token_filter, layers=args.layers,
                                    neurons=args.neurons, tokens=args.tokens, max_positions=args.max_positions,
                                    target=args.target, seed=args.seed, start=start, **common)


def _check(args) -> None:
    """Before the model loads: the word list, the k range, the corpus."""
    _token_filter(args)
    if args.command in ("vo", "qk") and args.min_k > args.max_k:
        raise UsageError(f"--min-k ({args.min_k}) must not exceed --max-k ({args.max_k})")
    if args.command in ("align", "select"):
        from huggingface_patch.corpus import read_corpus

        read_corpus(args.corpus)


def run(args, bundle) -> Outcome:
    from huggingface_patch.architectures import readout
    from huggingface_patch.embedding_space import vocabulary
    from huggingface_patch.records import analysis_record, describe_file

    model, tokenizer, source = bundle.model, bundle.tokenizer, bundle.source
    vocab = vocabulary(tokenizer, readout(model).vocab_size)
    start_token = bundle.start if args.command in ("align", "select") else None
    report = report_for(args, model, tokenizer, vocab, _token_filter(args), start_token)
    settings = {k: v for k, v in vars(args).items() if k not in ("output_dir", "verbose", "device", "model",
                                                               "no_progress")}
    inputs = {"corpus": describe_file(args.corpus)} if args.command in ("align", "select") else {}
    record = analysis_record(f"{PROG} {args.command}", settings, model=model, model_name=source.name,
                             model_argument=args.model, tokenizer=tokenizer, inputs=inputs)
    return Outcome(record, lambda out: report.write(out, source.name), args.command)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for bad input)."""
    args = build_parser().parse_args(argv)
    return run_tool(f"{PROG} {args.command}", args, run, check=_check, decomposed=False, log=logger)


if __name__ == "__main__":
    raise SystemExit(main())
