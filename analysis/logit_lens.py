"""Logit lens heat maps: each layer's residual stream read through the final norm and the LM head.

    python -m analysis.logit_lens --model smollm2-135m --corpus examples/corpus.sentitems --output-dir out/lens

Writes ``logit_lens_<model>.csv`` (one row per document, lens row and position: the row's top-1, the final
top-1's probability and rank, the actual next token's probability and rank, KL), ``logit_lens_<model>.json``
(the same as matrices, plus settings), one heat map per document and colour mode,
``logit_lens_<model>_doc<i>_<colour>.png``, and ``run.json``. See docs/lens.md.
"""

from __future__ import annotations

import argparse
import logging

from huggingface_patch.cli import ArgumentParser, UsageError, add_model_arguments, positive_int
from huggingface_patch.corpus import EXAMPLE_CORPUS
from huggingface_patch.residual_stream.logit_lens import COLOUR_MODES, SUBLAYER_MODES
from huggingface_patch.tool import Outcome, run_tool

log = logging.getLogger("analysis.logit_lens")
PROG = "python -m analysis.logit_lens"
DEFAULT_CORPUS = EXAMPLE_CORPUS


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    add_model_arguments(parser)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--corpus", default=DEFAULT_CORPUS,
                        help="sentitems file (!ARTICLE lines) or plain text (blank-line separated documents)")
    source.add_argument("--text", help="analyse this one text instead of a corpus")
    parser.add_argument("--output-dir", default="lens_output", help="folder for CSV/JSON/PNG (created)")
    parser.add_argument("--colour", "--color", action="append", dest="colour", metavar="MODE", choices=COLOUR_MODES,
                        help=f"heat map colour, repeatable: {', '.join(COLOUR_MODES)} (default prob)")
    parser.add_argument("--sublayers", default="none", choices=("none",) + SUBLAYER_MODES,
                        help="extra rows: none, residual (residual after attention) or output (attention and MLP "
                             "sub-layer outputs)")
    parser.add_argument("--max-tokens", type=positive_int, default=32,
                        help="tokens per document, start token included (default 32)")
    parser.add_argument("--max-documents", type=positive_int, default=None, help="analyse only the first N documents")
    parser.add_argument("--batch-size", type=positive_int, default=4)
    parser.add_argument("--no-plots", action="store_true", help="write CSV/JSON only")
    return parser


def _documents(args) -> list[str]:
    from huggingface_patch.residual_stream.documents import load_documents

    if args.max_tokens < 2:
        raise UsageError(f"--max-tokens must be at least 2, got {args.max_tokens}")
    return load_documents(None if args.text is not None else args.corpus, args.text)[: args.max_documents]


def run(args, bundle) -> Outcome:
    from huggingface_patch.architectures import get_adapter
    from huggingface_patch.records import analysis_record, describe_file, text_sha256
    from huggingface_patch.residual_stream.documents import encode_documents
    from huggingface_patch.residual_stream.report import logit_lens_report

    model, tokenizer, source = bundle.model, bundle.tokenizer, bundle.source
    colours = args.colour or ["prob"]
    sublayers = None if args.sublayers == "none" else args.sublayers
    sequences = encode_documents(tokenizer, bundle.start, _documents(args), args.max_tokens)
    report = logit_lens_report(model, tokenizer, sequences, source.name, sublayers=sublayers,
                               batch_size=args.batch_size, colours=colours)
    report.settings.update(model=args.model, num_layers=len(get_adapter(model).parts(model).layers),
                           max_tokens=args.max_tokens, start_token=bundle.start.describe())
    inputs = {"text_sha256": text_sha256(args.text)} if args.text is not None else \
        {"corpus": describe_file(args.corpus)}
    record = analysis_record(PROG, dict(report.settings, dtype=args.dtype, colours=colours), model=model,
                             model_name=source.name, model_argument=args.model, tokenizer=tokenizer, inputs=inputs)
    return Outcome(record, lambda out: report.write(out, colours, plots=not args.no_plots),
                   f"{len(sequences)} documents")


def main(argv: list[str] | None = None) -> int:
    return run_tool(PROG, build_parser().parse_args(argv), run, check=_documents, decomposed=False, log=log)


if __name__ == "__main__":
    raise SystemExit(main())
