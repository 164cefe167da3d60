"""Shared helpers for command-line tools: one-line errors with exit code 2, options, atomic writes, logging.

Every tool builds its options with :class:`ArgumentParser` (bad options: one line, exit code 2), raises
:class:`UsageError` in ``main(argv)`` (or lets a known library error through) and wraps its body with
:func:`run_cli`, which prints ``prog: error: <message>`` on one line and exits with 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import tempfile
from typing import Callable

import torch


class UsageError(Exception):
    """Bad input: the message names the problem and the fix; shown as one line, exit code 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``prog: error: message`` on stderr and exit code 2 (no usage dump).

    Subparsers made with ``add_subparsers().add_parser`` are of this class too.
    """

    def error(self, message):
        """Print ``prog: error: message`` and exit with code 2."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def _integer(text: str, minimum: int, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """Argparse type: an integer >= 1 (``expected a positive integer, got '0'``)."""
    return _integer(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """Argparse type: an integer >= 0 (``expected a non-negative integer, got '-1'``)."""
    return _integer(text, 0, "a non-negative integer")


def positive_float(text: str) -> float:
    """Argparse type: a number > 0 (``expected a positive number, got '0'``)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    """``--model`` (default ``smollm2-135m``)."""
    parser.add_argument("--model", default="smollm2-135m",
                        help="hub id, local folder, .gguf file or 'smollm2-135m' (default)")


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device`` (default CPU) and ``--dtype`` (default float32)."""
    parser.add_argument("--device", default=None, help="torch device (default: CPU)")
    parser.add_argument("--dtype", default="float32", help="float32 (default), bfloat16, float16, float64")


def _known_errors() -> tuple[type[BaseException], ...]:
    from .architectures import UnsupportedArchitectureError
    from .loading import ModelLoadError

    return (UsageError, ModelLoadError, UnsupportedArchitectureError, FileNotFoundError)


def run_cli(body: Callable[[], int | None], prog: str) -> int:
    """Run ``body``; turn known input errors into ``prog: error: message`` on stderr and exit code 2."""
    try:
        result = body()
    except _known_errors() as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        if isinstance(exc, FileNotFoundError) and exc.filename:
            message = f"file not found: {exc.filename}"
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    return 0 if result is None else int(result)


def setup_logging(verbose: bool = False) -> None:
    """Configure logging for an entry point (never at import time)."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")


@contextlib.contextmanager
def atomic_path(path: str):
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-" + os.path.basename(path), dir=folder)
    os.close(handle)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_tensor(tensor: torch.Tensor, path: str) -> None:
    """``torch.save`` a detached, compact copy (never a view of a larger storage) atomically."""
    with atomic_path(path) as tmp:
        torch.save(tensor.detach().clone().contiguous(), tmp)


def write_text(text: str, path: str) -> None:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)


def write_json(data, path: str) -> None:
    """Write JSON (indented, UTF-8) atomically."""
    write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", path)


def save_figure(fig, path: str, dpi: int = 150) -> None:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)
