"""Decomposition lens: for one target position, each source's contribution at each layer projected to the
vocabulary through the frozen final norm and the LM head: which output tokens each source promotes.

    python -m analysis.decomposition_lens --model smollm2-135m --text "The capital of France is" --target -1

Outputs in ``--output-dir``: ``lens.csv`` (layer, source, rank, promoted token, logit; plus the source's
contribution to the actual next token's logit), ``lens.json`` (settings and top token per layer and source),
``lens.png`` (heatmap layers × sources of the contribution to the next token's logit, or to the token the model
predicts at the last position) and ``run.json``. The library is :mod:`huggingface_patch.attribution.decomposition_lens`.
"""

from __future__ import annotations

import argparse
import logging

from huggingface_patch.cli import ArgumentParser, UsageError, add_model_arguments, non_negative_int, positive_int
from huggingface_patch.corpus import EXAMPLE_CORPUS
from huggingface_patch.tool import Outcome, run_tool

log = logging.getLogger("analysis.decomposition_lens")
PROG = "python -m analysis.decomposition_lens"


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--text", default=None, help="input text (default: a document of --corpus)")
    parser.add_argument("--corpus", default=EXAMPLE_CORPUS,
                        help="sentitems or plain-text corpus (default: the shipped example, examples/corpus.sentitems)")
    parser.add_argument("--document", type=non_negative_int, default=0, help="document of --corpus (default 0)")
    parser.add_argument("--max-tokens", type=positive_int, default=64, help="tokens of the document used (default 64)")
    parser.add_argument("--target", type=int, default=-1,
                        help="target position in the input, start token = 0 (default -1: last)")
    parser.add_argument("--window", type=positive_int, default=None, help="sources kept (default: all)")
    parser.add_argument("--top-k", type=positive_int, default=5,
                        help="promoted tokens per layer and source (default 5)")
    parser.add_argument("--output-dir", default="results/decomposition_lens", help="output folder")
    return parser


def _text(args) -> str:
    """The analysed text: ``--text``, or document ``--document`` of ``--corpus`` (checked before loading)."""
    from huggingface_patch.corpus import read_corpus

    if args.max_tokens < 2:
        raise UsageError("--max-tokens must be at least 2")
    text = args.text
    if text is None:
        documents = read_corpus(args.corpus)
        if not args.document < len(documents):
            raise UsageError(f"--document {args.document} out of range: {args.corpus} has {len(documents)} documents")
        text = documents[args.document]
    if not text.strip():
        raise UsageError("--text is empty")
    return text


def run(args, bundle) -> Outcome:
    import torch

    from huggingface_patch.attribution.decomposition_lens import lens_table
    from huggingface_patch.records import analysis_record, describe_file, text_sha256

    inputs = {"text_sha256": text_sha256(args.text)} if args.text is not None else \
        {"corpus": describe_file(args.corpus)}
    model, tokenizer, start = bundle.model, bundle.tokenizer, bundle.start
    ids = torch.tensor(start.prepend(tokenizer(_text(args), add_special_tokens=False)["input_ids"])[: args.max_tokens])
    target = args.target if args.target >= 0 else len(ids) + args.target
    if not 0 <= target < len(ids):
        raise UsageError(f"--target {args.target} outside the input of {len(ids)} tokens (start token = 0)")
    table = lens_table(model, tokenizer, ids, target, args.window, args.top_k)
    record = analysis_record(PROG, dict(table.settings, target=target, start=start.describe(), dtype=args.dtype,
                                        max_tokens=args.max_tokens), model=model, model_name=bundle.source.name,
                             model_argument=args.model, tokenizer=tokenizer, inputs=inputs)
    return Outcome(record, lambda out: table.write(out, bundle.source.name), f"target {target}")


def main(argv: list[str] | None = None) -> int:
    return run_tool(PROG, build_parser().parse_args(argv), run, check=_text, log=log)


if __name__ == "__main__":
    raise SystemExit(main())
