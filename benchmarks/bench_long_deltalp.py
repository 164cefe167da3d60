"""Full-window ΔLP of one long document in bounded memory (a long run; not a test).

    python benchmarks/bench_long_deltalp.py                      # OPT-125m shape, T = 2048, full window, 3.5 GB
    python benchmarks/bench_long_deltalp.py --length 256 --max-memory 2GB   # a quick try

Streams ΔLP block by block (:func:`huggingface_patch.deltalp.stream_deltalp`), never holding the
``(T, T, H)`` decomposition, and prints the time, the FLOPs, and the process's peak resident memory
(everything: Python, torch, the model, the frozen coefficients, blocks and logits).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import torch
from bench_decompose import shift_to_active_fraction
from common import SHAPES, build_model, decomposition_flops, forward_flops, gib, matmul_rate, pairs_in_window


def resident_bytes() -> int:
    """The process's resident set now (Linux)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="opt-125m", choices=sorted(SHAPES))
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--window", type=int, default=None, help="default: the whole document")
    parser.add_argument("--max-memory", default="3.5GB",
                        help="budget for the block size (default 3.5GB; 'none': the CPU default)")
    parser.add_argument("--active-fraction", type=float, default=None,
                        help="shift OPT fc1 biases (see bench_decompose)")
    parser.add_argument("--mlp-path", default="auto", choices=("auto", "dense", "sparse"))
    parser.add_argument("--json", default=None)
    return parser


def main() -> None:
    args = build_parser().parse_args()

    from huggingface_patch.deltalp import stream_deltalp

    window = args.window or args.length
    model = build_model(args.shape)
    ids = torch.randint(4, model.config.vocab_size, (1, args.length), generator=torch.Generator().manual_seed(0))
    if args.active_fraction is not None:
        shift_to_active_fraction(model, ids, args.active_fraction)
    rate = matmul_rate()
    import ctypes
    import gc

    from huggingface_patch.deltalp import deltalp_consumer_bytes
    from huggingface_patch.engine.memory import format_bytes, parse_memory, planned_block_size

    budget = None if args.max_memory in (None, "none") else parse_memory(args.max_memory)
    consumer = deltalp_consumer_bytes(args.length, window, model.config.vocab_size, 4)
    est = model.decomposition_memory(1, args.length, window, streaming=True, max_memory=budget,
                                     consumer_bytes=consumer)
    block = planned_block_size(est, budget, "cpu")
    print(f"{args.shape}, T = {args.length}, window {window}, budget {args.max_memory}; "
          f"fp32 matmul {rate / 1e9:.0f} GFLOP/s")
    print("  " + est.describe(block))
    with torch.no_grad():  # load the libraries' kernels first: their memory is not the run's
        stream_deltalp(model, ids[0, :16], 16)
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand back what the set-up freed, so the peak is the run's
    before = resident_bytes()
    start = time.perf_counter()
    result = stream_deltalp(model, ids[0], window, max_memory=budget, mlp_path=args.mlp_path, progress=True)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    grown = peak - before
    covered = est.total(block) - est.model
    print(f"  memory: budget {args.max_memory}; estimate {format_bytes(est.total(block))} (without the model "
          f"{format_bytes(covered)}); measured growth of the resident set during the run {format_bytes(grown)} "
          f"({grown / covered:.0%} of the estimate); process peak {format_bytes(peak)}")
    hidden, vocab = model.config.hidden_size, model.config.vocab_size
    dec = decomposition_flops(model, args.length, window)
    head = 2.0 * pairs_in_window(args.length, window) * hidden * vocab
    total = dec + head + forward_flops(model, args.length)
    finite = int(torch.isfinite(result.delta).sum())
    print(f"  ΔLP values: {finite} (sources x targets in window)")
    print(f"  time: {seconds:.0f} s; FLOPs: decomposition {dec:.2e} + LM head {head:.2e} = {total:.2e} "
          f"({total / seconds / 1e9:.0f} GFLOP/s = {total / seconds / rate:.0%} of matmul rate)")
    print(f"  peak resident memory of the process: {gib(peak)}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(dict(shape=args.shape, length=args.length, window=window, max_memory=args.max_memory,
                           seconds=seconds, peak_bytes=peak, grown_bytes=grown, estimate_bytes=est.total(block),
                           flops=total, values=finite,
                           matmul_gflops=rate / 1e9), handle, indent=2)


if __name__ == "__main__":
    main()
