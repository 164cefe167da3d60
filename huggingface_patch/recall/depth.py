"""The paper's layer settings, given for GPT-2 XL's 48 blocks, scaled to a model's depth.

Geva et al. (2023) use, on 48 blocks: an attention-knockout window of 9 blocks, a sublayer-knockout window
of up to 11 blocks (its code asks for 10, its bounds give 11) measured after block 40, and patching
sources ``hidden_states`` 0, 1, 5, 10, 20. On a shallower model the same absolute numbers cover a larger
share of the depth, so the tools scale them by ``L / 48`` by default (``round``, at least 1) and say so in
their output; the paper's absolute values stay selectable.
"""

from __future__ import annotations

#: GPT-2 XL's depth, the reference of every setting below
PAPER_LAYERS = 48
#: the paper's values on 48 blocks
PAPER_KNOCKOUT_WINDOW = 9
PAPER_SUBLAYER_WINDOW = 11
PAPER_MEASURE_LAYER = 40


def scaled(value: int, num_layers: int, minimum: int = 1) -> int:
    """``round(value * L / 48)``, at least ``minimum``."""
    return max(minimum, round(value * num_layers / PAPER_LAYERS))


def resolve(choice: "int | str | None", paper_value: int, num_layers: int) -> tuple[int, str]:
    """A CLI setting (an integer, ``"scaled"`` / None, or ``"paper"``) as ``(value, how)``: ``how`` is the
    sentence the output records."""
    if choice in (None, "scaled"):
        value = scaled(paper_value, num_layers)
        return value, f"scaled to depth: round({paper_value} x {num_layers} / {PAPER_LAYERS}) = {value}"
    if choice == "paper":
        return paper_value, f"the paper's absolute value ({paper_value}, set for {PAPER_LAYERS} blocks)"
    return int(choice), "given"


def setting(text: str) -> "int | str":
    """The argparse type of a depth setting: a positive integer, ``scaled`` or ``paper``."""
    import argparse

    if text in ("scaled", "paper"):
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, 'scaled' or 'paper', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, 'scaled' or 'paper', got {value}")
    return value
