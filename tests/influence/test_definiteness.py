"""No influence on an indefinite curvature: every method refuses it, the default avoids it."""

import re

import numpy as np
import pytest
import torch

from skdvl.influence import CG, Arnoldi, InfluenceScorer, LiSSA, NotPositiveDefiniteError, Nystroem
from skdvl.influence._cg import CGSolver
from skdvl.influence._functional import CurvatureOperator, FlatModel
from tests.influence.oracles import DenseOperator, indefinite_mlp

DT = torch.float64
LAM = 1e-3  # the default regularization


@pytest.fixture(scope="module")
def trained_mlp():
    """A tanh MLP trained (Adam, 300 steps) on 3 blobs; its Hessian is indefinite."""
    net, X, y = indefinite_mlp()
    op = CurvatureOperator(FlatModel(net, torch.nn.CrossEntropyLoss()), X, y, 256)
    lam_min = float(torch.linalg.eigvalsh(op.dense())[0])
    return net, X, y, lam_min


def test_the_trained_mlp_has_an_indefinite_hessian(trained_mlp):
    _, _, _, lam_min = trained_mlp
    assert lam_min < -LAM  # so Hessian + default regularization is indefinite


def test_default_scorer_matches_direct_at_its_curvature(trained_mlp):
    net, X, y, _ = trained_mlp
    loss = torch.nn.CrossEntropyLoss()
    default = InfluenceScorer(net, loss=loss).fit(X, y)
    assert default.second_order == "gauss_newton" and default.regularization == LAM
    direct = InfluenceScorer(net, loss=loss, method="direct").fit(X, y)
    got, expected = default.influences(X[:15], y[:15]), direct.influences(X[:15], y[:15])
    assert np.corrcoef(got.ravel(), expected.ravel())[0, 1] >= 0.99
    assert np.abs(got - expected).max() <= 1e-3 * np.abs(expected).max()


def _suggested(message: str) -> float:
    return float(re.search(r"Increase 'regularization' above ([0-9.e+-]+)", message).group(1))


@pytest.mark.parametrize("method", [
    "direct", CG(), CG(preconditioner="jacobi"), CG(preconditioner="nystroem", rank=10),
    LiSSA(), Arnoldi(rank=10), Nystroem(rank=10),
], ids=repr)
def test_every_method_refuses_an_indefinite_hessian_and_names_the_fix(trained_mlp, method):
    net, X, y, lam_min = trained_mlp
    name = method if isinstance(method, str) else method.name
    s = InfluenceScorer(net, loss=torch.nn.CrossEntropyLoss(), method=method,
                        second_order="hessian", regularization=LAM, random_state=0)
    with pytest.raises(NotPositiveDefiniteError,
                       match=rf"not positive definite .*method='{name}' would compute "
                             r"influences on an indefinite matrix\. Increase 'regularization' "
                             r"above \d"):
        s.fit(X, y).influences(X[:5], y[:5])


@pytest.mark.parametrize("n_rhs", [1, 6])
def test_cg_suggests_a_regularization_that_works(trained_mlp, n_rhs):
    # One right-hand side runs plain CG, several block CG: both detect p^T A p <= 0.
    net, X, y, lam_min = trained_mlp
    kw = dict(loss=torch.nn.CrossEntropyLoss(), second_order="hessian", compute_values=False)
    s = InfluenceScorer(net, regularization=LAM, **kw).fit(X, y)
    with pytest.raises(NotPositiveDefiniteError, match="conjugate gradients met negative") as e:
        s.influences(X[:n_rhs], y[:n_rhs])
    suggested = _suggested(str(e.value))
    assert 0.5 * -lam_min <= suggested <= -lam_min * 1.01  # Lanczos: a lower bound (3 digits)
    reg = -lam_min * 1.5
    cg = InfluenceScorer(net, regularization=reg, method=CG(maxiter=500, rtol=1e-10), **kw)
    direct = InfluenceScorer(net, regularization=reg, method="direct", **kw).fit(X, y)
    expected = direct.influences(X[:n_rhs], y[:n_rhs])
    np.testing.assert_allclose(cg.fit(X, y).influences(X[:n_rhs], y[:n_rhs]), expected,
                               rtol=0, atol=1e-6 * np.abs(expected).max())


@pytest.mark.parametrize("n_rhs", [1, 3])
def test_cg_on_an_indefinite_operator_raises(n_rhs):
    C = torch.diag(torch.tensor([-1.0, 0.5, 1.0, 2.0, 3.0], dtype=DT))
    Q = torch.linalg.qr(torch.randn(5, 5, generator=torch.Generator().manual_seed(0),
                                    dtype=DT)).Q
    op = DenseOperator(Q @ C @ Q.T)
    solver = CGSolver(1e-3, maxiter=100, rtol=1e-10).fit(op, torch.Generator().manual_seed(0))
    R = torch.ones(n_rhs, 5, dtype=DT)
    with pytest.raises(NotPositiveDefiniteError,
                       match=r"smallest eigenvalue of the curvature -1, with regularization"
                             r"=0\.001\), so method='cg'.*Increase 'regularization' above 1"):
        solver.solve(R)
    op.C = Q @ C.abs() @ Q.T  # the same spectrum made positive: solved exactly
    X = solver.solve(R)
    np.testing.assert_allclose(X @ (op.C + 1e-3 * torch.eye(5, dtype=DT)), R, atol=1e-8)


def test_lissa_would_not_have_noticed_the_negative_curvature(trained_mlp):
    # The Neumann series grows along a negative eigenvalue by 1 + |mu| / scale per step,
    # about 1.0002 here: without the Lanczos check LiSSA returns a number, silently wrong.
    net, X, y, lam_min = trained_mlp
    s = InfluenceScorer(net, loss=torch.nn.CrossEntropyLoss(), method=LiSSA(),
                        second_order="hessian", regularization=LAM, compute_values=False)
    with pytest.raises(NotPositiveDefiniteError, match=r"50 Lanczos steps: smallest "
                                                       r"eigenvalue of the curvature -0\.00"):
        s.fit(X, y)
