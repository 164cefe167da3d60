"""Path length of the residual stream per token and layer, and its correlation with the next-token logit.

    python -m analysis.path_length --model smollm2-135m --corpus examples/corpus.sentitems --output-dir out/pl

Several models in one run (``--model`` repeated) are compared in one table. Writes
``path_length_tokens.csv`` (one row per model and token), ``path_length_steps.csv`` (per model, token and
layer: step norm and cumulative path length), ``path_length_summary.csv`` / ``.json`` (the model × r table;
position 0 reported separately) and the figures ``path_length_cumulative.png``, ``path_length_vs_logit.png``
and ``path_length_steps.png``. See docs/lens.md.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import math
import os

import numpy as np
import torch
from tqdm import tqdm

from huggingface_patch.cli import (
    ArgumentParser,
    UsageError,
    run_cli,
    save_figure,
    setup_logging,
    write_json,
    write_text,
)
from huggingface_patch.lens.corpus import (CorpusError, encode_documents, load_documents, load_lens_model,
                                           pad_batch, pad_id_of)
from huggingface_patch.lens.path_length import TARGETS, correlations, path_lengths

log = logging.getLogger("analysis.path_length")
PROG = "python -m analysis.path_length"
DEFAULT_CORPUS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples",
                              "corpus.sentitems")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--model", action="append", dest="models", metavar="MODEL",
                        help="hub id, model folder, .gguf file or smollm2-135m; repeat to compare (default smollm2-135m)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--corpus", default=DEFAULT_CORPUS,
                        help="sentitems file (!ARTICLE lines) or plain text (blank-line separated documents)")
    source.add_argument("--text", help="analyse this one text instead of a corpus")
    parser.add_argument("--output-dir", default="path_length_output", help="folder for CSV/JSON/PNG (created)")
    parser.add_argument("--max-tokens", type=int, default=128, help="tokens per document, BOS included (default 128)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--no-plots", action="store_true", help="write CSV/JSON only")
    parser.add_argument("--device", default=None, help="e.g. cpu, cuda (default: where the model loads)")
    parser.add_argument("--dtype", default="float32", help="float32 (default; the analysis is specified in fp32)")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def _fmt(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{float(value):.6g}"


def analyse_model(model_arg: str, encode_source: list[str], args):
    """Per-token records and per-token step arrays of one model."""
    model, tokenizer, name = load_lens_model(model_arg, args.dtype, args.device)
    try:
        encoded = encode_documents(tokenizer, model.config, encode_source, args.max_tokens)
    except CorpusError as exc:
        raise UsageError(str(exc)) from exc
    device = next(model.parameters()).device
    tokens = []  # dicts per token
    for start in tqdm(range(0, len(encoded), args.batch_size), desc=f"path length {name}", unit="batch"):
        batch = encoded[start : start + args.batch_size]
        ids, mask = pad_batch(batch, pad_id_of(tokenizer), "right")
        result = path_lengths(model, ids.to(device), mask.to(device))
        for b, seq in enumerate(batch):
            one = {k: v.cpu() for k, v in result.sequence(b).items()}
            for t in range(len(seq)):
                tokens.append({
                    "document": start + b, "position": t, "token": tokenizer.decode([seq[t]]),
                    "next_token": tokenizer.decode([seq[t + 1]]) if t + 1 < len(seq) else "",
                    "path_length": float(one["total"][t]), "straight": float(one["straight"][t]),
                    "final_norm": float(one["final_norm"][t]),
                    "next_logit": float(one["next_logit"][t]), "next_logprob": float(one["next_logprob"][t]),
                    "max_logit": float(one["max_logit"][t]),
                    "steps": one["steps"][t].numpy(), "cumulative": one["cumulative"][t].numpy(),
                })
    num_layers = len(tokens[0]["steps"])
    del model
    return name, num_layers, tokens


def summarise(name: str, model_arg: str, num_layers: int, tokens: list[dict]) -> dict:
    """The model's row of the comparison table (correlations over positions >= 1; position 0 separately)."""
    rest = [t for t in tokens if t["position"] > 0]
    first = [t for t in tokens if t["position"] == 0]
    row = {"model": name, "model_arg": model_arg, "num_layers": num_layers, "tokens": len(rest),
           "tokens_with_next": sum(not math.isnan(t["next_logit"]) for t in rest)}
    pl = np.array([t["path_length"] for t in rest])
    for target in TARGETS:
        r = correlations(pl, [t[target] for t in rest])
        row[f"pearson_{target}"], row[f"spearman_{target}"] = r["pearson"], r["spearman"]
    row["mean_path_length"] = float(pl.mean()) if pl.size else math.nan
    row["mean_path_length_per_layer"] = row["mean_path_length"] / num_layers
    row["mean_tortuosity"] = float(np.mean([t["path_length"] / t["straight"] for t in rest])) if rest else math.nan
    row["mean_path_length_position0"] = float(np.mean([t["path_length"] for t in first])) if first else math.nan
    row["mean_next_logit_position0"] = float(np.nanmean([t["next_logit"] for t in first])) if first else math.nan
    return row


def run(args) -> int:
    models = args.models or ["smollm2-135m"]
    if args.max_tokens < 2:
        raise UsageError(f"--max-tokens must be at least 2, got {args.max_tokens}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    try:
        documents = load_documents(None if args.text is not None else args.corpus, args.text)
    except CorpusError as exc:
        raise UsageError(str(exc)) from exc

    results, seen = [], {}
    for model_arg in models:
        name, num_layers, tokens = analyse_model(model_arg, documents, args)
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            name = f"{name}-{seen[name]}"
        results.append((name, model_arg, num_layers, tokens))

    token_cols = ["model", "document", "position", "token", "next_token", "path_length", "straight", "tortuosity",
                  "final_norm", "next_logit", "next_logprob", "max_logit"]
    tok_buf, step_buf = io.StringIO(), io.StringIO()
    tok_w, step_w = csv.writer(tok_buf, lineterminator="\n"), csv.writer(step_buf, lineterminator="\n")
    tok_w.writerow(token_cols)
    step_w.writerow(["model", "document", "position", "layer", "relative_depth", "step_norm", "cumulative"])
    summary = []
    for name, model_arg, num_layers, tokens in results:
        for t in tokens:
            tok_w.writerow([name, t["document"], t["position"], t["token"], t["next_token"], _fmt(t["path_length"]),
                            _fmt(t["straight"]), _fmt(t["path_length"] / t["straight"]), _fmt(t["final_norm"]),
                            _fmt(t["next_logit"]), _fmt(t["next_logprob"]), _fmt(t["max_logit"])])
            for layer in range(1, num_layers + 1):
                step_w.writerow([name, t["document"], t["position"], layer, f"{layer / num_layers:.4g}",
                                 _fmt(t["steps"][layer - 1]), _fmt(t["cumulative"][layer])])
        summary.append(summarise(name, model_arg, num_layers, tokens))
    out = args.output_dir
    write_text(tok_buf.getvalue(), os.path.join(out, "path_length_tokens.csv"))
    write_text(step_buf.getvalue(), os.path.join(out, "path_length_steps.csv"))
    columns = list(summary[0])
    sum_buf = io.StringIO()
    sum_w = csv.writer(sum_buf, lineterminator="\n")
    sum_w.writerow(columns)
    for row in summary:
        sum_w.writerow([_fmt(row[c]) if isinstance(row[c], float) else row[c] for c in columns])
    write_text(sum_buf.getvalue(), os.path.join(out, "path_length_summary.csv"))
    clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()} for row in summary]
    write_json({"definition": "step_l = ||h_l - h_{l-1}||, h_0 embeddings, h_L before the final norm; "
                              "correlations over positions >= 1 with a next token",
                "max_tokens": args.max_tokens, "models": clean}, os.path.join(out, "path_length_summary.json"))
    for row in summary:
        log.info("%s: Pearson %.3f, Spearman %.3f (path length vs next-token logit, %d tokens)", row["model"],
                 row["pearson_next_logit"], row["spearman_next_logit"], row["tokens_with_next"])
    if not args.no_plots:
        _plots(results, summary, out)
    return 0


def _plots(results, summary, out):
    from huggingface_patch.lens.plots import cumulative_path_figure, path_vs_logit_figure, step_profile_figure

    cumulative, scatter, profiles = [], [], {}
    for (name, _, _, tokens), row in zip(results, summary):
        rest = [t for t in tokens if t["position"] > 0]
        first = [t for t in tokens if t["position"] == 0]
        cumulative.append({"name": name, "curves": np.stack([t["cumulative"] for t in rest]),
                           "positions": np.array([t["position"] for t in rest])})
        scatter.append({"name": name, "pl": [t["path_length"] for t in rest], "target": [t["next_logit"] for t in rest],
                        "pl0": [t["path_length"] for t in first], "target0": [t["next_logit"] for t in first],
                        "r": {"pearson": row["pearson_next_logit"], "spearman": row["spearman_next_logit"]}})
        profiles[name] = np.stack([t["steps"] for t in rest]).mean(0)
    save_figure(cumulative_path_figure(cumulative), os.path.join(out, "path_length_cumulative.png"))
    save_figure(path_vs_logit_figure(scatter), os.path.join(out, "path_length_vs_logit.png"))
    save_figure(step_profile_figure(profiles), os.path.join(out, "path_length_steps.png"))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    torch.set_grad_enabled(False)
    return run_cli(lambda: run(args), PROG)


if __name__ == "__main__":
    raise SystemExit(main())
