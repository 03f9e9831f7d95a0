"""Binary logistic prefix walks on a torch device (issue 25, item 5), checked on CPU:
every prefix equals its cold batched fit to the solver's tolerance, a walk's bits do
not depend on the walks stepped with it, and values through the walk equal exact
enumeration and the numpy walk's."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skdvl import ModelUtility, ShapleyValuer
from skdvl.utility._linear_batch import plan_batched
from skdvl.utility._prefix_walk import PrefixWalk
from tests.test_prefix_walk import (
    LOGISTIC_IDS,
    LOGISTIC_MODELS,
    _params,
    _scaled,
    assert_same_bits_alone_and_with_others,
)

torch = pytest.importorskip("torch")
from skdvl.utility._prefix_torch_logistic import TorchLogisticPrefixes  # noqa: E402


@pytest.fixture
def rng():
    return np.random.default_rng(17)


def _against_cold(est, X, y, rng, W=3, bases=None):
    """Walk W random orders to the end on torch (CPU); compare each prefix with the
    numpy batched cold fit of its mask. Returns the largest parameter difference
    relative to the parameters' size, the prefixes compared and the mean Newton
    iterations of the walk and of the cold fits."""
    n = X.shape[0]
    bases = np.zeros((W, n), bool) if bases is None else bases
    orders = [rng.permutation(np.flatnonzero(~bases[r])) for r in range(W)]
    cold_plan = plan_batched(est)
    walk = PrefixWalk(plan_batched(est, device="cpu"), X, y, bases, orders)
    assert isinstance(walk.fits, TorchLogisticPrefixes)
    worst, iters = 0.0, []
    for _ in range(min(len(o) for o in orders)):
        got = walk.step(np.arange(W))
        masks = np.stack([walk.mask(r) for r in range(W)])
        cold = cold_plan.fit(X, y, masks)
        np.testing.assert_array_equal(got.degenerate, cold.degenerate)
        np.testing.assert_array_equal(got.present, cold.present)
        np.testing.assert_array_equal(got.n_samples, masks.sum(axis=1))
        for r in np.flatnonzero(~cold.degenerate & ~cold.failed):
            assert not got.failed[r]
            a, b = _params(got, r), _params(cold, r)
            worst = max(worst, np.abs(a - b).max() / max(1.0, np.abs(b).max()))
            iters.append((got.n_iter[r], cold.n_iter[r]))
            if cold_plan.scaler is not None:
                np.testing.assert_allclose(got.scaler_mean[r], cold.scaler_mean[r],
                                           rtol=1e-12, atol=1e-12 * np.abs(X).max())
                np.testing.assert_allclose(got.scaler_scale[r], cold.scaler_scale[r],
                                           rtol=1e-10)
    it = np.array(iters)
    return worst, it.shape[0], it[:, 0].mean(), it[:, 1].mean()


@pytest.mark.parametrize("est", LOGISTIC_MODELS, ids=LOGISTIC_IDS)
def test_torch_logistic_prefixes_equal_cold_fits(est, rng):
    X, y = make_classification(n_samples=60, n_features=6, random_state=2)
    if hasattr(est, "steps"):
        X = _scaled(X, rng)
    worst, compared, walk_iters, cold_iters = _against_cold(est, X, y, rng)
    assert compared >= 150
    # both stop where no step moves a training decision by more than 1e-7 logit
    assert worst < 1e-6
    # and the walk starts where the previous prefix ended, closer than the cold start
    assert walk_iters < cold_iters


@pytest.mark.parametrize("est", [LOGISTIC_MODELS[0], LOGISTIC_MODELS[-1]],
                         ids=[LOGISTIC_IDS[0], LOGISTIC_IDS[-1]])
def test_the_batched_solve_of_a_gpu_equals_cold_fits(est, rng, monkeypatch):
    """The walks of a prefix length in one batched solve, as on a GPU (run on CPU)."""
    from skdvl.utility import _prefix_torch_logistic

    monkeypatch.setattr(_prefix_torch_logistic, "_ALONE_ON_CPU", False)
    X, y = make_classification(n_samples=50, n_features=5, random_state=6)
    if hasattr(est, "steps"):
        X = _scaled(X, rng)
    worst, compared, walk_iters, cold_iters = _against_cold(est, X, y, rng, W=4)
    assert compared >= 150 and worst < 1e-6 and walk_iters < cold_iters


def test_torch_logistic_walks_from_bases(rng):
    X, y = make_classification(n_samples=40, n_features=4, n_informative=2, random_state=3)
    bases = np.zeros((4, 40), bool)
    bases[0, :10] = bases[1, 20:23] = bases[2, [0, 39]] = True  # walk 3 starts empty
    worst, compared, _, _ = _against_cold(LogisticRegression(), X, y, rng, W=4, bases=bases)
    assert compared > 100 and worst < 1e-6


def test_one_class_prefixes_are_degenerate_and_the_torch_walk_goes_on():
    X, y = make_classification(n_samples=24, n_features=4, n_informative=2, random_state=4)
    order = np.r_[np.flatnonzero(y == 0), np.flatnonzero(y == 1)]  # one class first
    walk = PrefixWalk(plan_batched(LogisticRegression(), device="cpu"), X, y,
                      np.zeros((1, 24), bool), [order])
    fits = [walk.step(np.array([0])) for _ in range(24)]
    n0 = int((y == 0).sum())
    assert [bool(f.degenerate[0]) for f in fits] == [True] * n0 + [False] * (24 - n0)
    cold = plan_batched(LogisticRegression()).fit(
        X, y, np.stack([np.isin(np.arange(24), order[:j + 1]) for j in range(24)]))
    for j in range(n0, 24):  # the first two-class prefix starts from 0, not a warm start
        np.testing.assert_allclose(_params(fits[j], 0), _params(cold, j), rtol=1e-6,
                                   atol=1e-6)


def test_a_torch_logistic_walk_has_the_same_bits_alone_and_with_others(rng):
    X, y = make_classification(n_samples=40, n_features=5, random_state=5)
    plan = plan_batched(make_pipeline(StandardScaler(), LogisticRegression()), device="cpu")
    assert_same_bits_alone_and_with_others(plan, X, y, rng)


@pytest.fixture(scope="module")
def cancer():
    X, y = load_breast_cancer(return_X_y=True)
    idx = np.random.default_rng(0).permutation(y.size)
    X, y = X[idx, :5], y[idx]
    return X[:48], y[:48], X[48:128], y[48:128]


def test_exact_shapley_through_the_torch_walk_of_every_permutation(cancer):
    """Shapley values as the mean marginal over all 6! orders, each walked on torch,
    equal the exact valuer's (every subset fitted cold, in numpy)."""
    X, y, X_val, y_val = cancer
    X, y = X[:6], y[:6]
    assert 0 < y.sum() < 6
    n = X.shape[0]
    orders = np.array(list(itertools.permutations(range(n))))
    assert orders.shape[0] == math.factorial(n)
    est = make_pipeline(StandardScaler(), LogisticRegression())
    u = ModelUtility(est, X, y, X_val, y_val, device="cpu")
    assert u.walk_reason == ""
    walk = u.prefix_walk(np.zeros((orders.shape[0], n), bool), list(orders))
    assert isinstance(walk.walk.fits, TorchLogisticPrefixes)
    prev = np.full(orders.shape[0], u.default_score)
    values = np.zeros(n)
    for j in range(n):
        cur = walk.step(np.arange(orders.shape[0]))
        np.add.at(values, orders[:, j], cur - prev)
        prev = cur
    values /= orders.shape[0]
    exact = ShapleyValuer(est, sampler="exact").fit(X, y, X_val=X_val, y_val=y_val)
    assert np.abs(exact.values_).max() > 0.01  # not a game of zeros
    np.testing.assert_allclose(values, exact.values_, rtol=0, atol=1e-12)


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_permutation_values_on_the_device_equal_numpy_and_repeat(cancer, n_jobs):
    """48 rows, 8 permutations walked from the engine's first walked prefix (32) on (in
    the workers with n_jobs=2): identical run after run and across n_jobs, and
    equal to the numpy walk's values (accuracy: the fits agree to the solver's
    tolerance, far from any validation decision's sign)."""
    X, y, X_val, y_val = cancer
    kw = dict(sampler="permutation", max_updates=8, random_state=3)

    def run(device, jobs):
        return ShapleyValuer(LogisticRegression(), device=device, n_jobs=jobs, **kw).fit(
            X, y, X_val=X_val, y_val=y_val)

    ref, got = run(None, 1), run("cpu", n_jobs)
    assert got.fit_path_.startswith("batched on torch device cpu")
    assert got.fit_path_.endswith("permutation prefixes fitted incrementally")
    np.testing.assert_array_equal(got.values_, ref.values_)
    np.testing.assert_array_equal(got.counts_, ref.counts_)
    if n_jobs == 2:
        np.testing.assert_array_equal(got.values_, run("cpu", 1).values_)


def test_a_block_of_prefixes_is_fitted_prefix_by_prefix(rng):
    """``step_block`` (what the engine asks of walks past 512 rows) on the device: each
    of the block's prefixes equals its cold fit."""
    X, y = make_classification(n_samples=30, n_features=4, random_state=8)
    orders = [rng.permutation(30) for _ in range(2)]
    walk = PrefixWalk(plan_batched(LogisticRegression(), device="cpu"), X, y,
                      np.zeros((2, 30), bool), orders)
    for _ in range(3):
        walk.step(np.arange(2))
    got = walk.step_block(np.arange(2), 5)
    masks = np.stack([np.isin(np.arange(30), orders[a][:3 + j + 1])
                      for a in range(2) for j in range(5)])
    cold = plan_batched(LogisticRegression()).fit(X, y, masks)
    np.testing.assert_array_equal(got.degenerate, cold.degenerate)
    assert (~cold.degenerate).sum() >= 5
    for r in np.flatnonzero(~cold.degenerate):
        np.testing.assert_allclose(_params(got, r), _params(cold, r), rtol=1e-6, atol=1e-6)
