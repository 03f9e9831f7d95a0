"""Samplers draw what their size distribution says, and their weights are unbiased."""

import numpy as np
import pytest

from skdvl._coalitions import log_binom, masks_from_codes
from skdvl.sampling import (
    AntitheticSampler,
    FixedTruncation,
    OwenSampler,
    PermutationSampler,
    RelativeTruncation,
    StratifiedSampler,
    UniformSampler,
)
from skdvl.sampling._engine import CachedEvaluator
from skdvl.sampling._exact import _exact_semivalues


class Recorder:
    """A utility that records the coalitions it is asked about."""

    def __init__(self, n):
        self.n_players = n
        self.seen = []

    def evaluate(self, masks):
        self.seen.append(masks.copy())
        return masks.sum(axis=1).astype(float)

    def __call__(self, subset):
        return float(len(subset))


@pytest.mark.parametrize("sampler", [
    UniformSampler(), AntitheticSampler(), OwenSampler(n_q=5), OwenSampler(q="uniform"),
    OwenSampler(antithetic=True), StratifiedSampler(), StratifiedSampler("harmonic"),
], ids=repr)
def test_toggle_samplers_join_coalitions_of_the_declared_size_distribution(sampler, rng):
    n, n_blocks = 6, 6000
    ev = CachedEvaluator(Recorder(n), cache=False)
    sizes = []
    for b in range(n_blocks):
        players, _ = sampler.marginals(ev, rng, np.ones(n), b)
        S = ev.utility.seen[-1][: sampler.samples_per_block]
        k = np.where(S, S.sum(1, keepdims=True) - 1, S.sum(1, keepdims=True))
        sizes.append(k.reshape(-1))
        assert np.array_equal(np.sort(players), np.repeat(np.arange(n), S.shape[0]))
    freq = np.bincount(np.concatenate(sizes), minlength=n) / (n * n_blocks *
                                                             sampler.samples_per_block)
    expected = sampler.size_distribution(n)
    assert expected.sum() == pytest.approx(1.0)
    # 36,000+ draws: the frequency of each size is within 0.02 of its probability
    np.testing.assert_allclose(freq, expected, atol=0.02)


def test_toggle_marginals_are_exact_differences(rng):
    n = 5
    w = rng.normal(size=n)

    class Quadratic:
        n_players = n

        def evaluate(self, masks):
            return (masks @ w) ** 2

    ev = CachedEvaluator(Quadratic())
    players, marg = UniformSampler().marginals(ev, np.random.default_rng(1), np.ones(n), 0)
    S = np.random.default_rng(1).random((1, n)) < 0.5
    s = S[0]
    for i, m in zip(players, marg):
        with_i, without_i = s.copy(), s.copy()
        with_i[i], without_i[i] = True, False
        assert m == pytest.approx((with_i @ w) ** 2 - (without_i @ w) ** 2)


def test_permutation_marginals_sum_to_grand_coalition(rng):
    ev = CachedEvaluator(Recorder(7), cache=False)
    players, marg = PermutationSampler().marginals(ev, rng, np.ones(7), 0)
    assert sorted(players) == list(range(7))
    assert marg.sum() == pytest.approx(7.0)


def test_truncations_find_the_first_position():
    u = np.array([0.0, 0.5, 0.9, 0.995, 1.0, 1.0])
    assert RelativeTruncation(0.01).first_stop(u, 1, 5, total=1.0) == 3
    assert RelativeTruncation(0.01, burn_in_fraction=0.8).first_stop(u, 1, 5, 1.0) == 4
    assert RelativeTruncation(0.001).first_stop(u[:4], 1, 5, 1.0) is None
    assert FixedTruncation(0.4).first_stop(u, 1, 5, 0.0) == 2
    assert FixedTruncation(0.4).horizon(5) == 2


def test_masks_from_codes_andlog_binom():
    m = masks_from_codes(np.array([0, 5, 6]), 3)
    assert m.tolist() == [[False, False, False], [True, False, True], [False, True, True]]
    np.testing.assert_allclose(np.exp(log_binom(5, np.arange(6))), [1, 5, 10, 10, 5, 1])


def test_exact_semivalues_of_an_additive_game_are_the_weights(rng):
    n = 6
    w = rng.normal(size=n)
    codes = np.arange(1 << n)
    u = masks_from_codes(codes, n) @ w
    np.testing.assert_allclose(_exact_semivalues(u, n, np.full(n, 1 / n)), w, atol=1e-12)


@pytest.mark.parametrize("make, match", [
    (lambda: RelativeTruncation(rtol=-1), "rtol must be >= 0. Got -1"),
    (lambda: RelativeTruncation(burn_in_fraction=2), "burn_in_fraction must be in \\[0, 1\\]"),
    (lambda: FixedTruncation(0), "fraction must be in \\(0, 1\\]. Got 0"),
    (lambda: OwenSampler(n_q=0), "n_q must be an integer >= 1. Got 0"),
    (lambda: OwenSampler(q="sobol"), "q must be 'grid' or 'uniform'. Got 'sobol'"),
    (lambda: StratifiedSampler("cubic"), "size_strategy must be 'uniform', 'harmonic'"),
    (lambda: PermutationSampler(truncation="yes"), "truncation must be None, a relative"),
])
def test_bad_sampler_arguments_are_named(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_stratified_rejects_a_wrong_length_strategy():
    with pytest.raises(ValueError, match="n \\+ 1 = 5 non-negative probabilities"):
        StratifiedSampler([1.0, 2.0]).size_distribution(4)


def test_samplers_and_criteria_are_parameters_a_grid_search_can_reach():
    from sklearn.base import clone

    from skdvl import ShapleyValuer
    from skdvl.games import AirportGame
    from skdvl.sampling import OwenSampler
    from skdvl.stopping import MaxTime, MaxUpdates

    game = AirportGame(np.arange(1.0, 7))
    v = ShapleyValuer(utility=game, sampler=OwenSampler(n_q=20),
                      stopping=MaxUpdates(3) | MaxTime(60), random_state=0)
    params = v.get_params()
    assert params["sampler__n_q"] == 20 and params["stopping__a__n_updates"] == 3
    c = clone(v).set_params(sampler__n_q=4, stopping__a__n_updates=5)
    assert repr(c.sampler) == "OwenSampler(n_q=4)" and v.sampler.n_q == 20
    ref = ShapleyValuer(utility=game, sampler=OwenSampler(n_q=4), stopping=MaxUpdates(5),
                        random_state=0).fit()
    np.testing.assert_array_equal(c.fit().values_, ref.values_)
    assert (c.counts_ == 5).all()


def test_a_new_sampler_is_one_subclass():
    """The protocol: weights() binds to the semivalue, run_block() returns moments."""
    from skdvl import ShapleyValuer
    from skdvl._moments import Moments
    from skdvl.games import AirportGame
    from skdvl.sampling import BaseSampler

    class FullMarginals(BaseSampler):
        """Toy: every block gives each player its marginal to the empty coalition."""

        def weights(self, mass, n):
            return None

        def run_block(self, ev, rng, weights, block, start=0, stop=None):
            u = ev.evaluate(np.vstack([np.zeros(ev.n, bool), np.eye(ev.n, dtype=bool)]))
            return (Moments.of_samples(np.arange(ev.n), u[1:] - u[0], ev.n),)

    game = AirportGame(np.arange(1.0, 5))
    v = ShapleyValuer(utility=game, sampler=FullMarginals(), max_updates=2).fit()
    np.testing.assert_allclose(v.values_, [game([i]) for i in range(4)])
