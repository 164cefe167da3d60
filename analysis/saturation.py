"""Saturation of the top-k tokens across layers (Lioubashevski et al., "Looking Beyond the Top-1").

    python -m analysis.saturation layers      --model smollm2-135m --corpus examples/corpus.sentitems
    python -m analysis.saturation order       ...   # strict Kendall tau, permutation test, rank correspondence
    python -m analysis.saturation probe       ...   # task-index probing from the residual
    python -m analysis.saturation intervene   ...   # implant an earlier position's residual into a later one
    python -m analysis.saturation early-exit  ...   # probe vs softmax-margin / cosine baselines and oracle
    python -m analysis.saturation lm          ...   # rank-2 accuracy when s_2 saturates late vs early

Text models read ``--corpus``; a ViT image classifier reads ``--images DIR``; Whisper reads ``--audio DIR``
(WAV files). Outputs (CSV/JSON + PNG) go to ``--output-dir``. See ``docs/saturation.md``.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import math
import os

from huggingface_patch.cli import (
    ArgumentParser,
    UsageError,
    add_model_argument,
    non_negative_int,
    positive_int,
    run_cli,
    save_figure,
    setup_logging,
    write_json,
    write_text,
)

PROG = "python -m analysis.saturation"
DEFAULT_CORPUS = os.path.join("examples", "corpus.sentitems")
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
    add_model_argument(parser)
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
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("-v", "--verbose", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subparser per subcommand."""
    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)

    p = sub.add_parser("layers", help="saturation layer of each of the top-k final tokens at every position")
    _common(p)

    p = sub.add_parser("order", help="strict Kendall tau, permutation test and rank-correspondence plot")
    _common(p)
    p.add_argument("--permutations", type=positive_int, default=1000, help="shuffles (default 1000)")
    p.add_argument("--min-ranks", type=positive_int, default=3, help="least saturated ranks c (default 3)")

    p = sub.add_parser("probe", help="task-index probing from the residual stream (5-fold CV)")
    _common(p)
    p.add_argument("--first-layer", type=positive_int, default=None,
                   help="first labelled residual index (default 5; 1 for models under 10 blocks)")
    p.add_argument("--folds", type=positive_int, default=5)
    p.add_argument("--min-per-class", type=positive_int, default=5)

    p = sub.add_parser("intervene", help="implant an earlier position's residual into a later one")
    _common(p)
    p.add_argument("--max-distance", type=positive_int, default=None, help="max j - i (default 30; images: none)")
    p.add_argument("--min-gap", type=non_negative_int, default=None,
                   help="min |s1(i) - s1(j)| (default 10; ViT/Whisper 5)")
    p.add_argument("--min-saturation", type=non_negative_int, default=None,
                   help="min s1 of both positions (default 10; ViT/Whisper 5)")
    p.add_argument("--window", type=non_negative_int, default=5,
                   help="offsets -W..W around the donor's s1 (default 5)")
    p.add_argument("--max-pairs", type=positive_int, default=200, help="random subset of pairs (default 200)")

    p = sub.add_parser("early-exit", help="probe vs softmax-margin and cosine baselines and oracle")
    _common(p)
    p.add_argument("--first-layer", type=positive_int, default=None,
                   help="first layer where an exit is allowed (default 5; 1 for models under 10 blocks)")
    p.add_argument("--test-fraction", type=_fraction, default=0.5)
    p.add_argument("--min-per-class", type=positive_int, default=5)

    p = sub.add_parser("lm", help="rank-2 accuracy when s_2 saturates late vs early (two-proportion z-test)")
    _common(p)
    p.add_argument("--late-margin", type=positive_int, default=7, help="early group: s_2 <= L - M (default 7)")
    return parser


def _write_csv(rows: list[dict], path: str) -> None:
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    write_text(buffer.getvalue(), path)


def _clean(value):
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python, dict keys -> str."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _load(args):
    from huggingface_patch.saturation.layers import collect
    from huggingface_patch.saturation.modalities import load_backend

    corpus = args.corpus
    if corpus is None and args.images is None and args.audio is None:
        corpus = DEFAULT_CORPUS
    backend = load_backend(args.model, corpus=corpus, images=args.images, audio=args.audio, device=args.device,
                           dtype=args.dtype, max_items=args.max_items, max_new_tokens=args.max_new_tokens)
    log.info("model %s (%s): %d layers", args.model, backend.kind, backend.num_layers)
    keep_residual = args.command in ("probe", "intervene", "early-exit")
    try:
        data = collect(backend, args.k, keep_residual=keep_residual, progress=not args.no_progress,
                       filter_fraction=args.filter_fraction)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    log.info("%d positions, %d kept by the filter", data.size, int(data.kept.sum()))
    return backend, data


def _meta(args, backend, data) -> dict:
    return {"model": args.model, "modality": backend.kind, "num_layers": data.num_layers, "k": data.k,
            "positions": data.size, "kept_positions": int(data.kept.sum())}


def cmd_layers(args, backend, data, out: str) -> None:
    """Write the saturation layers of every position, their summary and distribution."""
    from huggingface_patch.saturation.layers import summarize_layers
    from huggingface_patch.saturation.plots import plot_saturation_layers

    rows = []
    kept = data.kept
    for n in range(data.size):
        row = {"item": backend_label(data, n), "document": int(data.document[n]), "position": int(data.position[n]),
               "token_index": int(data.token_index[n]), "target": int(data.target[n]), "kept": bool(kept[n])}
        for i in range(data.k):
            row[f"t{i + 1}"] = int(data.top[n, i])
        for i in range(data.k):
            row[f"s{i + 1}"] = int(data.saturation[n, i])
        row["top1_text"] = backend.decode(int(data.top[n, 0]))
        rows.append(row)
    _write_csv(rows, os.path.join(out, "saturation_layers.csv"))
    summary = {**_meta(args, backend, data), **summarize_layers(data)}
    write_json(_clean(summary), os.path.join(out, "saturation_layers.json"))
    save_figure(plot_saturation_layers(data.saturation[kept], data.num_layers,
                                       f"Saturation layers ({os.path.basename(str(args.model))})"),
                os.path.join(out, "saturation_layers.png"))
    print(f"{summary['kept_positions']} of {summary['positions']} positions kept; mean s_i per rank: "
          + ", ".join(f"{r['mean_saturation_layer']:.2f}" for r in summary["ranks"]))


def backend_label(data, n: int) -> str:
    """The name of position ``n``'s input (document or file)."""
    return data.items[int(data.item[n])].label


def cmd_order(args, backend, data, out: str) -> None:
    """Write strict Kendall tau, its permutation test and the rank-correspondence plot."""
    from huggingface_patch.saturation.ordering import permutation_test, position_taus, rank_correspondence
    from huggingface_patch.saturation.plots import plot_rank_correspondence

    kept = data.kept
    sat = data.saturation[kept]
    test = permutation_test(sat, data.num_layers, args.permutations, seed=args.seed, min_ranks=args.min_ranks)
    correspondence = rank_correspondence(sat)
    taus, c = position_taus(sat, data.num_layers, args.min_ranks)
    rows = []
    kept_index = [n for n in range(data.size) if kept[n]]
    for j, n in enumerate(kept_index):
        rows.append({"item": backend_label(data, n), "position": int(data.position[n]), "c": int(c[j]),
                     "tau": "" if math.isnan(taus[j]) else float(taus[j]),
                     **{f"s{i + 1}": int(data.saturation[n, i]) for i in range(data.k)}})
    _write_csv(rows, os.path.join(out, "saturation_order_positions.csv"))
    summary = {**_meta(args, backend, data), "kendall": test, "rank_correspondence": correspondence}
    write_json(_clean(summary), os.path.join(out, "saturation_order.json"))
    save_figure(plot_rank_correspondence(correspondence, f"Rank correspondence: {os.path.basename(str(args.model))} "
                                         f"(n = {correspondence['positions']})"),
                os.path.join(out, "saturation_rank_correspondence.png"))
    print(f"strict Kendall tau = {test['tau']:.4f} over {test['positions']} positions; "
          f"permutation test ({test['permutations']} shuffles): {test['p_text']}")


def cmd_probe(args, backend, data, out: str) -> None:
    """Write the task-probing results and plot."""
    from huggingface_patch.saturation.plots import plot_probe
    from huggingface_patch.saturation.probe import probe_tasks

    try:
        result = probe_tasks(data, first_layer=args.first_layer, folds=args.folds, min_per_class=args.min_per_class,
                             seed=args.seed)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    write_json(_clean({**_meta(args, backend, data), **result}), os.path.join(out, "saturation_probe.json"))
    save_figure(plot_probe(result), os.path.join(out, "saturation_probe.png"))
    probe = result["probe"]
    print(f"task probe: balanced accuracy {probe['balanced_accuracy']:.3f} ± {probe['balanced_accuracy_se']:.3f} "
          f"(chance {result['chance']:.2f}; Gaussian control {result['gaussian_control']['balanced_accuracy']:.3f})")


def cmd_intervene(args, backend, data, out: str) -> None:
    """Write the residual-implant trials, their summary and plot."""
    from huggingface_patch.saturation.intervene import find_pairs, run_interventions
    from huggingface_patch.saturation.plots import plot_intervention

    defaults = backend.pair_defaults
    settings = {
        "max_distance": args.max_distance if args.max_distance is not None else defaults["max_distance"],
        "min_gap": args.min_gap if args.min_gap is not None else defaults["min_gap"],
        "min_saturation": args.min_saturation if args.min_saturation is not None else defaults["min_saturation"],
    }
    pairs = find_pairs(data, within_item=backend.pairs_within_item, **settings)
    if not pairs:
        log.warning("no position pairs meet the criteria %s", settings)
    trials, summary = run_interventions(backend, data, pairs, window=args.window, max_pairs=args.max_pairs,
                                        seed=args.seed, progress=not args.no_progress)
    for trial in trials:
        trial["donor_item"] = backend_label(data, trial["donor"])
        trial["donor_position"] = int(data.position[trial["donor"]])
        trial["recipient_position"] = int(data.position[trial["recipient"]])
    _write_csv(trials, os.path.join(out, "saturation_intervene.csv"))
    write_json(_clean({**_meta(args, backend, data), "criteria": settings, "candidate_pairs": len(pairs), **summary}),
               os.path.join(out, "saturation_intervene.json"))
    save_figure(plot_intervention(summary), os.path.join(out, "saturation_intervene.png"))
    at_zero = summary["by_offset"].get(0, {}).get("success_rate", float("nan"))
    print(f"{summary['pairs']} pairs, {summary['trials']} trials; success rate at offset 0: {at_zero:.3f}")


def cmd_early_exit(args, backend, data, out: str) -> None:
    """Write the early-exit curves of every rule and their plot."""
    from huggingface_patch.saturation.early_exit import early_exit
    from huggingface_patch.saturation.plots import plot_early_exit

    try:
        result = early_exit(data, first_layer=args.first_layer, test_fraction=args.test_fraction,
                            min_per_class=args.min_per_class, seed=args.seed)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    rows = [{"method": method, **point} for method, points in result["curves"].items() for point in points]
    _write_csv(rows, os.path.join(out, "saturation_early_exit.csv"))
    write_json(_clean({**_meta(args, backend, data), **result}), os.path.join(out, "saturation_early_exit.json"))
    save_figure(plot_early_exit(result), os.path.join(out, "saturation_early_exit.png"))
    for method in ("probe", "oracle", "full"):
        if method in result["curves"]:
            point = result["curves"][method][0]
            print(f"{method}: accuracy {point['accuracy']:.3f}, speed-up {point['speedup']:.2f}")


def cmd_lm(args, backend, data, out: str) -> None:
    """Write the rank-2 accuracy comparison and its plot."""
    from huggingface_patch.saturation.lm import rank2_accuracy
    from huggingface_patch.saturation.plots import plot_lm

    if data.k < 2:
        raise UsageError("the lm analysis needs --k 2 or more")
    result = rank2_accuracy(data, args.late_margin)
    write_json(_clean({**_meta(args, backend, data), **result}), os.path.join(out, "saturation_lm.json"))
    save_figure(plot_lm(result), os.path.join(out, "saturation_lm.png"))
    late, early = result["late"], result["early"]
    print(f"rank-2 accuracy (top-1 wrong): late {late['rank2_accuracy']:.3f} (n={late['positions']}), "
          f"early {early['rank2_accuracy']:.3f} (n={early['positions']}); z = {result['z']:.3f}, "
          f"p = {result['p_value']:.3g}")


COMMANDS = {"layers": cmd_layers, "order": cmd_order, "probe": cmd_probe, "intervene": cmd_intervene,
            "early-exit": cmd_early_exit, "lm": cmd_lm}


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse ``argv``, run the subcommand; exit code 2 with a one-line error for bad input."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)

    def body():
        backend, data = _load(args)
        os.makedirs(args.output_dir, exist_ok=True)
        COMMANDS[args.command](args, backend, data, args.output_dir)
        return 0

    return run_cli(body, PROG)


if __name__ == "__main__":
    raise SystemExit(main())
