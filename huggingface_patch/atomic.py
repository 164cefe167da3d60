"""Atomic writes: every file is written under a temporary name next to its target (``.tmp-<pid>-<random>-<name>``)
and renamed into place only once complete, so a reader never sees half a file; tensors, text, JSON, CSV (with
spreadsheet formulas quoted) and figures; and the clean-up of what a killed writer left behind.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
import shutil
import tempfile
from typing import Iterable, Sequence

import torch

#: prefix of every temporary file or folder this package writes; the writer's process id follows it, so that a
#: clean-up only removes what a process that is gone left behind (``.tmp-<pid>-...``)
TEMPORARY_PREFIX = ".tmp-"


def _temporary_prefix(kind: str = "") -> str:
    return f"{TEMPORARY_PREFIX}{os.getpid()}-{kind}"


@contextlib.contextmanager
def atomic_path(path: str):
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=_temporary_prefix(), suffix="-" + os.path.basename(path), dir=folder)
    os.close(handle)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes owner-only files; results are ordinary files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_object(value, path: str) -> None:
    """``torch.save`` any object (a dict of tensors, say) atomically. Saved through a file handle, so the
    archive's inner name does not depend on the temporary file name: the same tensors give the same bytes."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            torch.save(value, handle)


def save_tensor(tensor: torch.Tensor, path: str) -> None:
    """``torch.save`` a detached, compact copy (never a view of a larger storage) atomically."""
    save_object(tensor.detach().clone().contiguous(), path)


def write_text(text: str, path: str) -> None:
    """Write text (UTF-8) atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)


def _json_safe(value):
    """NaN and infinities become ``null`` (JSON has no such numbers); tensors and numpy arrays become lists,
    numpy scalars plain numbers, dict keys strings."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, torch.Tensor) or type(value).__module__ == "numpy":
        value = value.tolist() if hasattr(value, "tolist") else value
        if isinstance(value, list):
            return _json_safe(value)
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    return value


def json_text(data) -> str:
    """Indented UTF-8 JSON text of ``data`` (NaN as ``null``)."""
    return json.dumps(_json_safe(data), indent=2, ensure_ascii=False) + "\n"


def write_json(data, path: str) -> None:
    """Write JSON (indented, UTF-8, NaN as ``null``) atomically."""
    write_text(json_text(data), path)


#: what a spreadsheet reads as a formula at the start of a cell
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


#: a plain decimal number written as text (``-5.1``, ``+2e-3``): a spreadsheet reads it as a number, not a formula
NUMBER_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _safe_cell(value):
    """Text that a spreadsheet would run as a formula (a token such as ``=SUM(...)``) gets a leading ``'``, as
    OWASP recommends; numbers, also numbers already formatted as text (``"-5.1"``), are written as they are."""
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not NUMBER_TEXT.fullmatch(value):
        return "'" + value
    return value


def csv_text(rows: Iterable[dict | Sequence], columns: Sequence[str]) -> str:
    """CSV text with a header: ``rows`` are dicts (missing keys empty, extra keys ignored) or sequences in
    column order; text cells a spreadsheet would read as a formula start with ``'`` (:func:`_safe_cell`)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        cells = [row.get(c, "") for c in columns] if isinstance(row, dict) else row
        writer.writerow([_safe_cell(cell) for cell in cells])
    return buffer.getvalue()


def write_csv(rows: Sequence[dict | Sequence], path: str, columns: Sequence[str] | None = None) -> None:
    """Write rows as CSV atomically (columns: ``columns`` or the first dict row's keys)."""
    if columns is None:
        if not rows or not isinstance(rows[0], dict):
            raise ValueError("write_csv needs columns for rows that are not dicts")
        columns = list(rows[0].keys())
    write_text(csv_text(rows, columns), path)


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (selected here, never at import time)."""
    import matplotlib

    if matplotlib.get_backend().lower() != "agg":
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str, dpi: int = 150) -> None:
    """Save a matplotlib figure as PNG atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    pyplot().close(fig)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def temporary_files(folder: str) -> list[str]:
    """The temporary files and folders this package left in ``folder`` that no running process owns: those
    of an interrupted or killed run (a name without a process id, from older versions, counts as left)."""
    try:
        entries = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    left = []
    for entry in entries:
        if not entry.startswith(TEMPORARY_PREFIX):
            continue
        owner = entry[len(TEMPORARY_PREFIX):].split("-", 1)[0]
        if owner.isdigit() and _alive(int(owner)):
            continue  # another process is writing it now
        left.append(os.path.join(folder, entry))
    return left


def remove_temporary_files(folder: str) -> int:
    """Remove what :func:`temporary_files` finds; returns how many."""
    found = temporary_files(folder)
    for path in found:
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
    return len(found)
