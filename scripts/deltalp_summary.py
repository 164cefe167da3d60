"""Print, for a few targets of each batch in an output folder, the source token with the largest ΔLP."""

from __future__ import annotations

import argparse
import glob
import os
import sys

from huggingface_patch.cli import run_cli
from huggingface_patch.deltalp import compute_deltalp, paper_argmax
from huggingface_patch.loading import load_tokenizer, resolve_model
from representations_to_deltalp import load_batch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output-dir", default="output")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--targets", type=int, default=6, help="targets shown per batch (default 6)")
    args = parser.parse_args(argv)

    def body():
        source = resolve_model(args.model)
        tokenizer = load_tokenizer(source)
        paths = sorted(glob.glob(os.path.join(args.output_dir, f"d_*_{source.name}_*.pt")))
        for path in paths:
            identifier = os.path.basename(path)[2:-3]
            ids, dec, out, proj = load_batch(args.output_dir, identifier, source.name)
            tokens = tokenizer.convert_ids_to_tokens(ids.tolist())
            result = compute_deltalp(out, dec, proj, ids)
            print(f"\n{identifier}: {len(tokens)} tokens, window {dec.shape[0]}")
            print(f"  {'next token':>14}  {'LP (bits)':>9}  {'most important source':>22}  {'ΔLP':>6}  distance")
            step = max(1, (len(tokens) - 2) // args.targets)
            for target in range(1, len(tokens) - 1, step)[: args.targets]:
                best = paper_argmax(result, target)
                if best < 0:
                    continue
                delta = float(result.delta[target - best, target])
                print(f"  {tokens[target + 1]!r:>14}  {float(result.lp[target]):9.2f}  {tokens[best]!r:>22}  "
                      f"{delta:6.2f}  {target - best + 1}")

    return run_cli(body, "deltalp_summary.py")


if __name__ == "__main__":
    sys.exit(main())
