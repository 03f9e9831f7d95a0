"""No value, standard error or count that was not computed (issue 24, items 2, 3 and 8).

A one-sample standard error is unknown, not 0; a sampler that cannot cover its budget
says so; ``truncation`` is refused under its own name.
"""

import warnings

import numpy as np
import pytest
from sklearn.base import BaseEstimator, RegressorMixin

from skdvl import BanzhafValuer, ShapleyValuer
from skdvl.games import AirportGame, SymmetricVotingGame


def _fit(v):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return v.fit()


@pytest.mark.parametrize("sampler", ["permutation", "uniform", "owen", "stratified"])
def test_one_sample_gives_an_unknown_standard_error_not_zero(sampler):
    v = _fit(ShapleyValuer(utility=AirportGame([1.0, 2, 3, 4, 5]), sampler=sampler,
                           max_updates=1, random_state=0))
    assert np.all(v.counts_ == 1)
    assert np.isnan(v.stderr_).all()
    # two samples: a standard error is computed again, and it is the sample's spread
    v2 = _fit(ShapleyValuer(utility=AirportGame([1.0, 2, 3, 4, 5]), sampler=sampler,
                            max_updates=2, random_state=0))
    assert np.all(v2.counts_ == 2)
    if sampler != "owen":  # Owen's grid of 20 is not covered by 2 samples (below)
        assert np.isfinite(v2.stderr_).all()


def test_msr_one_sample_on_a_side_gives_an_unknown_standard_error():
    from skdvl.sampling import MSRSampler
    from skdvl.stopping import MaxSamples

    v = _fit(BanzhafValuer(utility=SymmetricVotingGame(6), sampler=MSRSampler(batch_size=4),
                           stopping=MaxSamples(3), random_state=1))
    inside = v.result_  # 3 coalitions: some player is in (or out of) exactly one
    assert not np.any((inside.stderr == 0) & (inside.counts > 0))
    assert np.isnan(inside.stderr[np.isfinite(inside.values)]).any()


def test_cross_valuation_keeps_an_unknown_standard_error_unknown():
    from sklearn.datasets import make_classification
    from sklearn.tree import DecisionTreeClassifier

    X, y = make_classification(n_samples=18, n_features=3, n_informative=2,
                               n_redundant=0, random_state=0)
    v = ShapleyValuer(DecisionTreeClassifier(random_state=0), sampler="permutation",
                      max_updates=1, cv=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v.fit(X, y)
    assert np.isnan(v.stderr_).all()


@pytest.mark.parametrize("bad", [1.0, 1.5, -0.1])
def test_truncation_out_of_range_is_refused_by_its_own_name(bad):
    with pytest.raises(ValueError, match=r"truncation must be a relative tolerance in "
                                         rf"\[0, 1\).*Got {bad!r} instead"):
        ShapleyValuer(utility=SymmetricVotingGame(4), truncation=bad, max_updates=2).fit()


# ------------------------------------------------------------------ learned utilities (item 5)
class _NaNModel(RegressorMixin, BaseEstimator):
    """A regressor whose predictions are all NaN."""

    def fit(self, X, y):
        return self

    def predict(self, X):
        return np.full(len(X), np.nan)


def test_a_surrogate_that_predicts_nan_is_refused():
    v = ShapleyValuer(utility=SymmetricVotingGame(5), utility_model=_NaNModel(),
                      training_budget=10, max_updates=3, random_state=0)
    with pytest.raises(ValueError, match="predicted .* non-finite utilities"):
        _fit(v)


def test_a_training_budget_too_small_to_learn_is_warned_with_the_minimum():
    from sklearn.linear_model import LinearRegression

    v = ShapleyValuer(utility=SymmetricVotingGame(5), utility_model=LinearRegression(),
                      training_budget=1, max_updates=3, random_state=0)
    with pytest.warns(UserWarning, match=r"training_budget=1 is fewer than n_players \+ 1 = 6"):
        v.fit()


def test_training_budget_without_a_utility_model_is_refused():
    v = ShapleyValuer(utility=SymmetricVotingGame(5), training_budget=10, max_updates=3)
    with pytest.raises(ValueError, match="training_budget=10 has no effect without "
                                         "utility_model"):
        v.fit()


# ------------------------------------------------------------------ budgets a design needs (3)
def test_owen_below_its_grid_warns_with_the_minimum_and_reports_no_standard_error():
    game = AirportGame([1.0, 2, 3, 4, 5])
    v = ShapleyValuer(utility=game, sampler="owen", max_updates=2, random_state=0)
    with pytest.warns(UserWarning, match=r"max_updates=2 is fewer than the 20 updates"):
        v.fit()
    assert np.all(v.counts_ == 2) and np.isnan(v.stderr_).all()
    # the whole grid once: a standard error again, and the error it states is honest
    full = _fit(ShapleyValuer(utility=game, sampler="owen", max_updates=40, random_state=0))
    assert np.isfinite(full.stderr_).all()
    err = np.abs(full.values_ - game.shapley_values())
    assert np.all(err <= 5 * full.stderr_ + 1e-9)


@pytest.mark.parametrize("sampler", ["kernel", "leverage", "regression_msr", "svarm"])
def test_a_per_coalition_budget_exceeded_by_the_design_is_said(sampler):
    game = AirportGame([1.0, 2, 3, 4, 5])
    v = ShapleyValuer(utility=game, sampler=sampler, max_updates=2, random_state=0)
    with pytest.warns(UserWarning, match=r"max_updates=2 coalitions per game was exceeded"):
        v.fit()
    assert v.n_utility_evaluations_ > 2
    # a budget the design fits in: no such warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        ShapleyValuer(utility=game, sampler=sampler, max_updates=200, random_state=0).fit()
