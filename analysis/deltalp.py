"""ΔLP for every target and every source in its window, as a CSV table, a JSON summary and plots.

    python -m analysis.deltalp --model smollm2-135m --corpus examples/corpus.sentitems --output-dir results/deltalp
    python -m analysis.deltalp --from-files output --model smollm2-135m --output-dir results/deltalp

Outputs in ``--output-dir``: ``deltalp.csv`` (one row per document, target and source; per word with
``--words``; contrast with ``--foil``), ``deltalp_summary.json`` (per target: argmax source and distance, distance
histogram), ``heatmap.png`` (targets × sources for ``--plot-range``), ``bars.png`` (the last target of the range),
with ``--compare-conventions`` ``conventions.json``, with ``--html`` one interactive page per document, and
``run.json`` (what produced the folder). See ``docs/attribution.md``; the library is
:mod:`huggingface_patch.attribution.study`.
"""

from __future__ import annotations

import argparse
import fnmatch
import logging
import re
from dataclasses import dataclass

from huggingface_patch.cli import (
    ArgumentParser,
    UsageError,
    add_model_arguments,
    add_precision_argument,
    check_precision_device,
    positive_int,
)
from huggingface_patch.corpus import EXAMPLE_CORPUS
from huggingface_patch.tool import Outcome, run_tool

log = logging.getLogger("analysis.deltalp")
PROG = "python -m analysis.deltalp"


def files_window(folder: str, record: dict | None, window: int | None) -> int | None:
    """The window to read run_decompose.py's files with: theirs by default; a smaller one keeps their nearest
    sources (said in the log); a larger one cannot be read from them (one-line error)."""
    recorded = (record or {}).get("settings", {}).get("window") if isinstance(record, dict) else None
    if window is None or recorded is None:
        return window or recorded
    if window > recorded:
        raise UsageError(f"--window {window} is larger than the window of the files in {folder} ({recorded}): the "
                         f"other sources were never decomposed; leave out --window, or rerun run_decompose.py with "
                         f"{window}")
    if window < recorded:
        log.info("--window %d: using the %d nearest of the files' %d sources per target", window, window, recorded)
    return window


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--corpus", default=EXAMPLE_CORPUS,
                        help="sentitems or plain-text corpus (default: the example shipped with the package, "
                             "examples/corpus.sentitems)")
    parser.add_argument("--from-files", metavar="OUTPUT_DIR", default=None,
                        help="read run_decompose.py's files from this folder instead of running the model")
    parser.add_argument("--identifiers", nargs="+", default=None,
                        help="with --from-files: batch identifiers {CORPUS}_{MODEL}_{N} or glob patterns (default: "
                             "every piece of the folder's run)")
    parser.add_argument("--allow-unrecorded", action="store_true",
                        help="with --from-files: read files without a run record (e.g. the paper's own outputs)")
    parser.add_argument("--window", type=positive_int, default=None,
                        help="sources kept per target (default 50; with --from-files the files' own window, and a "
                             "smaller one keeps only the nearest sources)")
    parser.add_argument("--context", type=int, default=None,
                        help="piece length for long documents (default: the model's context size)")
    parser.add_argument("--units", default="bits", choices=("bits", "nats"),
                        help="bits (default, as in the paper) or nats")
    parser.add_argument("--include-bos", action="store_true",
                        help="let the start token be the argmax source (paper: excluded)")
    parser.add_argument("--words", action="store_true", help="sources are whole words (their tokens removed jointly)")
    parser.add_argument("--foil", default=None, help="contrastive ΔLP: effect on log p(target) - log p(FOIL)")
    parser.add_argument("--compare-conventions", action="store_true",
                        help="rank correlation of ΔLP between the default and each other linearization convention")
    parser.add_argument("--plot-range", default="0:0-39", help="DOC:FIRST-LAST targets of the heatmap (default 0:0-39)")
    parser.add_argument("--html", action="store_true",
                        help="also write an interactive page per document (deltalp_doc{D}.html; self-contained)")
    parser.add_argument("--lens", action="store_true",
                        help="with --html: add the decomposition lens (per layer) for the targets of --plot-range")
    add_precision_argument(parser)
    parser.add_argument("--output-dir", default="results/deltalp", help="output folder (default results/deltalp)")
    return parser


def parse_plot_range(text: str) -> tuple[str, int, int]:
    match = re.fullmatch(r"\s*([^:]+):(\d+)-(\d+)\s*", text)
    if not match or int(match.group(2)) > int(match.group(3)):
        raise UsageError(f"--plot-range must look like DOC:FIRST-LAST (e.g. 0:0-39), got {text!r}")
    return match.group(1), int(match.group(2)), int(match.group(3))


def check_args(args) -> tuple[str, int, int]:
    if args.context is not None and args.context < 2:
        raise UsageError(f"--context must be at least 2, got {args.context}")
    if args.words and args.foil is not None:
        raise UsageError("--words and --foil cannot be combined: choose one")
    if (args.identifiers or args.allow_unrecorded) and not args.from_files:
        raise UsageError("--identifiers and --allow-unrecorded need --from-files OUTPUT_DIR")
    if args.compare_conventions and args.from_files:
        raise UsageError("--compare-conventions needs the model (it re-runs it): drop --from-files")
    if args.lens and (args.from_files or not args.html):
        raise UsageError("--lens needs --html and the model (it re-runs it): add --html, drop --from-files")
    return parse_plot_range(args.plot_range)


def chosen_identifiers(folder: str, patterns: list[str] | None, available: list[str]) -> list[str] | None:
    """The pieces to read: ``patterns`` (identifiers or glob patterns) matched against the folder's pieces."""
    if not patterns:
        return None
    chosen = set()
    for pattern in patterns:
        matches = [i for i in available if fnmatch.fnmatch(i, pattern)]
        if not matches:
            raise UsageError(f"no piece {pattern!r} in {folder}")
        chosen.update(matches)
    return [i for i in available if i in chosen]  # in piece order


@dataclass
class _Loaded:
    """What the study reads: the pieces' analyses, the targets stitched across pieces, and where they came
    from (``model``, ``documents``, ``start`` only when the model ran)."""

    source: object
    tokenizer: object
    analyses: list
    stitched: object
    inputs: dict
    model: object = None
    pieces: list | None = None
    documents: list | None = None
    start: object = None


def _from_files(args, settings: dict) -> _Loaded:
    """The analyses of a ``run_decompose.py`` folder (``--from-files``); sets ``settings["window"]``."""
    import os

    from huggingface_patch.attribution.study import file_analyses
    from huggingface_patch.attribution.tables import stitch_targets
    from huggingface_patch.loading import resolve_model, tokenizer_of
    from huggingface_patch.piece_reader import foreign_pieces, run_pieces
    from huggingface_patch.records import read_record

    if not os.path.isdir(args.from_files):
        raise UsageError(f"--from-files folder not found: {args.from_files}")
    source = resolve_model(args.model)
    tokenizer = tokenizer_of(source)
    recorded = read_record(args.from_files)
    args.window = files_window(args.from_files, recorded, args.window)
    available = run_pieces(args.from_files) if recorded is not None or not args.allow_unrecorded else \
        foreign_pieces(args.from_files)
    identifiers = chosen_identifiers(args.from_files, args.identifiers, available)
    analyses = file_analyses(args.from_files, source.name, tokenizer, identifiers, args.window, args.allow_unrecorded)
    for analysis in analyses:  # the files' own precision is in their run record; this is the head product's
        analysis.precision = args.precision
    settings["window"] = max(a.decomposition.shape[0] for a in analyses)
    inputs = {"files": args.from_files, "run_id": (recorded or {}).get("run_id"),
              "pieces": [a.extra["identifier"] for a in analyses]}
    return _Loaded(source, tokenizer, analyses, stitch_targets(analyses), inputs)


def _from_model(args, plot_range, settings: dict) -> _Loaded:
    """The analyses of the corpus, the model run on it; sets ``settings["start"]``."""
    from huggingface_patch.attribution.study import model_analyses
    from huggingface_patch.attribution.tables import stitch_targets
    from huggingface_patch.corpus import read_corpus
    from huggingface_patch.loading import load_bundle
    from huggingface_patch.records import describe_file

    documents = read_corpus(args.corpus)
    document = plot_range[0]
    if document.isdigit() and int(document) >= len(documents):  # before the model runs, not after
        raise UsageError(f"--plot-range {args.plot_range}: document {document} does not exist ({args.corpus} "
                         f"has documents 0..{len(documents) - 1})")
    bundle = load_bundle(args.model, dtype=args.dtype, device=args.device, bos=args.bos)
    model, tokenizer, source, start = bundle.model, bundle.tokenizer, bundle.source, bundle.start
    log.info("start token: %r (id %s; %s)", start.token, start.id, start.reason)
    pieces, analyses = model_analyses(model, tokenizer, documents, args.window, start, context=args.context,
                                      precision=args.precision)
    pieces = list(pieces)
    settings["start"] = start.describe()
    return _Loaded(source, tokenizer, analyses, stitch_targets(pieces), {"corpus": describe_file(args.corpus)},
                   model=model, pieces=pieces, documents=documents, start=start)


def _check(args) -> None:
    check_args(args)
    if args.window is None and not args.from_files:
        args.window = 50
    check_precision_device(args.precision, args.device)


def run(args, _bundle) -> Outcome:
    """From the model (loaded in :func:`_from_model`) or from run_decompose.py's files (no model)."""
    from huggingface_patch.attribution.contrastive import resolve_foil
    from huggingface_patch.attribution.study import compare_conventions, deltalp_study, token_level_rows
    from huggingface_patch.attribution.tables import UNITS
    from huggingface_patch.records import analysis_record

    plot_range = parse_plot_range(args.plot_range)
    base = UNITS[args.units]
    level = "word" if args.words else "contrast" if args.foil is not None else "token"
    settings = dict(window=args.window, context=args.context, include_bos=args.include_bos, precision=args.precision)
    got = _from_files(args, settings) if args.from_files else _from_model(args, plot_range, settings)
    model, tokenizer = got.model, got.tokenizer
    foil_id = resolve_foil(tokenizer, args.foil) if args.foil is not None else None
    study = deltalp_study(got.analyses, got.stitched, level=level, units=args.units, base=base, foil_id=foil_id,
                          foil=args.foil, tokenizer=tokenizer, include_bos=args.include_bos,
                          settings=dict(settings, model=got.source.name))
    if args.compare_conventions:
        reference = study.rows if level == "token" else token_level_rows(
            model, tokenizer, got.documents, args.window, got.start, context=args.context, base=base)
        study.conventions = compare_conventions(model, tokenizer, got.documents, args.window, got.start,
                                                reference, context=args.context, base=base)
    record = analysis_record(PROG, dict(settings, level=level, units=args.units, foil=args.foil,
                                                      dtype=args.dtype), model=model, model_name=got.source.name,
                             model_argument=args.model, tokenizer=tokenizer, inputs=got.inputs)
    if args.lens:
        from huggingface_patch.attribution.study import lens_for_targets

        document, first, last = plot_range
        study.lens[str(document)] = lens_for_targets(model, tokenizer, got.pieces, got.stitched, document, first,
                                                     last, args.window)
    return Outcome(record, lambda out: study.write(out, plot_range, got.source.name, html=args.html),
                   f"{len(study.rows)} rows, {study.summary['n_targets']} targets")


def main(argv: list[str] | None = None) -> int:
    return run_tool(PROG, build_parser().parse_args(argv), run, check=_check, load=False, log=log)


if __name__ == "__main__":
    raise SystemExit(main())
