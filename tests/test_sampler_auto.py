"""sampler="auto" (issue 26): exact when the budget covers 2^n, Kernel Banzhaf for Banzhaf
values below 20 calls per player, the hybrid surrogate-adjusted estimator otherwise (the
linear one beyond 100 players), the choice recorded in ``sampler_``."""

import warnings

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from skdvl import BanzhafValuer, BetaShapleyValuer, ShapleyValuer
from skdvl.games import AirportGame
from skdvl.sampling import (
    ExactSampler,
    HybridMSRSampler,
    KernelSampler,
    PermutationSampler,
    RegressionMSRSampler,
)
from skdvl.sampling._auto import choose_sampler


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


def test_auto_banzhaf_below_20_calls_per_player_is_kernel_banzhaf_on_budget(rng):
    game = AirportGame(rng.uniform(1.0, 10.0, 30))
    exact = game.banzhaf_values()
    errors, hybrid = [], []
    for seed in range(3):
        v = BanzhafValuer(utility=game, max_updates=10, random_state=seed).fit()
        assert isinstance(v.sampler_, KernelSampler) and v.sampler_.paired
        assert v.n_utility_evaluations_ == 10 * 30  # blocks that add up to the budget
        errors.append(np.mean((v.values_ - exact) ** 2))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            o = BanzhafValuer(utility=game, sampler=HybridMSRSampler(surrogate="linear"),
                              max_updates=300, random_state=seed).fit()
        assert o.n_utility_evaluations_ == 300
        hybrid.append(np.mean((o.values_ - exact) ** 2))
    # the measurement the rule rests on, against the closed form (8.5x the linear hybrid
    # and 23x the default one at 40 players)
    assert np.mean(errors) < np.mean(hybrid) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h = BanzhafValuer(utility=game, max_updates=20, random_state=0).fit()
        s = ShapleyValuer(utility=game, max_updates=10, random_state=0).fit()
    assert isinstance(h.sampler_, HybridMSRSampler) and h.n_utility_evaluations_ == 600
    assert isinstance(s.sampler_, HybridMSRSampler)  # Shapley: the hybrid estimator


def test_auto_weighted_banzhaf_at_a_small_budget_against_enumeration(rng):
    game = AirportGame(rng.uniform(1.0, 10.0, 12))  # 2^12 > 10 * 12 calls: sampled
    exact = BanzhafValuer(utility=game, weight=0.3, sampler="exact").fit().values_
    v = BanzhafValuer(utility=game, weight=0.3, max_updates=10, random_state=0).fit()
    assert repr(v.sampler_).startswith("KernelSampler(")
    assert v.n_utility_evaluations_ <= 120  # 120 draws; a coalition drawn again is cached
    assert np.corrcoef(v.values_, exact)[0, 1] > 0.9


@pytest.mark.parametrize("n,budget,algorithm,expected", [
    (40, 400, "banzhaf", "KernelSampler(batch_size=100)"),
    (40, 799, "banzhaf", "KernelSampler(batch_size=100)"),
    (40, 800, "banzhaf", "HybridMSRSampler()"),
    (40, 1199, "banzhaf", "HybridMSRSampler()"),
    # from 30 n: 4 folds, the allocation from the linear fit (Banzhaf values only)
    (40, 1200, "banzhaf", "HybridMSRSampler(ensembles=True, n_folds=4)"),
    (40, 40_000, "banzhaf", "HybridMSRSampler(ensembles=True, n_folds=4)"),
    (16, 480, "banzhaf", "HybridMSRSampler(ensembles=True, n_folds=4)"),
    (40, 1200, "shapley", "HybridMSRSampler()"),
    (40, None, "banzhaf", "HybridMSRSampler()"),
    # below 20 n: more folds, and with 4 the allocation from the surrogates' residuals
    (40, 400, "shapley", "HybridMSRSampler(n_folds=4, neyman_residuals='surrogate')"),
    (40, 400, "beta_shapley", "HybridMSRSampler(n_folds=4, neyman_residuals='surrogate')"),
    (40, 316, "shapley", "HybridMSRSampler(n_folds=3)"),  # 4 folds' cover 314 > 0.8 * 316
    (40, 799, "shapley", "HybridMSRSampler(n_folds=4, neyman_residuals='surrogate')"),
    (40, 800, "shapley", "HybridMSRSampler()"),
    (40, None, "shapley", "HybridMSRSampler()"),
    (16, 160, "shapley", "HybridMSRSampler(n_folds=4, neyman_residuals='surrogate')"),
    (120, 1200, "banzhaf", "RegressionMSRSampler()"),
    (16, 160, "banzhaf", "KernelSampler(batch_size=80)"),
    (16, 2 ** 16, "banzhaf", "ExactSampler()"),
    (40, 199, "banzhaf", "RegressionMSRSampler(surrogate='auto')"),  # below 5 n: no kernel
    (40, 200, "banzhaf", "KernelSampler(batch_size=100)"),
])
def test_the_rule_by_budget_and_semivalue(n, budget, algorithm, expected):
    assert repr(choose_sampler(n, budget, algorithm)) == expected


def test_auto_folds_leave_a_fifth_of_the_budget_to_the_allocation():
    for n in (12, 16, 40, 100):
        for budget in range(2 * HybridMSRSampler().min_updates(n), 20 * n, 7):
            sampler = choose_sampler(n, budget, "shapley")
            k = sampler.n_folds
            assert 2 <= k <= 4
            assert k == 2 or sampler.min_updates(n) <= 0.8 * budget
            if k < 4:  # the most folds that fit
                assert HybridMSRSampler(n_folds=k + 1).min_updates(n) > 0.8 * budget


def test_auto_banzhaf_at_30_n_calls_spends_the_budget_with_4_folds(rng):
    game = AirportGame(rng.uniform(1.0, 10.0, 12))  # 2^12 > 30 * 12 calls: sampled
    exact = game.banzhaf_values()
    v = BanzhafValuer(utility=game, max_updates=30, random_state=0).fit()
    assert repr(v.sampler_) == "HybridMSRSampler(ensembles=True, n_folds=4)"
    assert v.n_utility_evaluations_ == 360 and np.all(np.isfinite(v.stderr_))
    assert np.corrcoef(v.values_, exact)[0, 1] > 0.99


def test_auto_with_cheap_prefixes_keeps_2_folds_at_30_n():
    sampler = choose_sampler(40, 1200, "banzhaf", cheap_prefixes=True)
    assert repr(sampler) == "HybridMSRSampler(surrogate='linear')"


def test_auto_at_10_n_calls_spends_the_budget_with_4_folds(rng):
    game = AirportGame(rng.uniform(1.0, 10.0, 20))
    v = ShapleyValuer(utility=game, max_updates=10, random_state=0).fit()
    assert repr(v.sampler_) == "HybridMSRSampler(n_folds=4, neyman_residuals='surrogate')"
    assert v.n_utility_evaluations_ == 200 and np.all(np.isfinite(v.values_))
