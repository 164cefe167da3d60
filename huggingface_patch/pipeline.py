"""The paper's two-script pipeline as library functions: decompose a corpus into an output folder, and read
a piece back, checked.

:func:`decompose_corpus` is ``run_decompose.py``: it cuts the corpus into pieces as the paper does and writes,
for piece ``N`` (``IDENTIFIER = {CORPUS}_{MODEL}_{N}``), the paper's files ``d_/b_/o_/i_{IDENTIFIER}.pt`` (or,
in streaming mode, ``deltalp_{IDENTIFIER}.pt`` and ``.txt``), then the piece's record ``r_{IDENTIFIER}.json``
(the file hashes; written last, so a piece is complete exactly when its record is there). The folder's
``run.json`` says what produced it (:mod:`huggingface_patch.records`): a rerun with the same settings
resumes (complete pieces are skipped), one with other settings is refused with the difference named, and
``resume=False`` first removes every file of the earlier run.

:func:`read_piece` is what ``representations_to_deltalp.py`` and ``analysis.deltalp --from-files`` read
with: the piece's files must match its record, the record the folder's run, and the tokenizer the one that
wrote them.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass

import torch

from .architectures import Readout, readout
from .corpus import Piece, StartToken
from .distributed import ProcessInfo
from .errors import OutputFolderError, RecordError
from .files import remove_temporary_files, save_object, save_tensor, write_json, write_text
from .records import (
    RUN_RECORD,
    describe_model,
    describe_tokenizer,
    differences,
    environment,
    file_sha256,
    read_record,
    tokenizer_fingerprint,
    write_record,
)

log = logging.getLogger(__name__)

TOOL = "run_decompose.py"
#: the paper's per-piece files in writing order
TENSOR_PREFIXES = ("d", "b", "o", "i")
#: streaming mode (``--deltalp``): the table, then the paper's text
DELTALP_SUFFIXES = ("pt", "txt")
MODES = ("tensors", "deltalp")
#: the settings a rerun must share with the folder's run to add to it
COMPARED = ("tool", "model.name", "model.config_fingerprint", "model.weights_fingerprint", "tokenizer.fingerprint",
            "corpus.name", "corpus.sha256", "window", "dtype", "conventions", "precision", "start.id", "mode",
            "context", "environment.huggingface_patch")


def corpus_name(path: str) -> str:
    """CORPUS in the output names: the input file name up to its first dot."""
    return os.path.basename(path).split(".")[0]


def piece_identifier(corpus: str, model_name: str, number: int) -> str:
    """``{CORPUS}_{MODEL}_{N}``: the global piece number, whichever process writes it."""
    return f"{corpus}_{model_name}_{number}"


def piece_files(identifier: str, mode: str = "tensors") -> list[str]:
    """The data files of a piece, in writing order."""
    if mode == "deltalp":
        return [f"deltalp_{identifier}.{suffix}" for suffix in DELTALP_SUFFIXES]
    return [f"{prefix}_{identifier}.pt" for prefix in TENSOR_PREFIXES]


def piece_record_name(identifier: str) -> str:
    """``r_{IDENTIFIER}.json``: the piece's record (written last)."""
    return f"r_{identifier}.json"


def projection_files(model_name: str) -> tuple[str, str]:
    """``({MODEL}_proj_weights.pt, {MODEL}_proj_bias.pt)``: the LM head weight ``(V, H)`` (the paper's file) and,
    for heads that have one (GPT-J), its bias ``(V,)``."""
    return f"{model_name}_proj_weights.pt", f"{model_name}_proj_bias.pt"


def _our_file(name: str) -> bool:
    """Whether ``name`` looks like a file this pipeline writes."""
    return bool(re.fullmatch(r"([dboi]_.+\.pt|r_.+\.json|deltalp_.+\.(pt|txt)|.+_proj_(weights|bias)\.pt|run\.json)",
                             name))


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


# ----------------------------------------------------------------------------------------------------------
# the output folder of a run


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
            foreign = sorted(name for name in os.listdir(self.folder) if _our_file(name))
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
            record = _read_json(self.path(piece_record_name(identifier)))
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


def _read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as handle:
        value = json.load(handle)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


# ----------------------------------------------------------------------------------------------------------
# decomposing a corpus


def select_pieces(count: int, run: OutputRun, *, rank: int = 0, world_size: int = 1,
                  resume: bool = True) -> tuple[list[int], list[int]]:
    """Piece numbers ``(mine, todo)`` of this process: those with ``N % world_size == rank``, and of them the
    ones still to compute (all without ``resume``)."""
    mine = list(range(rank, count, world_size))
    if not resume:
        return mine, mine
    return mine, [n for n in mine if not run.complete(n)]


@torch.no_grad()
def compute_piece(model, piece: Piece, window: int, *, block_size=None, max_memory=None,
                  mlp_path: str = "auto", precision: str = "fp32") -> dict[str, torch.Tensor]:
    """The paper's tensors of one piece: ``d`` ``(W, T, H)``, ``b`` and ``o`` ``(1, T, H)``, ``i`` ``(1, T)``,
    and ``identity_errors`` ``(L + 2,)`` (see ``decomposition_identity_errors``)."""
    device = next(model.parameters()).device
    ids = torch.tensor([piece.ids], device=device)
    out = model(ids, decomposition_window=window, decomposition_block_size=block_size, output_hidden_states=True,
                decomposition_max_memory=max_memory, decomposition_mlp_path=mlp_path,
                decomposition_precision=precision)
    return {"d": out.decomposition[0], "b": out.decomposition_bias, "o": out.hidden_states[-1], "i": ids,
            "identity_errors": out.decomposition_identity_errors}


def write_piece_tensors(run: OutputRun, number: int, tensors: dict[str, torch.Tensor]) -> dict:
    """``d_``, ``b_``, ``o_``, ``i_`` of a piece (each atomically); returns what its record adds."""
    identifier = run.identifier(number)
    for prefix, name in zip(TENSOR_PREFIXES, piece_files(identifier)):
        save_tensor(tensors[prefix].cpu(), run.path(name))
    return {"identity_error": float(tensors["identity_errors"].max())}


def write_piece_deltalp(run: OutputRun, number: int, model, tokenizer, piece: Piece, window: int, *,
                        block_size=None, max_memory=None, mlp_path: str = "auto", precision: str = "fp32") -> dict:
    """Streaming mode: ΔLP of one piece (bits) as a table and as the paper's text; returns what its record
    adds."""
    from .deltalp import paper_text, stream_deltalp

    identifier = run.identifier(number)
    ids = torch.tensor(piece.ids)
    result = stream_deltalp(model, ids, window, block_size=block_size, max_memory=max_memory, mlp_path=mlp_path,
                            precision=precision)
    table = {"ids": ids, "lp": result.lp, "ablated": result.ablated, "delta": result.delta, "unit": "bits",
             "precision": precision}
    table_name, text_name = piece_files(identifier, "deltalp")
    save_object(table, run.path(table_name))
    tokens = tokenizer.convert_ids_to_tokens(piece.ids)
    write_text(paper_text(identifier, tokens, result, exclude_first=piece.offset == 1), run.path(text_name))
    return {"identity_error": result.identity_error}


def memory_plan(model, pieces: list[Piece], window: int, max_memory: int | None, streaming: bool) -> str:
    """The memory estimate of the longest piece (raises ``MemoryBudgetError`` if the budget cannot hold it)."""
    from .engine.memory import MemoryBudgetError, choose_block_size

    longest = max(len(piece.ids) for piece in pieces)
    est = model.decomposition_memory(1, longest, window, streaming=streaming, max_memory=max_memory)
    try:
        block = choose_block_size(est, max_memory)
    except MemoryBudgetError as exc:
        raise MemoryBudgetError(f"{exc} (longest piece: {longest} tokens)") from None
    return f"longest piece ({longest} tokens, window {window}): {est.describe(block)}"


@dataclass
class DecomposeSummary:
    """What :func:`decompose_corpus` did: piece numbers of this process, computed, and skipped."""

    total: int
    mine: list[int]
    computed: list[int]

    @property
    def skipped(self) -> int:
        return len(self.mine) - len(self.computed)


def decompose_corpus(model, tokenizer, pieces: list[Piece], settings: dict, output_dir: str, *,
                     info: ProcessInfo | None = None, resume: bool = True, block_size=None, max_memory=None,
                     mlp_path: str = "auto", progress: bool = True) -> DecomposeSummary:
    """Decompose this process's pieces that are not complete yet and write their files (see the module).

    Piece N belongs to the process of rank N % world_size; only rank 0 prepares the folder (temporary files,
    the earlier run, projection weights, ``run.json``) while the others wait.
    """
    info = info or ProcessInfo()
    run = OutputRun(output_dir, settings)
    run.check(resume)  # every rank: a refusal happens everywhere, before anyone waits
    if block_size is None:
        log.info(memory_plan(model, pieces, settings["window"], max_memory, settings["mode"] == "deltalp"))
    if info.rank == 0:
        run.prepare(model, pieces, resume)
    info.wait_for_everyone()
    mine, todo = select_pieces(len(pieces), run, rank=info.rank, world_size=info.world_size, resume=resume)
    where = f" [rank {info.rank}/{info.world_size}]" if info.world_size > 1 else ""
    log.info("%d pieces in total; %d for this process%s; %d of them already complete (skipped), %d to compute",
             len(pieces), len(mine), where, len(mine) - len(todo), len(todo))
    from tqdm.auto import tqdm

    desc = f"batches (rank {info.rank}/{info.world_size})" if info.world_size > 1 else "batches"
    options = dict(block_size=block_size, max_memory=max_memory, mlp_path=mlp_path,
                   precision=settings.get("precision", "fp32"))
    for number in tqdm(todo, desc=desc, unit="batch", disable=not progress or info.rank != 0):
        run.begin_piece(number)
        if run.mode == "deltalp":
            extra = write_piece_deltalp(run, number, model, tokenizer, pieces[number], settings["window"], **options)
        else:
            extra = write_piece_tensors(run, number, compute_piece(model, pieces[number], settings["window"],
                                                                   **options))
        run.finish_piece(number, pieces[number], extra)
    return DecomposeSummary(len(pieces), mine, todo)


# ----------------------------------------------------------------------------------------------------------
# reading a piece back


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
            piece_record = _read_json(os.path.join(output_dir, piece_record_name(identifier)))
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
