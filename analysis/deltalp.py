"""ΔLP for every target and every source in its window, as a CSV table, a JSON summary and plots.

    python -m analysis.deltalp --model smollm2-135m --corpus examples/corpus.sentitems --output-dir results/deltalp
    python -m analysis.deltalp --from-files output --identifiers 'stories_opt-125m_*' --model facebook/opt-125m

Outputs in ``--output-dir``: ``deltalp.csv`` (one row per document, target and source; per word with
``--words``; contrast with ``--foil``), ``deltalp_summary.json`` (per target: argmax source and distance, distance
histogram), ``heatmap.png`` (targets × sources for ``--plot-range``), ``bars.png`` (the last target of the range),
and with ``--compare-conventions`` ``conventions.json``. See ``docs/attribution.md``.
"""

from __future__ import annotations

import argparse
import fnmatch
import glob
import logging
import os
import re

from huggingface_patch.cli import ArgumentParser, UsageError, run_cli, setup_logging, write_json

logger = logging.getLogger("analysis.deltalp")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m analysis.deltalp", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="hub id, folder, .gguf file or smollm2-135m (default)")
    parser.add_argument("--corpus", default="examples/corpus.sentitems",
                        help="sentitems or plain-text corpus (default: examples/corpus.sentitems)")
    parser.add_argument("--from-files", metavar="OUTPUT_DIR", default=None,
                        help="read run_decompose.py's files from this folder instead of running the model")
    parser.add_argument("--identifiers", nargs="+", default=None,
                        help="with --from-files: batch identifiers {CORPUS}_{MODEL}_{N} or glob patterns "
                             "(default: all)")
    parser.add_argument("--window", type=int, default=50, help="sources kept per target (default 50)")
    parser.add_argument("--context", type=int, default=None,
                        help="piece length for long documents (default: the model's context size)")
    parser.add_argument("--units", default="bits", help="bits (default, as in the paper) or nats")
    parser.add_argument("--include-bos", action="store_true", help="let the BOS be the argmax source (paper: excluded)")
    parser.add_argument("--words", action="store_true", help="sources are whole words (their tokens removed jointly)")
    parser.add_argument("--foil", default=None, help="contrastive ΔLP: effect on log p(target) - log p(FOIL)")
    parser.add_argument("--compare-conventions", action="store_true",
                        help="rank correlation of ΔLP between the default and each other linearization convention")
    parser.add_argument("--plot-range", default="0:0-39", help="DOC:FIRST-LAST targets of the heatmap (default 0:0-39)")
    parser.add_argument("--output-dir", default="results/deltalp", help="output folder (default results/deltalp)")
    parser.add_argument("--device", default=None, help="torch device (default cpu)")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser


def parse_plot_range(text: str) -> tuple[str, int, int]:
    match = re.fullmatch(r"\s*([^:]+):(\d+)-(\d+)\s*", text)
    if not match or int(match.group(2)) > int(match.group(3)):
        raise UsageError(f"--plot-range must look like DOC:FIRST-LAST (e.g. 0:0-39), got {text!r}")
    return match.group(1), int(match.group(2)), int(match.group(3))


def check_args(args) -> None:
    from huggingface_patch.attribution.tables import UNITS

    if args.window <= 0:
        raise UsageError(f"--window must be a positive integer, got {args.window}")
    if args.context is not None and args.context < 2:
        raise UsageError(f"--context must be at least 2, got {args.context}")
    if args.units not in UNITS:
        raise UsageError(f"--units must be one of {', '.join(UNITS)}, got {args.units!r}")
    if args.words and args.foil is not None:
        raise UsageError("--words and --foil cannot be combined: choose one")
    if args.identifiers and not args.from_files:
        raise UsageError("--identifiers needs --from-files OUTPUT_DIR")
    if args.compare_conventions and args.from_files:
        raise UsageError("--compare-conventions needs the model (it re-runs it): drop --from-files")
    parse_plot_range(args.plot_range)


def model_pieces(args, model, tokenizer):
    """Pieces of the corpus (documents split as run_decompose.py does, or with --context)."""
    from huggingface_patch.corpus import (
        CorpusError,
        bos_token_id,
        context_size,
        read_corpus,
        split_article,
        tokenize_articles,
    )

    try:
        documents = read_corpus(args.corpus)
        bos = bos_token_id(model.config, tokenizer)
        context = args.context or context_size(model.config)
    except CorpusError as exc:
        raise UsageError(str(exc)) from None
    pieces = []
    for index, ids in enumerate(tokenize_articles(tokenizer, documents)):
        if ids:
            pieces.extend(split_article(ids, bos, context, document=index))
    if not pieces:
        raise UsageError(f"{args.corpus} has no text")
    return pieces


def file_identifiers(args, model_name: str) -> list[str]:
    """Identifiers to read: the given ones (glob patterns allowed) or every ``i_*`` batch in the folder."""
    if not os.path.isdir(args.from_files):
        raise UsageError(f"--from-files folder not found: {args.from_files}")
    found = [os.path.basename(p)[2:-3] for p in glob.glob(os.path.join(args.from_files, "i_*.pt"))]
    patterns = args.identifiers or ["*"]
    chosen = []
    for pattern in patterns:
        if any(ch in pattern for ch in "*?["):
            matches = [i for i in found if fnmatch.fnmatch(i, pattern)]
            if not matches:
                raise UsageError(f"no batch files i_{pattern}.pt in {args.from_files}")
            chosen.extend(matches)
        else:
            chosen.append(pattern)
    number = lambda i: (re.sub(r"_\d+$", "", i), int(m.group(1)) if (m := re.search(r"_(\d+)$", i)) else -1)  # noqa: E731
    return sorted(dict.fromkeys(chosen), key=number)


def analyses_from_files(args):
    """PieceAnalysis of every batch read from run_decompose.py's files (documents inferred from overlaps)."""
    import torch  # noqa: F401

    from huggingface_patch.attribution.tables import PieceAnalysis, infer_pieces
    from huggingface_patch.loading import load_tokenizer, resolve_model
    from representations_to_deltalp import load_batch

    source = resolve_model(args.model)
    tokenizer = load_tokenizer(source)
    identifiers = file_identifiers(args, source.name)
    batches = [load_batch(args.from_files, identifier, source.name) for identifier in identifiers]
    places = infer_pieces([ids.tolist() for ids, *_ in batches])
    analyses = []
    for number, ((ids, dec, out, proj), (document, start)) in enumerate(zip(batches, places)):
        if dec.shape[0] > args.window:
            dec = dec[: args.window]
        tokens = tokenizer.convert_ids_to_tokens(ids.tolist())
        analyses.append(PieceAnalysis(document, number, start, ids.long(), tokens,
                                      out, dec, proj, extra=dict(identifier=identifiers[number])))
    return analyses, tokenizer, source.name


def piece_rows(args, analysis, stitched, tokenizer, base, foil_id):
    from huggingface_patch.attribution.contrastive import contrastive_deltalp
    from huggingface_patch.attribution.tables import deltalp_rows
    from huggingface_patch.attribution.words import word_rows

    targets = [t for (doc, _), (number, t) in stitched.items() if doc == analysis.document and number == analysis.piece]
    targets.sort()
    if args.words:
        return word_rows(analysis, base=base, targets=targets, tokenizer=tokenizer)
    if foil_id is not None:
        result = contrastive_deltalp(analysis, foil_id, base=base)
        return deltalp_rows(analysis, result, targets, extra=dict(foil=args.foil))
    return deltalp_rows(analysis, analysis.deltalp(base), targets)


def compare_conventions(args, model, tokenizer, pieces, stitched, base, reference_rows) -> dict:
    """Spearman rank correlation of token-level ΔLP between the default and each other convention."""
    from scipy import stats
    from tqdm import tqdm

    from huggingface_patch.attribution.tables import decompose_piece, deltalp_rows

    try:
        from huggingface_patch.engine.conventions import Conventions
    except ImportError:
        raise UsageError("--compare-conventions: this version of the engine has no linearization conventions") from None
    key = lambda r: (r["document"], r["target_index"], r["source_index"])  # noqa: E731
    reference = {key(r): r["delta_lp"] for r in reference_rows}
    results = {}
    for conventions in Conventions.all_variants():
        values = {}
        for number, piece in enumerate(tqdm(pieces, desc=conventions.name, unit="piece")):
            analysis = decompose_piece(model, tokenizer, piece.ids, args.window, document=piece.document, piece=number,
                                       start=piece.start, conventions=conventions)
            targets = sorted(t for (doc, _), (n, t) in stitched.items() if n == number)
            for row in deltalp_rows(analysis, analysis.deltalp(base), targets):
                values[key(row)] = row["delta_lp"]
        common = [k for k in reference if k in values]
        x = [reference[k] for k in common]
        y = [values[k] for k in common]
        rho = stats.spearmanr(x, y).statistic if len(common) > 2 else float("nan")
        r = stats.pearsonr(x, y).statistic if len(common) > 2 else float("nan")
        same_argmax = _same_argmax(reference_rows, values, key)
        results[conventions.name] = dict(n_pairs=len(common), spearman=float(rho), pearson=float(r),
                                         argmax_agreement=same_argmax)
        logger.info("%s: Spearman %.3f over %d pairs", conventions.name, rho, len(common))
    return results


def _same_argmax(rows, values, key) -> float | None:
    groups: dict = {}
    for row in rows:
        if not row["is_bos"]:
            groups.setdefault((row["document"], row["target_index"]), []).append(row)
    agree = total = 0
    for group in groups.values():
        if all(key(r) in values for r in group):
            total += 1
            agree += max(group, key=lambda r: r["delta_lp"]) is max(group, key=lambda r: values[key(r)])
    return agree / total if total else None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)

    def body():
        from tqdm import tqdm

        from huggingface_patch.attribution.contrastive import FoilError, resolve_foil
        from huggingface_patch.attribution.plots import plot_heatmap, plot_target_bars, select_range
        from huggingface_patch.attribution.tables import (
            decompose_piece,
            stitch_targets,
            summarize_targets,
            unit_base,
            write_rows,
        )

        check_args(args)
        base = unit_base(args.units)
        document, first, last = parse_plot_range(args.plot_range)
        model = pieces = None
        if args.from_files:
            analyses, tokenizer, model_name = analyses_from_files(args)
            stitched = stitch_targets(analyses)
            source_files = [a.extra["identifier"] for a in analyses]
            window = max(a.decomposition.shape[0] for a in analyses)  # the files' window (at most --window)
        else:
            if not os.path.isfile(args.corpus):
                raise UsageError(f"corpus file not found: {args.corpus}")
            from huggingface_patch.loading import load_model_and_tokenizer

            model, tokenizer, source = load_model_and_tokenizer(args.model, device=args.device)
            model_name = source.name
            pieces = model_pieces(args, model, tokenizer)
            stitched = stitch_targets(pieces)
            analyses = None
            source_files = None
            window = args.window
        foil_id = None
        if args.foil is not None:
            try:
                foil_id = resolve_foil(tokenizer, args.foil)
            except FoilError as exc:
                raise UsageError(str(exc)) from None
        rows = []
        count = len(analyses) if analyses is not None else len(pieces)
        for number in tqdm(range(count), desc="ΔLP", unit="piece"):
            if analyses is not None:
                analysis = analyses[number]
            else:
                piece = pieces[number]
                analysis = decompose_piece(model, tokenizer, piece.ids, args.window, document=piece.document,
                                           piece=number, start=piece.start)
            rows.extend(piece_rows(args, analysis, stitched, tokenizer, base, foil_id))
        rows.sort(key=lambda r: (str(r["document"]), r["target_index"], r["source_index"]))
        summary = summarize_targets(rows, include_bos=args.include_bos)
        meta = dict(model=model_name, corpus=None if args.from_files else args.corpus, files=source_files,
                    window=window, units=args.units, level="word" if args.words else "token",
                    foil=args.foil, foil_id=foil_id, n_rows=len(rows),
                    n_documents=len({r["document"] for r in rows}))
        selected = select_range(rows, document, first, last)
        if not selected:
            raise UsageError(f"--plot-range {args.plot_range} selects no targets (documents: "
                             f"{', '.join(str(d) for d in sorted({r['document'] for r in rows}))})")
        extra = {}
        if args.compare_conventions:
            reference = rows if not args.words and foil_id is None else \
                _token_rows(args, model, tokenizer, pieces, stitched, base)
            extra["conventions"] = compare_conventions(args, model, tokenizer, pieces, stitched, base, reference)
        out = args.output_dir
        write_rows(rows, os.path.join(out, "deltalp.csv"))
        write_json(dict(meta, **summary), os.path.join(out, "deltalp_summary.json"))
        what = "word " if args.words else ("contrastive " if foil_id is not None else "")
        plot_heatmap(selected, os.path.join(out, "heatmap.png"), units=args.units,
                     title=f"{model_name}: {what}ΔLP, document {document}, targets {first}-{last}")
        last_target = max(r["target_index"] for r in selected)
        plot_target_bars([r for r in selected if r["target_index"] == last_target], os.path.join(out, "bars.png"),
                         units=args.units)
        if extra:
            write_json(dict(model=model_name, window=args.window, units=args.units, reference="default",
                            variants=extra["conventions"]), os.path.join(out, "conventions.json"))
        logger.info("wrote %s (%d rows, %d targets)", out, len(rows), summary["n_targets"])

    return run_cli(body, parser.prog)


def _token_rows(args, model, tokenizer, pieces, stitched, base):
    from huggingface_patch.attribution.tables import decompose_piece, deltalp_rows

    rows = []
    for number, piece in enumerate(pieces):
        analysis = decompose_piece(model, tokenizer, piece.ids, args.window, document=piece.document, piece=number,
                                   start=piece.start)
        targets = sorted(t for (doc, _), (n, t) in stitched.items() if n == number)
        rows.extend(deltalp_rows(analysis, analysis.deltalp(base), targets))
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
