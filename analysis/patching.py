"""Patching early representations (Geva et al. 2023): replace the input of block l at the subject,
non-subject or last positions with the same prompt's state after an earlier block s and measure attention
extraction at l (per-example rate over blocks l >= s + 2, against the unpatched rate).

    python -m analysis.patching --model smollm2-135m --sample 20 --output-dir results/patching

Outputs: ``patching.csv`` (one row per fact, set, source layer and layer: rank, extraction),
``patching_summary.json``, ``patching.png`` (per-example extraction rate vs source layer), ``queries.json``,
``run.json``.
"""

from __future__ import annotations

import argparse

from analysis.recall_tool import RecallTool


def _block(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a block index (-1 or more), got {text!r}") from None
    if value < -1:
        raise argparse.ArgumentTypeError(f"expected a block index of -1 (the embeddings) or more, got {value}")
    return value


def add_arguments(parser) -> None:
    from huggingface_patch.recall.patching import DEFAULT_SOURCES, POSITION_SETS

    parser.add_argument("--sources", nargs="+", type=_block, default=list(DEFAULT_SOURCES),
                        help="0-based blocks whose output is patched in, -1 = the embeddings (default -1 0 4 9 19: "
                             "the paper's hidden_states 0 1 5 10 20); those above L-3 are dropped")
    parser.add_argument("--sets", nargs="+", choices=POSITION_SETS, default=list(POSITION_SETS),
                        help="positions patched (default: all)")
    parser.add_argument("--final-norm", action="store_true", help="apply the final norm before projecting")


def check_model(model, args, options) -> None:
    from huggingface_patch.recall.patching import usable_sources

    usable_sources(model, args.sources)  # one-line error when no source layer fits the model


def analyse(model, tokenizer, queries, args, options, progress):
    from huggingface_patch.recall.analyses import patching_result

    return patching_result(model, queries, sources=args.sources, position_sets=args.sets, final_norm=args.final_norm,
                           clusters=options["clusters"], cluster_by=args.cluster, seed=args.seed,
                           max_rows=args.batch_rows, progress=progress)


def plot(summary, path, title, args, options) -> None:
    from huggingface_patch.recall.plots import plot_lines

    series = {f"patch {name}": (summary["sources"], rates) for name, rates in summary["patched"].items()}
    series["no patching"] = (summary["sources"], summary["unpatched"])
    plot_lines(series, path, xlabel="source: 0-based block whose output is patched in (-1 = embeddings)",
               ylabel="% examples with attention extraction", title=title.format("patching early representations"))


TOOL = RecallTool("patching", __doc__.split("\n\n")[0], "results/patching",
                  ("patching.csv", "patching_summary.json", "patching.png"), add_arguments, analyse, plot,
                  check_model=check_model)
main = TOOL.main

if __name__ == "__main__":
    raise SystemExit(main())
