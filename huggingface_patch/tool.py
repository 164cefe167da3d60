"""The one skeleton of the analysis commands: parse -> check -> load -> run -> write -> one-line report.

A tool (``analysis/<name>.py``) gives its parser and a ``run(args, bundle)`` that returns an :class:`Outcome`
(the run record, how to write the result, the line to report); :func:`run_tool` does the rest the same way for
every tool: logging, the output folder and device checks before any work, one
:func:`~huggingface_patch.loading.load_bundle` of MODEL (model, tokenizer, source, start token), the result
folder committed with its ``run.json``, one-line errors with exit code 2 (:func:`~huggingface_patch.cli.run_cli`).
This is the command-line layer: the library never imports it.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from typing import Callable

from .cli import check_device, run_cli, setup_logging


@dataclass
class Outcome:
    """What a tool's ``run`` produced. ``record``: the folder's run record
    (:func:`~huggingface_patch.records.analysis_record`); ``write(folder)``: writes the result into the
    :class:`~huggingface_patch.files.ResultFolder`; ``report``: the one line logged at the end (or a callable
    giving it once ``write`` has run); ``printed``: the report is the tool's result text, printed to standard
    output rather than logged."""

    record: dict
    write: Callable
    report: str | Callable[[], str] = ""
    printed: bool = False


def run_tool(prog: str, args: argparse.Namespace, run: Callable, *, load: bool = True, decomposed: bool = True,
             check: Callable | None = None, log: logging.Logger | None = None) -> int:
    """Run one tool; returns the exit code.

    ``check(args)``: the tool's own checks of its arguments and inputs, before anything loads (raise
    :class:`~huggingface_patch.cli.UsageError`); ``load``: load ``args.model`` as a
    :class:`~huggingface_patch.loading.ModelBundle` (``decomposed``: the decomposing class) and pass it to
    ``run(args, bundle)`` (``False``: ``run(args, None)`` loads what it needs itself: several models, a media
    model, files only); ``run`` returns an :class:`Outcome`, or None when it wrote nothing into a folder (then it
    reported itself). ``args.output_dir`` is replaced by the checked absolute path.
    """
    log = log or logging.getLogger(prog.split()[-1])

    def body():
        from .files import ResultFolder, check_output_dir

        setup_logging(getattr(args, "verbose", False))
        started = time.perf_counter()
        args.output_dir = check_output_dir(args.output_dir)
        check_device(getattr(args, "device", None))
        if check is not None:
            check(args)
        bundle = None
        if load:
            from .loading import load_bundle

            bundle = load_bundle(args.model, dtype=args.dtype, device=args.device, decomposed=decomposed,
                                 bos=getattr(args, "bos", "auto"))
            if bundle.start is not None and hasattr(args, "bos"):  # a tool that reads text with a start token
                log.info("start token: %r (id %s; %s)", bundle.start.token, bundle.start.id, bundle.start.reason)
        outcome = run(args, bundle)
        if outcome is None:
            return
        with ResultFolder(args.output_dir, outcome.record) as out:
            outcome.write(out)
        line = outcome.report() if callable(outcome.report) else outcome.report
        if outcome.printed:
            print(line)
            return
        log.info("%s (%s, %.1f s)", line or "done", args.output_dir, time.perf_counter() - started)

    return run_cli(body, prog)
