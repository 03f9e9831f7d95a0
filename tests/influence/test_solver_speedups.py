"""The faster paths of the solvers (issue 27) against explicit-matrix oracles."""

import pytest
import torch

from skdvl.influence._functional import CurvatureOperator, FlatModel
from skdvl.influence._solvers import (
    ArnoldiSolver,
    NotPositiveDefiniteError,
    NystroemSolver,
    _block_lanczos,
    _tall_orthonormal,
)
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


@pytest.mark.parametrize("passes", [1, 2])
def test_tall_orthonormal_factor_reproduces_the_matrix(passes):
    g = torch.Generator().manual_seed(6)
    A = torch.randn(500, 20, generator=g, dtype=DT) * torch.logspace(0, -3, 20, dtype=DT)
    Q, R = _tall_orthonormal(A, passes)
    torch.testing.assert_close(Q.T @ Q, torch.eye(20, dtype=DT), atol=1e-9, rtol=0)
    torch.testing.assert_close(Q @ R, A, atol=1e-12, rtol=0)


def test_tall_orthonormal_falls_back_to_householder_on_dependent_columns():
    g = torch.Generator().manual_seed(7)
    A = torch.randn(300, 6, generator=g, dtype=torch.float32)
    A[:, 5] = A[:, 0] + 1e-6 * A[:, 1]  # Gram condition far above 1 / eps
    Q, R = _tall_orthonormal(A)
    expected_Q, expected_R = torch.linalg.qr(A)
    torch.testing.assert_close(Q, expected_Q, atol=0, rtol=0)
    torch.testing.assert_close(R, expected_R, atol=0, rtol=0)


def test_nystroem_equals_the_exact_inverse_at_full_rank():
    lam = torch.linspace(0.1, 3.0, 12, dtype=DT)
    C = _matrix(lam, seed=8)
    op = DenseOperator(C)
    op.psd = True
    solver = NystroemSolver(1e-2, rank=12).fit(op, torch.Generator().manual_seed(0))
    R = torch.randn(3, 12, generator=torch.Generator().manual_seed(9), dtype=DT)
    expected = torch.linalg.solve(C + 1e-2 * torch.eye(12, dtype=DT), R.T).T
    torch.testing.assert_close(solver.solve(R), expected, atol=1e-8, rtol=1e-8)


def _hidden_negative_eigenvalue():
    # 10 large eigenvalues over a bulk of 199 in [0, 0.05], and one eigenvalue of -0.02
    # (below -regularization) at the bottom of the bulk.
    return torch.cat([torch.linspace(1.0, 5.0, 10, dtype=DT), torch.tensor([-0.02], dtype=DT),
                      torch.linspace(0.0, 0.05, 199, dtype=DT)])


def test_nystroem_without_check_curvature_misses_what_the_check_finds():
    # The rank-8 sketch does not see the negative eigenvalue; the Lanczos check on the
    # curvature minus the sketch does. check_curvature=False is the documented trade.
    op = DenseOperator(_matrix(_hidden_negative_eigenvalue(), seed=10))
    with pytest.raises(NotPositiveDefiniteError, match=r"smallest eigenvalue of the curvature"):
        NystroemSolver(1e-2, 8).fit(op, torch.Generator().manual_seed(0))
    unchecked = NystroemSolver(1e-2, 8, check=False).fit(op, torch.Generator().manual_seed(0))
    assert float(unchecked.eigenvalues_.min()) > -1e-2


@pytest.mark.parametrize("make", [lambda check: NystroemSolver(1e-2, 8, check=check),
                                  lambda check: ArnoldiSolver(1e-2, 4, check=check)],
                         ids=["nystroem", "arnoldi"])
def test_check_curvature_changes_only_the_cost(make):
    op = DenseOperator(_matrix(_hidden_negative_eigenvalue().clamp_min(0), seed=10))
    R = torch.randn(4, 210, generator=torch.Generator().manual_seed(11), dtype=DT)
    solutions, products = [], []
    for check in (True, False):
        op.n_products = 0
        solutions.append(make(check).fit(op, torch.Generator().manual_seed(0)).solve(R))
        products.append(op.n_products)
    torch.testing.assert_close(solutions[0], solutions[1], atol=0, rtol=0)
    assert products[1] < products[0] - 5  # the check's Lanczos steps are saved


def test_check_curvature_is_a_validated_option():
    from skdvl.influence import Nystroem

    with pytest.raises(ValueError, match=r"'check_curvature' parameter of Nystroem must be"):
        Nystroem(check_curvature="no")._solver(1e-2, None)
