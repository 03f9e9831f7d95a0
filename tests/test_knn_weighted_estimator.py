"""KNNShapley(weights=..., knn_utility="hard_label"): the weighted KNN-Shapley of Wang,
Mittal & Jia (2024) through the estimator, against brute-force enumeration.

The oracle is written here, independently of skdvl: it computes the distances from the
differences of the rows, scikit-learn's ``weights="distance"`` rule (``1/d``; rows at
distance 0 get 1 and all others 0), the rounding of the normalised weights to ``n_bins``
levels, the weighted vote of the ``K`` nearest rows (ties by index) of each of the 2^n
coalitions, and the Shapley formula over all coalitions.
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import sklearn
from joblib import parallel_config
from scipy import sparse
from sklearn.neighbors import NearestNeighbors
from sklearn.utils.estimator_checks import parametrize_with_checks

from skdvl import KNNShapley
from skdvl.utils.estimator_checks import parametrize_with_valuer_checks
from skdvl.valuation import _knn_weighted_blocks

# --------------------------------------------------------------------------------------
# The oracle.
# --------------------------------------------------------------------------------------


def sklearn_distance_weights(d):
    """scikit-learn's ``weights="distance"``: 1/d, or 1 at distance 0 and 0 elsewhere."""
    if np.any(d == 0):
        return (d == 0).astype(float)
    return 1.0 / d


def rounded(w, n_bins):
    """Weights divided by their largest, rounded to ``n_bins`` levels."""
    top = w.max()
    return np.zeros_like(w) if top == 0 else np.round(w / top * (n_bins - 1))


def vote_is_right(members, d, w, y, label, k, tied_vote):
    if not members:
        return 0.0
    nearest = sorted(members, key=lambda j: (d[j], j))[:k]
    right = sum(w[j] for j in nearest if y[j] == label)
    total = sum(w[j] for j in nearest)
    wrong = total - right
    return float(right > wrong or (tied_vote == "correct" and right == wrong))


def shapley_of_game(u, n):
    """Shapley values from the utilities ``u[mask]`` of all 2^n coalitions."""
    phi = np.zeros(n)
    for i in range(n):
        for mask in range(2**n):
            if mask >> i & 1:
                continue
            s = bin(mask).count("1")
            weight = math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n)
            phi[i] += weight * (u[mask | 1 << i] - u[mask])
    return phi


def game_values(X, y, x, label, k, weights, n_bins, tied_vote, metric="euclidean"):
    """Shapley values of the rows of ``X`` in the game of validation row ``(x, label)``."""
    n = X.shape[0]
    diff = X - x
    d = np.abs(diff).sum(axis=1) if metric == "manhattan" else np.sqrt((diff**2).sum(axis=1))
    if weights == "distance":
        w = rounded(sklearn_distance_weights(d), n_bins)
    elif weights == "uniform":
        w = np.ones(n)
    else:
        w = rounded(np.asarray(weights(d[None, :]), dtype=float)[0], n_bins)
    u = np.array([
        vote_is_right([j for j in range(n) if mask >> j & 1], d, w, y, label, k, tied_vote)
        for mask in range(2**n)])
    return shapley_of_game(u, n)


def oracle(X, y, X_val, y_val, k, weights="distance", n_bins=9, tied_vote="incorrect",
           **kw):
    """Mean over the validation rows; without them, leave-self-out games."""
    if X_val is not None:
        return np.mean([game_values(X, y, x, t, k, weights, n_bins, tied_vote, **kw)
                        for x, t in zip(X_val, y_val)], axis=0)
    n = X.shape[0]
    total = np.zeros(n)
    for t in range(n):
        others = np.delete(np.arange(n), t)
        total[others] += game_values(X[others], y[others], X[t], y[t], k, weights,
                                     n_bins, tied_vote, **kw)
    return total / (n - 1)


def fit_values(X, y, X_val=None, y_val=None, k=3, **params):
    params.setdefault("weights", "distance")
    v = KNNShapley(k, knn_utility="hard_label", **params)
    return v.fit(X, y, X_val=X_val, y_val=y_val).values_


def random_problem(rng, n, n_classes=2, n_val=3):
    X, X_val = rng.normal(size=(n, 3)), rng.normal(size=(n_val, 3))
    return X, rng.integers(0, n_classes, n), X_val, rng.integers(0, n_classes, n_val)


def grid_problem(rng, n, n_classes=2, n_val=4):
    """Integer features: exact distances, many ties, duplicates and zero distances."""
    X = rng.integers(0, 3, size=(n, 2)).astype(float)
    X[-1] = X[0]                                          # a duplicated row
    X_val = rng.integers(0, 3, size=(n_val, 2)).astype(float)
    X_val[0] = X[0]                                       # two rows at distance 0
    return X, rng.integers(0, n_classes, n), X_val, rng.integers(0, n_classes, n_val)


# --------------------------------------------------------------------------------------
# Oracles.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("tied_vote", ["incorrect", "correct"])
@pytest.mark.parametrize("n, k, n_classes, n_bins", [
    (10, 3, 2, 9), (9, 5, 2, 5), (8, 2, 3, 9), (7, 4, 3, 17), (6, 1, 2, 3)])
def test_values_equal_brute_force_on_random_data(rng, n, k, n_classes, n_bins, tied_vote):
    X, y, X_val, y_val = random_problem(rng, n, n_classes)
    expected = oracle(X, y, X_val, y_val, k, n_bins=n_bins, tied_vote=tied_vote)
    got = fit_values(X, y, X_val, y_val, k, n_bins=n_bins, tied_vote=tied_vote)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("tied_vote", ["incorrect", "correct"])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_values_equal_brute_force_with_ties_duplicates_and_zero_distances(
        rng, n_classes, tied_vote):
    X, y, X_val, y_val = grid_problem(rng, 9, n_classes)
    for k in (2, 3):
        expected = oracle(X, y, X_val, y_val, k, n_bins=5, tied_vote=tied_vote)
        got = fit_values(X, y, X_val, y_val, k, n_bins=5, tied_vote=tied_vote)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("extra", [0, 1, 5])
def test_values_equal_brute_force_when_k_at_least_n(rng, extra):
    X, y, X_val, y_val = random_problem(rng, 7)
    expected = oracle(X, y, X_val, y_val, 7 + extra)
    np.testing.assert_allclose(fit_values(X, y, X_val, y_val, 7 + extra), expected,
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("problem", [random_problem, grid_problem])
def test_leave_self_out_equals_brute_force(rng, problem):
    X, y, _, _ = problem(rng, 8)
    y[:2] = [0, 1]
    expected = oracle(X, y, None, None, 3, tied_vote="correct")
    got = fit_values(X, y, k=3, tied_vote="correct")
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("k", [1, 3])
def test_callable_weights_equal_brute_force(rng, k):
    X, y, X_val, y_val = random_problem(rng, 8, n_classes=3)

    def kernel(d):
        return np.exp(-(d**2))

    expected = oracle(X, y, X_val, y_val, k, weights=kernel, n_bins=33)
    np.testing.assert_allclose(fit_values(X, y, X_val, y_val, k, weights=kernel, n_bins=33),
                               expected, rtol=0, atol=1e-12)


def test_uniform_hard_label_is_the_majority_vote(rng):
    X, y, X_val, y_val = grid_problem(rng, 9, n_classes=3)
    expected = oracle(X, y, X_val, y_val, 4, weights="uniform")
    np.testing.assert_allclose(fit_values(X, y, X_val, y_val, 4, weights="uniform"),
                               expected, rtol=0, atol=1e-12)


def test_values_equal_brute_force_for_another_metric(rng):
    X, y, X_val, y_val = random_problem(rng, 8)
    expected = oracle(X, y, X_val, y_val, 3, metric="manhattan")
    np.testing.assert_allclose(fit_values(X, y, X_val, y_val, 3, metric="manhattan"),
                               expected, rtol=0, atol=1e-12)


def test_duplicates_far_from_the_origin_are_at_distance_zero():
    """The BLAS expansion |x|^2 - 2 x.y + |y|^2 leaves ~1e-12 where the distance is 0,
    which fine levels would see; such distances are recomputed from x - y."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(8, 3)) * 0.01 + 50
    X[-1] = X[0]
    X_val = np.vstack([X[[0, 3, 5]], rng.normal(size=(1, 3)) * 0.01 + 50])
    y, y_val = np.array([0, 1, 0, 1, 1, 0, 1, 0]), np.array([0, 0, 0, 1])
    expected = oracle(X, y, X_val, y_val, 3, n_bins=2**16 + 1)
    np.testing.assert_allclose(fit_values(X, y, X_val, y_val, 3, n_bins=2**16 + 1),
                               expected, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------
# Two code paths, one game; invariances.
# --------------------------------------------------------------------------------------


def test_constant_weights_equal_the_uniform_hard_label_game(rng):
    X, y, X_val, y_val = random_problem(rng, 60, n_classes=3, n_val=20)
    uniform = fit_values(X, y, X_val, y_val, 5, weights="uniform")
    for kernel, n_bins in ((lambda d: np.full_like(d, 2.5), 9),
                           (lambda d: np.ones_like(d), 2)):
        np.testing.assert_allclose(fit_values(X, y, X_val, y_val, 5, weights=kernel,
                                              n_bins=n_bins), uniform, rtol=0, atol=1e-13)


@pytest.mark.parametrize("with_val", [True, False])
def test_values_identical_for_any_n_jobs_backend_and_search(rng, with_val):
    X, y, X_val, y_val = random_problem(rng, 100, n_val=40)
    kw = {"X_val": X_val, "y_val": y_val} if with_val else {}
    ref = fit_values(X, y, k=5, **kw)
    np.testing.assert_array_equal(fit_values(X, y, k=5, n_jobs=2, **kw), ref)
    with parallel_config(backend="loky"):
        np.testing.assert_array_equal(fit_values(X, y, k=5, n_jobs=2, **kw), ref)
    tree = fit_values(X, y, k=NearestNeighbors(n_neighbors=5), **kw)
    np.testing.assert_allclose(tree, ref, rtol=0, atol=1e-13)
    np.testing.assert_allclose(fit_values(sparse.csr_matrix(X), y, k=5, **kw), ref,
                               rtol=0, atol=1e-13)


def test_values_sum_to_the_accuracy_of_the_full_vote(rng):
    """Efficiency: the values sum to u(all rows) - u(empty), the mean correctness of the
    rounded weighted vote; with fine levels, the score of sklearn's weighted KNN."""
    from sklearn.neighbors import KNeighborsClassifier

    X, y, X_val, y_val = random_problem(rng, 80, n_val=20)
    d = np.sqrt(((X_val[:, None, :] - X[None, :, :]) ** 2).sum(axis=-1))
    right = []
    for t in range(len(y_val)):
        nearest = np.argsort(d[t], kind="stable")[:5]
        w = rounded(1.0 / d[t], 9)[nearest]
        right.append(w[y[nearest] == y_val[t]].sum() > w[y[nearest] != y_val[t]].sum())
    values = fit_values(X, y, X_val, y_val, 5)
    assert values.sum() == pytest.approx(np.mean(right), abs=1e-12)
    clf = KNeighborsClassifier(5, weights="distance").fit(X, y)
    fine = fit_values(X, y, X_val, y_val, 5, n_bins=2**9 + 1)
    assert fine.sum() == pytest.approx(clf.score(X_val, y_val), abs=1e-12)


# --------------------------------------------------------------------------------------
# Cost model, progress, checks.
# --------------------------------------------------------------------------------------


def test_a_long_run_warns_with_its_eta(rng, monkeypatch):
    X, y, X_val, y_val = random_problem(rng, 30, n_val=4)
    monkeypatch.setattr(_knn_weighted_blocks, "_SECONDS_PER_ENTRY", 1.0)
    with pytest.warns(UserWarning, match=r"will take about [\d.]+ hours on one job: 4 "
                                         r"validation rows x 30 training rows.*K=3 and X=67"):
        fit_values(X, y, X_val, y_val, 3)
    monkeypatch.undo()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit_values(X, y, X_val, y_val, 3)


def test_a_game_beyond_working_memory_is_refused_with_the_n_bins_that_fits(rng):
    X, y, X_val, y_val = random_problem(rng, 400, n_val=2)
    with sklearn.config_context(working_memory=4):
        with pytest.raises(ValueError, match=r"with n_bins=100000, n_neighbors=5 and 400 "
                                             r"training rows needs \d+ MiB per validation "
                                             r"row, more than working_memory=4 MiB "
                                             r"\(sklearn.set_config\); use n_bins <= "
                                             r"\d+\.") as info:
            fit_values(X, y, X_val, y_val, 5, n_bins=10**5)
        fits = int(re.search(r"n_bins <= (\d+)", str(info.value)).group(1))
        assert 2 < fits < 10**5
        fit_values(X, y, X_val, y_val, 5, n_bins=fits)
        with pytest.raises(ValueError, match=r"n_bins <= "):
            fit_values(X, y, X_val, y_val, 5, n_bins=fits + 1)


def test_cost_model_is_linear_in_rows_and_levels():
    seconds = _knn_weighted_blocks.weighted_seconds
    assert seconds(0, 10, 3, 8) == 0.0
    assert seconds(64, 1000, 5, 8) == pytest.approx(2 * seconds(32, 1000, 5, 8))
    assert seconds(32, 1000, 5, 32) > 3 * seconds(32, 1000, 5, 8)


def test_verbose_shows_a_progress_bar(rng, capsys):
    X, y, X_val, y_val = random_problem(rng, 20)
    fit_values(X, y, X_val, y_val, 3, verbose=1)
    assert "KNNShapley blocks" in capsys.readouterr().err


@parametrize_with_checks([KNNShapley(weights="distance", knn_utility="hard_label")])
def test_sklearn_compatible(estimator, check):
    check(estimator)


@parametrize_with_valuer_checks([KNNShapley(3, weights="distance", knn_utility="hard_label")])
def test_valuer_checks(valuer, check):
    check(valuer)


# --------------------------------------------------------------------------------------
# Errors.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("params, match", [
    ({"weights": "gauss"}, r"The 'weights' parameter of KNNShapley must be a str among "
                           r".*'distance'.* or a callable\. Got 'gauss' instead\."),
    ({"n_bins": 1}, r"The 'n_bins' parameter of KNNShapley must be an int in the range "
                    r"\[2, inf\)\. Got 1 instead\."),
    ({"n_bins": 4.5}, r"The 'n_bins' parameter .* Got 4\.5 instead\."),
    ({"tied_vote": "half"}, r"The 'tied_vote' parameter of KNNShapley must be a str among "
                            r".*Got 'half' instead\."),
    ({"weights": lambda d: d[:, :1]}, r"The 'weights' callable must return an array of "
                                      r"shape \(3, 10\)\. Got \(3, 1\) instead\."),
    ({"weights": lambda d: -d}, r"The 'weights' callable must return finite weights >= 0\. "
                                r"Got a minimum of -"),
    ({"weights": lambda d: np.where(d > 1, np.inf, d)}, r"finite weights >= 0\. Got inf "),
    ({"weights": lambda d: np.full_like(d, np.nan)}, r"finite weights >= 0\. Got nan "),
])
def test_bad_weight_parameters_are_named(rng, params, match):
    X, y, X_val, y_val = random_problem(rng, 10)
    with pytest.raises(ValueError, match=match):
        fit_values(X, y, X_val, y_val, **params)


def test_weights_refuse_regression_and_other_utilities(rng):
    X, y = rng.normal(size=(10, 2)), rng.normal(size=10)
    with pytest.raises(ValueError, match=r"weights='distance' of KNNShapley is not "
                                         r"implemented for regression \(task='auto'"):
        KNNShapley(weights="distance", knn_utility="hard_label").fit(X, y)
    with pytest.raises(ValueError, match=r"weights='<callable>' .* not implemented for "
                                         r"regression"):
        KNNShapley(weights=np.sqrt, knn_utility="hard_label").fit(X, y)
    with pytest.raises(ValueError, match=r"knn_utility='hard_label' of KNNShapley is a "
                                         r"classification utility; got a regression task"):
        KNNShapley(knn_utility="hard_label").fit(X, y)
    labels = np.arange(10) % 2
    for utility in ("fixed_k", "soft_label"):
        with pytest.raises(ValueError, match=rf"knn_utility='{utility}' of KNNShapley with "
                                             r"weights='distance' is not implemented.*Pass "
                                             r"knn_utility='hard_label'"):
            KNNShapley(weights="distance", knn_utility=utility).fit(X, labels)
