"""Parameters in embedding space (Dar et al. 2023): read a model's weights as token-to-token maps.

    python -m analysis.embedding_space ff   --layer 20 --neuron 100 --output-dir results/embedding_space
    python -m analysis.embedding_space vo   --layer 10 --head 3 --only-alnum
    python -m analysis.embedding_space qk   --layer 10 --head 3 --only-alnum
    python -m analysis.embedding_space tsne --layer 20 --neuron 100 --part value
    python -m analysis.embedding_space align --corpus examples/corpus.sentitems

Outputs (in ``--output-dir``): ``ff_L{l}_N{n}.csv/.json/.png``, ``{vo,qk}_L{l}_H{h}.csv/.json/.png``,
``tsne_L{l}_N{n}_{part}.csv/.png/.html``, ``align.csv/.json/.png``; see docs/embedding_space.md.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import time

from huggingface_patch.cli import (
    ArgumentParser,
    UsageError,
    add_device_arguments,
    add_model_argument,
    atomic_path,
    non_negative_int,
    positive_float,
    positive_int,
    run_cli,
    save_figure,
    setup_logging,
    write_json,
    write_text,
)

logger = logging.getLogger("analysis.embedding_space")
PROG = "python -m analysis.embedding_space"


def _common(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser)
    parser.add_argument("--output-dir", default="results/embedding_space", help="output folder (default %(default)s)")
    add_device_arguments(parser)
    parser.add_argument("--embedding", choices=("output", "input"), default="output",
                        help="embedding for the read side (FF keys, VO rows, QK both sides): 'output' = LM head "
                             "(the paper, default) or 'input' = input embedding")
    filters = parser.add_argument_group("token filters")
    filters.add_argument("--only-ascii", action="store_true", help="keep tokens whose text is ASCII only")
    filters.add_argument("--only-alnum", action="store_true", help="keep tokens whose text is letters/digits only")
    filters.add_argument("--word-list", default=None, help="file of words (one a line): keep only tokens in it")
    filters.add_argument("--keep-special", action="store_true", help="keep special tokens (excluded by default)")
    filters.add_argument("--max-id", type=positive_int, default=None,
                         help="keep only token ids below this (BPE ids are ordered roughly by frequency)")
    parser.add_argument("--normalize", action="store_true",
                        help="unit-norm columns of E (not the paper's default for ff/vo/qk; an option of its t-SNE)")
    parser.add_argument("--verbose", action="store_true", help="debug logging")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with its five subcommands."""
    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")

    ff = sub.add_parser("ff", help="top tokens of a neuron's key(s) and value", description=(
        "Top tokens of one MLP neuron's key (OPT/GPT-2; Llama: gate and up) and value projected through E."))
    _common(ff)
    ff.add_argument("--layer", type=non_negative_int, required=True)
    ff.add_argument("--neuron", type=non_negative_int, required=True)
    ff.add_argument("--k", type=positive_int, default=100, help="tokens per part (default 100)")
    ff.add_argument("--bottom", action="store_true",
                    help="most negative tokens instead of the top ones (a gated MLP's up · x may be negative)")

    for kind, what in (("vo", "Eᵀ W_VO E (token attended to -> token written)"),
                       ("qk", "Eᵀ W_QK E (query token -> key token)")):
        p = sub.add_parser(kind, help=f"top token pairs of {what}",
                           description=f"Token pairs with the largest entries of {what} for one head, computed in "
                                       "blocks with the original threshold search (approx_topk).")
        _common(p)
        p.add_argument("--layer", type=non_negative_int, required=True)
        p.add_argument("--head", type=non_negative_int, required=True)
        p.add_argument("--min-k", type=positive_int, default=500, help="fewest pairs returned (default 500)")
        p.add_argument("--max-k", type=positive_int, default=250_000, help="most pairs returned (default 250000)")
        p.add_argument("--th0", type=positive_float, default=1.0,
                       help="initial threshold (default 1, as the notebook)")
        p.add_argument("--max-iters", type=non_negative_int, default=10, help="bisection steps (default 10)")
        p.add_argument("--pairs", choices=("near", "identical", "none"), default="near",
                       help="exclude pairs of near-identical tokens (default), of identical ids only, or none")
        p.add_argument("--show", type=positive_int, default=50,
                       help="pairs in the JSON summary and the figure (default 50)")
        p.add_argument("--block-mb", type=positive_int, default=64,
                       help="memory of one block of the matrix in MiB (default 64)")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")

    ts = sub.add_parser("tsne", help="t-SNE of a parameter vector's top tokens (PNG + HTML)",
                        description="t-SNE of the embedding columns of a neuron part's top tokens.")
    _common(ts)
    ts.add_argument("--layer", type=non_negative_int, required=True)
    ts.add_argument("--neuron", type=non_negative_int, required=True)
    ts.add_argument("--part", choices=("key", "gate", "up", "value"), default="value",
                    help="which vector of the neuron (default value; Llama has gate/up instead of key)")
    ts.add_argument("--k", type=positive_int, default=100, help="tokens (default 100)")
    ts.add_argument("--components", type=int, choices=(2, 3), default=3, help="2-D or 3-D (default 3)")
    ts.add_argument("--perplexity", type=positive_float, default=3.0, help="default 3")
    ts.add_argument("--learning-rate", type=positive_float, default=10.0, help="default 10")
    ts.add_argument("--seed", type=int, default=0)

    al = sub.add_parser("align", help="parameters vs hidden states recall against a random baseline",
                        description="Recall of the hidden state's top tokens among the top tokens of the most "
                                    "activated neurons' keys/values, per layer, against a random position.")
    _common(al)
    al.add_argument("--corpus", default="examples/corpus.sentitems",
                    help="sentitems or plain text (default %(default)s)")
    al.add_argument("--layers", type=non_negative_int, nargs="+", default=None, help="layers (default all)")
    al.add_argument("--neurons", type=positive_int, default=5, help="most activated neurons per position (default 5)")
    al.add_argument("--tokens", type=positive_int, default=50, help="top tokens compared (default 50)")
    al.add_argument("--max-positions", type=positive_int, default=1000, help="positions used (default 1000)")
    al.add_argument("--target", choices=("layer", "final"), default="layer",
                    help="hidden state of the same layer (default) or of the last layer")
    al.add_argument("--seed", type=int, default=0)
    return parser


# --------------------------------------------------------------------------- helpers


def _write_csv(rows: list[dict], path: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["empty"])
            writer.writeheader()
            writer.writerows(rows)


def _token_filter(args):
    from huggingface_patch.embedding_space import TokenFilter, read_word_list

    words = read_word_list(args.word_list) if args.word_list else None
    return TokenFilter(only_ascii=args.only_ascii, only_alnum=args.only_alnum, word_list=words,
                       keep_special=args.keep_special, max_id=args.max_id)


def _load(args):
    from huggingface_patch.architectures import model_parts
    from huggingface_patch.embedding_space import vocabulary
    from huggingface_patch.loading import load_model_and_tokenizer

    model, tokenizer, source = load_model_and_tokenizer(args.model, dtype=args.dtype, device=args.device,
                                                        decomposed=False)
    model_parts(model)  # UnsupportedArchitectureError names the supported families
    vocab = vocabulary(tokenizer, model.get_output_embeddings().weight.shape[0])
    return model, tokenizer, source, vocab


def _out(args, name: str) -> str:
    return os.path.join(args.output_dir, name)


def _bar_panels(panels: dict[str, list[tuple[str, float]]], title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 6), squeeze=False)
    for ax, (name, items) in zip(axes[0], panels.items()):
        labels = [t for t, _ in items][::-1]
        ax.barh(range(len(items)), [v for _, v in items][::-1], color="C0")
        ax.set_yticks(range(len(items)), labels, fontsize=8)
        ax.set_title(name, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- subcommands


def run_ff(args, model, vocab, source) -> None:
    """``ff``: a neuron's key(s) and value top tokens, side by side."""
    from huggingface_patch.embedding_space import neuron_top_tokens

    allowed = _token_filter(args).allowed(vocab)
    tops = neuron_top_tokens(model, args.layer, args.neuron, args.k, allowed=allowed, embedding=args.embedding,
                             normalize=args.normalize, largest=not args.bottom)
    n = max(len(ids) for ids, _ in tops.values())
    rows = []
    for rank in range(n):
        row = {"rank": rank + 1}
        for part, (ids, values) in tops.items():
            row[f"{part}_token"] = vocab.display(int(ids[rank])) if rank < len(ids) else ""
            row[f"{part}_score"] = round(float(values[rank]), 6) if rank < len(ids) else ""
        for part, (ids, _) in tops.items():
            row[f"{part}_id"] = int(ids[rank]) if rank < len(ids) else ""
        rows.append(row)
    stem = f"ff_L{args.layer}_N{args.neuron}"
    _write_csv(rows, _out(args, stem + ".csv"))
    write_json(dict(model=source.name, layer=args.layer, neuron=args.neuron, k=args.k, embedding=args.embedding,
                    normalize=args.normalize, bottom=args.bottom,
                    filters=_token_filter(args).describe(),
                    top={part: [vocab.display(int(i)) for i in ids[:20]] for part, (ids, _) in tops.items()}),
               _out(args, stem + ".json"))
    panels = {part: [(vocab.display(int(i)), float(v)) for i, v in zip(ids[:25], values[:25])]
              for part, (ids, values) in tops.items()}
    save_figure(_bar_panels(panels, f"{source.name}: layer {args.layer}, neuron {args.neuron} (part · E)"),
                _out(args, stem + ".png"))


def _pair_heatmap(result, vocab, show: int, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from huggingface_patch.embedding_space import head_map_factors  # noqa: F401  (documented link)

    n = min(show, len(result.entries))
    rows = list(dict.fromkeys(int(i) for i in result.entries.rows[:n]))[:20]
    cols = list(dict.fromkeys(int(j) for j in result.entries.cols[:n]))[:20]
    grid = torch.full((len(rows), len(cols)), float("nan"))
    entries = result.entries
    lookup = {(int(i), int(j)): float(v) for i, j, v in zip(entries.rows, entries.cols, entries.values)}
    for a, i in enumerate(rows):
        for b, j in enumerate(cols):
            grid[a, b] = lookup.get((i, j), float("nan"))
    fig, ax = plt.subplots(figsize=(0.45 * len(cols) + 3, 0.35 * len(rows) + 2.5))
    image = ax.imshow(grid.numpy(), cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(cols)), [vocab.display(j) for j in cols], rotation=90, fontsize=8)
    ax.set_yticks(range(len(rows)), [vocab.display(i) for i in rows], fontsize=8)
    first, second = ("token attended to (row)", "token written (column)") if result.kind == "vo" else \
        ("query token (row)", "key token (column)")
    ax.set_ylabel(first)
    ax.set_xlabel(second)
    fig.colorbar(image, ax=ax, shrink=0.8, label="entry (blank: below threshold)")
    ax.set_title(title, fontsize=10)
    return fig


def run_pairs(args, model, vocab, source) -> None:
    """``vo`` / ``qk``: a head's top token pairs."""
    from huggingface_patch.embedding_space import top_head_pairs

    if args.min_k > args.max_k:
        raise UsageError(f"--min-k ({args.min_k}) must not exceed --max-k ({args.max_k})")
    token_filter = _token_filter(args)
    result = top_head_pairs(model, vocab, args.layer, args.head, args.command, token_filter=token_filter,
                            pair_exclusion=args.pairs, embedding=args.embedding, min_k=args.min_k, max_k=args.max_k,
                            th0=args.th0, max_iters=args.max_iters, max_block_bytes=args.block_mb * 2**20,
                            progress=not args.no_progress, normalize=args.normalize)
    stem = f"{args.command}_L{args.layer}_H{args.head}"
    rows = result.rows(vocab)
    _write_csv(rows, _out(args, stem + ".csv"))
    write_json(dict(model=source.name, map=args.command, layer=args.layer, head=args.head, embedding=args.embedding,
                    normalize=args.normalize,
                    filters=token_filter.describe(), pair_exclusion=args.pairs, tokens_allowed=result.allowed_tokens,
                    pairs_returned=len(result.entries), search=result.entries.stats, top=rows[: args.show]),
               _out(args, stem + ".json"))
    what = "Eᵀ W_VO E" if args.command == "vo" else "Eᵀ W_QK E"
    save_figure(_pair_heatmap(result, vocab, args.show, f"{source.name}: {what}, layer {args.layer}, head {args.head}"),
                _out(args, stem + ".png"))


def run_tsne(args, model, vocab, source) -> None:
    """``tsne``: t-SNE of a neuron part's top tokens."""
    from huggingface_patch.embedding_space import embedding_matrix, ff_vectors
    from huggingface_patch.embedding_space.tsne import plot_tsne, tsne_html, tsne_top_tokens

    vectors = ff_vectors(model, args.layer, args.neuron)
    if args.part not in vectors:
        raise UsageError(f"--part {args.part} does not exist in this model: choose from {', '.join(vectors)}")
    which = "output" if args.part == "value" else args.embedding
    result = tsne_top_tokens(vectors[args.part], embedding_matrix(model, which), vocab, args.k,
                             allowed=_token_filter(args).allowed(vocab), normalize=args.normalize,
                             n_components=args.components, perplexity=args.perplexity,
                             learning_rate=args.learning_rate, seed=args.seed)
    stem = f"tsne_L{args.layer}_N{args.neuron}_{args.part}"
    title = f"{source.name}: top {len(result.ids)} tokens of layer {args.layer} neuron {args.neuron} {args.part} · E"
    _write_csv(result.rows(), _out(args, stem + ".csv"))
    save_figure(plot_tsne(result, title), _out(args, stem + ".png"))
    write_text(tsne_html(result, title), _out(args, stem + ".html"))


def run_align(args, model, tokenizer, vocab, source) -> None:
    """``align``: parameters vs hidden states."""
    from huggingface_patch.corpus import CorpusError, read_corpus
    from huggingface_patch.embedding_space import num_layers
    from huggingface_patch.embedding_space.align import parameter_alignment, plot_alignment

    try:
        texts = read_corpus(args.corpus)
    except CorpusError as exc:
        raise UsageError(str(exc)) from None
    n = num_layers(model)
    for layer in args.layers or []:
        if layer >= n:
            raise UsageError(f"layer {layer} is out of range: the model has {n} (layers 0..{n - 1})")
    start = time.perf_counter()
    result = parameter_alignment(model, tokenizer, texts, layers=args.layers, n_neurons=args.neurons,
                                 k_tokens=args.tokens, max_positions=args.max_positions, target=args.target,
                                 allowed=_token_filter(args).allowed(vocab), embedding=args.embedding, seed=args.seed,
                                 normalize=args.normalize)
    _write_csv(result.rows, _out(args, "align.csv"))
    write_json(dict(model=source.name, corpus=args.corpus, texts=result.texts, positions=result.positions,
                    neurons=args.neurons, tokens=args.tokens, target=args.target, embedding=args.embedding,
                    filters=_token_filter(args).describe(), seconds=round(time.perf_counter() - start, 1),
                    recall="|A ∩ B| / |B|: A = union of top tokens of the top neurons' part · E, "
                           "B = top tokens of final_norm(h) · E; baseline: A from a random other position",
                    rows=result.rows), _out(args, "align.json"))
    save_figure(plot_alignment(result, f"{source.name}: top-{args.neurons} neurons vs hidden state "
                                       f"(top-{args.tokens} tokens, {result.positions} positions)"),
                _out(args, "align.png"))


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    prog = f"{PROG} {args.command}"

    def body():
        from huggingface_patch.embedding_space import ParameterIndexError, WordListError

        start = time.perf_counter()
        try:
            _token_filter(args)  # a bad word list fails before the model loads
            model, tokenizer, source, vocab = _load(args)
            if args.command == "ff":
                run_ff(args, model, vocab, source)
            elif args.command in ("vo", "qk"):
                run_pairs(args, model, vocab, source)
            elif args.command == "tsne":
                run_tsne(args, model, vocab, source)
            else:
                run_align(args, model, tokenizer, vocab, source)
        except (ParameterIndexError, WordListError) as exc:
            raise UsageError(str(exc)) from None
        except ValueError as exc:
            if exc.__class__.__name__ in ("ModelLoadError", "UnsupportedArchitectureError"):
                raise
            if "filters leave" in str(exc) or "needs at least" in str(exc) or "no position" in str(exc):
                raise UsageError(str(exc)) from None
            raise
        logger.info("wrote %s in %.1f s", args.output_dir, time.perf_counter() - start)

    return run_cli(body, prog)


if __name__ == "__main__":
    raise SystemExit(main())
