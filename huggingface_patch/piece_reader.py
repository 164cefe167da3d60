"""Reading a piece of a ``run_decompose.py`` folder back, checked: what ``representations_to_deltalp.py`` and
``analysis.deltalp --from-files`` read with. The piece's files must match its record, the record the folder's
run, and the tokenizer the one that wrote them; foreign (unrecorded) folders are read only when allowed."""

from __future__ import annotations

import glob
import logging
import os
from dataclasses import dataclass

import torch

from .architectures import Readout
from .errors import RecordError
from .output_run import TOOL, read_json_object
from .paper_files import piece_record_name, projection_files
from .records import (
    RUN_RECORD,
    file_sha256,
    read_record,
    tokenizer_fingerprint,
)

log = logging.getLogger(__name__)



@dataclass
class PieceFiles:
    """One piece read back: ``ids`` ``(T,)``, ``decomposition`` ``(W, T, H)``, ``final_state`` ``(T, H)``,
    ``bias`` ``(T, H)`` (None for foreign files without it), the ``readout`` (weight, bias, softcapping), the
    start token used (``start_token``: True when ``ids[0]`` is one) and the folder's run record (None for
    unrecorded files)."""

    identifier: str
    ids: torch.Tensor
    decomposition: torch.Tensor
    final_state: torch.Tensor
    bias: torch.Tensor | None
    readout: Readout
    start_token: bool
    record: dict | None


def load_tensor(path: str, what: str) -> torch.Tensor:
    """A tensor file, with a one-line :class:`RecordError` for a missing, empty, foreign or truncated file."""
    if not os.path.isfile(path):
        raise RecordError(f"missing {what} file {path}: run run_decompose.py first (same MODEL and --output-dir)")
    if os.path.getsize(path) == 0:
        raise RecordError(f"{what} file {path} is empty: rerun run_decompose.py")
    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, random bytes, pickled objects: all one message
        kind = "truncated" if "unexpected" in str(exc).lower() or "invalid" in str(exc).lower() else "not readable"
        raise RecordError(f"{what} file {path} is {kind} ({exc.__class__.__name__}): it is not a complete tensor file "
                          "written by run_decompose.py; rerun run_decompose.py") from None
    if not isinstance(value, torch.Tensor):
        raise RecordError(f"{what} file {path} holds a {type(value).__name__}, not a tensor: it was not written by "
                          "run_decompose.py")
    return value


def _decompose_record(output_dir: str) -> dict | None:
    """The folder's ``run.json`` checked to be a ``run_decompose.py`` record with the expected types (None when
    there is none): an analysis folder or a hand-edited record gets a one-line :class:`RecordError`."""
    record = read_record(output_dir)
    if record is None:
        return None
    settings = record.get("settings") if isinstance(record.get("settings"), dict) else {}
    tool = record.get("tool") or settings.get("tool")
    if tool != TOOL:
        raise RecordError(f"{output_dir} holds results of {tool or 'an unknown tool'}, not of {TOOL}: give the "
                          "--output-dir run_decompose.py wrote")
    expected = {"pieces": list, "projection": dict, "run_id": str}
    wrong = [key for key, kind in expected.items() if not isinstance(record.get(key), kind)]
    wrong += [f"settings.{key}" for key, kind in {"model": dict, "tokenizer": dict, "readout": dict, "start": dict,
                                                    "mode": str}.items() if not isinstance(settings.get(key), kind)]
    if wrong or not all(isinstance(p, str) for p in record["pieces"]):
        raise RecordError(f"{output_dir}/{RUN_RECORD} is damaged or was edited ({(wrong or ['pieces'])[0]} has the "
                          "wrong type): rerun run_decompose.py with --no-resume")
    return record


def run_pieces(output_dir: str) -> list[str]:
    """The identifiers of the folder's run (from ``run.json``), in order."""
    record = _decompose_record(output_dir)
    if record is None:
        if foreign_pieces(output_dir):
            _check_unrecorded(output_dir, False)
        raise RecordError(f"{output_dir} has no run record ({RUN_RECORD}): run run_decompose.py into it first")
    return list(record.get("pieces", []))


def _check_unrecorded(output_dir: str, allow_unrecorded: bool) -> None:
    if not allow_unrecorded:
        raise RecordError(f"{output_dir} has no run record ({RUN_RECORD}): these files were not written by this "
                          "package's run_decompose.py, so nothing checks that they belong together; pass "
                          "--allow-unrecorded to read them anyway")


def _check_recorded(output_dir: str, record: dict, identifier: str, model_name: str, tokenizer) -> None:
    """The piece belongs to the folder's run, was written with this model and tokenizer, and its files and
    the projection files are the ones its record hashes."""
    settings = record.get("settings", {})
    if settings.get("mode") == "deltalp":
        raise RecordError(f"{output_dir} holds a streaming run (--deltalp): its ΔLP text is already in "
                          f"deltalp_{identifier}.txt")
    recorded_name = settings.get("model", {}).get("name")
    if recorded_name != model_name:
        raise RecordError(f"{output_dir} was written with MODEL {recorded_name!r}, not {model_name!r}: give the "
                          "same MODEL as to run_decompose.py")
    if tokenizer is not None and tokenizer_fingerprint(tokenizer) != settings.get("tokenizer",
                                                                                  {}).get("fingerprint"):
        raise RecordError(f"the tokenizer of MODEL {model_name!r} is not the one that wrote {output_dir}: its "
                          "tokens would be wrong; give the model run_decompose.py used")
    if identifier not in record.get("pieces", []):
        raise RecordError(f"{identifier} is not a piece of the run in {output_dir} (pieces: "
                          f"{', '.join(record.get('pieces', [])[:3])}, ...)")
    try:
        piece_record = read_json_object(os.path.join(output_dir, piece_record_name(identifier)))
    except (OSError, ValueError):
        raise RecordError(f"piece {identifier} in {output_dir} is incomplete (no record): rerun run_decompose.py "
                          "with the same arguments to finish it") from None
    if piece_record.get("run_id") != record.get("run_id"):
        raise RecordError(f"piece {identifier} in {output_dir} comes from another run: rerun run_decompose.py "
                          "with --no-resume")
    expected = dict(piece_record.get("files", {}))
    expected.update(record.get("projection", {}))
    for name, digest in expected.items():
        path = os.path.join(output_dir, name)
        if os.path.isdir(path):
            raise RecordError(f"{path} is a folder where a file of piece {identifier} should be: remove it and "
                              "rerun run_decompose.py with the same arguments")
        if not os.path.isfile(path):
            raise RecordError(f"missing file {path} of piece {identifier}: rerun run_decompose.py")
        if file_sha256(path) != digest:
            raise RecordError(f"{path} is not the file run_decompose.py wrote for {identifier} (it was changed "
                              "or comes from another run): rerun run_decompose.py")


def read_piece(output_dir: str, identifier: str, model_name: str, tokenizer=None, *,
               allow_unrecorded: bool = False) -> PieceFiles:
    """Read and check one piece (see the module); ``tokenizer``: the one the tokens will be shown with, checked
    against the run's. Unrecorded files (the paper's own outputs) only with ``allow_unrecorded``, and then
    checked for shapes only."""
    record = _decompose_record(output_dir)
    weight_name, bias_name = projection_files(model_name)
    if record is None:
        _check_unrecorded(output_dir, allow_unrecorded)
    else:
        _check_recorded(output_dir, record, identifier, model_name, tokenizer)
    proj = load_tensor(os.path.join(output_dir, weight_name), "projection-weights")
    ids = load_tensor(os.path.join(output_dir, f"i_{identifier}.pt"), "input-ids")
    dec = load_tensor(os.path.join(output_dir, f"d_{identifier}.pt"), "decomposition")
    out = load_tensor(os.path.join(output_dir, f"o_{identifier}.pt"), "final-state")
    bias_path = os.path.join(output_dir, f"b_{identifier}.pt")
    bias = load_tensor(bias_path, "bias") if record is not None or os.path.isfile(bias_path) else None
    head_bias = None
    softcap = None
    start_token = True
    if record is not None:
        settings = record["settings"]
        if settings.get("readout", {}).get("bias"):
            head_bias = load_tensor(os.path.join(output_dir, bias_name), "projection-bias")
        softcap = settings.get("readout", {}).get("final_logit_softcapping")
        start_token = settings.get("start", {}).get("id") is not None
    _check_shapes(identifier, model_name, ids, dec, out, proj, bias)
    return PieceFiles(identifier, ids[0], dec, out[0], None if bias is None else bias[0],
                      Readout(proj, head_bias, softcap), start_token, record)


def _check_shapes(identifier, model_name, ids, dec, out, proj, bias) -> None:
    problems = []
    if ids.dim() != 2 or ids.shape[0] != 1 or ids.dtype not in (torch.int64, torch.int32):
        problems.append(f"i_ must be integer ids of shape (1, T), got {tuple(ids.shape)} {ids.dtype}")
    if dec.dim() != 3:
        problems.append(f"d_ must have shape (W, T, H), got {tuple(dec.shape)}")
    if out.dim() != 3 or out.shape[0] != 1:
        problems.append(f"o_ must have shape (1, T, H), got {tuple(out.shape)}")
    if proj.dim() != 2:
        problems.append(f"proj_weights must have shape (V, H), got {tuple(proj.shape)}")
    if problems:
        raise RecordError(f"files of {identifier} are malformed: {problems[0]}")
    length = ids.shape[1]
    if dec.shape[1] != length or out.shape[1] != length or (bias is not None and bias.shape[-2] != length):
        raise RecordError(f"files of {identifier} do not belong together: i_ has T={length}, d_ has T={dec.shape[1]}, "
                          f"o_ has T={out.shape[1]}")
    if not (dec.shape[2] == out.shape[2] == proj.shape[1]):
        raise RecordError(f"files of {identifier} do not belong together: hidden sizes d_={dec.shape[2]}, "
                          f"o_={out.shape[2]}, {model_name}_proj_weights={proj.shape[1]}")
    if dec.shape[0] < 1 or dec.shape[0] > length:
        raise RecordError(f"d_{identifier}.pt has {dec.shape[0]} window rows for {length} tokens")
    if length < 2:
        raise RecordError(f"batch {identifier} has fewer than 2 tokens: nothing to predict")
    if int(ids.max()) >= proj.shape[0] or int(ids.min()) < 0:
        raise RecordError(f"i_{identifier}.pt has token ids outside the vocabulary of {model_name}_proj_weights.pt")


def foreign_pieces(output_dir: str) -> list[str]:
    """Identifiers of ``i_*.pt`` files in a folder without a run record (the paper's own outputs), in piece
    order (``{CORPUS}_{MODEL}_{N}`` sorted by name, then ``N``)."""
    def order(identifier: str):
        head, _, tail = identifier.rpartition("_")
        return (head, int(tail)) if tail.isdigit() else (identifier, -1)

    return sorted((os.path.basename(p)[2:-3] for p in glob.glob(os.path.join(output_dir, "i_*.pt"))), key=order)
