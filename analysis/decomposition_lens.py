"""Decomposition lens: for one target position, each source's contribution at each layer projected to the
vocabulary through the frozen final norm and the LM head: which output tokens each source promotes.

    python -m analysis.decomposition_lens --model smollm2-135m --text "The capital of France is" --target -1

Outputs in ``--output-dir``: ``lens.csv`` (layer, source, rank, promoted token, logit; plus the source's
contribution to the actual next token's logit), ``lens.json`` (settings and top token per layer and source)
and ``lens.png`` (heatmap layers × sources of the contribution to the next token's logit, or to the token
the model predicts at the last position).
"""

from __future__ import annotations

import argparse
import logging
import os

from huggingface_patch.cli import ArgumentParser, UsageError, run_cli, setup_logging, write_json

logger = logging.getLogger("analysis.decomposition_lens")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m analysis.decomposition_lens", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="hub id, folder, .gguf file or smollm2-135m (default)")
    parser.add_argument("--text", default=None, help="input text (default: a document of --corpus)")
    parser.add_argument("--corpus", default="examples/corpus.sentitems", help="sentitems or plain-text corpus")
    parser.add_argument("--document", type=int, default=0, help="document of --corpus (default 0)")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens of the document used (default 64)")
    parser.add_argument("--target", type=int, default=-1,
                        help="target position in the input, BOS = 0 (default -1: last)")
    parser.add_argument("--window", type=int, default=None, help="sources kept (default: all)")
    parser.add_argument("--top-k", type=int, default=5, help="promoted tokens per layer and source (default 5)")
    parser.add_argument("--output-dir", default="results/decomposition_lens", help="output folder")
    parser.add_argument("--device", default=None, help="torch device (default cpu)")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)

    def body():
        import torch

        from huggingface_patch.attribution.lens import decomposition_lens
        from huggingface_patch.attribution.plots import plot_lens_heatmap
        from huggingface_patch.attribution.tables import write_rows
        from huggingface_patch.corpus import CorpusError, bos_token_id, read_corpus

        if args.window is not None and args.window <= 0:
            raise UsageError(f"--window must be a positive integer, got {args.window}")
        if args.top_k <= 0 or args.max_tokens < 2:
            raise UsageError("--top-k must be positive and --max-tokens at least 2")
        text = args.text
        if text is None:
            try:
                documents = read_corpus(args.corpus)
            except CorpusError as exc:
                raise UsageError(str(exc)) from None
            if not 0 <= args.document < len(documents):
                raise UsageError(f"--document {args.document} out of range: {args.corpus} has "
                                 f"{len(documents)} documents")
            text = documents[args.document]
        if not text.strip():
            raise UsageError("--text is empty")
        from huggingface_patch.loading import load_model_and_tokenizer

        model, tokenizer, source = load_model_and_tokenizer(args.model, device=args.device)
        try:
            bos = bos_token_id(model.config, tokenizer)
        except CorpusError as exc:
            raise UsageError(str(exc)) from None
        ids = torch.tensor([bos] + tokenizer(text, add_special_tokens=False)["input_ids"][: args.max_tokens - 1])
        target = args.target if args.target >= 0 else len(ids) + args.target
        if not 0 <= target < len(ids):
            raise UsageError(f"--target {args.target} outside the input of {len(ids)} tokens (BOS = 0)")
        result = decomposition_lens(model, ids, target, args.window)
        tokens = tokenizer.convert_ids_to_tokens(ids.tolist())
        if result.next_id < 0:  # last position: follow the token the model predicts
            predicted = int(result.logits[-1].sum(0).argmax())
            column, label = result.logits[..., predicted], tokenizer.convert_ids_to_tokens([predicted])[0]
        else:
            column, label = result.target_logit, tokens[target + 1]
        values, top_ids = result.top(args.top_k)
        rows, top = [], []
        for layer in range(values.shape[0]):
            for j, src in enumerate(result.sources):
                names = tokenizer.convert_ids_to_tokens(top_ids[layer, j].tolist())
                top.append(dict(layer=layer, source_index=src, source_token=tokens[src], top_tokens=names,
                                top_logits=[round(float(v), 4) for v in values[layer, j]],
                                next_token_logit=float(column[layer, j])))
                for rank in range(args.top_k):
                    rows.append(dict(layer=layer, source_index=src, source_token=tokens[src], rank=rank + 1,
                                     promoted_token=names[rank], promoted_id=int(top_ids[layer, j, rank]),
                                     logit=float(values[layer, j, rank]), next_token=label,
                                     next_token_logit=float(column[layer, j])))
        out = args.output_dir
        write_rows(rows, os.path.join(out, "lens.csv"))
        write_json(dict(model=source.name, tokens=tokens, target=target, target_token=tokens[target],
                        next_token=label, window=args.window, top_k=args.top_k,
                        layers="0 = embeddings, l = output of layer l; frozen final norm at that layer's state",
                        entries=top), os.path.join(out, "lens.json"))
        plot_lens_heatmap(column.numpy(), ["emb"] + [str(i) for i in range(1, column.shape[0])],
                          [tokens[s] for s in result.sources], os.path.join(out, "lens.png"),
                          title=f"{source.name}: contribution of each source to the logit of {label!r} "
                                f"at position {target}",
                          colorbar="logit contribution")
        logger.info("wrote %s", out)

    return run_cli(body, parser.prog)


if __name__ == "__main__":
    raise SystemExit(main())
