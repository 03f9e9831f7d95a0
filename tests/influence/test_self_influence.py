"""Self-influence values_ without one solve per row: factorised quadratic forms, lazy
values_ for the iterative methods, and closed forms of linear and logistic models."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

from skdvl.influence import CG, InfluenceScorer

DT = torch.float64
FACTORISED = ["direct", "arnoldi", "nystroem", "ekfac", "datainf"]
ITERATIVE = ["cg", "lissa"]


@pytest.fixture
def mlp(seed):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(50, 3, generator=g, dtype=DT)
    y = torch.randint(0, 3, (50,), generator=g)
    net = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(),
                              torch.nn.Linear(5, 3)).to(DT)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=DT))
    return net, X, y


def _scorer(net, method, **kw):
    kw = {"loss": torch.nn.CrossEntropyLoss(), "regularization": 0.1, "random_state": 0,
          "batch_size": 16, **kw}
    return InfluenceScorer(net, method=method, **kw)


def _values_by_solves(s):
    """The old way: one solve per training row, ``-(solve(G) * G).sum(1)``."""
    G = s._grads(s.X_fit_, s.y_fit_)
    return -(s._solve(G) * G).sum(1).numpy()


def _rel_err(a, b):
    return np.abs(np.asarray(a) - b).max() / np.abs(b).max()


# ------------------------------------------------------- fast values_ = solves, per method
# ekfac is always layer-wise; datainf takes the blocks itself
@pytest.mark.parametrize(("method", "block_structure"), [
    *((m, "full") for m in FACTORISED + ITERATIVE),
    *((m, "layer") for m in FACTORISED + ITERATIVE if m not in ("ekfac", "datainf")),
])
def test_values_equal_one_solve_per_row(mlp, method, block_structure):
    net, X, y = mlp
    s = _scorer(net, method, block_structure=block_structure).fit(X, y)
    assert ("values_" in vars(s)) == (method in FACTORISED)
    assert _rel_err(s.values_, _values_by_solves(s)) < 1e-12
    assert (s.values_ < 0).all()


@pytest.mark.parametrize("method", FACTORISED)
def test_quadratic_form_is_the_diagonal_of_the_solve(mlp, method):
    net, X, y = mlp
    s = _scorer(net, method, compute_values=False).fit(X, y)
    assert s.solver_.factorised
    R = torch.randn(7, s.n_params_, generator=torch.Generator().manual_seed(1), dtype=DT)
    expected = (s.solver_.solve(R) * R).sum(1)
    torch.testing.assert_close(s.solver_.quadratic_form(R), expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("block_structure", ["full", "layer"])
def test_datainf_symmetric_chunks_equal_its_quadratic_form(mlp, block_structure):
    net, X, y = mlp
    solver = _scorer(net, "datainf", compute_values=False,
                     block_structure=block_structure).fit(X, y).solver_
    expected = solver.quadratic_form(solver.grads_)
    for chunk in (1, 7, 50, 1000):
        torch.testing.assert_close(solver.training_quadratic_form(chunk), expected,
                                   rtol=1e-12, atol=0)


@pytest.mark.parametrize("method", FACTORISED)
def test_values_do_not_depend_on_batch_size(mlp, method):
    net, X, y = mlp
    a = _scorer(net, method, batch_size=7).fit(X, y).values_
    b = _scorer(net, method, batch_size=256).fit(X, y).values_
    np.testing.assert_allclose(a, b, rtol=1e-10)


def test_float32_values_match_solves_to_float_tolerance(mlp):
    net, X, y = mlp
    net = net.float()
    for method in FACTORISED:
        s = _scorer(net, method).fit(X.float(), y)
        assert s.values_.dtype == np.float32
        assert _rel_err(s.values_, _values_by_solves(s)) < 1e-4, method


# ------------------------------------------------------------------ closed forms
def _design(X):
    return np.hstack([X, np.ones((len(X), 1))])


def test_direct_self_influence_of_linear_regression_is_the_closed_form(linreg):
    # squared loss (x~ . theta - y)^2: g_i = 2 r_i x~_i, H = 2 X~^T X~ / n
    module, X, y = linreg
    theta = np.concatenate([module.weight.detach().numpy().ravel(),
                            module.bias.detach().numpy()])
    Xd = _design(X.numpy())
    G = 2 * (Xd @ theta - y.numpy().ravel())[:, None] * Xd
    H = 2 * Xd.T @ Xd / len(Xd)
    lam = 1e-2 * np.linalg.eigvalsh(H).max()
    expected = -np.einsum("ip,ip->i", G, np.linalg.solve(H + lam * np.eye(len(H)), G.T).T)
    s = InfluenceScorer(module, loss=torch.nn.MSELoss(), method="direct",
                        regularization=lam).fit(X, y)
    assert _rel_err(s.values_, expected) < 1e-10


@pytest.mark.parametrize("second_order", ["hessian", "gauss_newton"])
def test_direct_self_influence_of_logistic_regression_is_the_closed_form(seed, second_order):
    # l = softplus(z) - y z, z = x~ . theta: g_i = (s_i - y_i) x~_i and
    # H = X~^T diag(s (1 - s)) X~ / n, which is also the Gauss-Newton matrix.
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(40, 4, generator=g, dtype=DT)
    y = (torch.rand(40, 1, generator=g, dtype=DT) < torch.sigmoid(X[:, :1] - X[:, 1:2])).to(DT)
    module = torch.nn.Linear(4, 1, dtype=DT)
    with torch.no_grad():
        module.weight.copy_(torch.tensor([[1.0, -1.0, 0.3, 0.0]], dtype=DT))
        module.bias.fill_(0.2)
    theta = np.concatenate([module.weight.detach().numpy().ravel(),
                            module.bias.detach().numpy()])
    Xd = _design(X.numpy())
    prob = 1 / (1 + np.exp(-Xd @ theta))
    G = (prob - y.numpy().ravel())[:, None] * Xd
    H = Xd.T @ (Xd * (prob * (1 - prob))[:, None]) / len(Xd)
    lam = 1e-3
    expected = -np.einsum("ip,ip->i", G, np.linalg.solve(H + lam * np.eye(len(H)), G.T).T)
    s = InfluenceScorer(module, loss=torch.nn.BCEWithLogitsLoss(), method="direct",
                        second_order=second_order, regularization=lam).fit(X, y)
    assert _rel_err(s.values_, expected) < 1e-10


# ----------------------------------------------------------- lazy values_ (cg, lissa)
@pytest.mark.parametrize("method", ITERATIVE)
def test_iterative_values_are_computed_on_first_access_then_kept(mlp, method):
    net, X, y = mlp
    s = _scorer(net, method).fit(X, y)
    assert "values_" not in vars(s)
    check_is_fitted(s)  # looks at vars(s): does not start the solves
    assert "values_" not in vars(s)
    first = s.values_
    assert "values_" in vars(s) and s.values_ is first


def test_iterative_values_are_eager_with_validation_data(mlp):
    net, X, y = mlp
    s = _scorer(net, "cg").fit(X, y, X_val=X[:10], y_val=y[:10])
    assert "values_" in vars(s)
    # one solve of the mean validation gradient against ten (CG to rtol=1e-6)
    assert _rel_err(s.values_, -s.influences(X[:10], y[:10]).mean(0)) < 1e-5


def test_no_values_without_compute_values_and_a_refit_drops_old_ones(mlp):
    net, X, y = mlp
    s = _scorer(net, "direct").fit(X, y)
    assert hasattr(s, "values_")
    s.set_params(compute_values=False).fit(X, y)
    assert not hasattr(s, "values_")
    with pytest.raises(AttributeError, match=r"has no values_: fit it with compute_values=True"):
        s.values_  # noqa: B018
    with pytest.raises(AttributeError, match=r"has no values_"):
        _scorer(net, "cg").values_  # noqa: B018
    s.set_params(method="cg", compute_values=True).fit(X, y)
    np.testing.assert_allclose(s.values_, _values_by_solves(s), rtol=1e-12)


def test_clone_pickle_and_get_params_with_pending_values(mlp):
    net, X, y = mlp
    s = _scorer(net, CG(maxiter=50)).fit(X, y)
    params = s.get_params()
    assert not hasattr(clone(s), "values_") and clone(s).get_params()["method__maxiter"] == 50
    pending = pickle.loads(pickle.dumps(s))  # before access: computed after loading
    assert "values_" not in vars(pending)
    np.testing.assert_array_equal(pending.values_, s.values_)
    done = pickle.loads(pickle.dumps(s))  # after access: the values travel
    assert "values_" in vars(done)
    np.testing.assert_array_equal(done.values_, s.values_)
    assert s.get_params() == params


def test_lazy_values_warn_on_access_when_unconverged(mlp):
    net, X, y = mlp
    s = _scorer(net, CG(maxiter=1, rtol=1e-12)).fit(X, y)
    with pytest.warns(ConvergenceWarning, match=r"did not converge for \d+ of 50 right-hand"):
        s.values_  # noqa: B018


def test_lazy_values_show_progress_when_verbose(mlp, capsys):
    pytest.importorskip("tqdm")
    net, X, y = mlp
    s = _scorer(net, "cg", verbose=1).fit(X, y)
    assert "solves" not in capsys.readouterr().err
    s.values_  # noqa: B018
    assert "values_ (50 solves)" in capsys.readouterr().err


def test_pandas_values_keep_the_index_when_lazy(mlp):
    pd = pytest.importorskip("pandas")
    net, X, y = mlp
    idx = pd.Index([f"r{i}" for i in range(len(X))])
    s = _scorer(net, "cg").fit(pd.DataFrame(X.numpy(), index=idx), pd.Series(y.numpy(), idx))
    assert isinstance(s.values_, pd.Series) and s.values_.index.equals(idx)


def test_data_cleaner_reads_lazy_values(mlp):
    from skdvl import DataCleaner

    net, X, y = mlp
    cleaner = DataCleaner(_scorer(net, "cg"), fraction=0.1)
    Xc, yc = cleaner.fit_resample(X.numpy(), y.numpy())
    assert len(Xc) == len(yc) == 45
    ref = _scorer(net, "direct").fit(X, y).values_
    worst = set(np.argsort(ref)[:5])
    assert set(range(50)) - set(cleaner.sample_indices_) == worst
