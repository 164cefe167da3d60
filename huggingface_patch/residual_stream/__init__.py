"""Logit lens and residual-stream path length (library side of ``analysis.logit_lens`` and ``analysis.path_length``)."""

from .logit_lens import (
    COLOUR_MODES,
    SUBLAYER_MODES,
    LensStates,
    LogitLensResult,
    lens_states,
    logit_lens,
    position_ids_from_mask,
)
from .path_length import CORRELATION_TARGETS, PathLengths, correlations, path_lengths, step_norms

__all__ = [
    "COLOUR_MODES",
    "SUBLAYER_MODES",
    "CORRELATION_TARGETS",
    "LensStates",
    "LogitLensResult",
    "PathLengths",
    "correlations",
    "lens_states",
    "logit_lens",
    "path_lengths",
    "position_ids_from_mask",
    "step_norms",
]
