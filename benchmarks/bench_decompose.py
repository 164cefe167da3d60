"""Speed and memory of the decomposition against a plain forward pass (not a test: it prints figures).

    python benchmarks/bench_decompose.py                       # OPT-125m shape, T=512, window 50
    python benchmarks/bench_decompose.py --active-fraction 0.1 # trained-like ReLU sparsity
    python benchmarks/bench_decompose.py --shape smollm2-135m --length 256 --window 32
    python benchmarks/bench_decompose.py --length 128 --reference   # also time the per-source reference

Prints the plain forward time, the decomposition time (the whole ``model(ids, decomposition_window=W)``
call: capture forward, frozen coefficients, bias term and every source), "forward-pass equivalents per
source" = decomposition time / forward time / W, the FLOPs the decomposition needs and the rate achieved
as a percentage of this machine's fp32 matmul rate (measured in the same run), and peak memory.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from common import (
    SHAPES,
    build_model,
    decomposition_flops,
    forward_flops,
    gib,
    matmul_rate,
    parse_dtype,
    peak_memory,
    timed,
)


def shift_to_active_fraction(model, ids: torch.Tensor, fraction: float) -> None:
    """Shift each OPT ``fc1`` bias so that about ``fraction`` of the MLP neurons are active (ReLU input > 0)
    at each position, layer by layer (each shift changes the input of later layers)."""
    layers = model.model.decoder.layers
    for layer in layers:
        seen = {}
        handle = layer.fc1.register_forward_hook(lambda m, a, out, seen=seen: seen.__setitem__("z", out.detach()))
        with torch.no_grad():
            model(ids)
        handle.remove()
        z = seen["z"].float().reshape(-1, seen["z"].shape[-1])
        # per-neuron shift would change which neurons fire; one scalar per layer keeps the random pattern
        threshold = torch.quantile(z.flatten()[:: max(1, z.numel() // 2_000_000)], 1.0 - fraction)
        with torch.no_grad():
            layer.fc1.bias -= threshold.to(layer.fc1.bias.dtype)


def measured_active_fraction(model, ids: torch.Tensor) -> float:
    """Fraction of MLP activation inputs > 0 over all layers and positions (ReLU models)."""
    counts = []

    def hook(module, args, out):
        counts.append(((out > 0).sum().item(), out.numel()))

    modules = [m for name, m in model.named_modules() if name.endswith("fc1") or name.endswith("mlp.c_fc")]
    handles = [m.register_forward_hook(hook) for m in modules]
    with torch.no_grad():
        model(ids)
    for handle in handles:
        handle.remove()
    return sum(a for a, _ in counts) / max(1, sum(n for _, n in counts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="opt-125m", choices=sorted(SHAPES), help="model shape (random weights)")
    parser.add_argument("--length", type=int, default=512, help="tokens T (default 512)")
    parser.add_argument("--window", type=int, default=50, help="decomposition window (default 50)")
    parser.add_argument("--batch", type=int, default=1, help="sequences per batch (default 1)")
    parser.add_argument("--dtype", default="float32", help="model dtype (default float32)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--block-size", type=int, default=None, help="sources per block (default: from memory)")
    parser.add_argument("--max-memory", default=None, help="memory budget, e.g. 4GB (default: none)")
    parser.add_argument("--mlp-path", default="auto", choices=("auto", "dense", "sparse"),
                        help="MLP path: auto (default) picks the sparse ReLU path when it pays off")
    parser.add_argument("--active-fraction", type=float, default=None,
                        help="shift OPT fc1 biases so that about this fraction of MLP neurons is active")
    parser.add_argument("--repeat", type=int, default=1, help="decomposition runs; the best is reported")
    parser.add_argument("--reference", action="store_true", help="also time the plain per-source reference")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = parse_dtype(args.dtype)
    model = build_model(args.shape, dtype=dtype, device=args.device)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(4, model.config.vocab_size, (args.batch, args.length), generator=generator).to(args.device)
    if args.active_fraction is not None:
        if model.config.model_type != "opt":
            parser.error("--active-fraction needs an OPT shape (ReLU MLP)")
        shift_to_active_fraction(model, ids, args.active_fraction)

    figures = {"shape": args.shape, "length": args.length, "window": args.window, "batch": args.batch,
               "dtype": args.dtype, "device": args.device, "threads": torch.get_num_threads(),
               "mlp_path": args.mlp_path}
    print(f"{args.shape} ({args.dtype}, {args.device}, {torch.get_num_threads()} threads), batch {args.batch}, "
          f"T = {args.length}, window {args.window}")
    if model.config.model_type in ("opt", "gpt2"):
        active = measured_active_fraction(model, ids)
        figures["active_fraction"] = active
        print(f"  MLP neurons with positive input:   {active:.3f}")

    rate = matmul_rate(torch.float32, args.device)
    figures["matmul_gflops"] = rate / 1e9
    print(f"  fp32 matmul rate:                  {rate / 1e9:.1f} GFLOP/s")

    with torch.no_grad():
        model(ids)  # warm-up
        forward_s, _ = timed(lambda: model(ids), repeat=3, device=args.device)
    fwd_flops = args.batch * forward_flops(model.config, args.length)
    figures.update(forward_s=forward_s, forward_gflops=fwd_flops / 1e9)
    share = fwd_flops / forward_s / rate
    print(f"  plain forward:                     {forward_s:.3f} s  ({share:.0%} of matmul rate)")

    options = dict(decomposition_window=args.window, decomposition_block_size=args.block_size,
                   decomposition_max_memory=args.max_memory, decomposition_mlp_path=args.mlp_path)
    with torch.no_grad(), peak_memory(args.device) as memory:
        decompose_s, out = timed(lambda: model(ids, **options), repeat=args.repeat, device=args.device)
    del out
    equivalents = decompose_s / forward_s / min(args.window, args.length)
    active = figures.get("active_fraction",
                         1.0) if args.mlp_path != "dense" and model.config.model_type == "opt" else 1.0
    needed = args.batch * decomposition_flops(model.config, args.length, args.window)
    needed_active = args.batch * decomposition_flops(model.config, args.length, args.window, active)
    achieved = (needed_active + fwd_flops) / decompose_s
    figures.update(decompose_s=decompose_s, forward_equivalents_per_source=equivalents,
                   needed_gflops_dense=needed / 1e9, needed_gflops_active=needed_active / 1e9,
                   achieved_fraction_of_matmul_rate=achieved / rate, peak_bytes=memory["peak"],
                   baseline_bytes=memory["baseline"],
                   needed_per_source_over_forward=needed / (fwd_flops * min(args.window, args.length)))
    print(f"  decomposition:                     {decompose_s:.2f} s")
    print(f"  forward-pass equivalents / source: {equivalents:.3f}")
    print(f"  FLOPs needed (dense):              {needed / 1e12:.2f} TFLOP "
          f"({figures['needed_per_source_over_forward']:.2f} forward passes per source)")
    if active < 1.0:
        print(f"  FLOPs needed (active neurons):     {needed_active / 1e12:.2f} TFLOP")
    print(f"  achieved rate (+1 forward):        {achieved / 1e9:.1f} GFLOP/s = {achieved / rate:.0%} of matmul rate")
    print(f"  peak memory:                       {gib(memory['peak'])} "
          f"({gib(memory['peak'] - memory['baseline'])} above the {gib(memory['baseline'])} before the call)")

    if args.reference:
        from huggingface_patch.architectures import get_adapter
        from huggingface_patch.engine.capture import capture
        from huggingface_patch.engine.reference import reference_decomposition

        spec = get_adapter(model).spec(model)
        with torch.no_grad(), capture(model, spec) as record:
            model(ids[:1])
        start = time.perf_counter()
        reference_decomposition(spec, record.layer_inputs, record.attention, dtype=dtype)
        reference_s = (time.perf_counter() - start) * args.batch
        figures["reference_s"] = reference_s
        speedup = reference_s / decompose_s
        print(f"  per-source reference (all targets): {reference_s:.2f} s  -> speed-up {speedup:.1f}x")

    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
