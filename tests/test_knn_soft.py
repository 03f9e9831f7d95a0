"""Tests of KNNShapley(knn_utility="soft_label"): brute-force Shapley oracles, leave-self-out,
the link to the fixed-K utility, common checks and errors."""

import math

import numpy as np
import pytest
import sklearn
from sklearn.neighbors import NearestNeighbors
from sklearn.utils.estimator_checks import parametrize_with_checks

from skdvl import KNNShapley, ThresholdKNNShapley
from skdvl.utils.estimator_checks import parametrize_with_valuer_checks


@pytest.fixture
def seed():
    return 0


@pytest.fixture
def rng(seed):
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------------------
# Independent oracles: the soft-label utility of every coalition, and the subset formula.
# --------------------------------------------------------------------------------------


def _soft_label_utility(members, d, y, t, k, n_classes):
    """The KNN's predicted probability of label ``t`` when it knows rows ``members``."""
    if not members:
        return 1.0 / n_classes  # no row: a uniform guess
    top = sorted(members, key=lambda i: (d[i], i))[:k]  # ties by index
    return sum(y[i] == t for i in top) / len(top)


def _utilities(X, y, X_val, y_val, k, n_classes=None):
    n = X.shape[0]
    n_classes = n_classes or len(set(y.tolist()))
    u = np.zeros(2**n)
    for x, t in zip(X_val, y_val):
        d = ((X - x) ** 2).sum(axis=1)
        for mask in range(2**n):
            members = [i for i in range(n) if mask >> i & 1]
            u[mask] += _soft_label_utility(members, d, y, t, k, n_classes)
    return u / len(y_val)


def _exact_shapley(u, n):
    phi = np.zeros(n)
    for i in range(n):
        for mask in range(2**n):
            if mask >> i & 1:
                continue
            s = bin(mask).count("1")
            weight = math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n)
            phi[i] += weight * (u[mask | 1 << i] - u[mask])
    return phi


def _small_problem(rng, n, n_val=4):
    """Integer features (exact distances, many ties) with a duplicated row."""
    X = rng.integers(0, 3, size=(n, 2)).astype(float)
    X[-1] = X[0]
    X_val = rng.integers(0, 3, size=(n_val, 2)).astype(float)
    y, y_val = rng.integers(0, 3, n), rng.integers(0, 3, n_val)
    y_val[0] = y[0]
    return X, y, X_val, y_val


# --------------------------------------------------------------------------------------
# Exactness.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 10])
@pytest.mark.parametrize("k", [1, 2, 3, 7, 12])
def test_values_equal_brute_force_shapley(rng, n, k):
    X, y, X_val, y_val = _small_problem(rng, n, n_val=3)
    v = KNNShapley(k, knn_utility="soft_label").fit(X, y, X_val=X_val, y_val=y_val)
    np.testing.assert_allclose(v.values_, _exact_shapley(_utilities(X, y, X_val, y_val, k), n),
                               rtol=1e-10, atol=1e-12)
    assert v.result_.algorithm == "soft_label_knn_shapley"


@pytest.mark.parametrize("k", [1, 3, 20])
def test_efficiency_axiom(rng, k):
    X, y, X_val, y_val = _small_problem(rng, 9, n_val=5)
    u = _utilities(X, y, X_val, y_val, k)
    v = KNNShapley(k, knn_utility="soft_label").fit(X, y, X_val=X_val, y_val=y_val)
    assert math.isclose(v.values_.sum(), u[-1] - u[0], rel_tol=1e-10, abs_tol=1e-12)


def test_single_class_against_labelled_validation_rows(rng):
    # One class in y: C = 1, so the empty coalition already scores 1.
    X, X_val = rng.normal(size=(6, 2)), rng.normal(size=(3, 2))
    y, y_val = np.zeros(6, dtype=int), np.array([0, 0, 0])
    v = KNNShapley(2, knn_utility="soft_label").fit(X, y, X_val=X_val, y_val=y_val)
    np.testing.assert_allclose(v.values_, 0.0, atol=1e-15)
    y_val = np.array([0, 1, 1])
    v = KNNShapley(2, knn_utility="soft_label").fit(X, y, X_val=X_val, y_val=y_val)
    np.testing.assert_allclose(v.values_, _exact_shapley(_utilities(X, y, X_val, y_val, 2), 6),
                               atol=1e-12)


@pytest.mark.parametrize("k", [1, 4, 40])
def test_leave_self_out_equals_brute_force_per_game(rng, k):
    # Row j's game is played by the other 8 rows; C is that of the whole y.
    n = 9
    X = rng.integers(0, 3, size=(n, 2)).astype(float)
    y = rng.integers(0, 3, n)
    n_classes = len(np.unique(y))
    v = KNNShapley(k, knn_utility="soft_label").fit(X, y)
    games = np.full((n, n), np.nan)
    for j in range(n):
        others = np.delete(np.arange(n), j)
        u = _utilities(X[others], y[others], X[j:j + 1], y[j:j + 1], k, n_classes)
        games[j, others] = _exact_shapley(u, n - 1)
    np.testing.assert_allclose(v.values_, np.nanmean(games, axis=0), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(v.counts_, np.full(n, n - 1))


def test_k_at_least_n_is_the_full_radius_threshold_game(rng):
    X, y = rng.normal(size=(25, 3)), rng.integers(0, 3, 25)
    X_val, y_val = rng.normal(size=(7, 3)), rng.integers(0, 3, 7)
    soft = KNNShapley(25, knn_utility="soft_label").fit(X, y, X_val=X_val, y_val=y_val)
    wide = ThresholdKNNShapley(radius=1e6).fit(X, y, X_val=X_val, y_val=y_val)
    np.testing.assert_allclose(soft.values_, wide.values_, rtol=1e-10, atol=1e-14)


def test_soft_label_and_fixed_k_agree_on_coalitions_of_k_or_more(rng):
    # u_soft - u_fixed vanishes on |S| >= K, so the two value vectors differ by the
    # Shapley values of a game living on small coalitions only; with K = 1 that game
    # is the empty-coalition term 1/C - 0, shared equally: values differ by -1/(C n).
    X, y = rng.normal(size=(30, 2)), rng.integers(0, 2, 30)
    X_val, y_val = rng.normal(size=(5, 2)), rng.integers(0, 2, 5)
    soft = KNNShapley(1, knn_utility="soft_label").fit(X, y, X_val=X_val, y_val=y_val)
    fixed = KNNShapley(1).fit(X, y, X_val=X_val, y_val=y_val)
    np.testing.assert_allclose(soft.values_ - fixed.values_, -1 / (2 * 30), atol=1e-14)


# --------------------------------------------------------------------------------------
# Invariances, the neighbour estimator, the default.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_val", [True, False])
def test_values_invariant_to_block_size_n_jobs_and_search(rng, with_val):
    X = rng.normal(size=(200, 3))
    y = (X[:, 0] > 0).astype(int)
    kw = dict(X_val=rng.normal(size=(60, 3)), y_val=rng.integers(0, 2, 60)) if with_val else {}
    ref = KNNShapley(5, knn_utility="soft_label").fit(X, y, **kw)
    with sklearn.config_context(working_memory=0.05):
        small = KNNShapley(5, knn_utility="soft_label", n_jobs=2).fit(X, y, **kw)
    np.testing.assert_allclose(small.values_, ref.values_, rtol=1e-12, atol=1e-15)
    tree = KNNShapley(NearestNeighbors(n_neighbors=5), knn_utility="soft_label").fit(X, y, **kw)
    np.testing.assert_allclose(tree.values_, ref.values_, rtol=1e-10, atol=1e-13)


def test_default_utility_is_fixed_k(rng):
    X, y = rng.normal(size=(40, 2)), rng.integers(0, 2, 40)
    assert KNNShapley().get_params()["knn_utility"] == "fixed_k"
    np.testing.assert_array_equal(KNNShapley(3).fit(X, y).values_,
                                  KNNShapley(3, knn_utility="fixed_k").fit(X, y).values_)


# --------------------------------------------------------------------------------------
# Common checks and errors.
# --------------------------------------------------------------------------------------


@parametrize_with_checks([KNNShapley(knn_utility="soft_label")])
def test_sklearn_compatible(estimator, check):
    check(estimator)


@parametrize_with_valuer_checks([KNNShapley(n_neighbors=3, knn_utility="soft_label")])
def test_valuer_checks(valuer, check):
    check(valuer)


def test_unknown_utility_is_named(rng):
    X, y = rng.normal(size=(10, 2)), np.arange(10) % 2
    with pytest.raises(ValueError, match=r"The 'knn_utility' parameter of KNNShapley must be a "
                                         r"str among .*'fixed_k'.*\. Got 'hard' instead\."):
        KNNShapley(knn_utility="hard").fit(X, y)


def test_soft_label_refuses_regression(rng):
    X = rng.normal(size=(10, 2))
    with pytest.raises(ValueError, match=r"knn_utility='soft_label' of KNNShapley .* a "
                                         r"classification utility; got a regression task "
                                         r"\(task='auto'\)\. Use knn_utility='fixed_k'"):
        KNNShapley(knn_utility="soft_label").fit(X, rng.normal(size=10))
    with pytest.raises(ValueError, match=r"\(task='regression'\)"):
        KNNShapley(knn_utility="soft_label", task="regression").fit(X, np.arange(10) % 2)
