"""The gradient store: zarr-backed projected gradients equal the in-memory ones, resume
bitwise after an interruption, refuse mismatched runs, and answer queries when reopened
without the training data."""

import numpy as np
import pytest
import torch

pytest.importorskip("zarr")

from skdvl.influence import TRAK, InfluenceScorer  # noqa: E402
from skdvl.influence._gradient_store import GradientStore  # noqa: E402
from skdvl.influence._trak import ProjectedAttribution  # noqa: E402

CE = torch.nn.CrossEntropyLoss()


def _mlp(seed, scale=0.5):
    module = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.Tanh(),
                                 torch.nn.Linear(6, 3)).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


@pytest.fixture
def data(seed):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(30, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (30,), generator=g)
    return _mlp(seed), X, y


def _est(module, **kw):
    params = dict(loss=CE, proj_dim=16, chunk_size=7, random_state=0)
    params.update(kw)
    return ProjectedAttribution(module, **params)


# (method, proj_dim, models): k=16 < n=30 (kernel space), k=64 > n (Gram space),
# several models, TracIn and cosine
CASES = [("trak", 16, 1), ("trak", 64, 1), ("trak", 16, 2), ("tracin", 16, 2),
         ("grad_cos", 16, 1), ("grad_dot", None, 1)]


def _models(seed, n):
    return None if n == 1 else [_mlp(seed + i).state_dict() for i in range(n)]


@pytest.mark.parametrize(("method", "proj_dim", "n_models"), CASES)
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_store_backed_results_equal_in_memory_results(data, tmp_path, seed, method,
                                                      proj_dim, n_models, dtype):
    module, X, y = data
    kw = dict(method=method, proj_dim=proj_dim, dtype=dtype, models=_models(seed, n_models))
    memory = _est(module, **kw).fit(X, y)
    disk = _est(module, store=tmp_path / "g.zarr", **kw).fit(X, y)
    np.testing.assert_array_equal(np.asarray(disk.features_), memory.features_.numpy())
    assert np.asarray(disk.features_).dtype == np.dtype(dtype)
    np.testing.assert_array_equal(disk.influences(X[:6], y[:6]), memory.influences(X[:6], y[:6]))
    np.testing.assert_array_equal(disk.self_influences(), memory.self_influences())


@pytest.mark.parametrize(("method", "proj_dim", "n_models"), CASES)
def test_self_influences_are_the_diagonal_of_the_scores(data, seed, method, proj_dim,
                                                        n_models):
    module, X, y = data
    est = _est(module, method=method, proj_dim=proj_dim,
               models=_models(seed, n_models)).fit(X, y)
    np.testing.assert_allclose(est.self_influences(), np.diag(est.influences(X, y)),
                               rtol=1e-10, atol=1e-12)


def test_chunk_size_does_not_change_the_scores(data):
    module, X, y = data
    a = _est(module, chunk_size=4).fit(X, y).influences(X[:5], y[:5])
    b = _est(module, chunk_size=1000).fit(X, y).influences(X[:5], y[:5])
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)


class _Interrupt(KeyboardInterrupt):
    pass


def _interrupt_after(monkeypatch, n_writes, *, before_mark=False):
    """Make the n-th GradientStore.write (and the later ones) raise, as a killed run."""
    real = GradientStore.write
    calls = {"n": 0}

    def write(self, m, c, features, q):
        calls["n"] += 1
        if calls["n"] > n_writes:
            if before_mark:  # the chunk's data lands, its done mark does not
                sl = self.bounds[c]
                self.features[m, sl.start:sl.stop] = np.full(
                    (sl.stop - sl.start, self.proj_dim), 7.0)
            raise _Interrupt
        real(self, m, c, features, q)

    monkeypatch.setattr(GradientStore, "write", write)


@pytest.mark.parametrize("before_mark", [False, True])
def test_resume_after_an_interruption_gives_identical_arrays(data, tmp_path, monkeypatch,
                                                             seed, before_mark):
    module, X, y = data
    kw = dict(models=_models(seed, 2), dtype="float32")
    whole = _est(module, store=tmp_path / "whole.zarr", **kw).fit(X, y)
    n_chunks = 2 * 5  # 2 models, 30 rows in chunks of 7
    assert whole.n_chunks_written_ == n_chunks
    path = tmp_path / "cut.zarr"
    _interrupt_after(monkeypatch, 3, before_mark=before_mark)
    with pytest.raises(_Interrupt):
        _est(module, store=path, **kw).fit(X, y)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="unfinished"):
        _est(module, store=path, **kw).fit()  # reopened before it was finished
    resumed = _est(module, store=path, **kw).fit(X, y)
    assert resumed.n_chunks_written_ == n_chunks - 3
    for name in ("features", "q"):
        np.testing.assert_array_equal(np.asarray(resumed.store_.group[name]),
                                      np.asarray(whole.store_.group[name]))
    np.testing.assert_array_equal(resumed.influences(X[:5], y[:5]), whole.influences(X[:5], y[:5]))
    again = _est(module, store=path, **kw).fit(X, y)  # a finished store: nothing to do
    assert again.n_chunks_written_ == 0


def test_interrupted_kernel_stage_is_redone(data, tmp_path, monkeypatch):
    module, X, y = data
    path = tmp_path / "g.zarr"

    def fail(self, states):
        raise _Interrupt

    monkeypatch.setattr(GradientStore, "save_kernels", fail)
    with pytest.raises(_Interrupt):
        _est(module, store=path).fit(X, y)
    monkeypatch.undo()
    resumed = _est(module, store=path).fit(X, y)
    assert resumed.n_chunks_written_ == 0
    np.testing.assert_array_equal(resumed.influences(X[:4], y[:4]),
                                  _est(module).fit(X, y).influences(X[:4], y[:4]))


@pytest.mark.parametrize(("change", "what"), [
    (dict(proj_dim=24), "proj_dim: stored 16, now 24"),
    (dict(random_state=1), "seeds"),
    (dict(dtype="float16"), "dtype"),
    (dict(method="grad_dot"), "method: stored 'trak', now 'grad_dot'"),
    (dict(regularization=0.5), "regularization"),
    (dict(kernel="gauss_newton"), "kernel: stored 'outputs', now 'gauss_newton'"),
])
def test_a_store_made_with_other_parameters_is_refused(data, tmp_path, change, what):
    module, X, y = data
    path = tmp_path / "g.zarr"
    _est(module, store=path, dtype="float32").fit(X, y)
    kw = {"dtype": "float32", **change}
    with pytest.raises(ValueError, match=f"cannot be reused; what differs: .*{what}"):
        _est(module, store=path, **kw).fit(X, y)
    with pytest.raises(ValueError, match="cannot be reused"):
        _est(module, store=path, **kw).fit()  # reopening is refused alike


def test_a_store_of_another_model_or_data_is_refused(data, tmp_path, seed):
    module, X, y = data
    path = tmp_path / "g.zarr"
    _est(module, store=path).fit(X, y)
    other = _mlp(seed)
    with torch.no_grad():
        other[0].weight[0, 0] += 1e-6
    with pytest.raises(ValueError, match="what differs: models"):
        _est(other, store=path).fit(X, y)
    with pytest.raises(ValueError, match="what differs: X: stored"):
        _est(module, store=path).fit(X + 1e-9, y)
    with pytest.raises(ValueError, match="what differs: .*n_rows: stored 30, now 29"):
        _est(module, store=path).fit(X[:29], y[:29])


def test_store_paths_that_are_not_gradient_stores_are_refused(data, tmp_path):
    module, X, y = data
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="'store' parameter .* is an existing file"):
        _est(module, store=tmp_path / "file").fit(X, y)
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "a").write_text("x")
    with pytest.raises(ValueError, match="neither empty nor a gradient store"):
        _est(module, store=tmp_path / "dir").fit(X, y)
    with pytest.raises(ValueError, match="holds no gradient store; call fit"):
        _est(module, store=tmp_path / "new.zarr").fit()
    with pytest.raises(ValueError, match="'store' parameter of ProjectedAttribution is None"):
        _est(module).fit()


def test_a_reopened_store_answers_queries_without_the_training_data(data, tmp_path):
    pd = pytest.importorskip("pandas")
    module, X, y = data
    path = tmp_path / "g.zarr"
    frame = pd.DataFrame(X.numpy(), index=[f"r{i}" for i in range(30)])
    fitted = _est(module, store=path).fit(frame, y.numpy())
    expected = fitted.influences(X[:4], y[:4])
    reopened = _est(module, store=path).fit()
    assert not hasattr(reopened, "X_fit_") and reopened.n_chunks_written_ == 0
    got = reopened.influences(X[:4], y[:4])
    pd.testing.assert_frame_equal(got, expected)
    assert list(got.columns[:2]) == ["r0", "r1"]
    # random_state=None adopts the store's seeds
    np.testing.assert_array_equal(_est(module, store=path, random_state=None).fit()
                                  .influences(X[:4], y[:4]).to_numpy(), expected.to_numpy())
    with pytest.raises(ValueError, match=r"X_test has rows of shape \(4,\)"):
        reopened.influences(X[:2, :4], y[:2])
    # and through InfluenceScorer
    scorer = InfluenceScorer(module, loss=CE, method=TRAK(proj_dim=16, store=path),
                             chunk_size=7, random_state=0).fit()
    np.testing.assert_array_equal(scorer.influences(X[:4], y[:4]).to_numpy(),
                                  expected.to_numpy())


def test_out_writes_the_scores_to_zarr_and_resumes(data, tmp_path):
    module, X, y = data
    est = _est(module, store=tmp_path / "g.zarr").fit(X, y)
    expected = est.influences(X[:10], y[:10])
    written = est.influences(X[:10], y[:10], out=tmp_path / "scores.zarr")
    # test rows in chunks of 7: products of other shapes, equal to rounding
    np.testing.assert_allclose(np.asarray(written), expected, rtol=1e-12, atol=1e-15)
    assert est.n_blocks_written_ == 2 * 5
    est.influences(X[:10], y[:10], out=tmp_path / "scores.zarr")
    assert est.n_blocks_written_ == 0
    with pytest.raises(ValueError, match="holds influences of another run"):
        est.influences(X[1:11], y[1:11], out=tmp_path / "scores.zarr")


def test_a_fit_killed_while_creating_the_store_resumes(data, tmp_path, monkeypatch):
    module, X, y = data
    path = tmp_path / "g.zarr"

    def fail(cls, group, record):
        raise _Interrupt

    monkeypatch.setattr(GradientStore, "_from_group", classmethod(fail))
    with pytest.raises(_Interrupt):
        _est(module, store=path).fit(X, y)  # the record is written, no array yet
    monkeypatch.undo()
    np.testing.assert_array_equal(_est(module, store=path).fit(X, y).influences(X[:3], y[:3]),
                                  _est(module).fit(X, y).influences(X[:3], y[:3]))
