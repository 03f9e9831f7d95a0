"""Tests of ThresholdKNNShapley: brute-force Shapley oracles, the full-radius closed form,
leave-self-out, invariances, common checks and errors."""

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import sklearn
from sklearn.utils.estimator_checks import parametrize_with_checks

import skdvl.valuation._knn_threshold as threshold_module
from skdvl import KNNShapley, ThresholdKNNShapley
from skdvl.utils.estimator_checks import parametrize_with_valuer_checks


@pytest.fixture
def seed():
    return 0


@pytest.fixture
def rng(seed):
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------------------
# Independent oracles: the utility of every coalition, written out, and the subset formula.
# --------------------------------------------------------------------------------------


def _tknn_utility(members, X, y, x, t, radius, task, n_classes, empty_prediction):
    """The TKNN score of the coalition ``members`` on validation row (x, t)."""
    near = [i for i in members if math.dist(X[i], x) <= radius]
    if task == "classification":
        if not near:
            return 1.0 / n_classes  # no neighbour: a uniform guess
        return sum(y[i] == t for i in near) / len(near)
    prediction = sum(y[i] for i in near) / len(near) if near else empty_prediction
    return -((prediction - t) ** 2)


def _utilities(X, y, X_val, y_val, radius, task):
    """u(S) for every bitmask S over the training rows, averaged over X_val."""
    n = X.shape[0]
    n_classes = len(set(y.tolist()))
    empty_prediction = float(np.mean(y))
    u = np.zeros(2**n)
    for x, t in zip(X_val, y_val):
        for mask in range(2**n):
            members = [i for i in range(n) if mask >> i & 1]
            u[mask] += _tknn_utility(members, X, y, x, t, radius, task, n_classes,
                                     empty_prediction)
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
    """Integer features: exact distances, ties and duplicate rows."""
    X = rng.integers(0, 4, size=(n, 2)).astype(float)
    X[-1] = X[0]  # a duplicate row
    X_val = rng.integers(0, 4, size=(n_val, 2)).astype(float)
    if task == "classification":
        return X, rng.integers(0, 3, n), X_val, rng.integers(0, 3, n_val)
    return X, rng.normal(size=n), X_val, rng.normal(size=n_val)


# --------------------------------------------------------------------------------------
# Exactness.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("n", [1, 2, 3, 6, 10])
@pytest.mark.parametrize("radius", [0.0, 1.0, 1.5, 2.0, 10.0])
def test_values_equal_brute_force_shapley(rng, task, n, radius):
    X, y, X_val, y_val = _small_problem(rng, n, task)
    if task == "classification" and not np.isin(y_val, y).any():
        y_val[0] = y[0]
    u = _utilities(X, y, X_val, y_val, radius, task)
    v = ThresholdKNNShapley(radius, task=task).fit(X, y, X_val=X_val, y_val=y_val)
    np.testing.assert_allclose(v.values_, _exact_shapley(u, n), rtol=1e-10, atol=1e-12)
    assert v.n_classes_ == (len(np.unique(y)) if task == "classification" else 0)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_points_on_the_radius_are_neighbours(task):
    # Grid points at exactly distance 1 of the validation point are in its radius.
    X = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0]])
    y = np.array([0, 1, 0, 1, 0]) if task == "classification" else np.arange(5.0)
    X_val, y_val = np.array([[0.0, 0.0]]), y[:1]
    u = _utilities(X, y, X_val, y_val, 1.0, task)
    v = ThresholdKNNShapley(1.0, task=task).fit(X, y, X_val=X_val, y_val=y_val)
    np.testing.assert_allclose(v.values_, _exact_shapley(u, 5), atol=1e-12)
    assert (v.values_[[3, 4]] == 0).all() and (v.values_[:3] != 0).all()


def _full_neighbourhood_values(match, n_classes):
    """Closed form of the game in which every training row is a neighbour.

    Derivation (permutations): row ``i`` arrives at position ``p``, uniform in
    ``1..n``; the rows before it are a uniform subset of size ``s = p - 1`` of the
    others. For ``s = 0`` it adds ``m_i - 1/C``. For ``s >= 1`` the coalition's
    score is its mean ``a`` of matches, and adding ``i`` makes it
    ``(s a + m_i) / (s + 1)``, a change of ``(m_i - a) / (s + 1)``, whose mean over
    the subsets is ``(m_i - abar) / (s + 1)`` with ``abar`` the mean match of the
    other rows. So ``phi_i = [m_i - 1/C + (m_i - abar) (1/2 + ... + 1/n)] / n``.
    """
    n = len(match)
    values = np.empty(n)
    for i in range(n):
        others = [match[j] for j in range(n) if j != i]
        abar = sum(others) / len(others) if others else 0.0
        tail = sum(1.0 / (s + 1) for s in range(1, n))
        values[i] = (match[i] - 1.0 / n_classes + (match[i] - abar) * tail) / n
    return values


@pytest.mark.parametrize("n", [1, 2, 5, 40])
def test_radius_covering_every_row_equals_the_full_neighbourhood_game(rng, n):
    X, y = rng.normal(size=(n, 3)), rng.integers(0, 4, n)
    x_val, y_val = rng.normal(size=(1, 3)), y[:1]
    v = ThresholdKNNShapley(radius=1e3).fit(X, y, X_val=x_val, y_val=y_val)
    expected = _full_neighbourhood_values((y == y_val[0]).astype(float), len(np.unique(y)))
    np.testing.assert_allclose(v.values_, expected, rtol=1e-12, atol=1e-15)
    # the soft-label KNN utility with K >= n is the same game
    soft = KNNShapley(n + 3, knn_utility="soft_label").fit(X, y, X_val=x_val, y_val=y_val)
    np.testing.assert_allclose(soft.values_, expected, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_efficiency_and_dummies(rng, task):
    X, y, X_val, y_val = _small_problem(rng, 8, task, n_val=6)
    X_val[0] = [50.0, 50.0]  # no neighbour at all
    if task == "classification" and not np.isin(y_val, y).any():
        y_val[1] = y[0]
    u = _utilities(X, y, X_val, y_val, 1.5, task)
    v = ThresholdKNNShapley(1.5, task=task).fit(X, y, X_val=X_val, y_val=y_val)
    assert math.isclose(v.values_.sum(), u[-1] - u[0], rel_tol=1e-10, abs_tol=1e-12)
    d = np.sqrt(((X[:, None, :] - X_val[None]) ** 2).sum(-1))
    far = (d > 1.5).all(axis=1)
    assert (v.values_[far] == 0).all()


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_leave_self_out_equals_brute_force_per_game(rng, task):
    # Row j's game is played by the other rows: C is that of the whole y, the empty
    # prediction the mean target of the other rows.
    n = 9
    X = rng.integers(0, 3, size=(n, 2)).astype(float)
    y = rng.integers(0, 3, n) if task == "classification" else rng.normal(size=n)
    n_classes = len(np.unique(y))
    v = ThresholdKNNShapley(1.5, task=task).fit(X, y)
    games = np.full((n, n), np.nan)
    for j in range(n):
        others = [i for i in range(n) if i != j]
        empty_prediction = float(np.mean(y[others]))
        u = np.zeros(2 ** (n - 1))
        for mask in range(2 ** (n - 1)):
            members = [others[b] for b in range(n - 1) if mask >> b & 1]
            u[mask] = _tknn_utility(members, X, y, X[j], y[j], 1.5, task, n_classes,
                                    empty_prediction)
        games[j, others] = _exact_shapley(u, n - 1)
    np.testing.assert_allclose(v.values_, np.nanmean(games, axis=0), rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_array_equal(v.counts_, np.full(n, n - 1))


# --------------------------------------------------------------------------------------
# Invariances and data types.
# --------------------------------------------------------------------------------------


@pytest.fixture
def blob(rng):
    X = rng.normal(size=(300, 4))
    return X, (X[:, 0] > 0).astype(int), rng.normal(size=(97, 4)), rng.integers(0, 2, 97)


@pytest.mark.parametrize("with_val", [True, False])
def test_values_invariant_to_block_size_n_jobs_and_algorithm(blob, with_val):
    X, y, X_val, y_val = blob
    kw = dict(X_val=X_val, y_val=y_val) if with_val else {}
    ref = ThresholdKNNShapley(2.0).fit(X, y, **kw)
    assert (ref.values_ != 0).mean() > 0.5
    with sklearn.config_context(working_memory=0.05):
        small = ThresholdKNNShapley(2.0, n_jobs=2).fit(X, y, **kw)
    np.testing.assert_allclose(small.values_, ref.values_, rtol=1e-12, atol=1e-15)
    for algorithm in ("kd_tree", "ball_tree"):
        tree = ThresholdKNNShapley(2.0, algorithm=algorithm).fit(X, y, **kw)
        np.testing.assert_allclose(tree.values_, ref.values_, rtol=1e-10, atol=1e-13)
    sq = ThresholdKNNShapley(4.0, metric="sqeuclidean").fit(X, y, **kw)
    np.testing.assert_allclose(sq.values_, ref.values_, rtol=1e-12, atol=1e-15)


def test_manhattan_metric_equals_brute_force(rng):
    X, y, X_val, y_val = _small_problem(rng, 7, "classification")
    y_val[0] = y[0]
    v = ThresholdKNNShapley(2.0, metric="manhattan").fit(X, y, X_val=X_val, y_val=y_val)
    n_classes, u = len(np.unique(y)), np.zeros(2**7)
    for x, t in zip(X_val, y_val):
        for mask in range(2**7):
            near = [i for i in range(7) if mask >> i & 1 and np.abs(X[i] - x).sum() <= 2]
            u[mask] += (sum(y[i] == t for i in near) / len(near) if near
                        else 1 / n_classes) / len(y_val)
    np.testing.assert_allclose(v.values_, _exact_shapley(u, 7), atol=1e-12)


def test_sparse_and_pandas_inputs(blob):
    X, y, X_val, y_val = blob
    dense = ThresholdKNNShapley(2.0).fit(X, y, X_val=X_val, y_val=y_val)
    for fmt in (sp.csr_matrix, sp.csc_matrix):
        v = ThresholdKNNShapley(2.0).fit(fmt(X), y, X_val=fmt(X_val), y_val=y_val)
        np.testing.assert_allclose(v.values_, dense.values_, rtol=1e-10, atol=1e-13)
    index = pd.Index([f"r{i}" for i in range(300)])
    v = ThresholdKNNShapley(2.0).fit(pd.DataFrame(X, index=index), pd.Series(y, index=index),
                                     X_val=X_val, y_val=y_val)
    assert isinstance(v.values_, pd.Series) and (v.values_.index == index).all()
    np.testing.assert_array_equal(v.values_.to_numpy(), dense.values_)


def test_string_labels_and_progress_bar(rng, capsys):
    X, X_val = rng.normal(size=(40, 2)), rng.normal(size=(6, 2))
    codes, codes_val = rng.integers(0, 3, 40), np.array([0, 1, 0, 1, 2, 2])
    names = np.array(["ant", "bee", "cat"])
    v = ThresholdKNNShapley(1.0, verbose=1).fit(X, names[codes], X_val=X_val,
                                                y_val=names[codes_val])
    ref = ThresholdKNNShapley(1.0).fit(X, codes, X_val=X_val, y_val=codes_val)
    np.testing.assert_array_equal(v.values_, ref.values_)
    assert "ThresholdKNNShapley blocks" in capsys.readouterr().err
    assert v.result_.algorithm == "threshold_knn_shapley"


def test_interrupt_keeps_finished_blocks(rng, monkeypatch):
    X, X_val = rng.normal(size=(80, 3)), rng.normal(size=(64, 3))
    y, y_val = rng.integers(0, 3, 80), rng.integers(0, 3, 64)
    real, calls = threshold_module._threshold_block_moments, [0]

    def block(*args):
        calls[0] += 1
        if calls[0] == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(threshold_module, "_threshold_block_moments", block)
    with pytest.warns(RuntimeWarning, match=r"^Interrupted: ThresholdKNNShapley returns "
                                            r"values averaged over the 8 of 64"):
        v = ThresholdKNNShapley(1.5).fit(X, y, X_val=X_val, y_val=y_val)
    monkeypatch.undo()
    budget = ThresholdKNNShapley(1.5).fit(X, y, X_val=X_val[:8], y_val=y_val[:8])
    np.testing.assert_allclose(v.values_, budget.values_, rtol=1e-12, atol=1e-15)


# --------------------------------------------------------------------------------------
# Common checks and errors.
# --------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:cannot use tree with sparse input:UserWarning")
@parametrize_with_checks([ThresholdKNNShapley(), ThresholdKNNShapley(algorithm="kd_tree")])
def test_sklearn_compatible(estimator, check):
    check(estimator)


@parametrize_with_valuer_checks([ThresholdKNNShapley(radius=2.0)])
def test_valuer_checks(valuer, check):
    check(valuer)


@pytest.mark.parametrize("params, match", [
    ({"radius": -0.5}, r"The 'radius' parameter of ThresholdKNNShapley must be a float "
                       r"in the range \[0.0, inf\). Got -0.5 instead."),
    ({"radius": "wide"}, r"'radius' parameter .* Got 'wide' instead"),
    ({"radius": np.inf}, r"'radius' parameter .* Got inf instead"),
    ({"algorithm": "grid"}, r"'algorithm' parameter of ThresholdKNNShapley .* Got 'grid'"),
    ({"task": "ranking"}, r"'task' parameter of ThresholdKNNShapley .* Got 'ranking'"),
    ({"p": 0}, r"'p' parameter of ThresholdKNNShapley .* Got 0 instead"),
])
def test_bad_parameters_are_named(rng, params, match):
    X, y = rng.normal(size=(10, 2)), np.arange(10) % 2
    with pytest.raises(ValueError, match=match):
        ThresholdKNNShapley(**params).fit(X, y)


def test_bad_targets_are_named(rng):
    X = rng.normal(size=(10, 2))
    with pytest.raises(ValueError, match=r"ThresholdKNNShapley needs at least 2 classes"):
        ThresholdKNNShapley().fit(X, np.zeros(10, dtype=int))
    with pytest.raises(ValueError, match=r"ThresholdKNNShapley: no label of y_val occurs"):
        ThresholdKNNShapley().fit(X, np.arange(10) % 2, X_val=X[:2], y_val=[5, 6])
    with pytest.raises(ValueError, match=r"task='regression' needs numeric targets"):
        ThresholdKNNShapley(task="regression").fit(X, np.array(list("ababababab")))
