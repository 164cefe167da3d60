"""Implant an earlier position's residual into a later one around its saturation layer.

Pairs (text and audio: within one input; images: across images): positions ``i < j`` with ``j - i <=
max_distance``, the same final top-1, ``|s_1(i) - s_1(j)| >= min_gap``, both ``s_1 >= min_saturation`` and both
passing the paper's filter (paper: 30 / 10 / 10 for text, 5 / 5 for ViT and Whisper). For each offset ``d``
in ``-window..window`` the output of block ``x = s_1(i) + d`` at position ``j`` is replaced by the output of
block ``x`` at position ``i`` (the donor's residual index ``x + 1``); the run continues from there. A trial
succeeds when the recipient's new ``s_1`` equals ``x`` and its final top-1 is unchanged.

Fixes to the released GPT-2 path: all three return values are used, the hook *replaces the block output*
(the released hook returned the block input, skipping the block), and the implant is written at the
recipient position of every batch row (the released batch-dimension slice made it a no-op). Replacement hooks
are removed in ``finally``, so the model is left exactly as it was.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from .backends import Backend
from .layers import SaturationData, lens_topk, saturation_layers

DEFAULT_WINDOW = 5
DEFAULT_MAX_PAIRS = 200


def find_pairs(data: SaturationData, *, max_distance: int | None = 30, min_gap: int = 10, min_saturation: int = 10,
               within_item: bool = True) -> list[tuple[int, int]]:
    """Sorted donor/recipient index pairs ``(a, b)`` into ``data``.

    ``a`` is the earlier position (across items: the earlier item).
    """
    s1, top1 = data.saturation[:, 0], data.top[:, 0]
    candidates = np.flatnonzero(data.kept & (s1 >= min_saturation))
    pairs: list[tuple[int, int]] = []
    if within_item:
        for item in np.unique(data.item[candidates]):
            members = candidates[data.item[candidates] == item]
            members = members[np.argsort(data.position[members], kind="stable")]
            positions = data.position[members]
            for index, a in enumerate(members):
                if max_distance is None:
                    stop = len(members)
                else:
                    stop = np.searchsorted(positions, positions[index] + max_distance, side="right")
                later = members[index + 1 : stop]
                later = later[data.position[later] > data.position[a]]
                ok = (top1[later] == top1[a]) & (np.abs(s1[later] - s1[a]) >= min_gap)
                pairs.extend((int(a), int(b)) for b in later[ok])
    else:
        for token in np.unique(top1[candidates]):
            members = candidates[top1[candidates] == token]
            first, second = np.triu_indices(len(members), k=1)
            ok = np.abs(s1[members[first]] - s1[members[second]]) >= min_gap
            pairs.extend((int(members[a]), int(members[b])) for a, b in zip(first[ok], second[ok]))
    return sorted(pairs)


@contextlib.contextmanager
def replace_block_outputs(layers, replacements: dict[int, list[tuple[int, int, torch.Tensor]]]):
    """Within the block, replace block ``x``'s output at ``(row, position)`` by ``vector``.

    One replacement per ``(row, position, vector)`` in ``replacements[x]``. Hooks are removed in ``finally``.
    """
    handles = []

    def make_hook(entries):
        def hook(module, args, output):
            tensor = output[0] if isinstance(output, (tuple, list)) else output
            tensor = tensor.clone()
            for row, position, vector in entries:
                tensor[row, position] = vector.to(tensor.dtype).to(tensor.device)
            if isinstance(output, tuple):
                return (tensor,) + tuple(output[1:])
            if isinstance(output, list):
                return [tensor] + list(output[1:])
            return tensor

        return hook

    try:
        for layer_index, entries in replacements.items():
            handles.append(layers[layer_index].register_forward_hook(make_hook(entries)))
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def implant(backend: Backend, data: SaturationData, donor: int, recipient: int,
            window: int = DEFAULT_WINDOW) -> list[dict]:
    """One trial per offset ``-window..window`` (offsets whose block falls outside ``0..L-1`` are skipped)."""
    if data.residual is None:
        raise ValueError("the intervention needs the residual stream (collect with keep_residual=True)")
    L = data.num_layers
    s_donor = int(data.saturation[donor, 0])
    offsets = [d for d in range(-window, window + 1) if 0 <= s_donor + d <= L - 1]
    if not offsets:
        return []
    item = data.items[int(data.item[recipient])]
    position = int(data.position[recipient])
    inputs = {key: value.repeat(len(offsets), *([1] * (value.ndim - 1))) for key, value in item.inputs.items()}
    replacements: dict[int, list] = {}
    for row, d in enumerate(offsets):
        x = s_donor + d
        vector = torch.from_numpy(np.ascontiguousarray(data.residual[x + 1, donor]))
        replacements.setdefault(x, []).append((row, position, vector))
    with replace_block_outputs(backend.layer_modules(), replacements):
        states = backend.states(inputs)[:, :, position]  # (L+1, rows, H)
    ids, _ = lens_topk(backend, states, 1)
    new_s1 = saturation_layers(ids.cpu().numpy(), 1)[:, 0]
    new_top1 = ids[-1, :, 0].cpu().numpy()
    original = int(data.top[recipient, 0])
    trials = []
    for row, d in enumerate(offsets):
        x = s_donor + d
        trials.append({
            "donor": donor,
            "recipient": recipient,
            "offset": d,
            "implant_layer": x,
            "donor_s1": s_donor,
            "recipient_s1": int(data.saturation[recipient, 0]),
            "new_s1": int(new_s1[row]),
            "prediction_unchanged": bool(new_top1[row] == original),
            "success": bool(new_s1[row] == x and new_top1[row] == original),
        })
    return trials


def run_interventions(backend: Backend, data: SaturationData, pairs: list[tuple[int, int]], *,
                      window: int = DEFAULT_WINDOW, max_pairs: int | None = DEFAULT_MAX_PAIRS, seed: int = 0,
                      progress: bool = True) -> tuple[list[dict], dict]:
    """Run :func:`implant` on (a random subset of at most ``max_pairs``) pairs.

    Returns the trials and a summary: success rate per offset, overall and split by whether the donor
    saturates earlier than the recipient.
    """
    from tqdm.auto import tqdm

    if max_pairs is not None and len(pairs) > max_pairs:
        rng = np.random.default_rng(seed)
        pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), size=max_pairs, replace=False))]
    trials = []
    for donor, recipient in tqdm(pairs, desc="intervene", disable=not progress):
        trials.extend(implant(backend, data, donor, recipient, window))

    def rates(selected):
        out = {}
        for d in range(-window, window + 1):
            at = [t for t in selected if t["offset"] == d]
            out[d] = {"trials": len(at),
                      "success_rate": float(np.mean([t["success"] for t in at])) if at else float("nan"),
                      "unchanged_rate": float(np.mean([t["prediction_unchanged"] for t in at])) if at else float("nan")}
        return out

    summary = {
        "pairs": len(pairs),
        "trials": len(trials),
        "window": window,
        "by_offset": rates(trials),
        "donor_saturates_earlier": rates([t for t in trials if t["donor_s1"] < t["recipient_s1"]]),
        "donor_saturates_later": rates([t for t in trials if t["donor_s1"] > t["recipient_s1"]]),
    }
    return trials, summary
