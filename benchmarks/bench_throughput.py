"""Corpus throughput: end-to-end ΔLP of a 10,000-token text, per precision (a long run; not a test).

    python benchmarks/bench_throughput.py                      # SmolLM2, 10,000 tokens, window 50, fp32 and bf16
    python benchmarks/bench_throughput.py --tokens 1000        # a quick try
    python benchmarks/bench_throughput.py --one-document       # the text as one document (long-context pieces)
    python benchmarks/bench_throughput.py --device cuda --precisions fp32 tf32 bf16

What a user runs: ``run_decompose.py TEXT MODEL 50 --deltalp --precision P`` in a fresh process (loading the
model, decomposing, ΔLP of every target and source in the window, writing the tables), timed from start to
finish. The text is the project's essay corpus (``examples/essays.sentitems``) repeated until it has the
requested number of tokens, one article per essay (``--one-document``: all of it as one article, cut into
the model's context as the paper's script cuts it). Prints tokens per second per precision and, for each
fast mode, how its ΔLP values differ from fp32's (largest and median absolute difference in bits, Spearman).
"""

from __future__ import annotations

import argparse
import glob
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def build_text(model: str, tokens: int, one_document: bool) -> tuple[str, int]:
    """A sentitems text of about ``tokens`` tokens of ``model``'s tokenizer, and its exact token count."""
    from huggingface_patch.corpus import read_corpus
    from huggingface_patch.loading import load_tokenizer

    tokenizer = load_tokenizer(model)

    def length(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    essays = read_corpus(os.path.join(REPO, "examples", "essays.sentitems"))
    articles, count = [], 0
    for essay in itertools.cycle(essays):
        if count >= tokens:
            break
        if count + length(essay) > tokens:  # the last article: as many words as still fit
            words = essay.split()
            while words and count + length(" ".join(words)) > tokens:
                words = words[: int(len(words) * 0.9)]
            essay = " ".join(words)
            if not essay:
                break
        articles.append(essay)
        count += length(essay)
    if one_document:
        articles = [" ".join(articles)]
        count = length(articles[0])
    return "".join(f"!ARTICLE\n{article}\n" for article in articles), count


def run_once(corpus: str, model: str, window: int, precision: str, device: str, folder: str) -> float:
    """Wall-clock seconds of one ``run_decompose.py --deltalp`` process."""
    command = [sys.executable, os.path.join(REPO, "run_decompose.py"), corpus, model, str(window), "--deltalp",
               "--precision", precision, "--output-dir", folder, "--device", device]
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO)
    return time.perf_counter() - start


def deltalp_values(folder: str) -> torch.Tensor:
    """Every ΔLP value of a streaming run's tables, in piece order."""
    values = []
    for path in sorted(glob.glob(os.path.join(folder, "deltalp_*.pt")), key=lambda p: int(p.rsplit("_", 1)[1][:-3])):
        delta = torch.load(path, weights_only=True)["delta"]
        values.append(delta[~torch.isnan(delta)].flatten())
    return torch.cat(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="model (default: the bundled smollm2-135m)")
    parser.add_argument("--tokens", type=int, default=10_000, help="text tokens (default 10,000)")
    parser.add_argument("--window", type=int, default=50, help="decomposition window (default 50)")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], help="default: fp32 bf16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--one-document", action="store_true", help="the whole text as one article")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    if "fp32" not in args.precisions:
        args.precisions.insert(0, "fp32")  # the reference every fast mode is compared with

    from scipy.stats import spearmanr

    text, count = build_text(args.model, args.tokens, args.one_document)
    figures = {"model": args.model, "tokens": count, "window": args.window, "device": args.device,
               "one_document": args.one_document, "threads": torch.get_num_threads(), "runs": {}}
    print(f"{args.model}, {count} tokens ({'one document' if args.one_document else text.count('!ARTICLE')} "
          f"articles), window {args.window}, {args.device}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as root:
        corpus = os.path.join(root, "text.sentitems")
        with open(corpus, "w", encoding="utf-8") as handle:
            handle.write(text)
        values = {}
        for precision in args.precisions:
            folder = os.path.join(root, precision)
            seconds = run_once(corpus, args.model, args.window, precision, args.device, folder)
            values[precision] = deltalp_values(folder)
            run = {"seconds": seconds, "tokens_per_second": count / seconds}
            if precision != "fp32":
                diff = (values[precision] - values["fp32"]).abs()
                run.update(max_abs_bits=float(diff.max()), median_abs_bits=float(diff.median()),
                           spearman=float(spearmanr(values[precision].numpy(), values["fp32"].numpy()).statistic),
                           n_values=int(diff.numel()))
            figures["runs"][precision] = run
            print(f"  [{precision}] {seconds:.1f} s end to end = {run['tokens_per_second']:.1f} tokens/s", flush=True)
    print()
    for precision, run in figures["runs"].items():
        line = f"  {precision:>5}: {run['tokens_per_second']:7.1f} tokens/s ({run['seconds']:.0f} s)"
        if precision != "fp32":
            line += (f", {figures['runs']['fp32']['seconds'] / run['seconds']:.2f}x fp32; ΔLP vs fp32: max "
                     f"{run['max_abs_bits']:.4f} bits, median {run['median_abs_bits']:.2e}, Spearman "
                     f"{run['spearman']:.5f} ({run['n_values']} values)")
        print(line)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
