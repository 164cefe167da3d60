"""Sublayer knockout (Geva et al. 2023): knock out the MLP or the attention of a window of layers at
every position and measure, at layer m, the attribute probability (default) or the attributes rate at the
last subject position. Attention kinds: 'attention-uniform' (the paper's quirk: uniform attention over
the causal prefix) and 'attention-zero' (true zero attention).

    python -m analysis.sublayer_knockout --model smollm2-135m --sample 20 --output-dir results/sublayer

Outputs: ``sublayer.csv`` (one row per fact, kind and start layer), ``sublayer_summary.json``,
``sublayer.png`` (mean value vs first knocked-out layer, one line per kind, dotted: no intervention),
``queries.json``, ``run.json``.
"""

from __future__ import annotations

from analysis.recall_tool import RecallTool
from huggingface_patch.cli import UsageError, positive_int
from huggingface_patch.recall.depth import setting


def add_arguments(parser) -> None:
    from huggingface_patch.recall.sublayer import KINDS, METRICS

    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS),
                        help="what to knock out (default: all)")
    parser.add_argument("--measure-layer", type=setting, default="scaled",
                        help="0-based block whose output is measured: a number, 'scaled' (default: the paper's 40 of "
                             "48 scaled to the depth, 25 for 30 blocks) or 'paper' (40)")
    parser.add_argument("--layer-window", "--window", dest="window", type=setting, default="scaled",
                        help="blocks knocked out from each start: a number, 'scaled' (default: the paper's effective "
                             "11 of 48 scaled to the depth, 7 for 30 blocks) or 'paper' (11); --window is the older "
                             "name")
    parser.add_argument("--metric", choices=METRICS, default=None,
                        help="default: attributes-rate with --paragraphs, else attribute-prob")
    parser.add_argument("--paragraphs", default=None, help="CSV subject,paragraphs for the attributes rate")
    parser.add_argument("--position", default="subject-last",
                        choices=["subject-last", "subject-first", "after-subject", "last", "first"],
                        help="position measured (default subject-last)")
    parser.add_argument("--top-k", type=positive_int, default=500, help="top tokens before filtering (default 500)")
    parser.add_argument("--final-norm", action="store_true", help="apply the final norm before projecting")


def prepare(args, facts):
    from huggingface_patch.recall.attributes_rate import load_paragraphs

    metric = args.metric or ("attributes-rate" if args.paragraphs else "attribute-prob")
    if metric == "attributes-rate" and not args.paragraphs:
        raise UsageError("--metric attributes-rate needs --paragraphs CSV")
    paragraphs = load_paragraphs(args.paragraphs) if args.paragraphs else None
    if metric == "attributes-rate":
        facts = [f for f in facts if f["subject"] in paragraphs]
        if not facts:
            raise UsageError(f"no fact's subject appears in {args.paragraphs}")
    return facts, dict(metric=metric, paragraphs=paragraphs)


def check_model(model, args, options) -> None:
    from huggingface_patch.architectures import model_parts
    from huggingface_patch.recall.depth import PAPER_MEASURE_LAYER, PAPER_SUBLAYER_WINDOW, resolve

    layers = len(model_parts(model).layers)
    m, options["measure_rule"] = resolve(args.measure_layer, PAPER_MEASURE_LAYER, layers)
    m = min(m, layers - 1) if args.measure_layer == "scaled" else m
    if not 0 < m < layers:
        raise UsageError(f"--measure-layer must be between 1 and {layers - 1} for this {layers}-layer model")
    options["measure_layer"] = m
    options["window"], options["window_rule"] = resolve(args.window, PAPER_SUBLAYER_WINDOW, layers)


def analyse(model, tokenizer, queries, args, options, progress):
    from huggingface_patch.recall.analyses import sublayer_result

    return sublayer_result(model, tokenizer, queries, kinds=args.kinds, measure_layer=options["measure_layer"],
                           window=options["window"], metric=options["metric"], paragraphs=options["paragraphs"],
                           position=args.position, top_k=args.top_k, final_norm=args.final_norm,
                           measure_rule=options["measure_rule"], window_rule=options["window_rule"],
                           clusters=options["clusters"], cluster_by=args.cluster, seed=args.seed,
                           max_rows=args.batch_rows, progress=progress)


def plot(summary, path, title, args, options) -> None:
    from huggingface_patch.recall.plots import plot_bands

    curves = dict(summary["summary"])
    baseline = curves.pop("none", [{"mean": float("nan")}])[0]["mean"]
    ylabel = "attributes rate (%)" if summary["metric"] == "attributes-rate" else "attribute probability"
    plot_bands(curves, path, hline=baseline, xlabel="first knocked-out layer (0-based block index)",
               ylabel=f"{ylabel} after block {summary['measure_layer']}",
               title=title.format(f"sublayer knockout, {summary['window']} blocks; dotted: none"))


TOOL = RecallTool("sublayer_knockout", __doc__.split("\n\n")[0], "results/sublayer_knockout",
                  ("sublayer.csv", "sublayer_summary.json", "sublayer.png"), add_arguments, analyse, plot,
                  prepare=prepare, check_model=check_model)
main = TOOL.main

if __name__ == "__main__":
    raise SystemExit(main())
