"""Saturation analyses on hand-built inputs.

Saturation layers, strict Kendall tau, the permutation test, rank correspondence, probe labels, early-exit
rules, the z-test, pair finding and the hook hygiene of the implant.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from huggingface_patch.saturation.early_exit import evaluate_exits, exit_by_rule
from huggingface_patch.saturation.intervene import replace_block_outputs
from huggingface_patch.saturation.layers import SaturationData, paper_filter, saturation_layers
from huggingface_patch.saturation.lm import rank2_accuracy, two_proportion_z_test
from huggingface_patch.saturation.ordering import (
    correspondence_indices,
    permutation_test,
    position_taus,
    rank_correspondence,
    ranks_used,
    strict_kendall_tau,
)
from huggingface_patch.saturation.probe import task_labels


def rankings(per_layer: list[list[int]]) -> np.ndarray:
    """(L, 1, k) rankings of one position from a list of per-layer rankings."""
    return np.array(per_layer)[:, None, :]


# ------------------------------------------------------------------------------- saturation layers


def test_all_layers_agree_gives_zero_not_L():
    ranks = rankings([[7, 8, 9]] * 6)
    assert saturation_layers(ranks).tolist() == [[0, 0, 0]]


def test_saturation_layers_hand_built():
    # L = 5 lens layers; final top-3 = (7, 8, 9)
    ranks = rankings([
        [1, 2, 3],  # layer 1
        [7, 2, 9],  # layer 2
        [7, 8, 3],  # layer 3  (rank 3 breaks here)
        [7, 8, 9],  # layer 4
        [7, 8, 9],  # layer 5 (final)
    ])
    # rank 1: layers 2..5 agree -> m = 4 -> s = 1; rank 2: layers 3..5 -> m = 3 -> s = 2; rank 3: m = 2 -> s = 3
    assert saturation_layers(ranks).tolist() == [[1, 2, 3]]


def test_only_final_layer_means_not_saturated():
    ranks = rankings([[7, 8], [8, 7], [1, 2], [7, 1]])  # rank 1 agrees at layer 1 but not consecutively
    assert saturation_layers(ranks).tolist() == [[3, 3]]  # L - 1 for both


def test_saturation_layers_non_consecutive_agreement_and_k():
    ranks = rankings([[5, 6, 7], [1, 6, 7], [5, 6, 2], [5, 6, 7]])
    assert saturation_layers(ranks).tolist() == [[2, 0, 3]]
    assert saturation_layers(ranks, k=2).tolist() == [[2, 0]]


def test_saturation_layers_several_positions():
    a = rankings([[1, 2]] * 3)
    b = rankings([[3, 4], [2, 1], [1, 2]])
    both = np.concatenate([a, b], axis=1)
    assert saturation_layers(both).tolist() == [[0, 0], [2, 2]]


def test_paper_filter_uses_floor_of_085_L():
    """The paper's filter keeps s_1 <= floor(0.85 L)."""
    sat = np.array([[40, 0], [41, 0], [0, 0]])
    assert paper_filter(sat, 48).tolist() == [True, False, True]  # floor(0.85 * 48) = 40


# ----------------------------------------------------------------------------------- Kendall tau


def brute_force_strict_tau(values) -> float:
    """Strict tau counted pair by pair (independent of the library)."""
    pairs = list(itertools.combinations(range(len(values)), 2))
    concordant = sum(1 for i, j in pairs if values[i] < values[j])
    return (concordant - (len(pairs) - concordant)) / len(pairs)


@pytest.mark.parametrize("values, expected", [
    ([1, 2, 3, 4, 5], 1.0),
    ([5, 4, 3, 2, 1], -1.0),
    ([3, 3, 3], -1.0),  # ties are discordant
    ([1, 3, 2], 1 / 3),  # C = 2, D = 1, P = 3
    ([2, 2, 5], 1 / 3),  # (1,2) tie -> D; (1,3), (2,3) C
])
def test_strict_kendall_tau_known_values(values, expected):
    assert strict_kendall_tau(values) == pytest.approx(expected)


def test_strict_kendall_tau_matches_brute_force_and_differs_from_scipy_with_ties():
    from scipy.stats import kendalltau

    rng = np.random.default_rng(1)
    for _ in range(50):
        values = rng.integers(0, 6, size=rng.integers(2, 7)).tolist()
        assert strict_kendall_tau(values) == pytest.approx(brute_force_strict_tau(values))
    # scipy's tau-b treats ties differently
    assert kendalltau([1, 2, 3], [2, 2, 5]).statistic != pytest.approx(strict_kendall_tau([2, 2, 5]))


def test_ranks_used_and_position_taus():
    L = 10
    sat = np.array([
        [1, 2, 3, 9, 9],  # c = 3
        [1, 9, 2, 9, 4],  # c = 5 (unsaturated ranks inside are kept)
        [1, 2, 9, 9, 9],  # c = 2 -> excluded
        [9, 9, 9, 9, 9],  # c = 0
    ])
    assert ranks_used(sat, L).tolist() == [3, 5, 2, 0]
    taus, c = position_taus(sat, L)
    assert taus[0] == pytest.approx(1.0)
    assert taus[1] == pytest.approx(brute_force_strict_tau([1, 9, 2, 9, 4]))
    assert math.isnan(taus[2]) and math.isnan(taus[3])


def test_permutation_test_exact_distribution_by_brute_force():
    # one position with c = 3, s = (0, 1, 2): observed tau = 1; of the 6 permutations only the identity reaches 1,
    # so the expected count of shuffled means >= observed is 1000 / 6
    sat = np.array([[0, 1, 2]])
    result = permutation_test(sat, num_layers=10, n_permutations=6000, seed=0)
    assert result["tau"] == pytest.approx(1.0)
    assert result["null_at_least_observed"] / 6000 == pytest.approx(1 / 6, abs=0.02)
    mean_over_perms = np.mean([brute_force_strict_tau(p) for p in itertools.permutations([0, 1, 2])])
    assert result["null_mean"] == pytest.approx(mean_over_perms, abs=0.03)


def test_permutation_test_ordered_population_gives_small_p():
    rng = np.random.default_rng(0)
    sat = np.sort(rng.choice(20, size=(200, 5), replace=True), axis=1) + np.arange(5)  # mostly ordered
    result = permutation_test(sat, num_layers=40, n_permutations=1000, seed=0)
    assert result["null_at_least_observed"] == 0
    assert result["p_value"] == pytest.approx(1 / 1001)
    assert result["p_text"] == "p < 0.001"


def test_permutation_test_all_ties_is_not_significant():
    sat = np.full((30, 4), 3)
    result = permutation_test(sat, num_layers=10, n_permutations=200, seed=0)
    assert result["tau"] == pytest.approx(-1.0)
    assert result["p_value"] == pytest.approx(1.0)


def test_rank_correspondence_indices_ties_take_lowest():
    sat = np.array([[3, 1, 1, 7]])
    # sorted: 1, 1, 3, 7 -> s_1 = 3 at index 2; s_2 = s_3 = 1 at index 0; s_4 at 3
    assert correspondence_indices(sat).tolist() == [[2, 0, 0, 3]]
    result = rank_correspondence(np.array([[0, 1, 2], [0, 2, 1], [0, 1, 2]]))
    assert result["mean_index_plus_one"] == pytest.approx([1.0, 2 + 1 / 3, 3 - 1 / 3])
    assert len(result["adjacent_t_tests"]) == 2


# --------------------------------------------------------------------------- probe / exit / lm


def test_task_labels_follow_definition():
    # L = 20, first layer 5: task 0 on 5..8, task 1 on 9..12, task 2 empty (out of order), task 3 on 13..15,
    # rank 5 unsaturated -> stop
    labels = task_labels([8, 12, 11, 15, 19], num_layers=20, first_layer=5)
    expected = {**dict.fromkeys(range(5, 9), 0), **dict.fromkeys(range(9, 13), 1), **dict.fromkeys(range(13, 16), 3)}
    assert labels == expected
    assert task_labels([19, 3], num_layers=20) == {}


def test_exit_by_rule_and_separate_prediction_arrays():
    fires = np.array([[True, False], [False, False], [True, False], [False, True]])  # (L+1 = 4, N = 2)
    assert exit_by_rule(fires, first_layer=1, num_layers=3).tolist() == [2, 3]
    L, N = 3, 2
    data = _toy_data(L, N)
    first = evaluate_exits(data, np.arange(N), np.array([1, 1]))
    second = evaluate_exits(data, np.arange(N), np.array([3, 3]))
    assert first["accuracy"] == 0.0 and second["accuracy"] == 1.0  # the first call did not change the second
    assert first["speedup"] == pytest.approx(3.0) and second["speedup"] == pytest.approx(1.0)


def _toy_data(L, N):
    lens_top = np.zeros((L, N, 2), dtype=np.int64)
    lens_top[-1, :, 0] = 7
    return SaturationData(num_layers=L, k=2, saturation=np.zeros((N, 2), int), top=np.full((N, 2), 7),
                          lens_top=lens_top, lens_prob=np.zeros((L, N, 2)), target=np.full(N, 7),
                          item=np.zeros(N, int), position=np.arange(N), document=np.zeros(N, int),
                          token_index=np.arange(N))


def test_two_proportion_z_test_by_hand():
    z, p = two_proportion_z_test(30, 100, 10, 100)
    pooled = 40 / 200
    expected = (0.3 - 0.1) / math.sqrt(pooled * (1 - pooled) * (2 / 100))
    assert z == pytest.approx(expected)
    from scipy.stats import norm

    assert p == pytest.approx(2 * norm.sf(expected))
    assert math.isnan(two_proportion_z_test(0, 0, 1, 2)[0])


def test_rank2_accuracy_groups():
    L = 10
    sat = np.array([[2, 9], [2, 9], [2, 1], [2, 3], [2, 9]])
    top = np.array([[1, 5], [1, 6], [1, 5], [1, 6], [5, 1]])
    target = np.array([5, 5, 5, 5, 5])  # last position: top-1 right -> not in the population
    data = SaturationData(num_layers=L, k=2, saturation=sat, top=top, lens_top=np.zeros((L, 5, 2), int),
                          lens_prob=np.zeros((L, 5, 2)), target=target, item=np.zeros(5, int),
                          position=np.arange(5), document=np.zeros(5, int), token_index=np.arange(5))
    result = rank2_accuracy(data, late_margin=7)
    assert result["top1_wrong"] == 4
    assert (result["late"]["positions"], result["late"]["rank2_correct"]) == (2, 1)
    assert (result["early"]["positions"], result["early"]["rank2_correct"]) == (2, 1)  # s_2 <= 3


def test_replace_block_outputs_restores_hooks_even_on_error():
    layer = torch.nn.Linear(3, 3)
    with pytest.raises(RuntimeError):
        with replace_block_outputs([layer], {0: [(0, 1, torch.zeros(3))]}):
            out = layer(torch.ones(1, 2, 3))
            assert torch.equal(out[0, 1], torch.zeros(3)) and not torch.equal(out[0, 0], torch.zeros(3))
            raise RuntimeError("boom")
    assert not layer._forward_hooks


def test_find_pairs_brute_force():
    from huggingface_patch.saturation.intervene import find_pairs

    rng = np.random.default_rng(3)
    N, L = 60, 30
    sat = np.stack([rng.integers(0, 26, N), rng.integers(0, 30, N)], axis=1)
    data = SaturationData(num_layers=L, k=2, saturation=sat, top=np.stack([rng.integers(0, 3, N)] * 2, axis=1),
                          lens_top=np.zeros((L, N, 2), int), lens_prob=np.zeros((L, N, 2)), target=np.zeros(N, int),
                          item=np.repeat([0, 1], N // 2), position=np.tile(np.arange(N // 2), 2) * 2,
                          document=np.zeros(N, int), token_index=np.zeros(N, int))
    expected = [(a, b) for a in range(N) for b in range(N)
                if data.item[a] == data.item[b] and 0 < data.position[b] - data.position[a] <= 10
                and sat[a, 0] >= 10 and sat[b, 0] >= 10 and abs(sat[a, 0] - sat[b, 0]) >= 10
                and data.top[a, 0] == data.top[b, 0] and sat[a, 0] <= 25 and sat[b, 0] <= 25]
    assert expected and find_pairs(data, max_distance=10) == sorted(expected)
    across = [(a, b) for a in range(N) for b in range(a + 1, N)
              if sat[a, 0] >= 10 and sat[b, 0] >= 10 and abs(sat[a, 0] - sat[b, 0]) >= 10
              and data.top[a, 0] == data.top[b, 0] and sat[a, 0] <= 25 and sat[b, 0] <= 25]
    assert find_pairs(data, within_item=False) == sorted(across)
