"""Delta Shapley: Shapley over the full size range, the paper's definition when clipped."""

import itertools
from math import comb

import numpy as np
import pytest
from joblib import parallel_config
from sklearn.datasets import make_classification
from sklearn.neighbors import KNeighborsClassifier
from sklearn.utils._param_validation import InvalidParameterError

from skdvl import ShapleyValuer
from skdvl.games import (
    AirportGame,
    AsymmetricVotingGame,
    MinerGame,
    ShoesGame,
    SymmetricVotingGame,
    UnanimityGame,
)
from skdvl.sampling import OwenSampler, StratifiedSampler
from skdvl.valuation._delta import DeltaShapleyValuer, _clipped_sizes, delta_mass

GAMES = [
    SymmetricVotingGame(8),
    AsymmetricVotingGame([1, 1, 2, 3, 5, 8, 1, 2], quota=12),
    ShoesGame(3, 4),
    AirportGame([1.0, 1.0, 2.5, 3.0, 3.0, 4.0, 7.5]),
    MinerGame(7),
    UnanimityGame(7, carriers=[[0, 1], [2, 3, 4], [1, 5]], weights=[1.0, 2.0, -0.5]),
]


def delta_by_definition(game, lower, upper):
    """Watson et al. (2023): 1/(u-l+1) sum_{k=l}^{u} mean over |T| = k of u(T + i) - u(T)."""
    n = game.n_players
    values = np.zeros(n)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for k in range(lower, upper + 1):
            marginals = [game(list(T) + [i]) - game(list(T))
                         for T in itertools.combinations(others, k)]
            assert len(marginals) == comb(n - 1, k)
            values[i] += np.mean(marginals) / (upper - lower + 1)
    return values


# --------------------------------------------------------------------------- the mass
@pytest.mark.parametrize("n", [1, 2, 9])
def test_full_range_mass_is_shapleys(n):
    np.testing.assert_array_equal(delta_mass(n), np.full(n, 1.0 / n))
    np.testing.assert_array_equal(delta_mass(n, 0, n + 5), np.full(n, 1.0 / n))


def test_clipped_mass_is_uniform_on_the_range():
    m = delta_mass(10, 2, 5)
    np.testing.assert_allclose(m, [0, 0, 0.25, 0.25, 0.25, 0.25, 0, 0, 0, 0])


@pytest.mark.parametrize("n, lower, upper", [(8, 0, 7), (8, 1, 3), (9, 0, 0), (9, 4, 8)])
def test_clipped_sizes_give_every_size_in_range_the_same_probability(n, lower, upper):
    pi = StratifiedSampler(size_strategy=_clipped_sizes(n, lower, upper)).size_distribution(n)
    inside = pi[lower:upper + 1]
    np.testing.assert_allclose(inside, inside[0], rtol=1e-12)
    assert inside[0] > 0


# --------------------------------------------------------------------------- oracles
@pytest.mark.parametrize("game", GAMES, ids=lambda g: type(g).__name__)
def test_full_range_equals_exact_shapley_values(game):
    v = DeltaShapleyValuer(utility=game, sampler="exact").fit()
    np.testing.assert_allclose(v.values_, game.shapley_values(), atol=1e-12)


@pytest.mark.parametrize("game", GAMES[:3], ids=lambda g: type(g).__name__)
def test_full_range_is_the_stratified_shapley_computation(game):
    """Literally the same samples and weights as ShapleyValuer(sampler="stratified")."""
    kw = dict(utility=game, max_updates=40, random_state=11)
    delta = DeltaShapleyValuer(**kw).fit()
    shapley = ShapleyValuer(sampler="stratified", **kw).fit()
    for attr in ("values_", "stderr_", "counts_"):
        np.testing.assert_array_equal(getattr(delta, attr), getattr(shapley, attr))
    assert delta.n_utility_evaluations_ == shapley.n_utility_evaluations_


def test_full_range_is_the_stratified_computation_on_data_with_cv():
    X, y = make_classification(n_samples=16, n_features=3, n_informative=2, n_redundant=0,
                               random_state=0)
    kw = dict(estimator=KNeighborsClassifier(1), max_updates=3, cv=2, random_state=0)
    a = DeltaShapleyValuer(**kw).fit(X, y)
    b = ShapleyValuer(sampler="stratified", **kw).fit(X, y)
    np.testing.assert_array_equal(a.values_, b.values_)


@pytest.mark.parametrize("game", GAMES, ids=lambda g: type(g).__name__)
@pytest.mark.parametrize("lower, upper", [(0, 2), (1, 3), (2, 2), (3, 6)])
def test_clipped_exact_values_equal_the_definition_by_enumeration(game, lower, upper):
    v = DeltaShapleyValuer(lower_bound=lower, upper_bound=upper, utility=game,
                           sampler="exact").fit()
    np.testing.assert_allclose(v.values_, delta_by_definition(game, lower, upper),
                               atol=1e-12)


def test_clipped_values_are_scaled_truncated_shapley_values():
    """n / (u - l + 1) times the part of the Shapley value from sizes l..u."""
    game, n, lower, upper = GAMES[3], 7, 1, 4
    shapley_part = delta_by_definition(game, lower, upper) * (upper - lower + 1) / n
    v = DeltaShapleyValuer(lower_bound=lower, upper_bound=upper, utility=game,
                           sampler="exact").fit()
    np.testing.assert_allclose(v.values_, n / (upper - lower + 1) * shapley_part)


@pytest.mark.parametrize("lower, upper", [(0, 2), (2, 5)])
def test_clipped_monte_carlo_converges_to_the_definition(lower, upper):
    game = GAMES[5]
    exact = delta_by_definition(game, lower, upper)
    v = DeltaShapleyValuer(lower_bound=lower, upper_bound=upper, utility=game,
                           max_updates=3000, random_state=4).fit()
    z = np.abs(v.values_ - exact) / np.maximum(v.stderr_, 1e-12)
    assert np.all(z < 4.5), z
    assert np.all(v.stderr_ < 0.05)


def test_other_samplers_estimate_the_same_value():
    game, lower, upper = GAMES[1], 1, 4
    exact = delta_by_definition(game, lower, upper)
    v = DeltaShapleyValuer(lower_bound=lower, upper_bound=upper, utility=game,
                           sampler=OwenSampler(), max_updates=2000, random_state=0).fit()
    np.testing.assert_allclose(v.values_, exact, atol=6 * v.stderr_.max())


def test_values_identical_for_any_n_jobs():
    kw = dict(lower_bound=1, upper_bound=4, utility=GAMES[1], max_updates=200,
              random_state=3)
    ref = DeltaShapleyValuer(n_jobs=1, **kw).fit()
    two = DeltaShapleyValuer(n_jobs=2, **kw).fit()
    with parallel_config(backend="threading", n_jobs=2):
        threads = DeltaShapleyValuer(**kw).fit()
    for other in (two, threads):
        for attr in ("values_", "stderr_", "counts_"):
            np.testing.assert_array_equal(getattr(other, attr), getattr(ref, attr))


def test_upper_bound_past_a_folds_size_is_clipped_to_it():
    X, y = make_classification(n_samples=12, n_features=3, n_informative=2, n_redundant=0,
                               random_state=0)
    v = DeltaShapleyValuer(KNeighborsClassifier(1), lower_bound=0, upper_bound=11,
                           sampler="exact", cv=2)
    full = DeltaShapleyValuer(estimator=KNeighborsClassifier(1), sampler="exact", cv=2)
    np.testing.assert_allclose(v.fit(X, y).values_, full.fit(X, y).values_)


def test_reweight_from_exact_gives_shapley_values():
    game = GAMES[0]
    v = DeltaShapleyValuer(lower_bound=1, upper_bound=3, utility=game, sampler="exact").fit()
    np.testing.assert_allclose(v.reweight(ShapleyValuer()).values_, game.shapley_values())


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize("params, match", [
    ({"lower_bound": -1}, r"'lower_bound' parameter of DeltaShapleyValuer must be an int in "
                          r"the range \[0, inf\)\. Got -1 instead"),
    ({"lower_bound": 1.5}, r"'lower_bound' parameter .* Got 1.5 instead"),
    ({"upper_bound": -2}, r"'upper_bound' parameter .* Got -2 instead"),
    ({"max_updates": 0}, r"'max_updates' parameter .* Got 0 instead"),
])
def test_bad_parameters_are_refused(params, match):
    with pytest.raises(InvalidParameterError, match=match):
        DeltaShapleyValuer(utility=SymmetricVotingGame(5), **params).fit()


def test_bounds_in_the_wrong_order_are_refused():
    with pytest.raises(ValueError, match=r"lower_bound=4 must be <= upper_bound=2\. Swap"):
        DeltaShapleyValuer(lower_bound=4, upper_bound=2, utility=SymmetricVotingGame(6)).fit()


def test_lower_bound_past_the_players_is_refused():
    with pytest.raises(ValueError, match=r"lower_bound=5 must be <= upper_bound and below the "
                       r"number of players: a game of 5 players has coalitions of the others "
                       r"of sizes 0\.\.4\. Lower lower_bound"):
        DeltaShapleyValuer(lower_bound=5, utility=SymmetricVotingGame(5)).fit()


@pytest.mark.parametrize("sampler, match", [
    ("permutation", r"'sampler' parameter of DeltaShapleyValuer must be one of "
                    r"\['exact', 'stratified'\] or a sampler instance\. Got 'permutation'"),
    (3, r"'sampler' parameter of DeltaShapleyValuer must be an instance of"),
])
def test_bad_sampler_is_refused(sampler, match):
    with pytest.raises((ValueError, InvalidParameterError), match=match):
        DeltaShapleyValuer(utility=SymmetricVotingGame(5), sampler=sampler).fit()
