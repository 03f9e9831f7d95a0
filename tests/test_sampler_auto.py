"""sampler="auto" (issue 26): exact when the budget covers 2^n, the hybrid surrogate-adjusted
estimator otherwise (the linear one beyond 100 players), the choice recorded in ``sampler_``."""

import warnings

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from skdvl import BanzhafValuer, BetaShapleyValuer, ShapleyValuer
from skdvl.games import AirportGame
from skdvl.sampling import ExactSampler, PermutationSampler, RegressionMSRSampler


@pytest.fixture
def rng():
    return np.random.default_rng(260)


@pytest.mark.parametrize("cls", [ShapleyValuer, BanzhafValuer, BetaShapleyValuer])
def test_auto_is_exact_when_the_budget_covers_every_coalition(cls, rng):
    game = AirportGame(rng.uniform(1.0, 10.0, 8))  # 2^8 = 256 <= 100 * 8 calls
    auto = cls(utility=game, sampler="auto", random_state=0).fit()
    exact = cls(utility=game, sampler="exact").fit()
    assert isinstance(auto.sampler_, ExactSampler)
    np.testing.assert_array_equal(auto.values_, exact.values_)
    assert auto.n_utility_evaluations_ == 2 ** 8


def test_auto_samples_with_the_hybrid_estimator_beyond(rng):
    game = AirportGame(rng.uniform(1.0, 10.0, 14))  # 2^14 > 100 * 14
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v = ShapleyValuer(utility=game, sampler="auto", random_state=0).fit()
    assert repr(v.sampler_) == "HybridMSRSampler()"
    assert v.n_utility_evaluations_ == 100 * 14
    assert np.abs(v.values_ - game.shapley_values()).max() < 0.05


def test_auto_budget_is_max_updates_times_n(rng):
    game = AirportGame(rng.uniform(1.0, 10.0, 12))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no over-budget warning for the auto choice
        v = ShapleyValuer(utility=game, sampler="auto", max_updates=30,
                          random_state=0).fit()
    assert v.n_utility_evaluations_ == 30 * 12
    # 2^12 = 4096 coalitions fit a budget of 400 * 12 calls: enumerated
    v = ShapleyValuer(utility=game, sampler="auto", max_updates=400).fit()
    assert isinstance(v.sampler_, ExactSampler)


def test_auto_linear_surrogate_for_many_players(rng):
    game = AirportGame(rng.uniform(1.0, 10.0, 120))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v = ShapleyValuer(utility=game, sampler="auto", max_updates=3,
                          random_state=0).fit()
    assert repr(v.sampler_) == "RegressionMSRSampler()"


def test_auto_on_data_and_reweight(rng):
    X, y = make_classification(n_samples=16, n_features=4, random_state=0)
    kw = {"X_val": X[8:], "y_val": y[8:]}
    v = ShapleyValuer(LogisticRegression(), sampler="auto").fit(X[:8], y[:8], **kw)
    e = ShapleyValuer(LogisticRegression(), sampler="exact").fit(X[:8], y[:8], **kw)
    np.testing.assert_allclose(v.values_, e.values_, atol=1e-12)
    b = v.reweight(BanzhafValuer(LogisticRegression()))
    be = BanzhafValuer(LogisticRegression(), sampler="exact").fit(X[:8], y[:8], **kw)
    np.testing.assert_allclose(b.values_, be.values_, atol=1e-12)


def test_auto_with_truncation_is_truncated_permutation_sampling():
    game = AirportGame(np.arange(1.0, 13.0))
    v = ShapleyValuer(utility=game, truncation=0.01, max_updates=30, random_state=0).fit()
    assert isinstance(v.sampler_, PermutationSampler) and v.sampler_.truncation == 0.01
    ref = ShapleyValuer(utility=game, sampler="permutation", truncation=0.01, max_updates=30,
                        random_state=0).fit()
    np.testing.assert_array_equal(v.values_, ref.values_)


def test_auto_is_the_default_and_prefers_the_linear_surrogate_on_the_batched_path():
    assert ShapleyValuer().sampler == "auto" and BanzhafValuer().sampler == "auto"
    X, y = make_classification(n_samples=40, n_features=4, random_state=0)
    v = ShapleyValuer(LogisticRegression(), max_updates=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v.fit(X[:20], y[:20], X_val=X[20:], y_val=y[20:])
    assert v.sampler_.surrogate == "linear"
    t = ShapleyValuer(DecisionTreeClassifier(random_state=0), max_updates=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t.fit(X[:20], y[:20], X_val=X[20:], y_val=y[20:])
    assert t.sampler_.surrogate == "auto"


def test_regression_msr_tree_name():
    v = ShapleyValuer(utility=AirportGame([1.0, 2.0, 3.0, 4.0, 5.0]),
                      sampler="regression_msr_tree", max_updates=40, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v.fit()
    assert isinstance(v.sampler_, RegressionMSRSampler)
    assert v.sampler_.surrogate == "auto"
