"""Print, for a few targets of each piece in a run_decompose.py output folder, the source token with the
largest ΔLP (tokens shown as text, quoted so that spaces are visible)."""

from __future__ import annotations

import sys

from huggingface_patch.cli import ArgumentParser, positive_int, run_cli


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="deltalp_summary.py", description=__doc__)
    parser.add_argument("--output-dir", default="output")
    parser.add_argument("--model", default="smollm2-135m", help="the MODEL given to run_decompose.py")
    parser.add_argument("--targets", type=positive_int, default=6, help="targets shown per piece (default 6)")
    args = parser.parse_args(argv)

    def body():
        from huggingface_patch.deltalp import compute_deltalp, paper_argmax
        from huggingface_patch.loading import resolve_model, tokenizer_of
        from huggingface_patch.piece_reader import read_piece, run_pieces
        from huggingface_patch.tokens import show, token_texts

        source = resolve_model(args.model)
        tokenizer = tokenizer_of(source)
        for identifier in run_pieces(args.output_dir):
            piece = read_piece(args.output_dir, identifier, source.name, tokenizer)
            tokens = token_texts(tokenizer, piece.ids.tolist())
            result = compute_deltalp(piece.final_state, piece.decomposition, piece.readout, piece.ids)
            print(f"\n{identifier}: {len(tokens)} tokens, window {piece.decomposition.shape[0]}")
            print(f"  {'next token':>14}  {'LP (bits)':>9}  {'most important source':>22}  {'ΔLP':>6}  distance")
            step = max(1, (len(tokens) - 2) // args.targets)
            for target in range(1, len(tokens) - 1, step)[: args.targets]:
                best = paper_argmax(result, target, exclude_first=piece.start_token)
                if best < 0:
                    continue
                delta = float(result.delta[target - best, target])
                print(f"  {show(tokens[target + 1]):>14}  {float(result.lp[target]):9.2f}  {show(tokens[best]):>22}  "
                      f"{delta:6.2f}  {target - best + 1}")

    return run_cli(body, "deltalp_summary.py")


if __name__ == "__main__":
    sys.exit(main())
