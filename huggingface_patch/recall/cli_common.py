"""Shared pieces of the ``analysis.*`` recall command-line tools: common options, model and query
loading with one-line errors, CSV writing."""

from __future__ import annotations

import argparse
import csv
import logging
import os
from typing import Sequence

from ..cli import (
    ArgumentParser,  # noqa: F401  (moved to huggingface_patch.cli; re-exported for older imports)
    UsageError,
    add_device_arguments,
    add_model_argument,
    atomic_path,
    positive_int,
)
from .queries import DEFAULT_FACTS, FILTERS, FactsError, load_facts, prepare_queries

logger = logging.getLogger(__name__)


def add_common_arguments(parser: argparse.ArgumentParser, default_output: str) -> None:
    add_model_argument(parser)
    parser.add_argument("--facts", default=DEFAULT_FACTS,
                        help="JSON list of facts with 'subject' and 'prompt' (default: the shipped known_1000.json)")
    parser.add_argument("--limit", type=positive_int, default=None,
                        help="use only the first N facts the model knows")
    parser.add_argument("--filter", choices=FILTERS, default="greedy",
                        help="which facts to keep: 'greedy' (default) = greedy continuation starts with the "
                             "attribute; 'first-token' = top-1 token is a prefix of the attribute; 'none' = keep "
                             "all (for random test models). The top-1 token is the attribute in every case")
    parser.add_argument("--add-bos", action="store_true", help="prepend BOS (the paper encodes without it)")
    parser.add_argument("--batch-rows", type=positive_int, default=256,
                        help="maximum rows per forward pass (default 256)")
    parser.add_argument("--output-dir", default=default_output, help=f"output folder (default {default_output})")
    add_device_arguments(parser)
    parser.add_argument("--verbose", action="store_true", help="debug logging")


def load_model(args):
    """Load the model (plain Hugging Face class, eager attention) and check its family is supported."""
    from ..architectures import model_parts
    from ..loading import load_model_and_tokenizer

    model, tokenizer, source = load_model_and_tokenizer(args.model, dtype=args.dtype, device=args.device,
                                                        decomposed=False)
    model_parts(model)  # raises UnsupportedArchitectureError with the supported types
    return model, tokenizer, source


def load_checked_facts(path: str) -> list[dict]:
    try:
        return load_facts(path)
    except FactsError as exc:
        raise UsageError(str(exc)) from exc


def known_queries(args, model, tokenizer, facts: Sequence[dict]):
    """Prepare the queries and apply ``--limit``; returns ``(queries, known)`` where ``known`` is the number
    of known facts (None with ``--limit``: the filter then stops after the first N known facts)."""
    from tqdm import tqdm

    with tqdm(total=len(facts), desc="filtering facts", unit="fact") as bar:
        queries = prepare_queries(model, tokenizer, facts, filter=args.filter, add_bos=args.add_bos,
                                  batch_size=min(64, args.batch_rows), limit=args.limit, progress=bar)
    known = None if args.limit is not None else len(queries)
    if known is not None:
        logger.info("the model knows %d of %d facts (filter %s)", known, len(facts), args.filter)
    if not queries:
        raise UsageError(f"the model knows none of the {len(facts)} facts with --filter {args.filter}; "
                         "try --filter first-token or --filter none")
    return queries, known


def write_csv(rows: Sequence[dict], path: str, columns: Sequence[str] | None = None) -> None:
    """Write dict rows as CSV atomically (columns: ``columns`` or the first row's keys)."""
    columns = list(columns or (rows[0].keys() if rows else []))
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)


def output_path(args, name: str) -> str:
    os.makedirs(args.output_dir, exist_ok=True)
    return os.path.join(args.output_dir, name)
