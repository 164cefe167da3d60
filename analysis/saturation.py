"""Saturation of the top-k tokens across layers (Lioubashevski et al., "Looking Beyond the Top-1").

    python -m analysis.saturation layers      --model smollm2-135m --corpus examples/corpus.sentitems
    python -m analysis.saturation order       ...   # strict Kendall tau, permutation test, rank correspondence
    python -m analysis.saturation probe       ...   # task-index probing from the residual
    python -m analysis.saturation intervene   ...   # implant an earlier position's residual into a later one
    python -m analysis.saturation early-exit  ...   # probe vs softmax-margin / cosine baselines and oracle
    python -m analysis.saturation lm          ...   # rank-2 accuracy when s_2 saturates late vs early
    python -m analysis.saturation all         ...   # layers, order, probe, early-exit and lm from one pass

Text models read ``--corpus``; a ViT image classifier reads ``--images DIR``; Whisper reads ``--audio DIR``
(WAV files). Outputs (CSV/JSON + PNG) go to ``--output-dir``. See ``docs/saturation.md``.
"""

from __future__ import annotations

import argparse
import logging
import os

from huggingface_patch.cli import (
    ArgumentParser,
    UsageError,
    add_bos_argument,
    non_negative_int,
    positive_int,
)
from huggingface_patch.corpus import EXAMPLE_CORPUS
from huggingface_patch.tool import Outcome, run_tool

PROG = "python -m analysis.saturation"
DEFAULT_CORPUS = EXAMPLE_CORPUS
log = logging.getLogger("analysis.saturation")


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {value}")
    return value


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2-135m",
                        help="hub id, local folder, .gguf file, or a bundled model: smollm2-135m (default), "
                             "gemma3-270m")
    add_bos_argument(parser)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--corpus", help=f"text corpus (sentitems or plain text; default {DEFAULT_CORPUS})")
    source.add_argument("--images", metavar="DIR", help="folder of images (ViT image classifier)")
    source.add_argument("--audio", metavar="DIR", help="folder of WAV files (Whisper)")
    parser.add_argument("--k", type=positive_int, default=5, help="number of top tokens (default 5)")
    parser.add_argument("--output-dir", default="saturation_out", help="where outputs go (default saturation_out)")
    parser.add_argument("--device", default=None, help="torch device (default: where the model loads, CPU)")
    parser.add_argument("--dtype", default="float32", help="model dtype (default float32)")
    parser.add_argument("--filter-fraction", type=_fraction, default=0.85,
                        help="keep positions whose top-1 saturates by floor(F * L) (default 0.85)")
    parser.add_argument("--max-items", type=positive_int, default=None,
                        help="use only the first N documents / images / audio files")
    parser.add_argument("--max-new-tokens", type=positive_int, default=20,
                        help="Whisper: greedy transcript length (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0; recorded)")
    parser.add_argument("--random-init", type=int, nargs="?", const=0, default=None, metavar="SEED",
                        help="the untrained control: same architecture and tokenizer, weights re-initialised with "
                             "SEED (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("-v", "--verbose", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subparser per subcommand."""
    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)

    p = sub.add_parser("layers", help="saturation layer of each of the top-k final tokens at every position")
    _common(p)

    p = sub.add_parser("order", help="strict Kendall tau, permutation tests and rank-correspondence plot")
    _common(p)
    _order_options(p, table=True)

    p = sub.add_parser("probe", help="task-index probing from the residual stream (5-fold CV)")
    _common(p)
    _probe_options(p, "first labelled residual index")

    p = sub.add_parser("intervene", help="implant an earlier position's residual into a later one")
    _common(p)
    p.add_argument("--max-distance", type=positive_int, default=None, help="max j - i (default 30; images: none)")
    p.add_argument("--min-gap", type=non_negative_int, default=None,
                   help="min |s1(i) - s1(j)| (default 10; ViT/Whisper 5)")
    p.add_argument("--min-saturation", type=non_negative_int, default=None,
                   help="min s1 of both positions (default 10; ViT/Whisper 5)")
    p.add_argument("--offset-window", "--window", dest="window", type=non_negative_int, default=5,
                   help="offsets -W..W around the donor's s1 (default 5; --window is the older name)")
    p.add_argument("--max-pairs", type=positive_int, default=200, help="random subset of pairs (default 200)")

    p = sub.add_parser("early-exit", help="probe vs softmax-margin and cosine baselines and oracle")
    _common(p)
    _probe_options(p, "first layer where an exit is allowed", folds=False)
    p.add_argument("--test-fraction", type=_fraction, default=0.5)

    p = sub.add_parser("lm", help="rank-2 accuracy when s_2 saturates late vs early (two-proportion z-test)")
    _common(p)
    _lm_options(p)

    p = sub.add_parser("all", help=f"{', '.join(ALL)} from one pass over the input (one output folder)")
    _common(p)
    _order_options(p)
    _probe_options(p, "first labelled residual index and first exit layer")
    p.add_argument("--test-fraction", type=_fraction, default=0.5, help="early exit: held-out share (default 0.5)")
    _lm_options(p)
    return parser


#: what ``all`` runs, in order (the intervention is left out: it runs the model again per pair)
ALL = ("layers", "order", "probe", "early-exit", "lm")


def _order_options(p, table: bool = False) -> None:
    p.add_argument("--permutations", type=positive_int, default=1000, help="shuffles (default 1000)")
    p.add_argument("--min-ranks", type=_min_ranks, default=3, help="least saturated ranks c (default 3)")
    if table:
        p.add_argument("--from-table", metavar="FILE.csv",
                       help="test a table of saturation layers instead of running a model: columns s1..sk (0-based "
                            "layer indices, L-1 = saturates only at the last layer), one row per position before any "
                            "filter; optional column 'document' (clusters the interval of tau)")
        p.add_argument("--num-layers", type=positive_int, default=None,
                       help="L, the model's blocks (with --from-table)")


def _min_ranks(text: str) -> int:
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be at least 2 (tau needs two ranks), got {value}")
    return value


def _probe_options(p, first_layer: str, folds: bool = True) -> None:
    p.add_argument("--first-layer", type=positive_int, default=None,
                   help=f"{first_layer} (default 5; 1 for models under 10 blocks)")
    if folds:
        p.add_argument("--folds", type=positive_int, default=5)
        p.add_argument("--probe-groups", choices=("position", "document"), default="position",
                       help="what a cross-validation fold keeps together (default position: a position's residuals "
                            "at different layers never sit in two folds)")
        p.add_argument("--probe-permutations", type=non_negative_int, default=20,
                       help="label permutations (within layer) of the probe's null (default 20)")
    p.add_argument("--min-per-class", type=positive_int, default=5)


def _lm_options(p) -> None:
    p.add_argument("--late-margin", type=positive_int, default=7, help="early group: s_2 <= L - M (default 7)")


def _load(args):
    from huggingface_patch.saturation.backends import load_backend
    from huggingface_patch.saturation.layers import collect

    corpus = args.corpus
    if corpus is None and args.images is None and args.audio is None:
        corpus = DEFAULT_CORPUS
    backend = load_backend(args.model, corpus=corpus, images=args.images, audio=args.audio, device=args.device,
                           dtype=args.dtype, max_items=args.max_items, max_new_tokens=args.max_new_tokens,
                           start_choice=args.bos, random_init=args.random_init)
    log.info("model %s (%s): %d layers", args.model, backend.kind, backend.num_layers)
    keep_residual = args.command in ("probe", "intervene", "early-exit", "all")
    data = collect(backend, args.k, keep_residual=keep_residual, progress=not args.no_progress,
                   filter_fraction=args.filter_fraction)
    log.info("%d positions, %d kept by the filter", data.size, int(data.kept.sum()))
    return backend, data


def _from_table(args) -> Outcome:
    """``order --from-table``: the ordering tests on a user's table, no model."""
    import math

    import numpy as np

    from huggingface_patch.records import analysis_record, describe_file
    from huggingface_patch.saturation.ordering import read_saturation_table
    from huggingface_patch.saturation.reports import order_part
    from huggingface_patch.saturation.settings import SaturationSettings

    table = read_saturation_table(args.from_table, args.num_layers)
    sat = table["saturation"]
    documents = table["document"] if table["document"] is not None else np.zeros(len(sat), dtype=int)
    inputs = {"saturation": sat, "num_layers": args.num_layers, "position": np.arange(len(sat)),
              "document": documents, "filter_limit": math.floor(args.filter_fraction * args.num_layers)}
    settings = {k: v for k, v in vars(args).items() if k not in ("output_dir", "verbose", "device", "no_progress")}
    record = analysis_record(f"{PROG} order", settings, inputs={"table": describe_file(args.from_table)})
    meta = {"table": args.from_table, "num_layers": args.num_layers, "k": int(sat.shape[1]),
            "clustered_by_document": table["document"] is not None}
    part = order_part(inputs, SaturationSettings.from_mapping(vars(args)), meta, os.path.basename(args.from_table),
                      [str(d) for d in documents])
    return Outcome(record, part.write, part.line, printed=True)


def _check(args) -> None:
    if getattr(args, "from_table", None):
        if args.num_layers is None:
            raise UsageError("--from-table needs --num-layers L (the number of blocks of the model the table came "
                             "from)")
    elif getattr(args, "num_layers", None) is not None:
        raise UsageError("--num-layers goes with --from-table (a model's own depth is read from the model)")


def run(args, _bundle) -> Outcome:
    """The subcommand (``all``: every one, writing what could be computed and saying what could not)."""
    from huggingface_patch.records import analysis_record, describe_file
    from huggingface_patch.saturation.reports import saturation_analysis
    from huggingface_patch.saturation.settings import SaturationSettings

    if getattr(args, "from_table", None):
        return _from_table(args)
    backend, data = _load(args)
    settings = {k: v for k, v in vars(args).items() if k not in ("output_dir", "verbose", "device", "no_progress")}
    inputs = {}
    if args.images is None and args.audio is None:
        inputs["corpus"] = describe_file(args.corpus or DEFAULT_CORPUS)
    else:
        inputs["folder"] = args.images or args.audio
    record = analysis_record(f"{PROG} {args.command}", settings, model=backend.model,
                             model_name=os.path.basename(str(args.model).rstrip("/")), model_argument=args.model,
                             tokenizer=getattr(backend, "tokenizer", None), inputs=inputs)
    commands = ALL if args.command == "all" else (args.command,)
    result = saturation_analysis(SaturationSettings.from_mapping(vars(args)), backend, data, commands)
    return Outcome(record, result.write, result.report(commands), printed=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse ``argv``, run the subcommand; exit code 2 with a one-line error for bad input."""
    return run_tool(PROG, build_parser().parse_args(argv), run, check=_check, load=False, log=log)


if __name__ == "__main__":
    raise SystemExit(main())
