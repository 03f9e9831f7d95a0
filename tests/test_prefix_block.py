"""Blocks of consecutive logistic prefixes fitted together (issue 25): each prefix of a
block equals its cold fit to the solver tolerance, a walk's bits do not depend on the
walks it is blocked with, and the values do not change."""

from __future__ import annotations

import numpy as np
import pytest
from joblib import parallel_config
from sklearn.datasets import load_breast_cancer, make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from skdvl import ShapleyValuer
from skdvl.sampling import _truncation
from skdvl.utility import _prefix_block, _prefix_fits
from skdvl.utility._linear_batch import plan_batched
from skdvl.utility._prefix_walk import PrefixWalk
from tests.test_prefix_walk import LOGISTIC_IDS, LOGISTIC_MODELS


def _params(fit, r):
    return np.r_[fit.coef[r].ravel(), fit.intercept[r]]


def _blocks_against_cold(est, X, y, rng, W=3, B=8, first=12):
    """Walk W random orders: ``first`` single steps, then blocks of ``B``; compare every
    prefix with the batched cold fit. Returns the largest parameter difference relative
    to the parameters' size, the prefixes compared, and how many walk-blocks the block
    path fitted itself (not prefix by prefix)."""
    plan = plan_batched(est)
    n = X.shape[0]
    orders = [rng.permutation(n) for _ in range(W)]
    walk = PrefixWalk(plan, X, y, np.zeros((W, n), bool), orders)
    for _ in range(first):
        walk.step(np.arange(W))
    blocked = {"n": 0}
    real = _prefix_block.fit_block

    def counting(*args):
        ok = real(*args)
        blocked["n"] += int(ok.sum())
        return ok

    _prefix_fits.fit_block = counting
    worst, compared = 0.0, 0
    try:
        while walk.length[0] + B <= n:
            got = walk.step_block(np.arange(W), B)
            for j in range(B):
                masks = np.stack([walk.mask_at(r, j + 1 - B) for r in range(W)])
                cold = plan.fit(X, y, masks)
                for r in np.flatnonzero(~cold.degenerate & ~cold.failed):
                    i = r * B + j
                    assert not got.failed[i] and not got.degenerate[i]
                    assert got.n_samples[i] == masks[r].sum()
                    a, b = _params(got, i), _params(cold, r)
                    worst = max(worst, np.abs(a - b).max() / max(1.0, np.abs(b).max()))
                    compared += 1
                    if plan.scaler is not None:
                        np.testing.assert_allclose(got.scaler_mean[i], cold.scaler_mean[r],
                                                   rtol=1e-12, atol=1e-12 * np.abs(X).max())
    finally:
        _prefix_fits.fit_block = real
    return worst, compared, blocked["n"]


@pytest.mark.parametrize("est", LOGISTIC_MODELS, ids=LOGISTIC_IDS)
def test_block_prefixes_equal_cold_fits_to_the_solver_tolerance(est, rng):
    X, y = make_classification(n_samples=120, n_features=6, random_state=2)
    if hasattr(est, "steps"):  # scales spanning 6 orders of magnitude, and offsets
        X = X * 10.0 ** rng.integers(-3, 4, X.shape[1]) + rng.normal(0, 100, X.shape[1])
    worst, compared, blocked = _blocks_against_cold(est, X, y, rng)
    assert compared >= 250
    assert blocked >= 6  # the block path itself was taken, not only its fallback
    # the cold fit stops where no step moves a decision by 1e-7 logit
    assert worst < 1e-6


def test_walks_that_fall_back_equal_cold_fits(rng, monkeypatch):
    """With a single pass allowed no block converges: every walk falls back to the
    prefix-by-prefix path from the state it had, and still equals the cold fits."""
    monkeypatch.setattr(_prefix_block, "_PASSES", 1)
    X, y = make_classification(n_samples=80, n_features=5, random_state=3)
    worst, compared, blocked = _blocks_against_cold(LogisticRegression(), X, y, rng)
    assert blocked == 0 and compared >= 150
    assert worst < 1e-6


def test_block_prefixes_equal_cold_fits_with_passes_in_chunks(rng, monkeypatch):
    """Passes over more than ``_CHUNK_FROM`` rows go through them in chunks (from 4,096
    rows in use): with tiny chunks, whose ends fall inside the blocks' new rows, every
    prefix still equals its cold fit."""
    monkeypatch.setattr(_prefix_block, "_CHUNK_FROM", 16)
    monkeypatch.setattr(_prefix_block, "_CHUNK_ROWS", 7)
    X, y = make_classification(n_samples=120, n_features=6, random_state=4)
    worst, compared, blocked = _blocks_against_cold(LogisticRegression(), X, y, rng)
    assert compared >= 250 and blocked >= 6
    assert worst < 1e-6


def test_a_pass_in_chunks_equals_the_gradients_and_moves_over_all_rows(rng, monkeypatch):
    """The oracle: decisions, residuals and gradients of every prefix written out from
    their definitions (prefix ``i`` of the block holds the new rows ``k .. k + i``)."""
    m, B, p = 50, 8, 5
    k = m - B
    X, T = rng.normal(size=(m, p)), rng.normal(size=(B, p))
    za, q = rng.normal(size=m), rng.choice([-1.0, 1.0], m)
    weight = 0.7 * rng.random(m) * q  # C s q
    inside = np.arange(B)[:, None] >= np.arange(B)[None, :]
    G_want, moved_want = np.empty((B, p)), np.empty(B)
    for i in range(B):
        rows = np.arange(k + i + 1)
        z = X[rows] @ T[i]
        G_want[i] = (weight[rows] / (1.0 + np.exp(-q[rows] * z))) @ X[rows]
        moved_want[i] = np.abs(z - za[rows]).max()
    for chunk_from, chunk in [(10**6, 1), (10, 7), (10, 1), (10, 42), (10, 49)]:
        monkeypatch.setattr(_prefix_block, "_CHUNK_FROM", chunk_from)
        monkeypatch.setattr(_prefix_block, "_CHUNK_ROWS", chunk)
        G, moved, z_end = _prefix_block._exact_pass(T, X, za, -q, weight, inside, k, True)
        np.testing.assert_allclose(G, G_want, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(moved, moved_want, rtol=1e-12)
        np.testing.assert_allclose(z_end, X @ T[-1], rtol=1e-12, atol=1e-12)
        _, unmoved, _ = _prefix_block._exact_pass(T, X, za, -q, weight, inside, k, False)
        assert not unmoved.any()  # not asked for: not computed


@pytest.fixture
def rng():
    return np.random.default_rng(11)


def test_a_walk_has_the_same_bits_alone_and_with_others_in_blocks(rng):
    X, y = make_classification(n_samples=120, n_features=8, random_state=5)
    plan = plan_batched(LogisticRegression())
    orders = [rng.permutation(120) for _ in range(6)]
    alone = PrefixWalk(plan, X, y, np.zeros((1, 120), bool), orders[2:3])
    together = PrefixWalk(plan, X, y, np.zeros((6, 120), bool), orders)
    for _ in range(10):
        alone.step(np.array([0]))
        together.step(np.arange(6))
    for j in range(10):
        a = alone.step_block(np.array([0]), 8)
        walks = np.arange(6) if j % 2 == 0 else np.array([1, 2])
        # the others are stepped differently in between: walk 2 must not notice
        t = together.step_block(walks, 8)
        if j % 2:
            together.step(np.array([0, 3, 4, 5]))
            together.step_block(np.array([0, 3, 4, 5]), 7)
        row = int(np.flatnonzero(walks == 2)[0])
        assert np.array_equal(a.coef, t.coef[row * 8:(row + 1) * 8])
        assert np.array_equal(a.intercept, t.intercept[row * 8:(row + 1) * 8])


def test_a_block_past_the_end_of_a_walk_is_refused(rng):
    X, y = make_classification(n_samples=30, n_features=4, random_state=6)
    walk = PrefixWalk(plan_batched(LogisticRegression()), X, y, np.zeros((1, 30), bool),
                      [rng.permutation(30)])
    walk.step_block(np.array([0]), 25)
    with pytest.raises(ValueError, match="past its last prefix"):
        walk.step_block(np.array([0]), 6)


@pytest.fixture(scope="module")
def cancer():
    X, y = load_breast_cancer(return_X_y=True)
    idx = np.random.default_rng(0).permutation(len(y))[:160]
    X, y = StandardScaler().fit_transform(X[idx]), y[idx].copy()
    y[:8] = 1 - y[:8]
    return X[:80], y[:80], X[80:], y[80:]


@pytest.mark.parametrize("truncation", [None, 0.01])
def test_values_identical_with_blocks_and_prefix_by_prefix(cancer, truncation, monkeypatch):
    X, y, X_val, y_val = cancer
    monkeypatch.setattr(_truncation, "_WALK_MIN_WORK", 1)
    monkeypatch.setattr(_truncation, "_BLOCK_FROM", 1)  # blocks from the first block on

    def values(block):
        monkeypatch.setattr(_truncation, "_WALK_BLOCK", block)
        v = ShapleyValuer(LogisticRegression(), scoring="accuracy", sampler="permutation",
                          truncation=truncation, max_updates=12, random_state=0)
        v.fit(X, y, X_val=X_val, y_val=y_val)
        assert v.fit_path_ == "batched; permutation prefixes fitted incrementally"
        return v

    fitted = {"n": 0}
    real = _prefix_block.fit_block

    def counting(*args):
        ok = real(*args)
        fitted["n"] += int(ok.sum())
        return ok

    monkeypatch.setattr(_prefix_fits, "fit_block", counting)
    one = values(1)
    assert fitted["n"] == 0
    blocks = values(16)
    if truncation is None:  # (truncated walks mostly stop before their first block)
        assert fitted["n"] > 0  # some blocks were fitted as blocks
    np.testing.assert_array_equal(one.values_, blocks.values_)
    np.testing.assert_array_equal(one.counts_, blocks.counts_)


def test_values_identical_for_any_n_jobs_with_blocks(cancer, monkeypatch):
    """Threads see the patched thresholds (loky workers would not): the walks are cut
    into other tasks with n_jobs=2, in blocks from the first block on."""
    X, y, X_val, y_val = cancer
    monkeypatch.setattr(_truncation, "_WALK_MIN_WORK", 1)
    monkeypatch.setattr(_truncation, "_BLOCK_FROM", 1)
    kw = dict(scoring="accuracy", sampler="permutation", max_updates=8, random_state=0)
    one = ShapleyValuer(LogisticRegression(), n_jobs=1, **kw).fit(X, y, X_val=X_val,
                                                                   y_val=y_val)
    with parallel_config(backend="threading"):
        two = ShapleyValuer(LogisticRegression(), n_jobs=2, **kw).fit(X, y, X_val=X_val,
                                                                       y_val=y_val)
    np.testing.assert_array_equal(one.values_, two.values_)

