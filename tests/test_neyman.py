"""Neyman allocation: exact where it enumerates, unbiased, calibrated, n_jobs-invariant."""

from math import comb

import numpy as np
import pytest
from joblib import parallel_config

from skdvl import BanzhafValuer, BetaShapleyValuer, ShapleyValuer
from skdvl.games import AirportGame, AsymmetricVotingGame, ShoesGame, UnanimityGame
from skdvl.sampling._engine import CachedEvaluator, value_game
from skdvl.sampling._neyman import (
    NeymanSampler,
    _Design,
    _pascal,
    _permute,
    _plan,
    _UnitMoments,
    _unrank,
)
from skdvl.stopping import MaxUpdates

VOTES = [1, 2, 3, 5, 8, 1, 2, 4, 3, 2, 6, 7, 1, 1, 2, 9, 4, 3, 5, 2,
         1, 3, 2, 6, 1, 8, 2, 3, 4, 1, 5, 2, 7, 1, 3, 2, 4, 6, 1, 2]


def _voting(n):
    w = VOTES[:n]
    return AsymmetricVotingGame(w, quota=sum(w) // 2 + 1)


def _fits(valuer, game, seeds, **params):
    fits = [valuer(utility=game, random_state=s, **params).fit() for s in seeds]
    return np.array([f.values_ for f in fits]), np.array([f.stderr_ for f in fits]), fits


# --------------------------------------------------------------------------- coalition streams
@pytest.mark.parametrize("size", [1, 2, 3, 10, 171, 4096, 4097])
def test_stream_order_is_a_permutation_of_the_ranks(size, rng):
    keys = np.repeat(rng.integers(0, 2**64, size=(1, 4), dtype=np.uint64), size, axis=0)
    order = _permute(np.arange(size), np.full(size, size), keys)
    np.testing.assert_array_equal(np.sort(order), np.arange(size))


def test_stream_order_of_a_huge_stratum_has_no_repeat(rng):
    size, m = 2**50 + 3, 5000
    keys = np.repeat(rng.integers(0, 2**64, size=(1, 4), dtype=np.uint64), m, axis=0)
    order = _permute(np.arange(m), np.full(m, size), keys)
    assert np.unique(order).size == m and order.min() >= 0 and order.max() < size


def test_first_draw_of_a_stratum_is_uniform_over_its_coalitions(rng):
    size, m = 10, 20_000
    keys = rng.integers(0, 2**64, size=(m, 4), dtype=np.uint64)  # a stratum per seed
    counts = np.bincount(_permute(np.zeros(m, np.int64), np.full(m, size), keys), minlength=size)
    chi2 = ((counts - m / size) ** 2 / (m / size)).sum()
    assert chi2 < 30  # 9 degrees of freedom: p < 0.001


@pytest.mark.parametrize("pool", range(8))
def test_unranking_gives_every_subset_once(pool):
    binom = _pascal(8)
    for t in range(pool + 1):
        out = _unrank(np.arange(comb(pool, t)), np.full(comb(pool, t), t),
                      np.full(comb(pool, t), pool), binom, 7)
        assert (out.sum(axis=1) == t).all() and not out[:, pool:].any()
        assert len({tuple(row) for row in out}) == comb(pool, t)


@pytest.mark.parametrize("n, paired", [(7, False), (7, True), (8, True)])
def test_a_stratum_drawn_in_full_is_every_coalition_of_its_size_once(n, paired, rng):
    design = _Design.of(n, paired)
    keys = rng.integers(0, 2**64, size=(design.size.shape[0], 4), dtype=np.uint64)
    for unit in range(design.size.shape[0]):
        pop = int(design.population[unit])
        units = np.full(pop, unit)
        coalitions = design.draw(units, np.arange(pop), keys, rng)
        i, k = design.player[unit], design.size[unit]
        assert not coalitions[:, i].any() and (coalitions.sum(axis=1) == k).all()
        rows = {tuple(c) for c in coalitions}
        assert len(rows) == pop
        if not design.middle[unit]:
            assert pop == comb(n - 1, k)
        else:  # each pair {T, N - i - T} once
            assert pop == comb(n - 1, k) // 2
            complements = {tuple(~np.array(c) & (np.arange(n) != i)) for c in rows}
            assert not rows & complements


# --------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("paired", [False, True])
@pytest.mark.parametrize("valuer", [ShapleyValuer, BanzhafValuer])
@pytest.mark.parametrize("n", [6, 7])
def test_enough_budget_enumerates_every_stratum_and_is_exact(valuer, paired, n):
    game = UnanimityGame(n, [[0, 1], [1, 2, 3], [n - 1]], [2.0, -1.0, 0.5])
    v = valuer(utility=game, sampler=NeymanSampler(warm_up=2, paired=paired),
               max_updates=3000, random_state=0).fit()
    exact = valuer(utility=game, sampler="exact").fit().values_
    np.testing.assert_allclose(v.values_, exact, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(v.stderr_, 0.0)
    np.testing.assert_array_equal(v.counts_, 2 ** (n - 1))  # every marginal once


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_tiny_games_are_exact_after_the_warm_up(n):
    game = AirportGame(np.arange(1.0, n + 1))
    v = ShapleyValuer(utility=game, sampler=NeymanSampler(), random_state=0).fit()
    np.testing.assert_allclose(v.values_, game.shapley_values(), rtol=0, atol=1e-12)
    assert v.converged_ and v.n_utility_evaluations_ == 2**n


def test_paired_draws_make_the_shoes_game_exact():
    # a left shoe adds a pair to T exactly when it adds none to N - i - T
    game = ShoesGame(10, 10)
    v = ShapleyValuer(utility=game, sampler=NeymanSampler(paired=True), max_updates=200,
                      random_state=0).fit()
    np.testing.assert_allclose(v.values_, game.shapley_values(), rtol=0, atol=1e-9)


# --------------------------------------------------------------------------- statistics
SHAPLEY_GAMES = [AirportGame(np.linspace(1.0, 4.0, 20)), _voting(20), ShoesGame(10, 12)]
BANZHAF_GAMES = [UnanimityGame(16, [[0, 1, 2], [3, 4], [5], list(range(6, 12))],
                               [3.0, 1.0, 2.0, 5.0]), _voting(16)]


def _z_scores(values, stderr, exact, bias=0.0):
    """(mean over seeds - exact) in standard errors of that mean; players whose values do
    not vary over the seeds measured by their own standard error instead."""
    s = values.shape[0]
    mean = values.mean(axis=0) + bias
    spread = values.std(axis=0, ddof=1)
    se = np.where(spread > 1e-9, spread, np.sqrt(np.mean(stderr**2, axis=0))) / np.sqrt(s)
    return (mean - exact) / np.maximum(se, 1e-12)


@pytest.mark.parametrize("valuer, games", [(ShapleyValuer, SHAPLEY_GAMES),
                                           (BanzhafValuer, BANZHAF_GAMES)],
                         ids=["shapley", "banzhaf"])
def test_unbiased_and_calibrated_over_seeds(valuer, games):
    fits = []
    for game in games:
        values, stderr, _ = _fits(valuer, game, range(12), sampler=NeymanSampler(),
                                  max_updates=300)
        exact = game.shapley_values() if valuer is ShapleyValuer else game.banzhaf_values()
        fits.append((values, stderr, exact))
    # unbiased: the mean over 12 seeds within its standard errors, all players together
    z = np.concatenate([_z_scores(*fit) for fit in fits])
    assert np.mean(z**2) < 2.0, np.mean(z**2)  # about 1.2 (t with 11 df) if unbiased
    assert np.mean(np.abs(z) > 3) <= 0.05  # about 1% of t with 11 df
    # ... a test that detects a bias of two standard errors of the mean
    shifted = np.concatenate([_z_scores(v, s, e, bias=2 * v.std(axis=0, ddof=1).mean()
                                        / np.sqrt(v.shape[0])) for v, s, e in fits])
    assert np.mean(shifted**2) > 2.0
    # calibrated: 95% intervals cover the exact values, errors about the spread
    for values, stderr, exact in fits:
        covered = np.abs(values - exact) <= 1.96 * stderr + 1e-12
        assert 0.9 <= covered.mean() <= 0.998
        spread = values.std(axis=0, ddof=1)
        ratio = stderr.mean(axis=0)[spread > 1e-9] / spread[spread > 1e-9]
        assert 0.7 <= np.median(ratio) <= 1.5


def test_error_falls_with_the_budget():
    game = AirportGame(np.linspace(1.0, 4.0, 15))
    rmse = [np.sqrt(np.mean((_fits(ShapleyValuer, game, range(2), sampler=NeymanSampler(),
                                   max_updates=budget)[0] - game.shapley_values()) ** 2))
            for budget in (150, 1500)]
    assert rmse[0] > 3 * rmse[1]


def test_beats_permutations_at_equal_evaluations_on_the_airport_game():
    game = AirportGame(np.linspace(1.0, 4.0, 40))
    values, _, fits = _fits(ShapleyValuer, game, range(3), sampler=NeymanSampler(),
                            max_updates=400)
    evaluations = max(f.n_utility_evaluations_ for f in fits)
    perms = _fits(ShapleyValuer, game, range(3), sampler="permutation",
                  max_updates=evaluations // game.n_players)[0]
    exact = game.shapley_values()
    ratio = np.mean((values - exact) ** 2) / np.mean((perms - exact) ** 2)
    assert ratio < 0.2  # measured: about 0.025


@pytest.mark.slow
@pytest.mark.parametrize("paired", [False, True])
@pytest.mark.parametrize("budget", [500, 1500])
@pytest.mark.parametrize("name, game", [
    ("voting40", _voting(40)), ("shoes40", ShoesGame(20, 20)),
    ("airport40", AirportGame(np.linspace(1.0, 4.0, 40)))])
def test_mse_against_permutations_at_equal_evaluations(name, game, budget, paired):
    seeds = range(12)
    values, _, fits = _fits(ShapleyValuer, game, seeds, sampler=NeymanSampler(paired=paired),
                            max_updates=budget)
    evaluations = int(np.mean([f.n_utility_evaluations_ for f in fits]))
    perms = _fits(ShapleyValuer, game, seeds, sampler="permutation",
                  max_updates=evaluations // game.n_players)[0]
    exact = game.shapley_values()
    ratio = np.mean((values - exact) ** 2) / np.mean((perms - exact) ** 2)
    print(f"{name} paired={paired} evaluations={evaluations} MSE ratio={ratio:.3f}")
    if name == "airport40" or (name == "shoes40" and paired):
        assert ratio < 0.2


# --------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("paired", [False, True])
def test_values_identical_for_any_n_jobs_and_backend(paired):
    game = _voting(12)
    make = dict(utility=game, sampler=NeymanSampler(paired=paired, batch_size=32),
                max_updates=300, random_state=1)
    one = ShapleyValuer(**make).fit()
    for backend in ("loky", "threading"):
        with parallel_config(backend=backend):
            two = ShapleyValuer(**make, n_jobs=2).fit()
        np.testing.assert_array_equal(one.values_, two.values_)
        np.testing.assert_array_equal(one.stderr_, two.stderr_)
        np.testing.assert_array_equal(one.counts_, two.counts_)


def test_a_block_drawn_in_parts_equals_the_block(rng):
    game, sampler = _voting(10), NeymanSampler(batch_size=50)
    design = _Design.of(10, False)
    stats = _UnitMoments.zeros(design)
    stats.count[:] = 3
    keys = rng.integers(0, 2**64, size=(design.size.shape[0], 4), dtype=np.uint64)
    plan = _plan(stats, design, np.full(10, 0.1), keys, 0, 0.3)

    def block(start, stop):
        return sampler.run_block(CachedEvaluator(game), np.random.default_rng(7), plan, 3,
                                 start, stop)[0]

    whole, parts = block(0, None), block(0, 17)
    parts.merge(block(17, None))
    parts.merge(_UnitMoments.zeros(design))  # densify both the same way
    whole.merge(_UnitMoments.zeros(design))
    for name in ("count", "draws"):
        np.testing.assert_array_equal(getattr(parts, name), getattr(whole, name))
    for name in ("mean", "m2", "co"):
        np.testing.assert_allclose(getattr(parts, name), getattr(whole, name), atol=1e-12)


# --------------------------------------------------------------------------- budget
def test_budget_counts_marginals_per_player_on_average():
    game = _voting(20)
    v = ShapleyValuer(utility=game, sampler=NeymanSampler(batch_size=64), max_updates=400,
                      random_state=0).fit()
    state = v._states_[0]
    per_player = state.moments[0].draws.sum() / game.n_players
    assert 400 <= per_player < 400 + 64 / game.n_players + 1
    assert v.counts_.sum() == state.moments[0].count.sum()  # marginals evaluated
    assert v.n_utility_evaluations_ <= 2 * v.counts_.sum()


def test_a_budget_below_the_warm_up_warns_and_stops_after_it():
    game = _voting(20)
    least = NeymanSampler().min_updates(20)
    assert least == 2 * 20 + 4 * 16 // 1  # the border strata, then 4 draws of 16 strata
    with pytest.warns(UserWarning, match=f"fewer than the {least} updates"):
        v = ShapleyValuer(utility=game, sampler=NeymanSampler(), max_updates=50,
                          random_state=0).fit()
    assert np.all(np.isfinite(v.values_)) and v._states_[0].next_block == 0


# --------------------------------------------------------------------------- reweight
def test_reweight_gives_the_other_semivalues_without_evaluating():
    game = BANZHAF_GAMES[0]
    v = ShapleyValuer(utility=game, sampler=NeymanSampler(), max_updates=1500,
                      random_state=0).fit()
    for target, exact in [(BanzhafValuer(), game.banzhaf_values()),
                          (ShapleyValuer(), game.shapley_values())]:
        r = v.reweight(target)
        assert r.n_utility_evaluations_ == v.n_utility_evaluations_
        assert np.all(np.abs(r.values_ - exact) <= 4 * r.stderr_ + 1e-10)
    np.testing.assert_array_equal(v.reweight(ShapleyValuer()).values_, v.values_)
    beta = v.reweight(BetaShapleyValuer(alpha=1, beta=1))  # Shapley again
    np.testing.assert_allclose(beta.values_, v.values_, rtol=1e-12)


def test_reweight_to_sizes_never_drawn_is_nan_with_a_warning():
    game, n = _voting(10), 10
    mass = np.zeros(n)
    mass[:5] = 0.2  # small coalitions only
    _, state = value_game(NeymanSampler(), game, mass, state=None, entropy=0, game=0,
                          stopping=lambda: MaxUpdates(200))
    sampler = NeymanSampler()
    with pytest.warns(UserWarning, match=r"drew no coalition of sizes \[5 6 7 8 9\].*10 "
                                         "players are NaN"):
        result = sampler.reweight(state, np.full(n, 1 / n))
    assert np.isnan(result.values).all()
    assert np.isfinite(sampler.reweight(state, mass).values).all()


# --------------------------------------------------------------------------- continuation
class InterruptAfter:
    """The voting game, but KeyboardInterrupt at the ``limit``-th call."""

    def __init__(self, limit):
        self.game, self.limit, self.calls = _voting(12), limit, 0
        self.n_players = self.game.n_players

    def __call__(self, subset):
        self.calls += 1
        if self.calls == self.limit:
            raise KeyboardInterrupt
        return self.game(subset)


def test_an_interrupted_warm_up_resumes_with_warm_start():
    utility = InterruptAfter(limit=100)
    v = ShapleyValuer(utility=utility, sampler=NeymanSampler(), max_updates=300,
                      random_state=3, warm_start=True)
    with pytest.warns(RuntimeWarning, match="Interrupted"):
        v.fit()
    assert np.isnan(v.values_).all() and not v.converged_
    v.fit()
    ref = ShapleyValuer(utility=utility.game, sampler=NeymanSampler(), max_updates=300,
                        random_state=3).fit()
    np.testing.assert_array_equal(v.values_, ref.values_)


def test_warm_start_relearns_the_allocation_and_goes_on():
    game = AirportGame(np.linspace(1.0, 4.0, 20))
    v = ShapleyValuer(utility=game, sampler=NeymanSampler(), max_updates=300,
                      random_state=0, warm_start=True).fit()
    first, counts = v.n_utility_evaluations_, v.counts_.copy()
    v.set_params(max_updates=1200).fit()
    assert v.n_utility_evaluations_ > 2 * first and np.all(v.counts_ >= counts)
    assert np.all(np.abs(v.values_ - game.shapley_values()) <= 4 * v.stderr_ + 1e-10)


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize("params, message", [
    ({"warm_up": 0}, "warm_up must be an integer >= 1. Got 0 instead."),
    ({"warm_up": 2.5}, "warm_up must be an integer >= 1. Got 2.5 instead."),
    ({"batch_size": 0}, "batch_size must be an integer >= 1. Got 0 instead."),
    ({"paired": "yes"}, "The 'paired' parameter of NeymanSampler must be a bool. "
                        "Got 'yes' instead."),
    ({"min_share": 1.5}, r"The 'min_share' parameter of NeymanSampler must be a float in "
                         r"\[0, 1\]. Got 1.5 instead."),
    ({"min_share": float("nan")}, "min_share.*Got nan instead."),
])
def test_parameter_errors_name_the_parameter_and_the_value(params, message):
    with pytest.raises(ValueError, match=message):
        NeymanSampler(**params)
    sampler = NeymanSampler().set_params(**params)  # set_params stores; fit refuses
    with pytest.raises(ValueError, match=message):
        ShapleyValuer(utility=_voting(6), sampler=sampler, max_updates=100).fit()
