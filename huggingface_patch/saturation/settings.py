"""``SaturationSettings``: the options of the saturation analyses as one typed object (what the CLI parsed,
or what a script sets), so that no library function reads an argparse namespace."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class SaturationSettings:
    """``model``: the MODEL argument (named in the summaries); ``seed``: every random choice.

    Ordering: ``permutations`` (shuffles of the selection-aware test), ``min_ranks`` (least saturated ranks
    ``c``). Probe and early exit: ``first_layer`` (``None``: 5, or 1 under 10 blocks), ``folds``,
    ``probe_groups`` (``"position"`` or ``"document"``), ``probe_permutations``, ``min_per_class``,
    ``test_fraction``. Intervention: ``max_distance``, ``min_gap``, ``min_saturation`` (``None``: the
    backend's defaults), ``window`` (offsets ``-W..W``), ``max_pairs``, ``progress``. Rank-2 LM:
    ``late_margin``."""

    model: str = "model"
    seed: int = 0
    permutations: int = 1000
    min_ranks: int = 3
    first_layer: int | None = None
    folds: int = 5
    probe_groups: str = "position"
    probe_permutations: int = 20
    min_per_class: int = 5
    test_fraction: float = 0.5
    max_distance: int | None = None
    min_gap: int | None = None
    min_saturation: int | None = None
    window: int = 5
    max_pairs: int = 200
    progress: bool = True
    late_margin: int = 7

    @classmethod
    def from_mapping(cls, values: dict) -> "SaturationSettings":
        """From a mapping with any extra keys (a CLI's ``vars(args)``; ``no_progress`` becomes ``progress``)."""
        names = {field.name for field in dataclasses.fields(cls)}
        chosen = {key: value for key, value in values.items() if key in names}
        if "no_progress" in values:
            chosen["progress"] = not values["no_progress"]
        if "model" in chosen:
            chosen["model"] = str(chosen["model"])
        return cls(**chosen)
