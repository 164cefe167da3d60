"""The file names of the paper's pipeline: ``d_/b_/o_/i_{IDENTIFIER}.pt`` per piece (or, in streaming mode,
``deltalp_{IDENTIFIER}.pt`` and ``.txt``), the piece record ``r_{IDENTIFIER}.json`` and the LM head's
``{MODEL}_proj_weights.pt``, with ``IDENTIFIER = {CORPUS}_{MODEL}_{N}``."""

from __future__ import annotations

import os
import re

#: the paper's per-piece files in writing order
TENSOR_PREFIXES = ("d", "b", "o", "i")
#: streaming mode (``--deltalp``): the table, then the paper's text
DELTALP_SUFFIXES = ("pt", "txt")


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


def is_pipeline_file(name: str) -> bool:
    """Whether ``name`` looks like a file this pipeline writes."""
    return bool(re.fullmatch(r"([dboi]_.+\.pt|r_.+\.json|deltalp_.+\.(pt|txt)|.+_proj_(weights|bias)\.pt|run\.json)",
                             name))
