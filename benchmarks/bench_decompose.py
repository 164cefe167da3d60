"""Speed and memory of the decomposition against a plain forward pass (not a test: it prints figures).

    python benchmarks/bench_decompose.py                       # OPT-125m shape, T=512, window 50
    python benchmarks/bench_decompose.py --active-fraction 0.1 # trained-like ReLU sparsity
    python benchmarks/bench_decompose.py --shape smollm2-135m --length 256 --window 32
    python benchmarks/bench_decompose.py --length 128 --reference   # also time the per-source reference
    python benchmarks/bench_decompose.py --precision bf16      # bf16 side by side with fp32, same run
    python benchmarks/bench_decompose.py --model smollm2-135m --precision bf16   # the real model, real text

Prints the plain forward time, the decomposition time (the whole ``model(ids, decomposition_window=W)``
call: capture forward, frozen coefficients, bias term and every source), "forward-pass equivalents per
source" = decomposition time / forward time / W, the FLOPs the decomposition needs and the rate achieved
as a percentage of this machine's fp32 matmul rate (measured in the same run), and peak memory.

With ``--precision bf16`` (or ``tf32`` on CUDA, or ``all``) each fast mode runs after fp32 on the same input
and is compared with it: time and forward-pass equivalents, the identity error per layer (contributions +
bias vs the real state, relative to max|h|), the contributions' difference from fp32 per layer, and for
ΔLP (bits) the largest and median absolute difference from fp32 and the Spearman correlation of all
values, with the head product exact and in the fast mode. ``--model`` takes a bundled real model and the
project's essay corpus (``examples/essays.sentitems``) as input.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
from common import (
    SHAPES,
    build_model,
    decomposition_flops,
    forward_flops,
    gib,
    matmul_rate,
    mlp_active_fraction,
    parse_dtype,
    peak_memory,
    timed,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _module_of(model, affine):
    """The module whose weight an adapter's :class:`~huggingface_patch.architectures.spec.Affine` reads."""
    weight = affine.weight._base if affine.weight._base is not None else affine.weight
    return next(m for m in model.modules() if getattr(m, "weight", None) is weight)


def shift_to_active_fraction(model, ids: torch.Tensor, fraction: float) -> None:
    """Shift each plain MLP's input bias so that about ``fraction`` of its neurons are active (ReLU input > 0)
    at each position, layer by layer (each shift changes the input of later layers)."""
    from huggingface_patch.architectures import get_adapter

    for layer in get_adapter(model).spec(model).layers:
        mlp = layer.mlp
        if mlp.kind != "act" or mlp.inp.bias is None:
            raise ValueError("--active-fraction needs a plain MLP with an input bias (OPT, GPT-2 shapes)")
        module, seen = _module_of(model, mlp.inp), {}
        handle = module.register_forward_hook(lambda m, a, out, seen=seen: seen.__setitem__("z", out.detach()))
        with torch.no_grad():
            model(ids)
        handle.remove()
        z = seen["z"].float().reshape(-1, seen["z"].shape[-1])
        # per-neuron shift would change which neurons fire; one scalar per layer keeps the random pattern
        threshold = torch.quantile(z.flatten()[:: max(1, z.numel() // 2_000_000)], 1.0 - fraction)
        with torch.no_grad():
            mlp.inp.bias -= threshold.to(mlp.inp.bias.dtype)


def load_input(args):
    """``(model, ids (batch, T), label)``: a bundled real model with the essay corpus, or a random shape."""
    if args.model:
        from huggingface_patch.corpus import read_corpus
        from huggingface_patch.loading import load_model_and_tokenizer

        model, tokenizer, _ = load_model_and_tokenizer(args.model, dtype=args.dtype, device=args.device)
        text = " ".join(read_corpus(os.path.join(REPO, "examples", "essays.sentitems")))
        ids = tokenizer(text, return_tensors="pt").input_ids[:, : args.length]
        if ids.shape[1] < args.length:
            raise SystemExit(f"the essay corpus has only {ids.shape[1]} tokens for this model; lower --length")
        return model.eval(), ids.repeat(args.batch, 1).to(args.device), f"{args.model} (real)"
    model = build_model(args.shape, dtype=parse_dtype(args.dtype), device=args.device)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(4, model.config.vocab_size, (args.batch, args.length), generator=generator)
    return model, ids.to(args.device), f"{args.shape} (random weights)"


def accuracy_run(model, ids, window: int, precision: str, options: dict) -> dict:
    """One decomposition kept for comparison: per-layer contributions, identity errors, the head's input."""
    seen = {}
    head = model.get_output_embeddings()
    handle = head.register_forward_pre_hook(lambda module, args: seen.__setitem__("x", args[0].detach()))
    try:
        with torch.no_grad():
            out = model(ids[:1], decomposition_window=window, output_layer_decompositions=True,
                        decomposition_precision=precision, **options)
    finally:
        handle.remove()
    return {"layers": [x[0].cpu() for x in out.layer_decompositions], "final": out.decomposition[0].cpu(),
            "head_input": seen["x"][0].cpu(), "identity": out.decomposition_identity_errors.tolist()}


def compare_runs(model, ids, exact: dict, fast: dict, precision: str) -> dict:
    """Contributions per layer and ΔLP of a fast run against the exact one."""
    from scipy.stats import spearmanr

    from huggingface_patch.architectures import readout
    from huggingface_patch.deltalp import compute_deltalp

    contributions = [float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
                     for a, b in zip(fast["layers"] + [fast["final"]], exact["layers"] + [exact["final"]])]
    head = readout(model).to("cpu")
    ids = ids[0].cpu()
    reference = compute_deltalp(exact["head_input"], exact["final"], head, ids).delta
    figures = {"contributions_vs_fp32": contributions}
    for name, product in (("exact_head_product", "fp32"), ("fast_head_product", precision)):
        delta = compute_deltalp(fast["head_input"], fast["final"], head, ids,
                                precision=product if product != "tf32" else "fp32").delta
        keep = ~torch.isnan(reference)
        diff = (delta[keep] - reference[keep]).abs()
        figures[name] = {"max_abs_bits": float(diff.max()), "median_abs_bits": float(diff.median()),
                         "spearman": float(spearmanr(delta[keep].numpy(), reference[keep].numpy()).statistic),
                         "n_values": int(keep.sum())}
    return figures


def baseline(model, ids, args, fast: list[str], figures: dict) -> tuple[float, float, float, float]:
    """The MLP's active fraction, the matmul rates, the plain forward pass and the FLOPs a decomposition needs;
    printed and added to ``figures``. Returns ``(fp32 rate, forward seconds, forward FLOPs, FLOPs needed)``."""
    active = mlp_active_fraction(model, ids)
    figures["active_fraction"] = active
    print(f"  MLP neurons with non-zero coefficient: {active:.3f}")

    rate = matmul_rate(torch.float32, args.device)
    figures["matmul_gflops"] = rate / 1e9
    print(f"  fp32 matmul rate:                  {rate / 1e9:.1f} GFLOP/s")
    if fast:
        half_rate = matmul_rate(torch.bfloat16, args.device)
        figures["bf16_matmul_gflops"] = half_rate / 1e9
        print(f"  bf16 matmul rate:                  {half_rate / 1e9:.1f} GFLOP/s")

    with torch.no_grad():
        model(ids)  # warm-up
        forward_s, _ = timed(lambda: model(ids), repeat=3, device=args.device)
    fwd_flops = args.batch * forward_flops(model, args.length)
    figures.update(forward_s=forward_s, forward_gflops=fwd_flops / 1e9)
    share = fwd_flops / forward_s / rate
    print(f"  plain forward:                     {forward_s:.3f} s  ({share:.0%} of matmul rate)")

    sparse = args.mlp_path != "dense" and active < 0.999
    needed = args.batch * decomposition_flops(model, args.length, args.window)
    needed_active = args.batch * decomposition_flops(model, args.length, args.window, active if sparse else 1.0)
    figures.update(needed_gflops_dense=needed / 1e9, needed_gflops_active=needed_active / 1e9,
                   needed_per_source_over_forward=needed / (fwd_flops * min(args.window, args.length)))
    print(f"  FLOPs needed (dense):              {needed / 1e12:.2f} TFLOP "
          f"({figures['needed_per_source_over_forward']:.2f} forward passes per source)")
    if sparse:
        print(f"  FLOPs needed (active neurons):     {needed_active / 1e12:.2f} TFLOP")
    return rate, forward_s, fwd_flops, needed_active


def time_precisions(model, ids, args, precisions: list[str], options: dict, base: tuple) -> dict:
    """Time the decomposition in each precision (best of ``--repeat``), with its peak memory; printed."""
    forward_s, fwd_flops, needed_active, rate = base
    runs = {}
    for precision in precisions:
        with torch.no_grad(), peak_memory(args.device) as memory:
            decompose_s, out = timed(lambda precision=precision: model(ids, decomposition_window=args.window,
                                                                       decomposition_precision=precision, **options),
                                     repeat=args.repeat, device=args.device)
        del out
        equivalents = decompose_s / forward_s / min(args.window, args.length)
        achieved = (needed_active + fwd_flops) / decompose_s
        runs[precision] = dict(decompose_s=decompose_s, forward_equivalents_per_source=equivalents,
                               achieved_gflops=achieved / 1e9, peak_bytes=memory["peak"],
                               baseline_bytes=memory["baseline"])
        print(f"  [{precision}] decomposition:              {decompose_s:.2f} s")
        print(f"  [{precision}] forward-pass equivalents / source: {equivalents:.3f}")
        print(f"  [{precision}] achieved rate (+1 forward): {achieved / 1e9:.1f} GFLOP/s = "
              f"{achieved / rate:.0%} of the fp32 matmul rate")
        print(f"  [{precision}] peak memory:                {gib(memory['peak'])} "
              f"({gib(memory['peak'] - memory['baseline'])} above the {gib(memory['baseline'])} before the call)")
    return runs


def reference_timing(model, ids, args, runs: dict, figures: dict) -> None:
    """Time the plain per-source reference on the first sequence (scaled to the batch); printed."""
    from huggingface_patch.architectures import get_adapter
    from huggingface_patch.engine.capture import capture
    from huggingface_patch.engine.reference import reference_decomposition

    spec = get_adapter(model).spec(model)
    with torch.no_grad(), capture(model, spec) as record:
        model(ids[:1])
    start = time.perf_counter()
    reference_decomposition(spec, record.layer_inputs, record.attention, dtype=model.dtype)
    reference_s = (time.perf_counter() - start) * args.batch
    figures["reference_s"] = reference_s
    speedup = reference_s / runs["fp32"]["decompose_s"]
    print(f"  per-source reference (all targets): {reference_s:.2f} s  -> speed-up {speedup:.1f}x")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="opt-125m", choices=sorted(SHAPES), help="model shape (random weights)")
    parser.add_argument("--model", default=None, help="a bundled real model instead (smollm2-135m, gemma3-270m)")
    parser.add_argument("--length", type=int, default=512, help="tokens T (default 512)")
    parser.add_argument("--window", type=int, default=50, help="decomposition window (default 50)")
    parser.add_argument("--batch", type=int, default=1, help="sequences per batch (default 1)")
    parser.add_argument("--dtype", default="float32", help="model dtype (default float32)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--block-size", type=int, default=None, help="sources per block (default: from memory)")
    parser.add_argument("--max-memory", default=None, help="memory budget, e.g. 4GB (default: none)")
    parser.add_argument("--mlp-path", default="auto", choices=("auto", "dense", "sparse"),
                        help="MLP path: auto (default) picks the sparse ReLU path when it pays off")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "tf32", "all"),
                        help="fp32 (default); a fast mode (or all) is run after fp32 and compared with it")
    parser.add_argument("--active-fraction", type=float, default=None,
                        help="shift plain-MLP input biases so that about this fraction of neurons is active")
    parser.add_argument("--repeat", type=int, default=1, help="decomposition runs; the best is reported")
    parser.add_argument("--reference", action="store_true", help="also time the plain per-source reference")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    model, ids, label = load_input(args)
    if args.active_fraction is not None:
        try:
            shift_to_active_fraction(model, ids, args.active_fraction)
        except ValueError as exc:
            parser.error(str(exc))
    cuda = str(args.device).startswith("cuda")
    fast = {"fp32": [], "all": ["bf16", "tf32"] if cuda else ["bf16"]}.get(args.precision, [args.precision])
    if "tf32" in fast and not cuda:
        parser.error("--precision tf32 needs --device cuda")
    precisions = ["fp32", *fast]

    figures = {"model": label, "length": args.length, "window": args.window, "batch": args.batch,
               "dtype": args.dtype, "device": args.device, "threads": torch.get_num_threads(),
               "mlp_path": args.mlp_path, "precisions": precisions}
    print(f"{label} ({args.dtype}, {args.device}, {torch.get_num_threads()} threads), batch {args.batch}, "
          f"T = {args.length}, window {args.window}")
    rate, forward_s, fwd_flops, needed_active = baseline(model, ids, args, fast, figures)
    options = dict(decomposition_block_size=args.block_size, decomposition_max_memory=args.max_memory,
                   decomposition_mlp_path=args.mlp_path)
    runs = time_precisions(model, ids, args, precisions, options, (forward_s, fwd_flops, needed_active, rate))
    # kept for one release of figures files: the fp32 run's figures at the top level
    figures.update({key: value for key, value in runs["fp32"].items()},
                   achieved_fraction_of_matmul_rate=runs["fp32"]["achieved_gflops"] * 1e9 / rate)
    figures["runs"] = runs

    if fast:
        exact = accuracy_run(model, ids, args.window, "fp32", options)
        figures["identity_fp32"] = exact["identity"]
        for precision in fast:
            run = accuracy_run(model, ids, args.window, precision, options)
            runs[precision].update(identity=run["identity"], **compare_runs(model, ids, exact, run, precision))
        print_comparison(figures, fast)

    if args.reference:
        reference_timing(model, ids, args, runs, figures)

    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2)


def print_comparison(figures: dict, fast: list[str]) -> None:
    """The side-by-side table of the fast modes against fp32."""
    runs = figures["runs"]
    names = ["fp32", *fast]
    print("\n  " + "".join(f"{name:>12}" for name in ["", *names]))
    equivalents = "".join(f"{runs[n]['forward_equivalents_per_source']:>12.3f}" for n in names)
    print("  " + f"{'equiv/src':>12}" + equivalents)
    print("  " + f"{'speed-up':>12}" + "".join(f"{runs['fp32']['decompose_s'] / runs[n]['decompose_s']:>11.2f}x"
                                              for n in names))
    identities = [figures["identity_fp32"], *[runs[n]["identity"] for n in fast]]
    print("\n  identity error (relative to max|h|, targets t < W) and contributions vs fp32, per state")
    print("  " + f"{'state':>8}" + "".join(f"{'id ' + n:>12}" for n in names) +
          "".join(f"{'diff ' + n:>12}" for n in fast))
    for index in range(len(identities[0])):
        label = "emb" if index == 0 else "head" if index == len(identities[0]) - 1 else str(index)
        diffs = "".join(f"{runs[n]['contributions_vs_fp32'][index]:>12.2e}" for n in fast)
        print("  " + f"{label:>8}" + "".join(f"{ident[index]:>12.2e}" for ident in identities) + diffs)
    print("\n  ΔLP (bits) against fp32")
    for n in fast:
        for key, what in (("exact_head_product", "exact head product"), ("fast_head_product", f"{n} head product")):
            f = runs[n][key]
            print(f"  [{n}, {what}] max |diff| {f['max_abs_bits']:.4f}, median |diff| {f['median_abs_bits']:.2e}, "
                  f"Spearman {f['spearman']:.5f} over {f['n_values']} values")


if __name__ == "__main__":
    main()
