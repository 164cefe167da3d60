"""Token attribution methods behind one interface: ``attribute(model, ids, targets, method) -> (targets, window)``
(and :func:`attribute_items` for prepared :class:`~.items.Item` s).

The quantity attributed at an item's target is ``log p(answer)`` (natural log), or ``log p(answer) - log
p(foil)`` for a contrastive item; a larger score means the source raises it more. Every method scores the
item's sources ``1 .. t`` (the start token is not a source).

========================  =======================================================================  =========
method                    what it is                                                               package
========================  =======================================================================  =========
``deltalp``               the decomposition's ΔLP: the quantity minus its value without the        this one
                          source's contribution to the state the head reads
``dla``                   direct logit attribution ``n[s, t] · W_U[y]`` (``- W_U[foil]``)           this one
``leave-one-out``         the quantity minus its value with the source token removed and the       (none)
                          model re-run
``replace-neutral``       the same with the token replaced by a neutral one (the pad token)        (none)
``random``                seeded uniform scores (the floor of every metric)                        (none)
``input-x-gradient``      input x gradient of the quantity, summed over the embedding              captum
``integrated-gradients``  integrated gradients from a zero embedding (32 steps), summed            captum
``attention-last``        the last layer's attention from the target, mean over heads              (none)
``attention-rollout``     attention rollout (Abnar & Zuidema 2020: ``0.5 A + 0.5 I`` per layer)    (none)
``attnlrp``, ``cp-lrp``   AttnLRP and CP-LRP (input x gradient under lxt's rules), in their own    lxt
                          process: lxt patches Transformers' classes for the whole process
========================  =======================================================================  =========

Attention weights are read from the model's own ``output_attentions`` (Transformers computes them; the
weights are not an attribution package's).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..errors import InputError
from .items import Item

#: method name -> (function, the optional package it needs or None)
_METHODS: dict[str, tuple[Callable, str | None]] = {}


def register_method(name: str, package: str | None = None):
    """Register an attribution method ``fn(model, items, **options) -> list[np.ndarray]``."""

    def decorate(fn):
        _METHODS[name] = (fn, package)
        return fn

    return decorate


def list_methods() -> list[str]:
    """The registered method names, in registration order."""
    return list(_METHODS)


def missing_package(method: str) -> str | None:
    """The optional package ``method`` needs and that is not installed (None: it can run)."""
    import importlib.util

    package = _METHODS[method][1]
    return package if package is not None and importlib.util.find_spec(package) is None else None


INSTALL_HINT = "pip install captum==0.9.0 && pip install --no-deps lxt==2.1 (scripts/install.sh does both)"


def attribute_items(model, items: list[Item], method: str, **options) -> list[np.ndarray]:
    """Scores ``(len(item.sources),)`` for every item, by ``method`` (see the module)."""
    if method not in _METHODS:
        raise InputError(f"unknown attribution method {method!r}: choose from {', '.join(_METHODS)}")
    package = missing_package(method)
    if package is not None:
        raise InputError(f"method {method!r} needs the package {package!r}, which is not installed: {INSTALL_HINT}")
    return _METHODS[method][0](model, items, **options)


def attribute(model, ids, targets, method: str, *, window: int | None = None, foils=None,
              **options) -> np.ndarray:
    """Scores ``(len(targets), window)`` of ``method`` for the next token of each target position.

    ``ids`` ``(T,)`` is one sequence with its start token first; target ``t`` (``1 <= t <= T - 2``) explains
    ``log p(ids[t + 1])`` given ``ids[: t + 1]`` (minus ``log p(foils[i])`` where ``foils`` is given). Column
    ``k`` holds source ``t - k`` (``k = 0`` is the target token itself, the layout of the ΔLP tables); NaN
    where ``t - k`` is the start token or before it. ``window`` defaults to the largest target.
    """
    ids = [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]
    targets = [int(t) for t in targets]
    for t in targets:
        if not 1 <= t <= len(ids) - 2:
            raise InputError(f"target {t} has no source or no next token in {len(ids)} tokens: use 1 .. "
                             f"{len(ids) - 2}")
    window = window or max(targets, default=1)
    if window < 1:
        raise InputError(f"window must be at least 1, got {window}")
    items = [Item(ids[: t + 1], ids[t + 1], "window", 0, foil=None if foils is None else int(foils[n]),
                  first_source=max(1, t - window + 1)) for n, t in enumerate(targets)]
    out = np.full((len(targets), window), np.nan)
    for row, scores in enumerate(attribute_items(model, items, method, **options)):
        out[row, : len(scores)] = scores[::-1]  # sources t, t-1, ...
    return out


# ---------------------------------------------------------------------------------------------- values


def _device(model):
    return next(model.parameters()).device


def quantity(logits: torch.Tensor, answer, foil=None) -> torch.Tensor:
    """``log p(answer)`` (``- log p(foil)``) from last-position logits ``(R, V)``; ``answer``/``foil`` ``(R,)``."""
    logp = torch.log_softmax(logits.double(), -1)
    value = logp.gather(-1, torch.as_tensor(answer, device=logits.device).view(-1, 1))[:, 0]
    if foil is not None:
        value = value - logp.gather(-1, torch.as_tensor(foil, device=logits.device).view(-1, 1))[:, 0]
    return value


@torch.no_grad()
def values_of(model, rows: list[list[int]], item: Item, chunk: int = 64) -> np.ndarray:
    """The item's quantity for each input row (rows of one length), the last position's logits only."""
    out = []
    device = _device(model)
    for lo in range(0, len(rows), chunk):
        ids = torch.tensor(rows[lo : lo + chunk], device=device)
        logits = model(input_ids=ids, use_cache=False, logits_to_keep=1).logits[:, -1]
        n = ids.shape[0]
        foil = None if item.foil is None else [item.foil] * n
        out.append(quantity(logits, [item.answer] * n, foil).cpu().numpy())
    return np.concatenate(out)


def full_value(model, item: Item) -> float:
    return float(values_of(model, [item.ids], item)[0])


def without(ids: list[int], removed) -> list[int]:
    """``ids`` without the positions ``removed``."""
    gone = set(removed)
    return [token for position, token in enumerate(ids) if position not in gone]


# ------------------------------------------------------------------------------------ the decomposition


@torch.no_grad()
def _decomposed(model, item: Item):
    """``(state (H,), contributions (S, H) of the sources in order)`` at the item's target, float64."""
    from ..attribution.tables import head_input

    ids = torch.tensor(item.ids)
    state, decomposition, _ = head_input(model, ids, len(item.ids))
    t = item.target
    # relative layout: row k is source t - k; sources 1 .. t in order are rows t-1 .. 0
    contributions = decomposition[[t - s for s in item.sources], t]
    return state[t].double(), contributions.double()


def _float64_readout(model):
    """The LM head in float64 on the CPU, made once per method run: for a 262k vocabulary the copy (1.3 GB)
    costs more than an item's read-out."""
    from ..architectures import readout

    return readout(model).to("cpu", torch.float64)


@register_method("deltalp")
def deltalp(model, items: list[Item], **_) -> list[np.ndarray]:
    out = []
    head = _float64_readout(model)
    for item in items:
        state, parts = _decomposed(model, item)
        logits = head.logits(torch.cat([state[None], state[None] - parts]))
        foil = None if item.foil is None else [item.foil] * len(logits)
        values = quantity(logits, [item.answer] * len(logits), foil)
        out.append((values[0] - values[1:]).numpy())
    return out


@register_method("dla")
def direct_logit_attribution(model, items: list[Item], **_) -> list[np.ndarray]:
    out = []
    head = _float64_readout(model)
    for item in items:
        _, parts = _decomposed(model, item)
        direction = head.weight[item.answer] - (0 if item.foil is None else head.weight[item.foil])
        out.append((parts @ direction).numpy())
    return out


# ------------------------------------------------------------------------------------------ ablations


@register_method("leave-one-out")
def leave_one_out(model, items: list[Item], **_) -> list[np.ndarray]:
    out = []
    for item in items:
        full = full_value(model, item)
        out.append(full - values_of(model, [without(item.ids, [s]) for s in item.sources], item))
    return out


def neutral_token(tokenizer) -> int:
    """The replacement of ``replace-neutral``: the pad token, else the unknown token, else ``' the'``."""
    for candidate in (getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "unk_token_id", None)):
        if candidate is not None:
            return int(candidate)
    return int(tokenizer(" the", add_special_tokens=False)["input_ids"][0])


@register_method("replace-neutral")
def replace_neutral(model, items: list[Item], *, tokenizer=None, **_) -> list[np.ndarray]:
    if tokenizer is None:
        raise InputError("replace-neutral needs the tokenizer (its neutral token)")
    token = neutral_token(tokenizer)
    out = []
    for item in items:
        full = full_value(model, item)
        rows = [[token if p == s else t for p, t in enumerate(item.ids)] for s in item.sources]
        out.append(full - values_of(model, rows, item))
    return out


@register_method("random")
def random_scores(model, items: list[Item], *, seed: int = 0, **_) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random(len(item.sources)) for item in items]


# ------------------------------------------------------------------------------------------ attention


@torch.no_grad()
def _attentions(model, item: Item) -> list[torch.Tensor]:
    from ..compat import eager_attention

    with eager_attention(model):
        out = model(input_ids=torch.tensor([item.ids], device=_device(model)), use_cache=False,
                    output_attentions=True, logits_to_keep=1)
    return [a[0].double().cpu() for a in out.attentions]  # L x (h, T, T)


@register_method("attention-last")
def attention_last(model, items: list[Item], **_) -> list[np.ndarray]:
    out = []
    for item in items:
        last = _attentions(model, item)[-1].mean(0)  # (T, T)
        out.append(last[item.target, item.sources].numpy())
    return out


@register_method("attention-rollout")
def attention_rollout(model, items: list[Item], **_) -> list[np.ndarray]:
    out = []
    for item in items:
        rollout = None
        for layer in _attentions(model, item):
            mixed = 0.5 * layer.mean(0) + 0.5 * torch.eye(layer.shape[-1], dtype=layer.dtype)
            mixed = mixed / mixed.sum(-1, keepdim=True)
            rollout = mixed if rollout is None else mixed @ rollout
        out.append(rollout[item.target, item.sources].numpy())
    return out


# ------------------------------------------------------------------------------------------- gradients


def _embedding_attribution(model, items: list[Item], make) -> list[np.ndarray]:
    """Captum's attribution of the quantity to the input embeddings, summed over the hidden size."""
    out = []
    device = _device(model)
    embed = model.get_input_embeddings()
    for item in items:
        ids = torch.tensor([item.ids], device=device)

        def forward(embeddings, item=item):
            logits = model(inputs_embeds=embeddings, use_cache=False, logits_to_keep=1).logits[:, -1]
            n = logits.shape[0]
            return quantity(logits, [item.answer] * n, None if item.foil is None else [item.foil] * n)

        with torch.enable_grad():
            embeddings = embed(ids).detach().requires_grad_(True)
            scores = make(forward)(embeddings).sum(-1)[0]
        out.append(scores[item.sources].detach().double().cpu().numpy())
    return out


@register_method("input-x-gradient", package="captum")
def input_x_gradient(model, items: list[Item], **_) -> list[np.ndarray]:
    from captum.attr import InputXGradient

    return _embedding_attribution(model, items, lambda f: InputXGradient(f).attribute)


@register_method("integrated-gradients", package="captum")
def integrated_gradients(model, items: list[Item], *, steps: int = 32, **_) -> list[np.ndarray]:
    from captum.attr import IntegratedGradients

    def make(forward):
        method = IntegratedGradients(forward)
        return lambda x: method.attribute(x, baselines=torch.zeros_like(x), n_steps=steps, internal_batch_size=steps)

    return _embedding_attribution(model, items, make)


# ------------------------------------------------------------------------------------------------ LRP


def _lrp(kind: str):
    def run(model, items: list[Item], *, model_path: str | None = None, model_kwargs: dict | None = None,
            timing: dict | None = None, details: dict | None = None, **_) -> list[np.ndarray]:
        from .lrp_worker import run_worker

        if model_path is None:
            raise InputError(f"{kind} runs in its own process and needs the model's folder (model_path)")
        scores, seconds, conservation = run_worker(kind, model_path, model_kwargs or {}, items,
                                                   str(next(model.parameters()).dtype))
        if timing is not None:
            timing["seconds"] = seconds  # the child's own compute time, its start-up and loading left out
        if details is not None:
            details.update(conservation)  # per item: relevance_sum, explained (see run_worker)
        return scores

    return run


register_method("attnlrp", package="lxt")(_lrp("attnlrp"))
register_method("cp-lrp", package="lxt")(_lrp("cp-lrp"))


def check_finite(scores: list[np.ndarray], method: str) -> None:
    """A method that returned NaN or infinity is a broken run, not a result."""
    for index, row in enumerate(scores):
        if not np.all(np.isfinite(row)):
            raise InputError(f"method {method} gave a non-finite score for item {index}")


__all__ = ["INSTALL_HINT", "attribute", "attribute_items", "check_finite", "list_methods", "missing_package",
           "quantity", "register_method", "values_of", "without"]
