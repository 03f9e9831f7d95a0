"""Inverse-curvature operators: one protocol, several approximations.

Every solver follows the same two-step protocol::

    solver = _CG(regularization=1e-3, ...).fit(op, generator)
    X = solver.solve(R)      # R: (k, p) right-hand sides -> (k, p) rows of (C + lambda I)^-1 R

where ``op`` is a :class:`~skdvl.influence._functional.CurvatureOperator` (products with
the Hessian or Gauss-Newton matrix ``C`` of the mean training loss) and ``generator`` a
``torch.Generator`` for the randomised parts. Right-hand sides are rows, so that a whole
batch of test gradients is solved at once.

References
----------
Koh, P. W. and Liang, P. (2017). Understanding black-box predictions via influence
functions. ICML.
Agarwal, N., Bullins, B. and Hazan, E. (2017). Second-order stochastic optimization for
machine learning in linear time. JMLR 18 (LiSSA).
Schioppa, A., Zablotskaia, P., Vilar, D. and Sokolov, A. (2022). Scaling up influence
functions. AAAI (Arnoldi).
Hataya, R. and Yamada, M. (2023). Nystrom method for accurate and scalable implicit
differentiation. AISTATS (Nystrom sketch).
Frangella, Z., Tropp, J. A. and Udell, M. (2023). Randomized Nystrom preconditioning.
SIAM J. Matrix Anal. Appl.; Martens, J. (2020). New insights and perspectives on the
natural gradient method. JMLR; Frantar, E., Kurtic, E. and Alistarh, D. (2021). M-FAC
(preconditioned conjugate gradients).
"""

from __future__ import annotations

import torch

from ._functional import CurvatureOperator


class NotPositiveDefiniteError(ValueError):
    """The regularised curvature matrix is not positive definite."""


# ----------------------------------------------------------------------------- direct
class _Direct:
    """Explicit ``C + lambda I``, factorised once with Cholesky (Koh & Liang, 2017)."""

    def __init__(self, regularization: float):
        self.regularization = regularization

    def fit(self, op: CurvatureOperator, generator=None) -> _Direct:
        C = op.dense()
        C.diagonal().add_(self.regularization)
        # Factorise in place: C.T is the column-major view LAPACK works on, so no copy
        # is made and one p x p matrix is kept. Only one triangle is read (C is symmetric
        # up to rounding). Afterwards C holds the lower factor L, C.T the upper L^T.
        info = torch.empty((), dtype=torch.int32, device=C.device)
        torch.linalg.cholesky_ex(C.T, upper=True, out=(C.T, info))
        if int(info) != 0:  # C was overwritten: rebuild it for the message
            C = op.dense()
            C.diagonal().add_(self.regularization)
            lam_min = float(torch.linalg.eigvalsh(0.5 * (C + C.T))[0])
            raise NotPositiveDefiniteError(
                "The curvature matrix plus 'regularization' is not positive definite "
                f"(smallest eigenvalue {lam_min:.3g} with regularization="
                f"{self.regularization!r}). Increase 'regularization' above "
                f"{max(-lam_min + self.regularization, 0):.3g} or use "
                "second_order='gauss_newton'."
            )
        self.cholesky_ = C.tril_()
        return self

    def solve(self, R: torch.Tensor) -> torch.Tensor:
        # Rows of R A^-1 with A = L L^T, by two triangular solves from the right:
        # unlike cholesky_solve, these do not copy the p x p factor.
        Y = torch.linalg.solve_triangular(self.cholesky_.T, R, upper=True, left=False)
        return torch.linalg.solve_triangular(self.cholesky_, Y, upper=False, left=False)


# ---------------------------------------------------------------------- low rank
def _lowrank_plus_shift_solve(U, lam, regularization, R):
    """Rows of ``(U diag(lam) U^T + rho I)^-1 R`` by the Woodbury identity.

    The component of ``R`` outside ``span(U)`` is divided by ``rho``, i.e. the curvature
    is taken as zero there.
    """
    coef = R @ U
    inside = (coef / (lam + regularization)) @ U.T
    outside = (R - coef @ U.T) / regularization
    return inside + outside


def _nystroem_sketch(op: CurvatureOperator, rank: int, generator) -> tuple:
    """Randomised Nystrom approximation ``C ~ U diag(lam) U^T`` of rank ``rank``.

    ``C ~ Y (Omega^T Y)^+ Y^T`` with ``Y = C Omega`` and an orthonormal Gaussian test
    matrix ``Omega`` (Hataya & Yamada, 2023; Frangella et al., 2023, Alg. 2.1). The core
    is pseudo-inverted through its eigendecomposition so that indefinite Hessians are
    handled; at ``rank = p`` the approximation is exact.
    """
    p = op.dim
    Omega = torch.randn(p, rank, generator=generator, dtype=op.dtype, device="cpu")
    Omega = torch.linalg.qr(Omega.to(op.device)).Q
    Y = op.matmat(Omega.T).T  # (p, rank)
    core = Omega.T @ Y
    d, V = torch.linalg.eigh(0.5 * (core + core.T))
    keep = d.abs() > d.abs().max() * rank * torch.finfo(op.dtype).eps
    d, V = d[keep], V[:, keep]
    B = Y @ (V / d.abs().sqrt())
    Q, Rq = torch.linalg.qr(B)
    M = (Rq * torch.sign(d)) @ Rq.T
    lam, W = torch.linalg.eigh(0.5 * (M + M.T))
    return Q @ W, lam


class _Nystroem:
    """Inverse of a randomised Nystrom sketch (Hataya & Yamada, 2023)."""

    def __init__(self, regularization: float, rank: int):
        self.regularization, self.rank = regularization, rank

    def fit(self, op: CurvatureOperator, generator=None) -> _Nystroem:
        self.U_, self.eigenvalues_ = _nystroem_sketch(op, min(self.rank, op.dim), generator)
        return self

    def solve(self, R: torch.Tensor) -> torch.Tensor:
        return _lowrank_plus_shift_solve(self.U_, self.eigenvalues_, self.regularization, R)


def _lanczos(op: CurvatureOperator, n_steps: int, generator) -> tuple:
    """Ritz pairs of ``C`` after ``n_steps`` Lanczos steps with full reorthogonalisation."""
    p = op.dim
    Q = torch.zeros(n_steps + 1, p, dtype=op.dtype, device=op.device)
    q = torch.randn(p, generator=generator, dtype=op.dtype, device="cpu").to(op.device)
    Q[0] = q / q.norm()
    alpha, beta = [], []
    for j in range(n_steps):
        w = op.matmat(Q[j : j + 1])[0]
        alpha.append(float(w @ Q[j]))
        for _ in range(2):  # twice is enough (Parlett's "twice is enough")
            w = w - Q[: j + 1].T @ (Q[: j + 1] @ w)
        b = float(w.norm())
        if b <= 1e3 * torch.finfo(op.dtype).eps * max(abs(a) for a in alpha):
            break
        beta.append(b)
        Q[j + 1] = w / b
    m = len(alpha)
    T = torch.diag(torch.tensor(alpha, dtype=op.dtype))
    off = torch.tensor(beta[: m - 1], dtype=op.dtype)
    T += torch.diag(off, 1) + torch.diag(off, -1)
    theta, S = torch.linalg.eigh(T)
    return theta.to(op.device), S.to(op.device).T @ Q[:m]


class _Arnoldi:
    """Top eigenpairs (largest magnitude) by Lanczos on curvature-vector products.

    Schioppa et al. (2022) use Arnoldi iterations; for a symmetric matrix these reduce to
    Lanczos, which is what we run (with full reorthogonalisation).

    Notes
    -----
    Unlike Schioppa et al., who project onto the top eigenspace only, the complement of the
    eigenspace is kept and divided by ``regularization`` (curvature taken as zero there),
    which is the exact inverse of ``U diag(lam) U^T + lambda I``.
    """

    def __init__(self, regularization: float, rank: int, n_steps: int | None = None):
        self.regularization, self.rank, self.n_steps = regularization, rank, n_steps

    def fit(self, op: CurvatureOperator, generator=None) -> _Arnoldi:
        rank = min(self.rank, op.dim)
        steps = self.n_steps or min(op.dim, 2 * rank + 20)
        theta, V = _lanczos(op, max(steps, rank), generator)
        top = torch.argsort(theta.abs(), descending=True)[:rank]
        self.eigenvalues_, V = theta[top], V[top]
        self.U_ = V.T
        return self

    def solve(self, R: torch.Tensor) -> torch.Tensor:
        return _lowrank_plus_shift_solve(self.U_, self.eigenvalues_, self.regularization, R)


# -------------------------------------------------------------------------- CG
def _jacobi_diagonal(op: CurvatureOperator, n_probes: int, generator) -> torch.Tensor:
    """Hutchinson estimate of ``diag(C)``: ``E[v * Cv]`` over Rademacher ``v``."""
    V = torch.randint(0, 2, (n_probes, op.dim), generator=generator).to(op.dtype) * 2 - 1
    V = V.to(op.device)
    return (V * op.matmat(V)).mean(0)


def _batched_cg(matmat, R, precondition, maxiter: int, rtol: float) -> tuple:
    """Preconditioned conjugate gradients on every row of ``R`` at once.

    Each right-hand side keeps its own step sizes; rows whose residual norm falls below
    ``rtol * ||r_0||`` are frozen, so later products only involve the active rows.
    Returns the solutions, the number of iterations per row and whether each row met
    the tolerance.
    """
    X = torch.zeros_like(R)
    res = R.clone()
    Z = precondition(res)
    P = Z.clone()
    rz = (res * Z).sum(1)
    tol = rtol * R.norm(dim=1)
    n_iter = torch.zeros(len(R), dtype=torch.long)
    active = torch.nonzero(res.norm(dim=1) > tol).flatten()
    for _ in range(maxiter):
        if len(active) == 0:
            break
        AP = matmat(P[active])
        alpha = rz[active] / (P[active] * AP).sum(1)
        X[active] += alpha[:, None] * P[active]
        res[active] -= alpha[:, None] * AP
        n_iter[active.cpu()] += 1
        Z_a = precondition(res[active])
        rz_new = (res[active] * Z_a).sum(1)
        beta = rz_new / rz[active]
        P[active] = Z_a + beta[:, None] * P[active]
        rz[active] = rz_new
        active = active[res[active].norm(dim=1) > tol[active]]
    return X, n_iter, (res.norm(dim=1) <= tol).cpu()


def _orthonormal_rows(M: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis (as rows) of the row space of ``M``, dropping dependent rows.

    From the eigendecomposition of the small Gram matrix ``M M^T`` rather than an SVD of
    ``M`` (two thin matrix products instead of an SVD of a ``k x p`` matrix: 2-3x faster
    for ``k = 100, p = 10^4``). Directions whose squared singular value is below
    ``max((max(M.shape) * eps)**2, eps)`` times the largest are dropped.
    The result is orthonormal up to ``eps`` times the squared condition number of the
    kept part, which is all block CG needs: it solves with ``P^T A P`` explicitly.
    """
    if len(M) == 0:
        return M
    lam, V = torch.linalg.eigh(M @ M.T)
    eps = torch.finfo(M.dtype).eps
    # The eigenvalues of the Gram matrix carry absolute errors of about eps * lam_max, so
    # the cut is never below eps (relative): what lies below is rounding, not direction.
    tol = max((max(M.shape) * eps) ** 2, eps)
    keep = lam > lam[-1] * tol if bool(lam[-1] > 0) else lam > 0
    return (V[:, keep].T @ M) / lam[keep].sqrt()[:, None]


def _block_cg(matmat, R, precondition, maxiter: int, rtol: float) -> tuple:
    """Breakdown-free block conjugate gradients on all rows of ``R`` together.

    All right-hand sides share one block Krylov subspace, so that with ``k`` of them the
    search space grows by up to ``k`` directions per product instead of one (Ji and Li,
    2017, Alg. 2). The search directions are re-orthonormalised at every step and those
    that became linearly dependent are dropped (rank-revealing), which is what keeps the
    block variant from breaking down. Rows whose residual norm falls below
    ``rtol * ||r_0||`` leave the block; the active rows are kept as compact arrays.

    References
    ----------
    Ji, H. and Li, Y. (2017). A breakdown-free block conjugate gradient method. BIT
    Numerical Mathematics 57.
    """
    X = torch.zeros_like(R)
    res = R.clone()
    tol = rtol * R.norm(dim=1)
    n_iter = torch.zeros(len(R), dtype=torch.long)
    active = torch.nonzero(res.norm(dim=1) > tol).flatten()
    if len(active) == 0:
        return X, n_iter, torch.ones(len(R), dtype=torch.bool)
    Xa, Ra, tol_a = X[active], res[active], tol[active]
    P = _orthonormal_rows(precondition(Ra))
    for _ in range(maxiter):
        Q = matmat(P)
        PtAP = P @ Q.T
        alpha = torch.linalg.solve(PtAP, P @ Ra.T)  # (m, k_active)
        Xa += alpha.T @ P
        Ra -= alpha.T @ Q
        n_iter[active.cpu()] += 1
        still = Ra.norm(dim=1) > tol_a
        if not bool(still.all()):
            X[active[~still]], res[active[~still]] = Xa[~still], Ra[~still]
            active, Xa, Ra, tol_a = active[still], Xa[still], Ra[still], tol_a[still]
            if len(active) == 0:
                break
        Z = precondition(Ra)
        beta = -torch.linalg.solve(PtAP, Q @ Z.T)  # (m, k_active)
        P = _orthonormal_rows(Z + beta.T @ P)
        if len(P) == 0:
            break
    X[active], res[active] = Xa, Ra
    return X, n_iter, (res.norm(dim=1) <= tol).cpu()


class _CG:
    """Block conjugate gradients on ``C + lambda I`` (plain CG for one right-hand side).

    ``preconditioner`` is ``None``, ``"jacobi"`` (Hutchinson diagonal) or ``"nystroem"``
    (randomised Nystrom preconditioner of rank ``rank``, Frangella et al., 2023, Eq. (5.3);
    see also Martens, 2020 and Frantar et al., 2021).
    """

    def __init__(self, regularization, maxiter, rtol, preconditioner=None, rank=10):
        self.regularization, self.maxiter, self.rtol = regularization, maxiter, rtol
        self.preconditioner, self.rank = preconditioner, rank

    def fit(self, op: CurvatureOperator, generator=None) -> _CG:
        self.op_ = op
        if self.preconditioner == "jacobi":
            d = _jacobi_diagonal(op, max(self.rank, 1), generator).clamp_min(0)
            self.diagonal_ = d + self.regularization
        elif self.preconditioner == "nystroem":
            self.U_, lam = _nystroem_sketch(op, min(self.rank, op.dim), generator)
            self.eigenvalues_ = lam.clamp_min(0)
        return self

    def _precondition(self, R: torch.Tensor) -> torch.Tensor:
        if self.preconditioner == "jacobi":
            return R / self.diagonal_
        if self.preconditioner == "nystroem":
            lam = self.eigenvalues_
            return _nystroem_precondition(self.U_, lam, float(lam.min()), self.regularization, R)
        return R

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        return self.op_.matmat(V) + self.regularization * V

    def solve(self, R: torch.Tensor) -> torch.Tensor:
        cg = _block_cg if len(R) > 1 else _batched_cg
        X, self.n_iter_, self.converged_ = cg(self._matmat, R, self._precondition,
                                              self.maxiter, self.rtol)
        return X


def _nystroem_precondition(U, lam, lam_r, reg, R):
    """``P^-1 R`` with ``P^-1 = (lam_r + mu) U (L + mu)^-1 U^T + (I - U U^T)``."""
    coef = R @ U
    return ((lam_r + reg) * coef / (lam + reg)) @ U.T + R - coef @ U.T


# ----------------------------------------------------------------------- LiSSA
def _power_iteration(op: CurvatureOperator, n_iter: int, generator,
                     batch: int | None = None) -> float:
    """Largest-magnitude eigenvalue of ``C`` (or of one mini-batch's curvature)."""
    v = torch.randn(1, op.dim, generator=generator, dtype=op.dtype).to(op.device)
    lam = 0.0
    for _ in range(n_iter):
        v = v / v.norm()
        w = op.matmat(v, batch=batch)
        lam = float((w * v).sum())
        v = w
    return abs(lam)


class _LiSSA:
    """Linear-time stochastic second-order algorithm (Agarwal et al., 2017, Alg. 1).

    Iterates ``x <- r + x - (C_b + lambda I) x / scale`` with a mini-batch ``b`` of the
    training rows at each step, and returns ``x / scale``. ``scale`` must exceed the
    largest eigenvalue of ``C + lambda I``; when None it is estimated by power iteration
    and multiplied by 1.5, on up to 8 of the mini-batches (the largest of their top
    eigenvalues); an iteration that diverges anyway raises a ValueError.

    Notes
    -----
    Departures from Agarwal et al.:

    - Mini-batches: the rows are shuffled once and cut into fixed mini-batches of
      ``op.batch_size`` rows; each step takes the next mini-batch of a random order that
      is redrawn every epoch (sampling without replacement, as a shuffled data loader
      does). Fixed mini-batches let the first-order pass on each of them be done once
      (:meth:`CurvatureOperator.matmat`), so a step costs only the second-order pass.
    - Averaging and stopping: with mini-batches the iterate never settles; it fluctuates
      around the solution, so a relative change per step never falls below a small
      ``rtol``. The iterates are therefore averaged over windows of ``n_batches``
      steps clipped to [20, 50] (a whole number of epochs on small data; short enough
      that ``maxiter`` holds several windows on large data; Polyak & Juditsky, 1992).
      A right-hand side stops when the relative change between consecutive window means
      falls below ``rtol`` (then its last iterate is returned) or stops decreasing, which
      means that the noise floor is reached (then the mean of its last two windows is
      returned, which averages the noise out). A right-hand side that reaches ``maxiter``
      first returns its last iterate and is marked in ``converged_``. A single chain is
      run.

    References
    ----------
    Polyak, B. T. and Juditsky, A. B. (1992). Acceleration of stochastic approximation by
    averaging. SIAM J. Control and Optimization 30(4).
    """

    def __init__(self, regularization, maxiter, rtol, scale=None):
        self.regularization, self.maxiter, self.rtol = regularization, maxiter, rtol
        self.scale = scale

    def fit(self, op: CurvatureOperator, generator=None) -> _LiSSA:
        generator = torch.Generator() if generator is None else generator
        # Every solve replays the same batch order, so a row's solution does not depend
        # on the other rows solved with it nor on how many solves came before.
        self.order_seed_ = int(torch.randint(2**62, (1,), generator=generator))
        self.op_ = op.shuffled(generator)
        if self.scale is None:
            # Each step applies one mini-batch's curvature, so the scale must bound those,
            # not only their mean: the largest top eigenvalue over up to 8 batches.
            n_batches = len(self.op_.batches)
            picks = torch.linspace(0, n_batches - 1, min(n_batches, 8)).round().long()
            top = max(_power_iteration(self.op_, 20, generator, batch=int(b))
                      for b in picks.unique())
            self.scale_ = 1.5 * (top + self.regularization)
        else:
            self.scale_ = float(self.scale)
        return self

    def solve(self, R: torch.Tensor) -> torch.Tensor:
        n_batches = len(self.op_.batches)
        window = min(max(n_batches, 20), 50)
        k = len(R)
        X, out = R.clone(), torch.empty_like(R)
        window_sum, last_mean = torch.zeros_like(R), torch.zeros_like(R)
        last_change = torch.full((k,), float("inf"), dtype=R.dtype, device=R.device)
        self.n_iter_ = torch.zeros(k, dtype=torch.long)
        self.converged_ = torch.zeros(k, dtype=torch.bool)
        active = torch.arange(k, device=R.device)
        generator = torch.Generator().manual_seed(self.order_seed_)
        order = torch.randperm(n_batches, generator=generator)
        for step in range(self.maxiter):
            if len(active) == 0:
                break
            if step % n_batches == 0 and step > 0:
                order = torch.randperm(n_batches, generator=generator)
            Xa = X[active]
            CX = self.op_.matmat(Xa, batch=int(order[step % n_batches]))
            Xa = Xa + R[active] - (CX + self.regularization * Xa) / self.scale_
            X[active] = Xa
            # ||x|| <= scale ||r|| / lambda_min(C + lambda I): far beyond that, it diverges.
            bound = 1e6 * self.scale_ * R[active].norm(dim=1) / self.regularization
            if not bool(torch.isfinite(Xa).all()) or bool((Xa.norm(dim=1) > bound).any()):
                raise ValueError(
                    f"LiSSA diverged after {step + 1} steps: a mini-batch's curvature "
                    f"exceeds scale={self.scale_:.4g} (the iteration needs scale above the "
                    "largest eigenvalue of every mini-batch's curvature plus "
                    "regularization). Pass a larger 'scale' or 'batch_size'."
                )
            window_sum[active] += Xa
            self.n_iter_[active.cpu()] += 1
            if (step + 1) % window:
                continue
            mean = window_sum[active] / window
            change = (mean - last_mean[active]).norm(dim=1) / mean.norm(dim=1).clamp_min(1e-30)
            small, floor = change < self.rtol, change >= last_change[active]
            done = small | floor
            if done.any():
                averaged = 0.5 * (mean + last_mean[active])
                out[active[done]] = torch.where(small[:, None], Xa, averaged)[done]
                self.converged_[active[done].cpu()] = True
            last_mean[active], last_change[active] = mean, change
            window_sum[active] = 0
            active = active[~done]
        out[active] = X[active]
        return out / self.scale_


# ----------------------------------------------------------------------- blocks
class _BlockDiagonal:
    """Apply one solver per diagonal block (``block_structure="layer"``)."""

    def __init__(self, make_solver, blocks: list[slice]):
        self.make_solver, self.blocks = make_solver, blocks

    def fit(self, op: CurvatureOperator, generator=None) -> _BlockDiagonal:
        self.solvers_ = [self.make_solver().fit(op.restrict(b), generator) for b in self.blocks]
        return self

    def solve(self, R: torch.Tensor) -> torch.Tensor:
        out = torch.cat([s.solve(R[:, b]) for s, b in zip(self.solvers_, self.blocks)], dim=1)
        masks = [s.converged_ for s in self.solvers_ if hasattr(s, "converged_")]
        if masks:  # a row converged when it did in every block
            self.converged_ = torch.stack(masks).all(0)
        return out
