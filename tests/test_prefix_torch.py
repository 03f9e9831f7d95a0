"""Least-squares prefix walks on a torch device (issue 25, item 5), checked on CPU:
every prefix equals its cold batched fit and the numpy walk's."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys

import numpy as np
import pytest
from sklearn.datasets import make_regression
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skdvl import ModelUtility, ShapleyValuer
from skdvl.utility._linear_batch import plan_batched
from skdvl.utility._prefix_torch import TorchLeastSquaresPrefixes
from skdvl.utility._prefix_walk import PrefixWalk, walk_reason
from tests.test_prefix_walk import assert_same_bits_alone_and_with_others

torch = pytest.importorskip("torch")

MODELS = [Ridge(alpha=0.5), LinearRegression(), Ridge(alpha=2.0, fit_intercept=False),
          LinearRegression(fit_intercept=False), make_pipeline(StandardScaler(), Ridge()),
          make_pipeline(StandardScaler(), LinearRegression()),
          make_pipeline(StandardScaler(with_std=False), Ridge()),
          make_pipeline(StandardScaler(with_mean=False), LinearRegression())]
IDS = ["ridge", "ols", "ridge-no-intercept", "ols-no-intercept", "scaler-ridge",
       "scaler-ols", "centring-ridge", "scaling-ols"]


@pytest.fixture
def rng():
    return np.random.default_rng(11)


def _params(fit, r):
    return np.r_[fit.coef[r].ravel(), fit.intercept[r]]


def _rel(a, b):
    return np.abs(a - b).max() / max(1.0, np.abs(b).max())


def _walks(est, X, y, rng, W=3, bases=None):
    """Walk W random orders to the end on torch (CPU) and in numpy; compare each
    prefix of the torch walk with the cold batched fit of its mask and with the
    numpy walk. Returns the worst relative differences (torch to cold, torch to
    numpy, numpy to cold) and the number of prefixes compared."""
    n = X.shape[0]
    bases = np.zeros((W, n), bool) if bases is None else bases
    orders = [rng.permutation(np.flatnonzero(~bases[r])) for r in range(W)]
    cold_plan = plan_batched(est)
    on_torch = PrefixWalk(plan_batched(est, device="cpu"), X, y, bases, orders)
    in_numpy = PrefixWalk(cold_plan, X, y, bases, orders)
    assert isinstance(on_torch.fits, TorchLeastSquaresPrefixes)
    to_cold = to_numpy = numpy_to_cold = 0.0
    compared = 0
    for _ in range(min(len(o) for o in orders)):
        got = on_torch.step(np.arange(W))
        ref = in_numpy.step(np.arange(W))
        masks = np.stack([on_torch.mask(r) for r in range(W)])
        cold = cold_plan.fit(X, y, masks)
        np.testing.assert_array_equal(got.n_samples, masks.sum(axis=1))
        np.testing.assert_array_equal(got.failed, ref.failed)
        for r in np.flatnonzero(~cold.failed):
            assert not got.failed[r]
            to_cold = max(to_cold, _rel(_params(got, r), _params(cold, r)))
            to_numpy = max(to_numpy, _rel(_params(got, r), _params(ref, r)))
            numpy_to_cold = max(numpy_to_cold, _rel(_params(ref, r), _params(cold, r)))
            if cold_plan.scaler is not None:
                np.testing.assert_allclose(got.scaler_mean[r], cold.scaler_mean[r],
                                           rtol=1e-12, atol=1e-12 * np.abs(X).max())
                if cold.scaler_scale is not None:
                    np.testing.assert_allclose(got.scaler_scale[r], cold.scaler_scale[r],
                                               rtol=1e-10)
            if cold.rank is not None:
                assert got.rank[r] == cold.rank[r]
            compared += 1
    return to_cold, to_numpy, numpy_to_cold, compared


def _scales(X, rng, offsets=True):
    """Features spanning 6 orders of magnitude (with offsets), one duplicated."""
    X = X * 10.0 ** rng.integers(-3, 4, X.shape[1])
    if offsets:
        X = X + rng.normal(0, 100, X.shape[1])
    return np.column_stack([X, X[:, 0]])


@pytest.fixture(scope="module")
def regression():
    return make_regression(n_samples=40, n_features=5, noise=2.0, random_state=1)


@pytest.mark.parametrize("est", MODELS, ids=IDS)
def test_torch_prefixes_equal_cold_fits_and_the_numpy_walk(est, regression, rng):
    X, y = regression
    to_cold, to_numpy, _, compared = _walks(est, X, y, rng)
    assert compared >= 100  # every prefix from one row on: the tiny ones included
    assert to_cold < 1e-10 and to_numpy < 1e-10


@pytest.mark.parametrize("est", MODELS, ids=IDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_torch_prefixes_on_feature_scales_and_a_duplicated_column(est, seed, regression):
    """Scales spanning 6 orders of magnitude, offsets of 100 and a duplicated column
    (rank-deficient). With a standardising scaler the walks agree within 1e-10;
    raw features put the squared condition number into the normal equations,
    where the cold fits and the numpy walk disagree by up to ~1e-8 already: there
    the torch walk is as close to the cold fits as the numpy walk
    (within 10 times its difference), and within 1e-7."""
    X, y = regression
    rng = np.random.default_rng(seed)
    model = est[-1] if hasattr(est, "steps") else est
    if isinstance(model, LinearRegression) and not hasattr(model, "tol"):
        pytest.skip("scikit-learn < 1.7 cuts singular values at max(n, d) eps, below the "
                    "round-off of the normal equations: the rank of a prefix with a "
                    "duplicated column is then decided by round-off, and walked and cold "
                    "fits (numpy's walk too) can keep different ranks")
    standardised = hasattr(est, "steps") and est[0].with_std
    # without intercept the offsets alone are ill-conditioned (~1e10): scales only
    Xs = _scales(X, rng, offsets=model.fit_intercept)
    to_cold, to_numpy, numpy_to_cold, _ = _walks(est, Xs, y, rng)
    assert to_cold < 10 * numpy_to_cold + 1e-10 and to_cold < 1e-7
    assert to_numpy < 10 * numpy_to_cold + 1e-10
    if standardised:
        assert to_numpy < 1e-10 and to_cold < 1e-9


@pytest.mark.parametrize("est", [Ridge(alpha=2.0, fit_intercept=False),
                                 LinearRegression(fit_intercept=False)],
                         ids=["ridge-no-intercept", "ols-no-intercept"])
def test_ill_conditioned_torch_prefixes_are_as_close_as_the_numpy_walk(est, regression):
    """Offsets of 100 on features of scale 1e-3 without intercept (the offsets act
    as a badly scaled intercept column): the torch walk is as close to the cold fits
    as the numpy walk is."""
    X, y = regression
    Xs = _scales(X, np.random.default_rng(0))
    to_cold, _, numpy_to_cold, _ = _walks(est, Xs, y, np.random.default_rng(2))
    assert to_cold < 4 * numpy_to_cold + 1e-12
    assert to_cold < 1e-7


def test_collinear_and_constant_prefixes(rng):
    """Rows that repeat four points (every prefix spans at most a 3-dimensional
    affine subspace), a constant column, and a column that copies another: the
    rank-deficient prefixes go to the cold solve from their rows."""
    base = rng.normal(size=(4, 3))
    X = base[rng.integers(0, 4, 30)]
    X = np.column_stack([X, np.full(30, 7.0), 2.0 * X[:, 1]])
    y = X @ np.array([1.0, -2.0, 0.5, 0.0, 1.0]) + rng.normal(0, 0.1, 30)
    for est in (LinearRegression(), Ridge(alpha=0.1),
                make_pipeline(StandardScaler(), LinearRegression()),
                make_pipeline(StandardScaler(), Ridge())):
        to_cold, to_numpy, _, compared = _walks(est, X, y, rng)
        assert compared >= 80
        assert to_cold < 1e-10 and to_numpy < 1e-10, est


def test_walks_from_bases(regression, rng):
    X, y = regression
    bases = np.zeros((4, 40), bool)
    bases[0, :10] = bases[1, 20:23] = bases[2, [0, 39]] = True  # walk 3 starts empty
    for est in (Ridge(), make_pipeline(StandardScaler(), LinearRegression())):
        to_cold, to_numpy, _, compared = _walks(est, X, y, rng, W=4, bases=bases)
        assert compared > 100 and to_cold < 1e-10 and to_numpy < 1e-10


def test_a_torch_walk_has_the_same_bits_alone_and_with_others(regression, rng):
    X, y = regression
    plan = plan_batched(make_pipeline(StandardScaler(), LinearRegression()), device="cpu")
    assert_same_bits_alone_and_with_others(plan, X, y, rng)


def test_walk_reasons_on_a_device():
    y2 = np.array([0, 1] * 5)
    for est in (Ridge(), LinearRegression(), make_pipeline(StandardScaler(), Ridge())):
        assert walk_reason(plan_batched(est, device="cpu"), y2 * 1.0) == ""
    assert walk_reason(plan_batched(LogisticRegression(), device="cpu"), y2) == ""
    reason = walk_reason(plan_batched(LogisticRegression(), device="cpu"), np.arange(9) % 3)
    assert "multinomial prefix walk runs in numpy only" in reason
    assert "cold in batch" in reason
    pipe = make_pipeline(StandardScaler(), Ridge(fit_intercept=False))
    assert "without intercept" in walk_reason(plan_batched(pipe, device="cpu"), y2 * 1.0)


@pytest.fixture(scope="module")
def small():
    X, y = make_regression(n_samples=48, n_features=3, noise=5.0, random_state=4)
    return X[:8], y[:8], X[8:], y[8:]


@pytest.mark.parametrize("est", [Ridge(), make_pipeline(StandardScaler(), LinearRegression())],
                         ids=["ridge", "scaler-ols"])
def test_exact_shapley_through_the_torch_walk_of_every_permutation(est, small):
    """Shapley values as the mean marginal over all 8! orders, each walked on torch,
    equal the exact valuer's (subsets enumerated, cold fits), on and off the device."""
    X, y, X_val, y_val = small
    n = X.shape[0]
    orders = np.array(list(itertools.permutations(range(n))))
    assert orders.shape[0] == math.factorial(n)
    u = ModelUtility(est, X, y, X_val, y_val, scoring="r2", device="cpu")
    assert u.walk_reason == ""
    walk = u.prefix_walk(np.zeros((orders.shape[0], n), bool), list(orders))
    assert isinstance(walk.walk.fits, TorchLeastSquaresPrefixes)
    prev = np.zeros(orders.shape[0])  # u(empty) = default_score = 0
    values = np.zeros(n)
    for j in range(n):
        cur = walk.step(np.arange(orders.shape[0]))
        np.add.at(values, orders[:, j], cur - prev)
        prev = cur
    values /= orders.shape[0]
    kw = dict(scoring="r2", sampler="exact")
    exact = ShapleyValuer(est, **kw).fit(X, y, X_val=X_val, y_val=y_val)
    exact_dev = ShapleyValuer(est, device="cpu", **kw).fit(X, y, X_val=X_val, y_val=y_val)
    np.testing.assert_allclose(exact_dev.values_, exact.values_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(values, exact.values_, rtol=1e-10, atol=1e-12)


@pytest.fixture(scope="module")
def sixty():
    X, y = make_regression(n_samples=120, n_features=3, noise=20.0, random_state=4)
    return X[:60], y[:60], X[60:], y[60:]


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_permutation_values_on_the_device_are_deterministic_and_equal_numpy(sixty, n_jobs):
    """60 rows, 64 permutations: walked from the engine's default threshold on (in the
    workers too). One random_state gives identical values run after run; n_jobs=1 and
    2 agree to round-off (not bitwise, on numpy as on torch: which prefixes the
    engine fits cold before walking depends on the walks per task)."""
    X, y, X_val, y_val = sixty
    est = make_pipeline(StandardScaler(), Ridge())
    kw = dict(scoring="r2", sampler="permutation", max_updates=64, random_state=3)

    def run(device, jobs):
        return ShapleyValuer(est, device=device, n_jobs=jobs, **kw).fit(
            X, y, X_val=X_val, y_val=y_val)

    ref, got, again = run(None, 1), run("cpu", n_jobs), run("cpu", n_jobs)
    assert ref.fit_path_ == "batched; permutation prefixes fitted incrementally"
    assert got.fit_path_ == ("batched in numpy (prefix walks on torch device cpu); "
                             "permutation prefixes fitted incrementally")
    np.testing.assert_array_equal(got.values_, again.values_)
    np.testing.assert_array_equal(got.counts_, ref.counts_)
    np.testing.assert_allclose(got.values_, ref.values_, rtol=1e-10,
                               atol=1e-12 * np.abs(ref.values_).max())


def test_multinomial_logistic_on_a_device_is_fitted_cold_and_says_so():
    X, y = make_regression(n_samples=45, n_features=3, random_state=0)
    labels = np.digitize(y, np.quantile(y, [1 / 3, 2 / 3]))  # three classes
    u = ModelUtility(LogisticRegression(), X[:30], labels[:30], X[30:], labels[30:],
                     device="cpu")
    assert "numpy only" in u.walk_reason
    assert u.prefix_walk(np.zeros((1, 30), bool), [np.arange(30)]) is None
    v = ShapleyValuer(LogisticRegression(), sampler="permutation", max_updates=2,
                      device="cpu", random_state=0).fit(X[:30], labels[:30], X_val=X[30:],
                                                        y_val=labels[30:])
    assert "incrementally" not in v.fit_path_


def test_skdvl_imports_and_walks_without_torch():
    """torch is imported only when a device is given: skdvl imports and walks least
    squares in numpy where torch cannot be imported."""
    code = (
        "import sys\n"
        "class NoTorch:\n"  # any import of torch fails
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('no torch here')\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "import numpy as np\n"
        "from sklearn.linear_model import Ridge\n"
        "import skdvl\n"
        "from skdvl import ModelUtility\n"
        "X = np.random.default_rng(0).normal(size=(12, 3)); y = X.sum(axis=1)\n"
        "u = ModelUtility(Ridge(), X, y, X, y)\n"
        "w = u.prefix_walk(np.zeros((1, 12), bool), [np.arange(12)])\n"
        "w.step(np.array([0]))\n"
        "assert 'torch' not in sys.modules\n"
        "try:\n"
        "    ModelUtility(Ridge(), X, y, X, y, device='cpu')\n"
        "except ImportError as exc:\n"
        "    print('refused:', exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("refused: device='cpu' runs the batched fits on torch")
