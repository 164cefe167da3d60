"""Attention knockout (Geva et al. 2023): block the edges from the last position to the subject, the
non-subject positions, or the last position itself, over windows of k layers; plot the relative change
of the predicted token's probability per layer.

    python -m analysis.attention_knockout --model smollm2-135m --sample 50 --output-dir results/knockout

Outputs: ``knockout.csv`` (one row per fact, set and layer), ``knockout_summary.json`` (per set and layer:
mean and 95% cluster-bootstrap interval; the layer of the largest drop, as selected; subject vs
non-subject on the same facts; facts known; run time), ``queries.json`` (the facts used), ``knockout.png``,
``run.json``.
"""

from __future__ import annotations

from analysis.recall_tool import RecallTool
from huggingface_patch.recall.depth import setting


def add_arguments(parser) -> None:
    from huggingface_patch.recall.knockout import list_knockout_sets

    parser.add_argument("--layer-window", "--window", dest="window", type=setting, default="scaled",
                        help="blocks knocked out around each block: a number, 'scaled' (default: the paper's 9 of 48 "
                             "scaled to the depth, 6 for 30 blocks) or 'paper' (9); --window is the older name")
    parser.add_argument("--sets", nargs="+", default=list_knockout_sets(), choices=list_knockout_sets(),
                        help="target sets (default: all)")


def check_model(model, args, options) -> None:
    from huggingface_patch.architectures import model_parts
    from huggingface_patch.recall.depth import PAPER_KNOCKOUT_WINDOW, resolve

    options["window"], options["window_rule"] = resolve(args.window, PAPER_KNOCKOUT_WINDOW,
                                                        len(model_parts(model).layers))


def analyse(model, tokenizer, queries, args, options, progress):
    from huggingface_patch.recall.analyses import knockout_result

    return knockout_result(model, queries, window=options["window"], window_rule=options["window_rule"],
                           sets=args.sets, clusters=options["clusters"], cluster_by=args.cluster, seed=args.seed,
                           max_rows=args.batch_rows, progress=progress)


def plot(summary, path, title, args, options) -> None:
    from huggingface_patch.recall.plots import plot_bands

    plot_bands(summary["summary"], path,
               title=title.format(f"attention knockout from the last position (k={summary['window']})"),
               ylabel="% change in prediction probability")


TOOL = RecallTool("attention_knockout", __doc__.split("\n\n")[0], "results/attention_knockout",
                  ("knockout.csv", "knockout_summary.json", "knockout.png"), add_arguments, analyse, plot,
                  check_model=check_model)
main = TOOL.main

if __name__ == "__main__":
    raise SystemExit(main())
