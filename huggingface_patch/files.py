"""Result folders: an analysis's files are staged in a hidden folder and moved into place together with the
folder's record (``run.json``, :mod:`huggingface_patch.records`) once everything is written; an error on the
way leaves the output folder exactly as it was, and files of an earlier run that this run does not write again
are removed, so a folder never mixes two runs. The atomic writes themselves are :mod:`huggingface_patch.atomic`
(re-exported here).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile

from .atomic import (  # noqa: F401  (re-exported: the package's one place to write files)
    TEMPORARY_PREFIX,
    _json_safe,
    _temporary_prefix,
    atomic_path,
    csv_text,
    json_text,
    pyplot,
    remove_temporary_files,
    save_figure,
    save_object,
    save_tensor,
    temporary_files,
    write_csv,
    write_json,
    write_text,
)
from .errors import OutputFolderError


def check_output_dir(path: str, option: str = "--output-dir") -> str:
    """Refuse, before any work, an output folder that is a file, cannot be created or is not writable; returns
    it absolute, with ``~`` expanded (write there, not to the literal argument)."""
    path = os.path.abspath(os.path.expanduser(str(path)))
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputFolderError(f"{option} {path} is a file, not a folder: give another {option}")
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
        raise OutputFolderError(f"{option} {path} cannot be written (no write permission on {probe}): "
                                f"give another {option}")
    return path


def _owner(record: dict) -> tuple:
    """What a record's results belong to: the tool, the model (name and weights) and the inputs."""
    tool = record.get("tool") or record.get("settings", {}).get("tool")
    model = record.get("model") or record.get("settings", {}).get("model") or {}
    inputs = record.get("inputs") or {key: record.get("settings", {}).get(key) for key in ("corpus",)}
    return tool, model.get("name"), model.get("weights_fingerprint"), json.dumps(inputs, sort_keys=True, default=str)


def check_folder_owner(folder: str, record: dict) -> None:
    """Refuse a folder whose ``run.json`` belongs to another tool, another model or other inputs: writing there
    would remove that run's files (name it, and the fix). A rerun of the same tool on the same model and
    inputs replaces it."""
    from .records import read_record

    try:
        previous = read_record(folder)
    except OutputFolderError:
        raise
    except ValueError:  # a damaged record: nothing to protect that can be read
        return
    if previous is None:
        return
    old, new = _owner(previous), _owner(record)
    if old == new:
        return
    what = ("another tool" if old[0] != new[0] else "another model" if old[1:3] != new[1:3] else "other inputs")
    raise OutputFolderError(f"{folder} holds results of {old[0]} on {old[1] or 'no model'} ({what} than this run): "
                            "give another --output-dir (or remove its run.json to let this run replace them)")


class ResultFolder:
    """The outputs of one analysis run, committed to ``folder`` all at once with their record.

    Use as a context manager: :meth:`path` gives where to write each output (inside a hidden staging
    folder); on success every staged file is moved into place, files listed in the folder's previous
    record that were not written again are removed, and ``run.json`` (``record`` plus the file list) is
    written last. On an exception nothing in ``folder`` changes.
    """

    def __init__(self, folder: str, record: dict):
        self.folder = check_output_dir(folder)
        self.record = record
        self._staging: str | None = None
        self._files: list[str] = []
        check_folder_owner(self.folder, record)

    def __enter__(self) -> "ResultFolder":
        os.makedirs(self.folder, exist_ok=True)
        remove_temporary_files(self.folder)  # what a killed run of ours left (never another live process's)
        self._staging = tempfile.mkdtemp(prefix=_temporary_prefix("run-"), dir=self.folder)
        return self

    def path(self, name: str) -> str:
        """Where to write output ``name`` (a plain file name)."""
        if os.path.basename(name) != name or name == "run.json":
            raise ValueError(f"result file names are plain names other than run.json, got {name!r}")
        if name not in self._files:
            self._files.append(name)
        return os.path.join(self._staging, name)

    def __exit__(self, kind, value, traceback) -> None:
        try:
            if kind is None:
                self._commit()
        finally:
            shutil.rmtree(self._staging, ignore_errors=True)

    def _commit(self) -> None:
        from .records import RUN_RECORD, read_record, write_record

        written = [name for name in self._files if os.path.isfile(os.path.join(self._staging, name))]
        try:
            previous = read_record(self.folder) or {}
        except ValueError:  # a damaged record lists nothing that could be removed safely
            previous = {}
        record_path = os.path.join(self.folder, RUN_RECORD)
        with contextlib.suppress(FileNotFoundError):
            os.remove(record_path)  # until the new record is in place the folder holds no complete run
        for name in previous.get("files", []):
            if name not in written and os.path.basename(name) == name:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(self.folder, name))
        for name in written:
            os.replace(os.path.join(self._staging, name), os.path.join(self.folder, name))
        write_record(self.folder, dict(self.record, files=sorted(written)))
