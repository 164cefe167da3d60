"""Print the paper's ΔLP text for one batch written by ``run_decompose.py``.

    python representations_to_deltalp.py IDENTIFIER MODEL [--output-dir output] > FILE

IDENTIFIER is ``{CORPUS}_{MODEL}_{N}``; the files ``i_/d_/o_{IDENTIFIER}.pt`` and ``{MODEL}_proj_weights.pt``
are read from the output folder and checked against its run record (they must come from one run, and MODEL's
tokenizer must be the one that wrote them). Only the tokenizer is loaded, never the weights. Log-probabilities
are in bits (log base 2), as in the paper. ``--precision bf16`` rounds the one large product (contributions
times the LM head) to bf16 inputs with fp32 accumulation; the default is exact.
"""

from __future__ import annotations

import argparse
import sys

from huggingface_patch.cli import ArgumentParser, run_cli

PROG = "representations_to_deltalp.py"


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("identifier", metavar="IDENTIFIER", help="{CORPUS}_{MODEL}_{N} as written by run_decompose.py")
    parser.add_argument("model", metavar="MODEL",
                        help="the MODEL given to run_decompose.py (for its tokenizer and name)")
    parser.add_argument("--output-dir", default="output", help="folder holding the files (default: output)")
    parser.add_argument("--allow-unrecorded", action="store_true",
                        help="read files that have no run record (e.g. written by the paper's own code)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                        help="precision of the contributions' product with the LM head: fp32 (default, exact) or bf16")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body():
        from huggingface_patch.deltalp import compute_deltalp, paper_text
        from huggingface_patch.loading import resolve_model, tokenizer_of
        from huggingface_patch.piece_reader import read_piece

        source = resolve_model(args.model)
        tokenizer = tokenizer_of(source)
        piece = read_piece(args.output_dir, args.identifier, source.name, tokenizer,
                           allow_unrecorded=args.allow_unrecorded)
        tokens = tokenizer.convert_ids_to_tokens(piece.ids.tolist())
        result = compute_deltalp(piece.final_state, piece.decomposition, piece.readout, piece.ids,
                                 precision=args.precision)
        sys.stdout.write(paper_text(args.identifier, tokens, result, exclude_first=piece.start_token))

    return run_cli(body, PROG)


if __name__ == "__main__":
    sys.exit(main())
