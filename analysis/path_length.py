"""Path length of the residual stream per token and layer, and its correlation with the next-token logit.

    python -m analysis.path_length --model smollm2-135m --corpus examples/corpus.sentitems --output-dir out/pl

Several models in one run (``--model`` repeated) are compared in one table. Writes
``path_length_tokens.csv`` (one row per model and token), ``path_length_steps.csv`` (per model, token and
layer: step norm and cumulative path length), ``path_length_summary.csv`` / ``.json`` (the model × r table;
position 0 reported separately, a document's last token, which predicts nothing, left out), the figures
``path_length_cumulative.png``, ``path_length_vs_logit.png`` and ``path_length_steps.png``, and ``run.json``.
See docs/lens.md.
"""

from __future__ import annotations

import argparse
import logging

from huggingface_patch.cli import ArgumentParser, UsageError, add_model_arguments, positive_int
from huggingface_patch.corpus import EXAMPLE_CORPUS
from huggingface_patch.tool import Outcome, run_tool

log = logging.getLogger("analysis.path_length")
PROG = "python -m analysis.path_length"
DEFAULT_CORPUS = EXAMPLE_CORPUS


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--model", action="append", dest="models", metavar="MODEL",
                        help="hub id, model folder, .gguf file or a bundled model; repeat to compare (default "
                             "smollm2-135m)")
    add_model_arguments(parser, model=False)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--corpus", default=DEFAULT_CORPUS,
                        help="sentitems file (!ARTICLE lines) or plain text (blank-line separated documents)")
    source.add_argument("--text", help="analyse this one text instead of a corpus")
    parser.add_argument("--output-dir", default="path_length_output", help="folder for CSV/JSON/PNG (created)")
    parser.add_argument("--max-tokens", type=positive_int, default=128,
                        help="tokens per document, start token included (default 128)")
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--no-plots", action="store_true", help="write CSV/JSON only")
    return parser


def _documents(args) -> list[str]:
    from huggingface_patch.residual_stream.documents import load_documents

    if args.max_tokens < 2:
        raise UsageError(f"--max-tokens must be at least 2, got {args.max_tokens}")
    return load_documents(None if args.text is not None else args.corpus, args.text)


def run(args, _bundle) -> Outcome:
    """Each ``--model`` in turn, loaded through the one loading path, measured and released."""
    from huggingface_patch.loading import load_bundle
    from huggingface_patch.records import analysis_record, describe_file, describe_model, text_sha256
    from huggingface_patch.residual_stream.documents import encode_documents
    from huggingface_patch.residual_stream.report import PathLengthReport, model_paths

    documents = _documents(args)
    models, described, seen = [], [], {}
    for argument in args.models or ["smollm2-135m"]:
        bundle = load_bundle(argument, dtype=args.dtype, device=args.device, decomposed=False, bos=args.bos)
        name = bundle.source.name
        seen[name] = seen.get(name, 0) + 1
        name = name if seen[name] == 1 else f"{name}-{seen[name]}"
        sequences = encode_documents(bundle.tokenizer, bundle.start, documents, args.max_tokens)
        models.append(model_paths(bundle.model, bundle.tokenizer, sequences, name, argument, args.batch_size))
        described.append(dict(describe_model(bundle.model, name, argument), start_token=bundle.start.describe()))
        del bundle
    report = PathLengthReport(models, dict(max_tokens=args.max_tokens))
    inputs = {"text_sha256": text_sha256(args.text)} if args.text is not None else \
        {"corpus": describe_file(args.corpus)}
    record = analysis_record(PROG, dict(max_tokens=args.max_tokens, dtype=args.dtype), inputs=inputs)
    record["models"] = described
    lines = [f"{row['model']}: Pearson {row['pearson_next_logit']:.3f}, Spearman {row['spearman_next_logit']:.3f} "
             f"(path length vs next-token logit, {row['tokens_with_next']} tokens)" for row in report.summary()]
    return Outcome(record, lambda out: report.write(out, plots=not args.no_plots), "; ".join(lines))


def main(argv: list[str] | None = None) -> int:
    return run_tool(PROG, build_parser().parse_args(argv), run, check=_documents, load=False, log=log)


if __name__ == "__main__":
    raise SystemExit(main())
