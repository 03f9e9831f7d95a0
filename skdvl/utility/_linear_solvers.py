"""The solvers of the batched linear fits (:mod:`skdvl.utility._linear_batch`).

Every function works on a block of coalitions at once: ``Z`` holds each
coalition's rows gathered and padded (``s`` the rows' weights, 0 for padding),
so one vectorised step advances every coalition. Binary logistic regression
takes damped Newton steps with exact Hessians; multinomial problems exact Newton
steps when small, Newton-CG otherwise (block-Jacobi preconditioned for coalitions of
few rows); least squares solves the weighted normal
equations (minimum norm where rank-deficient). The binary solver runs on the
array back ends of :mod:`skdvl.utility._linear_backends` (numpy, or torch).
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import lstsq

from skdvl.utility._linear_backends import NUMPY

_DEC_RTOL = 1e-14  # Newton decrement g'H^-1 g, relative to the current objective
_DEC_FLOOR = 1e-11  # below this, a decrement that stops shrinking is round-off
_FULL_STEP = 1e-10  # below this decrement, take the Newton step without line search
_SAFE_MOVE = 0.1  # nor when no training decision moves by more (logit units)
_STEP_TOL = 1e-7  # converged: no coefficient step moves the decision by more (logit units,
_STEP_FLOOR = 16 * np.finfo(float).eps  # relative below 1 logit, never below round-off)
_CHORD = 1e-2  # keep the Hessian while steps move training decisions less than this
_MAX_NEWTON = 100
_MAX_CG = 250
_DIRECT_MAX = 64  # multinomial problems with K * p up to this take exact Newton steps
_FORCING = 0.5  # CG stops at a residual of min(0.5, (|g| / |g0|) ** _FORCING) |g|
#: multinomial coalitions padded to at most this many rows are preconditioned by their
#: exact class blocks (through m x m Woodbury systems); larger ones by a scaled Gram
_BLOCKS_MAX_ROWS = 32
_BLOCK_CHORD = 0.3  # keep the blocks while no training decision moved more (logit)


# --------------------------------------------------------------------------- solvers

def _mv(A, x):
    """Batched ``A @ x`` for A (c, m, p) and x (c, p) or (c, p, k)."""
    return (A @ x[..., None])[..., 0] if x.ndim == 2 else A @ x


def _tmv(A, r):
    """Batched ``A.T @ r`` for A (c, m, p) and r (c, m) or (c, m, k)."""
    At = np.swapaxes(A, 1, 2)
    return (At @ r[..., None])[..., 0] if r.ndim == 2 else At @ r


def _spd_equilibrate(H, ops=NUMPY):
    """A batch of SPD matrices, Jacobi-equilibrated: ``(Hs, D)`` with ``H = D Hs D``.

    D is the square root of H's diagonal (a vector). Solve with
    :func:`_equilibrated_solve`, which is better conditioned than with H.
    """
    D = ops.sqrt(ops.maximum(ops.diagonal(H), np.finfo(float).tiny))
    return H / (D[:, :, None] * D[:, None, :]), D


def _equilibrated_solve(Hs, D, g, ops=NUMPY):
    """``H^-1 g`` for each system of a batch (NaN where ``Hs`` is singular).

    LAPACK's LU solve, one matrix at a time: a system's result does not depend
    on the others in the batch (and a solve costs a third of an inverse).
    """
    return ops.solve(Hs, (g / D)[..., None])[..., 0] / D


def _armijo(fun, f, dec, full, ops=NUMPY):
    """Step lengths 1, 1/2, ... with Armijo's sufficient decrease; 0 where none.

    ``full`` marks the systems that take the full step unchecked (close enough
    to the optimum that the quadratic model holds).
    """
    t = ops.ones(full.shape[0])
    todo = ~full
    for _ in range(60):
        if not todo.any():
            break
        sel = ops.flatnonzero(todo)
        good = fun(t[sel], sel) <= f[sel] - 1e-4 * t[sel] * dec[sel]
        todo[sel[good]] = False
        t[sel[~good]] *= 0.5
    t[todo] = 0.0
    return t


def _converged(dec, f, f_prev, move, tol):
    """Converged, or at the round-off floor: the objective no longer decreases.

    ``dec`` is the Newton decrement, relative to ``f``, the objective at the
    current point (positive: the loss is), and ``move`` the largest change of a
    coefficient times its feature's root mean square (logit units): both must
    be tiny, ``move <= tol`` (:func:`_step_tol`). ``f_prev`` is the objective one
    iteration earlier; a stalled objective ends small-decision fits (``tol <
    _STEP_TOL``) only once ``move <= tol``: its round-off, ``eps f``, then
    exceeds the decrease still to come.
    """
    stalled = f_prev - f <= 16 * np.finfo(float).eps * f
    small_step = move <= tol
    return (((dec <= _DEC_RTOL * f) & small_step)
            | ((dec <= _DEC_FLOOR * f) & stalled & (small_step | (tol >= _STEP_TOL))))


def _step_tol(size, ops=NUMPY):
    """The converged step (logit units) of fits whose largest training decision is
    ``size``: ``_STEP_TOL``, times ``size`` below 1 logit, at least ``_STEP_FLOOR``.

    With a tiny ``C`` the decisions are of order ``C`` (the intercept aside): the
    tolerance follows their scale, not an absolute 1e-7 logit.
    """
    return ops.maximum(_STEP_TOL * ops.clip(size, 0.0, 1.0), _STEP_FLOOR)


def _zero_is_optimal(Z, r, ops=NUMPY):
    """Which coalitions have their optimum at 0, up to round-off.

    ``r`` (c, m) or (c, m, k) are the loss residuals at 0, where the gradient is
    ``Z' r`` (the penalty adds nothing). When each of its components is within
    the round-off of its sum (``m eps sum_i |z_i r_i|``), 0 is the optimum of the
    strictly convex objective, as scikit-learn's solvers return it (they start at
    0 and stop there): the decisions are exactly 0 and tie as ``predict`` breaks
    ties (the first class), where Newton steps would end at noise of either sign
    (e.g. balanced coalitions on constant features).
    """
    m = Z.shape[1]
    if r.ndim == 2:
        g = ops.einsum("cmp,cm->cp", Z, r)
        bound = ops.einsum("cmp,cm->cp", ops.abs(Z), ops.abs(r))
    else:
        g, bound = _tmv(Z, r), _tmv(np.abs(Z), np.abs(r))
    return (ops.abs(g) <= m * np.finfo(float).eps * bound).reshape(Z.shape[0], -1).all(axis=1)


def _column_scale(Z, s, ops=NUMPY):
    """Root mean square of each column over each coalition's rows (padding is 0)."""
    return ops.sqrt(ops.einsum("cmp,cmp->cp", Z, Z)
                    / ops.maximum((s > 0).sum(axis=1), 1)[:, None])


class _Active:
    """The coalitions of a block still iterating, with their arrays compacted."""

    def __init__(self, ops=NUMPY, **arrays):
        self.names = list(arrays)
        self.__dict__.update(arrays)
        self.pos = ops.arange(next(iter(arrays.values())).shape[0])

    def keep(self, still):
        if not still.all():
            self.pos = self.pos[still]
            for name in self.names:
                setattr(self, name, getattr(self, name)[still])


def _newton_binomial(Z, y, s, C, fit_intercept, theta0=None, ops=NUMPY):
    """Minimise C * sum_i s_i logloss(y_i, z_i) + ||w||^2 / 2 per coalition.

    ``z = Z @ theta``; the last coordinate is the unpenalised intercept when
    ``fit_intercept``. This is scikit-learn's objective (``LinearModelLoss``
    with ``l2_reg_strength = 1 / (C * sum(s))``, times ``C * sum(s)``). Damped
    Newton with exact Hessians and Armijo backtracking (skipped once no training
    decision moves by more than ``_SAFE_MOVE``: the loss's curvature then
    changes by at most a factor exp(0.1) along the step, and the full step
    descends); once steps move the training decisions by less than ``_CHORD``
    the last Hessian is kept (chord steps: its weights p(1 - p) then change by
    about as little).

    ``ops`` is the back end (:func:`backend`): numpy arrays in and out by
    default, torch tensors of one device with the torch back end.

    Returns theta (c, p), iterations (c,) and which converged (c,).
    """
    c, _, p = Z.shape
    reg = ops.ones(p)
    reg[-1] = 0.0 if fit_intercept else 1.0
    theta, n_iter, ok = ops.zeros((c, p)), ops.zeros(c, np.intp), ops.zeros(c, bool)
    if theta0 is not None:
        theta[:] = theta0
    a = _Active(ops, Z=Z, Zt=ops.transpose_copy(Z), q=1.0 - 2.0 * y, s=s,
                f_prev=ops.full(c, np.inf), Hs=ops.zeros((c, p, p)), D=ops.ones((c, p)),
                scale=_column_scale(Z, s, ops), moved=ops.full(c, np.inf))
    zero = _zero_is_optimal(Z, 0.5 * s * a.q, ops)  # the gradient at 0, up to C
    theta[zero], ok[zero] = 0.0, True
    a.keep(~zero)

    def objective(z, th, q, s_):  # log(1 + exp(q z)) with q = 1 - 2y: no cancellation
        return (C * (s_ * ops.logaddexp0(q * z)).sum(axis=1)
                + 0.5 * (reg * th ** 2).sum(axis=1))

    for it in range(1, _MAX_NEWTON + 1):
        if a.pos.shape[0] == 0:
            break
        th = theta[a.pos]
        z = _mv(a.Z, th)
        pq = ops.expit(a.q * z)  # the probability of the other class
        g = C * (a.Zt @ (a.s * a.q * pq)[..., None])[..., 0] + reg * th
        fresh = a.moved > _CHORD
        if fresh.any():
            j = slice(None) if fresh.all() else ops.flatnonzero(fresh)
            B = a.Z[j] * ops.sqrt(C * a.s[j] * pq[j] * (1.0 - pq[j]))[..., None]
            H = ops.swapaxes(B, 1, 2) @ B  # numpy takes B'B as a symmetric rank-k update
            H[:, ops.arange(p), ops.arange(p)] += reg
            a.Hs[j], a.D[j] = _spd_equilibrate(H, ops)
        step = -_equilibrated_solve(a.Hs, a.D, g, ops)
        solved = ops.isfinite(step).all(axis=1)
        step[~solved] = 0.0
        dec = -(g * step).sum(axis=1)
        f = objective(z, th, a.q, a.s)
        dz, valid = _mv(a.Z, step), a.s > 0
        conv = solved & _converged(dec, f, a.f_prev, ops.amax(ops.abs(step * a.scale), 1),
                                   _step_tol(ops.amax(ops.abs(z * valid), 1), ops))
        move = ops.amax(ops.abs(dz * valid), 1)
        full = conv | (dec < _FULL_STEP * f) | (move <= _SAFE_MOVE) | ~solved

        def trial(t_, j, z=z, dz=dz, th=th, step=step):
            return objective(z[j] + t_[:, None] * dz[j], th[j] + t_[:, None] * step[j],
                             a.q[j], a.s[j])

        t = _armijo(trial, f, dec, full, ops)
        theta[a.pos] = th + t[:, None] * step
        n_iter[a.pos] = it
        ok[a.pos] = conv
        a.f_prev, a.moved = f, t * move
        a.keep(~conv & solved & (t > 0))
    return theta, n_iter, ok


def _newton_multinomial(Z, codes, s, present, C, fit_intercept, theta0=None):
    """Minimise C * sum_i s_i (-log softmax_{y_i}) + ||W||^2 / 2 per coalition.

    Over the classes present in each coalition (the others are fixed at 0 and
    left out of the softmax, as scikit-learn fits only the classes it sees).
    The intercepts are unpenalised but only defined up to a common shift; the
    term ``mu / 2 * (sum_k b_k)^2`` picks the representative with sum 0 (the one
    scikit-learn's solvers return) and makes the Hessian definite. Exact Newton
    steps while ``K * p <= _DIRECT_MAX``; beyond, truncated Newton whose steps
    come from preconditioned conjugate gradients on exact Hessian-vector
    products. The preconditioner: for coalitions of at most ``_BLOCKS_MAX_ROWS``
    (padded) rows, the exact diagonal blocks of the Hessian, one per class
    (:class:`_ClassBlocks`, kept while decisions move less than ``_BLOCK_CHORD``),
    projected onto the zero-sum subspace where the iterates then stay
    (:func:`_zero_sum`); for larger ones, each class's block as a multiple of the
    weighted Gram matrix plus the penalty, projected the same way. Armijo
    backtracking in both.

    Returns theta (c, K, p), iterations (c,) and which converged (c,).
    """
    c, _, p = Z.shape
    K = present.shape[1]
    reg = np.ones(p)
    reg[-1] = 0.0 if fit_intercept else 1.0
    S = s.sum(axis=1)
    mu = C * S / 4 if fit_intercept else np.zeros(c)
    Y = (codes[..., None] == np.arange(K)) * 1.0
    theta, n_iter, ok = np.zeros((c, K, p)), np.zeros(c, np.intp), np.zeros(c, bool)
    if theta0 is not None:
        theta[:] = theta0 * present[:, :, None]
        if fit_intercept:
            theta[:, :, -1] -= (theta[:, :, -1].sum(axis=1) / present.sum(axis=1))[:, None]
            theta[:, :, -1] *= present
        if K * p > _DIRECT_MAX:  # the conjugate gradients keep the iterates zero-sum
            theta[:] = _zero_sum(theta, present)
    blocks = K * p > _DIRECT_MAX and Z.shape[1] <= _BLOCKS_MAX_ROWS
    if K * p > _DIRECT_MAX and not blocks:
        B = Z * np.sqrt(s)[..., None]
        lam, V = np.linalg.eigh(np.swapaxes(B, 1, 2) @ B)  # of the weighted Gram Z'SZ
    else:
        lam, V = np.zeros((c, 0)), np.zeros((c, 0, 0))
    a = _Active(Z=Z, Y=Y, s=s, pm=present[:, :, None] * 1.0, mu=mu, S=S,
                present=present, lam=lam, V=V, f_prev=np.full(c, np.inf),
                g0=np.full(c, np.nan), scale=_column_scale(Z, s), moved=np.full(c, np.inf))
    cb = None
    uniform = present[:, None, :] / present.sum(axis=1)[:, None, None]  # P at theta = 0
    zero = _zero_is_optimal(Z, s[..., None] * (uniform - Y))
    theta[zero], ok[zero] = 0.0, True
    a.keep(~zero)

    def objective(R, th, j=slice(None)):
        """f, the probabilities P and the residuals P - Y, without cancellation."""
        Rm = np.where(a.pm[j].transpose(0, 2, 1) > 0, R, -np.inf)
        top = np.argmax(Rm, axis=2)[..., None]
        mx = np.take_along_axis(Rm, top, axis=2)
        e = np.exp(Rm - mx)
        at_top = np.arange(K) == top
        rest = np.where(at_top, 0.0, e).sum(axis=2, keepdims=True)  # 1 + rest = sum(e)
        loss = np.log1p(rest[..., 0]) + mx[..., 0] - (R * a.Y[j]).sum(axis=2)
        f = C * (a.s[j] * loss).sum(axis=1) + 0.5 * (reg * th ** 2).sum(axis=(1, 2))
        f += 0.5 * a.mu[j] * th[:, :, -1].sum(axis=1) ** 2
        P = e / (1.0 + rest)
        resid = np.where(at_top & (a.Y[j] > 0), -rest / (1.0 + rest), P - a.Y[j])
        return f, P, resid

    def penalty_hv(V):
        out = reg * V
        out[:, :, -1] += a.mu[:, None] * V[:, :, -1].sum(axis=1, keepdims=True)
        return out

    for it in range(1, _MAX_NEWTON + 1):
        if a.pos.size == 0:
            break
        th = theta[a.pos]
        R = _mv(a.Z, np.swapaxes(th, 1, 2))
        f, P, resid = objective(R, th)
        sP = a.s[..., None] * P
        g = (C * np.swapaxes(_tmv(a.Z, a.s[..., None] * resid), 1, 2) + penalty_hv(th)) * a.pm
        if blocks:
            # the iterates are zero-sum (the optimum is): so are the gradient and the
            # steps; the preconditioner is the exact block diagonal, projected, kept
            # while the steps move the training decisions by less than _BLOCK_CHORD
            g = _zero_sum(g, a.present)
            if cb is None:
                cb = _ClassBlocks(a.Z, C * sP * (1.0 - P), reg)
            else:
                stale = np.flatnonzero(a.moved > _BLOCK_CHORD)
                if stale.size:
                    cb.update(stale, a.Z, C * sP * (1.0 - P), reg)

            prec = _projected(cb.solve, a.present)
        elif K * p > _DIRECT_MAX:
            # class a's Hessian block approximated by C k_a Z'SZ + I, k_a the weighted
            # mean of P_a (1 - P_a), applied in the Gram's eigenbasis
            kappa = (sP * (1.0 - P)).sum(axis=1) / a.S[:, None]
            denom = C * kappa[:, :, None] * a.lam[:, None, :] + 1.0

            g = _zero_sum(g, a.present)  # projected too (fewer CG iterations, ~10%)

            def gram(Rv, V=a.V, denom=denom):
                return ((Rv @ V) / denom) @ np.swapaxes(V, 1, 2)

            prec = _projected(gram, a.present)

        gn = np.sqrt((g ** 2).sum(axis=(1, 2)))
        a.g0 = np.where(np.isnan(a.g0), gn, a.g0)

        def hv(V, Zb=a.Z, sPb=sP, Pb=P):
            RV = _mv(Zb, np.swapaxes(V, 1, 2))
            Q = sPb * RV - sPb * (Pb * RV).sum(axis=2, keepdims=True)
            return (C * np.swapaxes(_tmv(Zb, Q), 1, 2) + penalty_hv(V)) * a.pm

        if K * p <= _DIRECT_MAX:
            step, solved = _multinomial_direct_step(a.Z, a.s, P, g, a.pm, C, reg, a.mu)
        else:
            eta = np.minimum(0.5, (gn / np.maximum(a.g0, np.finfo(float).tiny)) ** _FORCING)
            step, solved = _pcg(hv, -g, prec, eta * gn), np.ones(g.shape[0], bool)
        dec = -(g * step).sum(axis=(1, 2))
        valid = (a.s > 0)[..., None]
        conv = solved & _converged(dec, f, a.f_prev,
                                   np.abs(step * a.scale[:, None, :]).max(axis=(1, 2)),
                                   _step_tol(np.abs(R * valid).max(axis=(1, 2))))
        dR = _mv(a.Z, np.swapaxes(step, 1, 2))
        move = np.abs(dR * valid).max(axis=(1, 2))

        def trial(t_, j, R=R, dR=dR, th=th, step=step):
            return objective(R[j] + t_[:, None, None] * dR[j],
                             th[j] + t_[:, None, None] * step[j], j)[0]

        t = _armijo(trial, f, dec,
                    conv | (dec < _FULL_STEP * f) | (move <= _SAFE_MOVE) | ~solved)
        theta[a.pos] = th + t[:, None, None] * step
        n_iter[a.pos] = it
        ok[a.pos] = conv
        a.f_prev, a.moved = f, t * move
        still = ~conv & solved & (t > 0)
        a.keep(still)
        if cb is not None and not still.all():
            cb = cb.take(still)
    return theta, n_iter, ok


def _zero_sum(V, present):
    """``V`` (c, K, p) projected onto ``sum_a V_a = 0`` over the present classes (the
    absent ones 0): the multinomial optimum lies there, since the loss is invariant
    along ``(u, ..., u)``, where the penalty alone curves (the intercepts' ``mu`` term
    picks the same representative)."""
    if present.all():
        return V - V.mean(axis=1, keepdims=True)
    pm = present[..., None]
    mean = (V * pm).sum(axis=1, keepdims=True) / present.sum(axis=1)[:, None, None]
    return (V - mean) * pm


def _projected(solve, present):
    """The preconditioner ``solve`` followed by :func:`_zero_sum`."""
    return lambda Rv: _zero_sum(solve(Rv), present)


class _ClassBlocks:
    """The diagonal blocks of the multinomial Hessian, one per class, and their
    inverses applied: ``B_a = Z' diag(w_a) Z + diag(reg)`` with ``w = C s P (1 - P)``
    (c, m, K), a block-Jacobi preconditioner (the coupling between classes is the low
    rank part ``-P P'`` of each row's curvature).

    With fewer rows than features, by the Woodbury identity through ``m x m`` systems
    (the unpenalised intercept, the last coordinate when ``reg[-1] == 0``, by its
    Schur complement); else by ``p x p`` inverses. An intercept's block gets a floor
    of 1e-8 of its scale (a preconditioner only steers the conjugate gradients).
    ``update`` recomputes some systems' blocks, ``take`` keeps some systems.
    """

    def __init__(self, Z, w, reg, dense=False):
        c, m, p = Z.shape
        reg = np.broadcast_to(reg, (c, p))
        self.fi = bool(reg[0, -1] == 0)
        self.low_rank = m < p - self.fi and not dense  # else ``f["inv"]``: p x p inverses
        self.f = self._compute(Z, w, reg)

    def update(self, j, Z, w, reg):
        """Recompute the blocks of systems ``j`` (from their rows, weights, penalty)."""
        reg = np.broadcast_to(reg, (Z.shape[0], Z.shape[2]))
        for name, arr in self._compute(Z[j], w[j], reg[j]).items():
            self.f[name][j] = arr

    def take(self, keep):
        self.f = {name: arr[keep] for name, arr in self.f.items()}
        return self

    def _compute(self, Z, w, reg):
        c, m, p = Z.shape
        K = w.shape[2]
        wt = np.swapaxes(w, 1, 2)  # (c, K, m)
        if not self.low_rank:
            wZ = wt[..., None] * Z[:, None]  # (c, K, m, p)
            B = (np.swapaxes(wZ, 2, 3).reshape(c * K, p, m)
                 @ np.broadcast_to(Z[:, None], (c, K, m, p)).reshape(c * K, m, p))
            B = B.reshape(c, K, p, p)
            diag = np.diagonal(B, axis1=2, axis2=3)
            floor = 1e-8 * np.maximum(diag.max(axis=2, keepdims=True), 1.0)
            B[..., np.arange(p), np.arange(p)] += np.where(reg[:, None] > 0, reg[:, None],
                                                           floor)
            D = np.sqrt(np.diagonal(B, axis1=2, axis2=3))
            D2 = D[..., :, None] * D[..., None, :]
            return {"inv": np.linalg.inv(B / D2) / D2}
        d = p - self.fi
        Xf = Z[..., :d]
        Dinv = 1.0 / reg[:, None, :d]  # (c, 1, d)
        Xd = Xf * Dinv  # X D^-1
        G = Xd @ np.swapaxes(Xf, 1, 2)  # X D^-1 X' (c, m, m)
        om = np.sqrt(wt)
        N = om[..., :, None] * om[..., None, :] * G[:, None]
        N[..., np.arange(m), np.arange(m)] += 1.0
        f = {"Dinv": Dinv, "Xd": Xd, "om": om, "Ninv": np.linalg.inv(N)}  # N >= I
        if self.fi:
            z1 = Z[..., d]
            cvec = (wt * z1[:, None]) @ Xf  # X' W z1: (c, K, d)
            f["h"] = self._f_solve(cvec, f)
            gamma = (wt * z1[:, None] ** 2).sum(axis=2)
            f["sigma"] = np.maximum(gamma - (cvec * f["h"]).sum(axis=2),
                                    1e-8 * np.maximum(gamma, 1.0))
        return f

    @staticmethod
    def _f_solve(V, f):
        """``F_a^-1 V_a`` with ``F_a = D + X' W_a X`` (features only), by Woodbury."""
        U = V @ np.swapaxes(f["Xd"], 1, 2)  # X D^-1 v: (c, K, m)
        U = f["om"] * (f["Ninv"] @ (f["om"] * U)[..., None])[..., 0]
        return V * f["Dinv"] - U @ f["Xd"]

    def solve(self, V):
        """``B_a^-1 V_a`` for each class (V (c, K, p))."""
        f = self.f
        if not self.low_rank:
            return (f["inv"] @ V[..., None])[..., 0]
        if not self.fi:
            return self._f_solve(V, f)
        v, beta = V[..., :-1], V[..., -1]
        t = (beta - (f["h"] * v).sum(axis=2)) / f["sigma"]
        return np.concatenate([self._f_solve(v, f) - f["h"] * t[..., None], t[..., None]],
                              axis=2)


def _multinomial_direct_step(Z, s, P, g, pm, C, reg, mu):
    """The exact Newton step of the multinomial problem, for small ``K * p``.

    The loss Hessian is ``C sum_i s_i (diag(P_i) - P_i P_i') kron z_i z_i'``:
    per-class Gram blocks on the diagonal minus the product of ``P kron z``;
    absent classes get identity rows, so their (zero-gradient) step is 0.
    Returns the step and which systems were solved.
    """
    c, m, p = Z.shape
    K = P.shape[2]
    root = np.sqrt(C * s)[..., None, None]
    F = (P[..., None] * Z[:, :, None, :] * root).reshape(c, m, K * p)
    H = -(np.swapaxes(F, 1, 2) @ F)
    W = Z[:, None] * np.sqrt(C * s[:, None, :] * np.swapaxes(P, 1, 2))[..., None]
    blocks = np.swapaxes(W, 2, 3) @ W  # (c, K, p, p)
    for k in range(K):
        H[:, k * p:(k + 1) * p, k * p:(k + 1) * p] += blocks[:, k]
    keep = pm[:, :, 0].repeat(p, axis=1)
    H *= keep[:, :, None] * keep[:, None, :]
    H[:, np.arange(K * p), np.arange(K * p)] += np.where(keep > 0, np.tile(reg, K), 1.0)
    last = np.arange(K) * p + p - 1  # the intercepts (mu = 0 without them)
    H[:, last[:, None], last[None, :]] += (mu[:, None, None] * pm[:, :, 0, None]
                                           * pm[:, None, :, 0])
    step = -_equilibrated_solve(*_spd_equilibrate(H), g.reshape(c, K * p)).reshape(c, K, p)
    solved = np.isfinite(step).all(axis=(1, 2))
    return np.where(solved[:, None, None], step, 0.0) * pm, solved


def _pcg(hv, rhs, prec, atol):
    """Batched preconditioned conjugate gradients for H x = rhs, from x = 0.

    ``hv(V)`` and ``prec(R)`` apply the Hessian and the preconditioner; each
    system stops once its residual norm is at most its ``atol``.
    """
    x = np.zeros_like(rhs)
    r = rhs.copy()
    zr = prec(r)
    d = zr.copy()
    rz = (r * zr).sum(axis=(1, 2))
    active = np.sqrt((r ** 2).sum(axis=(1, 2))) > atol
    for _ in range(_MAX_CG):
        if not active.any():
            break
        Hd = hv(d)
        dHd = (d * Hd).sum(axis=(1, 2))
        alpha = np.where(active & (dHd > 0), rz / np.where(dHd > 0, dHd, 1.0), 0.0)
        x += alpha[:, None, None] * d
        r -= alpha[:, None, None] * Hd
        active &= (np.sqrt((r ** 2).sum(axis=(1, 2))) > atol) & (dHd > 0)
        zr = prec(r)
        rz_new = (r * zr).sum(axis=(1, 2))
        d = zr + (rz_new / np.where(rz > 0, rz, 1.0))[:, None, None] * d
        rz = rz_new
    return x


def _least_squares(Z, y, s, fit_intercept, alpha, tol):
    """Weighted ridge (alpha > 0) or minimum-norm least squares (alpha None).

    Solves min sum_i s_i (y_i - z_i w - b)^2 + alpha ||w||^2 through the
    weighted-centred normal equations. Least squares drops the directions whose
    singular value is below ``tol`` (a number, or one per coalition) times the
    largest (scikit-learn passes ``cond=tol`` to ``scipy.linalg.lstsq``);
    coalitions whose spectrum comes too close to that cut for the Gram matrix to
    decide it reliably, or whose kept directions the Gram matrix resolves poorly,
    are solved by ``lstsq`` itself.

    Returns coef (c, d), intercept (c,), singular values (c, d) or None, and
    which coalitions failed (ridge systems too ill-conditioned).
    """
    S = s.sum(axis=1)
    if fit_intercept:
        xbar = (Z * s[..., None]).sum(axis=1) / S[:, None]
        ybar = (y * s).sum(axis=1) / S
        Z, y = Z - xbar[:, None], y - ybar[:, None]
    Zs = Z * s[..., None]
    G = np.swapaxes(Zs, 1, 2) @ Z
    r = _tmv(Zs, y)
    coef, singular, failed, unsure = _normal_solve(G, r, alpha, tol)
    for j in np.flatnonzero(unsure):
        rows = s[j] > 0
        w = np.sqrt(s[j, rows])
        tol_j = np.broadcast_to(np.asarray(tol, dtype=np.float64), (Z.shape[0],))[j]
        coef[j], _, _, sv = lstsq(Z[j, rows] * w[:, None], y[j, rows] * w, cond=tol_j)
        singular[j] = 0.0
        singular[j, :sv.size] = sv
    intercept = ybar - (xbar * coef).sum(axis=1) if fit_intercept else np.zeros(Z.shape[0])
    return coef, intercept, singular, failed


def _normal_solve(G, r, alpha, tol):
    """Solve the (centred, weighted) normal equations ``G coef = r`` of a batch.

    Ridge (``alpha`` > 0) solves ``(G + alpha I) coef = r`` Jacobi-equilibrated and
    marks ``failed`` the systems too ill-conditioned to trust; least squares
    (``alpha`` None) keeps the eigen-directions of ``G`` whose singular value is at
    least ``tol`` times the largest (scikit-learn's ``lstsq(cond=tol)``) and marks
    ``unsure`` the systems with a spectrum so close to that cut that ``G`` cannot
    decide it (the caller solves those from the rows). ``G`` is modified (ridge).

    Returns coef (c, d), singular values (c, d) or None, failed (c,), unsure (c,).
    """
    singular, failed = None, np.zeros(G.shape[0], bool)
    unsure = np.zeros(G.shape[0], bool)
    if alpha is not None:
        d = G.shape[1]
        G[:, np.arange(d), np.arange(d)] += alpha
        D = np.sqrt(np.diagonal(G, axis1=1, axis2=2))
        Gs = G / (D[:, :, None] * D[:, None, :])
        lam = np.linalg.eigvalsh(Gs)
        failed = lam[:, 0] <= 1e-12 * lam[:, -1]
        coef = np.linalg.solve(Gs, (r / D)[..., None])[..., 0] / D
    else:
        lam, V = np.linalg.eigh(G)
        top = lam[:, -1:]
        tol = np.broadcast_to(np.asarray(tol, dtype=np.float64), (G.shape[0],))
        cut = tol[:, None] ** 2 * top
        keep = (lam >= cut) & (top > 0)
        coef = _mv(V, np.where(keep, _tmv(V, r) / np.where(keep, lam, 1.0), 0.0))
        singular = np.sqrt(np.clip(lam, 0.0, None))[:, ::-1]
        unsure = ((lam > 0.25 * cut) & (lam < np.maximum(4 * cut, 1e-8 * top))).any(axis=1)
        unsure &= top[:, 0] > 0
    return coef, singular, failed, unsure
