"""A result folder read back: what every result class's ``from_folder`` is built on.

A folder is a finished result only with its ``run.json`` (:mod:`huggingface_patch.records`; written last by
:class:`~huggingface_patch.files.ResultFolder`), and only the files that record lists belong to it: a file
left from another run is never read. Tables come back with their numbers: a CSV column whose every non-empty
cell is a number is read as numbers (``int`` where every cell is a whole number written without a point),
``True``/``False`` columns as booleans, empty cells as ``None``, and the spreadsheet guard (a leading ``'``
before formula text, :func:`~huggingface_patch.atomic._safe_cell`) is removed.
"""

from __future__ import annotations

import csv
import json
import math
import os

from .atomic import _FORMULA_START, NUMBER_TEXT
from .errors import RecordError
from .records import read_record

_SPECIAL_NUMBERS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _unguard(cell: str) -> str:
    if cell.startswith("'") and cell[1:].startswith(_FORMULA_START):
        return cell[1:]
    return cell


def _column_type(cells: list[str]):
    """The reader of one column: int, float, bool or text (see the module docstring)."""
    present = [c for c in cells if c != ""]
    if not present:
        return None
    if all(c in ("True", "False") for c in present):
        return lambda c: c == "True"
    if all(NUMBER_TEXT.fullmatch(c) or c.lower() in _SPECIAL_NUMBERS for c in present):
        if all(NUMBER_TEXT.fullmatch(c) and not any(x in c for x in ".eE") for c in present):
            return int
        return lambda c: _SPECIAL_NUMBERS[c.lower()] if c.lower() in _SPECIAL_NUMBERS else float(c)
    return None


def read_table(path: str, typed: bool = True) -> list[dict]:
    """The rows of a CSV table written by :func:`~huggingface_patch.atomic.write_csv`, typed column by column
    (``typed=False``: every cell as its text, guard removed, for a table whose numbers were formatted text)."""
    with open(path, encoding="utf-8", newline="") as handle:
        rows = [{key: _unguard(value) for key, value in row.items()} for row in csv.DictReader(handle)]
    if not rows or not typed:
        return rows
    for column in rows[0]:
        convert = _column_type([row[column] for row in rows])
        for row in rows:
            cell = row[column]
            row[column] = None if cell == "" else convert(cell) if convert is not None else cell
    return rows


class StoredFolder:
    """One finished result folder: ``record`` (its ``run.json``), and its files by name.

    ``tool``: the record's tool must start with it (``"python -m analysis.ablation_agreement"``), so that a
    folder of another analysis is refused in one line.
    """

    def __init__(self, folder: str, tool: str | None = None):
        self.folder = folder
        if not os.path.isdir(folder):
            raise RecordError(f"result folder not found: {folder}")
        record = read_record(folder)
        if record is None:
            raise RecordError(f"{folder} has no run.json, so it is not a finished result (the run was interrupted or "
                              "the folder holds other files): run the tool again")
        if tool is not None and not str(record.get("tool", "")).startswith(tool):
            raise RecordError(f"{folder} holds results of {record.get('tool')!r}, not of {tool!r}: give the folder "
                              "that tool wrote")
        self.record = record
        self.files = list(record.get("files", []))

    def has(self, name: str) -> bool:
        return name in self.files and os.path.isfile(os.path.join(self.folder, name))

    def path(self, name: str) -> str:
        """Where file ``name`` of this run is; :class:`RecordError` when the run did not write it or it is gone."""
        if name not in self.files:
            raise RecordError(f"{self.folder}: this run wrote no {name} (its run.json lists "
                              f"{', '.join(self.files) or 'no files'})")
        path = os.path.join(self.folder, name)
        if not os.path.isfile(path):
            raise RecordError(f"{path} is listed in run.json but missing: run the tool again")
        return path

    def table(self, name: str, typed: bool = True) -> list[dict]:
        return read_table(self.path(name), typed)

    def columns(self, name: str) -> list[str]:
        """The header of table ``name`` (a table without rows still has its columns)."""
        with open(self.path(name), encoding="utf-8", newline="") as handle:
            return next(csv.reader(handle), [])

    def json(self, name: str):
        with open(self.path(name), encoding="utf-8") as handle:
            return json.load(handle)

    def named(self, prefix: str, suffix: str) -> list[str]:
        """The files of this run whose names start with ``prefix`` and end with ``suffix``, sorted."""
        return sorted(n for n in self.files if n.startswith(prefix) and n.endswith(suffix))
