"""Inverse-curvature solvers: the protocol, the positive-definiteness checks, direct,
low-rank (Arnoldi, Nystroem) and block-diagonal solvers.

Every solver follows the same protocol::

    solver = option._solver(regularization, blocks)   # e.g. CG(maxiter=50)._solver(1e-3, None)
    solver.fit(curvature, rng)                       # returns the solver
    X = solver.solve(R)   # R: (k, p) right-hand sides -> (k, p) rows of (C + lambda I)^-1 R
    q = solver.quadratic_form(R)   # (k,): r_i^T (C + lambda I)^-1 r_i, the diagonal of R A^-1 R^T
    solver.factorised     # whether quadratic_form costs no solve (a factorisation is kept)
    solver.converged_     # None, or a bool tensor (k,) for the last solve (iterative ones)

where ``curvature`` is a :class:`~skdvl.influence._functional.CurvatureOperator` (products
with the Hessian or Gauss-Newton matrix ``C`` of the mean training loss) and ``rng`` a
``torch.Generator`` for the randomised parts. Right-hand sides are rows, so that a whole
batch of test gradients is solved at once. A solver never returns a solution computed on
an indefinite ``C + lambda I``: it raises :class:`NotPositiveDefiniteError` with an
estimate of the regularization that would work.

References
----------
Koh, P. W. and Liang, P. (2017). Understanding black-box predictions via influence
functions. ICML.
Schioppa, A., Zablotskaia, P., Vilar, D. and Sokolov, A. (2022). Scaling up influence
functions. AAAI (Arnoldi).
Hataya, R. and Yamada, M. (2023). Nystrom method for accurate and scalable implicit
differentiation. AISTATS (Nystrom sketch).
Frangella, Z., Tropp, J. A. and Udell, M. (2023). Randomized Nystrom preconditioning.
SIAM J. Matrix Anal. Appl.
Kuczynski, J. and Wozniakowski, H. (1992). Estimating the largest eigenvalue by the power
and Lanczos algorithms with a random start. SIAM J. Matrix Anal. Appl. 13(4).
"""

from __future__ import annotations

import math

import torch

from ._functional import CurvatureOperator

#: Lanczos steps of the positive-definiteness check (50 find the most negative eigenvalue
#: of the digits MLP's Hessian to 4 digits; 20 see only half of it).
_CHECK_STEPS = 50
#: Vectors per product of Arnoldi's block Lanczos (see :class:`ArnoldiSolver`).
_ARNOLDI_BLOCK = 8
#: Failure probability at which :func:`check_positive_definite` may stop early.
_CHECK_DELTA = 1e-3


class NotPositiveDefiniteError(ValueError):
    """The regularised curvature matrix is not positive definite.

    Raised by every method (``direct`` when it factorises, the iterative ones when they
    meet negative curvature); the message gives the regularization that would work.
    """


class Solver:
    """Base of the solvers: the protocol and its declared state.

    Attributes
    ----------
    converged_ : torch.Tensor of bool or None
        Per right-hand side of the last :meth:`solve`, whether it met the tolerance;
        None for methods that are not iterative.
    """

    name = ""
    converged_: torch.Tensor | None = None
    #: Whether :meth:`quadratic_form` reads a kept factorisation (about the cost of one
    #: product per row) instead of solving for each row (iterative methods).
    factorised: bool = False

    def __init__(self, regularization: float):
        self.regularization = regularization

    def fit(self, op: CurvatureOperator, generator: torch.Generator | None = None) -> Solver:
        raise NotImplementedError

    def solve(self, R: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def quadratic_form(self, R: torch.Tensor) -> torch.Tensor:
        """``r_i^T (C + lambda I)^-1 r_i`` for each row of ``R``: shape ``(k,)``.

        The diagonal of ``R A^-1 R^T``, equal to ``(solve(R) * R).sum(1)``, which is
        what this base implementation computes (one solve per row); solvers that keep a
        factorisation override it with a closed form and set :attr:`factorised`.
        """
        return (self.solve(R) * R).sum(1)


# ------------------------------------------------------------- definiteness checks
def not_positive_definite(method: str, lam_min: float, regularization: float,
                          how: str) -> NotPositiveDefiniteError:
    """The error for ``C + regularization I`` with ``lambda_min(C) ~ lam_min`` (< 0)."""
    return NotPositiveDefiniteError(
        "The curvature matrix plus 'regularization' is not positive definite "
        f"({how}: smallest eigenvalue of the curvature {lam_min:.3g}, with regularization="
        f"{regularization!r}), so method={method!r} would compute influences on an "
        f"indefinite matrix. Increase 'regularization' above {max(-lam_min, 0):.3g} or "
        "use second_order='gauss_newton'."
    )


def _lanczos(op, n_steps: int, generator, stop=None) -> tuple:
    """Ritz pairs of ``C`` after ``n_steps`` Lanczos steps with full reorthogonalisation.

    ``stop(theta, k)``, if given, is called with the Ritz values after each step ``k``;
    Lanczos ends early when it returns True.
    """
    p = op.dim
    Q = torch.zeros(n_steps + 1, p, dtype=op.dtype, device=op.device)
    q = torch.randn(p, generator=generator, dtype=op.dtype, device="cpu").to(op.device)
    Q[0] = q / q.norm()
    alpha: list[float] = []
    beta: list[float] = []
    for j in range(n_steps):
        w = op.matmat(Q[j : j + 1])[0]
        alpha.append(float(w @ Q[j]))
        for _ in range(2):  # twice is enough (Parlett's "twice is enough")
            w = w - Q[: j + 1].T @ (Q[: j + 1] @ w)
        b = float(w.norm())
        if b <= 1e3 * torch.finfo(op.dtype).eps * max(max(abs(a) for a in alpha), 1e-300):
            break
        beta.append(b)
        Q[j + 1] = w / b
        if stop is not None and stop(torch.linalg.eigvalsh(_tridiagonal(alpha, beta)), j + 1):
            break
    m = len(alpha)
    theta, S = torch.linalg.eigh(_tridiagonal(alpha, beta).to(op.dtype))
    return theta.to(op.device), S.to(op.device).T @ Q[:m]


def _tridiagonal(alpha: list[float], beta: list[float]) -> torch.Tensor:
    """The Lanczos matrix of the ``len(alpha)`` first steps (float64, on the CPU)."""
    m = len(alpha)
    T = torch.diag(torch.tensor(alpha, dtype=torch.float64))
    off = torch.tensor(beta[: m - 1], dtype=torch.float64)
    return T + torch.diag(off, 1) + torch.diag(off, -1)


def _block_lanczos(op: CurvatureOperator, n_steps: int, block_size: int, generator) -> tuple:
    """Ritz pairs of ``C`` on a block Krylov space, from batched products.

    The space is ``span{Q, C Q, ..., C^(n_steps - 1) Q}`` for a Gaussian block ``Q`` of
    ``block_size`` orthonormal rows (block Lanczos, Golub & Underwood, 1977), at most
    ``op.dim`` directions. Every block is orthogonalised twice against all the previous
    ones (full reorthogonalisation), and the Ritz pairs come from the Rayleigh-Ritz
    matrix ``Q (C Q)^T`` of the kept products, so no block-tridiagonal recurrence has to
    stay accurate. One product with ``block_size`` vectors is vectorised, which on the
    benchmark MLP costs about a third of ``block_size`` single products.

    Returns the Ritz values (ascending) and the Ritz vectors as rows.

    References
    ----------
    Golub, G. H. and Underwood, R. (1977). The block Lanczos method for computing
    eigenvalues. Mathematical Software III.
    Musco, C. and Musco, C. (2015). Randomized block Krylov methods for stronger and
    faster approximate singular value decomposition. NeurIPS.
    """
    p = op.dim
    b = min(block_size, p)
    G = torch.randn(p, b, generator=generator, dtype=op.dtype, device="cpu").to(op.device)
    Q = torch.linalg.qr(G).Q.T
    bases, products = [], []
    for _ in range(n_steps):
        CQ = op.matmat(Q)
        bases.append(Q)
        products.append(CQ)
        basis = torch.cat(bases)
        room = p - len(basis)
        if room <= 0:
            break
        W = CQ
        for _ in range(2):  # twice is enough
            W = W - (W @ basis.T) @ basis
        Qn, Rn = torch.linalg.qr(W.T)
        # Directions that the projections reduced to rounding: the space is exhausted
        # there (an invariant subspace was found), so they are left out.
        scale = max(float(CQ.norm(dim=1).max()), torch.finfo(op.dtype).tiny)
        keep = Rn.diagonal().abs() > 1e3 * torch.finfo(op.dtype).eps * scale
        Q = Qn.T[keep][:room]
        if len(Q) == 0:
            break
        Q = Q - (Q @ basis.T) @ basis  # the QR of a projected block can lose orthogonality
        Q = torch.linalg.qr(Q.T).Q.T
    basis, CB = torch.cat(bases), torch.cat(products)
    T = basis @ CB.T
    theta, S = torch.linalg.eigh(0.5 * (T + T.T))
    return theta, S.T @ basis


class _Deflated:
    """``C - U diag(lam) U^T`` for ``lam >= 0``: the operator that the check runs on."""

    psd = False

    def __init__(self, op, U: torch.Tensor, lam: torch.Tensor):
        self.op, self.U, self.lam = op, U, lam
        self.dim, self.dtype, self.device = op.dim, op.dtype, op.device

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        return self.op.matmat(V) - ((V @ self.U) * self.lam) @ self.U.T


def _steps_to_certify(theta: torch.Tensor, regularization: float, dim: int) -> float:
    """Lanczos steps after which ``lambda_min(C) > -regularization`` is certain to ``delta``.

    Kuczynski & Wozniakowski (1992, Thm. 4.2), applied to ``-C``: with a random start,
    ``P[(theta_min(k) - lambda_min) >= eps (lambda_max - lambda_min)] <= 1.648 sqrt(p)
    exp(-sqrt(eps) (2k - 1))``. If ``lambda_min <= -regularization`` while the smallest
    Ritz value stays above ``-regularization / 4``, the relative error is at least
    ``eps = (3/4) regularization / (lambda_max + regularization)``; ``lambda_max`` is
    taken as twice the largest Ritz value (the top of the spectrum converges first).
    """
    eps = 0.75 * regularization / (2 * max(float(theta[-1]), 0.0) + regularization)
    return (math.log(1.648 * math.sqrt(dim) / _CHECK_DELTA) / math.sqrt(eps) + 1) / 2


def smallest_eigenvalue(op, generator=None, n_steps: int = _CHECK_STEPS,
                        certify: float | None = None) -> tuple[float, int]:
    """Smallest Ritz value of ``C`` after at most ``n_steps`` Lanczos steps, and the steps.

    An upper bound on (and, for the extreme end of the spectrum, a close estimate of) the
    smallest eigenvalue of ``C``. With ``certify`` (a regularization ``lambda``),
    Lanczos stops as soon as the smallest Ritz value is above ``-lambda / 4`` after
    :func:`_steps_to_certify` steps (at least 10): then ``lambda_min(C) > -lambda``
    but with probability below :data:`_CHECK_DELTA`.
    """
    generator = torch.Generator().manual_seed(0) if generator is None else generator

    def stop(theta, k):
        return (certify is not None and k >= 10 and float(theta[0]) > -certify / 4
                and k >= _steps_to_certify(theta, certify, op.dim))

    theta, V = _lanczos(op, min(n_steps, op.dim), generator, stop)
    return float(theta.min()), len(V)


def check_positive_definite(op: CurvatureOperator, regularization: float, method: str,
                            generator=None, deflate: tuple | None = None) -> None:
    """Raise :class:`NotPositiveDefiniteError` if Lanczos finds ``C + lambda I`` indefinite.

    Skipped when ``op.psd`` (a Gauss-Newton matrix of a loss with checked output
    Hessians). Costs at most :data:`_CHECK_STEPS` products with ``C``, fewer when
    :func:`smallest_eigenvalue` can certify early.

    ``deflate=(U, lam)`` (approximate top eigenpairs, e.g. a Nystrom sketch) runs the
    check on ``C' = C - U diag(lam_+) U^T`` instead, ``lam_+ = max(lam, 0)``. The
    subtracted part is positive semi-definite, so ``lambda_min(C) >= lambda_min(C')``
    (Weyl) whatever the accuracy of ``U``: certifying ``C'`` certifies ``C``. The
    spread of ``C'`` is that of the spectrum below the sketch (0.048 instead of 0.35 on
    the benchmark MLP), so Lanczos certifies it in about 25 steps instead of not within
    50. ``C'`` can be more negative than ``C``: when its smallest Ritz value is below
    ``-lambda``, the plain check on ``C`` decides (and names its eigenvalue). Not
    certified within :data:`_CHECK_STEPS` steps, the sign of the smallest Ritz value of
    ``C'`` decides, as that of ``C`` did without deflation: along a negative eigenvalue
    of ``C`` below ``-lambda``, ``C'`` is at least as negative and, with a smaller
    spread, found in fewer steps.
    """
    if op.psd:
        return
    target = op if deflate is None else _Deflated(op, deflate[0], deflate[1].clamp_min(0))
    lam, n_steps = smallest_eigenvalue(target, generator, certify=regularization)
    if lam + regularization <= 0:
        if deflate is not None:
            return check_positive_definite(op, regularization, method, generator)
        raise not_positive_definite(method, lam, regularization, f"{n_steps} Lanczos steps")


# ----------------------------------------------------------------------------- direct
class DirectSolver(Solver):
    """Explicit ``C + lambda I``, factorised once with Cholesky (Koh & Liang, 2017)."""

    name = "direct"
    factorised = True

    def fit(self, op: CurvatureOperator, generator=None) -> DirectSolver:
        C = op.dense()
        C.diagonal().add_(self.regularization)
        # Factorise in place: C.T is the column-major view LAPACK works on, so no copy
        # is made and one p x p matrix is kept. Only one triangle is read (C is symmetric
        # up to rounding). Afterwards C holds the lower factor L, C.T the upper L^T.
        info = torch.empty((), dtype=torch.int32, device=C.device)
        torch.linalg.cholesky_ex(C.T, upper=True, out=(C.T, info))
        if int(info) != 0:  # C was overwritten: rebuild it for the message
            C = op.dense()
            lam_min = float(torch.linalg.eigvalsh(0.5 * (C + C.T))[0])
            raise not_positive_definite(self.name, lam_min, self.regularization,
                                        "Cholesky factorisation failed")
        self.cholesky_ = C.tril_()
        return self

    def solve(self, R: torch.Tensor) -> torch.Tensor:
        # Rows of R A^-1 with A = L L^T, by two triangular solves from the right:
        # unlike cholesky_solve, these do not copy the p x p factor.
        Y = torch.linalg.solve_triangular(self.cholesky_.T, R, upper=True, left=False)
        return torch.linalg.solve_triangular(self.cholesky_, Y, upper=False, left=False)

    def quadratic_form(self, R: torch.Tensor) -> torch.Tensor:
        # r^T (L L^T)^-1 r = ||L^-1 r||^2: the rows of R L^-T, one triangular solve.
        Y = torch.linalg.solve_triangular(self.cholesky_.T, R, upper=True, left=False)
        return torch.linalg.vecdot(Y, Y, dim=1)


# ---------------------------------------------------------------------- low rank
def _lowrank_plus_shift_solve(U, lam, regularization, R):
    """Rows of ``(U diag(lam) U^T + rho I)^-1 R`` by the Woodbury identity.

    The component of ``R`` outside ``span(U)`` is divided by ``rho``, i.e. the curvature
    is taken as zero there. With ``c = U^T r`` the solution is
    ``(r + U diag(rho / (lam + rho) - 1) c) / rho`` (the inside and outside parts in
    one matrix product: 3 ms instead of 9 ms for ``R`` of ``(100, 12010)`` and rank 50
    on one core).
    """
    coef = R @ U
    scale = regularization / (lam + regularization) - 1
    return torch.addmm(R, coef * scale, U.T).div_(regularization)


def _lowrank_plus_shift_quadratic(U, lam, regularization, R):
    """``r_i^T x_i`` for the rows ``x_i`` of :func:`_lowrank_plus_shift_solve`.

    With ``c = U^T r``: ``sum_j c_j^2 / (lam_j + rho) + r^T (r - U c) / rho``, the solve's
    two terms dotted with ``r`` (exact whether or not ``U`` is orthonormal to rounding),
    without mapping the eigen-coefficients back to ``p`` dimensions.

    Notes
    -----
    The complement term equals ``(||r||^2 - ||c||^2) / rho``, which saves the product
    with ``U^T`` (3x less time), but in float32 it cancels: 1.7e-5 relative error on a
    digits MLP against 3e-6 for the residual form used here.
    """
    coef = R @ U
    inside = (coef * coef / (lam + regularization)).sum(1)
    return inside + torch.linalg.vecdot(R - coef @ U.T, R, dim=1) / regularization


def _tall_orthonormal(A: torch.Tensor, passes: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """``A = Q R`` with orthonormal columns ``Q`` for a tall ``A`` ``(p, k)``, ``p >> k``.

    ``R`` is square but not triangular. Each pass orthonormalises through the ``k x k``
    Gram matrix: ``Q = A V diag(s)^-1`` from ``A^T A = V diag(s^2) V^T`` (two thin
    matrix products and a small eigendecomposition), so that on one core ``(12010, 50)``
    takes about 4 ms per pass against 11-30 ms for Householder QR. A pass leaves an
    orthogonality error of about ``eps cond(A)^2``, the second removes it (as in
    CholeskyQR2, Yamamoto et al., 2015). When ``cond(A)^2`` is not well below ``1 / eps``
    (Gram condition above ``1 / (100 eps)``), Householder QR (:func:`torch.linalg.qr`)
    is used instead.

    References
    ----------
    Yamamoto, Y., Nakatsukasa, Y., Yanagisawa, Y. and Fukaya, T. (2015). Roundoff error
    analysis of the CholeskyQR2 algorithm. Electron. Trans. Numer. Anal. 44.
    """
    Q, R = A, None
    for k in range(passes):
        s2, V = torch.linalg.eigh(Q.T @ Q)
        if k == 0 and not bool(s2[0] > s2[-1] * 100 * torch.finfo(A.dtype).eps):
            return torch.linalg.qr(A)
        s = s2.sqrt()
        Q = Q @ (V / s)
        step = s[:, None] * V.T
        R = step if R is None else step @ R
    assert R is not None
    return Q, R


def nystroem_sketch(op: CurvatureOperator, rank: int, generator) -> tuple:
    """Randomised Nystrom approximation ``C ~ U diag(lam) U^T`` of rank ``rank``.

    ``C ~ Y (Omega^T Y)^+ Y^T`` with ``Y = C Omega`` and an orthonormal Gaussian test
    matrix ``Omega`` (Hataya & Yamada, 2023; Frangella et al., 2023, Alg. 2.1). The core
    is pseudo-inverted through its eigendecomposition so that indefinite Hessians are
    handled; at ``rank = p`` the approximation is exact.
    """
    p = op.dim
    Omega = torch.randn(p, rank, generator=generator, dtype=op.dtype, device="cpu")
    Omega = _tall_orthonormal(Omega.to(op.device), passes=1)[0]  # Gaussian: cond ~ 1
    Y = op.matmat(Omega.T).T  # (p, rank)
    core = Omega.T @ Y
    d, V = torch.linalg.eigh(0.5 * (core + core.T))
    keep = d.abs() > d.abs().max() * rank * torch.finfo(op.dtype).eps
    d, V = d[keep], V[:, keep]
    B = Y @ (V / d.abs().sqrt())
    Q, Rq = _tall_orthonormal(B)
    M = (Rq * torch.sign(d)) @ Rq.T
    lam, W = torch.linalg.eigh(0.5 * (M + M.T))
    return Q @ W, lam


class NystroemSolver(Solver):
    """Inverse of a randomised Nystrom sketch (Hataya & Yamada, 2023).

    Refuses an indefinite curvature: the sketch's eigenvalues plus ``lambda`` must be
    positive, and (unless the curvature is known to be positive semi-definite) a Lanczos
    check must find none below ``-lambda``. The check runs on the curvature minus the
    sketch (:func:`check_positive_definite` with ``deflate``), which on the benchmark MLP
    certifies it in 20-23 products instead of 50. ``check=False`` skips that check
    (the sketch's own eigenvalues are still checked, at no cost).
    """

    name = "nystroem"
    factorised = True

    def __init__(self, regularization: float, rank: int, check: bool = True):
        super().__init__(regularization)
        self.rank, self.check = rank, check

    def fit(self, op: CurvatureOperator, generator=None) -> NystroemSolver:
        self.U_, self.eigenvalues_ = nystroem_sketch(op, min(self.rank, op.dim), generator)
        lam = float(self.eigenvalues_.min()) if len(self.eigenvalues_) else 0.0
        if lam + self.regularization <= 0:
            raise not_positive_definite(self.name, lam, self.regularization,
                                        "Nystrom sketch")
        if self.check:  # deflated by the sketch itself (see check_positive_definite)
            check_positive_definite(op, self.regularization, self.name, generator,
                                    deflate=(self.U_, self.eigenvalues_))
        return self

    def solve(self, R: torch.Tensor) -> torch.Tensor:
        return _lowrank_plus_shift_solve(self.U_, self.eigenvalues_, self.regularization, R)

    def quadratic_form(self, R: torch.Tensor) -> torch.Tensor:
        return _lowrank_plus_shift_quadratic(self.U_, self.eigenvalues_, self.regularization, R)


class ArnoldiSolver(Solver):
    """Top eigenpairs (largest magnitude) by Lanczos on curvature-vector products.

    Schioppa et al. (2022) use Arnoldi iterations; for a symmetric matrix these reduce to
    Lanczos, which is what we run, in blocks of :data:`_ARNOLDI_BLOCK` vectors
    (:func:`_block_lanczos`, full reorthogonalisation) on a Krylov space of ``2 rank + 20``
    directions, as many as single-vector Lanczos used before.

    Notes
    -----
    Unlike Schioppa et al., who project onto the top eigenspace only, the complement of the
    eigenspace is kept and divided by ``regularization`` (curvature taken as zero there),
    which is the exact inverse of ``U diag(lam) U^T + lambda I``. Any Ritz value (kept
    or not) below ``-lambda`` raises :class:`NotPositiveDefiniteError`.

    Blocks: on the benchmark MLP (12,010 parameters, rank 50, 1,000 rows) the Krylov
    space of 15 vectorised products of 8 vectors took 0.34 s of CPU where 120 single
    products took 0.71 s, with Pearson correlations with ``direct`` of 0.9978 against
    0.9979 (blocks of 16 or more lower the polynomial degree too far: 0.9959 with
    16 x 6). The lower degree also finds small negative eigenvalues less well (blocks of
    4 missed the smallest eigenvalue, -0.0021, of a small trained MLP that single-vector
    Lanczos finds), so unless the curvature is known to be positive semi-definite, the
    single-vector check :func:`check_positive_definite` runs as well, on the curvature
    minus the Ritz pairs found (``deflate``): 11 products on the benchmark MLP instead of
    :data:`_CHECK_STEPS`. ``check=False`` skips that check (the Ritz values are still
    checked, at no cost).
    """

    name = "arnoldi"
    factorised = True

    def __init__(self, regularization: float, rank: int, check: bool = True):
        super().__init__(regularization)
        self.rank, self.check = rank, check

    def fit(self, op: CurvatureOperator, generator=None) -> ArnoldiSolver:
        rank = min(self.rank, op.dim)
        n_dirs = min(op.dim, 2 * rank + 20)
        n_steps = -(-n_dirs // _ARNOLDI_BLOCK)  # ceil
        theta, V = _block_lanczos(op, n_steps, min(_ARNOLDI_BLOCK, n_dirs), generator)
        if float(theta.min()) + self.regularization <= 0:
            raise not_positive_definite(self.name, float(theta.min()), self.regularization,
                                        f"block Lanczos on {len(theta)} directions")
        # A block Krylov space has a lower polynomial degree than single-vector Lanczos of
        # the same size, and misses small negative eigenvalues that the latter finds;
        # the check is deflated by all the Ritz pairs (see check_positive_definite).
        if self.check:
            check_positive_definite(op, self.regularization, self.name, generator,
                                    deflate=(V.T, theta))
        top = torch.argsort(theta.abs(), descending=True)[:rank]
        self.eigenvalues_, V = theta[top], V[top]
        self.U_ = V.T
        return self

    def solve(self, R: torch.Tensor) -> torch.Tensor:
        return _lowrank_plus_shift_solve(self.U_, self.eigenvalues_, self.regularization, R)

    def quadratic_form(self, R: torch.Tensor) -> torch.Tensor:
        return _lowrank_plus_shift_quadratic(self.U_, self.eigenvalues_, self.regularization, R)


# ----------------------------------------------------------------------- blocks
class BlockDiagonalSolver(Solver):
    """Apply one solver per diagonal block (``block_structure="layer"``)."""

    def __init__(self, make_solver, blocks: list[slice]):
        self.make_solver, self.blocks = make_solver, blocks

    def fit(self, op: CurvatureOperator, generator=None) -> BlockDiagonalSolver:
        self.solvers_ = [self.make_solver().fit(op.restrict(b), generator) for b in self.blocks]
        self.name = self.solvers_[0].name if self.solvers_ else ""
        self.factorised = all(s.factorised for s in self.solvers_)
        return self

    def solve(self, R: torch.Tensor) -> torch.Tensor:
        out = torch.cat([s.solve(R[:, b]) for s, b in zip(self.solvers_, self.blocks)], dim=1)
        self._gather_converged()
        return out

    def quadratic_form(self, R: torch.Tensor) -> torch.Tensor:
        # A block-diagonal inverse: the quadratic form is the sum of the blocks' own.
        out = R.new_zeros(len(R))
        for s, b in zip(self.solvers_, self.blocks):
            out += s.quadratic_form(R[:, b])
        self._gather_converged()
        return out

    def _gather_converged(self) -> None:
        masks = [s.converged_ for s in self.solvers_ if s.converged_ is not None]
        # a row converged when it did in every block
        self.converged_ = torch.stack(masks).all(0) if masks else None
