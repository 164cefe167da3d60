"""Path length of the residual stream and its relation to the next-token logit.

Per token, with ``h_0`` the embeddings and ``h_l`` the output of layer ``l`` (``h_L`` taken *before* the
final norm): ``step_l = ||h_l - h_{l-1}||_2`` (``l = 1..L``), the cumulative curve is the running sum
(starting at 0 for ``h_0``) and the path length ``PL = sum_l step_l``. Also reported: the straight-line
distance ``||h_L - h_0||`` (``PL >= it`` by the triangle inequality), ``||h_L||`` and the tortuosity
``PL / ||h_L - h_0|| >= 1``. Targets at position ``t``: the logit and log-probability of the actual next
token ``t+1`` and the largest logit, all three only where a next token exists (a document's last token has
none and is left out of every correlation). Norms are computed in float64 from the model's states.

Shapes: ``B`` batch, ``T`` positions, ``L`` layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .logit_lens import run_with_residual

#: what a path length is correlated with (each only where a next token exists)
CORRELATION_TARGETS = ("next_logit", "next_logprob", "max_logit")


@dataclass
class PathLengths:
    """``steps`` ``(B, T, L)``, ``cumulative`` ``(B, T, L+1)`` (0 first); ``total``, ``straight``, ``final_norm``,
    ``next_logit``, ``next_logprob``, ``max_logit`` ``(B, T)`` (targets NaN where no next token);
    ``attention_mask`` ``(B, T)``. Values on padding are meaningless."""

    steps: torch.Tensor
    cumulative: torch.Tensor
    total: torch.Tensor
    straight: torch.Tensor
    final_norm: torch.Tensor
    next_logit: torch.Tensor
    next_logprob: torch.Tensor
    max_logit: torch.Tensor
    attention_mask: torch.Tensor

    @property
    def tortuosity(self) -> torch.Tensor:
        """``PL / ||h_L - h_0||`` ``(B, T)`` (>= 1)."""
        return self.total / self.straight

    def sequence(self, index: int) -> dict[str, torch.Tensor]:
        """The real (unpadded) tokens of sequence ``index``: each field cut to its ``T_i`` positions."""
        keep = self.attention_mask[index].bool()
        fields = ("steps", "cumulative", "total", "straight", "final_norm", "next_logit", "next_logprob", "max_logit")
        return {name: getattr(self, name)[index][keep] for name in fields}


def step_norms(states: torch.Tensor) -> torch.Tensor:
    """``||h_l - h_{l-1}||`` ``(L, ...)`` of residual states ``(L+1, ..., H)`` (float64)."""
    states = states.double()
    return (states[1:] - states[:-1]).norm(dim=-1)


@torch.no_grad()
def path_lengths(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> PathLengths:
    """Path lengths of a batch ``input_ids`` ``(B, T)`` padded either side (``attention_mask`` 1 on tokens)."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    states, logits = run_with_residual(model, input_ids, attention_mask)
    steps = step_norms(states).permute(1, 2, 0)  # (B, T, L)
    cumulative = torch.cat([torch.zeros_like(steps[..., :1]), steps.cumsum(-1)], dim=-1)
    straight = (states[-1].double() - states[0].double()).norm(dim=-1)
    final_norm = states[-1].double().norm(dim=-1)
    logits = logits.double()
    logp = torch.log_softmax(logits, dim=-1)
    # the next real token of each position: shift left; positions whose next slot is padding or absent get NaN
    next_ids = torch.roll(input_ids, -1, dims=1)
    has_next = attention_mask.bool() & torch.roll(attention_mask.bool(), -1, dims=1)
    has_next[:, -1] = False
    nan = torch.full(input_ids.shape, math.nan, dtype=torch.float64)
    next_logit = torch.where(has_next, logits.gather(-1, next_ids[..., None])[..., 0], nan)
    next_logprob = torch.where(has_next, logp.gather(-1, next_ids[..., None])[..., 0], nan)
    max_logit = torch.where(has_next, logits.max(-1).values, nan)  # the last token predicts nothing
    return PathLengths(steps, cumulative, cumulative[..., -1], straight, final_norm, next_logit, next_logprob,
                       max_logit, attention_mask)


def correlations(x, y) -> dict[str, float]:
    """Pearson and Spearman correlation of paired values (NaN pairs dropped): ``{'pearson', 'spearman', 'n'}``."""
    from ..stats import correlations as both

    result = both(x, y)
    return {"pearson": result["pearson"], "spearman": result["spearman"], "n": result["n"]}
