"""Oracles for the semivalue valuers: analytic games and brute-force enumeration."""

import itertools
import pickle
import warnings
from math import factorial

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_classification, make_regression
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsClassifier
from threadpoolctl import threadpool_limits

from skdvl import (
    BanzhafValuer,
    BetaShapleyValuer,
    LOOValuer,
    ModelUtility,
    ShapleyValuer,
)
from skdvl.games import (
    AirportGame,
    AsymmetricVotingGame,
    MinerGame,
    ShoesGame,
    SymmetricVotingGame,
    UnanimityGame,
)
from skdvl.sampling import ExactSampler, FixedTruncation, OwenSampler

GAMES = [
    SymmetricVotingGame(8),
    AsymmetricVotingGame([1, 1, 2, 3, 5, 8, 1, 2], quota=12),
    ShoesGame(4, 5),
    AirportGame([1.0, 1.0, 2.5, 3.0, 3.0, 4.0, 7.5]),
    MinerGame(9),
    UnanimityGame(7, carriers=[[0, 1], [2, 3, 4], [1, 5]], weights=[1.0, 2.0, -0.5]),
]


def _banzhaf_known(game):
    try:
        return game.banzhaf_values()
    except NotImplementedError:
        return None


def brute_force_semivalue(u, n, weight):
    """sum over T not containing i of weight(|T|) * (u(T + i) - u(T)), by enumeration."""
    values = np.zeros(n)
    cache = {}

    def value(T):
        key = frozenset(T)
        if key not in cache:
            cache[key] = u(sorted(key))
        return cache[key]

    for i in range(n):
        others = [j for j in range(n) if j != i]
        for k in range(n):
            for T in itertools.combinations(others, k):
                values[i] += weight(n, k) * (value(T + (i,)) - value(T))
    return values


def shapley_weight(n, k):
    return factorial(k) * factorial(n - k - 1) / factorial(n)


def banzhaf_weight(n, k):
    return 1 / 2 ** (n - 1)


# --------------------------------------------------------------------------- exact values
@pytest.mark.parametrize("game", GAMES, ids=lambda g: type(g).__name__)
def test_exact_shapley_equals_analytic_values(game):
    v = ShapleyValuer(utility=game, sampler="exact").fit()
    np.testing.assert_allclose(v.values_, game.shapley_values(), atol=1e-10, rtol=0)
    assert v.n_utility_evaluations_ == 2**game.n_players
    assert v.converged_ and np.all(v.stderr_ == 0)


@pytest.mark.parametrize("game", [g for g in GAMES if _banzhaf_known(g) is not None],
                         ids=lambda g: type(g).__name__)
def test_exact_banzhaf_equals_analytic_values(game):
    v = BanzhafValuer(utility=game, sampler="exact").fit()
    np.testing.assert_allclose(v.values_, game.banzhaf_values(), atol=1e-10, rtol=0)


def test_known_banzhaf_games_exist():
    assert sum(_banzhaf_known(g) is not None for g in GAMES) >= 2
    g = UnanimityGame(4, carriers=[[0, 1, 2]], weights=[1.0])
    assert not np.allclose(g.banzhaf_values(), g.shapley_values())


@pytest.fixture(scope="module")
def small_model_problem():
    X, y = make_classification(n_samples=48, n_features=4, n_informative=3, n_redundant=0,
                               flip_y=0.1, random_state=3)
    return X[:8], y[:8], X[8:], y[8:]


class CountingLR(LogisticRegression):
    n_fits = 0

    def fit(self, X, y):
        type(self).n_fits += 1
        return super().fit(X, y)


def test_exact_shapley_of_a_model_equals_brute_force_with_one_fit_per_coalition(
        small_model_problem):
    X, y, Xv, yv = small_model_problem
    oracle_u = ModelUtility(LogisticRegression(), X, y, Xv, yv, cache_size=0)
    with threadpool_limits(1):
        expected = brute_force_semivalue(oracle_u, 8, shapley_weight)
    CountingLR.n_fits = 0
    v = ShapleyValuer(CountingLR(), sampler="exact").fit(X, y, X_val=Xv, y_val=yv)
    np.testing.assert_allclose(v.values_, expected, atol=1e-10, rtol=0)
    single_class = sum(
        len(set(y[list(S)])) < 2 for k in range(1, 9) for S in itertools.combinations(range(8), k))
    assert CountingLR.n_fits == 2**8 - 1 - single_class
    assert v.n_utility_evaluations_ == 2**8 - 1  # every non-empty coalition once


def test_exact_banzhaf_and_beta_of_a_model_equal_brute_force(small_model_problem):
    X, y, Xv, yv = small_model_problem
    X, y = X[:6], y[:6]
    oracle_u = ModelUtility(LogisticRegression(), X, y, Xv, yv, cache_size=0)
    banzhaf = BanzhafValuer(LogisticRegression(), sampler="exact").fit(
        X, y, X_val=Xv, y_val=yv)
    with threadpool_limits(1):
        expected = brute_force_semivalue(oracle_u, 6, banzhaf_weight)
    np.testing.assert_allclose(banzhaf.values_, expected, atol=1e-10)
    from scipy.special import beta as B
    a, b = 4.0, 2.0
    beta = BetaShapleyValuer(a, b, estimator=LogisticRegression(), sampler="exact").fit(
        X, y, X_val=Xv, y_val=yv)
    with threadpool_limits(1):
        expected = brute_force_semivalue(oracle_u, 6,
                                         lambda n, k: B(k + b, n - 1 - k + a) / B(a, b))
    np.testing.assert_allclose(beta.values_, expected, atol=1e-10)


def test_loo_equals_real_leave_one_out_retraining(small_model_problem):
    X, y, Xv, yv = small_model_problem
    v = LOOValuer(LogisticRegression()).fit(X, y, X_val=Xv, y_val=yv)
    full = LogisticRegression().fit(X, y).score(Xv, yv)
    expected = [full - LogisticRegression().fit(np.delete(X, i, 0), np.delete(y, i)).score(Xv, yv)
                for i in range(len(y))]
    np.testing.assert_allclose(v.values_, expected, atol=1e-12)
    assert v.n_utility_evaluations_ == len(y) + 1


def test_exact_refuses_many_players_unless_told():
    with pytest.raises(ValueError, match="n = 21 players is more than max_players = 20"):
        ShapleyValuer(utility=MinerGame(21), sampler="exact").fit()
    v = ShapleyValuer(utility=MinerGame(12), sampler=ExactSampler(max_players=12)).fit()
    np.testing.assert_allclose(v.values_, MinerGame(12).shapley_values(), atol=1e-10)


# --------------------------------------------------------------------------- Monte Carlo
MC_GAME = AirportGame(np.round(np.linspace(1, 10, 24) ** 1.3, 2))
MC_BANZHAF_GAME = UnanimityGame(
    24, carriers=[[0, 1], [2, 3, 4], [5, 6, 7, 8], list(range(9, 12)), [12, 13], [20, 21, 22]],
    weights=[1.0, 2.0, 1.5, -1.0, 0.5, 3.0])


def _fraction_within(values, truth, stderr, k=3.0):
    return np.mean(np.abs(values - truth) <= k * stderr + 1e-12)


@pytest.mark.parametrize("sampler", ["permutation", "antithetic", "owen", "antithetic_owen",
                                     "stratified", OwenSampler(q="uniform")])
def test_monte_carlo_shapley_is_within_3_stderr_of_the_truth(sampler, seed):
    v = ShapleyValuer(utility=MC_GAME, sampler=sampler, max_updates=300,
                      random_state=seed).fit()
    truth = MC_GAME.shapley_values()
    assert _fraction_within(v.values_, truth, v.stderr_) >= 0.95
    assert np.all(v.stderr_ > 0) and np.all(v.counts_ >= 300)
    assert not v.converged_


@pytest.mark.parametrize("sampler", ["msr", "uniform", "antithetic"])
def test_monte_carlo_banzhaf_is_within_3_stderr_of_the_truth(sampler, seed):
    v = BanzhafValuer(utility=MC_BANZHAF_GAME, sampler=sampler, max_updates=2000,
                      random_state=seed).fit()
    truth = MC_BANZHAF_GAME.banzhaf_values()
    assert _fraction_within(v.values_, truth, v.stderr_) >= 0.95
    assert np.abs(v.values_ - truth).max() < 0.25


def test_uniform_sampler_is_unbiased_for_shapley_on_a_small_game(seed):
    game = UnanimityGame(6, carriers=[[0, 1], [1, 2, 3]], weights=[1.0, 2.0])
    v = ShapleyValuer(utility=game, sampler="uniform", max_updates=4000,
                      random_state=seed).fit()
    assert _fraction_within(v.values_, game.shapley_values(), v.stderr_) >= 0.95


def test_beta_1_1_equals_shapley_for_the_same_samples(seed):
    a = BetaShapleyValuer(1.0, 1.0, utility=MC_GAME, max_updates=50, random_state=seed).fit()
    b = ShapleyValuer(utility=MC_GAME, max_updates=50, random_state=seed).fit()
    np.testing.assert_allclose(a.values_, b.values_, rtol=1e-12, atol=1e-12)


def test_beta_16_1_monte_carlo_matches_exact(seed):
    game = AsymmetricVotingGame([1, 2, 3, 1, 2, 3, 4, 1, 1, 2], quota=10)
    exact = BetaShapleyValuer(16, 1, utility=game, sampler="exact").fit()
    mc = BetaShapleyValuer(16, 1, utility=game, max_updates=3000, random_state=seed).fit()
    assert _fraction_within(mc.values_, exact.values_, mc.stderr_) >= 0.9


class CallOnly:
    """A game seen through ``__call__`` only (no batched evaluate)."""

    def __init__(self, game):
        self.game, self.n_players = game, game.n_players

    def __call__(self, subset):
        return self.game(subset)


@pytest.mark.parametrize("wrap", [CallOnly, lambda g: g], ids=["call", "batched"])
def test_relative_truncation_is_exact_once_the_prefix_reaches_u_n(wrap, seed):
    # In the airport game, once the largest cost is in, every later marginal is 0:
    # truncating at |u(P) - u(N)| < tiny changes no value but saves evaluations.
    game = AirportGame(np.arange(1, 41.0))
    full = ShapleyValuer(utility=wrap(game), sampler="permutation", max_updates=20,
                         random_state=seed).fit()
    tmc = ShapleyValuer(utility=wrap(game), truncation=1e-9, max_updates=20,
                        random_state=seed).fit()
    np.testing.assert_allclose(tmc.values_, full.values_, atol=1e-12)
    if wrap is CallOnly:
        assert tmc.n_utility_evaluations_ < 0.7 * full.n_utility_evaluations_


@pytest.mark.parametrize("wrap", [CallOnly, lambda g: g], ids=["call", "batched"])
def test_fixed_truncation_zeroes_the_second_half_of_each_permutation(wrap, seed):
    class Count:
        n_players = 30

        def __call__(self, subset):
            return float(len(subset))

        def evaluate(self, masks):
            return masks.sum(axis=1).astype(float)

    v = ShapleyValuer(utility=wrap(Count()), truncation=FixedTruncation(0.5), max_updates=40,
                      random_state=seed).fit()
    assert v.values_.sum() == pytest.approx(15.0)  # each permutation pays 1 to 15 players
    assert v.n_utility_evaluations_ <= 40 * 15 + 1


def test_stderr_tol_converges(seed):
    v = ShapleyValuer(utility=MC_GAME, max_updates=None, stderr_tol=0.05,
                      random_state=seed).fit()
    assert v.converged_ and np.all(v.stderr_ < 0.05)


# --------------------------------------------------------------------------- determinism
@pytest.fixture(scope="module")
def model_problem():
    X, y = make_classification(n_samples=60, n_features=5, random_state=1)
    return X[:20], y[:20], X[20:], y[20:]


def test_same_seed_same_values_other_seed_other_values():
    a = ShapleyValuer(utility=MC_GAME, max_updates=5, random_state=1).fit().values_
    b = ShapleyValuer(utility=MC_GAME, max_updates=5, random_state=1).fit().values_
    c = ShapleyValuer(utility=MC_GAME, max_updates=5, random_state=2).fit().values_
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_warm_start_continues_the_same_sample_stream():
    # the block engine's stream: a sampler whose draws do not depend on the budget
    once = ShapleyValuer(utility=MC_GAME, sampler="permutation", max_updates=20,
                         random_state=0).fit()
    v = ShapleyValuer(utility=MC_GAME, sampler="permutation", max_updates=8,
                      random_state=0, warm_start=True).fit()
    v.set_params(max_updates=20).fit()
    np.testing.assert_allclose(v.values_, once.values_, rtol=1e-12)
    np.testing.assert_array_equal(v.counts_, once.counts_)


def test_keyboard_interrupt_returns_the_partial_result():
    class Interrupting:
        n_players = 5

        def __init__(self):
            self.calls = 0

        def __call__(self, subset):
            self.calls += 1
            if self.calls > 20:  # of the 32 coalitions (each is evaluated once)
                raise KeyboardInterrupt
            return float(len(subset))

    with pytest.warns(RuntimeWarning, match="Interrupted: returning the partial result"):
        v = ShapleyValuer(utility=Interrupting(), sampler="permutation", max_updates=100,
                          random_state=0).fit()
    assert 1 <= v.counts_.max() < 100 and not v.converged_
    np.testing.assert_allclose(v.values_, 1.0)


# --------------------------------------------------------------------------- data handling
def test_cross_valuation_values_every_row_in_cv_minus_one_games(model_problem):
    X, y, _, _ = model_problem
    v = LOOValuer(LogisticRegression(), cv=4).fit(X, y)
    assert v.values_.shape == (20,) and np.all(np.isfinite(v.values_))
    # each row plays in 3 games of 15 players: 3 * 16 evaluations per game ...
    assert v.n_utility_evaluations_ == 4 * 16
    from sklearn.model_selection import StratifiedKFold
    expected = np.zeros(20)
    for train, test in StratifiedKFold(4).split(X, y):
        sub = LOOValuer(LogisticRegression()).fit(X[train], y[train], X_val=X[test],
                                                  y_val=y[test])
        expected[train] += sub.values_ / 3
    np.testing.assert_allclose(v.values_, expected, atol=1e-12)


def test_regression_targets_work():
    X, y = make_regression(n_samples=40, n_features=3, noise=5.0, random_state=0)
    v = LOOValuer(Ridge()).fit(X[:10], y[:10], X_val=X[10:], y_val=y[10:])
    full = Ridge().fit(X[:10], y[:10]).score(X[10:], y[10:])
    drop0 = Ridge().fit(X[1:10], y[1:10]).score(X[10:], y[10:])
    assert v.values_[0] == pytest.approx(full - drop0)


def test_clone_and_pickle_keep_values(model_problem):
    X, y, Xv, yv = model_problem
    v = ShapleyValuer(KNeighborsClassifier(1), max_updates=2, random_state=0).fit(
        X, y, X_val=Xv, y_val=yv)
    back = pickle.loads(pickle.dumps(v))
    np.testing.assert_array_equal(back.values_, v.values_)
    refit = clone(v).fit(X, y, X_val=Xv, y_val=yv)
    np.testing.assert_array_equal(refit.values_, v.values_)


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize("params, match", [
    ({"max_updates": 0}, "The 'max_updates' parameter of ShapleyValuer must be .* Got 0"),
    ({"sampler": "bogus"}, "The 'sampler' parameter of ShapleyValuer must be one of .* "
                           "Got 'bogus'"),
    ({"sampler": "owen", "truncation": 0.1}, "truncation=0.1 applies to permutation samplers"),
    ({"stderr_tol": -1.0}, "The 'stderr_tol' parameter of ShapleyValuer must be .* Got -1.0"),
    ({"max_updates": None, "sampler": "permutation"}, "needs a budget: set max_updates"),
    ({"sampler": BanzhafValuer._samplers["msr"]()},
     r"MSR sampling estimates \(weighted\) Banzhaf values"),
    ({"error_score": "ignore"}, "The 'error_score' parameter of ShapleyValuer must be"),
])
def test_bad_parameters_name_the_parameter_and_value(params, match):
    with pytest.raises(ValueError, match=match):
        ShapleyValuer(utility=MinerGame(4), **params).fit()


def test_bad_data_is_refused(model_problem):
    X, y, Xv, yv = model_problem
    with pytest.raises(ValueError, match="X_val and y_val must be given together"):
        ShapleyValuer(LogisticRegression()).fit(X, y, X_val=Xv)
    with pytest.raises(ValueError, match="With a custom utility, fit\\(\\) takes no data"):
        ShapleyValuer(utility=MinerGame(4)).fit(X, y)
    with pytest.raises(ValueError, match="needs at least 2 samples"):
        ShapleyValuer(LogisticRegression()).fit(X[:1], y[:1], X_val=Xv, y_val=yv)
    with pytest.raises(ValueError, match="Beta|alpha"):
        BetaShapleyValuer(alpha=0.0, utility=MinerGame(4)).fit()


def test_uniform_sampling_of_shapley_values_warns_where_it_cannot_work():
    # At n = 24, sizes 0-2 and 21-23 are drawn less than once in 10^4 uniform samples but
    # carry a quarter of Shapley's weight: the estimate (and its stderr) cannot be trusted.
    game = AirportGame(np.arange(1, 25.0))
    with pytest.warns(UserWarning, match="carry 25% of this semivalue's weight at n = 24"):
        ShapleyValuer(utility=game, sampler="uniform", max_updates=2, random_state=0).fit()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ShapleyValuer(utility=game, sampler="owen", max_updates=20, random_state=0).fit()
        BanzhafValuer(utility=game, sampler="uniform", max_updates=2, random_state=0).fit()
