"""Subject enrichment / attributes rate (Geva et al. 2023): project hidden states at the first, subject
first, subject last, after-subject and last positions of every layer to the vocabulary, keep the top 50
non-stopword tokens (of the top 500) and measure their overlap with a reference text about the subject.

    python -m analysis.attributes_rate --model smollm2-135m --output-dir results/attributes_rate

The reference CSV has columns ``subject,paragraphs`` (default: the small example shipped with the
package); facts whose subject has no paragraph are skipped. Outputs: ``attributes_rate.csv`` (one row
per fact, position, layer), ``attributes_rate_summary.json``, ``attributes_rate.png``, ``queries.json``,
``run.json``.
"""

from __future__ import annotations

from analysis.recall_tool import RecallTool
from huggingface_patch.cli import UsageError, positive_int


def add_arguments(parser) -> None:
    from huggingface_patch.recall.attributes_rate import EXAMPLE_PARAGRAPHS, POSITIONS

    parser.add_argument("--paragraphs", default=EXAMPLE_PARAGRAPHS,
                        help="CSV with columns subject,paragraphs (default: the shipped example)")
    parser.add_argument("--positions", nargs="+", choices=POSITIONS, default=list(POSITIONS))
    parser.add_argument("--top-k", type=positive_int, default=500, help="top tokens before filtering (default 500)")
    parser.add_argument("--keep", type=positive_int, default=50, help="tokens kept after filtering (default 50)")
    parser.add_argument("--final-norm", action="store_true", help="apply the final norm before projecting")


def prepare(args, facts):
    from huggingface_patch.recall.attributes_rate import load_paragraphs

    paragraphs = load_paragraphs(args.paragraphs)
    facts = [f for f in facts if f["subject"] in paragraphs]
    if not facts:
        raise UsageError(f"no fact's subject appears in {args.paragraphs}")
    return facts, dict(paragraphs=paragraphs)


def analyse(model, tokenizer, queries, args, options, progress):
    from huggingface_patch.recall.analyses import attributes_rate_result

    return attributes_rate_result(model, tokenizer, queries, options["paragraphs"], positions=args.positions,
                                  top_k=args.top_k, keep=args.keep, final_norm=args.final_norm,
                                  clusters=options["clusters"], cluster_by=args.cluster, seed=args.seed,
                                  max_rows=args.batch_rows, progress=progress)


def plot(summary, path, title, args, options) -> None:
    from huggingface_patch.recall.plots import plot_bands

    plot_bands(summary["summary"], path, hline=None, ylabel="attributes rate (%)",
               xlabel="layer (0-based block whose output is read; -1 = embeddings)",
               title=title.format("attributes rate by position"))


TOOL = RecallTool("attributes_rate", __doc__.split("\n\n")[0], "results/attributes_rate",
                  ("attributes_rate.csv", "attributes_rate_summary.json", "attributes_rate.png"), add_arguments,
                  analyse, plot, prepare=prepare)
main = TOOL.main

if __name__ == "__main__":
    raise SystemExit(main())
