"""``RecallResult``: what one factual-recall analysis produced, as one object that writes itself into a
result folder and reads itself back (``from_folder``), so that the CLI, the report and a user's notebook
read the same files the same way."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass

from ..atomic import write_csv, write_json
from ..errors import RecordError

#: the facts a recall analysis used, one summary per fact (subject, prompt, target token, positions)
QUERIES_FILE = "queries.json"


@dataclass
class RecallResult:
    """``records``: one row per fact and setting (the per-item table ``table``, CSV; values read back are
    strings); ``queries``: the facts used (``queries.json``); ``summary``: counts, settings and statistics
    (``summary_name``, JSON)."""

    table: str
    summary_name: str
    records: list[dict]
    queries: list[dict]
    summary: dict

    def write(self, folder) -> None:
        """Into ``folder`` (a :class:`~huggingface_patch.files.ResultFolder`, or anything with ``path(name)``)."""
        if self.records:
            write_csv(self.records, folder.path(self.table))
        else:
            write_csv([], folder.path(self.table), ["index"])
        write_json(self.queries, folder.path(QUERIES_FILE))
        write_json(self.summary, folder.path(self.summary_name))

    @classmethod
    def from_folder(cls, folder: str, table: str, summary_name: str) -> "RecallResult":
        """The result a recall tool wrote into ``folder``; :class:`RecordError` names a missing file."""
        paths = [os.path.join(folder, name) for name in (table, QUERIES_FILE, summary_name)]
        missing = [path for path in paths if not os.path.isfile(path)]
        if missing:
            raise RecordError(f"{folder} is not a complete recall result: {missing[0]} is missing (rerun the tool)")
        with open(paths[0], encoding="utf-8", newline="") as handle:
            records = list(csv.DictReader(handle))
        with open(paths[1], encoding="utf-8") as handle:
            queries = json.load(handle)
        with open(paths[2], encoding="utf-8") as handle:
            summary = json.load(handle)
        return cls(table, summary_name, records, queries, summary)
