"""AmortizedValuer's empirical-Bayes combination, its noise, and its diagnostic.

Oracles: the normal-normal model's closed-form posterior (known prior variance),
the noise-free limit, exact Shapley values (every coalition of a game of at most 14
rows), and valuers whose values are a known function of the rows (or unrelated to
them), with a known noise.
"""

import warnings

import numpy as np
import pytest
from sklearn.base import BaseEstimator
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from skdvl import AmortizedValuer, ShapleyValuer
from skdvl.base import ValuerMixin
from skdvl.valuation._amortized_math import shrink


def _linear(X):
    return X[:, 0] - 0.5 * X[:, 1]


class _KnownValues(ValuerMixin, BaseEstimator):
    """A stand-in valuer: values ``values_of(X)`` plus noise of a known variance.

    ``stderr_`` follows skdvl's convention, ``sqrt(sample variance (ddof 1) / counts)``,
    of ``counts`` samples of per-sample variance ``counts * noise**2``.
    """

    def __init__(self, values_of=_linear, noise=0.1, counts=4, random_state=None):
        self.values_of = values_of
        self.noise = noise
        self.counts = counts
        self.random_state = random_state

    def fit(self, X, y, X_val=None, y_val=None):
        rng = np.random.default_rng(self.random_state)
        n, c = X.shape[0], self.counts
        self.exact_ = np.asarray(self.values_of(X), dtype=np.float64)
        self.values_ = self.exact_ + rng.normal(scale=self.noise, size=n)
        self.stderr_ = np.full(n, float(self.noise))  # ddof 1: the true standard error
        self.counts_ = np.full(n, c)
        self.n_utility_evaluations_ = 0
        return self


@pytest.fixture(scope="module")
def table():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(240, 3))
    return X, (X[:, 2] > 0).astype(int)


def _fit(table, **valuer):
    X, y = table
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = AmortizedValuer(_KnownValues(**valuer, random_state=0), features="all",
                            random_state=0).fit(X, y)
    return a, [str(w.message) for w in caught]


# ------------------------------------------------------------- the pure function
def test_shrink_is_the_normal_posterior_and_its_variance_is_honest(rng):
    n, tau2 = 20_000, 1.0
    pred = rng.normal(size=n)
    v = pred + rng.normal(scale=np.sqrt(tau2), size=n)
    s2 = rng.uniform(0.25, 4.0, size=n)
    t = v + rng.normal(size=n) * np.sqrt(s2)
    values, var, tau2_hat = shrink(t, pred, s2)
    assert tau2_hat == pytest.approx(tau2, rel=0.1)
    posterior = pred + tau2 / (tau2 + s2) * (t - pred)  # the known-prior closed form
    np.testing.assert_allclose(values, posterior, atol=0.1)
    mse = np.mean((values - v) ** 2)
    assert mse == pytest.approx(np.mean(var), rel=0.05)  # stderr honest on average
    np.testing.assert_allclose(var, tau2 * s2 / (tau2 + s2), rtol=0.15)
    assert mse < 0.9 * min(np.mean((t - v) ** 2), np.mean((pred - v) ** 2))


def test_shrinkage_converges_to_the_estimates_as_the_noise_vanishes(rng):
    n = 500
    pred = rng.normal(size=n)
    v = pred + rng.normal(scale=0.3, size=n)
    gaps = []
    for noise in (1.0, 0.1, 0.01, 0.001):
        t = v + rng.normal(scale=noise, size=n)
        values, var, _ = shrink(t, pred, np.full(n, noise**2))
        gaps.append(np.max(np.abs(values - t)))
        assert np.mean(var) <= noise**2  # never less precise than the estimate
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] < 1e-4, gaps
    t = v.copy()
    values, var, _ = shrink(t, pred, np.zeros(n))  # exact targets: kept, variance 0
    np.testing.assert_array_equal(values, t)
    np.testing.assert_array_equal(var, 0.0)


def test_a_prior_variance_estimated_at_zero_keeps_a_positive_error(rng):
    n = 300
    v = rng.normal(size=n)
    t = v + rng.normal(scale=1.0, size=n)
    values, var, tau2 = shrink(t, v, np.ones(n))  # predictions exact: tau^2 near 0
    assert tau2 > 0 and (var > 0).all()  # the data cannot show tau^2 = 0: no 0 stderr
    assert np.mean((values - v) ** 2) < 0.1


# --------------------------------------------------------------- the estimator
@pytest.mark.parametrize("noise", [0.3, 0.03, 0.0])
def test_values_move_from_the_prediction_to_the_estimates_as_noise_vanishes(table, noise):
    a, _ = _fit(table, noise=noise)
    target = a.valuer_.values_
    gap = np.max(np.abs(a.values_ - target))
    err = np.sqrt(np.mean((a.values_ - a.valuer_.exact_) ** 2))
    err_plain = np.sqrt(np.mean((target - a.valuer_.exact_) ** 2))
    if noise == 0.0:
        np.testing.assert_array_equal(a.values_, target)
        np.testing.assert_array_equal(a.stderr_, 0.0)
    else:
        assert gap < 10 * noise and err <= err_plain
        # honest: the estimated error is the measured one, within sampling error
        assert np.sqrt(np.mean(a.stderr_**2)) == pytest.approx(err, rel=0.35)


def test_exact_targets_are_returned_unchanged():
    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)[:, :4]
    valuer = ShapleyValuer(LogisticRegression(max_iter=1000), sampler="exact")
    rows = np.r_[np.flatnonzero(y == 0)[:4], np.flatnonzero(y == 1)[:4]]
    a = AmortizedValuer(valuer, n_splits=2, random_state=0).fit(
        X[rows], y[rows], X_val=X[200:260], y_val=y[200:260])
    np.testing.assert_array_equal(a.values_, a.valuer_.values_)
    np.testing.assert_array_equal(a.stderr_, 0.0)


def test_combined_values_beat_both_on_exact_games_and_their_stderr_is_honest():
    """12-row games, 4 and 16 permutations: shrinkage against estimates and predictions."""
    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)[:, :8]
    mse = {"plain": [], "shrinkage": [], "prediction": [], "stderr": []}
    for rep in range(2):
        rng = np.random.default_rng(100 + rep)
        idx = rng.permutation(y.shape[0])
        tr, va = idx[:12], idx[12:112]
        y_tr = y[tr].copy()
        y_tr[:2] = 1 - y_tr[:2]
        exact = ShapleyValuer(LogisticRegression(max_iter=1000), sampler="exact").fit(
            X[tr], y_tr, X_val=X[va], y_val=y[va]).values_
        for budget in (4, 16):
            fits = {c: AmortizedValuer(
                ShapleyValuer(LogisticRegression(max_iter=1000), sampler="permutation",
                              max_updates=budget), combine=c, n_splits=3, random_state=rep
            ).fit(X[tr], y_tr, X_val=X[va], y_val=y[va]) for c in ("shrinkage", "prediction")}
            a = fits["shrinkage"]
            mse["plain"].append(np.mean((a.valuer_.values_ - exact) ** 2))
            mse["shrinkage"].append(np.mean((a.values_ - exact) ** 2))
            mse["prediction"].append(np.mean((fits["prediction"].values_ - exact) ** 2))
            mse["stderr"].append(np.mean(a.stderr_**2))
    m = {k: np.mean(v) for k, v in mse.items()}
    assert m["shrinkage"] < 0.8 * m["plain"], m
    assert m["shrinkage"] <= 1.05 * m["prediction"], m
    # honest: not below half the measured error (an overconfident one would be)
    assert m["stderr"] > 0.5 * m["shrinkage"], m


# -------------------------------------------------------------- the diagnostic
def test_warns_when_the_values_are_unrelated_to_the_rows(table):
    def unrelated(X):
        return np.random.default_rng(3).normal(size=X.shape[0])

    a, said = _fit(table, values_of=unrelated, noise=0.1)
    assert a.disattenuated_interval_[1] < 0.3
    assert any("predicts the values poorly" in m for m in said), said


def test_does_not_warn_when_the_values_follow_the_rows(table):
    a, said = _fit(table, noise=0.5)  # noisy, but a smooth function of the features
    assert a.disattenuated_interval_[0] > 0.5
    assert not any("poorly" in m for m in said), said


def test_targets_too_noisy_to_judge_give_a_wide_interval_and_no_warning(table):
    a, said = _fit(table, noise=20.0)  # reliability near 0
    low, high = a.disattenuated_interval_
    assert high - low > 1.0 and not any("poorly" in m for m in said), (low, high)


# ----------------------------------------------------------- one sample per row
def test_one_sample_per_row_is_refused_by_default(table):
    X, y = table
    with pytest.raises(ValueError, match=r"AmortizedValuer\(weighting='inverse_variance', "
                                         r"combine='shrinkage'\) needs the noise .* gave no "
                                         r"row a standard error \(at most 1 sample per row\)"):
        AmortizedValuer(_KnownValues(counts=1), random_state=0).fit(X, y)


def test_one_sample_per_row_with_uniform_prediction_warns_and_has_no_stderr(table):
    X, y = table
    with pytest.warns(UserWarning, match="gave no standard error .* stderr_ is NaN"):
        a = AmortizedValuer(_OneSample(), weighting="uniform", combine="prediction",
                            random_state=0).fit(X, y)
    assert np.isnan(a.stderr_).all() and np.isfinite(a.values_).all()
    assert np.isnan(a.prediction_rmse_) and np.isnan(a.reliability_)


class _OneSample(_KnownValues):
    """One sample per row: skdvl reports NaN standard errors."""

    def __init__(self, values_of=_linear, noise=0.1, counts=1, random_state=None):
        super().__init__(values_of, noise, counts, random_state)

    def fit(self, X, y, X_val=None, y_val=None):
        super().fit(X, y)
        self.stderr_ = np.full(X.shape[0], np.nan)
        return self
