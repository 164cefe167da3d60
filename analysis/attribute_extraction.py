"""Attribute extraction (Geva et al. 2023): project the attention output and the MLP output at the last
position of every layer to the vocabulary; an extraction event is the attribute (the model's top-1
prediction) at rank 0. Per-layer rates, per-example rates, and how often attention extracts first.

    python -m analysis.attribute_extraction --model smollm2-135m --sample 50 --output-dir results/extraction

Outputs: ``extraction.csv`` (one row per fact, sublayer, layer: rank, score, extraction, top-10 tokens),
``extraction_summary.json``, ``extraction.png`` (extraction rate per layer), ``queries.json``, ``run.json``.
"""

from __future__ import annotations

from analysis.recall_tool import RecallTool


def add_arguments(parser) -> None:
    parser.add_argument("--final-norm", action="store_true",
                        help="apply the final norm before projecting (default: no norm, as in the paper)")


def analyse(model, tokenizer, queries, args, options, progress):
    from huggingface_patch.recall.analyses import extraction_result

    return extraction_result(model, tokenizer, queries, final_norm=args.final_norm, clusters=options["clusters"],
                             cluster_by=args.cluster, seed=args.seed, max_rows=args.batch_rows, progress=progress)


def plot(summary, path, title, args, options) -> None:
    from huggingface_patch.recall.plots import plot_bands

    curves = {f"{k} (any layer: {summary['per_example_rate'][k]:.0f}%)": rows
              for k, rows in summary["per_layer_interval"].items()}
    plot_bands(curves, path, hline=None, value="rate", ylabel="attribute extraction rate (%)",
               title=title.format("attribute extraction at the last position"))


TOOL = RecallTool("attribute_extraction", __doc__.split("\n\n")[0], "results/attribute_extraction",
                  ("extraction.csv", "extraction_summary.json", "extraction.png"), add_arguments, analyse, plot)
main = TOOL.main

if __name__ == "__main__":
    raise SystemExit(main())
