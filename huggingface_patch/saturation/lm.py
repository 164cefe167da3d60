"""Better language modelling? Rank-2 accuracy where the top-1 is wrong, by when the rank-2 token saturates.

Population: positions with a known target whose final top-1 is wrong. Late group: ``s_2 = L-1`` (the rank-2
token is not saturated); early group: ``s_2 <= L - late_margin`` (paper: 7). Rank-2 accuracy (the final
rank-2 token equals the target) is compared with a pooled two-proportion z-test (two-sided).
"""

from __future__ import annotations

import math

from ..errors import InputError
from ..stats import wilson
from .layers import SaturationData

DEFAULT_LATE_MARGIN = 7


def two_proportion_z_test(successes_a: int, n_a: int, successes_b: int, n_b: int) -> tuple[float, float]:
    """Pooled two-proportion z statistic and two-sided p-value (NaN when undefined)."""
    if n_a == 0 or n_b == 0:
        return float("nan"), float("nan")
    pooled = (successes_a + successes_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se == 0:
        return float("nan"), float("nan")
    z = (successes_a / n_a - successes_b / n_b) / se
    return z, math.erfc(abs(z) / math.sqrt(2))


def rank2_accuracy(data: SaturationData, late_margin: int = DEFAULT_LATE_MARGIN) -> dict:
    """Rank-2 accuracy in the late and early groups, and their z-test."""
    if data.k < 2:
        raise InputError("the rank-2 analysis needs k >= 2")
    L = data.num_layers
    known = data.target >= 0
    population = known & (data.top[:, 0] != data.target)
    s2 = data.saturation[:, 1]
    groups = {"late": population & (s2 == L - 1), "early": population & (s2 <= L - late_margin)}
    out = {"num_layers": L, "late_margin": late_margin, "positions_with_target": int(known.sum()),
           "top1_wrong": int(population.sum()),
           "top1_accuracy": float((data.top[known, 0] == data.target[known]).mean()) if known.any() else float("nan")}
    counts = {}
    for name, mask in groups.items():
        hits = int((data.top[mask, 1] == data.target[mask]).sum())
        n = int(mask.sum())
        counts[name] = (hits, n)
        out[name] = {"definition": "s_2 = L-1" if name == "late" else f"s_2 <= L-{late_margin}",
                     "positions": n, "rank2_correct": hits, "rank2_accuracy": hits / n if n else float("nan"),
                     "interval": wilson(hits, n).to_dict()}
    z, p = two_proportion_z_test(*counts["late"], *counts["early"])
    out["z"] = z
    out["p_value"] = p
    out["small_group"] = min(counts["late"][1], counts["early"][1]) < 10
    return out
