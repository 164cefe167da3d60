"""Saturation of the top-k tokens across layers (Lioubashevski et al., "Looking Beyond the Top-1").

* :mod:`.layers`: saturation layer ``s_i = L - m_i`` of each final top-k token, the paper's filter;
* :mod:`.ordering`: strict Kendall tau, its permutation test, rank correspondence;
* :mod:`.probe`: task-index probing from the residual stream;
* :mod:`.intervene`: implanting an earlier position's residual into a later one;
* :mod:`.early_exit`: probe vs softmax-margin / cosine baselines and the oracle;
* :mod:`.lm`: rank-2 accuracy when the rank-2 token saturates late vs early;
* :mod:`.modalities`: text LMs, ViT (images) and Whisper's decoder (audio);
* :mod:`.plots`: the figures.

Definitions and the released code's bugs fixed here: ``docs/saturation.md``.
"""

from .layers import DEFAULT_K, FILTER_FRACTION, SaturationData, collect, paper_filter, saturation_layers
from .ordering import permutation_test, position_taus, rank_correspondence, strict_kendall_tau

__all__ = [
    "DEFAULT_K",
    "FILTER_FRACTION",
    "SaturationData",
    "collect",
    "paper_filter",
    "permutation_test",
    "position_taus",
    "rank_correspondence",
    "saturation_layers",
    "strict_kendall_tau",
]
