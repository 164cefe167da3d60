"""Decompose a corpus with a causal LM and write the paper's files (Oh & Schuler 2023, ``main.py``).

    python run_decompose.py INPUT_FILE MODEL DECOMPOSITION_LENGTH [--output-dir output] [--device cpu] [--dtype float32]

INPUT_FILE is a sentitems file (``!ARTICLE`` before each article). MODEL is a hub id, a local folder, a
``.gguf`` file, or a bundled model (``smollm2-135m``, ``gemma3-270m``). For each model-sized piece N of the
corpus it writes, in the output folder: ``i_{CORPUS}_{MODEL}_{N}.pt`` (input ids ``(1, T)``, start token
first), ``d_…`` (decomposition ``(W, T, H)``, relative layout), ``o_…`` (final hidden state ``(1, T, H)``),
``b_…`` (bias term ``(1, T, H)``), then the piece's record ``r_….json``; and ``{MODEL}_proj_weights.pt``
(LM head weight ``(V, H)``) and the folder's record ``run.json`` (what produced it).

With ``--deltalp`` (streaming mode) no d_ files are written: ΔLP is computed block by block and each piece
gets ``deltalp_{…}.pt`` and ``deltalp_{…}.txt`` (exactly what ``representations_to_deltalp.py`` prints).
A rerun into the same folder with the same settings resumes; with other settings it is refused
(``--no-resume`` replaces the earlier run). Under ``torchrun`` / ``accelerate launch`` piece N goes to
process N % K. See ``docs/scale_out.md`` and the library, :mod:`huggingface_patch.pipeline`.
"""

from __future__ import annotations

import argparse
import logging
import sys

from huggingface_patch.cli import (
    ArgumentParser,
    UsageError,
    add_bos_argument,
    add_precision_argument,
    check_device,
    check_precision_device,
    positive_int,
    run_cli,
    setup_logging,
)

log = logging.getLogger("run_decompose")
PROG = "run_decompose.py"


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("input_file", metavar="INPUT_FILE",
                        help="sentitems corpus (lines '!ARTICLE' separate articles)")
    parser.add_argument("model", metavar="MODEL",
                        help="hub id, local folder, .gguf file, or a bundled model: smollm2-135m, gemma3-270m")
    parser.add_argument("decomposition_length", metavar="DECOMPOSITION_LENGTH",
                        help="window: number of most recent source tokens kept per target (positive integer)")
    parser.add_argument("--output-dir", default="output", help="folder for the output files (default: output)")
    parser.add_argument("--device", default=None,
                        help="torch device, e.g. cpu or cuda (default: cpu; under torchrun/accelerate launch with "
                             "CUDA available: each process's own GPU)")
    parser.add_argument("--dtype", default="float32", help="model dtype: float32 (default), float64, bfloat16, float16")
    add_bos_argument(parser)
    parser.add_argument("--block-size", type=positive_int, default=None,
                        help="sources per block (default: chosen from memory)")
    parser.add_argument("--max-memory", default=None,
                        help="memory budget, e.g. 4GB or 3.5GiB: chooses the block size; a run that cannot fit is "
                             "refused before it starts (default: 512 MiB per block)")
    parser.add_argument("--deltalp", action="store_true",
                        help="streaming mode: write each piece's ΔLP table and text instead of the d_/b_/o_/i_ files")
    parser.add_argument("--mlp-path", default="auto", choices=("auto", "dense", "sparse"),
                        help="MLP path: auto (default: the sparse ReLU path where it pays off), dense or sparse")
    add_precision_argument(parser)
    parser.add_argument("--no-resume", dest="resume", action="store_false",
                        help="replace the folder's earlier run (default: resume a run with the same settings)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
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


def check_output_names(folder: str, input_file: str, model_name: str, pieces: int) -> None:
    """Refuse, before anything is written, output names longer than the file system allows (the corpus and model
    names are part of them)."""
    import os

    from huggingface_patch.paper_files import corpus_name, piece_files, piece_identifier, piece_record_name

    identifier = piece_identifier(corpus_name(input_file), model_name, max(0, pieces - 1))
    longest = max([*piece_files(identifier, "tensors"), *piece_files(identifier, "deltalp"),
                   piece_record_name(identifier)], key=len)
    try:
        limit = os.pathconf(os.path.abspath(os.path.expanduser(folder)) if os.path.isdir(folder) else ".",
                            "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    if len(longest.encode("utf-8")) > limit:
        raise UsageError(f"the output names would be {len(longest.encode('utf-8'))} bytes long (the file system "
                         f"allows {limit}): the corpus file's name is part of them; rename it to something shorter")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (0; 2 for bad input; 130 when interrupted)."""
    args = build_parser().parse_args(argv)
    state: dict = {}

    def body():
        from huggingface_patch.corpus import context_size, document_start, parse_sentitems, prepare_pieces, read_text
        from huggingface_patch.distributed import process_info
        from huggingface_patch.engine.memory import parse_memory
        from huggingface_patch.engine.options import DecompositionOptions
        from huggingface_patch.files import check_output_dir
        from huggingface_patch.loading import load_model_and_tokenizer
        from huggingface_patch.output_run import OutputRun, run_settings
        from huggingface_patch.pipeline import decompose_corpus

        setup_logging(args.verbose)
        window = parse_window(args.decomposition_length)
        text = read_text(args.input_file)  # bad input fails before the model loads
        articles = parse_sentitems(text, args.input_file)
        max_memory = None
        if args.max_memory is not None:
            try:
                max_memory = parse_memory(args.max_memory)
            except ValueError as exc:
                raise UsageError(f"--max-memory: {exc}") from None
        options = DecompositionOptions(window=window, block_size=args.block_size, max_memory=max_memory,
                                       mlp_path=args.mlp_path, precision=args.precision)
        check_output_dir(args.output_dir)
        check_device(args.device)
        info = process_info(args.device)
        check_precision_device(args.precision, info.device)
        try:
            model, tokenizer, source = load_model_and_tokenizer(args.model, dtype=args.dtype, device=info.device)
            start = document_start(model.config, tokenizer, args.bos, bundled=source.name)
            log.info("start token: %r (id %s; %s)", start.token, start.id, start.reason)
            pieces = prepare_pieces(articles, tokenizer, model.config, start)
            if args.deltalp:
                short = next((p for p in pieces if len(p.ids) < 2), None)
                if short is not None:
                    raise UsageError(f"article {short.document + 1} gives {len(short.ids)} token (start token "
                                     "included): ΔLP needs a token and the one it predicts; drop the article or keep "
                                     "a start token (--bos)")
            check_output_names(args.output_dir, args.input_file, source.name, len(pieces))
            settings = run_settings(model, tokenizer, source.name, args.model, args.input_file, text, window,
                                    start=start, context=context_size(model.config),
                                    mode="deltalp" if args.deltalp else "tensors", precision=args.precision)
            state.update(run=OutputRun(args.output_dir, settings), total=len(pieces))
            decompose_corpus(model, tokenizer, pieces, settings, args.output_dir, info=info, resume=args.resume,
                             options=options)
        finally:
            info.finish()

    def interrupted() -> str:
        if "run" not in state:
            return "no piece was written"
        done = state["run"].complete_count(state["total"])
        return f"{done} of {state['total']} pieces are complete; a rerun with the same arguments resumes"

    return run_cli(body, PROG, on_interrupt=interrupted)


if __name__ == "__main__":
    sys.exit(main())
