"""The batched logistic fits at extreme settings: a tiny C, and exactly tied decisions.

With ``C=1e-6`` the decisions vary by about 1e-6 logit from row to row (the
intercept aside), so the batched solve must stop relative to that scale; its fit
is then the optimum, which scikit-learn's exact-Newton solver also reaches.
(scikit-learn's default lbfgs does not: with a tiny C its objective is flat along
the intercept and it stops after one or two iterations, at any ``tol``; those
fits are not the reference.) An exact tie of the decision must go the way
scikit-learn's ``predict`` sends it: ``decision > 0`` is ``classes_[1]``, and for
several classes the first maximum.
"""

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skdvl import ModelUtility, ShapleyValuer


def _split(seed, n, n_val=60, n_classes=2):
    X, y = make_classification(n_samples=n + n_val, n_features=4, n_informative=2,
                               n_redundant=0, n_classes=n_classes, n_clusters_per_class=1,
                               random_state=seed % (2 ** 31))
    return X[:n], y[:n], X[n:], y[n:]


def _utilities(estimator, X, y, X_val, y_val, masks):
    """Utilities of ``masks`` on the batched path and fitted coalition by coalition."""
    batched = ModelUtility(estimator, X, y, X_val, y_val, batch_fit=True)
    single = ModelUtility(estimator, X, y, X_val, y_val, batch_fit=False)
    assert batched.fit_path == "batched"
    return batched.evaluate(masks), np.array([single(np.flatnonzero(m)) for m in masks])


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("C", [1e-6, 1e-9])
def test_batched_utilities_equal_exact_newton_fits_at_tiny_C(C, n_classes, seed, rng):
    X, y, X_val, y_val = _split(seed, n=40, n_classes=n_classes)
    masks = rng.random((50, 40)) < 0.5
    model = LogisticRegression(C=C, solver="newton-cholesky")
    batched, single = _utilities(model, X, y, X_val, y_val, masks)
    np.testing.assert_allclose(batched, single, rtol=0, atol=1e-9)


def test_exact_shapley_values_equal_exact_newton_fits_at_tiny_C(seed):
    X, y, X_val, y_val = _split(seed, n=8, n_val=200)
    model = LogisticRegression(C=1e-6, solver="newton-cholesky")
    kw = dict(sampler="exact", task="classification")
    batched = ShapleyValuer(model, batch_fit=True, **kw).fit(X, y, X_val=X_val, y_val=y_val)
    single = ShapleyValuer(model, batch_fit=False, **kw).fit(X, y, X_val=X_val, y_val=y_val)
    assert batched.fit_path_ == "batched"
    np.testing.assert_allclose(batched.values_, single.values_, rtol=0, atol=1e-9)


def _balanced_masks(rng, y, m):
    """``m`` coalitions holding as many rows of each class."""
    classes = np.unique(y)
    smallest = min(int((y == c).sum()) for c in classes)
    masks = np.zeros((m, y.shape[0]), bool)
    for i in range(m):
        k = rng.integers(1, smallest + 1)
        for c in classes:
            masks[i, rng.choice(np.flatnonzero(y == c), k, replace=False)] = True
    return masks


@pytest.mark.parametrize("scaled", [False, True], ids=["plain", "standardised"])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_tied_decisions_go_the_way_of_sklearns_predict(scaled, n_classes, rng):
    # constant features and an unbalanced training set (the warm start is not 0), while
    # every coalition is balanced: the optimum is 0 and every decision ties exactly
    y = np.repeat(np.arange(n_classes), [14, 6, 8][:n_classes])
    X = np.full((y.shape[0], 2), 0.7)
    X_val, y_val = np.full((47, 2), 0.7), rng.integers(0, n_classes, 47)
    y_val[:n_classes] = np.arange(n_classes)
    model = LogisticRegression()
    estimator = make_pipeline(StandardScaler(), model) if scaled else model
    masks = _balanced_masks(rng, y, 30)
    batched, single = _utilities(estimator, X, y, X_val, y_val, masks)
    np.testing.assert_array_equal(batched, single)
    # scikit-learn predicts the first class on a tie
    assert single[0] == np.mean(y_val == 0)
