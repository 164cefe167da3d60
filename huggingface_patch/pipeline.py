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

import logging
from dataclasses import dataclass

import torch

from .corpus import Piece
from .distributed import ProcessInfo
from .engine.options import DecompositionOptions
from .errors import InputError
from .files import save_object, save_tensor, write_text

# the names this module held before the output folder and the reader had their own modules
from .output_run import COMPARED, MODES, TOOL, OutputRun, run_id, run_settings  # noqa: F401
from .paper_files import (  # noqa: F401
    DELTALP_SUFFIXES,
    TENSOR_PREFIXES,
    corpus_name,
    piece_files,
    piece_identifier,
    piece_record_name,
    projection_files,
)
from .piece_reader import PieceFiles, foreign_pieces, load_tensor, read_piece, run_pieces  # noqa: F401

log = logging.getLogger(__name__)



def select_pieces(count: int, run: OutputRun, *, rank: int = 0, world_size: int = 1,
                  resume: bool = True) -> tuple[list[int], list[int]]:
    """Piece numbers ``(mine, todo)`` of this process: those with ``N % world_size == rank``, and of them the
    ones still to compute (all without ``resume``)."""
    mine = list(range(rank, count, world_size))
    if not resume:
        return mine, mine
    return mine, [n for n in mine if not run.complete(n)]


@torch.no_grad()
def compute_piece(model, piece: Piece, options: DecompositionOptions) -> dict[str, torch.Tensor]:
    """The paper's tensors of one piece: ``d`` ``(W, T, H)``, ``b`` and ``o`` ``(1, T, H)``, ``i`` ``(1, T)``,
    and ``identity_errors`` ``(L + 2,)`` (see ``decomposition_identity_errors``)."""
    device = next(model.parameters()).device
    ids = torch.tensor([piece.ids], device=device)
    out = model(ids, decomposition_options=options, output_hidden_states=True)
    return {"d": out.decomposition[0], "b": out.decomposition_bias, "o": out.hidden_states[-1], "i": ids,
            "identity_errors": out.decomposition_identity_errors}


def write_piece_tensors(run: OutputRun, number: int, tensors: dict[str, torch.Tensor]) -> dict:
    """``d_``, ``b_``, ``o_``, ``i_`` of a piece (each atomically); returns what its record adds."""
    identifier = run.identifier(number)
    for prefix, name in zip(TENSOR_PREFIXES, piece_files(identifier)):
        save_tensor(tensors[prefix].cpu(), run.path(name))
    return {"identity_error": float(tensors["identity_errors"].max())}


def write_piece_deltalp(run: OutputRun, number: int, model, tokenizer, piece: Piece,
                        options: DecompositionOptions) -> dict:
    """Streaming mode: ΔLP of one piece (bits) as a table and as the paper's text; returns what its record
    adds."""
    from .deltalp import paper_text, stream_deltalp

    identifier = run.identifier(number)
    ids = torch.tensor(piece.ids)
    result = stream_deltalp(model, ids, options)
    table = {"ids": ids, "lp": result.lp, "ablated": result.ablated, "delta": result.delta, "unit": "bits",
             "precision": options.precision}
    table_name, text_name = piece_files(identifier, "deltalp")
    save_object(table, run.path(table_name))
    tokens = tokenizer.convert_ids_to_tokens(piece.ids)
    write_text(paper_text(identifier, tokens, result, exclude_first=piece.offset == 1), run.path(text_name))
    return {"identity_error": result.identity_error}


def memory_plan(model, pieces: list[Piece], options: DecompositionOptions, streaming: bool) -> str:
    """The memory estimate of the longest piece (raises ``MemoryBudgetError`` if the budget cannot hold it)."""
    from .engine.memory import MemoryBudgetError, choose_block_size

    longest = max(len(piece.ids) for piece in pieces)
    est = model.decomposition_memory(1, longest, options.window, streaming=streaming, max_memory=options.max_memory)
    try:
        block = choose_block_size(est, options.max_memory)
    except MemoryBudgetError as exc:
        raise MemoryBudgetError(f"{exc} (longest piece: {longest} tokens)") from None
    return f"longest piece ({longest} tokens, window {options.window}): {est.describe(block)}"


@dataclass
class DecomposeSummary:
    """What :func:`decompose_corpus` did: piece numbers of this process, computed, and skipped."""

    total: int
    mine: list[int]
    computed: list[int]

    @property
    def skipped(self) -> int:
        return len(self.mine) - len(self.computed)


def _run_options(settings: dict, options: DecompositionOptions | None) -> DecompositionOptions:
    """``options`` checked against the run record's settings (the files must say what produced them)."""
    precision = settings.get("precision", "fp32")
    if options is None:
        return DecompositionOptions(window=settings["window"], precision=precision)
    if (options.window, options.precision) != (settings["window"], precision):
        raise InputError(f"the options (window {options.window}, precision {options.precision}) differ from the run "
                         f"settings (window {settings['window']}, precision {precision}): build both from one value")
    return options


def decompose_corpus(model, tokenizer, pieces: list[Piece], settings: dict, output_dir: str, *,
                     info: ProcessInfo | None = None, resume: bool = True, options: DecompositionOptions | None = None,
                     progress: bool = True) -> DecomposeSummary:
    """Decompose this process's pieces that are not complete yet and write their files (see the module).

    ``options``: block size, memory budget, MLP path (default: the defaults, with the window and precision
    of ``settings``); their window and precision must be those of ``settings``, which the run record keeps.

    Piece N belongs to the process of rank N % world_size; only rank 0 prepares the folder (temporary files,
    the earlier run, projection weights, ``run.json``) while the others wait.
    """
    info = info or ProcessInfo()
    options = _run_options(settings, options)
    run = OutputRun(output_dir, settings)
    run.check(resume)  # every rank: a refusal happens everywhere, before anyone waits
    if options.block_size is None:
        log.info(memory_plan(model, pieces, options, settings["mode"] == "deltalp"))
    if info.rank == 0:
        run.prepare(model, pieces, resume)
    info.wait_for_everyone()
    mine, todo = select_pieces(len(pieces), run, rank=info.rank, world_size=info.world_size, resume=resume)
    where = f" [rank {info.rank}/{info.world_size}]" if info.world_size > 1 else ""
    log.info("%d pieces in total; %d for this process%s; %d of them already complete (skipped), %d to compute",
             len(pieces), len(mine), where, len(mine) - len(todo), len(todo))
    from tqdm.auto import tqdm

    desc = f"batches (rank {info.rank}/{info.world_size})" if info.world_size > 1 else "batches"
    for number in tqdm(todo, desc=desc, unit="batch", disable=not progress or info.rank != 0):
        run.begin_piece(number)
        if run.mode == "deltalp":
            extra = write_piece_deltalp(run, number, model, tokenizer, pieces[number], options)
        else:
            extra = write_piece_tensors(run, number, compute_piece(model, pieces[number], options))
        run.finish_piece(number, pieces[number], extra)
    return DecomposeSummary(len(pieces), mine, todo)
