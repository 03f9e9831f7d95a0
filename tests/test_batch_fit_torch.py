"""The torch back end of the batched fits (``device=``), on CPU: numpy's results to rounding."""

import sys

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.preprocessing import StandardScaler

from skdvl import ModelUtility, ShapleyValuer
from skdvl.utility._linear_batch import plan_batched

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def cancer():
    X, y = load_breast_cancer(return_X_y=True)
    idx = np.random.default_rng(0).permutation(len(y))[:240]
    return StandardScaler().fit_transform(X[idx]), y[idx]


def _masks(n, b, seed):
    rng = np.random.default_rng(seed)
    return rng.random((b, n)) < rng.uniform(0.03, 0.9, size=(b, 1))


@pytest.mark.parametrize("params", [{}, {"C": 0.05}, {"fit_intercept": False},
                                    {"class_weight": "balanced"}])
def test_torch_cpu_fits_equal_numpy_fits(params, cancer):
    X, y = cancer
    masks = _masks(X.shape[0], 200, 1)
    ref = plan_batched(LogisticRegression(**params)).fit(X, y, masks)
    got = plan_batched(LogisticRegression(**params), device="cpu").fit(X, y, masks)
    np.testing.assert_array_equal(got.degenerate, ref.degenerate)
    np.testing.assert_array_equal(got.failed, ref.failed)
    ok = ~ref.degenerate & ~ref.failed
    assert ok.sum() > 150
    np.testing.assert_allclose(got.coef[ok], ref.coef[ok], rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(got.intercept[ok], ref.intercept[ok], rtol=1e-9, atol=1e-10)
    # and both are scikit-learn's optimum on a few coalitions
    for i in np.flatnonzero(ok)[:5]:
        sk = LogisticRegression(tol=1e-10, max_iter=10_000, **params).fit(X[masks[i]],
                                                                          y[masks[i]])
        np.testing.assert_allclose(got.coef[i, 0], sk.coef_[0], rtol=1e-5, atol=1e-6)


def test_torch_multiclass_coalitions_with_two_classes_use_the_device():
    """Coalitions of a 3-class problem holding two classes are binary solves (on torch)."""
    X, y = load_iris(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    masks = _masks(X.shape[0], 120, 2)
    masks[:40] &= (y != 2)[None, :]  # two classes only
    ref = plan_batched(LogisticRegression()).fit(X, y, masks)
    got = plan_batched(LogisticRegression(), device="cpu").fit(X, y, masks)
    ok = ~ref.degenerate & ~ref.failed
    np.testing.assert_allclose(got.coef[ok], ref.coef[ok], rtol=1e-9, atol=1e-10)


def test_valuer_on_torch_equals_numpy(cancer):
    X, y = cancer
    kw = dict(scoring="accuracy", truncation=0.01, max_updates=6, random_state=0)
    ref = ShapleyValuer(LogisticRegression(), **kw).fit(X[:60], y[:60], X_val=X[60:],
                                                         y_val=y[60:])
    got = ShapleyValuer(LogisticRegression(), device="cpu", **kw).fit(
        X[:60], y[:60], X_val=X[60:], y_val=y[60:])
    # binary logistic prefixes are walked on the device too
    assert got.fit_path_ == ("batched on torch device cpu; permutation prefixes fitted "
                             "incrementally")
    assert ref.fit_path_ == "batched; permutation prefixes fitted incrementally"
    np.testing.assert_allclose(got.values_, ref.values_, rtol=0, atol=1e-12)


def test_ridge_on_a_device_is_solved_in_numpy(cancer):
    X, y = cancer
    masks = _masks(X.shape[0], 50, 3)
    target = X[:, 0] * 2.0 + y
    ref = plan_batched(Ridge()).fit(X[:, 1:], target, masks)
    got = plan_batched(Ridge(), device="cpu").fit(X[:, 1:], target, masks)
    np.testing.assert_array_equal(got.coef, ref.coef)


@pytest.mark.parametrize("device", ["nonsense", "cuda:97"])
def test_a_device_this_machine_lacks_is_refused(device, cancer):
    X, y = cancer
    with pytest.raises(ValueError, match=f"device must be None or a torch device this "
                                         f"machine has; got '{device}'"):
        ModelUtility(LogisticRegression(), X[:50], y[:50], X[50:], y[50:], device=device)
    with pytest.raises(ValueError, match="device must be None or a torch device"):
        ShapleyValuer(LogisticRegression(), device=device, max_updates=2).fit(
            X[:50], y[:50], X_val=X[50:], y_val=y[50:])


def test_a_device_without_torch_says_how_to_get_it(cancer, monkeypatch):
    X, y = cancer
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match="device='cpu' runs the batched fits on torch, "
                                          "which is not installed"):
        ModelUtility(LogisticRegression(), X[:50], y[:50], X[50:], y[50:], device="cpu")


@pytest.mark.parametrize("rows", [120, 240])
def test_a_coalition_has_the_same_bits_in_any_batch_on_cpu(cancer, rows):
    """A coalition's torch fit does not depend on the coalitions solved with it, so the
    values do not depend on ``n_jobs``. Refitted alone, second of two, or first of two,
    every coefficient is bitwise the one of the batch of 7. Batched on MKL, 14 of the 21
    refits of the first case changed bits."""
    X, y = cancer[0][:rows], cancer[1][:rows]
    masks = np.random.default_rng(rows).random((7, rows)) < 0.5
    plan = plan_batched(LogisticRegression(), device="cpu")
    full = plan.fit(X, y, masks)
    for i in range(7):
        for sub in ([i], [(i + 1) % 7, i], [i, (i + 3) % 7]):
            got = plan.fit(X, y, masks[sub])
            j = sub.index(i)
            assert np.array_equal(got.coef[j], full.coef[i])
            assert np.array_equal(got.intercept[j], full.intercept[i])
