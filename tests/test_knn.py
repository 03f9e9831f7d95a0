"""Tests of KNNShapley: brute-force Shapley oracles, invariances, pandas, sparse, errors."""

import math
import pickle

import numpy as np
import pytest
import scipy.sparse as sp
import sklearn
from sklearn.neighbors import NearestNeighbors

from skdvl.valuation._knn import KNNShapley, _stable_argsort


@pytest.fixture
def seed():
    return 0


@pytest.fixture
def rng(seed):
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------------------
# Independent oracles: the KNN utility of every coalition, and the subset formula.
# --------------------------------------------------------------------------------------


def _ranking(X, x):
    """Training rows by exact squared distance to ``x``, ties by index."""
    d = ((X - x) ** 2).sum(axis=1)
    return sorted(range(X.shape[0]), key=lambda i: (d[i], i))


def _knn_utility(members, y, t, k, task):
    """Utility of the coalition whose rows, nearest first, are ``members``."""
    top = members[:k]
    if task == "classification":
        return sum(y[i] == t for i in top) / k  # divides by K also when |S| < K
    return -((sum(y[i] for i in top) / k - t) ** 2)


def _utilities(X, y, X_val, y_val, k, task):
    """u(S) for every bitmask S over the training rows, averaged over X_val."""
    n = X.shape[0]
    u = np.zeros(2**n)
    for x, t in zip(X_val, y_val):
        rank = _ranking(X, x)
        for mask in range(2**n):
            u[mask] += _knn_utility([i for i in rank if mask >> i & 1], y, t, k, task)
    return u / len(y_val)


def _exact_shapley(u, n):
    """Shapley values by the subset formula over all 2**n coalitions."""
    phi = np.zeros(n)
    for i in range(n):
        for mask in range(2**n):
            if mask >> i & 1:
                continue
            s = bin(mask).count("1")
            weight = math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n)
            phi[i] += weight * (u[mask | 1 << i] - u[mask])
    return phi


def _small_problem(rng, n, task, n_val=4):
    """Integer features (exact distances, many ties) and labels or targets."""
    X = rng.integers(0, 4, size=(n, 2)).astype(float)
    X_val = rng.integers(0, 4, size=(n_val, 2)).astype(float)
    if task == "classification":
        return X, rng.integers(0, 3, n), X_val, rng.integers(0, 3, n_val)
    return X, rng.normal(size=n), X_val, rng.normal(size=n_val)


# --------------------------------------------------------------------------------------
# Exactness.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("n, k", [(9, 1), (9, 2), (9, 3), (8, 5), (7, 7), (6, 9), (1, 1), (2, 3)])
def test_values_equal_brute_force_shapley(rng, task, n, k):
    X, y, X_val, y_val = _small_problem(rng, n, task)
    expected = _exact_shapley(_utilities(X, y, X_val, y_val, k, task), n)
    v = KNNShapley(n_neighbors=k, task=task).fit(X, y, X_val=X_val, y_val=y_val)
    np.testing.assert_allclose(v.values_, expected, rtol=0, atol=1e-12)


def _theorem_1_recursion(X, y, X_val, y_val, k):
    """Theorem 1 of Jia et al. (2019) as a loop over ranks (valid for n >= K)."""
    n = X.shape[0]
    total = np.zeros(n)
    for x, t in zip(X_val, y_val):
        rank = _ranking(X, x)
        s = np.zeros(n)
        s[rank[-1]] = float(y[rank[-1]] == t) / n
        for r in range(n - 2, -1, -1):
            i, j = rank[r], rank[r + 1]
            s[i] = s[j] + (float(y[i] == t) - float(y[j] == t)) / k * min(k, r + 1) / (r + 1)
        total += s
    return total / len(y_val)


def test_classification_values_equal_theorem_1_recursion(rng):
    X, X_val = rng.normal(size=(60, 3)), rng.normal(size=(15, 3))
    y, y_val = rng.integers(0, 3, 60), rng.integers(0, 3, 15)
    v = KNNShapley(n_neighbors=4).fit(X, y, X_val=X_val, y_val=y_val)
    np.testing.assert_allclose(v.values_, _theorem_1_recursion(X, y, X_val, y_val, 4), atol=1e-14)


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("k", [1, 3, 250])
def test_efficiency_axiom(rng, task, k):
    X, y, X_val, y_val = _small_problem(rng, 200, task, n_val=30)
    X += rng.normal(scale=0.01, size=X.shape)
    v = KNNShapley(n_neighbors=k, task=task).fit(X, y, X_val=X_val, y_val=y_val)
    full = np.mean([
        _knn_utility(_ranking(X, x), y, t, k, task) for x, t in zip(X_val, y_val)
    ])
    empty = 0.0 if task == "classification" else -np.mean(y_val**2)
    assert v.values_.sum() == pytest.approx(full - empty, abs=1e-12)


def test_ties_are_broken_by_training_index():
    X = np.array([[1.0], [0.0], [1.0], [0.0]])  # rows 1 and 3 tie, and rows 0 and 2
    y = np.array([1, 1, 0, 0])
    v = KNNShapley(n_neighbors=1).fit(X, y, X_val=[[0.0]], y_val=[1])
    # ranking 1, 3, 0, 2 (matches 1, 0, 1, 0): Theorem 1 by hand
    np.testing.assert_allclose(v.values_, [1 / 3, 5 / 6, 0.0, -1 / 6], atol=1e-15)
    # reversed rows: now ranking 0, 2, 1, 3 (matches 0, 1, 0, 1); ties change values
    v = KNNShapley(n_neighbors=1).fit(X[::-1], y[::-1], X_val=[[0.0]], y_val=[1])
    np.testing.assert_allclose(v.values_, [-7 / 12, -1 / 12, 5 / 12, 1 / 4], atol=1e-15)


def test_stable_argsort_equals_numpy_stable_sort(rng):
    d = rng.integers(0, 6, size=(40, 300)).astype(float)
    d[::4] = rng.random((10, 300))
    d[1::4, 7] = np.nextafter(d[1::4, 9], np.inf)  # near ties: equal high bits
    d[2::4, 0] = -0.0
    d[3::4, -1] = np.inf
    np.testing.assert_array_equal(_stable_argsort(d.copy()), np.argsort(d, axis=1, kind="stable"))


# --------------------------------------------------------------------------------------
# Leave-self-out, invariances, neighbour searches.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_leave_self_out_equals_explicit_loop(rng, task):
    X, y, _, _ = _small_problem(rng, 25, task)
    n = X.shape[0]
    games = np.full((n, n), np.nan)  # games[j, i]: value of row i in the game of row j
    for j in range(n):
        others = np.delete(np.arange(n), j)
        v = KNNShapley(n_neighbors=3, task=task).fit(
            X[others], y[others], X_val=X[j : j + 1], y_val=y[j : j + 1]
        )
        games[j, others] = v.values_
    fitted = KNNShapley(n_neighbors=3, task=task).fit(X, y)
    np.testing.assert_allclose(fitted.values_, np.nanmean(games, axis=0), atol=1e-13)
    np.testing.assert_allclose(
        fitted.stderr_, np.nanstd(games, axis=0, ddof=1) / np.sqrt(n - 1), atol=1e-12
    )
    np.testing.assert_array_equal(fitted.counts_, np.full(n, n - 1))


@pytest.fixture
def blob(rng):
    X = rng.normal(size=(300, 5))
    X[10] = X[3]  # a duplicate: a tie
    return X, (X[:, 0] > 0).astype(int), X[:, 1] + rng.normal(scale=0.1, size=300)


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("with_val", [True, False])
def test_values_invariant_to_block_size_and_n_jobs(blob, task, with_val):
    X, y_cls, y_reg = blob
    y = y_cls if task == "classification" else y_reg
    kw = dict(X_val=X[:97], y_val=y[:97]) if with_val else {}
    train = (X[97:], y[97:]) if with_val else (X, y)
    ref = KNNShapley(7, task=task).fit(*train, **kw)
    for memory in (0.01, 0.05):  # blocks of 1 and of a few rows
        with sklearn.config_context(working_memory=memory):
            small = KNNShapley(7, task=task).fit(*train, **kw)
            two = KNNShapley(7, task=task, n_jobs=2).fit(*train, **kw)
        np.testing.assert_allclose(small.values_, ref.values_, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(small.stderr_, ref.stderr_, rtol=1e-9, atol=1e-15)
        np.testing.assert_array_equal(two.values_, small.values_)
        np.testing.assert_array_equal(two.stderr_, small.stderr_)


def test_neighbour_estimators_and_metrics_agree(blob):
    X, y, _ = blob
    ref = KNNShapley(4).fit(X, y).values_
    for v in (
        KNNShapley(NearestNeighbors(n_neighbors=4)),
        KNNShapley(NearestNeighbors(n_neighbors=4).fit(X[:5])),  # fitted: refitted on X
        KNNShapley(4, algorithm="kd_tree"),
        KNNShapley(4, metric="euclidean"),
        KNNShapley(4, metric="sqeuclidean"),
    ):
        np.testing.assert_allclose(v.fit(X, y).values_, ref, atol=1e-14)
    manhattan = KNNShapley(4, metric="manhattan").fit(X, y).values_
    np.testing.assert_allclose(KNNShapley(4, p=1).fit(X, y).values_, manhattan, atol=1e-14)
    np.testing.assert_allclose(
        KNNShapley(4, metric="minkowski", p=1.0000001).fit(X, y).values_, manhattan, atol=1e-2
    )
    assert KNNShapley(NearestNeighbors(n_neighbors=4)).fit(X, y).n_neighbors_ == 4


def test_sparse_input_gives_dense_values(blob):
    X, y, _ = blob
    X = np.where(np.abs(X) > 1, X, 0.0)
    dense = KNNShapley(5).fit(X[50:], y[50:], X_val=X[:50], y_val=y[:50])
    for fmt in (sp.csr_matrix, sp.csc_matrix, sp.csr_array):
        v = KNNShapley(5).fit(fmt(X[50:]), y[50:], X_val=fmt(X[:50]), y_val=y[:50])
        np.testing.assert_allclose(v.values_, dense.values_, atol=1e-14)


def test_string_labels_and_unseen_validation_labels(rng):
    X, X_val = rng.normal(size=(40, 2)), rng.normal(size=(6, 2))
    codes, codes_val = rng.integers(0, 2, 40), np.array([0, 1, 0, 1, 2, 2])
    names = np.array(["ant", "bee", "cat"])
    v = KNNShapley(3).fit(X, names[codes], X_val=X_val, y_val=names[codes_val])
    ref = KNNShapley(3).fit(X, codes, X_val=X_val, y_val=codes_val)
    np.testing.assert_array_equal(v.values_, ref.values_)
    assert v.task_ == "classification"


def test_task_auto_and_progress_bar(rng, capsys):
    X = rng.normal(size=(30, 2))
    assert KNNShapley().fit(X, rng.normal(size=30)).task_ == "regression"
    assert KNNShapley().fit(X, rng.integers(0, 2, 30)).task_ == "classification"
    quiet = KNNShapley(verbose=0).fit(X, X[:, 0] > 0)
    loud = KNNShapley(verbose=1).fit(X, X[:, 0] > 0)
    np.testing.assert_array_equal(quiet.values_, loud.values_)
    assert "KNNShapley" in capsys.readouterr().err


def test_pickle_round_trip(blob):
    X, y, _ = blob
    v = KNNShapley(3).fit(X, y)
    again = pickle.loads(pickle.dumps(v))
    np.testing.assert_array_equal(again.values_, v.values_)


# --------------------------------------------------------------------------------------
# Errors.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, match",
    [
        (
            dict(n_neighbors=0),
            r"'n_neighbors' parameter of KNNShapley must be an int in the range \[1, inf\)"
            r".*Got 0 instead",
        ),
        (dict(n_neighbors=2.5), r"'n_neighbors' parameter.*Got 2.5"),
        (
            dict(n_neighbors=NearestNeighbors(n_neighbors=0)),
            r"n_neighbors >= 1\. Got NearestNeighbors with n_neighbors=0",
        ),
        (
            dict(weights="gauss"),
            r"'weights' parameter of KNNShapley must be a str among \{.*'uniform'.*\} "
            r"or a callable\. Got 'gauss'",
        ),
        (dict(task="ranking"), r"'task' parameter.*Got 'ranking'"),
        (dict(metric="precomputed"), r"'metric' parameter.*Got 'precomputed'"),
        (dict(p=0), r"'p' parameter.*Got 0"),
    ],
)
def test_bad_parameters_are_named(params, match):
    X, y = np.eye(3), [0, 1, 0]
    with pytest.raises(ValueError, match=match):
        KNNShapley(**params).fit(X, y)


def test_bad_data_is_named(rng):
    X, y = rng.normal(size=(5, 2)), np.array([0, 1, 0, 1, 1])
    with pytest.raises(ValueError, match=r"inconsistent numbers of samples: \[5, 4\]"):
        KNNShapley().fit(X, y[:4])
    with pytest.raises(ValueError, match=r"0 sample\(s\)"):
        KNNShapley().fit(np.empty((0, 2)), [], X_val=X, y_val=y)
    with pytest.raises(ValueError, match=r"needs at least 2 samples.*n_samples = 1"):
        KNNShapley().fit(X[:1], y[:1])
    X_nan = X.copy()
    X_nan[2, 1] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        KNNShapley().fit(X_nan, y)
    with pytest.raises(ValueError, match="X_val and y_val must be given together"):
        KNNShapley().fit(X, y, X_val=X)
    with pytest.raises(ValueError, match="X has 3 features, but KNNShapley is expecting 2"):
        KNNShapley().fit(X, y, X_val=np.ones((2, 3)), y_val=[0, 1])
    with pytest.raises(ValueError, match=r"task='regression' needs numeric targets; got y with dt"):
        KNNShapley(task="regression").fit(X, ["ant", "bee", "ant", "bee", "cat"])
    with pytest.raises(ValueError, match=r"got y_val with dtype object"):
        KNNShapley(task="regression").fit(X, y, X_val=X[:2], y_val=np.array(["a", 1], dtype=object))

