"""Task-index probing: can the residual stream tell which rank the model is currently fixing.

Labels: residual index ``l`` (the input of block ``l`` = output of block ``l-1``) of a position is labelled task
``i`` (0-based ``i-1``) when ``s_{i-1} < l <= s_i``, with ``s_0 = first_layer - 1`` (the paper starts at layer
5): the rank-``(i-1)`` token is fixed at that point (it is fixed from the output of block ``s_{i-1}``, residual
index ``s_{i-1} + 1``) and the rank-``i`` token is not yet. Labelling stops at the first unsaturated rank
(``s_i = L-1``); out-of-order ranks give empty intervals (the lower bound is the largest ``s`` so far, so
every layer has at most one label).

Examples are balanced per layer (layers with at least two classes of ``min_per_class`` examples; each class
subsampled to the smallest), then StandardScaler + one-vs-rest LogisticRegression (max_iter 1000) is scored
with stratified 5-fold CV: balanced accuracy ± SE over folds and per-task ROC-AUC (out-of-fold, one vs rest).
The control replaces the features by Gaussian noise with each class's per-feature mean and sd.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .layers import SaturationData

DEFAULT_FIRST_LAYER = 5
DEFAULT_FOLDS = 5
MIN_PER_CLASS = 5


def default_first_layer(num_layers: int) -> int:
    """The paper's 5, or 1 for models with fewer than 10 blocks (tiny test models)."""
    return DEFAULT_FIRST_LAYER if num_layers >= 10 else 1


def task_labels(saturation_row, num_layers: int, first_layer: int = DEFAULT_FIRST_LAYER) -> dict[int, int]:
    """``{residual index: task}`` (0-based tasks) for one position's ``s_1..s_k``."""
    labels: dict[int, int] = {}
    lower = first_layer - 1
    for task, s in enumerate(int(v) for v in saturation_row):
        if s >= num_layers - 1:
            break
        for layer in range(lower + 1, s + 1):
            labels[layer] = task
        lower = max(lower, s)
    return labels


def probe_dataset(data: SaturationData, mask: np.ndarray | None = None, first_layer: int = DEFAULT_FIRST_LAYER,
                  min_per_class: int = MIN_PER_CLASS, seed: int = 0):
    """``(X, y, layer)``: balanced residual features ``(n, H)``, task labels ``(n,)`` and residual indices."""
    if data.residual is None:
        raise ValueError("probing needs the residual stream (collect with keep_residual=True)")
    mask = data.kept if mask is None else mask
    rows, layers, tasks = [], [], []
    for n in np.flatnonzero(mask):
        for layer, task in task_labels(data.saturation[n], data.num_layers, first_layer).items():
            rows.append(n)
            layers.append(layer)
            tasks.append(task)
    rows, layers, tasks = np.array(rows, dtype=int), np.array(layers, dtype=int), np.array(tasks, dtype=int)
    rng = np.random.default_rng(seed)
    chosen = []
    for layer in np.unique(layers):
        at = np.flatnonzero(layers == layer)
        classes, counts = np.unique(tasks[at], return_counts=True)
        classes = classes[counts >= min_per_class]
        if len(classes) < 2:
            continue
        size = min(int((tasks[at] == c).sum()) for c in classes)
        for c in classes:
            members = at[tasks[at] == c]
            chosen.extend(rng.choice(members, size=size, replace=False))
    chosen = np.sort(np.array(chosen, dtype=int))
    H = data.residual.shape[-1]
    if chosen.size == 0:
        return np.zeros((0, H), np.float32), np.zeros(0, int), np.zeros(0, int)
    X = data.residual[layers[chosen], rows[chosen]]
    return X, tasks[chosen], layers[chosen]


def make_probe():
    """StandardScaler + one-vs-rest LogisticRegression(max_iter=1000)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), OneVsRestClassifier(LogisticRegression(max_iter=1000)))


def gaussian_control(X: np.ndarray, y: np.ndarray, seed: int = 0) -> np.ndarray:
    """Features drawn from N(class mean, class sd) per feature, for the same labels."""
    rng = np.random.default_rng(seed)
    out = np.empty_like(X, dtype=np.float64)
    for c in np.unique(y):
        rows = y == c
        out[rows] = rng.normal(X[rows].mean(axis=0), X[rows].std(axis=0), size=(int(rows.sum()), X.shape[1]))
    return out


def cross_validate(X: np.ndarray, y: np.ndarray, folds: int = DEFAULT_FOLDS, seed: int = 0) -> dict:
    """Stratified k-fold CV of :func:`make_probe`: balanced accuracy ± SE and per-task ROC-AUC."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise InputError(f"probing needs at least two tasks with examples; found {len(classes)}")
    n_splits = min(folds, int(counts.min()))
    if n_splits < 2:
        raise InputError("probing needs at least two examples per task")
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    scores, proba = [], np.zeros((len(y), len(classes)))
    for train, test in splitter.split(X, y):
        clf = make_probe().fit(X[train], y[train])
        scores.append(balanced_accuracy_score(y[test], clf.predict(X[test])))
        p = clf.predict_proba(X[test])
        proba[np.ix_(test, np.searchsorted(classes, clf.classes_))] = p
    scores = np.array(scores)
    auc = {}
    for index, c in enumerate(classes):
        positive = y == c
        defined = 0 < positive.sum() < len(y)
        auc[int(c) + 1] = float(roc_auc_score(positive, proba[:, index])) if defined else float("nan")
    return {
        "balanced_accuracy": float(scores.mean()),
        "balanced_accuracy_se": float(scores.std(ddof=1) / np.sqrt(len(scores))) if len(scores) > 1 else float("nan"),
        "fold_scores": [float(s) for s in scores],
        "folds": n_splits,
        "roc_auc_per_task": auc,
    }


def probe_tasks(data: SaturationData, *, first_layer: int | None = None, folds: int = DEFAULT_FOLDS,
                min_per_class: int = MIN_PER_CLASS, seed: int = 0) -> dict:
    """The whole probing analysis on kept positions (the paper's filter), with the Gaussian control."""
    first_layer = default_first_layer(data.num_layers) if first_layer is None else first_layer
    X, y, layers = probe_dataset(data, first_layer=first_layer, min_per_class=min_per_class, seed=seed)
    if len(np.unique(y)) < 2:
        raise InputError(
            f"not enough data to probe: fewer than two tasks have {min_per_class} examples at a common layer "
            "(use a larger input, or lower --min-per-class / --first-layer)"
        )
    classes, counts = np.unique(y, return_counts=True)
    result = {
        "first_layer": first_layer,
        "min_per_class": min_per_class,
        "examples": int(len(y)),
        "layers_used": sorted(int(x) for x in np.unique(layers)),
        "examples_per_task": {int(c) + 1: int(n) for c, n in zip(classes, counts)},
        "chance": 1.0 / len(classes),
        "probe": cross_validate(X, y, folds, seed),
        "gaussian_control": cross_validate(gaussian_control(X, y, seed), y, folds, seed),
    }
    return result
