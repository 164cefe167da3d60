"""Logit lens heat maps: each layer's residual stream read through the final norm and the LM head.

    python -m analysis.logit_lens --model smollm2-135m --corpus examples/corpus.sentitems --output-dir out/lens

Writes ``logit_lens_<model>.csv`` (one row per document, lens row and position), ``logit_lens_<model>.json``
(the same as matrices, plus settings) and one heat map per document and colour mode,
``logit_lens_<model>_doc<i>_<colour>.png``. See docs/lens.md.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import os

import torch
from tqdm import tqdm

from huggingface_patch.cli import (
    ArgumentParser,
    UsageError,
    run_cli,
    save_figure,
    setup_logging,
    write_json,
    write_text,
)
from huggingface_patch.lens.corpus import (CorpusError, encode_documents, load_documents, load_lens_model,
                                           pad_batch, pad_id_of)
from huggingface_patch.lens.logit_lens import COLOUR_MODES, SUBLAYER_MODES, logit_lens

log = logging.getLogger("analysis.logit_lens")
PROG = "python -m analysis.logit_lens"
DEFAULT_CORPUS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples",
                              "corpus.sentitems")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="hub id, model folder, .gguf file or smollm2-135m")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--corpus", default=DEFAULT_CORPUS,
                        help="sentitems file (!ARTICLE lines) or plain text (blank-line separated documents)")
    source.add_argument("--text", help="analyse this one text instead of a corpus")
    parser.add_argument("--output-dir", default="lens_output", help="folder for CSV/JSON/PNG (created)")
    parser.add_argument("--colour", "--color", action="append", dest="colour", metavar="MODE",
                        help=f"heat map colour, repeatable: {', '.join(COLOUR_MODES)} (default prob)")
    parser.add_argument("--sublayers", default="none", metavar="MODE",
                        help="extra rows: none, residual (residual after attention) or output (attention and MLP "
                             "sub-layer outputs)")
    parser.add_argument("--max-tokens", type=int, default=32, help="tokens per document, BOS included (default 32)")
    parser.add_argument("--max-documents", type=int, default=None, help="analyse only the first N documents")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--no-plots", action="store_true", help="write CSV/JSON only")
    parser.add_argument("--device", default=None, help="e.g. cpu, cuda (default: where the model loads)")
    parser.add_argument("--dtype", default="float32", help="float32 (default), float64, bfloat16, float16")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def _check(args) -> tuple[list[str], str | None]:
    colours = args.colour or ["prob"]
    for colour in colours:
        if colour not in COLOUR_MODES:
            raise UsageError(f"unknown colour mode {colour!r}: use one of {', '.join(COLOUR_MODES)}")
    sublayers = None if args.sublayers == "none" else args.sublayers
    if sublayers is not None and sublayers not in SUBLAYER_MODES:
        raise UsageError(f"unknown --sublayers {args.sublayers!r}: use none, {', '.join(SUBLAYER_MODES)}")
    if args.max_tokens < 2:
        raise UsageError(f"--max-tokens must be at least 2, got {args.max_tokens}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.max_documents is not None and args.max_documents < 1:
        raise UsageError(f"--max-documents must be at least 1, got {args.max_documents}")
    return colours, sublayers


def run(args) -> int:
    colours, sublayers = _check(args)
    try:
        documents = load_documents(None if args.text is not None else args.corpus, args.text)
    except CorpusError as exc:
        raise UsageError(str(exc)) from exc
    documents = documents[: args.max_documents]
    model, tokenizer, name = load_lens_model(args.model, args.dtype, args.device)
    try:
        encoded = encode_documents(tokenizer, model.config, documents, args.max_tokens)
    except CorpusError as exc:
        raise UsageError(str(exc)) from exc
    device = next(model.parameters()).device
    decode = lambda i: tokenizer.decode([int(i)])  # noqa: E731

    rows_csv, docs_json = [], []
    labels = None
    for start in tqdm(range(0, len(encoded), args.batch_size), desc=f"logit lens {name}", unit="batch"):
        batch = encoded[start : start + args.batch_size]
        ids, mask = pad_batch(batch, pad_id_of(tokenizer), "right")
        result = logit_lens(model, ids.to(device), mask.to(device), sublayers)
        labels = result.labels
        for b, seq in enumerate(batch):
            doc, n = start + b, len(seq)
            tokens = [decode(i) for i in seq]
            next_tokens = tokens[1:] + [""]
            top = [[decode(i) for i in result.top_ids[r, b, :n]] for r in range(len(labels))]
            final_top = [decode(i) for i in result.target_ids[b, :n]]
            entry = {"document": doc, "tokens": tokens, "token_ids": seq, "final_top1": final_top,
                     "top1": top}
            for key, tensor in (("top1_prob", result.top_probs), ("final_top1_prob", result.target_probs),
                                ("final_top1_rank", result.target_ranks), ("kl", result.kl)):
                entry[key] = tensor[:, b, :n].tolist()
            docs_json.append(entry)
            for r, label in enumerate(labels):
                for t in range(n):
                    rows_csv.append([doc, r, label, result.layers[r], result.kinds[r], t, tokens[t], next_tokens[t],
                                     top[r][t], f"{float(result.top_probs[r, b, t]):.6g}", final_top[t],
                                     f"{float(result.target_probs[r, b, t]):.6g}",
                                     int(result.target_ranks[r, b, t]), f"{float(result.kl[r, b, t]):.6g}"])
            if not args.no_plots:
                from huggingface_patch.lens.plots import logit_lens_heatmap

                for colour in colours:
                    values = result.values(colour)[:, b, :n].float().cpu().numpy()
                    title = f"logit lens, {name}, document {doc}, colour: {colour}"
                    fig = logit_lens_heatmap(values, top, labels, tokens, next_tokens, colour, title)
                    save_figure(fig, os.path.join(args.output_dir, f"logit_lens_{name}_doc{doc}_{colour}.png"))

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["document", "row", "label", "layer", "kind", "position", "token", "next_token", "top1",
                     "top1_prob", "final_top1", "final_top1_prob", "final_top1_rank", "kl_final_layer"])
    writer.writerows(rows_csv)
    csv_path = os.path.join(args.output_dir, f"logit_lens_{name}.csv")
    write_text(buffer.getvalue(), csv_path)
    write_json({"model": args.model, "model_name": name, "num_layers": len(model_parts_layers(model)),
                "sublayers": sublayers, "max_tokens": args.max_tokens, "rows": labels,
                "rank_convention": "1 = top token", "kl": "KL(p_final || p_row) in nats", "documents": docs_json},
               os.path.join(args.output_dir, f"logit_lens_{name}.json"))
    log.info("wrote %s and its JSON/PNG files", csv_path)
    return 0


def model_parts_layers(model):
    from huggingface_patch.architectures import model_parts

    return model_parts(model).layers


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    torch.set_grad_enabled(False)
    return run_cli(lambda: run(args), PROG)


if __name__ == "__main__":
    raise SystemExit(main())
