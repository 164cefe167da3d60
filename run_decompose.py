"""Decompose a corpus with a causal LM and write the paper's files (Oh & Schuler 2023, ``main.py``).

    python run_decompose.py INPUT_FILE MODEL DECOMPOSITION_LENGTH [--output-dir output] [--device cpu] [--dtype float32]

INPUT_FILE is a sentitems file (``!ARTICLE`` before each article). MODEL is a hub id, a local folder, a
``.gguf`` file, or ``smollm2-135m``. For each model-sized piece N of the corpus it writes, in the output
folder: ``i_{CORPUS}_{MODEL}_{N}.pt`` (input ids ``(1, T)``, BOS first), ``d_…`` (decomposition
``(W, T, H)``, relative layout), ``o_…`` (final hidden state ``(1, T, H)``), ``b_…`` (bias term ``(1, T, H)``),
and ``{MODEL}_proj_weights.pt`` (LM head weight ``(V, H)``).

With ``--deltalp`` (streaming mode) no d_ files are written: ΔLP is computed block by block (the
``(W, T, H)`` decomposition is never held, so any window fits in bounded memory) and each piece gets
``deltalp_{CORPUS}_{MODEL}_{N}.pt`` (a dict: ``ids`` ``(T,)``, ``lp`` ``(T-1,)``, ``ablated`` and ``delta``
``(W, T-1)`` in bits, relative layout, NaN where the source would precede the text) and
``deltalp_{…}.txt`` (exactly what ``representations_to_deltalp.py`` prints), the .txt last.
``--max-memory 4GB`` chooses the block size from a memory budget and refuses, before any work, a run
that cannot fit; the estimate for the longest piece is logged first.

Launched by ``torchrun --nproc_per_node K run_decompose.py …`` or ``accelerate launch run_decompose.py …``,
piece N goes to process N % K and each process writes only its own pieces' files (same names as a
single-process run). A rerun into the same folder skips the pieces whose four files all exist
(``--no-resume`` recomputes everything). See ``docs/scale_out.md``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass

import torch

from huggingface_patch.cli import UsageError, run_cli, save_tensor
from huggingface_patch.corpus import (
    CorpusError,
    bos_token_id,
    context_size,
    read_sentitems,
    split_article,
    tokenize_articles,
)

log = logging.getLogger("run_decompose")

#: the per-piece files in the order they are written; ``i_`` last, so its presence marks a complete piece
PIECE_PREFIXES = ("d", "b", "o", "i")
#: streaming mode (--deltalp): the table, then the text (last: marks a complete piece)
DELTALP_FILES = ("pt", "txt")


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    parser = argparse.ArgumentParser(prog="run_decompose.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("input_file", metavar="INPUT_FILE",
                        help="sentitems corpus (lines '!ARTICLE' separate articles)")
    parser.add_argument("model", metavar="MODEL", help="hub id, local folder, .gguf file, or smollm2-135m")
    parser.add_argument("decomposition_length", metavar="DECOMPOSITION_LENGTH",
                        help="window: number of most recent source tokens kept per target (positive integer)")
    parser.add_argument("--output-dir", default="output", help="folder for the output files (default: output)")
    parser.add_argument("--device", default=None,
                        help="torch device, e.g. cpu or cuda (default: cpu; under torchrun/accelerate launch with "
                             "CUDA available: each process's own GPU)")
    parser.add_argument("--dtype", default="float32", help="model dtype: float32 (default), float64, bfloat16, float16")
    parser.add_argument("--block-size", type=int, default=None, help="sources per block (default: chosen from memory)")
    parser.add_argument("--max-memory", default=None,
                        help="memory budget, e.g. 4GB or 3.5GiB: chooses the block size; a run that cannot fit is "
                             "refused before it starts (default: 512 MiB per block)")
    parser.add_argument("--deltalp", action="store_true",
                        help="streaming mode: write each piece's ΔLP table and text instead of the d_/b_/o_/i_ files")
    parser.add_argument("--mlp-path", default="auto", choices=("auto", "dense", "sparse"),
                        help="MLP path: auto (default: the sparse ReLU path where it pays off), dense or sparse")
    parser.add_argument("--no-resume", dest="resume", action="store_false",
                        help="recompute every piece (default: skip pieces whose d_/b_/o_/i_ files all exist)")
    return parser


def parse_window(text: str) -> int:
    """DECOMPOSITION_LENGTH as a positive integer (else a UsageError)."""
    try:
        window = int(text)
    except ValueError:
        raise UsageError(f"DECOMPOSITION_LENGTH must be a positive integer, got {text!r}") from None
    if window <= 0:
        raise UsageError(f"DECOMPOSITION_LENGTH must be a positive integer, got {window}")
    return window


def corpus_name(path: str) -> str:
    """CORPUS in the output names: the input file name up to its first dot."""
    return os.path.basename(path).split(".")[0]


def prepare_pieces(articles: list[str], tokenizer, config):
    """Tokenize and cut the articles exactly as the paper does; returns the list of pieces."""
    try:
        bos = bos_token_id(config, tokenizer)
        context = context_size(config)
    except CorpusError as exc:
        raise UsageError(str(exc)) from None
    pieces = []
    for index, ids in enumerate(tokenize_articles(tokenizer, articles)):
        pieces.extend(split_article(ids, bos, context, document=index))
    return pieces


# ----------------------------------------------------------------------------------------------------------
# processes (torchrun / accelerate launch)


@dataclass(frozen=True)
class ProcessInfo:
    """The place of this process in a multi-process launch (rank 0 of 1 for a plain run)."""

    rank: int = 0
    world_size: int = 1
    device: str | None = None  # the device to load the model on (None: leave it where it is loaded, CPU)
    state: object = None  # the ``accelerate.PartialState`` of a distributed launch, else None


def launched_world_size() -> int:
    """WORLD_SIZE as set by torchrun / accelerate launch (1 when not launched by them)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def process_info(device: str | None = None) -> ProcessInfo:
    """Rank, world size and device of this process.

    Only a distributed launch (``WORLD_SIZE`` > 1) creates an ``accelerate.PartialState`` (and with it the
    process group); a plain run needs none. On CPU (``--device cpu``, or no CUDA) the state is made with
    ``cpu=True`` (gloo); otherwise each process gets its own GPU (``PartialState().device``) when
    ``--device`` is not given or is a bare ``cuda``.
    """
    if launched_world_size() <= 1:
        return ProcessInfo(device=device)
    from accelerate import PartialState

    on_cpu = (device is not None and torch.device(device).type == "cpu") or (
        device is None and not torch.cuda.is_available())
    state = PartialState(cpu=True) if on_cpu else PartialState()
    if not on_cpu and (device is None or device == "cuda"):
        device = str(state.device)
    return ProcessInfo(rank=state.process_index, world_size=state.num_processes, device=device, state=state)


def finish_process(info: ProcessInfo) -> None:
    """Tear down the process group of a distributed launch (nothing for a plain run)."""
    if info.state is not None:
        info.state.destroy_process_group()


# ----------------------------------------------------------------------------------------------------------
# pieces and their files


def piece_identifier(corpus: str, model_name: str, number: int) -> str:
    """``{CORPUS}_{MODEL}_{N}``: the global piece number, whichever process writes it."""
    return f"{corpus}_{model_name}_{number}"


def piece_paths(output_dir: str, identifier: str, deltalp: bool = False) -> dict[str, str]:
    """The files of a piece, in writing order (the last one marks a complete piece): ``d_/b_/o_/i_``, or
    ``deltalp_….pt`` and ``deltalp_….txt`` in streaming mode."""
    if deltalp:
        return {ext: os.path.join(output_dir, f"deltalp_{identifier}.{ext}") for ext in DELTALP_FILES}
    return {prefix: os.path.join(output_dir, f"{prefix}_{identifier}.pt") for prefix in PIECE_PREFIXES}


def piece_complete(output_dir: str, identifier: str, deltalp: bool = False) -> bool:
    """All files exist (each is renamed into place only once fully written; the marker is written last)."""
    return all(os.path.isfile(path) for path in piece_paths(output_dir, identifier, deltalp).values())


def stale_temporary_files(output_dir: str, names) -> list[str]:
    """Leftover ``.tmp-<random>-<name>`` files of ``huggingface_patch.cli.atomic_path`` for the given names."""
    names = set(names)
    found = []
    try:
        entries = os.listdir(output_dir)
    except FileNotFoundError:
        return found
    for entry in entries:
        if entry.startswith(".tmp-"):
            # mkstemp's random part has no '-', so the file's own name is everything after the second '-'
            _, _, name = entry[len(".tmp-"):].partition("-")
            if name in names:
                found.append(os.path.join(output_dir, entry))
    return found


def clear_piece(output_dir: str, identifier: str, deltalp: bool = False) -> None:
    """Prepare a piece for (re)computing.

    Drops its ``i_`` marker (so an interrupted rewrite never looks complete) and any temporary files an
    interrupted run left for it. Its other files are overwritten by the rename.
    """
    paths = piece_paths(output_dir, identifier, deltalp)
    names = [os.path.basename(path) for path in paths.values()]
    marker = list(paths.values())[-1]
    for path in [marker] + stale_temporary_files(output_dir, names):
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


def select_pieces(count: int, output_dir: str, corpus: str, model_name: str, *, rank: int = 0, world_size: int = 1,
                  resume: bool = True, deltalp: bool = False) -> tuple[list[int], list[int]]:
    """Piece numbers ``(mine, todo)`` of this process.

    ``mine``: those with N % world_size == rank; ``todo``: those of them still to compute (all of them
    without ``resume``, else the ones whose four files are not all there).
    """
    mine = list(range(rank, count, world_size))
    if not resume:
        return mine, mine
    todo = [n for n in mine if not piece_complete(output_dir, piece_identifier(corpus, model_name, n), deltalp)]
    return mine, todo


def decompose_piece(model, piece, number: int, *, corpus: str, model_name: str, window: int, output_dir: str,
                    block_size: int | None = None, max_memory: int | None = None, mlp_path: str = "auto",
                    deltalp: bool = False, tokenizer=None) -> dict[str, str]:
    """Run the model on one piece and write its files (d_, b_, o_, then i_; or the ΔLP table and text).
    Returns their paths."""
    identifier = piece_identifier(corpus, model_name, number)
    paths = piece_paths(output_dir, identifier, deltalp)
    clear_piece(output_dir, identifier, deltalp)
    device = next(model.parameters()).device
    ids = torch.tensor([piece.ids], device=device)
    if deltalp:
        return write_piece_deltalp(model, tokenizer, ids[0], identifier, paths, window, block_size, max_memory,
                                   mlp_path)
    with torch.no_grad():
        out = model(ids, decomposition_window=window, decomposition_block_size=block_size, output_hidden_states=True,
                    decomposition_max_memory=max_memory, decomposition_mlp_path=mlp_path)
    tensors = {
        "d": out.decomposition[0],
        "b": out.decomposition_bias,
        "o": out.hidden_states[-1],
        "i": ids,
    }
    for prefix in PIECE_PREFIXES:  # i_ last: its presence marks a complete piece
        save_tensor(tensors[prefix].cpu(), paths[prefix])
    log.debug("wrote batch %d (%d tokens)", number, ids.shape[1])
    return paths


def write_piece_deltalp(model, tokenizer, ids, identifier, paths, window, block_size, max_memory, mlp_path):
    """Streaming mode: ΔLP of one piece (bits), its table and the paper's text, the text last."""
    from huggingface_patch.cli import atomic_path, write_text
    from huggingface_patch.deltalp import paper_text, stream_deltalp

    result = stream_deltalp(model, ids, window, block_size=block_size, max_memory=max_memory, mlp_path=mlp_path)
    table = {"ids": ids.cpu(), "lp": result.lp, "ablated": result.ablated, "delta": result.delta, "unit": "bits"}
    with atomic_path(paths["pt"]) as tmp:
        torch.save(table, tmp)
    tokens = tokenizer.convert_ids_to_tokens(ids.tolist())
    write_text(paper_text(identifier, tokens, result), paths["txt"])
    return paths


def log_memory_estimate(model, pieces, window: int, max_memory: int | None, deltalp: bool) -> None:
    """Log the memory estimate of the longest piece; raise UsageError if the budget cannot hold it."""
    from huggingface_patch.engine.memory import MemoryBudgetError, choose_block_size

    if not pieces or not hasattr(model, "decomposition_memory"):
        return
    longest = max(len(piece.ids) for piece in pieces)
    est = model.decomposition_memory(1, longest, window, streaming=deltalp, max_memory=max_memory)
    try:
        block = choose_block_size(est, max_memory)
    except MemoryBudgetError as exc:
        raise UsageError(f"{exc} (longest piece: {longest} tokens)") from None
    log.info("longest piece (%d tokens, window %d): %s", longest, window, est.describe(block))


def write_projection(model, model_name: str, output_dir: str, resume: bool = True) -> None:
    """``{MODEL}_proj_weights.pt`` (the LM head weight); kept as it is when resuming and already there."""
    path = os.path.join(output_dir, f"{model_name}_proj_weights.pt")
    if resume and os.path.isfile(path):
        return
    save_tensor(model.get_output_embeddings().weight, path)


def run(model, pieces, corpus: str, model_name: str, window: int, output_dir: str, block_size: int | None = None,
        *, rank: int = 0, world_size: int = 1, resume: bool = True, max_memory: int | None = None,
        mlp_path: str = "auto", deltalp: bool = False, tokenizer=None) -> list[int]:
    """Decompose this process's pieces that are not complete yet and write their files.

    Piece N belongs to the process of rank N % world_size; only rank 0 writes the projection weights.
    Returns the numbers of the pieces computed.
    """
    from tqdm.auto import tqdm

    if block_size is None:
        log_memory_estimate(model, pieces, window, max_memory, deltalp)
    os.makedirs(output_dir, exist_ok=True)
    if rank == 0 and not deltalp:
        write_projection(model, model_name, output_dir, resume)
    mine, todo = select_pieces(len(pieces), output_dir, corpus, model_name, rank=rank, world_size=world_size,
                               resume=resume, deltalp=deltalp)
    where = f" [rank {rank}/{world_size}]" if world_size > 1 else ""
    log.info("%d pieces in total; %d for this process%s; %d of them already complete (skipped), %d to compute",
             len(pieces), len(mine), where, len(mine) - len(todo), len(todo))
    desc = f"batches (rank {rank}/{world_size})" if world_size > 1 else "batches"
    for number in tqdm(todo, desc=desc, unit="batch", disable=rank != 0):
        decompose_piece(model, pieces[number], number, corpus=corpus, model_name=model_name, window=window,
                        output_dir=output_dir, block_size=block_size, max_memory=max_memory, mlp_path=mlp_path,
                        deltalp=deltalp, tokenizer=tokenizer)
    return todo


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (0, or 2 for bad input)."""
    args = build_parser().parse_args(argv)

    def body():
        from huggingface_patch.cli import setup_logging
        from huggingface_patch.loading import load_model_and_tokenizer

        setup_logging()
        window = parse_window(args.decomposition_length)
        if not os.path.isfile(args.input_file):
            raise UsageError(f"input file not found: {args.input_file}")
        try:
            articles = read_sentitems(args.input_file)  # before loading the model: bad input fails fast
        except CorpusError as exc:
            raise UsageError(str(exc)) from None
        if args.block_size is not None and args.block_size <= 0:
            raise UsageError(f"--block-size must be a positive integer, got {args.block_size}")
        max_memory = None
        if args.max_memory is not None:
            from huggingface_patch.engine.memory import parse_memory

            try:
                max_memory = parse_memory(args.max_memory)
            except ValueError as exc:
                raise UsageError(f"--max-memory: {exc}") from None
        info = process_info(args.device)
        try:
            model, tokenizer, source = load_model_and_tokenizer(args.model, dtype=args.dtype, device=info.device)
            pieces = prepare_pieces(articles, tokenizer, model.config)
            run(model, pieces, corpus_name(args.input_file), source.name, window, args.output_dir, args.block_size,
                rank=info.rank, world_size=info.world_size, resume=args.resume, max_memory=max_memory,
                mlp_path=args.mlp_path, deltalp=args.deltalp, tokenizer=tokenizer)
        finally:
            finish_process(info)

    return run_cli(body, "run_decompose.py")


if __name__ == "__main__":
    sys.exit(main())
