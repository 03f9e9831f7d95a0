"""The dask calculator gives the same bits as the sequential one, for every method.

The caller runs torch on 2 threads here (the default on a 2-core machine), while dask
workers run one: before the calculators pinned the threads of every block, float32
products ``factors @ gradients.T`` of MKL on 2 threads differed from the 1-thread ones in
the last bits (relative 4e-7 on a digits MLP), so these comparisons failed. The model has
1,283 parameters: with fewer (643), MKL rounds the same on 1 and 2 threads.
"""

import threading
import time
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("dask")
zarr = pytest.importorskip("zarr")
distributed = pytest.importorskip("distributed")

from skdvl.influence import (  # noqa: E402
    DaskInfluenceCalculator,
    InfluenceScorer,
    SequentialInfluenceCalculator,
    _dask_calculator,  # noqa: E402
)

CHUNKS = (10, 32)  # 20 test rows -> 2 test chunks; 80 training rows -> 3 training chunks
METHODS = ["direct", "cg", "lissa", "arnoldi", "ekfac", "nystroem", "datainf"]
OPTIONS = {"maxiter": 10, "rank": 8}  # few iterations: bits, not accuracy, are compared


@pytest.fixture
def two_torch_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(7)
    X = torch.randn(100, 16, generator=g)
    y = torch.randint(0, 3, (100,), generator=g)
    return X[:80].numpy(), y[:80].numpy(), X[80:].numpy(), y[80:].numpy()


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                       dashboard_address=":0")
    c = distributed.Client(cluster)
    with cluster, c:
        yield c


def _fit(data, method):
    X, y, _, _ = data
    g = torch.Generator().manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Tanh(),
                                 torch.nn.Linear(64, 3))
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return InfluenceScorer(module, loss=torch.nn.CrossEntropyLoss(), method=method,
                               regularization=0.1, compute_values=False,
                               random_state=0).fit(X, y)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("method", METHODS)
def test_dask_and_sequential_give_the_same_bits(data, client, method, method_of, tmp_path,
                                                two_torch_threads):
    X, y, Xt, yt = data
    scorer = _fit(data, method_of(method, **OPTIONS))
    for mode, train in (("up", ()), ("perturbation", (X[:24], y[:24]))):
        seq = SequentialInfluenceCalculator(scorer, CHUNKS).influences(Xt, yt, *train,
                                                                       mode=mode)
        dask_calc = DaskInfluenceCalculator(scorer, CHUNKS, client=client)
        lazy = dask_calc.influences(Xt, yt, *train, mode=mode).compute()
        written = dask_calc.influences(Xt, yt, *train, mode=mode,
                                       out=tmp_path / f"dask-{mode}.zarr")[...]
        seq_written = SequentialInfluenceCalculator(scorer, CHUNKS).influences(
            Xt, yt, *train, mode=mode, out=tmp_path / f"seq-{mode}.zarr")[...]
        assert seq.dtype == np.float32
        assert np.array_equal(seq, lazy), (mode, np.abs(seq - lazy).max())
        assert np.array_equal(seq, written), (mode, np.abs(seq - written).max())
        assert np.array_equal(seq, seq_written), mode
    assert torch.get_num_threads() == 2  # the caller's setting is restored


def test_threaded_scheduler_gives_the_same_bits(data, two_torch_threads):
    _, _, Xt, yt = data
    scorer = _fit(data, "direct")
    seq = SequentialInfluenceCalculator(scorer, CHUNKS).influences(Xt, yt)
    lazy = DaskInfluenceCalculator(scorer, CHUNKS).influences(Xt, yt)
    assert np.array_equal(seq, lazy.compute(scheduler="threads", num_workers=2))
    assert np.array_equal(seq, lazy.compute(scheduler="sync"))


def test_same_n_threads_gives_the_same_bits(data, client, two_torch_threads):
    _, _, Xt, yt = data
    scorer = _fit(data, "direct")
    seq = SequentialInfluenceCalculator(scorer, CHUNKS, n_threads=2).influences(Xt, yt)
    lazy = DaskInfluenceCalculator(scorer, CHUNKS, n_threads=2).influences(Xt, yt)
    assert np.array_equal(seq, lazy.compute(scheduler="sync"))


def test_scorer_is_scattered_once_per_fitted_state(data, client, monkeypatch):
    _, _, Xt, yt = data
    scorer = _fit(data, "ekfac")
    calls = []
    scatter = client.scatter
    monkeypatch.setattr(client, "scatter", lambda *a, **k: calls.append(1) or scatter(*a, **k))
    first = DaskInfluenceCalculator(scorer, CHUNKS, client=client).influences(Xt, yt).compute()
    again = DaskInfluenceCalculator(scorer, CHUNKS, client=client).influences(Xt, yt).compute()
    assert len(calls) == 1 and np.array_equal(first, again)
    scorer.set_params(batch_size=7)  # read by the tasks: the workers need the new one
    DaskInfluenceCalculator(scorer, CHUNKS, client=client).influences(Xt, yt).compute()
    assert len(calls) == 2
    scorer.fit(data[0], data[1])  # a refit: a new solver
    DaskInfluenceCalculator(scorer, CHUNKS, client=client).influences(Xt, yt).compute()
    assert len(calls) == 3
    assert len(_dask_calculator._SHIPPED[scorer]) == 1  # one entry per client


@pytest.mark.parametrize("calc", [SequentialInfluenceCalculator, DaskInfluenceCalculator])
@pytest.mark.parametrize("n_threads", [0, 1.5, "2"])
def test_bad_n_threads_is_refused(data, calc, n_threads):
    _, _, Xt, yt = data
    scorer = _fit(data, "direct")
    match = f"The 'n_threads' parameter of {calc.__name__} must be an int >= 1"
    with pytest.raises(ValueError, match=match):
        calc(scorer, CHUNKS, n_threads=n_threads).influences(Xt, yt)


def test_tasks_of_one_process_run_alone_on_their_own_thread_count(two_torch_threads):
    # torch's thread setting is partly shared by the threads of a process, so a task
    # running while another one sets another count could change its bits.
    from skdvl.influence._calculators import _torch_task

    inside, seen = threading.Event(), []

    def task(n):
        with _torch_task(n):
            inside.set()
            seen.append(("start", n, torch.get_num_threads()))
            time.sleep(0.1)  # time for the other thread to try to start
            seen.append(("end", n, torch.get_num_threads()))

    first = threading.Thread(target=task, args=(1,))
    first.start()
    inside.wait(10)
    second = threading.Thread(target=task, args=(3,))
    second.start()
    first.join(10)
    second.join(10)
    assert seen == [("start", 1, 1), ("end", 1, 1), ("start", 3, 3), ("end", 3, 3)]
    with _torch_task(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2  # the caller's count is restored
