"""linear_datamodeling_score and loo_correlation against brute-force refits."""

import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.utils._param_validation import InvalidParameterError

from skdvl.evaluation import linear_datamodeling_score, loo_correlation


@pytest.fixture
def ridge_data(rng):
    X = rng.normal(size=(30, 3))
    w = np.array([1.0, -2.0, 0.5])
    y = X @ w + 0.5 * rng.normal(size=30)
    X_test = rng.normal(size=(6, 3))
    y_test = X_test @ w + 0.5 * rng.normal(size=6)
    return X, y, X_test, y_test


def _ridge_influence(X, y, X_test, y_test, alpha):
    """Up-weighting influence on the squared test error of ridge without intercept:
    -grad_t^T H^-1 grad_i with l = (x w - y)^2 and H = 2 (X^T X + alpha I) (sum loss)."""
    H = 2 * (X.T @ X + alpha * np.eye(X.shape[1]))
    w = np.linalg.solve(X.T @ X + alpha * np.eye(X.shape[1]), X.T @ y)
    g = 2 * (X @ w - y)[:, None] * X
    g_t = 2 * (X_test @ w - y_test)[:, None] * X_test
    return -g_t @ np.linalg.solve(H, g.T)


def test_lds_equals_a_brute_force_computation_on_ridge_regression(ridge_data, seed):
    X, y, X_test, y_test = ridge_data
    model = Ridge(alpha=1.0, fit_intercept=False)
    scores = _ridge_influence(X, y, X_test, y_test, 1.0)
    result = linear_datamodeling_score(scores, model, X, y, X_test, y_test, n_subsets=12,
                                       fraction=0.5, random_state=seed)
    # brute force: refit on each subset, squared test errors, Spearman per test row
    assert result.subsets.shape == (12, 15)
    actual = np.empty((12, 6))
    predicted = np.empty((12, 6))
    for s, rows in enumerate(result.subsets):
        assert len(set(rows.tolist())) == 15
        w = np.linalg.solve(X[rows].T @ X[rows] + np.eye(3), X[rows].T @ y[rows])
        actual[s] = (X_test @ w - y_test) ** 2
        predicted[s] = scores[:, rows].sum(1)
    per_row = np.array([spearmanr(predicted[:, t], actual[:, t])[0] for t in range(6)])
    np.testing.assert_allclose(result.actual, actual, rtol=1e-10)
    np.testing.assert_allclose(result.predicted, predicted, rtol=1e-12)
    np.testing.assert_allclose(result.per_row, per_row, rtol=1e-12)
    assert result.score == pytest.approx(per_row.mean(), rel=1e-12)
    assert result.score > 0.5  # the exact influence of a linear model predicts its refits


def test_lds_of_random_scores_is_near_zero(ridge_data, rng, seed):
    X, y, X_test, y_test = ridge_data
    scores = rng.normal(size=(6, 30))
    result = linear_datamodeling_score(scores, Ridge(), X, y, X_test, y_test, n_subsets=30,
                                       random_state=seed)
    assert abs(result.score) < 0.3


def test_subsets_are_drawn_from_the_seed_and_identical_for_any_n_jobs(ridge_data, seed):
    X, y, X_test, y_test = ridge_data
    scores = _ridge_influence(X, y, X_test, y_test, 1.0)
    kw = dict(n_subsets=6, fraction=0.3, random_state=seed)
    one = linear_datamodeling_score(scores, Ridge(), X, y, X_test, y_test, n_jobs=1, **kw)
    two = linear_datamodeling_score(scores, Ridge(), X, y, X_test, y_test, n_jobs=2, **kw)
    np.testing.assert_array_equal(one.subsets, two.subsets)
    np.testing.assert_array_equal(one.actual, two.actual)
    assert one.subsets.shape == (6, 9)
    other = linear_datamodeling_score(scores, Ridge(), X, y, X_test, y_test, n_subsets=6,
                                      fraction=0.3, random_state=seed + 1)
    assert not np.array_equal(one.subsets, other.subsets)


def test_outputs_of_a_classifier_and_a_callable(rng, seed):
    X = rng.normal(size=(40, 2))
    y = (X[:, 0] + 0.3 * rng.normal(size=40) > 0).astype(int)
    X_test, y_test = X[:5], y[:5]
    scores = rng.normal(size=(5, 40))
    model = LogisticRegression()
    loss = linear_datamodeling_score(scores, model, X, y, X_test, y_test, n_subsets=4,
                                     output="loss", random_state=seed)
    margin = linear_datamodeling_score(-scores, model, X, y, X_test, y_test, n_subsets=4,
                                       output="margin", random_state=seed)
    for s, rows in enumerate(loss.subsets):
        p = LogisticRegression().fit(X[rows], y[rows]).predict_proba(X_test)[np.arange(5), y_test]
        np.testing.assert_allclose(loss.actual[s], -np.log(p), rtol=1e-10)
        np.testing.assert_allclose(margin.actual[s], np.log(p / (1 - p)), rtol=1e-8)
    # the loss and the margin are both monotone in p_y: the same LDS for negated scores
    np.testing.assert_allclose(loss.per_row, margin.per_row, rtol=1e-12)

    def first_feature_prediction(est, X_, y_):
        return est.decision_function(X_)

    custom = linear_datamodeling_score(scores, model, X, y, X_test, y_test, n_subsets=4,
                                       output=first_feature_prediction, random_state=seed)
    assert custom.actual.shape == (4, 5)


def test_loo_correlation_equals_brute_force_refits(ridge_data):
    X, y, X_test, y_test = ridge_data
    scores = _ridge_influence(X, y, X_test, y_test, 1.0)
    model = Ridge(alpha=1.0, fit_intercept=False)
    result = loo_correlation(scores, model, X, y, X_test, y_test, correlation="pearson")

    def test_errors(rows):
        w = np.linalg.solve(X[rows].T @ X[rows] + np.eye(3), X[rows].T @ y[rows])
        return (X_test @ w - y_test) ** 2

    full = test_errors(np.arange(30))
    actual = np.stack([test_errors(np.delete(np.arange(30), i)) - full for i in range(30)])
    np.testing.assert_allclose(result.actual, actual, rtol=1e-8, atol=1e-12)
    per_row = [pearsonr(-scores[t], actual[:, t])[0] for t in range(6)]
    np.testing.assert_allclose(result.per_row, per_row, rtol=1e-10)
    assert result.score > 0.9  # first-order influence of ridge: removal effects match
    some = loo_correlation(scores, model, X, y, X_test, y_test, indices=[3, 7, -1])
    np.testing.assert_array_equal(some.indices, [3, 7, 29])
    np.testing.assert_allclose(some.actual, actual[[3, 7, 29]], rtol=1e-8, atol=1e-12)


class _FailsWithRow(RegressorMixin, BaseEstimator):
    def __init__(self, row=0.0):
        self.row = row

    def fit(self, X, y):
        if np.any(np.isclose(X[:, 0], self.row)):
            raise RuntimeError("bad row")
        self.mean_ = float(np.mean(y))
        return self

    def predict(self, X):
        return np.full(len(X), self.mean_)


def test_failed_fits_are_left_out_with_one_warning(ridge_data, seed):
    X, y, X_test, y_test = ridge_data
    scores = np.ones((6, 30))
    with pytest.warns(UserWarning, match=r"of 20 fits failed and were left out; the first "
                                         r"error was: RuntimeError\('bad row'\)"):
        result = linear_datamodeling_score(scores, _FailsWithRow(row=X[0, 0]), X, y, X_test,
                                           y_test, n_subsets=20, random_state=seed)
    failed = np.isnan(result.actual).all(1)
    np.testing.assert_array_equal(failed, (result.subsets == 0).any(1))


def test_errors_name_the_argument_and_the_value(ridge_data):
    X, y, X_test, y_test = ridge_data
    with pytest.raises(ValueError, match=r"scores must have shape \(n_test, n_samples\) = "
                                         r"\(6, 30\). Got \(6, 29\) instead"):
        linear_datamodeling_score(np.zeros((6, 29)), Ridge(), X, y, X_test, y_test)
    with pytest.raises(InvalidParameterError, match="'fraction' parameter"):
        linear_datamodeling_score(np.zeros((6, 30)), Ridge(), X, y, X_test, y_test,
                                  fraction=1.0)
    with pytest.raises(ValueError, match="output='margin' needs a classifier .*got Ridge"):
        linear_datamodeling_score(np.zeros((6, 30)), Ridge(), X, y, X_test, y_test,
                                  n_subsets=2, output="margin")
    with pytest.raises(ValueError, match=r"indices must be positions of training rows in "
                                         r"\[0, 30\). Got \[30\]"):
        loo_correlation(np.zeros((6, 30)), Ridge(), X, y, X_test, y_test, indices=[30])


def test_evaluation_does_not_import_torch():
    code = "import sys, skdvl, skdvl.evaluation; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr
