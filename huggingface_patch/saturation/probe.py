"""Task-index probing: can the residual stream tell which rank the model is currently fixing.

Labels: residual index ``l`` (the input of block ``l`` = output of block ``l-1``) of a position is labelled task
``i`` (0-based ``i-1``) when ``s_{i-1} < l <= s_i``, with ``s_0 = first_layer - 1`` (the paper starts at layer
5): the rank-``(i-1)`` token is fixed at that point (it is fixed from the output of block ``s_{i-1}``, residual
index ``s_{i-1} + 1``) and the rank-``i`` token is not yet. Labelling stops at the first unsaturated rank
(``s_i = L-1``); out-of-order ranks give empty intervals (the lower bound is the largest ``s`` so far, so
every layer has at most one label).

Examples are balanced per layer (layers with at least two classes of ``min_per_class`` examples; each class
subsampled to the smallest), then StandardScaler + one-vs-rest LogisticRegression (max_iter 1000) is scored
with 5-fold CV: balanced accuracy ± SE over folds and per-task ROC-AUC (out-of-fold, one vs rest).

Folds are *grouped*: every residual of one position (or, with ``groups="document"``, of one document) lands
in the same fold. A position's residuals at neighbouring layers are near-duplicates, so folds that split a
position would score memorisation (the paper's code uses plain stratified folds).

Two controls, each scored by the same grouped CV:

* ``class_scalar_gaussian_control`` — the paper's control as its code builds it: random features drawn, for
  every feature, from one normal per class (the class's mean and sd over all its features and examples);
* ``permuted_labels`` — the standard null: the labels are permuted within each layer (the features, layers
  and groups unchanged) ``permutations`` times; the probe's accuracy is compared with these (``p_value``),
  and their mean sits at chance.
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
    """``(X, y, layer, position)``: balanced residual features ``(n, H)``, task labels ``(n,)``, residual
    indices ``(n,)`` and the index of the position each example comes from ``(n,)``."""
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
        return np.zeros((0, H), np.float32), np.zeros(0, int), np.zeros(0, int), np.zeros(0, int)
    X = data.residual[layers[chosen], rows[chosen]]
    return X, tasks[chosen], layers[chosen], rows[chosen]


def make_probe():
    """StandardScaler + one-vs-rest LogisticRegression(max_iter=1000)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), OneVsRestClassifier(LogisticRegression(max_iter=1000)))


def class_scalar_gaussian_control(X: np.ndarray, y: np.ndarray, seed: int = 0) -> np.ndarray:
    """The paper's control: every feature of a class-``c`` example drawn from ``N(mean_c, sd_c)``, one scalar
    mean and sd per class (over all its features and examples)."""
    rng = np.random.default_rng(seed)
    out = np.empty(X.shape, dtype=np.float64)
    for c in np.unique(y):
        rows = y == c
        values = X[rows].astype(np.float64)
        out[rows] = rng.normal(values.mean(), values.std(), size=(int(rows.sum()), X.shape[1]))
    return out


def permute_within_layers(y: np.ndarray, layers: np.ndarray, rng) -> np.ndarray:
    """``y`` with its labels shuffled among the examples of each layer."""
    out = y.copy()
    for layer in np.unique(layers):
        at = np.flatnonzero(layers == layer)
        out[at] = y[rng.permutation(at)]
    return out


def _splits(y: np.ndarray, groups: np.ndarray, folds: int, seed: int):
    from sklearn.model_selection import StratifiedGroupKFold

    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise InputError(f"probing needs at least two tasks with examples; found {len(classes)}")
    n_splits = min(folds, int(counts.min()), len(np.unique(groups)))
    if n_splits < 2:
        raise InputError("probing needs at least two examples per task, from at least two positions")
    return StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(X=y, y=y, groups=groups)


def cross_validate(X: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int = DEFAULT_FOLDS,
                   seed: int = 0) -> dict:
    """Grouped stratified k-fold CV of :func:`make_probe` (no group in two folds): balanced accuracy ± SE
    over folds and per-task ROC-AUC."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    classes = np.unique(y)
    scores, proba = [], np.zeros((len(y), len(classes)))
    splits = list(_splits(y, groups, folds, seed))
    for train, test in splits:
        if len(np.unique(y[train])) < 2:
            continue
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
        "balanced_accuracy": float(scores.mean()) if len(scores) else float("nan"),
        "balanced_accuracy_se": float(scores.std(ddof=1) / np.sqrt(len(scores))) if len(scores) > 1 else float("nan"),
        "fold_scores": [float(s) for s in scores],
        "folds": len(splits),
        "roc_auc_per_task": auc,
    }


def permuted_label_null(X: np.ndarray, y: np.ndarray, layers: np.ndarray, groups: np.ndarray, observed: float,
                        permutations: int, folds: int = DEFAULT_FOLDS, seed: int = 0) -> dict:
    """The probe's accuracy with labels permuted within each layer, ``permutations`` times: their mean, sd
    and the p-value of the observed accuracy ``(1 + #{null >= observed}) / (1 + permutations)``."""
    rng = np.random.default_rng(seed + 1)
    null = np.array([cross_validate(X, permute_within_layers(y, layers, rng), groups, folds, seed)["balanced_accuracy"]
                     for _ in range(permutations)])
    at_least = int((null >= observed).sum())
    return {"permutations": permutations,
            "balanced_accuracy_mean": float(null.mean()) if permutations else float("nan"),
            "balanced_accuracy_sd": float(null.std(ddof=1)) if permutations > 1 else float("nan"),
            "balanced_accuracies": [float(v) for v in null], "at_least_observed": at_least,
            "p_value": (at_least + 1) / (permutations + 1)}


#: ``groups`` values of :func:`probe_tasks`
GROUPINGS = ("position", "document")
#: default label permutations of the null
DEFAULT_LABEL_PERMUTATIONS = 20


def probe_tasks(data: SaturationData, *, first_layer: int | None = None, folds: int = DEFAULT_FOLDS,
                min_per_class: int = MIN_PER_CLASS, seed: int = 0, groups: str = "position",
                permutations: int = DEFAULT_LABEL_PERMUTATIONS) -> dict:
    """The whole probing analysis on kept positions (the paper's filter), grouped folds, with both controls."""
    if groups not in GROUPINGS:
        raise InputError(f"unknown probe grouping {groups!r}: choose from {', '.join(GROUPINGS)}")
    first_layer = default_first_layer(data.num_layers) if first_layer is None else first_layer
    X, y, layers, positions = probe_dataset(data, first_layer=first_layer, min_per_class=min_per_class, seed=seed)
    if len(np.unique(y)) < 2:
        raise InputError(
            f"not enough data to probe: fewer than two tasks have {min_per_class} examples at a common layer "
            "(use a larger input, or lower --min-per-class / --first-layer)"
        )
    group_of = positions if groups == "position" else data.document[positions]
    classes, counts = np.unique(y, return_counts=True)
    probe = cross_validate(X, y, group_of, folds, seed)
    return {
        "first_layer": first_layer,
        "min_per_class": min_per_class,
        "examples": int(len(y)),
        "positions": int(len(np.unique(positions))),
        "folds_grouped_by": groups,
        "layers_used": sorted(int(x) for x in np.unique(layers)),
        "examples_per_task": {int(c) + 1: int(n) for c, n in zip(classes, counts)},
        "chance": 1.0 / len(classes),
        "probe": probe,
        "class_scalar_gaussian_control": cross_validate(class_scalar_gaussian_control(X, y, seed), y, group_of,
                                                        folds, seed),
        "permuted_labels": permuted_label_null(X, y, layers, group_of, probe["balanced_accuracy"], permutations,
                                               folds, seed),
    }
