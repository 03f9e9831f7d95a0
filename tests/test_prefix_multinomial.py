"""Multinomial prefix walks (issue 25): every prefix equals its cold fit.

Oracles: the cold batched fit of the prefix's rows (exact Newton or Newton-CG, from
another start), scikit-learn's own LogisticRegression at a tight tolerance, and the
valuations computed without the walk.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits, make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skdvl import ModelUtility, ShapleyValuer
from skdvl.utility import _model
from skdvl.utility._linear_batch import plan_batched
from skdvl.utility._prefix_multinomial import MultinomialPrefixes
from skdvl.utility._prefix_walk import PrefixWalk, walk_reason


@pytest.fixture
def rng():
    return np.random.default_rng(11)


def _data(n=40, d=6, K=4, seed=0):
    X, y = make_classification(n_samples=n, n_features=d, n_informative=4, n_redundant=0,
                               n_classes=K, n_clusters_per_class=1, random_state=seed)
    return X, y


def _params(fit, r):
    return np.r_[fit.coef[r].ravel(), fit.intercept[r].ravel()]


def _walk_against_cold(est, X, y, orders, bases=None, steps=None):
    """Walk the orders; compare every fitted prefix with the cold batched fit of its
    rows. Returns the worst relative parameter difference, the prefixes compared and
    the walk's fits."""
    plan = plan_batched(est)
    W, n = len(orders), X.shape[0]
    bases = np.zeros((W, n), bool) if bases is None else bases
    walk = PrefixWalk(plan, X, y, bases, orders)
    assert isinstance(walk.fits, MultinomialPrefixes)
    worst, compared, fits = 0.0, 0, []
    for _ in range(steps or min(len(o) for o in orders)):
        got = walk.step(np.arange(W))
        masks = np.stack([walk.mask(r) for r in range(W)])
        cold = plan.fit(X, y, masks)
        np.testing.assert_array_equal(got.degenerate, cold.degenerate)
        np.testing.assert_array_equal(got.present, cold.present)
        binary = cold.present.sum(axis=1) == 2
        assert got.failed[binary].all()  # refitted by the batched path, as binary
        for r in np.flatnonzero(~cold.degenerate & ~cold.failed & ~binary):
            assert not got.failed[r]
            a, b = _params(got, r), _params(cold, r)
            worst = max(worst, np.abs(a - b).max() / max(1.0, np.abs(b).max()))
            compared += 1
        fits.append(got)
    return worst, compared, fits


@pytest.mark.parametrize("est", [
    LogisticRegression(),
    LogisticRegression(C=0.05),
    LogisticRegression(C=30.0, fit_intercept=False),
    LogisticRegression(class_weight={0: 2.0, 1: 0.5, 2: 1.0, 3: 3.0}),
    make_pipeline(StandardScaler(), LogisticRegression()),
], ids=["default", "small-C", "no-intercept", "class-weight", "scaler"])
def test_prefixes_equal_cold_fits_on_random_permutations(est, rng):
    X, y = _data()
    orders = [rng.permutation(40) for _ in range(3)]
    worst, compared, _ = _walk_against_cold(est, X, y, orders)
    assert compared > 80 and worst < 1e-6


def test_prefixes_equal_cold_newton_cg_fits_beyond_64_parameters(rng):
    """5 classes x 16 parameters: the cold path takes Newton-CG steps too (another
    preconditioner, another start)."""
    X, y = _data(n=50, d=15, K=5, seed=1)
    orders = [rng.permutation(50) for _ in range(2)]
    worst, compared, _ = _walk_against_cold(LogisticRegression(), X, y, orders)
    assert compared > 60 and worst < 1e-6


def test_feature_scales_through_the_scaler(rng):
    X, y = _data(seed=2)
    X = X * 10.0 ** rng.integers(-3, 4, X.shape[1]) + rng.normal(0, 100, X.shape[1])
    est = make_pipeline(StandardScaler(), LogisticRegression(C=2.0))
    orders = [rng.permutation(40) for _ in range(2)]
    worst, compared, _ = _walk_against_cold(est, X, y, orders)
    assert compared > 50 and worst < 1e-6


def test_prefixes_equal_scikit_learn_at_a_tight_tolerance(rng):
    X, y = _data(n=30, seed=3)
    order = rng.permutation(30)
    _, _, fits = _walk_against_cold(LogisticRegression(), X, y, [order])
    checked = 0
    for j in (9, 17, 29):  # prefixes of 10, 18 and 30 rows
        rows = order[:j + 1]
        if np.unique(y[rows]).size < 3:
            continue
        ref = LogisticRegression(tol=1e-12, max_iter=100_000).fit(X[rows], y[rows])
        f = fits[j]
        present = f.present[0]
        np.testing.assert_allclose(f.coef[0][present], ref.coef_, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(f.intercept[0][present], ref.intercept_, rtol=1e-5,
                                   atol=1e-5)
        checked += 1
    assert checked >= 2


def test_classes_arriving_one_by_one(rng):
    """One class first (degenerate), then two (binary: the batched path refits), then
    each new class joins the walk's softmax."""
    X, y = _data(n=40, K=4, seed=4)
    order = np.concatenate([rng.permutation(np.flatnonzero(y == c)) for c in range(4)])
    worst, compared, fits = _walk_against_cold(LogisticRegression(), X, y, [order])
    n0, n1 = int((y == 0).sum()), int((y == 1).sum())
    degenerate = np.array([f.degenerate[0] for f in fits])
    binary = np.array([f.failed[0] for f in fits])
    assert degenerate.tolist() == [True] * n0 + [False] * (40 - n0)
    assert binary.tolist() == [False] * n0 + [True] * n1 + [False] * (40 - n0 - n1)
    assert compared == 40 - n0 - n1 and worst < 1e-6


def test_utilities_of_one_and_two_class_prefixes(rng):
    """Through the utility: one class gives default_score, two classes the batched
    path's binary fit, three the walk's; all equal the cold utilities."""
    X, y = _data(n=30, K=3, seed=7)
    order = np.concatenate([np.flatnonzero(y == c) for c in range(3)])
    u = ModelUtility(LogisticRegression(), X, y, X, y, scoring="accuracy",
                     default_score=-1.0)
    cold = ModelUtility(LogisticRegression(), X, y, X, y, scoring="accuracy",
                        default_score=-1.0, cache_size=0)
    walk = u.prefix_walk(np.zeros((1, 30), bool), [order])
    got = np.array([walk.step(np.array([0]))[0] for _ in range(30)])
    want = np.array([cold(order[:j + 1]) for j in range(30)])
    n0 = int((y == 0).sum())
    assert (got[:n0] == -1.0).all() and (got[n0:] > 0).all()
    np.testing.assert_array_equal(got, want)


def test_digits_prefixes_with_missing_classes(rng):
    """Digits, 10 classes, 64 features: early prefixes miss classes."""
    X, y = load_digits(return_X_y=True)
    X, y = StandardScaler().fit_transform(X[:60]), y[:60]
    X[:, X.std(axis=0) == 0] = 0.0
    orders = [rng.permutation(60) for _ in range(2)]
    bases = np.zeros((2, 60), bool)
    bases[0, orders[0][:6]] = True
    orders[0] = orders[0][6:]
    worst, compared, fits = _walk_against_cold(LogisticRegression(), X, y, orders,
                                               bases=bases, steps=25)
    assert compared > 30 and worst < 1e-6
    assert any((f.present.sum(axis=1) < 10).any() for f in fits)


def test_a_walk_has_the_same_bits_alone_and_with_others(rng):
    X, y = _data(n=40, seed=5)
    plan = plan_batched(LogisticRegression())
    orders = [rng.permutation(40) for _ in range(4)]
    alone = PrefixWalk(plan, X, y, np.zeros((1, 40), bool), orders[1:2])
    together = PrefixWalk(plan, X, y, np.zeros((4, 40), bool), orders)
    for j in range(40):
        a = alone.step(np.array([0]))
        walks = np.arange(4) if j % 3 else np.array([1, 3])
        t = together.step(walks)
        row = int(np.flatnonzero(walks == 1)[0])
        assert np.array_equal(a.coef[0], t.coef[row])
        assert np.array_equal(a.intercept[0], t.intercept[row])
        assert a.failed[0] == t.failed[row]


def test_walk_reasons_and_the_auto_rule():
    X, y = load_digits(return_X_y=True)
    X, y = X[:60], y[:60]
    assert walk_reason(plan_batched(LogisticRegression()), y) == ""
    assert "balanced" in walk_reason(plan_batched(LogisticRegression(
        class_weight="balanced")), y)
    u = ModelUtility(LogisticRegression(), X, y, X, y)
    assert u.fit_path == "batched" and u.walk_reason == ""
    u = ModelUtility(LogisticRegression(class_weight="balanced"), X, y, X, y)
    assert u.fit_path.startswith("per-coalition: a multinomial model with 650")
    small = ModelUtility(LogisticRegression(class_weight="balanced"), X[:, :3], y,
                         X[:, :3], y)
    assert small.fit_path == "batched"  # 40 parameters: exact Newton, cold


@pytest.fixture(scope="module")
def three_classes():
    X, y = _data(n=60, d=5, K=3, seed=6)
    X = StandardScaler().fit_transform(X)
    return X[:24], y[:24], X[24:], y[24:]


def _valuer(**kw):
    return ShapleyValuer(LogisticRegression(), scoring="accuracy", random_state=0, **kw)


@pytest.mark.parametrize("truncation", [None, 0.01])
def test_values_identical_with_and_without_the_walk(three_classes, truncation,
                                                     monkeypatch, walk_from):
    walk_from(1)
    X, y, X_val, y_val = three_classes
    kw = dict(sampler="permutation", truncation=truncation, max_updates=8)
    walked = _valuer(**kw).fit(X, y, X_val=X_val, y_val=y_val)
    assert walked.fit_path_ == "batched; permutation prefixes fitted incrementally"
    monkeypatch.setattr(_model.ModelUtility, "prefix_walk", lambda self, b, o: None)
    cold = _valuer(**kw).fit(X, y, X_val=X_val, y_val=y_val)
    np.testing.assert_array_equal(walked.values_, cold.values_)
    np.testing.assert_array_equal(walked.counts_, cold.counts_)


def test_exact_shapley_of_eight_rows_with_and_without_the_walk(three_classes,
                                                                monkeypatch, walk_from):
    """All 8! orders' marginals are estimated by permutations walked incrementally; the
    same permutations without the walk give the same bits, and the enumeration agrees
    within the standard error."""
    walk_from(1)
    X, y, X_val, y_val = three_classes
    X, y = X[:8], y[:8]
    assert np.unique(y).size == 3
    exact = _valuer(sampler="exact").fit(X, y, X_val=X_val, y_val=y_val)
    kw = dict(sampler="permutation", max_updates=400)
    walked = _valuer(**kw).fit(X, y, X_val=X_val, y_val=y_val)
    assert "incrementally" in walked.fit_path_
    monkeypatch.setattr(_model.ModelUtility, "prefix_walk", lambda self, b, o: None)
    cold = _valuer(**kw).fit(X, y, X_val=X_val, y_val=y_val)
    np.testing.assert_array_equal(walked.values_, cold.values_)
    assert np.abs(walked.values_ - exact.values_).max() < 4 * walked.stderr_.max() + 1e-12


def test_values_identical_for_any_n_jobs_on_the_walk(three_classes, walk_from):
    walk_from(1)
    X, y, X_val, y_val = three_classes
    kw = dict(sampler="permutation", truncation=0.01, max_updates=6)
    one = _valuer(n_jobs=1, **kw).fit(X, y, X_val=X_val, y_val=y_val)
    two = _valuer(n_jobs=2, **kw).fit(X, y, X_val=X_val, y_val=y_val)
    assert "incrementally" in one.fit_path_
    np.testing.assert_array_equal(one.values_, two.values_)
