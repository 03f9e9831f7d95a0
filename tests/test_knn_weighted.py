"""Exact WKNN-Shapley (Wang, Mittal & Jia, 2024) against brute-force enumeration.

The oracle here is written independently of the module: it fits the weighted KNN
classifier of each of the 2^n coalitions (the ``K`` nearest rows by distance, then
index; the total weight per label) and sums the Shapley weights of the marginal
contributions.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from skdvl.valuation import _knn_weighted
from skdvl.valuation._knn_math import _knn_classification_shapley
from skdvl.valuation._knn_weighted import (
    discretize_weights,
    weighted_knn_shapley,
    weighted_knn_shapley_block,
    weighted_knn_shapley_levels,
)

# --------------------------------------------------------------------------------------
# The oracle.
# --------------------------------------------------------------------------------------


def wknn_correct(S, d, w, y, y_val, k, ties):
    """1.0 when the weighted KNN classifier fitted on rows ``S`` predicts ``y_val``."""
    if not S:
        return 0.0
    nearest = sorted(S, key=lambda j: (d[j], j))[:k]
    votes = {}
    for j in nearest:
        votes[y[j]] = votes.get(y[j], 0.0) + w[j]
    mine = votes.get(y_val, 0.0)
    others = sum(votes.values()) - mine
    return float(mine > others or (ties == "correct" and mine == others))


def brute_force_shapley(d, w, y, y_val, k, ties="incorrect"):
    n = len(d)
    values = np.zeros(n)
    for i in range(n):
        rest = [j for j in range(n) if j != i]
        for size in range(n):
            weight = math.factorial(size) * math.factorial(n - 1 - size) / math.factorial(n)
            for S in itertools.combinations(rest, size):
                gain = wknn_correct(list(S) + [i], d, w, y, y_val, k, ties)
                values[i] += weight * (gain - wknn_correct(list(S), d, w, y, y_val, k, ties))
    return values


def random_problem(rng, n, n_classes=2, n_val=2, duplicates=False):
    X = rng.normal(size=(n, 2))
    if duplicates:                                  # equal distances, broken by index
        X[n // 2:] = X[: n - n // 2]
    X_val = rng.normal(size=(n_val, 2))
    y = rng.integers(0, n_classes, n)
    y_val = rng.integers(0, n_classes, n_val)
    d = np.sqrt(((X_val[:, None, :] - X[None, :, :]) ** 2).sum(-1))
    return d, y, y_val


def check_block_against_oracle(d, y, y_val, k, ties, **kw):
    values = weighted_knn_shapley_block(d, y, y_val, k, ties=ties, **kw)
    for t in range(d.shape[0]):
        levels = discretize_weights(d[t], **kw)
        expected = brute_force_shapley(d[t], levels, y, y_val[t], k, ties)
        np.testing.assert_allclose(values[t], expected, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------
# Oracles: brute-force enumeration at n <= 10.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("ties", ["incorrect", "correct"])
@pytest.mark.parametrize("n, k, n_classes", [(9, 3, 2), (10, 5, 2), (8, 2, 3), (7, 1, 2)])
def test_values_match_brute_force_on_random_data(rng, n, k, n_classes, ties):
    d, y, y_val = random_problem(rng, n, n_classes)
    check_block_against_oracle(d, y, y_val, k, ties, tau=0.7, n_bins=8)


@pytest.mark.parametrize("ties", ["incorrect", "correct"])
def test_values_match_brute_force_with_duplicate_points(rng, ties):
    d, y, y_val = random_problem(rng, 8, duplicates=True)
    check_block_against_oracle(d, y, y_val, 3, ties, tau=1.0, n_bins=6)


@pytest.mark.parametrize("ties", ["incorrect", "correct"])
def test_values_match_brute_force_with_tied_votes(rng, ties):
    """Few levels make equal vote totals (ties) common, and zero levels occur."""
    d, y, y_val = random_problem(rng, 9)
    check_block_against_oracle(d, y, y_val, 4, ties, tau=0.3, n_bins=3)
    check_block_against_oracle(d, y, y_val, 4, ties, weights="uniform", n_bins=2)


@pytest.mark.parametrize("extra", [0, 1, 4])
def test_values_match_brute_force_when_k_at_least_n(rng, extra):
    n = 7
    d, y, y_val = random_problem(rng, n)
    check_block_against_oracle(d, y, y_val, n + extra, "incorrect", tau=0.5, n_bins=5)


@pytest.mark.parametrize("k", [1, 3])
def test_callable_weights_match_brute_force(rng, k):
    d, y, y_val = random_problem(rng, 8)
    check_block_against_oracle(d, y, y_val, k, "incorrect",
                               weights=lambda dist: 1.0 / (1.0 + dist**2), n_bins=16)


def test_values_match_brute_force_of_the_levels_game(rng):
    """The core takes integer levels in rank order, also large ones."""
    n, k = 8, 3
    levels = rng.integers(0, 40, n)
    match = rng.random(n) < 0.5
    y = np.where(match, 1, 0)
    d = np.arange(n, dtype=float)                   # rank order = training order
    expected = brute_force_shapley(d, levels, y, 1, k)
    np.testing.assert_allclose(weighted_knn_shapley_levels(levels, match, k), expected,
                               rtol=0, atol=1e-12)


def test_discretised_values_equal_the_real_weights_game_outside_the_band(rng):
    """Values equal those of the undiscretised game when no coalition's normalised vote
    margin is within K / (2 (W - 1)) of zero (the bound of `discretize_weights`)."""
    n, k, n_bins = 7, 2, 4096
    band = k / (2 * (n_bins - 1))
    checked = 0
    for _ in range(6):
        d, y, y_val = random_problem(rng, n, n_val=1)
        w = np.exp(-d[0] / 0.8)
        w /= w.max()
        margins = []
        for size in range(1, n + 1):
            for S in itertools.combinations(range(n), size):
                top = sorted(S, key=lambda j: (d[0, j], j))[:k]
                margins.append(sum(w[j] * (1 if y[j] == y_val[0] else -1) for j in top))
        if np.min(np.abs(margins)) <= band:
            continue
        checked += 1
        values = weighted_knn_shapley_block(d, y, y_val, k, tau=0.8, n_bins=n_bins)
        expected = brute_force_shapley(d[0], w, y, y_val[0], k)
        np.testing.assert_allclose(values[0], expected, rtol=0, atol=1e-12)
    assert checked >= 3


# --------------------------------------------------------------------------------------
# Constant weights and the unweighted KNN-Shapley.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("weights", ["uniform", "rbf"])
def test_k1_equals_unweighted_knn_shapley(rng, weights):
    """With K = 1 only the nearest row votes: any positive weights give the values of
    Jia et al. (2019). (For K > 1 the hard-label game is a weighted majority vote,
    not their average-of-matches utility, and values differ.)"""
    n = 60
    d = np.sort(rng.random((3, n)), axis=1)
    match = rng.random((3, n)) < 0.5
    values = weighted_knn_shapley(d, match, 1, weights=weights, tau=100.0, n_bins=32)
    np.testing.assert_allclose(values, _knn_classification_shapley(match.astype(float), 1),
                               rtol=0, atol=1e-12)


def test_uniform_weights_are_the_majority_vote_game(rng):
    n, k = 9, 3
    d, y, y_val = random_problem(rng, n, n_val=1)
    values = weighted_knn_shapley_block(d, y, y_val, k, weights="uniform")
    expected = brute_force_shapley(d[0], np.ones(n), y, y_val[0], k)
    np.testing.assert_allclose(values[0], expected, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------
# Axioms and numerical stability at sizes brute force cannot reach.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("ties", ["incorrect", "correct"])
@pytest.mark.parametrize("n, k, n_bins", [(300, 5, 32), (120, 60, 16), (50, 50, 8)])
def test_values_sum_to_the_utility_of_all_rows(rng, n, k, n_bins, ties):
    """Efficiency: sum_i phi_i = u(N) - u(empty) = u(N), also for large K."""
    levels = rng.integers(0, n_bins, (3, n))
    match = rng.random((3, n)) < 0.6
    values = weighted_knn_shapley_levels(levels, match, k, ties=ties)
    margin = np.where(match, levels, -levels)[:, :k].sum(axis=1)
    full = (margin >= (1 if ties == "incorrect" else 0)).astype(float)
    np.testing.assert_allclose(values.sum(axis=1), full, rtol=0, atol=1e-12)


def test_rows_beyond_the_level_zero_tail_are_dummies(rng):
    """A farthest row of weight 0 changes no vote (ties="incorrect"): value 0."""
    levels = np.append(rng.integers(1, 8, 11), 0)
    match = rng.random(12) < 0.5
    assert weighted_knn_shapley_levels(levels, match, 4)[-1] == pytest.approx(0, abs=1e-15)


# --------------------------------------------------------------------------------------
# Invariance: blocks, block size, row order.
# --------------------------------------------------------------------------------------


def test_values_identical_for_any_block_size_and_checkpointing(rng, monkeypatch):
    d = np.sort(rng.random((7, 40)), axis=1)
    match = rng.random((7, 40)) < 0.5
    together = weighted_knn_shapley(d, match, 4, tau=0.2)
    alone = np.stack([weighted_knn_shapley(d[t], match[t], 4, tau=0.2) for t in range(7)])
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-15)
    monkeypatch.setattr(_knn_weighted, "_BLOCK_BYTES", 1)   # one row, prefix checkpoints
    assert _knn_weighted._block_plan(40, 4, 100) == (1, 7)
    np.testing.assert_allclose(weighted_knn_shapley(d, match, 4, tau=0.2), together,
                               rtol=0, atol=1e-15)
    monkeypatch.setattr(_knn_weighted, "_BLOCK_BYTES", 2**25)
    monkeypatch.setattr(_knn_weighted, "_BLOCK_ROWS", 3)    # blocks of 3, 3 and 1 rows
    np.testing.assert_allclose(weighted_knn_shapley(d, match, 4, tau=0.2), together,
                               rtol=0, atol=1e-15)


def test_block_values_follow_a_permutation_of_training_rows(rng):
    d, y, y_val = random_problem(rng, 30, n_classes=3, n_val=4)
    perm = rng.permutation(30)
    values = weighted_knn_shapley_block(d, y, y_val, 5, tau=0.5)
    permuted = weighted_knn_shapley_block(d[:, perm], y[perm], y_val, 5, tau=0.5)
    np.testing.assert_allclose(permuted, values[:, perm], rtol=0, atol=1e-15)


def test_one_row_gives_one_row_and_empty_gives_empty():
    values = weighted_knn_shapley([0.0, 1.0, 2.0], [True, False, True], 2)
    assert values.shape == (3,)
    assert weighted_knn_shapley_levels(np.zeros((2, 0), int), np.zeros((2, 0), bool),
                                       3).shape == (2, 0)


def test_discretize_weights_rounds_the_normalised_kernel():
    d = np.array([[0.5, 1.0, 2.0], [0.0, 0.0, 4.0]])
    expected = np.rint(np.exp(-(d - d.min(axis=1, keepdims=True)) / 0.5) * 7)
    np.testing.assert_array_equal(discretize_weights(d, tau=0.5, n_bins=8), expected)
    zeros = discretize_weights(d, weights=lambda x: 0 * x, n_bins=8)
    np.testing.assert_array_equal(zeros, 0)


# --------------------------------------------------------------------------------------
# Errors.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("call, match", [
    (lambda: weighted_knn_shapley_levels([1], [True], 0), "'k' parameter must be an int >= 1"),
    (lambda: weighted_knn_shapley_levels([1], [True], True), "Got True instead"),
    (lambda: weighted_knn_shapley_levels([1], [True], 1, ties="half"),
     "'ties' parameter must be one of"),
    (lambda: weighted_knn_shapley_levels([1, -1], [True, True], 1), "minimum of -1"),
    (lambda: weighted_knn_shapley_levels([0.5], [True], 1), "non-negative integers"),
    (lambda: weighted_knn_shapley_levels([1, 2], [True], 1), r"same shape. Got \(1, 2\)"),
    (lambda: weighted_knn_shapley_levels(np.ones((1, 1, 2)), np.ones((1, 1, 2)), 1),
     "1-D or 2-D"),
    (lambda: weighted_knn_shapley([0.2, 0.1], [True, True], 1), "must be sorted"),
    (lambda: discretize_weights([0.1], n_bins=1), "'n_bins' parameter must be an int >= 2"),
    (lambda: discretize_weights([0.1], tau=0.0), r"'tau' parameter must be a float > 0. Got 0.0"),
    (lambda: discretize_weights([-0.1]), "finite distances >= 0"),
    (lambda: discretize_weights([0.1], weights="gauss"), "Got 'gauss' instead"),
    (lambda: discretize_weights([0.1, 0.2], weights=lambda x: x[:1]),
     r"shape \(2,\). Got \(1,\) instead"),
    (lambda: discretize_weights([0.1], weights=lambda x: -x), "finite weights >= 0"),
    (lambda: weighted_knn_shapley_block([0.1, 0.2], [0, 1], [0], 1), "must be 2-D"),
    (lambda: weighted_knn_shapley_block([[0.1, 0.2]], [0], [0], 1), r"shapes \(2,\) and \(1,\)"),
])
def test_bad_arguments_raise_with_the_rule_and_the_value(call, match):
    with pytest.raises(ValueError, match=match):
        call()
