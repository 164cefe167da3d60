"""The command-line layer: options every tool shares, one-line errors with exit code 2, logging.

Every tool builds its options with :class:`ArgumentParser` (a bad option: one line, exit code 2), checks
its arguments, output folder and device *before* loading a model, calls the library, and wraps that body
with :func:`run_cli`, which turns every :class:`~huggingface_patch.errors.HuggingfacePatchError` (and a
missing file) into ``prog: error: <message>`` on one line with exit code 2, and Ctrl-C into one line with
exit code 130. Only entry points import this module; the library raises library errors.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from typing import Callable

from .errors import HuggingfacePatchError


class UsageError(HuggingfacePatchError):
    """Bad command-line input: the message names the problem and the fix; shown as one line, exit code 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``prog: error: message`` on stderr and exit code 2 (no usage dump).

    Subparsers made with ``add_subparsers().add_parser`` are of this class too.
    """

    def error(self, message):
        """Print ``prog: error: message`` and exit with code 2."""
        self.exit(2, f"{self.prog}: error: {message}\n")

    def parse_known_args(self, args=None, namespace=None):
        """argparse's, with ``~`` expanded in ``--output-dir`` (checked and written at the same place)."""
        parsed, extras = super().parse_known_args(args, namespace)
        if isinstance(getattr(parsed, "output_dir", None), str):
            parsed.output_dir = os.path.expanduser(parsed.output_dir)
        return parsed, extras


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


def add_model_arguments(parser: argparse.ArgumentParser, *, model: bool = True, bos: bool = True,
                        dtype: str = "float32") -> None:
    """``--model`` (default ``smollm2-135m``), ``--device``, ``--dtype``, ``--bos`` and ``--verbose``."""
    if model:
        parser.add_argument("--model", default="smollm2-135m",
                            help="hub id, local folder, .gguf file, or a bundled model: smollm2-135m (default), "
                                 "gemma3-270m")
    parser.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--dtype", default=dtype, help=f"model dtype: {dtype} (default), float32, float64, bfloat16, "
                                                        "float16")
    if bos:
        add_bos_argument(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def add_bos_argument(parser: argparse.ArgumentParser) -> None:
    """``--bos TOKEN``: the start token of every input (see :func:`huggingface_patch.corpus.document_start`)."""
    parser.add_argument("--bos", default="auto", metavar="TOKEN",
                        help="start token of every input: auto (default: the model's document start), a token "
                             "string or id, or none")


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    """``--precision``: the matmul precision of the contributions (:mod:`huggingface_patch.engine.precision`)."""
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "tf32"),
                        help="matmul precision of the contributions: fp32 (default, exact), bf16 (bf16 inputs, fp32 "
                             "accumulation; about 2x faster on CPUs with bf16 units) or tf32 (CUDA); the bias term "
                             "and the model's forward pass stay exact")


def check_precision_device(precision: str, device: str | None) -> None:
    """Refuse, before loading, ``--precision tf32`` off CUDA."""
    if precision == "tf32" and (device is None or not str(device).startswith("cuda")):
        raise UsageError("--precision tf32 needs a CUDA device (--device cuda); on this device use --precision bf16")


def check_device(device: str | None) -> None:
    """Refuse, before loading, a device this machine does not have."""
    if device is None:
        return
    import torch

    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {device!r} is not a torch device: use cpu, cuda or cuda:N") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    index = torch.device(device).index
    if kind == "cuda" and index is not None and index >= torch.cuda.device_count():
        raise UsageError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {device}: MPS is not available on this machine; use --device cpu")


def run_cli(body: Callable[[], int | None], prog: str,
            on_interrupt: Callable[[], str] | None = None) -> int:
    """Run ``body``; turn the library's errors into ``prog: error: message`` on stderr and exit code 2, and
    Ctrl-C into one line (``on_interrupt()`` says what is complete) and exit code 130."""
    from . import _source

    _source.commit()  # the code this run starts with, named by every record it writes (see _source.py)
    try:
        result = body()
    except (HuggingfacePatchError, FileNotFoundError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        if isinstance(exc, FileNotFoundError) and exc.filename:
            message = f"file not found: {exc.filename}"
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG, errno.EISDIR, errno.EACCES):
            raise
        print(f"{prog}: error: {os_error_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        detail = on_interrupt() if on_interrupt is not None else "nothing was written"
        print(f"{prog}: interrupted: {detail}", file=sys.stderr)
        return 130
    return 0 if result is None else int(result)


def os_error_message(exc: OSError) -> str:
    """One line for the file-system errors a user can fix: a full disk (with the space left), a name too long,
    a folder where a file should be, no permission."""
    import shutil

    name = exc.filename or "a file"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        folder = os.path.dirname(os.path.abspath(str(exc.filename))) if exc.filename else "."
        try:
            free = shutil.disk_usage(folder).free
            left = f"{free / 2**20:.0f} MiB free there"
        except OSError:
            left = "no space left"
        return f"the disk is full while writing {name} ({left}): free some space or give another --output-dir"
    if exc.errno == errno.ENAMETOOLONG:
        return (f"a file name is too long for the file system: {os.path.basename(str(name))[:60]}...: rename the "
                "input (its name becomes part of the output names) or use a shorter --output-dir")
    if exc.errno == errno.EISDIR:
        return f"{name} is a folder where a file should be: remove or rename it"
    return f"permission denied: {name}: give a place you can write to"


def setup_logging(verbose: bool = False) -> None:
    """Configure logging for an entry point (never at import time); Transformers' own progress bars and
    warnings are turned off so that an error stays one line."""
    import transformers

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
