"""Incremental prefix fits (issue 25): every prefix of a walk equals its cold fit."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from joblib import parallel_config
from sklearn.datasets import load_breast_cancer, make_classification, make_regression
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skdvl import ModelUtility, ShapleyValuer
from skdvl.stopping import AbsoluteStandardError, MaxUpdates
from skdvl.utility import _model
from skdvl.utility._linear_batch import plan_batched
from skdvl.utility._prefix_walk import PrefixWalk, walk_reason


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def _params(fit, r):
    return np.r_[fit.coef[r].ravel(), fit.intercept[r]]


def _walk_against_cold(est, X, y, rng, W=3, bases=None):
    """Walk W random orders to the end; compare each prefix with the batched cold fit.

    Returns the largest difference of the parameters relative to their size, and
    the number of prefixes compared."""
    plan = plan_batched(est)
    n = X.shape[0]
    bases = np.zeros((W, n), bool) if bases is None else bases
    orders = [rng.permutation(np.flatnonzero(~bases[r])) for r in range(W)]
    walk = PrefixWalk(plan, X, y, bases, orders)
    worst, compared = 0.0, 0
    for _ in range(min(len(o) for o in orders)):
        got = walk.step(np.arange(W))
        masks = np.stack([walk.mask(r) for r in range(W)])
        cold = plan.fit(X, y, masks)
        np.testing.assert_array_equal(got.degenerate, cold.degenerate)
        np.testing.assert_array_equal(got.n_samples, masks.sum(axis=1))
        for r in np.flatnonzero(~cold.degenerate & ~cold.failed):
            assert not got.failed[r]
            a, b = _params(got, r), _params(cold, r)
            worst = max(worst, np.abs(a - b).max() / max(1.0, np.abs(b).max()))
            compared += 1
            if plan.scaler is not None:
                np.testing.assert_allclose(got.scaler_mean[r], cold.scaler_mean[r],
                                           rtol=1e-12, atol=1e-12 * np.abs(X).max())
    return worst, compared


def _scaled(X, rng):
    """Features of very different scales and offsets, one duplicated (collinear)."""
    X = X * 10.0 ** rng.integers(-3, 4, X.shape[1]) + rng.normal(0, 100, X.shape[1])
    return np.column_stack([X, X[:, 0]])


@pytest.mark.parametrize("est", [Ridge(alpha=0.5), LinearRegression(),
                                 Ridge(alpha=2.0, fit_intercept=False),
                                 LinearRegression(fit_intercept=False),
                                 make_pipeline(StandardScaler(), Ridge()),
                                 make_pipeline(StandardScaler(), LinearRegression())],
                         ids=["ridge", "ols", "ridge-no-intercept", "ols-no-intercept",
                              "scaler-ridge", "scaler-ols"])
def test_least_squares_prefixes_equal_cold_fits(est, rng):
    X, y = make_regression(n_samples=40, n_features=5, noise=2.0, random_state=1)
    worst, compared = _walk_against_cold(est, X, y, rng)
    assert compared >= 100
    assert worst < 1e-8
    # scales spanning 6 orders of magnitude and a duplicated column (rank-deficient)
    if isinstance(est, Ridge) or (hasattr(est, "steps") and isinstance(est[-1], Ridge)):
        worst, _ = _walk_against_cold(est, _scaled(X, rng), y, rng)
        assert worst < 1e-8


#: the binary logistic models every prefix path is checked on (and their test ids)
LOGISTIC_MODELS = [LogisticRegression(), LogisticRegression(C=50.0), LogisticRegression(C=0.01),
                   LogisticRegression(fit_intercept=False),
                   LogisticRegression(class_weight={0: 3.0, 1: 0.5}),
                   make_pipeline(StandardScaler(), LogisticRegression())]
LOGISTIC_IDS = ["C=1", "C=50", "C=0.01", "no-intercept", "class-weight", "scaler"]


@pytest.mark.parametrize("est", LOGISTIC_MODELS, ids=LOGISTIC_IDS)
def test_logistic_prefixes_equal_cold_fits_to_the_solver_tolerance(est, rng):
    X, y = make_classification(n_samples=60, n_features=6, random_state=2)
    if hasattr(est, "steps"):
        X = _scaled(X, rng)
    worst, compared = _walk_against_cold(est, X, y, rng)
    assert compared >= 150
    # the cold fit stops where no step moves a decision by 1e-7 logit
    assert worst < 1e-6


def test_walk_from_bases_equals_cold_fits(rng):
    X, y = make_classification(n_samples=50, n_features=4, n_informative=2, random_state=3)
    bases = np.zeros((4, 50), bool)
    bases[0, :10] = bases[1, 20:23] = bases[2, [0, 49]] = True  # walk 3 starts empty
    for est in (LogisticRegression(), Ridge()):
        worst, compared = _walk_against_cold(est, X, y.astype(float) if isinstance(
            est, Ridge) else y, rng, W=4, bases=bases)
        assert compared > 100 and worst < 1e-6


def test_one_class_prefixes_are_degenerate_and_the_walk_goes_on(rng):
    X, y = make_classification(n_samples=30, n_features=4, n_informative=2, random_state=4)
    order = np.r_[np.flatnonzero(y == 0), np.flatnonzero(y == 1)]  # one class first
    plan = plan_batched(LogisticRegression())
    walk = PrefixWalk(plan, X, y, np.zeros((1, 30), bool), [order])
    degenerate = [bool(walk.step(np.array([0])).degenerate[0]) for _ in range(30)]
    assert degenerate == [True] * int((y == 0).sum()) + [False] * int((y == 1).sum())


def assert_same_bits_alone_and_with_others(plan, X, y, rng):
    """Walk 2 of 6, stepped alone and with the others, which come and go (and fall
    behind): every prefix's coefficients and intercept bitwise equal."""
    n = X.shape[0]
    orders = [rng.permutation(n) for _ in range(6)]
    alone = PrefixWalk(plan, X, y, np.zeros((1, n), bool), orders[2:3])
    together = PrefixWalk(plan, X, y, np.zeros((6, n), bool), orders)
    for j in range(n):
        a = alone.step(np.array([0]))
        walks = np.arange(6) if j % 2 == 0 else np.array([1, 2])
        t = together.step(walks)
        row = int(np.flatnonzero(walks == 2)[0])
        assert np.array_equal(a.coef[0], t.coef[row])
        assert np.array_equal(a.intercept[0], t.intercept[row])


def test_a_walk_has_the_same_bits_alone_and_with_others(rng):
    X, y = make_classification(n_samples=80, n_features=8, random_state=5)
    assert_same_bits_alone_and_with_others(plan_batched(LogisticRegression()), X, y, rng)


def test_walk_reasons():
    y2, y3 = np.array([0, 1] * 5), np.arange(9) % 3
    assert walk_reason(plan_batched(LogisticRegression()), y2) == ""
    assert walk_reason(plan_batched(LogisticRegression()), y3) == ""  # multinomial walks
    assert "balanced" in walk_reason(plan_batched(LogisticRegression(
        class_weight="balanced")), y2)
    assert "every class" in walk_reason(plan_batched(LogisticRegression(
        class_weight={0: 2.0})), y2)
    pipe = make_pipeline(StandardScaler(), Ridge(fit_intercept=False))
    assert "without intercept" in walk_reason(plan_batched(pipe), y2 * 1.0)


@pytest.fixture(scope="module")
def cancer():
    X, y = load_breast_cancer(return_X_y=True)
    idx = np.random.default_rng(0).permutation(len(y))[:90]
    X, y = StandardScaler().fit_transform(X[idx]), y[idx].copy()
    y[:5] = 1 - y[:5]
    return X[:40], y[:40], X[40:], y[40:]


def _valuer(**kw):
    return ShapleyValuer(LogisticRegression(), scoring="accuracy", random_state=0, **kw)


@pytest.mark.parametrize("truncation", [None, 0.01])
@pytest.mark.parametrize("work", [1, 100])  # walked from the start, or part batched first
def test_values_identical_with_and_without_the_incremental_path(cancer, truncation, work,
                                                                 monkeypatch, walk_from):
    walk_from(work)
    X, y, X_val, y_val = cancer
    kw = dict(sampler="permutation", truncation=truncation, max_updates=30)
    walked = _valuer(**kw).fit(X, y, X_val=X_val, y_val=y_val)
    assert walked.fit_path_ == "batched; permutation prefixes fitted incrementally"
    monkeypatch.setattr(_model.ModelUtility, "prefix_walk", lambda self, b, o: None)
    cold = _valuer(**kw).fit(X, y, X_val=X_val, y_val=y_val)
    np.testing.assert_array_equal(walked.values_, cold.values_)
    np.testing.assert_array_equal(walked.counts_, cold.counts_)


def test_exact_shapley_of_ten_rows_is_the_same_and_matches_permutations(cancer):
    X, y, X_val, y_val = cancer
    exact = _valuer(sampler="exact").fit(X[:10], y[:10], X_val=X_val, y_val=y_val)
    assert "incrementally" not in exact.fit_path_
    u = ModelUtility(LogisticRegression(), X[:10], y[:10], X_val, y_val, scoring="accuracy")
    brute = exact.values_  # checked against enumeration elsewhere; here: permutations
    perm = _valuer(sampler="permutation", max_updates=3000).fit(
        X[:10], y[:10], X_val=X_val, y_val=y_val)
    assert u.walk_reason == ""
    assert np.abs(perm.values_ - brute).max() < 4 * perm.stderr_.max() + 1e-12


def test_values_identical_for_any_n_jobs_on_the_walk(cancer, walk_from):
    """Threads, so that the workers walk from the first prefix as this process does."""
    walk_from(1)
    X, y, X_val, y_val = cancer
    kw = dict(sampler="antithetic", truncation=0.01, max_updates=12)
    one = _valuer(n_jobs=1, **kw).fit(X, y, X_val=X_val, y_val=y_val)
    with parallel_config(backend="threading"):
        two = _valuer(n_jobs=2, **kw).fit(X, y, X_val=X_val, y_val=y_val)
    np.testing.assert_array_equal(one.values_, two.values_)


def test_an_interrupted_walk_keeps_its_finished_prefixes(cancer, monkeypatch, walk_from):
    walk_from(1)
    X, y, X_val, y_val = cancer
    real, real_block = _model._UtilityWalk.step, _model._UtilityWalk.step_block
    calls = {"n": 0}  # rounds of prefixes (a block of B is B rounds)

    def count(rounds):
        calls["n"] += rounds
        if calls["n"] >= 60:
            raise KeyboardInterrupt

    def step(self, walks):
        count(1)
        return real(self, walks)

    def step_block(self, walks, B):
        count(B)
        return real_block(self, walks, B)

    monkeypatch.setattr(_model._UtilityWalk, "step", step)
    monkeypatch.setattr(_model._UtilityWalk, "step_block", step_block)
    # a criterion that cannot plan its samples: the first permutation is walked alone
    # (then the other nine together), so that one walk finishes before the interrupt
    stopping = AbsoluteStandardError(1e-12) | MaxUpdates(10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        v = _valuer(sampler="permutation", stopping=stopping).fit(X, y, X_val=X_val,
                                                                   y_val=y_val)
    assert any("Interrupted" in str(w.message) for w in caught)
    # the first permutation walk (40 prefixes) finished before the interrupt: kept
    assert v.counts_.max() >= 1
    assert v.n_utility_evaluations_ <= 60 * 10 + 2


@pytest.mark.parametrize("est", [Ridge(alpha=0.5), make_pipeline(StandardScaler(),
                                                                 LinearRegression())],
                         ids=["ridge", "scaler+ols"])
def test_least_squares_values_bitwise_for_any_n_jobs_with_a_continuous_score(est):
    """With r2 every bit of a prefix's fit reaches the values: the prefixes a walk fits
    cold and those it walks (equal to round-off, not in their bits) must not depend on
    how many walks a task holds. Loky workers, the engine's own thresholds: 10
    permutations are one group with n_jobs=1 and two of 5 with n_jobs=2."""
    X, y = make_regression(n_samples=140, n_features=6, noise=5.0, random_state=0)
    kw = dict(scoring="r2", sampler="permutation", max_updates=10, random_state=0)
    fits = [ShapleyValuer(est, n_jobs=n_jobs, **kw).fit(X[:80], y[:80], X_val=X[80:],
                                                        y_val=y[80:])
            for n_jobs in (1, 2)]
    assert "incrementally" in fits[0].fit_path_
    np.testing.assert_array_equal(fits[0].values_, fits[1].values_)
