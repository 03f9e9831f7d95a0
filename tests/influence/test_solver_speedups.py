"""The faster paths of the solvers (issue 27) against explicit-matrix oracles."""

import pytest
import torch

from skdvl.influence._functional import CurvatureOperator, FlatModel
from skdvl.influence._solvers import ArnoldiSolver, _block_lanczos
from tests.influence.oracles import DenseOperator

DT = torch.float64


def _matrix(eigenvalues, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = len(eigenvalues)
    Q = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=DT)).Q
    return Q @ torch.diag(torch.as_tensor(eigenvalues, dtype=DT)) @ Q.T


@pytest.mark.parametrize("block_size", [1, 3, 8])
def test_block_lanczos_is_exact_once_the_space_is_exhausted(block_size):
    lam = torch.linspace(-1, 5, 20, dtype=DT)
    theta, V = _block_lanczos(DenseOperator(_matrix(lam)), 30, block_size,
                              torch.Generator().manual_seed(1))
    assert len(theta) == 20  # never more directions than the dimension
    torch.testing.assert_close(theta, lam, atol=1e-10, rtol=0)
    torch.testing.assert_close(V @ V.T, torch.eye(20, dtype=DT), atol=1e-10, rtol=0)


def test_block_lanczos_finds_the_top_eigenpairs_of_a_separated_spectrum():
    # 5 large eigenvalues over a bulk of 195 small ones: 4 blocks of 8 resolve them.
    lam = torch.cat([torch.tensor([10.0, 8.0, 6.0, 4.0, 3.0], dtype=DT),
                     torch.linspace(0.0, 0.1, 195, dtype=DT)])
    C = _matrix(lam, seed=2)
    theta, V = _block_lanczos(DenseOperator(C), 4, 8, torch.Generator().manual_seed(0))
    top = torch.argsort(theta, descending=True)[:5]
    torch.testing.assert_close(theta[top], lam[:5], atol=1e-8, rtol=0)
    residual = V[top] @ C - theta[top, None] * V[top]
    assert float(residual.norm(dim=1).max()) < 1e-4  # eigenvalues converge quadratically faster


def test_block_lanczos_stops_on_an_invariant_subspace():
    # Rank 3: after C Q the space holds range(C) and the start block; nothing is left.
    lam = torch.tensor([3.0, 2.0, 1.0] + [0.0] * 17, dtype=DT)
    theta, _ = _block_lanczos(DenseOperator(_matrix(lam, seed=3)), 10, 4,
                              torch.Generator().manual_seed(0))
    assert len(theta) <= 20
    torch.testing.assert_close(theta.max(), torch.tensor(3.0, dtype=DT), atol=1e-10, rtol=0)


def test_arnoldi_equals_the_exact_inverse_at_full_rank():
    lam = torch.linspace(0.1, 3.0, 12, dtype=DT)
    C = _matrix(lam, seed=4)
    op = DenseOperator(C)
    op.psd = True
    solver = ArnoldiSolver(1e-2, rank=12).fit(op, torch.Generator().manual_seed(0))
    R = torch.randn(3, 12, generator=torch.Generator().manual_seed(5), dtype=DT)
    expected = torch.linalg.solve(C + 1e-2 * torch.eye(12, dtype=DT), R.T).T
    torch.testing.assert_close(solver.solve(R), expected, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("second_order", ["hessian", "gauss_newton"])
def test_a_single_product_equals_the_vectorised_one_and_the_dense_matrix(second_order):
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(),
                              torch.nn.Linear(4, 2)).to(DT)
    X = torch.randn(30, 3, generator=g, dtype=DT)
    y = torch.randint(0, 2, (30,), generator=g)
    loss = torch.nn.CrossEntropyLoss()
    model = FlatModel(net, loss, second_order)
    op = CurvatureOperator(model, X, y, batch_size=7)
    V = torch.randn(2, model.n_params, generator=g, dtype=DT)
    both = op.matmat(V)
    one = torch.cat([op.matmat(V[:1]), op.matmat(V[1:])])
    # vmap batches the products' matrix multiplications: equal up to rounding
    torch.testing.assert_close(one, both, atol=1e-13, rtol=1e-13)
    if second_order == "hessian":  # oracle: autograd's dense Hessian of the mean loss
        H = torch.autograd.functional.hessian(
            lambda t: loss(model.forward(t, X), y), model.theta)
        torch.testing.assert_close(one, V @ H, atol=1e-10, rtol=1e-10)
