"""``SaturationResult``: what ``analysis.saturation`` wrote into one folder, read back (``from_folder``), so
that the report, a test or a notebook reads each part's table and summary the same way.

The subcommands (:mod:`.reports`, ``cmd_*``) write the parts; this reads them: per part, its per-item table
(``saturation_<part>.csv``, typed; None where the part has none) and its summary (``saturation_<part>.json``),
and which parts ``all`` skipped and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: the parts a saturation folder can hold, with the per-item table each writes
PART_TABLES = {"layers": "saturation_layers.csv", "order": "saturation_order_positions.csv", "probe": None,
               "intervene": "saturation_intervene.csv", "early_exit": "saturation_early_exit.csv", "lm": None}


@dataclass
class SaturationResult:
    """``summaries``: part -> its JSON summary; ``tables``: part -> its rows; ``skipped``: part -> why ``all``
    could not compute it; ``record``: the folder's ``run.json``."""

    summaries: dict = field(default_factory=dict)
    tables: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)
    record: dict = field(default_factory=dict)

    @classmethod
    def from_folder(cls, folder: str) -> "SaturationResult":
        """Every part this run wrote into ``folder`` (checked against its ``run.json``)."""
        from ..errors import RecordError
        from ..stored import StoredFolder

        stored = StoredFolder(folder)
        result = cls(record=stored.record)
        for part, table in PART_TABLES.items():
            if stored.has(f"saturation_{part}.json"):
                result.summaries[part] = stored.json(f"saturation_{part}.json")
                if table is not None and stored.has(table):
                    result.tables[part] = stored.table(table)
        if stored.has("saturation_skipped.json"):
            result.skipped = stored.json("saturation_skipped.json")["skipped"]
        if not result.summaries:
            raise RecordError(f"{folder} holds no saturation result (no saturation_<part>.json): give the folder "
                              "analysis.saturation wrote")
        return result
