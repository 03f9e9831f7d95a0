"""The dask backend of the attribution methods: the same stored bits as a sequential fit."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("dask")
zarr = pytest.importorskip("zarr")

from skdvl.influence import TRAK, GradientSimilarity, InfluenceScorer, TracIn  # noqa: E402
from skdvl.influence._trak import ProjectedAttribution  # noqa: E402

CE = torch.nn.CrossEntropyLoss()


@pytest.fixture
def setup(seed):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(45, 6, generator=g)
    y = torch.randint(0, 3, (45,), generator=g)
    module = torch.nn.Sequential(torch.nn.Linear(6, 24), torch.nn.Tanh(),
                                 torch.nn.Linear(24, 3))
    states = []
    for _ in range(2):
        with torch.no_grad():
            for p in module.parameters():
                p.copy_(torch.randn(p.shape, generator=g) / 3)
        states.append({k: v.clone() for k, v in module.state_dict().items()})
    return module, X, y, states


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                       dashboard_address=":0")
    c = distributed.Client(cluster)
    with cluster, c:
        yield c


def _methods(states):
    return [TRAK(proj_dim=16, models=states), TRAK(proj_dim=None, models=states),
            TracIn(proj_dim=16, checkpoints=states, learning_rates=[0.1, 0.2]),
            GradientSimilarity(kind="cos", proj_dim=16, projection="factored", models=states)]


@pytest.mark.parametrize(("which", "use_client"),
                         [(0, False), (1, False), (2, False), (3, False), (0, True), (3, True)])
def test_dask_fit_stores_the_bits_of_a_sequential_fit(setup, tmp_path, which, use_client,
                                                      request):
    module, X, y, states = setup
    client = request.getfixturevalue("client") if use_client else None
    fitted = {}
    for backend in ("sequential", "dask"):
        method = _methods(states)[which].set_params(store=tmp_path / f"{backend}.zarr")
        fitted[backend] = InfluenceScorer(module, loss=CE, method=method, chunk_size=10,
                                          backend=backend, client=client, random_state=0,
                                          compute_values=False).fit(X, y)
    seq, par = (zarr.open_group(str(tmp_path / f"{b}.zarr"), mode="r")
                for b in ("sequential", "dask"))
    assert np.asarray(seq["features"]).shape[:2] == (2, 45)
    np.testing.assert_array_equal(np.asarray(par["features"]), np.asarray(seq["features"]))
    np.testing.assert_array_equal(np.asarray(par["q"]), np.asarray(seq["q"]))
    np.testing.assert_array_equal(fitted["dask"].influences(X[:7], y[:7]),
                                  fitted["sequential"].influences(X[:7], y[:7]))


def test_dask_fit_resumes_a_sequential_one(setup, tmp_path, monkeypatch):
    module, X, y, states = setup
    kw = dict(loss=CE, proj_dim=16, models=states, chunk_size=10, random_state=0)
    whole = ProjectedAttribution(module, **kw).fit(X, y)
    from skdvl.influence._gradient_store import GradientStore

    write, calls = GradientStore.write, []

    def dies_after_three(self, *args):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(args[:2])
        write(self, *args)

    monkeypatch.setattr(GradientStore, "write", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        ProjectedAttribution(module, store=tmp_path / "g.zarr", **kw).fit(X, y)
    monkeypatch.setattr(GradientStore, "write", write)
    resumed = ProjectedAttribution(module, store=tmp_path / "g.zarr", backend="dask",
                                   **kw).fit(X, y)
    assert resumed.n_chunks_written_ == 2 * 5 - 3
    np.testing.assert_array_equal(np.asarray(resumed.features_), whole.features_.numpy())
    np.testing.assert_array_equal(resumed.influences(X[:5], y[:5]),
                                  whole.influences(X[:5], y[:5]))


def test_dask_fit_with_a_multithreaded_worker_is_refused(setup):
    distributed = pytest.importorskip("distributed")
    module, X, y, states = setup
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        with pytest.raises(ValueError, match="workers with one thread each"):
            ProjectedAttribution(module, loss=CE, proj_dim=8, backend="dask",
                                 client=client).fit(X, y)
