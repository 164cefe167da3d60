"""The output folder of one ``run_decompose.py`` run: its settings (``run.json``, see
:mod:`huggingface_patch.records`), which pieces are complete (a piece is complete exactly when its record
``r_{IDENTIFIER}.json`` is there and matches its files), and resuming or replacing an earlier run."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os

import torch

from .architectures import readout
from .corpus import Piece, StartToken
from .errors import OutputFolderError, RecordError
from .files import remove_temporary_files, save_tensor, write_json
from .paper_files import (
    corpus_name,
    is_pipeline_file,
    piece_files,
    piece_identifier,
    piece_record_name,
    projection_files,
)
from .records import (
    RUN_RECORD,
    describe_model,
    describe_tokenizer,
    differences,
    environment,
    file_sha256,
    read_record,
    write_record,
)

log = logging.getLogger(__name__)

TOOL = "run_decompose.py"
MODES = ("tensors", "deltalp")
#: the settings a rerun must share with the folder's run to add to it
COMPARED = ("tool", "model.name", "model.config_fingerprint", "model.weights_fingerprint", "tokenizer.fingerprint",
            "corpus.name", "corpus.sha256", "window", "dtype", "conventions", "precision", "start.id", "mode",
            "context", "environment.huggingface_patch")




def run_id(settings: dict) -> str:
    """A short hash of the compared settings: every piece record names the run it belongs to."""
    values = {}
    for key in COMPARED:
        value = settings
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        values[key] = value
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_settings(model, tokenizer, model_name: str, model_argument: str, corpus_path: str, corpus_text: str,
                 window: int, *, start: StartToken, context: int, mode: str = "tensors", conventions: str = "default",
                 precision: str = "fp32") -> dict:
    """The settings (and their provenance) of one ``run_decompose.py`` run."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    head = readout(model)
    return {
        "tool": TOOL,
        "environment": environment(),
        "model": describe_model(model, model_name, model_argument),
        "tokenizer": describe_tokenizer(tokenizer),
        "corpus": {"file": os.path.basename(corpus_path), "name": corpus_name(corpus_path),
                   "sha256": hashlib.sha256(corpus_text.encode("utf-8")).hexdigest()},
        "window": int(window),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "conventions": conventions,
        "precision": precision,
        "start": start.describe(),
        "mode": mode,
        "context": int(context),
        "readout": head.describe(),
    }




class OutputRun:
    """An output folder of ``run_decompose.py`` for one run's ``settings``."""

    def __init__(self, folder: str, settings: dict):
        self.folder = folder
        self.settings = settings
        self.run_id = run_id(settings)
        self.model_name = settings["model"]["name"]
        self.corpus = settings["corpus"]["name"]
        self.mode = settings["mode"]

    def identifier(self, number: int) -> str:
        return piece_identifier(self.corpus, self.model_name, number)

    def path(self, name: str) -> str:
        return os.path.join(self.folder, name)

    # -- start-up -------------------------------------------------------------------------------------------

    def check(self, resume: bool) -> None:
        """Refuse a folder that holds another run (or unrecorded result files) unless ``resume`` is False."""
        if not resume or not os.path.isdir(self.folder):
            return
        previous = read_record(self.folder)
        if previous is None:
            foreign = sorted(name for name in os.listdir(self.folder) if is_pipeline_file(name))
            if foreign:
                raise OutputFolderError(
                    f"{self.folder} holds result files without a run record ({foreign[0]}, ...): they were not written "
                    "by this version of run_decompose.py, so they cannot be resumed; use another --output-dir, or "
                    "--no-resume to replace them")
            return
        found = differences(previous.get("settings", {}), self.settings, COMPARED)
        if found:
            raise OutputFolderError(
                f"{self.folder} holds another run: {found[0]}{' (and more)' if len(found) > 1 else ''}; use another "
                "--output-dir, or --no-resume to replace it")

    def clear(self, pieces: int = 0) -> int:
        """Remove the files of an earlier run (``resume=False``): those its record lists, and the files this run
        is about to write (``pieces`` of them) — never a file of someone else's that merely looks like an output
        (``b_baseline.pt``). A damaged record counts as none. Returns how many."""
        if not os.path.isdir(self.folder):
            return 0
        try:
            previous = read_record(self.folder) or {}
        except RecordError:
            previous = {}
        identifiers = list(previous.get("pieces", [])) + [self.identifier(n) for n in range(pieces)]
        names = set(previous.get("files", [])) | {piece_record_name(i) for i in identifiers}
        for identifier in identifiers:
            for mode in MODES:
                names.update(piece_files(identifier, mode))
            names.add(f"{identifier}.deltalp")  # what the paper's second script is usually redirected into
        names.update(projection_files(self.model_name))
        names.add(RUN_RECORD)
        removed = 0
        for name in names:
            if os.path.basename(name) != name:
                continue
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path(name))
                removed += 1
        return removed

    def prepare(self, model, pieces: list[Piece], resume: bool) -> None:
        """Rank 0's start-up: clean temporary files, replace an earlier run (``resume=False``), write the
        projection weights and the run record (before any piece)."""
        os.makedirs(self.folder, exist_ok=True)
        cleaned = remove_temporary_files(self.folder)
        if cleaned:
            log.info("removed %d temporary files left by an interrupted run", cleaned)
        if not resume:
            removed = self.clear(len(pieces))
            if removed:
                log.info("--no-resume: removed %d files of the earlier run", removed)
        previous = read_record(self.folder)
        record = {"settings": self.settings, "run_id": self.run_id,
                  "pieces": [self.identifier(n) for n in range(len(pieces))], "projection": {}, "files": []}
        # the record first: from here on the folder belongs to this run, whatever is killed next
        write_record(self.folder, dict(record, projection=(previous or {}).get("projection", {})))
        if self.mode == "tensors":
            head = readout(model)
            weight_name, bias_name = projection_files(self.model_name)
            files = {weight_name: self._keep_or_write(weight_name, head.weight, previous)}
            if head.bias is not None:
                files[bias_name] = self._keep_or_write(bias_name, head.bias, previous)
            write_record(self.folder, dict(record, projection=files, files=sorted(files)))

    def _keep_or_write(self, name: str, tensor: torch.Tensor, previous: dict | None) -> str:
        path = self.path(name)
        known = (previous or {}).get("projection", {}).get(name)
        if known is not None and os.path.isfile(path) and file_sha256(path) == known:
            return known
        save_tensor(tensor, path)
        return file_sha256(path)

    # -- pieces ---------------------------------------------------------------------------------------------

    def complete(self, number: int) -> bool:
        """The piece's record is there, names this run, and every file it lists has the recorded hash."""
        identifier = self.identifier(number)
        try:
            record = read_json_object(self.path(piece_record_name(identifier)))
        except (OSError, ValueError):
            return False
        if record.get("run_id") != self.run_id:
            return False
        return all(os.path.isfile(self.path(name)) and file_sha256(self.path(name)) == digest
                   for name, digest in record.get("files", {}).items())

    def begin_piece(self, number: int) -> None:
        """Drop the piece's record (an interrupted rewrite never looks complete)."""
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path(piece_record_name(self.identifier(number))))

    def finish_piece(self, number: int, piece: Piece, extra: dict | None = None) -> None:
        """Write the piece's record, last (``extra``: what the computation adds, e.g. its identity error)."""
        identifier = self.identifier(number)
        names = piece_files(identifier, self.mode)
        write_json({"run_id": self.run_id, "identifier": identifier, "number": number, "document": piece.document,
                    "start": piece.start, "tokens": len(piece.ids), **(extra or {}),
                    "files": {name: file_sha256(self.path(name)) for name in names}},
                   self.path(piece_record_name(identifier)))

    def complete_count(self, total: int) -> int:
        return sum(os.path.isfile(self.path(piece_record_name(self.identifier(n)))) for n in range(total))


def read_json_object(path: str) -> dict:
    """A JSON file that must hold an object (a piece record); ``ValueError`` otherwise."""
    with open(path, encoding="utf-8") as handle:
        value = json.load(handle)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value
