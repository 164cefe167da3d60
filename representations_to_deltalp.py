"""Print the paper's ΔLP text for one batch written by ``run_decompose.py``.

    python representations_to_deltalp.py IDENTIFIER MODEL [--output-dir output] > FILE

IDENTIFIER is ``{CORPUS}_{MODEL}_{N}``; the files ``i_/d_/o_{IDENTIFIER}.pt`` and ``{MODEL}_proj_weights.pt``
are read from the output folder. Log-probabilities are in bits (log base 2), as in the paper.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

from huggingface_patch.cli import UsageError, run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="representations_to_deltalp.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("identifier", metavar="IDENTIFIER", help="{CORPUS}_{MODEL}_{N} as written by run_decompose.py")
    parser.add_argument("model", metavar="MODEL", help="the MODEL given to run_decompose.py (for its tokenizer and name)")
    parser.add_argument("--output-dir", default="output", help="folder holding the files (default: output)")
    return parser


def _load(path: str, what: str):
    if not os.path.isfile(path):
        raise UsageError(f"missing {what} file {path}: run run_decompose.py first (same MODEL and --output-dir)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise UsageError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None


def load_batch(output_dir: str, identifier: str, model_name: str):
    """Load and cross-check one batch's files; returns ``(ids (T,), d (W, T, H), o (T, H), proj (V, H))``."""
    proj = _load(os.path.join(output_dir, f"{model_name}_proj_weights.pt"), "projection-weights")
    ids = _load(os.path.join(output_dir, f"i_{identifier}.pt"), "input-ids")
    dec = _load(os.path.join(output_dir, f"d_{identifier}.pt"), "decomposition")
    out = _load(os.path.join(output_dir, f"o_{identifier}.pt"), "final-state")
    problems = []
    if ids.dim() != 2 or ids.shape[0] != 1 or ids.dtype not in (torch.int64, torch.int32):
        problems.append(f"i_ must be integer ids of shape (1, T), got {tuple(ids.shape)} {ids.dtype}")
    if dec.dim() != 3:
        problems.append(f"d_ must have shape (W, T, H), got {tuple(dec.shape)}")
    if out.dim() != 3 or out.shape[0] != 1:
        problems.append(f"o_ must have shape (1, T, H), got {tuple(out.shape)}")
    if proj.dim() != 2:
        problems.append(f"proj_weights must have shape (V, H), got {tuple(proj.shape)}")
    if problems:
        raise UsageError(f"files of {identifier} are malformed: {problems[0]}")
    length = ids.shape[1]
    if dec.shape[1] != length or out.shape[1] != length:
        raise UsageError(
            f"files of {identifier} do not belong together: i_ has T={length}, d_ has T={dec.shape[1]}, o_ has T={out.shape[1]}"
        )
    if not (dec.shape[2] == out.shape[2] == proj.shape[1]):
        raise UsageError(
            f"files of {identifier} do not belong together: hidden sizes d_={dec.shape[2]}, o_={out.shape[2]}, "
            f"{model_name}_proj_weights={proj.shape[1]}"
        )
    if dec.shape[0] < 1 or dec.shape[0] > length:
        raise UsageError(f"d_{identifier}.pt has {dec.shape[0]} window rows for {length} tokens")
    if length < 2:
        raise UsageError(f"batch {identifier} has fewer than 2 tokens: nothing to predict")
    if int(ids.max()) >= proj.shape[0] or int(ids.min()) < 0:
        raise UsageError(f"i_{identifier}.pt has token ids outside the vocabulary of {model_name}_proj_weights.pt")
    return ids[0], dec, out[0], proj


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body():
        from huggingface_patch.deltalp import compute_deltalp, paper_text
        from huggingface_patch.loading import load_tokenizer, resolve_model

        source = resolve_model(args.model)
        ids, dec, out, proj = load_batch(args.output_dir, args.identifier, source.name)
        tokenizer = load_tokenizer(source)
        tokens = tokenizer.convert_ids_to_tokens(ids.tolist())
        result = compute_deltalp(out, dec, proj, ids)
        sys.stdout.write(paper_text(args.identifier, tokens, result))

    return run_cli(body, "representations_to_deltalp.py")


if __name__ == "__main__":
    sys.exit(main())
