"""ΔLP and token attribution on top of the decomposition: tables, word level, contrasts, real-ablation
agreement, the decomposition lens, plots and the corpus study. See ``docs/attribution.md``.
"""

from .study import DeltaLPStudy, deltalp_study, file_analyses, model_analyses
from .tables import (
    UNITS,
    PieceAnalysis,
    analyse_piece,
    deltalp_rows,
    head_input,
    stitch_targets,
    summarize_targets,
    unit_base,
)
from .words import word_groups, word_rows

__all__ = [
    "UNITS",
    "DeltaLPStudy",
    "PieceAnalysis",
    "analyse_piece",
    "deltalp_rows",
    "deltalp_study",
    "file_analyses",
    "head_input",
    "model_analyses",
    "stitch_targets",
    "summarize_targets",
    "unit_base",
    "word_groups",
    "word_rows",
]
