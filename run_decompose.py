"""Decompose a corpus with a causal LM and write the paper's files (Oh & Schuler 2023, ``main.py``).

    python run_decompose.py INPUT_FILE MODEL DECOMPOSITION_LENGTH [--output-dir output] [--device cpu] [--dtype float32]

INPUT_FILE is a sentitems file (``!ARTICLE`` before each article). MODEL is a hub id, a local folder, a
``.gguf`` file, or ``smollm2-135m``. For each model-sized piece N of the corpus it writes, in the output
folder: ``i_{CORPUS}_{MODEL}_{N}.pt`` (input ids ``(1, T)``, BOS first), ``d_…`` (decomposition
``(W, T, H)``, relative layout), ``o_…`` (final hidden state ``(1, T, H)``), ``b_…`` (bias term ``(1, T, H)``),
and ``{MODEL}_proj_weights.pt`` (LM head weight ``(V, H)``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import torch

from huggingface_patch.cli import UsageError, run_cli, save_tensor
from huggingface_patch.corpus import CorpusError, bos_token_id, context_size, read_sentitems, split_article, tokenize_articles

log = logging.getLogger("run_decompose")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run_decompose.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("input_file", metavar="INPUT_FILE", help="sentitems corpus (lines '!ARTICLE' separate articles)")
    parser.add_argument("model", metavar="MODEL", help="hub id, local folder, .gguf file, or smollm2-135m")
    parser.add_argument("decomposition_length", metavar="DECOMPOSITION_LENGTH",
                        help="window: number of most recent source tokens kept per target (positive integer)")
    parser.add_argument("--output-dir", default="output", help="folder for the output files (default: output)")
    parser.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--dtype", default="float32", help="model dtype: float32 (default), float64, bfloat16, float16")
    parser.add_argument("--block-size", type=int, default=None, help="sources per block (default: chosen from memory)")
    return parser


def parse_window(text: str) -> int:
    try:
        window = int(text)
    except ValueError:
        raise UsageError(f"DECOMPOSITION_LENGTH must be a positive integer, got {text!r}") from None
    if window <= 0:
        raise UsageError(f"DECOMPOSITION_LENGTH must be a positive integer, got {window}")
    return window


def corpus_name(path: str) -> str:
    """CORPUS in the output names: the input file name up to its first dot."""
    return os.path.basename(path).split(".")[0]


def prepare_pieces(articles: list[str], tokenizer, config):
    """Tokenize and cut the articles exactly as the paper does; returns the list of pieces."""
    try:
        bos = bos_token_id(config, tokenizer)
        context = context_size(config)
    except CorpusError as exc:
        raise UsageError(str(exc)) from None
    pieces = []
    for index, ids in enumerate(tokenize_articles(tokenizer, articles)):
        pieces.extend(split_article(ids, bos, context, document=index))
    return pieces


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body():
        from huggingface_patch.cli import setup_logging
        from huggingface_patch.loading import load_model_and_tokenizer

        setup_logging()
        window = parse_window(args.decomposition_length)
        if not os.path.isfile(args.input_file):
            raise UsageError(f"input file not found: {args.input_file}")
        try:
            articles = read_sentitems(args.input_file)  # before loading the model: bad input fails fast
        except CorpusError as exc:
            raise UsageError(str(exc)) from None
        if args.block_size is not None and args.block_size <= 0:
            raise UsageError(f"--block-size must be a positive integer, got {args.block_size}")
        model, tokenizer, source = load_model_and_tokenizer(args.model, dtype=args.dtype, device=args.device)
        pieces = prepare_pieces(articles, tokenizer, model.config)
        run(model, pieces, corpus_name(args.input_file), source.name, window, args.output_dir, args.block_size)

    return run_cli(body, "run_decompose.py")


def run(model, pieces, corpus: str, model_name: str, window: int, output_dir: str, block_size: int | None = None) -> None:
    """Decompose every piece and write its files (each written under a temporary name, then renamed)."""
    from tqdm.auto import tqdm

    os.makedirs(output_dir, exist_ok=True)
    device = next(model.parameters()).device
    proj_path = os.path.join(output_dir, f"{model_name}_proj_weights.pt")
    save_tensor(model.get_output_embeddings().weight, proj_path)
    for number, piece in enumerate(tqdm(pieces, desc="batches", unit="batch")):
        identifier = f"{corpus}_{model_name}_{number}"
        ids = torch.tensor([piece.ids], device=device)
        with torch.no_grad():
            out = model(ids, decomposition_window=window, decomposition_block_size=block_size, output_hidden_states=True)
        files = {
            "d": out.decomposition[0],
            "b": out.decomposition_bias,
            "o": out.hidden_states[-1],
            "i": ids,
        }
        for prefix in ("d", "b", "o", "i"):  # i_ last: its presence marks a complete batch
            save_tensor(files[prefix].cpu(), os.path.join(output_dir, f"{prefix}_{identifier}.pt"))
        log.debug("wrote batch %d (%d tokens)", number, ids.shape[1])


if __name__ == "__main__":
    sys.exit(main())
