"""A mixture-of-experts decomposition costs about its active parameters, not all its experts (a benchmark,
not a test).

    python benchmarks/bench_moe.py             # tiny Mixtral, 8 experts of width F, top-2; T = 256, window 64

Times, in one run on this machine (ratios, not absolute figures, are what carry over), the decomposition of
three models with the same attention and the same hidden size:

* ``mixtral``: 8 experts of width ``F``, each token routed to 2;
* ``llama-active``: a dense gated MLP of width ``2 F`` (the parameters a token actually uses);
* ``llama-all``: a dense gated MLP of width ``8 F`` (every expert's parameters).
"""

from __future__ import annotations

import argparse
import time

import torch
from common import matmul_rate

from huggingface_patch import AutoDecomposedModelForCausalLM


def build(kind: str, hidden: int, layers: int, width: int, experts: int, top_k: int):
    from transformers import LlamaConfig, MixtralConfig

    shared = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=8, num_key_value_heads=4,
                  vocab_size=1024, max_position_embeddings=2048, tie_word_embeddings=False)
    if kind == "mixtral":
        config = MixtralConfig(intermediate_size=width, num_local_experts=experts, num_experts_per_tok=top_k,
                               sliding_window=None, **shared)
    else:
        config = LlamaConfig(intermediate_size=width * (top_k if kind == "llama-active" else experts), **shared)
    config._attn_implementation = "eager"
    config._experts_implementation = "eager"
    torch.manual_seed(0)
    return AutoDecomposedModelForCausalLM.from_config(config).eval()


def best_of(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=512, help="F, the width of one expert")
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    ids = torch.randint(3, 1024, (1, args.length), generator=torch.Generator().manual_seed(0))
    print(f"hidden {args.hidden}, {args.layers} layers, expert width {args.width}, {args.experts} experts, "
          f"top-{args.top_k}; T = {args.length}, window {args.window}; fp32 matmul "
          f"{matmul_rate() / 1e9:.0f} GFLOP/s")
    times = {}
    for kind in ("mixtral", "llama-active", "llama-all"):
        model = build(kind, args.hidden, args.layers, args.width, args.experts, args.top_k)
        with torch.no_grad():
            forward = best_of(lambda m=model: m(ids), args.repeat)
            total = best_of(lambda m=model: m(ids, decomposition_window=args.window), args.repeat)
        times[kind] = total - forward
        print(f"  {kind:13} forward {forward:6.3f} s, decomposition {times[kind]:7.2f} s")
    print(f"  mixtral / llama-active = {times['mixtral'] / times['llama-active']:.2f}; "
          f"mixtral / llama-all = {times['mixtral'] / times['llama-all']:.2f}")


if __name__ == "__main__":
    main()
