"""Load times of the bundled models: from their GGUF file (what every run paid before the cache) against the
converted cache folder (what every run after the first pays), and the one-time conversion.

    python benchmarks/bench_loading.py [--models smollm2-135m gemma3-270m] [--repeats 2]

Prints one line per model and step (seconds, best of ``--repeats``). The conversion is timed into a
temporary cache (``HUGGINGFACE_PATCH_CACHE``), so the user's cache is left as it is. Times on a shared
machine drift: compare the figures of one run with each other.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def _best(repeats: int, step) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from huggingface_patch import bundled

    cache = tempfile.mkdtemp(prefix="hfp-bench-cache-")
    os.environ["HUGGINGFACE_PATCH_CACHE"] = cache
    print(f"{'model':<14} {'step':<44} {'seconds':>8}")
    try:
        for name in args.models:
            entry = bundled.bundled_model(name)
            start = time.perf_counter()
            folder = bundled.bundled_folder(name)
            print(f"{name:<14} {'convert once (GGUF -> cache folder)':<44} {time.perf_counter() - start:8.1f}")
            if entry.assemble:
                gguf_dir = tempfile.mkdtemp(prefix="hfp-bench-gguf-")
                __import__(entry.package).assemble(os.path.join(gguf_dir, entry.gguf_file))
            else:
                gguf_dir = bundled._package_dir(entry)

            def from_gguf(gguf_dir=gguf_dir, gguf_file=entry.gguf_file):
                AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
                AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32)

            def from_folder(folder=folder):
                AutoTokenizer.from_pretrained(folder)
                AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)

            def tokenizer_only(folder=folder):
                AutoTokenizer.from_pretrained(folder)

            print(f"{name:<14} {'load tokenizer + model from the GGUF file':<44} {_best(args.repeats, from_gguf):8.1f}")
            print(f"{name:<14} {'load tokenizer + model from the cache folder':<44} "
                  f"{_best(args.repeats, from_folder):8.1f}")
            print(f"{name:<14} {'load the tokenizer alone from the cache folder':<44} "
                  f"{_best(args.repeats, tokenizer_only):8.1f}")
            if entry.assemble:
                shutil.rmtree(gguf_dir, ignore_errors=True)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
