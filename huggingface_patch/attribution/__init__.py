"""ΔLP and token attribution on top of the decomposition: tables, word level, contrasts, real-ablation
agreement, the decomposition lens and plots (issue 5). See ``docs/attribution.md``.
"""

from .tables import (
                     UNITS,
                     PieceAnalysis,
                     decompose_piece,
                     deltalp_rows,
                     head_input,
                     stitch_targets,
                     summarize_targets,
                     unit_base,
)
from .words import word_groups, word_rows

__all__ = [
    "UNITS",
    "PieceAnalysis",
    "decompose_piece",
    "deltalp_rows",
    "head_input",
    "stitch_targets",
    "summarize_targets",
    "unit_base",
    "word_groups",
    "word_rows",
]
