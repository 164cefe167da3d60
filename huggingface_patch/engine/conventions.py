"""Linearization conventions: where the nonlinear parts are frozen. Every choice keeps the identity exact.

* ``activation``: how a plain MLP activation (GELU, ReLU, SiLU) is made linear in the contributions.
  ``"ratio"`` (default, the paper's): ``act(z) = r * z`` with ``r = act(z)/z``; ``"tangent"``:
  ``act(z) = act'(z) * z + (act(z) - act'(z) z)``, the intercept going to the bias term. For ReLU both agree.
* ``gated``: for ``down(act(gate(x)) * up(x))``: ``"gate"`` (default) freezes ``act(gate(x))`` and sends
  contributions through ``up``; ``"up"`` freezes ``up(x)`` and sends them through ``gate`` (linearized by
  the activation convention).
* ``positions``: ``"token"`` (default): a source owns its token *and* its position embedding; ``"bias"``:
  learned position embeddings (OPT, GPT-2) go to the bias term (no effect for RoPE models).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

_CHOICES = {"activation": ("ratio", "tangent"), "gated": ("gate", "up"), "positions": ("token", "bias")}


@dataclass(frozen=True)
class Conventions:
    """A choice of linearization (see the module docstring); the defaults are the paper's."""

    activation: str = "ratio"
    gated: str = "gate"
    positions: str = "token"

    def __post_init__(self):
        for item in fields(self):
            value = getattr(self, item.name)
            if value not in _CHOICES[item.name]:
                choices = ", ".join(_CHOICES[item.name])
                raise ValueError(f"unknown {item.name} convention {value!r}: choose from {choices}")

    @property
    def name(self) -> str:
        """Short label, e.g. ``activation=tangent`` (``default`` for the paper's)."""
        changed = [f"{f.name}={getattr(self, f.name)}" for f in fields(self) if getattr(self, f.name) != f.default]
        return ",".join(changed) or "default"

    @classmethod
    def all_variants(cls) -> list["Conventions"]:
        """The conventions that differ from the default in exactly one choice."""
        variants = []
        for item in fields(cls):
            for value in _CHOICES[item.name]:
                if value != item.default:
                    variants.append(cls(**{item.name: value}))
        return variants


DEFAULT = Conventions()
