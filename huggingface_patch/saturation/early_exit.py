"""Early exit: stop at the first layer where a rule fires and answer with that layer's logit-lens top-1.

Layers are residual indices ``l = first_layer..L`` (``l`` blocks computed; the prediction is the logit lens of
residual ``l``); a position whose rule never fires exits at ``L`` (the full model). Rules:

* ``probe``: the task probe (:mod:`.probe`, trained on other positions) predicts task 2 (class 1 in the
  released code: the top-1 is already fixed). ``probe-p``: its probability of any task after the first is at
  least a threshold (a curve);
* ``margin``: softmax margin ``p_1 - p_2`` at layer ``l`` at least a threshold (0.40 ... 0.94);
* ``cosine``: ``cos(h_l, h_{l-1})`` of the raw residual at least a threshold (0.986 ... 0.995);
* ``oracle``: exit at ``s_1 + 1`` (the output of block ``s_1``), where the top-1 becomes final.

Accuracy is against the gold target where known (the next token; an image's folder label), else against the
model's own final top-1. Speed-up = ``L * N / sum(exit layers)``. Every method writes its own prediction array
(the released code shared one array that every method mutated).

The probe is compared with each baseline on the same test positions (``comparisons``): the baseline's
threshold whose speed-up is closest to the probe's is chosen *by speed-up alone* (never by accuracy), and the
per-position correctness of the two is compared as pairs (cluster bootstrap of the difference and a sign-flip
test, clustered by document).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .layers import SaturationData
from .probe import default_first_layer, make_probe, probe_dataset

MARGIN_THRESHOLDS = tuple(round(0.40 + 0.06 * i, 2) for i in range(10))  # 0.40 ... 0.94
COSINE_THRESHOLDS = tuple(round(0.986 + 0.001 * i, 3) for i in range(10))  # 0.986 ... 0.995
PROBE_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def exit_by_rule(fires: np.ndarray, first_layer: int, num_layers: int) -> np.ndarray:
    """Exit layers ``(N,)``: the first ``l >= first_layer`` where ``fires`` ``(L+1, N)`` is true, else ``L``.

    ``fires[l]`` refers to residual index ``l``.
    """
    fires = np.array(fires, dtype=bool, copy=True)
    fires[:first_layer] = False
    fires[num_layers] = True
    return np.argmax(fires, axis=0)


def evaluate_exits(data: SaturationData, rows: np.ndarray, exit_layers: np.ndarray) -> dict:
    """Accuracy and speed-up of exiting ``rows`` at ``exit_layers`` (a fresh prediction array per call)."""
    exit_layers = np.asarray(exit_layers, dtype=int)
    predictions = data.lens_top[exit_layers - 1, rows, 0].copy()
    reference = data.reference()[rows]
    return {
        "accuracy": float((predictions == reference).mean()) if len(rows) else float("nan"),
        "speedup": float(data.num_layers * len(rows) / exit_layers.sum()) if len(rows) else float("nan"),
        "mean_exit_layer": float(exit_layers.mean()) if len(rows) else float("nan"),
    }


def correct_at_exits(data: SaturationData, rows: np.ndarray, exit_layers: np.ndarray) -> np.ndarray:
    """``(n,)`` bool: whether each row's prediction at its exit layer is right."""
    exit_layers = np.asarray(exit_layers, dtype=int)
    return data.lens_top[exit_layers - 1, rows, 0] == data.reference()[rows]


def compare_with_baselines(data: SaturationData, test: np.ndarray, probe_exits: np.ndarray,
                           baselines: dict[str, list[tuple[object, np.ndarray]]], seed: int = 0) -> dict:
    """Probe vs each baseline at the baseline threshold of nearest speed-up, paired on the test positions."""
    from ..stats import paired_comparison

    probe_correct = correct_at_exits(data, test, probe_exits).astype(float)
    probe_speedup = data.num_layers * len(test) / probe_exits.sum()
    documents = data.document[test]
    out = {}
    for name, options in baselines.items():
        speedups = [data.num_layers * len(test) / exits.sum() for _, exits in options]
        best = int(np.argmin([abs(v - probe_speedup) for v in speedups]))
        threshold, exits = options[best]
        comparison = paired_comparison(probe_correct, correct_at_exits(data, test, exits).astype(float), documents,
                                       cluster_by="document", seed=seed)
        out[name] = {"baseline_threshold": threshold, "baseline_speedup": float(speedups[best]),
                     "probe_speedup": float(probe_speedup), "accuracy_probe_minus_baseline": comparison.to_dict()}
    return out


def margin_exits(data: SaturationData, rows: np.ndarray, threshold: float, first_layer: int) -> np.ndarray:
    """Exit layers of ``rows`` by the softmax margin ``p_1 - p_2 >= threshold``."""
    L = data.num_layers
    margin = data.lens_prob[:, rows, 0] - data.lens_prob[:, rows, 1]  # (L, n) for residual 1..L
    fires = np.zeros((L + 1, len(rows)), bool)
    fires[1:] = margin >= threshold
    return exit_by_rule(fires, first_layer, L)


def cosine_exits(data: SaturationData, rows: np.ndarray, threshold: float, first_layer: int) -> np.ndarray:
    """Exit layers of ``rows`` by ``cos(h_l, h_{l-1}) >= threshold`` (raw residual stream)."""
    L = data.num_layers
    h = data.residual[:, rows].astype(np.float64)  # (L+1, n, H)
    norms = np.linalg.norm(h, axis=-1)
    cos = (h[1:] * h[:-1]).sum(-1) / np.maximum(norms[1:] * norms[:-1], 1e-12)
    fires = np.zeros((L + 1, len(rows)), bool)
    fires[1:] = cos >= threshold
    return exit_by_rule(fires, first_layer, L)


def oracle_exits(data: SaturationData, rows: np.ndarray) -> np.ndarray:
    """Exit at ``s_1 + 1``: the output of the block from which the top-1 stays fixed."""
    return data.saturation[rows, 0] + 1


def probe_probabilities(clf, data: SaturationData, rows: np.ndarray) -> np.ndarray:
    """``(L+1, n, classes)`` probe probabilities at every residual index."""
    L = data.num_layers
    H = data.residual.shape[-1]
    proba = clf.predict_proba(data.residual[:, rows].reshape(-1, H))
    return proba.reshape(L + 1, len(rows), -1)


def split_positions(n: int, test_fraction: float = 0.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random ``(train, test)`` split of ``n`` position indices (sorted)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    cut = int(round(n * (1 - test_fraction)))
    return np.sort(order[:cut]), np.sort(order[cut:])


def early_exit(data: SaturationData, *, first_layer: int | None = None, test_fraction: float = 0.5,
               min_per_class: int = 5, seed: int = 0) -> dict:
    """Train the task probe on one part of the positions, evaluate every exit rule on the rest."""
    if data.residual is None:
        raise ValueError("early exit needs the residual stream (collect with keep_residual=True)")
    L = data.num_layers
    first_layer = default_first_layer(L) if first_layer is None else first_layer
    train, test = split_positions(data.size, test_fraction, seed)
    if len(test) == 0 or len(train) == 0:
        raise InputError("early exit needs at least two positions (one to train the probe, one to test)")
    train_mask = np.zeros(data.size, bool)
    train_mask[train] = True
    X, y, _, _ = probe_dataset(data, train_mask & data.kept, first_layer, min_per_class, seed)
    curves: dict[str, list[dict]] = {}
    probe_note = None
    if len(np.unique(y)) >= 2:
        clf = make_probe().fit(X, y)
        classes = list(clf.classes_)
        proba = probe_probabilities(clf, data, test)
        predicted = np.asarray(classes)[proba.argmax(-1)]
        fires = predicted == 1
        exits = exit_by_rule(fires, first_layer, L)
        curves["probe"] = [{"threshold": "argmax = task 2", **evaluate_exits(data, test, exits)}]
        later = proba[:, :, [i for i, c in enumerate(classes) if c >= 1]].sum(-1)
        curves["probe-p"] = [{"threshold": t, **evaluate_exits(data, test, exit_by_rule(later >= t, first_layer, L))}
                             for t in PROBE_THRESHOLDS]
    else:
        probe_note = "probe not trained: fewer than two tasks in the training positions"
    margins = [(t, margin_exits(data, test, t, first_layer)) for t in MARGIN_THRESHOLDS]
    cosines = [(t, cosine_exits(data, test, t, first_layer)) for t in COSINE_THRESHOLDS]
    curves["margin"] = [{"threshold": t, **evaluate_exits(data, test, exits)} for t, exits in margins]
    curves["cosine"] = [{"threshold": t, **evaluate_exits(data, test, exits)} for t, exits in cosines]
    curves["oracle"] = [{"threshold": "s_1", **evaluate_exits(data, test, oracle_exits(data, test))}]
    curves["full"] = [{"threshold": "L", **evaluate_exits(data, test, np.full(len(test), L))}]
    result = {"first_layer": first_layer, "train_positions": int(len(train)), "test_positions": int(len(test)),
              "probe_examples": int(len(y)), "curves": curves}
    if probe_note:
        result["note"] = probe_note
    else:
        result["comparisons"] = compare_with_baselines(data, test, exits, {"margin": margins, "cosine": cosines}, seed)
    return result
