"""KNN valuers give the same bits on every joblib backend (threads, processes, dask)."""

import numpy as np
import pytest
from joblib import parallel_config

from skdvl import KNNShapley, ThresholdKNNShapley


@pytest.fixture
def data():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(300, 4))
    y = (X[:, 0] + 0.5 * rng.normal(size=300) > 0).astype(int)
    return X[:200], y[:200], X[200:], y[200:]


VALUERS = [
    lambda: KNNShapley(n_neighbors=5, n_jobs=2),
    lambda: KNNShapley(n_neighbors=5, knn_utility="soft_label", n_jobs=2),
    lambda: ThresholdKNNShapley(radius=1.0, n_jobs=2),
]


@pytest.mark.parametrize("make", VALUERS)
def test_loky_processes_give_the_bits_of_one_job(make, data):
    X, y, Xv, yv = data
    one = make().set_params(n_jobs=1).fit(X, y, X_val=Xv, y_val=yv).values_
    with parallel_config(backend="loky"):
        two = make().fit(X, y, X_val=Xv, y_val=yv).values_
    np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("make", VALUERS)
def test_dask_backend_gives_the_bits_of_one_job(make, data):
    distributed = pytest.importorskip("dask.distributed")
    X, y, Xv, yv = data
    one = make().set_params(n_jobs=1).fit(X, y, X_val=Xv, y_val=yv).values_
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2,
                            dashboard_address=None):
        with parallel_config(backend="dask"):
            two = make().fit(X, y, X_val=Xv, y_val=yv).values_
    np.testing.assert_array_equal(one, two)
