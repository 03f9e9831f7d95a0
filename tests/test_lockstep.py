"""Permutations walked in lockstep on a batched utility (issue 13): the same values, fewer calls."""

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

import skdvl.sampling._engine as engine
from skdvl import ShapleyValuer
from skdvl.sampling._engine import CachedEvaluator
from skdvl.sampling._truncation import (
    FixedTruncation,
    RelativeTruncation,
    _lockstep_utilities,
    _permutation_utilities,
)
from skdvl.stopping import AbsoluteStandardError, MaxUpdates


class Saturating:
    """A batched utility that levels off (so relative truncation triggers), recording calls."""

    def __init__(self, n, seed=0):
        self.n_players = n
        # integer weights: sums are exact, so a coalition's utility is the same in any batch
        self.w = np.random.default_rng(seed).integers(1, 20, size=n).astype(float)
        self.batches = []

    def evaluate(self, masks):
        self.batches.append(masks.shape[0])
        return 1.0 - np.exp(-(masks @ self.w) / 30.0)

    def __call__(self, subset):
        return float(1.0 - np.exp(-self.w[np.asarray(subset, dtype=np.intp)].sum() / 30.0))


@pytest.mark.parametrize("truncation", [
    None, RelativeTruncation(0.01), RelativeTruncation(0.05, burn_in_fraction=0.3),
    RelativeTruncation(0.0), FixedTruncation(0.3), FixedTruncation(1.0),
])
@pytest.mark.parametrize("step", [1, 3, 16])
def test_lockstep_rows_equal_one_permutation_at_a_time(truncation, step):
    """Every row is what the permutation alone gives, truncated where it truncates alone."""
    n = 23
    rng = np.random.default_rng(step)
    perms = [rng.permutation(n) for _ in range(9)]
    alone = CachedEvaluator(Saturating(n), cache=False)
    together = CachedEvaluator(Saturating(n), cache=False)
    alone.prefix_step = together.prefix_step = step
    u = _lockstep_utilities(together, perms, truncation)
    for r, perm in enumerate(perms):
        np.testing.assert_array_equal(u[r], _permutation_utilities(alone, perm, truncation))
    # the oracle, by hand: prefixes' utilities, flat after the first prefix close to u(N)
    game = Saturating(n)
    for r, perm in enumerate(perms):
        direct = np.array([game(perm[:j]) for j in range(n + 1)])
        if truncation is None:
            np.testing.assert_allclose(u[r], direct, rtol=0, atol=1e-15)
        elif isinstance(truncation, FixedTruncation):
            h = truncation.horizon(n)
            np.testing.assert_allclose(u[r, :h + 1], direct[:h + 1], rtol=0, atol=1e-15)
            assert np.all(u[r, h:] == u[r, h])
        else:
            start = max(1, int(np.ceil(truncation.burn_in_fraction * n)))
            close = np.abs(direct - direct[n]) < truncation.rtol * abs(direct[n])
            close[:start] = False
            stop = int(np.argmax(close)) if close.any() else n
            np.testing.assert_allclose(u[r, :stop + 1], direct[:stop + 1], rtol=0, atol=1e-15)
            assert np.all(u[r, stop:] == u[r, stop])


def test_lockstep_fills_batches_and_evaluates_no_more_than_alone():
    """Many permutations share each call: fewer, fuller calls than one at a time."""
    n, P = 40, 32
    rng = np.random.default_rng(0)
    perms = [rng.permutation(n) for _ in range(P)]
    trunc = RelativeTruncation(0.02)
    alone_u, together_u = Saturating(n), Saturating(n)
    alone = CachedEvaluator(alone_u, cache=False)
    together = CachedEvaluator(together_u, cache=False)
    alone.prefix_step = together.prefix_step = 8
    for perm in perms:
        _permutation_utilities(alone, perm, trunc)
    _lockstep_utilities(together, perms, trunc)
    assert len(together_u.batches) < len(alone_u.batches) / 4
    assert max(together_u.batches) == 256  # 32 permutations x 8 prefixes
    assert sum(together_u.batches) <= sum(alone_u.batches)


@pytest.fixture(scope="module")
def noisy_cancer():
    X, y = load_breast_cancer(return_X_y=True)
    idx = np.random.default_rng(0).permutation(len(y))[:140]
    X, y = StandardScaler().fit_transform(X[idx]), y[idx].copy()
    y[:6] = 1 - y[:6]
    return X[:60], y[:60], X[60:], y[60:]


def _tmc(data, lockstep, monkeypatch, **kw):
    X, y, X_val, y_val = data
    monkeypatch.setattr(engine, "_LOCKSTEP_BLOCKS", lockstep)
    params = {"sampler": "permutation", "truncation": 0.01, "max_updates": 40,
              "random_state": 3, **kw}
    v = ShapleyValuer(LogisticRegression(), scoring="accuracy", **params)
    return v.fit(X, y, X_val=X_val, y_val=y_val)


@pytest.mark.parametrize("sampler", ["permutation", "antithetic"])
def test_tmc_on_batched_fits_is_the_same_in_lockstep_and_alone(sampler, noisy_cancer,
                                                              monkeypatch):
    """Identical values and counts with 1 or 32 blocks per call, and fewer utility calls."""
    kw = {"sampler": sampler}
    alone = _tmc(noisy_cancer, 1, monkeypatch, **kw)
    together = _tmc(noisy_cancer, 32, monkeypatch, **kw)
    assert together.fit_path_ == "batched; permutation prefixes fitted incrementally"
    np.testing.assert_array_equal(together.values_, alone.values_)
    np.testing.assert_array_equal(together.counts_, alone.counts_)
    assert together.n_utility_evaluations_ <= alone.n_utility_evaluations_ * 1.05


def test_lockstep_tmc_does_not_depend_on_n_jobs(noisy_cancer, monkeypatch):
    one = _tmc(noisy_cancer, 32, monkeypatch, n_jobs=1)
    two = _tmc(noisy_cancer, 32, monkeypatch, n_jobs=2)
    np.testing.assert_array_equal(one.values_, two.values_)


def test_a_criterion_that_stops_inside_a_lockstep_group_drops_the_rest(noisy_cancer,
                                                                        monkeypatch):
    """A convergence criterion stops at the same permutation whatever the group size."""
    stop = AbsoluteStandardError(threshold=0.02, fraction=1.0, burn_in=5) | MaxUpdates(300)
    alone = _tmc(noisy_cancer, 1, monkeypatch, max_updates=None, stopping=stop)
    together = _tmc(noisy_cancer, 32, monkeypatch, max_updates=None, stopping=stop)
    assert together.converged_
    assert 5 < together.counts_.max() < 300
    np.testing.assert_array_equal(together.counts_, alone.counts_)
    np.testing.assert_array_equal(together.values_, alone.values_)
