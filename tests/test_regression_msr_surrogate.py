"""Regression-adjusted MSR with tree surrogates (issue 26): exact, unbiased, reproducible.

Oracles: symmetric games (a utility of the coalition size only, which the size-wise
linear part fits exactly) with closed-form Shapley and Banzhaf values, and the
closed-form values of the airport and weighted voting games.
"""

import warnings

import numpy as np
import pytest
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LinearRegression
from sklearn.tree import DecisionTreeRegressor

from skdvl import BanzhafValuer, BetaShapleyValuer, ShapleyValuer
from skdvl.games import AirportGame, AsymmetricVotingGame, MinerGame, SymmetricVotingGame
from skdvl.sampling import RegressionMSRSampler
from skdvl.stopping import MaxSamples


@pytest.fixture
def rng():
    return np.random.default_rng(26)


def _fit(cls, game, sampler, samples, seed, **kw):
    v = cls(utility=game, sampler=sampler, stopping=MaxSamples(samples), max_updates=None,
            random_state=seed, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return v.fit()


@pytest.mark.parametrize("surrogate", ["tree", "auto"])
@pytest.mark.parametrize("game", [SymmetricVotingGame(15), MinerGame(14)],
                         ids=["symmetric-voting", "miner"])
def test_symmetric_games_are_exact(game, surrogate):
    """A utility of |S| only leaves no residual once every size was drawn (Shapley
    draws sizes uniformly): the values are exact, not estimates."""
    v = _fit(ShapleyValuer, game, RegressionMSRSampler(surrogate=surrogate), 300, 0)
    np.testing.assert_allclose(v.values_, game.shapley_values(), atol=1e-10)
    np.testing.assert_allclose(v.stderr_, 0.0, atol=1e-10)


def _games(rng):
    n = 12
    weights = rng.permutation(np.arange(1, 3 * n + 1))[:n]
    return {"airport": AirportGame(rng.uniform(1.0, 10.0, n)),
            "voting": AsymmetricVotingGame(weights, int(weights.sum() // 2 + 1))}


@pytest.mark.parametrize("surrogate", ["tree", "auto",
                                       DecisionTreeRegressor(min_samples_leaf=3)],
                         ids=["tree", "auto", "instance"])
@pytest.mark.parametrize("name", ["airport", "voting"])
def test_unbiased_on_games_with_closed_form_values(name, surrogate, rng):
    """The mean over seeds is within 4 standard errors of the exact Shapley values
    for every player (12 players: the chance of a false alarm is below 0.1%)."""
    game = _games(rng)[name]
    exact = game.shapley_values()
    est = np.array([_fit(ShapleyValuer, game, RegressionMSRSampler(surrogate=surrogate),
                         120, seed).values_ for seed in range(24)])
    mean, se = est.mean(axis=0), est.std(axis=0, ddof=1) / np.sqrt(est.shape[0])
    z = np.abs(mean - exact) / np.maximum(se, 1e-12)
    assert z.max() < 4.0, (name, z.round(2))


def test_stderr_is_calibrated(rng):
    """The 95% intervals cover the exact value for at least 90% of (player, seed)."""
    game = _games(rng)["voting"]
    exact = game.shapley_values()
    covered = []
    for seed in range(12):
        v = _fit(ShapleyValuer, game, RegressionMSRSampler(surrogate="tree"), 200, seed)
        covered.append(np.abs(v.values_ - exact) <= 1.96 * v.stderr_)
    assert np.mean(covered) >= 0.9


def test_tree_beats_linear_on_the_airport_game(rng):
    """The airport game's maximum is a tree: its residual, and error, shrink."""
    game = AirportGame(rng.uniform(1.0, 10.0, 30))
    exact = game.shapley_values()

    def mse(surrogate):
        return np.mean([np.mean((_fit(ShapleyValuer, game,
                                      RegressionMSRSampler(surrogate=surrogate), 1500,
                                      seed).values_ - exact) ** 2) for seed in range(3)])

    assert mse("auto") < 0.2 * mse("linear")


@pytest.mark.parametrize("cls", [BanzhafValuer, BetaShapleyValuer])
def test_other_semivalues_unbiased(cls, rng):
    """Banzhaf and Beta(16, 1) Shapley (their own mass in the tree values and the
    residual weights) against exact enumeration of the 12-player voting game."""
    game = _games(rng)["voting"]
    exact = cls(utility=game, sampler="exact").fit().values_
    est = np.array([_fit(cls, game, RegressionMSRSampler(surrogate="tree"), 150,
                         seed).values_ for seed in range(20)])
    mean, se = est.mean(axis=0), est.std(axis=0, ddof=1) / np.sqrt(est.shape[0])
    assert (np.abs(mean - exact) / np.maximum(se, 1e-12)).max() < 4.0


def test_values_reproducible_and_identical_for_any_n_jobs(rng):
    game = _games(rng)["airport"]
    sampler = RegressionMSRSampler(surrogate=RandomForestRegressor(n_estimators=5))
    a = _fit(ShapleyValuer, game, sampler, 256, 3, n_jobs=1).values_
    b = _fit(ShapleyValuer, game, sampler, 256, 3, n_jobs=2).values_
    c = _fit(ShapleyValuer, game, sampler, 256, 3, n_jobs=1).values_
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("bad", ["forest", LinearRegression(), 3])
def test_bad_surrogate_is_refused(bad):
    with pytest.raises(ValueError, match="surrogate must be 'linear', 'tree'"):
        RegressionMSRSampler(surrogate=bad)
