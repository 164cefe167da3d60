"""What ``analysis.saturation`` computes, as objects that write themselves and read themselves back.

A :class:`SaturationPart` is one subcommand's result (:mod:`.reports`): its summary
(``saturation_<part>.json``), its per-item table where it has one, its figure and its one-line report. A
:class:`SaturationResult` holds the parts of one run (``all``: every one that could be computed, and why the
others could not) and writes them into one result folder; ``from_folder`` reads them back (tables typed, the
figures as files: re-drawing them needs the collected data).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

#: the parts' files: subcommand -> (file stem, per-item table or None, figure)
PART_FILES = {"layers": ("layers", "saturation_layers.csv", "saturation_layers.png"),
              "order": ("order", "saturation_order_positions.csv", "saturation_rank_correspondence.png"),
              "probe": ("probe", None, "saturation_probe.png"),
              "intervene": ("intervene", "saturation_intervene.csv", "saturation_intervene.png"),
              "early-exit": ("early_exit", "saturation_early_exit.csv", "saturation_early_exit.png"),
              "lm": ("lm", None, "saturation_lm.png")}
SKIPPED_FILE = "saturation_skipped.json"


@dataclass
class SaturationPart:
    """``name``: the file stem (``layers``, ``order``, ``probe``, ``intervene``, ``early_exit``, ``lm``);
    ``summary``: the JSON summary; ``table``: the per-item rows (None: the part has none) and their ``columns``
    (None: the rows' keys); ``figure``: a callable drawing the figure (None when read back); ``line``: the
    one-line report."""

    name: str
    summary: dict
    table: list[dict] | None = None
    columns: list[str] | None = None
    figure: Callable | None = None
    line: str | None = None

    @property
    def files(self) -> tuple:
        return next(files for files in PART_FILES.values() if files[0] == self.name)

    def write(self, folder) -> None:
        """Into a :class:`~huggingface_patch.files.ResultFolder`: the table, the summary, the figure."""
        from ..files import save_figure, write_csv, write_json

        _, table, figure = self.files
        if self.table is not None and table is not None:
            write_csv(self.table, folder.path(table), self.columns)
        write_json(self.summary, folder.path(f"saturation_{self.name}.json"))
        if self.figure is not None:
            save_figure(self.figure(), folder.path(figure))


@dataclass
class SaturationResult:
    """``parts``: subcommand -> :class:`SaturationPart`, in the order they ran; ``skipped``: subcommand -> why
    ``all`` could not compute it; ``record``: the folder's ``run.json`` (when read back)."""

    parts: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)
    record: dict = field(default_factory=dict)

    @property
    def summaries(self) -> dict:
        """File stem -> summary (``saturation_<stem>.json``)."""
        return {part.name: part.summary for part in self.parts.values()}

    @property
    def tables(self) -> dict:
        """File stem -> per-item rows, for the parts that have a table."""
        return {part.name: part.table for part in self.parts.values() if part.table is not None}

    def write(self, folder) -> None:
        from ..files import write_json

        for part in self.parts.values():
            part.write(folder)
        if self.skipped:
            write_json({"skipped": self.skipped}, folder.path(SKIPPED_FILE))

    def report(self, commands) -> str:
        """One line per subcommand of ``commands`` (its name first when there are several)."""
        lines = [(name, self.parts[name].line if name in self.parts else f"skipped: {self.skipped.get(name)}")
                 for name in commands]
        return "\n".join(f"{name}: {line}" if len(lines) > 1 else str(line) for name, line in lines)

    @classmethod
    def from_folder(cls, folder: str) -> "SaturationResult":
        """Every part this run wrote into ``folder`` (checked against its ``run.json``)."""
        from ..errors import RecordError
        from ..stored import StoredFolder

        stored = StoredFolder(folder)
        result = cls(record=stored.record)
        for command, (stem, table, _) in PART_FILES.items():
            if stored.has(f"saturation_{stem}.json"):
                written = table is not None and stored.has(table)
                result.parts[command] = SaturationPart(stem, stored.json(f"saturation_{stem}.json"),
                                                       stored.table(table) if written else None,
                                                       stored.columns(table) if written else None)
        if stored.has(SKIPPED_FILE):
            result.skipped = stored.json(SKIPPED_FILE)["skipped"]
        if not result.parts:
            raise RecordError(f"{folder} holds no saturation result (no saturation_<part>.json): give the folder "
                              "analysis.saturation wrote")
        return result
