"""The ΔLP table's and the decomposition lens's read-outs through a large vocabulary (not a test: it prints
figures). Both are one product of many source rows with the LM head; this times the product as the library
does it against the shapes it had before, in one run, so the ratio does not depend on the machine's load.

    python benchmarks/bench_readout.py                       # Gemma 3 270M (262,144 x 640 head), one essay
    python benchmarks/bench_readout.py --model smollm2-135m --targets 20

* ΔLP table (:func:`huggingface_patch.deltalp.compute_deltalp`): the ``(W, C, H)`` contributions of a chunk of
  ``C`` targets as one ``(W C, H)`` product, against the batched ``(W, C, H) @ (H, V)`` it replaced (which
  streams the head's weight once per source row).
* Lens (:func:`huggingface_patch.attribution.study.lens_for_targets`): one decomposing run per text and one
  ``((L + 1) S, H)`` product per target, against a run per target and a product per layer.

Prints seconds for each and the largest difference between the two (round-off only).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--tokens", type=int, default=120, help="tokens of the first essay read out (default 120)")
    parser.add_argument("--targets", type=int, default=8, help="lens targets (default 8)")
    args = parser.parse_args()

    import torch

    torch.set_grad_enabled(False)
    from huggingface_patch.architectures import readout
    from huggingface_patch.corpus import EXAMPLE_ESSAYS
    from huggingface_patch.loading import load_model_and_tokenizer
    from huggingface_patch.residual_stream.documents import load_documents

    model, tokenizer, source = load_model_and_tokenizer(args.model)
    text = load_documents(EXAMPLE_ESSAYS)[0]
    ids = torch.tensor(tokenizer(text)["input_ids"][: args.tokens])
    head = readout(model)
    print(f"{source.name}: vocabulary {head.vocab_size:,} x {head.weight.shape[1]}, {len(ids)} tokens, "
          f"window {args.window}, {torch.get_num_threads()} threads")

    time_table(model, head, ids, args.window)
    time_lens(model, head, ids, args.window, args.targets)


def time_table(model, head, ids, window: int) -> None:
    """The ΔLP table of ``ids`` as the library computes it against the batched product it replaced."""
    import torch

    from huggingface_patch.attribution.tables import head_input
    from huggingface_patch.deltalp import compute_deltalp

    state, decomposition, _ = head_input(model, ids, window)
    start = time.perf_counter()
    new = compute_deltalp(state, decomposition, head, ids).ablated
    new_seconds = time.perf_counter() - start
    weight, window = head.weight.detach(), decomposition.shape[0]
    chunk = max(1, int(256 * 2**20 // ((window + 1) * head.vocab_size * 4)))
    start = time.perf_counter()
    old = torch.empty_like(new)
    targets = ids[1:]
    for lo in range(0, len(ids) - 1, chunk):
        hi = min(len(ids) - 1, lo + chunk)
        logits = state[lo:hi] @ weight.t()
        removed = logits[None] - decomposition[:, lo:hi] @ weight.t()  # the batched product it replaced
        old[:, lo:hi] = torch.log_softmax(removed, -1).gather(-1, targets[lo:hi][None, :, None].expand(window, -1, 1))[
            ..., 0].double() / torch.log(torch.tensor(2.0))
    old_seconds = time.perf_counter() - start
    both = ~(new.isnan() | old.isnan())
    worst = float((new - old)[both].abs().max())
    print(f"ΔLP table, {len(ids) - 1} targets: {old_seconds:.1f} s as a batched product, {new_seconds:.1f} s as one "
          f"product ({old_seconds / new_seconds:.1f}x); largest difference {worst:.2g} bits")


def time_lens(model, head, ids, window: int, targets: int) -> None:
    """The lens of the first ``targets`` targets from one run against a run per target, a product per layer."""
    import torch

    from huggingface_patch.attribution.decomposition_lens import frozen_final_norm, lens_of, lens_run
    from huggingface_patch.layer_states import residual_states

    wanted = list(range(1, 1 + targets))
    proj = head.weight.detach().double().cpu()
    start = time.perf_counter()
    run = lens_run(model, ids[: wanted[-1] + 2], window, proj)
    shared = [lens_of(model, run, t).logits for t in wanted]
    new_seconds = time.perf_counter() - start
    start = time.perf_counter()
    alone = []
    for t in wanted:  # the former way: a run per target, the head copied and read once per layer
        part = ids[: t + 2]
        states, out = residual_states(model, part[None], decomposition_window=window,
                                      output_layer_decompositions=True)
        weight64 = head.weight.detach().double().cpu()
        size = min(window, t + 1)
        alone.append(torch.stack([frozen_final_norm(model, layer[0, :size, t].flip(0), states[level, 0, t])
                                  @ weight64.t() for level, layer in enumerate(out.layer_decompositions)]))
    old_seconds = time.perf_counter() - start
    worst = max(float((a - b).abs().max()) for a, b in zip(shared, alone))
    print(f"lens, {len(wanted)} targets: {old_seconds:.1f} s with a run per target and a product per layer, "
          f"{new_seconds:.1f} s with one run and one product per target ({old_seconds / new_seconds:.1f}x); "
          f"largest logit difference {worst:.2g}")


if __name__ == "__main__":
    main()
