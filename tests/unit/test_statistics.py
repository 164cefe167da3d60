"""The statistics the analyses report: intervals that respect bounds and clusters, paired tests, selected
maxima, the two saturation-ordering tests and the probe's controls; each checked on data with a known
answer (a null that must give uniform p-values, a bias that must show, an interval that must stay inside
its bounds)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from huggingface_patch.saturation.ordering import kendall_tests, permutation_test, selection_aware_test
from huggingface_patch.stats import (
    bootstrap_mean,
    curve_with_intervals,
    mcnemar,
    paired_comparison,
    rate_interval,
    selected_extremum,
    wilson,
)

# ------------------------------------------------------------------------------------------ intervals


def test_wilson_matches_the_closed_form_and_stays_in_bounds():
    from scipy.stats import binomtest

    for k, n in [(0, 20), (1, 20), (10, 20), (20, 20), (3, 7)]:
        interval = wilson(k, n)
        reference = binomtest(k, n).proportion_ci(0.95, method="wilson")
        assert interval.low == pytest.approx(reference.low, abs=1e-12)
        assert interval.high == pytest.approx(reference.high, abs=1e-12)
        assert 0.0 <= interval.low <= interval.estimate <= interval.high <= 1.0
    assert wilson(0, 20).low == 0.0 and wilson(0, 20).high > 0.05  # not degenerate at zero events


def test_bootstrap_interval_of_a_rate_near_zero_stays_inside_zero_one():
    events = np.r_[np.ones(2), np.zeros(98)]
    for clusters in (None, np.repeat(np.arange(20), 5)):
        interval = rate_interval(events, clusters, cluster_by=None if clusters is None else "relation")
        assert 0.0 <= interval.low <= interval.estimate <= interval.high <= 1.0


def test_cluster_bootstrap_is_wider_when_items_cluster():
    # 20 clusters of 10 identical values: 20 independent observations, not 200
    rng = np.random.default_rng(0)
    per_cluster = rng.normal(size=20)
    values = np.repeat(per_cluster, 10)
    clusters = np.repeat(np.arange(20), 10)
    naive = bootstrap_mean(values, seed=1)
    clustered = bootstrap_mean(values, clusters, cluster_by="document", seed=1)
    assert clustered.clusters == 20 and clustered.cluster_by == "document" and naive.clusters is None
    width = lambda i: i.high - i.low  # noqa: E731
    assert width(clustered) > 2.5 * width(naive)
    # the clustered interval matches the bootstrap of the 20 cluster means
    of_means = bootstrap_mean(per_cluster, seed=1)
    assert width(clustered) == pytest.approx(width(of_means), rel=0.15)


def test_bootstrap_coverage_is_near_nominal():
    rng = np.random.default_rng(3)
    covered = 0
    for seed in range(200):
        values = rng.exponential(size=60)
        interval = bootstrap_mean(values, resamples=500, seed=seed)
        covered += interval.low <= 1.0 <= interval.high
    assert 0.88 <= covered / 200 <= 0.99


# ------------------------------------------------------------------------------------- paired tests


def test_mcnemar_is_the_exact_binomial_on_discordant_pairs():
    a = np.array([1] * 10 + [0] * 2 + [1] * 30 + [0] * 30)
    b = np.array([0] * 10 + [1] * 2 + [1] * 30 + [0] * 30)
    p, discordant = mcnemar(a, b)
    assert discordant == (10, 2)
    # exact two-sided binomial(12, 0.5) of 10 or more either way
    expected = 2 * sum(math.comb(12, k) for k in range(10, 13)) / 2**12
    assert p == pytest.approx(expected)
    result = paired_comparison(a, b)
    assert result.test == "McNemar exact" and result.p_value == pytest.approx(expected)
    assert result.difference.estimate == pytest.approx(8 / 72)


def test_sign_flip_test_is_exact_for_few_clusters():
    # 4 clusters, all differences positive: of the 16 sign patterns only all + and all - reach |sum| -> p = 2/16
    d = np.array([1.0, 2.0, 3.0, 4.0])
    result = paired_comparison(d, np.zeros(4), clusters=["a", "b", "c", "d"], cluster_by="subject")
    assert result.p_value == pytest.approx(2 / 16)
    assert result.test.startswith("sign-flip")


def test_paired_null_gives_uniform_p_values():
    rng = np.random.default_rng(5)
    rejections = 0
    for _ in range(200):
        a = rng.normal(size=40)
        b = a + rng.normal(size=40)  # same mean
        clusters = np.repeat(np.arange(20), 2)
        rejections += paired_comparison(a, b, clusters, resamples=200).p_value < 0.05
    assert rejections / 200 < 0.1


# --------------------------------------------------------------------------------- selected extrema


def test_selected_maximum_repeats_the_selection():
    # 8 layers with the same true mean: the picked maximum is biased upward, and the layer is a coin toss
    rng = np.random.default_rng(0)
    values = rng.normal(size=(50, 8))
    result = selected_extremum(values, labels=[f"L{i}" for i in range(8)], kind="max", seed=0)
    assert result.point == f"L{int(np.argmax(values.mean(0)))}"
    assert result.value.estimate == pytest.approx(values.mean(0).max())
    assert len(result.selection_share) > 3  # the resamples pick many different layers
    assert max(result.selection_share.values()) < 0.6
    assert sum(result.selection_share.values()) == pytest.approx(1.0)
    # the re-selected maximum's interval sits above the pointwise interval of a fixed layer
    pointwise = curve_with_intervals(values, seed=0)[int(np.argmax(values.mean(0)))]
    assert result.value.low > pointwise.low


def test_selected_minimum_of_a_clear_dip():
    values = np.zeros((30, 5)) + np.random.default_rng(1).normal(scale=0.1, size=(30, 5))
    values[:, 3] -= 5
    result = selected_extremum(values, kind="min", clusters=np.repeat(np.arange(10), 3), cluster_by="relation")
    assert result.point == 3 and result.selection_share == {3: 1.0}
    assert result.value.high < -4 and result.value.clusters == 10


# -------------------------------------------------------------------- the saturation ordering tests


def null_table(seed: int, positions: int = 100, k: int = 5, num_layers: int = 30) -> np.ndarray:
    """Saturation layers with no rank order at all: each position's k layers i.i.d. uniform."""
    return np.random.default_rng(seed).integers(0, num_layers, size=(positions, k))


def test_selection_aware_test_is_uniform_under_the_null_and_the_papers_is_not():
    L = 30
    limit = math.floor(0.85 * L)
    aware, paper = [], []
    for seed in range(100):
        table = null_table(seed)
        result = kendall_tests(table, L, limit, n_permutations=200, seed=seed)
        aware.append(result["selection_aware"]["p_value"])
        paper.append(result["paper"]["p_value"])
    aware, paper = np.array(aware), np.array(paper)
    assert np.mean(aware < 0.05) <= 0.12  # about 5 % of 100 seeds
    assert np.mean(aware < 0.5) == pytest.approx(0.5, abs=0.15)
    # the paper's test (shuffle after the filter) rejects far more often than 5 %: anti-conservative
    assert np.mean(paper < 0.05) >= 0.15


def test_selection_aware_test_detects_a_real_rank_order():
    rng = np.random.default_rng(0)
    L = 30
    ordered = np.sort(rng.integers(0, L - 1, size=(150, 5)), axis=1)
    result = selection_aware_test(ordered, L, math.floor(0.85 * L), n_permutations=500, seed=0)
    assert result["null_at_least_observed"] == 0 and result["p_value"] == pytest.approx(1 / 501)
    assert result["tau"] > result["null_mean"] + 5 * result["null_sd"]


def test_selection_aware_null_by_brute_force():
    # one position (0, 1, 2) with L = 10 and no filter: every shuffle keeps c = 3, so the null is the 6 permutations
    sat = np.array([[0, 1, 2]])
    result = selection_aware_test(sat, 10, None, n_permutations=6000, seed=0)
    assert result["tau"] == pytest.approx(1.0)
    assert result["null_at_least_observed"] / 6000 == pytest.approx(1 / 6, abs=0.02)
    with_filter = selection_aware_test(sat, 10, 0, n_permutations=3000, seed=0)
    # with the filter s_1 <= 0 only the shuffles that keep 0 first count: (0,1,2) and (0,2,1), tau 1 and 1/3
    assert with_filter["null_mean"] == pytest.approx((1 + 1 / 3) / 2, abs=0.03)
    assert with_filter["null_defined"] < 3000


def test_both_tests_agree_without_a_filter_when_every_rank_saturates():
    # no filter and no unsaturated rank: the two nulls are the same distribution
    rng = np.random.default_rng(2)
    table = rng.integers(0, 20, size=(80, 4))
    result = kendall_tests(table, 40, None, n_permutations=2000, seed=1)
    assert result["paper"]["tau"] == result["selection_aware"]["tau"]
    assert result["paper"]["null_mean"] == pytest.approx(result["selection_aware"]["null_mean"], abs=0.01)
    assert "biased" in result["paper"]["note"] or "anti-conservative" in result["paper"]["note"]


def test_paper_test_is_unchanged_by_the_refactor():
    # the example of the paper-style test: exact count against brute force over the 3! orders
    sat = np.array([[2, 0, 1]])
    result = permutation_test(sat, num_layers=10, n_permutations=6000, seed=0)
    taus = [np.mean([1 if p[i] < p[j] else -1 for i, j in itertools.combinations(range(3), 2)])
            for p in itertools.permutations([2, 0, 1])]
    assert result["null_mean"] == pytest.approx(np.mean(taus), abs=0.03)


# ------------------------------------------------------------------------------------- probe controls


def synthetic_saturation_data(seed: int = 0, positions: int = 120, num_layers: int = 12, hidden: int = 16,
                              signal: float = 0.0):
    """Saturation data whose residuals carry ``signal`` times the task label (0: pure noise)."""
    from huggingface_patch.saturation.layers import SaturationData
    from huggingface_patch.saturation.probe import task_labels

    rng = np.random.default_rng(seed)
    k = 4
    sat = np.sort(rng.integers(1, num_layers - 1, size=(positions, k)), axis=1)
    residual = rng.normal(size=(num_layers + 1, positions, hidden)).astype(np.float32)
    for n in range(positions):
        for layer, task in task_labels(sat[n], num_layers, 1).items():
            residual[layer, n, task % hidden] += signal
    zeros = np.zeros(positions, dtype=np.int64)
    return SaturationData(num_layers=num_layers, k=k, saturation=sat, top=np.zeros((positions, k), np.int64),
                          lens_top=np.zeros((num_layers, positions, 2), np.int64),
                          lens_prob=np.zeros((num_layers, positions, 2)), target=zeros - 1, item=zeros,
                          position=np.arange(positions), document=np.arange(positions) // 10, token_index=zeros,
                          residual=residual)


def test_papers_gaussian_control_has_one_mean_and_sd_per_class():
    from huggingface_patch.saturation.probe import class_scalar_gaussian_control

    rng = np.random.default_rng(0)
    X = rng.normal(size=(4000, 6)) + np.arange(6)  # features with different means
    y = np.repeat([0, 1], 2000)
    X[y == 1] += 10
    control = class_scalar_gaussian_control(X, y, seed=0)
    for c in (0, 1):
        per_feature = control[y == c].mean(axis=0)
        assert np.ptp(per_feature) < 0.6  # one mean for every feature (the data's span 5 is gone)
        assert per_feature.mean() == pytest.approx(X[y == c].mean(), abs=0.2)


def test_probe_on_noise_sits_at_chance_and_its_null_too():
    from huggingface_patch.saturation.probe import probe_tasks

    data = synthetic_saturation_data(signal=0.0)
    result = probe_tasks(data, first_layer=1, folds=3, min_per_class=3, seed=0, permutations=5)
    chance = result["chance"]
    assert result["folds_grouped_by"] == "position"
    assert abs(result["probe"]["balanced_accuracy"] - chance) < 0.1
    assert abs(result["permuted_labels"]["balanced_accuracy_mean"] - chance) < 0.1
    assert result["permuted_labels"]["p_value"] > 0.05


def test_probe_with_signal_beats_its_null():
    from huggingface_patch.saturation.probe import probe_tasks

    data = synthetic_saturation_data(signal=3.0)
    result = probe_tasks(data, first_layer=1, folds=3, min_per_class=3, seed=0, permutations=5)
    assert result["probe"]["balanced_accuracy"] > result["chance"] + 0.3
    assert result["permuted_labels"]["p_value"] == pytest.approx(1 / 6)
    assert result["permuted_labels"]["balanced_accuracy_mean"] < result["chance"] + 0.1


@pytest.mark.parametrize("groups", ["position", "document"])
def test_cross_validation_folds_never_split_a_group(groups):
    from huggingface_patch.saturation.probe import _splits, probe_dataset

    data = synthetic_saturation_data()
    X, y, layers, positions = probe_dataset(data, first_layer=1, min_per_class=3)
    group_of = positions if groups == "position" else data.document[positions]
    seen = {}
    for fold, (_, test) in enumerate(_splits(y, group_of, 5, seed=0)):
        for g in np.unique(group_of[test]):
            assert seen.setdefault(int(g), fold) == fold, f"{groups} {g} is in two test folds"
    assert len(seen) == len(np.unique(group_of))


def test_holm_adjustment_matches_a_hand_computed_family():
    from huggingface_patch.stats import holm

    # sorted 0.01, 0.03, 0.04 -> 3 x 0.01 = 0.03, 2 x 0.03 = 0.06, max(0.06, 1 x 0.04) = 0.06
    assert holm([0.01, 0.04, 0.03, float("nan")])[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(holm([0.5, float("nan")])[1]) and holm([0.9, 0.8]) == [1.0, 1.0]
