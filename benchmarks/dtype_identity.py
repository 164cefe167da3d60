"""Identity error of the decomposition per model dtype (not a test: it prints figures).

    python benchmarks/dtype_identity.py                      # the real SmolLM2-135M, 64 tokens of the example corpus
    python benchmarks/dtype_identity.py --shape opt-125m     # random OPT-125m shape

For each dtype the model runs in that dtype (half-precision models accumulate the decomposition in fp32)
and the script prints the largest ``|sum of contributions + bias - the model's own state|`` after every
layer, relative to ``max |h|``, and at the final state.
"""

from __future__ import annotations

import argparse
import os

import torch
from common import SHAPES, build_model, parse_dtype


def identity_errors(model, ids, window):
    out = model(ids, decomposition_window=window, output_layer_decompositions=True, output_hidden_states=True)
    errors = []
    for layer in range(len(out.layer_decompositions) - 1):
        summed = out.layer_decompositions[layer].sum(1) + out.layer_decomposition_biases[layer]
        real = out.hidden_states[layer].double()
        errors.append(float((summed.double() - real).abs().max() / real.abs().max()))
    final = (out.decomposition.sum(1) + out.decomposition_bias).double()
    real = out.hidden_states[-1].double()
    return errors, float((final - real).abs().max() / real.abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="smollm2-135m-real", choices=["smollm2-135m-real", *sorted(SHAPES)])
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--dtypes", nargs="+", default=["float64", "float32", "bfloat16", "float16"])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    for name in args.dtypes:
        dtype = parse_dtype(name)
        if args.shape == "smollm2-135m-real":
            from huggingface_patch.corpus import read_sentitems
            from huggingface_patch.loading import load_model_and_tokenizer

            model, tokenizer, _ = load_model_and_tokenizer("smollm2-135m", dtype=name, device=args.device)
            text = " ".join(read_sentitems(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples",
                                                        "corpus.sentitems")))
            ids = tokenizer(text, return_tensors="pt").input_ids[:, : args.length].to(args.device)
        else:
            model = build_model(args.shape, dtype=dtype, device=args.device)
            ids = torch.randint(4, model.config.vocab_size, (1, args.length),
                                generator=torch.Generator().manual_seed(0))
            ids = ids.to(args.device)
        with torch.no_grad():
            layers, final = identity_errors(model, ids, args.length)
        print(f"{args.shape} {name:9s}: max over layers {max(layers):.2e}, final state {final:.2e} (x max|h|)")


if __name__ == "__main__":
    main()
