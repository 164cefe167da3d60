"""Shared helpers for command-line tools: one-line errors with exit code 2, atomic writes, logging.

Every tool's ``main(argv)`` raises :class:`UsageError` (or lets a known library error through) and
wraps its body with :func:`run_cli`, which prints ``error: <message>`` on one line and exits with 2.
"""

from __future__ import annotations

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
