"""KernelSHAP, Leverage SHAP, Kernel Banzhaf and regression-adjusted MSR against exact values.

Oracles: the analytic games of :mod:`skdvl.games` and a data game whose every
coalition was fitted (exact enumeration of a LogisticRegression utility).
"""

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.preprocessing import StandardScaler

from skdvl import BanzhafValuer, BetaShapleyValuer, ShapleyValuer
from skdvl.games import AirportGame, ShoesGame, UnanimityGame
from skdvl.sampling import KernelSampler, LeverageSampler, RegressionMSRSampler
from skdvl.stopping import MaxSamples
from skdvl.utility import ModelUtility

SHAPLEY = ["kernel", "leverage", "regression_msr"]
BANZHAF = ["kernel", "regression_msr"]


class TableGame:
    """A utility given by its table over all coalitions (bit codes)."""

    def __init__(self, table, n):
        self.table, self.n_players = table, n
        self._bits = 1 << np.arange(n, dtype=np.int64)

    def __call__(self, subset):
        return float(self.table[int(np.sum(self._bits[np.asarray(subset, dtype=np.int64)]))])

    def evaluate(self, masks):
        return self.table[masks.astype(np.int64) @ self._bits]


@pytest.fixture(scope="module")
def data_game():
    """Ridge regression on 10 diabetes rows (two targets corrupted), every coalition fitted."""
    X, y = load_diabetes(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    idx = np.random.default_rng(3).permutation(len(y))
    Xt, yt, Xv, yv = X[idx[:10]], y[idx[:10]].copy(), X[idx[100:200]], y[idx[100:200]]
    yt[:2] = yt[:2][::-1] + 150.0
    u = ModelUtility(Ridge(alpha=1.0), Xt, yt, Xv, yv, scoring="r2", cache_size=0)
    n = 10
    codes = np.arange(1 << n)
    table = np.array([u(np.flatnonzero((c >> np.arange(n)) & 1)) for c in codes])
    game = TableGame(table, n)
    exact = {
        "shapley": ShapleyValuer(utility=game, sampler="exact").fit().values_,
        "banzhaf": BanzhafValuer(utility=game, sampler="exact").fit().values_,
    }
    return game, exact


def _fit(cls, game, sampler, samples, seed, **kw):
    return cls(utility=game, sampler=sampler, max_updates=None, stopping=MaxSamples(samples),
               random_state=seed, **kw).fit()


# --------------------------------------------------------------------------- convergence
@pytest.mark.parametrize("sampler", SHAPLEY)
@pytest.mark.parametrize("game", [AirportGame(np.arange(1.0, 13.0)), ShoesGame(5, 7)])
def test_shapley_estimators_converge_on_analytic_games(sampler, game):
    exact = game.shapley_values()
    v = _fit(ShapleyValuer, game, sampler, 20_000, 0)
    scale = np.abs(exact).max()
    assert np.max(np.abs(v.values_ - exact)) < 0.03 * scale
    # and the error bars say how far they are
    assert np.mean(np.abs(v.values_ - exact) <= 3 * v.stderr_ + 1e-12) >= 0.9


@pytest.mark.parametrize("sampler", BANZHAF)
def test_banzhaf_estimators_converge_on_an_analytic_game(sampler):
    game = AirportGame(np.arange(1.0, 11.0))
    exact = game.banzhaf_values()
    v = _fit(BanzhafValuer, game, sampler, 20_000, 0)
    assert np.max(np.abs(v.values_ - exact)) < 0.03 * np.abs(exact).max()


@pytest.mark.parametrize("sampler", SHAPLEY)
def test_shapley_estimators_converge_on_a_data_game(sampler, data_game):
    game, exact = data_game
    v = _fit(ShapleyValuer, game, sampler, 8000, 1)
    assert np.max(np.abs(v.values_ - exact["shapley"])) < 0.02  # values span [-0.95, 0.2]


@pytest.mark.parametrize("sampler", ["kernel", "leverage"])
def test_kernel_shap_is_efficient_exactly(sampler, data_game):
    game, _ = data_game
    v = _fit(ShapleyValuer, game, sampler, 30, 2)
    full, empty = game.table[-1], game.table[0]
    assert abs(v.values_.sum() - (full - empty)) < 1e-10


@pytest.mark.parametrize("sampler", SHAPLEY)
@pytest.mark.parametrize("n", [1, 2, 3])
def test_tiny_games_are_enumerated_exactly(sampler, n):
    game = AirportGame(np.arange(1.0, n + 1.0))
    v = ShapleyValuer(utility=game, sampler=sampler, random_state=0).fit()
    np.testing.assert_allclose(v.values_, game.shapley_values(), atol=1e-12)
    assert v.converged_ and v.n_utility_evaluations_ == 2**n


# --------------------------------------------------------------------------- accuracy
def test_regression_estimators_beat_permutation_sampling_at_equal_calls(data_game):
    """The point of these estimators: far lower error for the same utility evaluations."""
    game, exact = data_game
    budget = 600  # utility evaluations

    def mse(sampler, samples):
        errs = [np.mean((_fit(ShapleyValuer, game, sampler, samples, s).values_
                         - exact["shapley"]) ** 2) for s in range(8)]
        return float(np.mean(errs))

    perm = mse("permutation", budget // 10)
    kernel = mse("kernel", (budget - 22) // 2)
    assert kernel < perm / 3


def test_regression_msr_is_unbiased(data_game):
    """Means over 50 seeds lie within 3 standard errors of the exact values."""
    game, exact = data_game
    est = np.array([_fit(ShapleyValuer, game, "regression_msr", 60, s).values_
                     for s in range(50)])
    se = est.std(axis=0, ddof=1) / np.sqrt(len(est))
    assert np.mean(np.abs(est.mean(axis=0) - exact["shapley"]) <= 3 * se) >= 0.95


@pytest.mark.parametrize("cls,sampler,samples", [
    (ShapleyValuer, "kernel", 60), (ShapleyValuer, "leverage", 60),
    (ShapleyValuer, "regression_msr", 150), (BanzhafValuer, "kernel", 80),
    (BanzhafValuer, "regression_msr", 150),
])
def test_error_bars_cover_the_exact_values(cls, sampler, samples, data_game):
    """The 95% intervals from stderr_ cover the exact value for >= 90% of rows over seeds."""
    game, exact = data_game
    key = "shapley" if cls is ShapleyValuer else "banzhaf"
    covered = []
    for seed in range(30):
        v = _fit(cls, game, sampler, samples, seed)
        assert np.all(v.stderr_ > 0)
        covered.append(np.abs(v.values_ - exact[key]) <= 1.96 * v.stderr_)
    assert np.mean(covered) >= 0.9


# --------------------------------------------------------------------------- weighted Banzhaf
def test_weighted_banzhaf_exact_equals_the_closed_form():
    """In the unanimity game of T, a member's weighted Banzhaf value is w^(|T| - 1)."""
    game = UnanimityGame(8, [[0, 1, 2]])
    for w in (0.2, 0.5, 0.7):
        v = BanzhafValuer(utility=game, sampler="exact", weight=w).fit().values_
        np.testing.assert_allclose(v, [w**2] * 3 + [0.0] * 5, atol=1e-12)


def test_weight_one_half_is_banzhaf():
    game = AirportGame(np.arange(1.0, 9.0))
    np.testing.assert_allclose(
        BanzhafValuer(utility=game, sampler="exact", weight=0.5).fit().values_,
        game.banzhaf_values(), atol=1e-12)
    a = BanzhafValuer(utility=game, random_state=0, max_updates=300).fit().values_
    b = BanzhafValuer(utility=game, weight=0.5, random_state=0, max_updates=300).fit().values_
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("sampler", ["msr", "kernel", "regression_msr"])
def test_weighted_banzhaf_estimators_converge(sampler, data_game):
    game, _ = data_game
    exact = BanzhafValuer(utility=game, sampler="exact", weight=0.3).fit().values_
    v = _fit(BanzhafValuer, game, sampler, 20_000, 0, weight=0.3)
    assert np.max(np.abs(v.values_ - exact)) < 0.03
    assert np.mean(np.abs(v.values_ - exact) <= 3 * v.stderr_) >= 0.9


# --------------------------------------------------------------------------- one sample, all values
def test_regression_msr_samples_give_every_semivalue(data_game):
    game, exact = data_game
    v = _fit(ShapleyValuer, game, "regression_msr", 20_000, 0)
    evals = v.n_utility_evaluations_
    targets = [
        (BanzhafValuer(), exact["banzhaf"]),
        (BanzhafValuer(weight=0.3),
         BanzhafValuer(utility=game, sampler="exact", weight=0.3).fit().values_),
        (BetaShapleyValuer(4, 1),
         BetaShapleyValuer(4, 1, utility=game, sampler="exact").fit().values_),
    ]
    for target, truth in targets:
        other = v.reweight(target)
        assert type(other) is type(target) and other.n_utility_evaluations_ == evals
        assert other.get_params()["sampler"] == "regression_msr"
        assert np.max(np.abs(other.values_ - truth)) < 0.03


def test_exact_samples_give_every_semivalue_exactly():
    game = AirportGame(np.arange(1.0, 8.0))
    v = ShapleyValuer(utility=game, sampler="exact").fit()
    np.testing.assert_allclose(v.reweight(BanzhafValuer()).values_, game.banzhaf_values())
    beta = BetaShapleyValuer(16, 1, utility=game, sampler="exact").fit().values_
    np.testing.assert_allclose(v.reweight(BetaShapleyValuer(16, 1)).values_, beta)


def test_reweight_refuses_samples_tied_to_their_semivalue():
    game = AirportGame(np.arange(1.0, 8.0))
    v = ShapleyValuer(utility=game, sampler="permutation", max_updates=5, random_state=0).fit()
    with pytest.raises(ValueError, match="cannot give another semivalue.*'svarm'"):
        v.reweight(BanzhafValuer())
    with pytest.raises(ValueError, match="reweight needs an unfitted semivalue valuer"):
        v.reweight(LogisticRegression())


def test_reweight_warns_when_the_samples_miss_the_new_semivalue():
    game = AirportGame(np.arange(1.0, 41.0))
    v = _fit(BanzhafValuer, game, "regression_msr", 200, 0)  # sizes near 20 only
    with pytest.warns(UserWarning, match="unreliable"):
        v.reweight(BetaShapleyValuer(16, 1))


# --------------------------------------------------------------------------- engine contract
@pytest.mark.parametrize("cls,sampler", [(ShapleyValuer, s) for s in SHAPLEY]
                         + [(BanzhafValuer, s) for s in BANZHAF])
def test_values_do_not_depend_on_n_jobs(cls, sampler):
    game = AirportGame(np.arange(1.0, 9.0))
    kw = dict(utility=game, sampler=sampler, max_updates=None, stopping=MaxSamples(2000),
              random_state=0)
    np.testing.assert_array_equal(cls(n_jobs=1, **kw).fit().values_,
                                  cls(n_jobs=2, **kw).fit().values_)


@pytest.mark.parametrize("sampler", SHAPLEY)
def test_a_block_split_by_the_budget_continues_identically(sampler):
    game = AirportGame(np.arange(1.0, 9.0))
    once = _fit(ShapleyValuer, game, sampler, 300, 4)
    v = ShapleyValuer(utility=game, sampler=sampler, max_updates=None, stopping=MaxSamples(77),
                      random_state=4, warm_start=True).fit()
    v.set_params(stopping=MaxSamples(300)).fit()
    np.testing.assert_allclose(v.values_, once.values_, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(v.counts_, once.counts_)


def test_auto_budget_is_100_n_coalitions():
    game = AirportGame(np.arange(1.0, 9.0))
    v = ShapleyValuer(utility=game, sampler="regression_msr", random_state=0).fit()
    assert 800 <= v.counts_.max() < 800 + 128  # coalitions drawn (or enumerated)
    assert v.n_utility_evaluations_ <= 2**8  # a coalition drawn twice is evaluated once


def test_a_coalition_drawn_twice_is_evaluated_once():
    class Counting(AirportGame):
        calls = 0

        def evaluate(self, masks):
            Counting.calls += masks.shape[0]
            return super().evaluate(masks)

    game = Counting(np.arange(1.0, 7.0))
    v = BanzhafValuer(utility=game, sampler="msr", stopping=MaxSamples(1000),
                      random_state=0).fit()
    assert Counting.calls == v.n_utility_evaluations_ == 2**6
    assert (v.counts_ == 1000).all()
    np.testing.assert_allclose(v.values_, game.banzhaf_values(), atol=0.15)


def test_data_mode_with_a_model(data_game):
    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)[:60]
    y = y[:60]
    v = ShapleyValuer(LogisticRegression(), sampler="kernel", max_updates=None,
                      stopping=MaxSamples(100), random_state=0).fit(
        X[:30], y[:30], X_val=X[30:], y_val=y[30:])
    assert v.values_.shape == (30,) and np.all(np.isfinite(v.values_))
    assert np.all(np.isfinite(v.stderr_)) and np.all(v.stderr_ > 0)


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize("make,match", [
    (lambda: KernelSampler(batch_size=0), "batch_size must be an integer >= 1. Got 0"),
    (lambda: KernelSampler(paired="yes"), "paired must be True or False. Got 'yes'"),
    (lambda: RegressionMSRSampler(n_folds=1), "n_folds must be an integer >= 2. Got 1"),
    (lambda: RegressionMSRSampler(ridge=-1.0), "ridge must be a finite number >= 0. Got -1.0"),
    (lambda: RegressionMSRSampler(ridge=float("nan")), "ridge must be a finite number"),
])
def test_bad_sampler_parameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_set_params_is_checked_at_fit():
    v = ShapleyValuer(utility=AirportGame(np.arange(1.0, 6.0)), sampler=KernelSampler())
    v.set_params(sampler__batch_size=-3)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1. Got -3"):
        v.fit()


def test_kernel_refuses_other_semivalues():
    game = AirportGame(np.arange(1.0, 9.0))
    with pytest.raises(ValueError, match="KernelSampler estimates Shapley and .*svarm"):
        BetaShapleyValuer(16, 1, utility=game, sampler="kernel").fit()
    with pytest.raises(ValueError, match="LeverageSampler estimates Shapley values only"):
        BanzhafValuer(utility=game, sampler=LeverageSampler()).fit()


def test_kernel_banzhaf_evaluates_pairs():
    """weight=0.5: each sample is a coalition and its complement (two evaluations)."""
    game = AirportGame(np.arange(1.0, 101.0))
    v = _fit(BanzhafValuer, game, "kernel", 500, 0)
    assert v.n_utility_evaluations_ == 1000
    w = _fit(BanzhafValuer, game, "kernel", 500, 0, weight=0.3)  # complements: another law
    assert w.n_utility_evaluations_ == 500


@pytest.mark.parametrize("sampler", SHAPLEY)
def test_stderr_tol_stops_once_the_error_bars_are_small(sampler, data_game):
    game, exact = data_game
    v = ShapleyValuer(utility=game, sampler=sampler, max_updates=None, stderr_tol=0.01,
                      stopping=MaxSamples(50_000), random_state=0).fit()
    assert v.converged_ and v.stderr_.max() < 0.01
    assert np.max(np.abs(v.values_ - exact["shapley"])) < 0.04


@pytest.mark.parametrize("sampler", ["kernel", "leverage"])
def test_strata_drawn_completely_enter_exactly(sampler, data_game):
    """At n = 10 every stratum is small: once each is drawn out, the values are exact."""
    game, exact = data_game
    v = _fit(ShapleyValuer, game, sampler, 20_000, 0)
    assert v.n_utility_evaluations_ == 2**10  # repeats cost nothing
    np.testing.assert_allclose(v.values_, exact["shapley"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(v.stderr_, 0.0, atol=1e-10)


def test_distinct_units_drop_repeats_whatever_the_merge_order():
    """A unit drawn again adds nothing; the distinct set and its sums ignore block order."""
    from skdvl.sampling._regression import DistinctUnits

    rng = np.random.default_rng(0)
    n = 9
    masks = rng.random((40, n)) < 0.4
    masks[:, 0] = False  # canonical units
    masks[20:30] = masks[:10]  # ten repeats
    w = rng.random(n)  # a coalition's utility is a function of the coalition
    u = np.column_stack([masks @ w, (~masks) @ w]) ** 2
    rho = np.ones(40)
    stratum = np.minimum(masks.sum(axis=1), n - masks.sum(axis=1))

    def units(lo, hi):
        d = DistinctUnits(n, draws=hi - lo, coalitions=2 * (hi - lo))
        d.add(np.packbits(masks[lo:hi], axis=1), u[lo:hi], rho[lo:hi], stratum[lo:hi])
        return d

    a, b = DistinctUnits(n), DistinctUnits(n)
    a.merge(units(0, 25))
    a.merge(units(25, 40))
    b.merge(units(25, 40))
    b.merge(units(0, 25))
    distinct = len({row.tobytes() for row in np.packbits(masks, axis=1)})
    assert a.n_distinct == b.n_distinct == distinct <= 30
    assert a.draws == b.draws == 40
    sa, sb = a.stratum_sums(0.1), b.stratum_sums(0.1)
    assert sa.keys() == sb.keys()
    for key in sa:
        np.testing.assert_allclose(sa[key][0], sb[key][0], rtol=1e-12)
        np.testing.assert_allclose(sa[key][1], sb[key][1], rtol=1e-12)
    # the sums are those of the distinct units: against a direct computation
    first: dict = {}
    for i, row in enumerate(np.packbits(masks, axis=1)):
        first.setdefault(row.tobytes(), i)
    keep = np.array(sorted(first.values()))
    for key in sa:
        sel = keep[stratum[keep] == key]
        gram = sum(np.outer(z, z) for z in masks[sel].astype(float)) / 2 + sum(
            np.outer(z, z) for z in (~masks[sel]).astype(float)) / 2
        np.testing.assert_allclose(sa[key][0], gram, rtol=1e-12)
