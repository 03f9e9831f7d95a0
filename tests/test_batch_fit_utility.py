"""ModelUtility's batched fast path (issue 13), against the per-coalition scikit-learn fits."""

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skdvl import BanzhafValuer, ModelUtility, ShapleyValuer
from skdvl.stopping import MaxSamples


@pytest.fixture(scope="module")
def cancer():
    X, y = load_breast_cancer(return_X_y=True)
    idx = np.random.default_rng(0).permutation(len(y))
    return X[idx], y[idx]


def _exact(estimator, X, y, X_val, y_val, batch_fit, scoring=None):
    v = ShapleyValuer(estimator, sampler="exact", scoring=scoring, batch_fit=batch_fit)
    return v.fit(X, y, X_val=X_val, y_val=y_val)


@pytest.mark.parametrize("make", [
    lambda: LogisticRegression(tol=1e-12, max_iter=10_000),
    lambda: make_pipeline(StandardScaler(), LogisticRegression(tol=1e-12, max_iter=10_000)),
])
def test_exact_shapley_is_the_same_with_and_without_the_fast_path(make, cancer):
    """A 10-row game, all 1,024 coalitions: accuracy utilities, identical values."""
    X, y = cancer
    X = StandardScaler().fit_transform(X) if not hasattr(make(), "steps") else X
    fast = _exact(make(), X[:10], y[:10], X[100:300], y[100:300], "auto")
    slow = _exact(make(), X[:10], y[:10], X[100:300], y[100:300], False)
    assert fast.fit_path_ == "batched"
    assert slow.fit_path_ == "per-coalition: batch_fit=False"
    np.testing.assert_allclose(fast.values_, slow.values_, rtol=0, atol=1e-12)
    assert fast.n_utility_evaluations_ == slow.n_utility_evaluations_


def test_ridge_r2_utilities_agree_to_rounding():
    X, y = load_diabetes(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    fast = _exact(Ridge(alpha=1.0), X[:10], y[:10], X[100:200], y[100:200], "auto", "r2")
    slow = _exact(Ridge(alpha=1.0), X[:10], y[:10], X[100:200], y[100:200], False, "r2")
    assert fast.fit_path_ == "batched"
    np.testing.assert_allclose(fast.values_, slow.values_, rtol=0, atol=1e-10)


@pytest.mark.parametrize("estimator, why", [
    (LogisticRegression(solver="liblinear", random_state=0), "liblinear"),
    (LogisticRegression(penalty="elasticnet", l1_ratio=1.0, solver="saga", random_state=0),
     "elasticnet"),
    (KNeighborsClassifier(n_neighbors=3), "KNeighborsClassifier"),
])
@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")
def test_unsupported_estimators_fall_back_to_per_coalition_fits(estimator, why, cancer):
    X, y = cancer
    X = StandardScaler().fit_transform(X)
    kw = dict(sampler="msr", max_updates=None, stopping=MaxSamples(40), random_state=0)
    auto = BanzhafValuer(estimator, **kw).fit(X[:30], y[:30], X_val=X[100:150],
                                              y_val=y[100:150])
    off = BanzhafValuer(estimator, batch_fit=False, **kw).fit(
        X[:30], y[:30], X_val=X[100:150], y_val=y[100:150])
    assert auto.fit_path_.startswith("per-coalition: ") and why in auto.fit_path_
    np.testing.assert_array_equal(auto.values_, off.values_)
    with pytest.raises(ValueError, match="batch_fit=True.*cannot be used"):
        BanzhafValuer(estimator, batch_fit=True, **kw).fit(
            X[:30], y[:30], X_val=X[100:150], y_val=y[100:150])


def test_large_multinomial_models_stay_per_coalition_unless_forced():
    # 650 parameters: batched where prefixes are walked incrementally (issue 25), else
    # (here: balanced class weights, which the walk refuses) per coalition
    X, y = load_digits(return_X_y=True)
    walked = ModelUtility(LogisticRegression(), X[:50], y[:50], X[50:80], y[50:80])
    assert walked.fit_path == "batched" and walked.walk_reason == ""
    lr = LogisticRegression(class_weight="balanced")
    u = ModelUtility(lr, X[:50], y[:50], X[50:80], y[50:80])
    assert u.fit_path.startswith("per-coalition: a multinomial model with 650 parameters")
    assert u.evaluate is None  # the engine then calls it coalition by coalition
    forced = ModelUtility(lr, X[:50], y[:50], X[50:80], y[50:80], batch_fit=True)
    assert forced.fit_path == "batched" and callable(forced.evaluate)


def test_non_finite_data_is_fitted_per_coalition(cancer):
    X, y = cancer
    X = X[:40].copy()
    X[3, 2] = np.nan
    u = ModelUtility(LogisticRegression(), X[:20], y[:20], X[20:40], y[20:40])
    assert u.fit_path == "per-coalition: X and X_val must be dense finite numeric arrays"


def test_values_do_not_depend_on_n_jobs(cancer):
    X, y = cancer
    X = StandardScaler().fit_transform(X)
    kw = dict(truncation=0.01, max_updates=5, random_state=3)
    one = ShapleyValuer(LogisticRegression(), n_jobs=1, **kw).fit(
        X[:40], y[:40], X_val=X[100:200], y_val=y[100:200])
    two = ShapleyValuer(LogisticRegression(), n_jobs=2, **kw).fit(
        X[:40], y[:40], X_val=X[100:200], y_val=y[100:200])
    assert one.fit_path_ == "batched; permutation prefixes fitted incrementally"
    np.testing.assert_array_equal(one.values_, two.values_)


def test_degenerate_coalitions_get_the_default_score(cancer):
    X, y = cancer
    order = np.argsort(y, kind="stable")  # class 0 first
    X, y = X[order][200:230], y[order][200:230]  # rows around the class boundary
    u = ModelUtility(LogisticRegression(), X, y, X[:10], y[:10], default_score=-1.0)
    assert u.fit_path == "batched"
    masks = np.zeros((3, 30), dtype=bool)
    masks[1, y == 0] = True  # one class only
    masks[2, :] = True
    out = u.evaluate(masks)
    assert out[0] == -1.0 and out[1] == -1.0 and 0.0 <= out[2] <= 1.0
    assert u.report.n_fits == 1


def test_coalitions_the_batched_solve_cannot_reproduce_are_fitted_by_sklearn(cancer):
    """A coalition marked failed goes to scikit-learn's fit: the same value as the slow path."""
    X, y = cancer
    X = StandardScaler().fit_transform(X)
    fast = ModelUtility(LogisticRegression(), X[:30], y[:30], X[100:200], y[100:200])
    slow = ModelUtility(LogisticRegression(), X[:30], y[:30], X[100:200], y[100:200],
                        batch_fit=False)
    plan_fit = fast._plan.fit

    def failing(*args, **kwargs):
        fitted = plan_fit(*args, **kwargs)
        fitted.failed[::2] = True
        return fitted

    fast._plan.fit = failing
    masks = np.random.default_rng(0).random((20, 30)) < 0.5
    out = fast.evaluate(masks)
    expected = np.array([slow(np.flatnonzero(m)) for m in masks])
    np.testing.assert_array_equal(out[::2], expected[::2])
    assert fast.n_evaluations == 20 and fast.report.n_fits == 20


def test_a_coalition_is_cached_across_calls(cancer):
    X, y = cancer
    X = StandardScaler().fit_transform(X)
    u = ModelUtility(LogisticRegression(), X[:30], y[:30], X[100:200], y[100:200])
    masks = np.random.default_rng(1).random((10, 30)) < 0.5
    first = u.evaluate(masks)
    again = u.evaluate(masks)
    single = u(np.flatnonzero(masks[0]))
    np.testing.assert_array_equal(first, again)
    assert single == first[0] and u.n_evaluations == 10


def test_bad_batch_fit_values_are_refused(cancer):
    X, y = cancer
    with pytest.raises(ValueError, match="batch_fit must be 'auto', True or False. Got 'yes'"):
        ModelUtility(LogisticRegression(), X[:20], y[:20], X[20:40], y[20:40],
                     batch_fit="yes")
    with pytest.raises(ValueError, match="batch_fit"):
        ShapleyValuer(LogisticRegression(), batch_fit="yes").fit(X[:20], y[:20])


@pytest.mark.parametrize("scoring", [None, "neg_log_loss"])
def test_a_coalitions_utility_does_not_depend_on_its_batch(scoring, cancer):
    """Bit for bit: one batch of 300, or batches of 7 (as a worker's cache would cut them)."""
    X, y = cancer
    X = StandardScaler().fit_transform(X)
    rng = np.random.default_rng(0)
    masks = rng.random((300, 100)) < rng.random((300, 1))
    one = ModelUtility(LogisticRegression(), X[:100], y[:100], X[200:400], y[200:400],
                       scoring=scoring, cache_size=0)
    many = ModelUtility(LogisticRegression(), X[:100], y[:100], X[200:400], y[200:400],
                        scoring=scoring, cache_size=0)
    whole = one.evaluate(masks)
    parts = np.concatenate([many.evaluate(masks[i:i + 7]) for i in range(0, 300, 7)])
    np.testing.assert_array_equal(whole, parts)
