"""What the ΔLP-vs-ablation study pays per document on a bundled model: the decomposition, ΔLP at the sampled
pairs against the full ΔLP table it used to compute, and three ways of re-running the text without each
source: every position read out, only the rows the pairs need, and those rows from a run that continues the
clean pass's key/value cache cut before the source (what the study does now).

    python benchmarks/bench_ablation.py [--model gemma3-270m] [--tokens 128] [--pairs 90]

Prints seconds per step and the ratios (old / new), all from one run: the machine is shared, so only the
ratios of one run compare. The old ways are re-implemented here as references; the script also prints the
largest difference between the old and the new numbers.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def _timed(step):
    start = time.perf_counter()
    value = step()
    return value, time.perf_counter() - start


@torch.no_grad()
def _full_readout_ablation(model, ids, pairs, scale):
    """The previous real ablation: every position's logits on every re-run."""
    def lp_of(input_ids):
        return torch.log_softmax(model(input_ids[None]).logits[0].float(), -1) * scale

    full = lp_of(ids)
    values = {}
    for source in sorted({p.source for p in pairs}):
        removed = lp_of(torch.cat([ids[:source], ids[source + 1:]]))
        for p in pairs:
            if p.source == source:
                gold = int(ids[p.target + 1])
                values[(p.target, p.source)] = float(full[p.target, gold] - removed[p.target - 1, gold])
    return values


def _whole_rerun_ablation(model, ids, pairs) -> list[float]:
    """The study's re-runs with the cache cut switched off: each shortened text runs whole (only the rows
    read reach the LM head)."""
    from huggingface_patch import compat
    from huggingface_patch.attribution.ablation import AblationPair, real_ablation

    keep, compat.cache_prefix = compat.cache_prefix, lambda cache, length: None
    try:
        copies = [AblationPair(0, p.target, p.source) for p in pairs]
        return [p.real_delta_lp for p in real_ablation(model, ids, copies)]
    finally:
        compat.cache_prefix = keep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--tokens", type=int, default=128, help="tokens of the essay (the study's --max-tokens)")
    parser.add_argument("--pairs", type=int, default=90, help="pairs in the document (1000 over 11 essays: ~90)")
    parser.add_argument("--window", type=int, default=50)
    args = parser.parse_args()

    from huggingface_patch.attribution.ablation import real_ablation, sample_pairs
    from huggingface_patch.attribution.tables import analyse_piece
    from huggingface_patch.corpus import read_corpus
    from huggingface_patch.loading import load_bundle

    bundle = load_bundle(args.model)
    model, tokenizer = bundle.model, bundle.tokenizer
    text = read_corpus(os.path.join(REPO, "examples", "essays.sentitems"))[0]
    ids = torch.tensor(bundle.start.prepend(tokenizer(text, add_special_tokens=False)["input_ids"][: args.tokens - 1]))
    pairs = sample_pairs(len(ids), args.window, args.pairs, random.Random(0))
    print(f"{args.model}: {len(ids)} tokens, {len(pairs)} pairs, {len({p.source for p in pairs})} distinct "
          f"sources, window {args.window}, {torch.get_num_threads()} threads")

    analysis, t_decompose = _timed(lambda: analyse_piece(model, tokenizer, ids, args.window))
    table, t_table = _timed(lambda: analysis.deltalp(2.0).delta)
    chosen, t_chosen = _timed(lambda: analysis.deltalp_at([p.target - p.source for p in pairs],
                                                          [p.target for p in pairs], 2.0))
    worst_dlp = max(abs(float(table[p.target - p.source, p.target]) - float(v)) for p, v in zip(pairs, chosen))
    old, t_old = _timed(lambda: _full_readout_ablation(model, ids, pairs, 1 / math.log(2)))
    rows_only, t_rows = _timed(lambda: _whole_rerun_ablation(model, ids, pairs))
    _, t_new = _timed(lambda: real_ablation(model, ids, pairs))
    worst_rows = max(abs(old[(p.target, p.source)] - v) for p, v in zip(pairs, rows_only))
    worst_real = max(abs(old[(p.target, p.source)] - p.real_delta_lp) for p in pairs)

    print(f"decomposition                      {t_decompose:8.1f} s")
    print(f"ΔLP: full table (old)              {t_table:8.1f} s")
    print(f"ΔLP: sampled pairs only (new)      {t_chosen:8.1f} s   old/new {t_table / t_chosen:6.1f}x   "
          f"max diff {worst_dlp:.1e} bits")
    print(f"re-runs: every position read (old) {t_old:8.1f} s")
    print(f"re-runs: needed rows, whole text   {t_rows:8.1f} s   old/new {t_old / t_rows:6.1f}x   "
          f"max diff {worst_rows:.1e} bits")
    print(f"re-runs: needed rows, cached prefix {t_new:7.1f} s   old/new {t_old / t_new:6.1f}x   "
          f"max diff {worst_real:.1e} bits   (whole text / cached {t_rows / t_new:.1f}x)")
    before, after = t_decompose + t_table + t_old, t_decompose + t_chosen + t_new
    print(f"per document                       {before:8.1f} s -> {after:.1f} s   old/new {before / after:6.1f}x")


if __name__ == "__main__":
    main()
