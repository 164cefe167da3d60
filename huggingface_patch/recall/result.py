"""``RecallResult``: what one factual-recall analysis produced, as one object that writes itself into a
result folder and reads itself back (``from_folder``), so that the CLI, the report and a user's notebook
read the same files the same way."""

from __future__ import annotations

from dataclasses import dataclass

from ..atomic import write_csv, write_json

#: the facts a recall analysis used, one summary per fact (subject, prompt, target token, positions)
QUERIES_FILE = "queries.json"


@dataclass
class RecallResult:
    """``records``: one row per fact and setting (the per-item table ``table``, CSV); ``queries``: the facts
    used (``queries.json``); ``summary``: counts, settings and statistics
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
        """The result a recall tool wrote into ``folder`` (rows typed as :func:`~huggingface_patch.stored.read_table`
        reads them); :class:`RecordError` names what is missing."""
        from ..stored import StoredFolder

        stored = StoredFolder(folder)
        return cls(table, summary_name, stored.table(table), stored.json(QUERIES_FILE), stored.json(summary_name))
