"""Standard errors are those of a mean: the unbiased sample variance (ddof 1) over the count.

Oracles: numpy's ``var(ddof=1)`` of the same samples, and the exact variance of a
Monte Carlo Shapley estimate on a game whose permutations can all be enumerated.
"""

import itertools

import numpy as np
import pytest

from skdvl import ShapleyValuer, ValuationResult
from skdvl._moments import Moments
from skdvl.games import AirportGame
from skdvl.sampling._group_testing import _difference_samples, _GroupTestingStats


@pytest.fixture
def rng():
    return np.random.default_rng(20261207)


def _per_player(players, values, n):
    """Samples of each player, by brute force."""
    return [values[players == i] for i in range(n)]


def test_moments_of_samples_variance_is_ddof_1(rng):
    n = 5
    players = np.concatenate([np.repeat(np.arange(4), [2, 3, 5, 9]), [4]])
    values = rng.normal(size=players.shape[0]) * 3 + 1
    var = Moments.of_samples(players, values, n).variance()
    samples = _per_player(players, values, n)
    expected = [np.var(s, ddof=1) for s in samples[:4]]
    np.testing.assert_allclose(var[:4], expected, rtol=1e-12)
    assert np.isnan(var[4])  # one sample: unknown spread


def test_moments_variance_zero_without_sample():
    m = Moments.of_samples(np.array([0, 0]), np.array([1.0, 3.0]), 3)
    var = m.variance()
    assert var[0] == pytest.approx(2.0)  # np.var([1, 3], ddof=1)
    assert np.isnan(var[1]) is np.False_ and var[1] == 0.0 and var[2] == 0.0


def test_moments_of_masked_variance_is_ddof_1(rng):
    masks = rng.random((40, 6)) < 0.4
    masks[:, 5] = False
    masks[3, 5] = True  # one sample for the last player
    u = rng.normal(size=40) + 10.0
    m = Moments.of_masked(masks, u)
    var = m.variance()
    for i in range(5):
        np.testing.assert_allclose(var[i], np.var(u[masks[:, i]], ddof=1), rtol=1e-9)
    assert np.isnan(var[5])


def test_moments_merge_equals_whole(rng):
    n = 4
    players = rng.integers(0, n, size=60)
    values = rng.exponential(size=60)
    a = Moments.of_samples(players[:23], values[:23], n)
    a.merge(Moments.of_samples(players[23:], values[23:], n))
    expected = [np.var(s, ddof=1) for s in _per_player(players, values, n)]
    np.testing.assert_allclose(a.variance(), expected, rtol=1e-12)


def _result_of(players, values, n):
    m = Moments.of_samples(players, values, n)
    return ValuationResult(m.values(), variances=m.variance(), counts=m.count)


def test_added_results_have_the_stderr_of_the_pooled_samples(rng):
    n = 4
    # player 0: 1 + 5 samples, player 1: 2 + 2, player 2: 1 + 1, player 3: 7 + 0
    left = np.array([0, 1, 1, 2, 3, 3, 3, 3, 3, 3, 3])
    right = np.array([0, 0, 0, 0, 0, 1, 1, 2])
    v_left, v_right = rng.normal(size=left.size), rng.normal(size=right.size) + 0.5
    merged = _result_of(left, v_left, n) + _result_of(right, v_right, n)
    players, values = np.concatenate([left, right]), np.concatenate([v_left, v_right])
    for i, s in enumerate(_per_player(players, values, n)):
        assert merged.counts[i] == s.size
        np.testing.assert_allclose(merged.values[i], s.mean(), rtol=1e-12)
        np.testing.assert_allclose(merged.variances[i], np.var(s, ddof=1), rtol=1e-12)
        np.testing.assert_allclose(merged.stderr[i], np.std(s, ddof=1) / np.sqrt(s.size),
                                   rtol=1e-12)


def test_added_results_keep_a_side_alone_as_it_is():
    exact = ValuationResult([1.0, 2.0], variances=[0.0, 0.0], counts=[1, 1])
    one = ValuationResult([3.0], variances=[np.nan], counts=[1], indices=[1])
    empty = ValuationResult.zeros(2)
    assert exact + empty == exact  # exact values stay exact (stderr 0)
    np.testing.assert_array_equal((exact + empty).stderr, [0.0, 0.0])
    alone = one + ValuationResult.zeros(2)
    assert np.isnan(alone.variances[1]) and alone.counts[1] == 1 and alone.values[1] == 3.0
    assert np.isinf(alone.stderr[0])


def test_group_testing_variance_is_ddof_1(rng):
    masks = rng.random((30, 5)) < 0.5
    u = rng.normal(size=30)
    stats = _GroupTestingStats.of_samples(masks, u)
    stats.full, stats.empty = 1.0, -0.2
    mean, var = stats.moments()
    x = _difference_samples(masks, u, stats.center)
    np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(var, np.var(x, axis=0, ddof=1), rtol=1e-9)
    one = _GroupTestingStats.of_samples(masks[:1], u[:1])
    assert np.isnan(one.moments()[1]).all()


def _marginal_variances(game):
    """Exact variance of each player's marginal over all permutations."""
    n = game.n_players
    marg = [[] for _ in range(n)]
    for perm in itertools.permutations(range(n)):
        for k, i in enumerate(perm):
            marg[i].append(game(list(perm[:k + 1])) - game(list(perm[:k])))
    return np.array([np.var(m) for m in marg])  # the population of all permutations


def test_permutation_stderr_matches_the_spread_over_seeds():
    """E[stderr_^2] = Var(estimate) = sigma^2 / c at c = 4 permutations.

    Checked against the exact ``sigma^2`` (all 120 permutations) and against the
    squared errors from the exact Shapley values, over 1000 seeds. The old
    ddof-0 standard error (``stderr^2 (c - 1) / c``, 25% low) fails both.
    """
    game = AirportGame(costs=[1.0, 2.0, 3.0, 5.0, 8.0])
    phi, c, n_seeds = game.shapley_values(), 4, 1000
    target = _marginal_variances(game).sum() / c
    se2, sq_err = np.empty(n_seeds), np.empty(n_seeds)
    for seed in range(n_seeds):
        v = ShapleyValuer(utility=game, sampler="permutation", max_updates=c,
                          random_state=seed).fit()
        assert np.all(v.counts_ == c)
        se2[seed] = np.sum(v.stderr_**2)
        sq_err[seed] = np.sum((v.values_ - phi) ** 2)

    def z_exact(x):
        return (x.mean() - target) / (x.std(ddof=1) / np.sqrt(n_seeds))

    def z_paired(x):
        d = x - sq_err
        return d.mean() / (d.std(ddof=1) / np.sqrt(n_seeds))

    assert abs(z_exact(se2)) < 3 and abs(z_paired(se2)) < 3
    old = se2 * (c - 1) / c
    assert z_exact(old) < -3 and z_paired(old) < -3  # the test can tell the bias
