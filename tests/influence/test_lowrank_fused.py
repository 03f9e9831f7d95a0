"""Oracles for the one-product low-rank closed forms (Woodbury solve, Nystrom
preconditioner): against explicit matrices and dense solves in float64."""

import pytest
import torch

from skdvl.influence._cg import _nystroem_precondition
from skdvl.influence._solvers import _lowrank_plus_shift_quadratic, _lowrank_plus_shift_solve


def _factors(p=40, r=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(p, r, generator=g, dtype=torch.float64)).Q
    lam = torch.rand(r, generator=g, dtype=torch.float64) * 3
    R = torch.randn(5, p, generator=g, dtype=torch.float64)
    return U, lam, R


@pytest.mark.parametrize("rho", [1e-3, 0.5])
def test_lowrank_solve_matches_dense(rho):
    U, lam, R = _factors()
    A = U @ torch.diag(lam) @ U.T + rho * torch.eye(len(U), dtype=U.dtype)
    expected = torch.linalg.solve(A, R.T).T
    got = _lowrank_plus_shift_solve(U, lam, rho, R)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10 / rho)
    q = _lowrank_plus_shift_quadratic(U, lam, rho, R)
    torch.testing.assert_close(q, (expected * R).sum(1), rtol=1e-10, atol=0)


def test_lowrank_solve_empty_factor():
    _, _, R = _factors()
    U = torch.zeros(R.shape[1], 0, dtype=R.dtype)
    torch.testing.assert_close(
        _lowrank_plus_shift_solve(U, torch.zeros(0, dtype=R.dtype), 0.1, R), R / 0.1)


def test_nystroem_preconditioner_matches_explicit_inverse():
    U, lam, R = _factors(seed=1)
    reg, lam_r = 1e-2, float(lam.min())
    eye = torch.eye(len(U), dtype=U.dtype)
    Pinv = (lam_r + reg) * U @ torch.diag(1 / (lam + reg)) @ U.T + (eye - U @ U.T)
    torch.testing.assert_close(_nystroem_precondition(U, lam, lam_r, reg, R), R @ Pinv,
                               rtol=1e-12, atol=1e-12)
    # It inverts the preconditioner P = U (L + mu) U^T / (lam_r + mu) + (I - U U^T).
    P = U @ torch.diag(lam + reg) @ U.T / (lam_r + reg) + (eye - U @ U.T)
    torch.testing.assert_close(_nystroem_precondition(U, lam, lam_r, reg, R @ P), R,
                               rtol=1e-10, atol=1e-10)
