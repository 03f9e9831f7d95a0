"""Chunked influence calculators: sequential, dask and resumable zarr output."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
zarr = pytest.importorskip("zarr")
distributed = pytest.importorskip("distributed")

from skdvl.influence import (  # noqa: E402  # noqa: E402
    DaskInfluenceCalculator,
    InfluenceScorer,
    Nystroem,
    SequentialInfluenceCalculator,
    dataset_to_dask_arrays,
    to_dask_array,
)

CHUNKS = (4, 7)  # 13 test rows -> 4 test chunks; 30 training rows -> 5 training chunks
N_BLOCKS = 4 * 5


def _mlp():
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(),
                                 torch.nn.Linear(4, 2)).double()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    return module


@pytest.fixture
def data(seed):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(30, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (30,), generator=g)
    Xt = torch.randn(13, 3, generator=g, dtype=torch.float64)
    yt = torch.randint(0, 2, (13,), generator=g)
    return X.numpy(), y.numpy(), Xt.numpy(), yt.numpy()


def _fit(data, seed, **kw):
    X, y, _, _ = data
    params = {"method": "direct", "regularization": 0.1, "second_order": "gauss_newton"}
    params.update(kw)
    return InfluenceScorer(_mlp(), loss=torch.nn.CrossEntropyLoss(), random_state=seed,
                           **params).fit(X, y)


@pytest.fixture
def scorer(data, seed):
    return _fit(data, seed)


def _local_client(processes, threads_per_worker=1):
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=threads_per_worker,
                                       processes=processes, dashboard_address=":0")
    return cluster, distributed.Client(cluster)


@pytest.fixture(scope="module")
def client():
    # Workers in this process (processes=False) start in a second; worker processes need
    # 20-30 s here to start and import torch, so they are tested once, under 'slow'.
    cluster, c = _local_client(processes=False)
    with cluster, c:
        yield c


def test_sequential_dask_and_in_memory_agree(scorer, data, client):
    _, _, Xt, yt = data
    expected = scorer.influences(Xt, yt)
    seq = SequentialInfluenceCalculator(scorer, CHUNKS).influences(Xt, yt)
    lazy = DaskInfluenceCalculator(scorer, CHUNKS, client=client).influences(Xt, yt)
    assert isinstance(lazy, da.Array)
    assert lazy.chunks == ((4, 4, 4, 1), (7, 7, 7, 7, 2))
    np.testing.assert_allclose(seq, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(lazy.compute(), expected, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_dask_with_worker_processes_agrees(scorer, data, tmp_path):
    # The scorer is pickled (cloudpickle) to two single-threaded worker processes.
    # Each worker rebuilds the solver's cached first-order passes: the bits still agree.
    _, _, Xt, yt = data
    expected = scorer.influences(Xt, yt)
    sequential = SequentialInfluenceCalculator(scorer, CHUNKS).influences(Xt, yt)
    cluster, c = _local_client(processes=True)
    with cluster, c:
        calc = DaskInfluenceCalculator(scorer, CHUNKS, client=c)
        lazy = calc.influences(Xt, yt).compute()
        written = calc.influences(Xt, yt, out=tmp_path / "out.zarr")
    np.testing.assert_allclose(lazy, expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(lazy, sequential)
    np.testing.assert_array_equal(written[...], sequential)


def test_perturbation_mode_and_explicit_training_rows_agree(scorer, data):
    X, y, Xt, yt = data
    expected = scorer.influences(Xt[:5], yt[:5], X[:9], y[:9], mode="perturbation")
    seq = SequentialInfluenceCalculator(scorer, (2, 4)).influences(
        Xt[:5], yt[:5], X[:9], y[:9], mode="perturbation")
    lazy = DaskInfluenceCalculator(scorer, (2, 4)).influences(
        Xt[:5], yt[:5], X[:9], y[:9], mode="perturbation")
    assert lazy.shape == expected.shape == (5, 9, 3)
    np.testing.assert_allclose(seq, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(lazy.compute(scheduler="sync"), expected, rtol=0, atol=1e-6)


def test_frames_datasets_and_dask_arrays_give_the_same_influences(scorer, data):
    pd = pytest.importorskip("pandas")
    _, _, Xt, yt = data
    expected = scorer.influences(Xt, yt)
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(Xt), torch.from_numpy(yt))
    Xd, yd = dataset_to_dask_arrays(dataset, chunk_size=5)
    assert Xd.chunks == ((5, 5, 3), (3,)) and yd.chunks == ((5, 5, 3),)
    inputs = [(pd.DataFrame(Xt), pd.Series(yt)), (dataset, None),
              (to_dask_array(Xt, 6), to_dask_array(yt, 6))]
    for X_test, y_test in inputs:
        for calc in (SequentialInfluenceCalculator(scorer, CHUNKS),
                     DaskInfluenceCalculator(scorer, CHUNKS)):
            got = calc.influences(X_test, y_test)
            got = got.compute(scheduler="sync") if isinstance(got, da.Array) else got
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


class _CountingScorer(InfluenceScorer):
    """Counts factor computations in this process (used with in-process schedulers)."""

    n_factor_calls = 0

    def influence_factors(self, X_test, y_test=None):
        type(self).n_factor_calls += 1
        return super().influence_factors(X_test, y_test)


def test_factors_computed_once_per_test_chunk(data, seed):
    X, y, Xt, yt = data
    scorer = _CountingScorer(_mlp(), loss=torch.nn.CrossEntropyLoss(), method="direct",
                             regularization=0.1, second_order="gauss_newton").fit(X, y)
    _CountingScorer.n_factor_calls = 0
    SequentialInfluenceCalculator(scorer, CHUNKS).influences(Xt, yt)
    assert _CountingScorer.n_factor_calls == 4
    _CountingScorer.n_factor_calls = 0
    DaskInfluenceCalculator(scorer, CHUNKS).influences(Xt, yt).compute(scheduler="sync")
    assert _CountingScorer.n_factor_calls == 4  # the dtype comes from the parameters


def test_zarr_round_trip(scorer, data, client, tmp_path):
    _, _, Xt, yt = data
    expected = scorer.influences(Xt, yt)
    seq = SequentialInfluenceCalculator(scorer, CHUNKS)
    written = seq.influences(Xt, yt, out=tmp_path / "seq.zarr")
    assert (seq.n_blocks_written_, seq.n_blocks_skipped_) == (N_BLOCKS, 0)
    calc = DaskInfluenceCalculator(scorer, CHUNKS, client=client)
    calc.influences(Xt, yt, out=str(tmp_path / "dask.zarr"))
    assert calc.n_blocks_written_ == N_BLOCKS
    for name in ("seq.zarr", "dask.zarr"):
        arr = zarr.open_group(str(tmp_path / name), mode="r")["influences"]
        assert arr.chunks == CHUNKS and arr.dtype == np.float64
        np.testing.assert_allclose(arr[...], expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(written[...], expected, rtol=0, atol=1e-6)
    store = zarr.storage.MemoryStore()
    SequentialInfluenceCalculator(scorer, CHUNKS).influences(Xt, yt, out=store)
    np.testing.assert_allclose(zarr.open_group(store)["influences"][...], expected, atol=1e-6)


def _fail_on_call(monkeypatch, scorer, k):
    """Make the k-th block computation of ``scorer`` raise; return the call counter."""
    calls = {"n": 0}
    original = scorer.influences_from_factors

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == k:
            raise RuntimeError("simulated crash")
        return original(*args, **kwargs)

    monkeypatch.setattr(scorer, "influences_from_factors", flaky)
    return calls


@pytest.mark.parametrize("backend", ["sequential", "dask"])
def test_interrupted_write_resumes_and_matches(scorer, data, tmp_path, monkeypatch, backend):
    _, _, Xt, yt = data
    path = tmp_path / "out.zarr"
    make = {"sequential": lambda: SequentialInfluenceCalculator(scorer, CHUNKS),
            "dask": lambda: DaskInfluenceCalculator(scorer, CHUNKS)}[backend]
    with dask.config.set(scheduler="sync"):
        calls = _fail_on_call(monkeypatch, scorer, k=8)
        with pytest.raises(RuntimeError, match="simulated crash"):
            make().influences(Xt, yt, out=path)
        n_done = int(zarr.open_group(str(path))["done"][...].sum())
        assert n_done == 7  # blocks 1-7 were written before the 8th failed
        monkeypatch.undo()
        calls = _fail_on_call(monkeypatch, scorer, k=-1)  # count only
        calc = make()
        result = calc.influences(Xt, yt, out=path)
    assert calls["n"] == N_BLOCKS - n_done
    assert (calc.n_blocks_written_, calc.n_blocks_skipped_) == (N_BLOCKS - n_done, n_done)
    uninterrupted = SequentialInfluenceCalculator(scorer, CHUNKS).influences(Xt, yt)
    np.testing.assert_array_equal(result[...], uninterrupted)


def test_block_without_done_marker_is_recomputed(scorer, data, tmp_path):
    # A crash between writing a block and its marker leaves the marker at 0.
    _, _, Xt, yt = data
    path = str(tmp_path / "out.zarr")
    calc = SequentialInfluenceCalculator(scorer, CHUNKS)
    expected = calc.influences(Xt, yt, out=path)[...]
    group = zarr.open_group(path)
    group["influences"][4:8, 7:14] = -1.0
    group["done"][1, 1] = 0
    result = calc.influences(Xt, yt, out=path)
    assert (calc.n_blocks_written_, calc.n_blocks_skipped_) == (1, N_BLOCKS - 1)
    np.testing.assert_array_equal(result[...], expected)


def test_resume_with_other_arguments_is_refused(scorer, data, seed, tmp_path):
    X, y, Xt, yt = data
    path = tmp_path / "out.zarr"
    SequentialInfluenceCalculator(scorer, CHUNKS).influences(Xt, yt, out=path)
    other = _fit(data, seed, regularization=0.2)
    with pytest.raises(ValueError, match="regularization: stored 0.1, now 0.2"):
        SequentialInfluenceCalculator(other, CHUNKS).influences(Xt, yt, out=path)
    with pytest.raises(ValueError, match="mode: stored 'up', now 'perturbation'"):
        DaskInfluenceCalculator(scorer, CHUNKS).influences(Xt, yt, mode="perturbation",
                                                            out=path)
    with pytest.raises(ValueError, match=r"chunks: stored \[4, 7\], now \[4, 8\]"):
        SequentialInfluenceCalculator(scorer, (4, 8)).influences(Xt, yt, out=path)
    Xt2 = Xt.copy()
    Xt2[3, 1] += 1e-3
    with pytest.raises(ValueError, match="test: stored"):
        SequentialInfluenceCalculator(scorer, CHUNKS).influences(Xt2, yt, out=path)
    refit = _fit((X[::-1].copy(), y[::-1].copy(), Xt, yt), seed)  # same rows, other order
    with pytest.raises(ValueError, match="train: stored"):
        SequentialInfluenceCalculator(refit, CHUNKS).influences(Xt, yt, out=path)


def test_randomised_solver_refit_with_another_seed_is_refused(data, seed, tmp_path):
    _, _, Xt, yt = data
    path = tmp_path / "out.zarr"
    kw = {"method": Nystroem(rank=5)}
    SequentialInfluenceCalculator(_fit(data, None, **kw), CHUNKS).influences(Xt, yt, out=path)
    with pytest.raises(ValueError, match="fitted solver"):
        SequentialInfluenceCalculator(_fit(data, None, **kw), CHUNKS).influences(
            Xt, yt, out=path)


def test_foreign_zarr_group_is_refused(scorer, data, tmp_path):
    _, _, Xt, yt = data
    group = zarr.open_group(str(tmp_path / "other.zarr"), mode="w")
    group.create_array("something", shape=(2,), dtype="f8")
    with pytest.raises(ValueError, match="no skdvl influence record"):
        SequentialInfluenceCalculator(scorer, CHUNKS).influences(Xt, yt, out=group)


def test_client_with_multithreaded_workers_is_refused(scorer, data):
    _, _, Xt, yt = data
    cluster, client = _local_client(processes=False, threads_per_worker=2)
    with cluster, client:
        calc = DaskInfluenceCalculator(scorer, CHUNKS, client=client)
        with pytest.raises(ValueError, match="one thread each.*threads_per_worker=1"):
            calc.influences(Xt, yt)


def test_threaded_scheduler_is_safe(scorer, data):
    # Without a client, dask's threaded scheduler runs blocks concurrently; the per-scorer
    # lock keeps the shared module from being used by two threads at once.
    _, _, Xt, yt = data
    got = DaskInfluenceCalculator(scorer, (2, 6)).influences(Xt, yt).compute(
        scheduler="threads", num_workers=4)
    np.testing.assert_allclose(got, scorer.influences(Xt, yt), rtol=0, atol=1e-6)


@pytest.mark.parametrize("chunk_size", [0, (4,), (4, 0), 2.5, "10"])
def test_bad_chunk_size_is_refused(scorer, data, chunk_size):
    _, _, Xt, yt = data
    with pytest.raises(ValueError, match="chunk_size"):
        SequentialInfluenceCalculator(scorer, chunk_size).influences(Xt, yt)


def test_scorer_parameters_route_to_the_calculators(data, seed, client, tmp_path):
    _, _, Xt, yt = data
    expected = _fit(data, seed).influences(Xt, yt)
    lazy = _fit(data, seed, backend="dask", chunk_size=CHUNKS, client=client).influences(Xt, yt)
    assert isinstance(lazy, da.Array) and lazy.chunksize == CHUNKS
    np.testing.assert_allclose(lazy.compute(), expected, rtol=0, atol=1e-6)
    chunked = _fit(data, seed, chunk_size=CHUNKS)
    written = chunked.influences(Xt, yt, out=tmp_path / "s.zarr")
    np.testing.assert_allclose(written[...], expected, rtol=0, atol=1e-6)
    again = chunked.influences(Xt, yt, out=tmp_path / "s.zarr")  # resumes: nothing to do
    np.testing.assert_allclose(again[...], expected, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="The 'backend' parameter of InfluenceScorer"):
        _fit(data, seed, backend="ray")
