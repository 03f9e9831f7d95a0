"""Option objects, pandas in and out, the user's module left alone, pickling, output paths."""

import os
import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone

from skdvl.influence import CG, Direct, InfluenceScorer, LiSSA, Nystroem

DT = torch.float64


@pytest.fixture
def problem(seed):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(30, 3, generator=g, dtype=DT)
    y = torch.randint(0, 2, (30,), generator=g)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Dropout(0.5),
                              torch.nn.Linear(4, 2)).to(DT)
    return net, X.numpy(), y.numpy()


def _scorer(net, **kw):
    return InfluenceScorer(net, loss=torch.nn.CrossEntropyLoss(), regularization=0.1, **kw)


# ------------------------------------------------------------------ option objects
def test_option_objects_have_params_and_a_readable_repr():
    assert repr(CG()) == "CG()"
    assert repr(CG(maxiter=50, preconditioner="nystroem")) == \
        "CG(maxiter=50, preconditioner='nystroem')"
    assert LiSSA(scale=2.0).get_params() == {"maxiter": 1000, "rtol": 1e-6, "scale": 2.0}
    s = InfluenceScorer(method=CG(maxiter=7))
    assert s.get_params()["method__maxiter"] == 7
    s.set_params(method__maxiter=9, method__rank=3)
    assert s.method.maxiter == 9 and s.method.rank == 3
    c = clone(s)
    assert c.method is not s.method and c.get_params()["method__maxiter"] == 9


def test_a_name_is_the_option_object_with_its_defaults(problem):
    net, X, y = problem
    by_name = _scorer(net, method="cg").fit(X, y).influences(X[:4], y[:4])
    by_object = _scorer(net, method=CG()).fit(X, y).influences(X[:4], y[:4])
    np.testing.assert_array_equal(by_name, by_object)


def test_fit_copies_the_option_object_and_grid_search_style_updates_apply(problem):
    net, X, y = problem
    options = CG(maxiter=2, rtol=1e-12)
    s = _scorer(net, method=options, compute_values=False).fit(X, y)
    assert s.method_ is not options and s.method_.get_params() == options.get_params()
    with pytest.warns(Warning, match=r"within maxiter=2 iterations"):
        s.influences(X[:3], y[:3])
    s.set_params(method__maxiter=500).fit(X, y)
    assert s.solver_.maxiter == 500 and options.maxiter == 500  # set_params sets the object
    direct = _scorer(net, method=Direct()).fit(X, y).influences(X[:3], y[:3])
    np.testing.assert_allclose(s.influences(X[:3], y[:3]), direct, rtol=1e-6, atol=1e-9)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_grid_search_over_a_method_option(problem):
    from sklearn.model_selection import GridSearchCV

    net, X, y = problem

    def mean_value(estimator, X_, y_):
        return float(np.mean(estimator.values_))

    search = GridSearchCV(_scorer(net, method=CG()), {"method__maxiter": [1, 40]},
                          scoring=mean_value, cv=2, error_score="raise")
    search.fit(X, y)
    assert [p["method__maxiter"] for p in search.cv_results_["params"]] == [1, 40]
    assert search.best_estimator_.method_.maxiter in (1, 40)


# ----------------------------------------------------------- the user's module
def test_fit_leaves_the_module_and_its_mode_alone(problem):
    net, X, y = problem
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    s = _scorer(net).fit(X, y)
    assert net.training and all(m.training for m in net.modules())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    first = s.influences(X[:3], y[:3])
    # The scorer evaluates a copy in eval mode: no dropout noise, and later changes to the
    # user's module (training on) do not reach it.
    np.testing.assert_array_equal(s.influences(X[:3], y[:3]), first)
    with torch.no_grad():
        net[0].weight.add_(1.0)
    np.testing.assert_array_equal(s.influences(X[:3], y[:3]), first)


def test_values_are_computed_in_fit(problem):
    net, X, y = problem
    s = _scorer(net, method="direct").fit(X, y)
    assert "values_" in vars(s)
    self_influence = np.diag(s.influences(X, y))
    np.testing.assert_allclose(s.values_, self_influence, rtol=1e-8)
    assert "values_" not in vars(_scorer(net, compute_values=False).fit(X, y))


# ------------------------------------------------------------------------- pandas
def test_pandas_in_gives_pandas_out_on_the_input_index(problem):
    pd = pytest.importorskip("pandas")
    net, X, y = problem
    idx = pd.Index([f"r{i}" for i in range(len(X))], name="row")
    Xf, yf = pd.DataFrame(X, index=idx), pd.Series(y, index=idx)
    s = _scorer(net, method="direct").fit(Xf, yf)
    ref = _scorer(net, method="direct").fit(X, y)
    assert isinstance(s.values_, pd.Series) and s.values_.index.equals(idx)
    np.testing.assert_allclose(s.values_.to_numpy(), ref.values_, rtol=1e-12)
    test = Xf.iloc[[5, 2, 7]]
    infl = s.influences(test, yf.iloc[[5, 2, 7]])
    assert isinstance(infl, pd.DataFrame)
    assert list(infl.index) == ["r5", "r2", "r7"] and infl.columns.equals(idx)
    np.testing.assert_allclose(infl.to_numpy(), ref.influences(X[[5, 2, 7]], y[[5, 2, 7]]),
                               rtol=1e-12)
    # numpy test rows against DataFrame training rows: columns keep the training index
    assert _scorer(net, method="direct").fit(Xf, yf).influences(X[:2], y[:2]).columns.equals(idx)
    assert isinstance(ref.influences(X[:2], y[:2]), np.ndarray)


def test_a_scorer_fitted_from_a_skorch_net_pickles(seed):
    skorch = pytest.importorskip("skorch")
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(40, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    net = skorch.NeuralNetClassifier(
        torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2)),
        criterion=torch.nn.CrossEntropyLoss, max_epochs=3, train_split=None, verbose=0,
    ).fit(X, y)
    s = InfluenceScorer(net, method=Nystroem(rank=5), random_state=0).fit(X, y)
    again = pickle.loads(pickle.dumps(s))
    np.testing.assert_array_equal(again.influences(X[:3], y[:3]), s.influences(X[:3], y[:3]))
    np.testing.assert_array_equal(again.values_, s.values_)


# ------------------------------------------------------------------- output paths
@pytest.fixture
def fitted(problem):
    zarr = pytest.importorskip("zarr")  # noqa: F841
    net, X, y = problem
    s = _scorer(net, method="direct", compute_values=False).fit(X, y)

    def no_work(*args, **kwargs):
        raise AssertionError("work was done before the output path was checked")

    return s, X, y, no_work


def test_existing_file_as_output_is_refused_before_any_work(fitted, tmp_path, monkeypatch):
    s, X, y, no_work = fitted
    path = tmp_path / "results.csv"
    path.write_text("keep me")
    monkeypatch.setattr(s, "influence_factors", no_work)
    with pytest.raises(ValueError, match=r"'out' argument .*results\.csv' is an existing file"):
        s.influences(X[:3], y[:3], out=path)
    assert path.read_text() == "keep me"


def test_foreign_directory_as_output_is_refused(fitted, tmp_path, monkeypatch):
    s, X, y, no_work = fitted
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"\xff")
    monkeypatch.setattr(s, "influence_factors", no_work)
    with pytest.raises(ValueError, match=r"is a directory that is not empty and not a zarr "
                                         r"store written by skdvl"):
        s.influences(X[:3], y[:3], out=str(tmp_path / "photos"))


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs permissions")
def test_unwritable_output_location_is_refused(fitted, tmp_path, monkeypatch):
    s, X, y, no_work = fitted
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    monkeypatch.setattr(s, "influence_factors", no_work)
    try:
        with pytest.raises(ValueError, match=r"is not writable: no write permission on"):
            s.influences(X[:3], y[:3], out=locked / "new" / "out.zarr")
    finally:
        locked.chmod(0o700)


def test_new_empty_and_own_stores_are_accepted(fitted, tmp_path):
    s, X, y, _ = fitted
    expected = s.influences(X[:3], y[:3])
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "a" / "b" / "new.zarr", tmp_path / "empty"):
        np.testing.assert_allclose(s.influences(X[:3], y[:3], out=out)[...], expected)
    again = s.influences(X[:3], y[:3], out=tmp_path / "empty")  # our own store: resumed
    np.testing.assert_allclose(again[...], expected)
