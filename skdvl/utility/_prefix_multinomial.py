"""Multinomial logistic prefixes for :mod:`skdvl.utility._prefix_walk`: prefix ``k + 1``
from prefix ``k`` by warm-started truncated Newton.

Each walk keeps the optimum ``theta`` (K, p) of its current prefix and the decisions
``R = X theta'`` of its rows. Adding a row starts prefix ``k + 1`` at prefix ``k``'s
optimum, where the gradient is the new row's alone. With ``d`` near the number of rows
(digits: 64 features, 10 classes) the new row is typically fitted almost exactly, its
decisions moving by logits; a *predictor* takes that move first: with the other rows'
Hessian replaced by its block diagonal (below), the new row's decisions ``r0 + u``
solve the K-dimensional problem ``min_u sum_a u_a^2 / (2 G_a) + C s loss(r0 + u)``
(``G_a = x' B_a^-1 x``, the row's leverage in class ``a``'s block), solved by Newton's
method, and the coefficients move by ``B_a^-1 x u_a / G_a`` (the one-row update of the
Newton step, Sherman-Morrison on each block). That saves one or two of the ~6 Newton
iterations a prefix needs on digits.

The iterations are truncated Newton (Nocedal & Wright, 2006, "Numerical
Optimization", Algorithm 7.1): each step solves the Newton system by preconditioned
conjugate gradients on exact Hessian-vector products over the prefix's rows, ``H v =
C X' (S (P o (X v') - P ((P o X v') 1))) + reg v`` (the softmax Hessian, block
diagonal plus low rank per row, never formed), to a relative residual
``|g| / |g_1|`` clipped to ``[_ETA_MIN, _ETA_MAX]`` (the forcing sequence of
Eisenstat & Walker, 1996, SIAM J. Sci. Comput. 17(1), choice 2), with Armijo
backtracking where a training decision moves by more than ``_SAFE_MOVE``. The
iterates stay in the subspace ``sum_a theta_a = 0`` over the present classes: the
loss is invariant along ``(u, ..., u)``, where the penalty alone has curvature, so the
optimum (scikit-learn's, and the batched path's representative for the intercepts)
lies there. The preconditioner is block Jacobi, projected onto that subspace: per
class ``a``, the Hessian's diagonal block ``B_a = C X' S diag(P_a (1 - P_a)) X +
diag(reg)`` (:class:`~skdvl.utility._linear_solvers._ClassBlocks`; projected, its
condition number on digits prefixes was 2.5-4.3, against 46-92 for the batched path's
scaled Gram matrix). Up to ``_BLOCKS_MAX_ROWS`` rows it is exact at the current point
(Woodbury, through ``k x k`` systems); beyond, each walk keeps the blocks' ``p x p``
inverses, updated by a Sherman-Morrison term per added row (at its predicted
decisions) and recomputed once the decisions' root mean square moved by
``_PREC_DRIFT`` logit (or a class appeared), applied in single precision (it only
steers the conjugate gradients, whose residuals are exact in double).

A walk stops by the convergence test of the batched path
(:func:`~skdvl.utility._linear_solvers._converged` on the exact objective, Newton
decrement and coefficient move in the batched path's coordinates) and takes the last
step, as the batched path does: prefixes equal the cold fits to that tolerance.

Classes: a prefix with one class is degenerate (``default_score``); with two, it is
marked failed, so that the caller fits it by the batched path, which fits a binary
problem as scikit-learn does; with three or more, the classes absent from it are
fixed at 0 and left out of the softmax (:func:`~skdvl.utility._linear_solvers.
_newton_multinomial`'s convention). A prefix that does not converge within
``_MAX_IT`` iterations is marked failed (refitted by the batched path).

Parametrisation, scaler and determinism as in :mod:`skdvl.utility._prefix_fits`
(a fixed centre, the prefix's StandardScaler as a diagonal penalty); every operation
acts on each walk's own rows and state, so a walk's fits do not depend on the other
walks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from skdvl.utility._linear_batch import _padded
from skdvl.utility._linear_solvers import (
    _BLOCK_CHORD,
    _BLOCKS_MAX_ROWS,
    _FULL_STEP,
    _SAFE_MOVE,
    _armijo,
    _ClassBlocks,
    _converged,
    _step_tol,
    _zero_sum,
)
from skdvl.utility._linear_state import BatchFit, _dict_weights
from skdvl.utility._prefix_fits import _ClassifierPrefixes

__all__ = ["MultinomialPrefixes"]

_MAX_IT = 50  # Newton iterations per prefix
_MAX_CG = 250  # conjugate-gradient iterations per Newton step
_ETA_MAX = 0.1  # the loosest relative residual of a Newton system
_ETA_MIN = 1e-2  # the tightest
_ETA_FIRST = 1e-1  # the first Newton system of a prefix
_PREC_DRIFT = 1.0  # recompute the preconditioner once decisions moved this much (logit)
_PREDICT = True  # take the predictor step (see above)
_PREDICT_IT = 6  # Newton iterations of the predictor's K-dimensional problem
_EPS = np.finfo(np.float64).eps
_TINY = np.finfo(np.float64).tiny


class MultinomialPrefixes(_ClassifierPrefixes):
    """L2 multinomial logistic regression prefixes (three or more classes).

    The interface of :class:`~skdvl.utility._prefix_fits.LogisticPrefixes`
    (``gather``, ``start``, ``add``, ``fit``, ``empty_fit``), for
    :class:`~skdvl.utility._prefix_walk.PrefixWalk`.
    """

    def __init__(self, plan: Any, X: np.ndarray, y: np.ndarray, W: int) -> None:
        model = plan.model
        self.fi = bool(model.fit_intercept)
        d = X.shape[1]
        super().__init__(plan, X, W, d + self.fi)
        self.C = float(model.C)
        self.classes, codes = np.unique(np.asarray(y), return_inverse=True)
        K = self.K = self.classes.size
        cw = np.ones(K)
        if isinstance(model.class_weight, dict) and model.class_weight:
            cw = _dict_weights(self.classes, model.class_weight)[0]
        self.centre = X.mean(axis=0) if self.fi else np.zeros(d)
        n, p = X.shape[0], self.width
        ext = np.zeros((n + 1, p))
        ext[:n, :d] = X - self.centre
        ext[:n, d:] = 1.0
        self.X_ext = ext
        self.code_ext = np.append(codes, K).astype(np.intp)  # padding: no class
        self.s_ext = np.append(cw[codes], 0.0)
        self.cw_rows = np.zeros((W, 0), np.intp)
        self.R = np.zeros((W, 0, K))
        self.theta = np.zeros((W, K, p))
        self.Minv = np.zeros((W, K, p, p), np.float32)  # a preconditioner: single
        self.drift = np.full(W, np.inf)  # of the preconditioner (inf: recompute)
        self.init = np.zeros(W, bool)
        self.counts = np.zeros((W, K))
        self.n_valid, self.S = np.zeros(W), np.zeros(W)
        self.sumsq = np.zeros((W, d))
        # the gradient at 0 and its round-off bound, from running sums
        self.T, self.A = np.zeros((W, p)), np.zeros((W, p))
        self.Yx, self.B = np.zeros((W, K, p)), np.zeros((W, K, p))
        self.reg = np.zeros((W, p))
        self.reg[:, :d] = 1.0

    def empty_fit(self, b: int) -> BatchFit:
        out = super().empty_fit(b)
        out.coef = np.zeros((b, self.K, self.d))
        out.intercept = np.zeros((b, self.K))
        out.present = np.zeros((b, self.K), bool)
        out.classes = self.classes
        return out

    # ------------------------------------------------------------------ rows
    def gather(self, rows: np.ndarray) -> None:
        self._append("Xw", self.X_ext[rows])
        self._append("cw_rows", self.code_ext[rows])
        self._append("sw", self.s_ext[rows])
        self._append("R", np.zeros(rows.shape + (self.K,)))

    def _labels(self) -> np.ndarray:
        return self.cw_rows

    def _account(self, ids: np.ndarray, x: np.ndarray, c: np.ndarray, s: np.ndarray) -> None:
        """Class counts, sums for the gradient at 0, column sums of squares: rows ``x``
        (A, m, p) of classes ``c`` and weights ``s`` added."""
        Y = (c[..., None] == np.arange(self.K)) * 1.0
        valid = s > 0
        self.counts[ids] += (Y * (c < self.K)[..., None]).sum(axis=1)
        sx, sa = x * s[..., None], np.abs(x) * s[..., None]
        self.T[ids] += sx.sum(axis=1)
        self.A[ids] += sa.sum(axis=1)
        self.Yx[ids] += np.swapaxes(Y, 1, 2) @ sx
        self.B[ids] += np.swapaxes(Y, 1, 2) @ sa
        self.sumsq[ids] += (self._raw(x) ** 2 * (c < self.K)[..., None]).sum(axis=1)
        self.n_valid[ids] += valid.sum(axis=1)
        self.S[ids] += s.sum(axis=1)

    def add(self, ids: np.ndarray, k: int) -> None:
        """Add row ``k`` of each walk: its decisions at the walk's optimum, and its
        curvature there to the preconditioner."""
        was = self.counts[ids] > 0
        x, c, s, reg0, live = self._take_row(ids, k)
        if not live.any():
            return
        j, x, s = ids[live], x[live], s[live]
        # a class joins: its coefficients are 0, so the iterate stays zero-sum over the
        # present classes; its preconditioner block is new
        self.drift[j[((self.counts[j] > 0) & ~was[live]).any(axis=1)]] = np.inf
        r = (self.theta[j] @ x[..., None])[..., 0]  # (A, K)
        self.R[j, k] = r
        kept = np.isfinite(self.drift[j])  # a preconditioner to update
        if not kept.any():
            return
        j, x, s, r, reg0 = j[kept], x[kept], s[kept], r[kept], reg0[live][kept]
        present = self.counts[j] > 0
        P = _softmax(r, present)
        w = self.C * s[:, None] * P * (1.0 - P)  # (A, K)
        u = (self.Minv[j] @ x[:, None, :, None].astype(np.float32))[..., 0]  # (A, K, p)
        denom = 1.0 + w * (u * x[:, None, :]).sum(axis=2)
        c = ((w / denom)[..., None] * u).astype(np.float32)
        self.Minv[j] -= c[..., :, None] * u[..., None, :]
        if self.scaler is not None:
            change = np.abs(self.reg[j] - reg0) / np.maximum(self.reg[j], _EPS)
            self.drift[j] += 4.0 * change.max(axis=1)

    # ------------------------------------------------------------------ fit
    def fit(self, ids: np.ndarray, k: int, out: BatchFit, sel: np.ndarray) -> None:
        """Fit the prefixes of length ``k`` of ``ids``; write them into ``out[sel]``."""
        present = self.counts[ids] > 0
        assert out.present is not None
        out.present[sel] = present
        out.n_samples[sel] = k
        n_present = present.sum(axis=1)
        out.degenerate[sel] = n_present < 2
        # two classes: scikit-learn fits a binary problem, which the batched path does
        out.failed[sel] = (n_present == 2) | ((n_present > 2) & ~(self.S[ids] > 0))
        if self.scaler is not None:
            self._fill_scaler(out, sel, ids)
        go = ~out.degenerate[sel] & ~out.failed[sel]
        self.init[ids[~go]] = False
        live, lsel = ids[go], sel[go]
        if not live.size:
            return
        zero = self._zero_optimal(live, k)
        new = live[~zero & ~self.init[live]]
        if new.size:  # a walk's first multinomial prefix: from 0
            self.theta[new] = 0.0
            self.R[new, :k] = 0.0
            self.drift[new] = np.inf
            self.init[new] = True
        todo = live[~zero]
        if todo.size:
            warm = ~np.isin(todo, new)
            n_iter, ok = _Newton(self, todo, k).run(warm if _PREDICT else None)
            out.n_iter[lsel[~zero]] = n_iter
            out.failed[lsel[~zero]] = ~ok
            self.init[todo[~ok]] = False
        self.theta[live[zero]] = 0.0
        self.R[live[zero], :k] = 0.0
        self._write(out, lsel, live)

    def _zero_optimal(self, j: np.ndarray, k: int) -> np.ndarray:
        """Walks whose gradient at 0 is 0 up to round-off (the batched path's test):
        their fit is 0, as scikit-learn's solvers return it."""
        present = self.counts[j] > 0
        n = present.sum(axis=1)[:, None, None]
        g0 = self.T[j][:, None] / n - self.Yx[j]
        bound = (self.A[j][:, None] - self.B[j]) / n + (1.0 - 1.0 / n) * self.B[j]
        small = np.abs(g0) <= int(_padded(k)) * _EPS * bound
        return (small | ~present[..., None]).all(axis=(1, 2))

    def refresh(self, j: np.ndarray, k: int, X: np.ndarray, R: np.ndarray) -> None:
        """The exact block-diagonal preconditioner of walks ``j`` at decisions ``R``
        over their rows ``X`` (A, k, p), as ``p x p`` inverses."""
        P = _softmax(R, (self.counts[j] > 0)[:, None, :])
        w = self.C * self.sw[j, :k, None] * P * (1.0 - P)  # (A, k, K)
        inv = _ClassBlocks(X, w, self.reg[j], dense=True).f["inv"]
        self.Minv[j] = inv.astype(np.float32)
        self.drift[j] = 0.0

    def _write(self, out: BatchFit, lsel: np.ndarray, live: np.ndarray) -> None:
        """The fits in the batched path's coordinates (scaled space for a Pipeline)."""
        d = self.d
        theta = self.theta[live]
        v = theta[..., :d]
        c = theta[..., d] if self.fi else np.zeros(theta.shape[:2])
        if self.scaler is not None:
            mean, _, scale = self._scaler_params(live)
            shift = (mean if self.scaler.with_mean else 0.0) - self.centre
            out.coef[lsel] = v * scale[:, None]
            out.intercept[lsel] = c + (v * shift[:, None]).sum(axis=2) if self.fi else 0.0
        else:
            out.coef[lsel] = v
            out.intercept[lsel] = c - v @ self.centre if self.fi else 0.0


def _new_row_move(r0: np.ndarray, y: np.ndarray, cs: np.ndarray, lev: np.ndarray,
                  present: np.ndarray) -> np.ndarray:
    """``argmin_u sum_a u_a^2 / (2 lev_a) + cs loss(r0 + u)`` for each walk (A, K): the
    predictor's K-dimensional problem, by damped Newton steps (``_PREDICT_IT``)."""
    A, K = r0.shape

    def phi(u_):  # type: ignore[no-untyped-def]
        q = np.where(present, r0 + u_, -np.inf)
        mx = q.max(axis=1, keepdims=True)
        lse = mx[:, 0] + np.log(np.exp(q - mx).sum(axis=1))
        return (0.5 * (u_ ** 2 / lev).sum(axis=1)
                + cs[:, 0] * (lse - (np.where(present, r0 + u_, 0.0) * y).sum(axis=1)))

    eye, u = np.eye(K), np.zeros((A, K))
    for _ in range(_PREDICT_IT):
        Pn = _softmax(r0 + u, present)
        grad = np.where(present, u / lev + cs * (Pn - y), 0.0)
        H = cs[..., None] * (Pn[..., None] * eye - Pn[..., :, None] * Pn[..., None, :])
        H += eye * np.where(present, 1.0 / lev, 1.0)[..., None]
        du = -np.linalg.solve(H, grad[..., None])[..., 0]
        t, f0 = np.ones(A), phi(u)
        for _ in range(20):
            bad = phi(u + t[:, None] * du) > f0
            if not bad.any():
                break
            t[bad] *= 0.5
        u = u + t[:, None] * du
    return u


def _softmax(R: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Probabilities over the present classes (0 for the others), last axis."""
    Rm = np.where(present, R, -np.inf)
    e = np.exp(Rm - Rm.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class _Newton:
    """The truncated Newton iterations of the walks ``ids`` at prefix length ``k``,
    on local (compacted) arrays; each walk's state is written back as it leaves."""

    def __init__(self, fits: MultinomialPrefixes, ids: np.ndarray, k: int) -> None:
        self.fits, self.k, self.C, self.K = fits, k, fits.C, fits.K
        self.ids, self.pos = ids, np.arange(ids.size)
        self.n_iter, self.ok = np.zeros(ids.size, np.intp), np.zeros(ids.size, bool)
        self.X = fits.Xw[ids, :k]
        self.s = fits.sw[ids, :k]
        self.valid = (self.s > 0)[..., None]
        self.Y = (fits.cw_rows[ids, :k, None] == np.arange(self.K)) * 1.0
        self.present = fits.counts[ids] > 0
        self.theta, self.R = fits.theta[ids], fits.R[ids, :k]
        self.reg = fits.reg[ids][:, None, :]
        self.fac, self.shift = fits._move_factors(ids)
        self.f_prev = np.full(ids.size, np.inf)
        self.g_first = np.full(ids.size, np.nan)
        self.moved = np.full(ids.size, np.inf)  # the decisions' last move
        self.cb: Any = None
        self.d = fits.d
        if k <= _BLOCKS_MAX_ROWS:  # exact blocks at every iteration: none is kept
            fits.drift[ids] = np.inf
        else:
            stale = np.flatnonzero(fits.drift[ids] > _PREC_DRIFT)
            if stale.size:
                fits.refresh(ids[stale], k, self.X[stale], self.R[stale])

    _ARRAYS = ("ids", "pos", "X", "s", "valid", "Y", "present", "theta", "R", "reg",
               "fac", "shift", "f_prev", "g_first", "moved")

    def run(self, warm: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        if warm is not None and warm.any():
            self.predict(np.flatnonzero(warm))
        for it in range(1, _MAX_IT + 1):
            if not self.ids.size:
                break
            self.iterate(it)
        if self.ids.size:
            self.leave(np.ones(self.ids.size, bool))
        return self.n_iter, self.ok

    def leave(self, gone: np.ndarray) -> None:
        f, j = self.fits, self.ids[gone]
        f.theta[j], f.R[j, :self.k] = self.theta[gone], self.R[gone]
        if gone.all():
            self.ids = self.ids[:0]
            return
        keep = ~gone
        for name in self._ARRAYS:
            setattr(self, name, getattr(self, name)[keep])
        if self.cb is not None:
            self.cb.take(keep)

    def predict(self, r: np.ndarray) -> None:
        """Move the walks ``r`` (at the previous prefix's optimum) to where the new row
        (the last) would take them if the other rows' Hessian were its block diagonal:
        the new row's decisions ``r0 + u`` then solve a K-dimensional problem,
        ``min_u sum_a u_a^2 / (2 G_a) + C s loss(r0 + u)``, ``G_a = x' B_a^-1 x`` the
        row's leverage in class a's block ``B_a``, and the coefficients move by
        ``B_a^-1 x u_a / G_a``. Newton's iterations start from there."""
        k, K = self.k, self.K
        X, R, present = self.X[r], self.R[r], self.present[r]
        x, r0, y, sn = X[:, k - 1], R[:, k - 1], self.Y[r, k - 1], self.s[r, k - 1]
        P = _softmax(R, present[:, None, :])
        w = self.C * self.s[r][..., None] * P * (1.0 - P)
        w[:, k - 1] = 0.0  # the other rows' curvature
        xs = np.broadcast_to(x[:, None, :], (r.size, K, x.shape[1]))
        kept = k > _BLOCKS_MAX_ROWS
        if not kept:
            Mx = _ClassBlocks(X, w, self.reg[r, 0]).solve(xs)
        else:  # the walk's inverses hold the new row at r0 (``add``): take it out
            Mx = (self.fits.Minv[self.ids[r]] @ xs.astype(np.float32)[..., None])[..., 0]
            Mx = Mx.astype(np.float64)
        lev = np.where(present, (Mx * x[:, None, :]).sum(axis=2), 1.0)
        if kept:
            P0 = _softmax(r0, present)
            w0 = self.C * sn[:, None] * P0 * (1.0 - P0)
            corr = 1.0 / np.maximum(1.0 - w0 * lev, _TINY)
            Mx, lev = Mx * corr[..., None], lev * corr
        lev = np.maximum(lev, _TINY)
        u = _new_row_move(r0, y, (self.C * sn)[:, None], lev, present)
        dth = _zero_sum(Mx * (u / lev)[..., None], present)
        ok = np.isfinite(dth).all(axis=(1, 2))
        dth[~ok] = 0.0
        self.theta[r] += dth
        self.R[r] += X @ np.swapaxes(dth, 1, 2)
        if kept:  # the new row's curvature in the inverses: at its predicted decision
            P1 = _softmax(self.R[r, k - 1], present)
            dw = self.C * sn[:, None] * P1 * (1.0 - P1) - w0
            self._reweigh(self.ids[r], xs, dw * ok[:, None])

    def _reweigh(self, j: np.ndarray, xs: np.ndarray, dw: np.ndarray) -> None:
        """Sherman-Morrison: the weight of row ``x`` in the inverses of walks ``j``
        changed by ``dw`` (A, K); skipped where the update would lose definiteness."""
        Mi = self.fits.Minv[j]
        v = (Mi @ xs.astype(np.float32)[..., None])[..., 0]
        denom = 1.0 + dw * (v * xs).sum(axis=2)
        good = denom > 0.1
        step = np.where(good, dw / np.where(good, denom, 1.0), 0.0)
        cv = (step[..., None] * v).astype(np.float32)
        self.fits.Minv[j] = Mi - cv[..., :, None] * v[..., None, :]

    # ------------------------------------------------------------------ the loss
    def objective(self, R: np.ndarray, theta: np.ndarray, r: Any = slice(None)
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """f, the probabilities P and the residuals P - Y, without cancellation (the
        batched path's formulas)."""
        Y, pm = self.Y[r], self.present[r][:, None, :]
        Rm = np.where(pm, R, -np.inf)
        top = np.argmax(Rm, axis=2)[..., None]
        mx = np.take_along_axis(Rm, top, axis=2)
        e = np.exp(Rm - mx)
        at_top = np.arange(self.K) == top
        rest = np.where(at_top, 0.0, e).sum(axis=2, keepdims=True)
        loss = np.log1p(rest[..., 0]) + mx[..., 0] - (R * Y).sum(axis=2)
        f = (self.C * (self.s[r] * loss).sum(axis=1)
             + 0.5 * (self.reg[r] * theta ** 2).sum(axis=(1, 2)))
        P = e / (1.0 + rest)
        resid = np.where(at_top & (Y > 0), -rest / (1.0 + rest), P - Y)
        return f, P, resid

    def _xt(self, Q: np.ndarray, X: np.ndarray) -> np.ndarray:
        """``(X' Q)'`` per walk: (A, K, p) from Q (A, k, K)."""
        return np.swapaxes(np.swapaxes(X, 1, 2) @ Q, 1, 2)

    def hv(self, V: np.ndarray, X: np.ndarray, sP: np.ndarray, P: np.ndarray,
           reg: np.ndarray, pm: np.ndarray) -> np.ndarray:
        """Hessian-vector products of the softmax loss plus the penalty."""
        RV = X @ np.swapaxes(V, 1, 2)
        Q = sP * RV - sP * (P * RV).sum(axis=2, keepdims=True)
        return (self.C * self._xt(Q, X) + reg * V) * pm

    def solve(self, g: np.ndarray, P: np.ndarray, eta: np.ndarray) -> np.ndarray:
        """The Newton step ``-H^-1 g`` by preconditioned conjugate gradients (each walk
        to a residual of ``eta |g|``), in the zero-sum subspace.

        Products run over all the walks of the iteration (a stopped walk's direction
        is frozen and its product unused): a walk's arithmetic is its own."""
        X, sP, reg, present = self.X, self.s[..., None] * P, self.reg, self.present
        pm = present[..., None] * 1.0
        if self.k <= _BLOCKS_MAX_ROWS:  # the exact blocks, by Woodbury, kept while
            w = self.C * sP * (1.0 - P)  # the decisions move little
            if self.cb is None:
                self.cb = _ClassBlocks(X, w, reg[:, 0])
            else:
                stale = np.flatnonzero(self.moved > _BLOCK_CHORD)
                if stale.size:
                    self.cb.update(stale, X, w, reg[:, 0])
            solve = self.cb.solve
        else:  # the walk's inverses, in single precision (half the memory traffic)
            M = self.fits.Minv[self.ids]

            def solve(Rv):  # type: ignore[no-untyped-def]
                return (M @ Rv.astype(np.float32)[..., None])[..., 0].astype(np.float64)

        x, r = np.zeros_like(g), -g
        dvec = _zero_sum(solve(r), present)
        rz = (r * dvec).sum(axis=(1, 2))
        atol = eta * np.sqrt((g ** 2).sum(axis=(1, 2)))
        active = np.sqrt((r ** 2).sum(axis=(1, 2))) > atol
        for _ in range(_MAX_CG):
            if not active.any():
                break
            # a stopped walk takes alpha = 0 and keeps its direction: x, r unchanged
            Hd = self.hv(dvec, X, sP, P, reg, pm)
            dHd = (dvec * Hd).sum(axis=(1, 2))
            active &= dHd > 0
            alpha = np.where(active, rz / np.where(active, dHd, 1.0), 0.0)[:, None, None]
            x += alpha * dvec
            r -= alpha * Hd
            zn = _zero_sum(solve(r), present)
            rz_new = (r * zn).sum(axis=(1, 2))
            beta = (rz_new / np.where(rz > 0, rz, 1.0))[:, None, None]
            dvec = np.where(active[:, None, None], zn + beta * dvec, dvec)
            rz = np.where(active, rz_new, rz)
            active &= np.sqrt((r ** 2).sum(axis=(1, 2))) > atol
        return x

    # ------------------------------------------------------------------ one iteration
    def move(self, step: np.ndarray) -> np.ndarray:
        """The batched path's move: the largest step times its column's RMS."""
        dv = step[..., :self.d]
        move = np.abs(dv * self.fac[:, None]).max(axis=(1, 2), initial=0.0)
        if self.fits.fi:
            db = step[..., self.d] + (dv * self.shift[:, None]).sum(axis=2)
            move = np.maximum(move, np.abs(db).max(axis=1))
        return move

    def iterate(self, it: int) -> None:
        f, P, resid = self.objective(self.R, self.theta)
        # the gradient lies in the zero-sum subspace: projected, its round-off does
        # not leave a residual there that the conjugate gradients cannot reduce
        g = _zero_sum(self.C * self._xt(self.s[..., None] * resid, self.X)
                      + self.reg * self.theta, self.present)
        gn = np.sqrt((g ** 2).sum(axis=(1, 2)))
        self.g_first = np.where(np.isnan(self.g_first), gn, self.g_first)
        eta = np.clip(gn / np.maximum(self.g_first, _TINY), _ETA_MIN, _ETA_MAX)
        eta = np.where(it == 1, _ETA_FIRST, eta)
        step = self.solve(g, P, eta)
        dec = -(g * step).sum(axis=(1, 2))
        solved = np.isfinite(step).all(axis=(1, 2)) & (dec >= 0)
        step[~solved] = 0.0
        size = np.abs(self.R * self.valid).max(axis=(1, 2))
        conv = solved & _converged(dec, f, self.f_prev, self.move(step), _step_tol(size))
        dR = self.X @ np.swapaxes(step, 1, 2)
        mv = np.abs(dR * self.valid).max(axis=(1, 2))
        full = conv | (dec < _FULL_STEP * f) | (mv <= _SAFE_MOVE) | ~solved

        def trial(t_, j):  # type: ignore[no-untyped-def]
            return self.objective(self.R[j] + t_[:, None, None] * dR[j],
                                  self.theta[j] + t_[:, None, None] * step[j], j)[0]

        t = _armijo(trial, f, dec, full)
        self.theta = self.theta + t[:, None, None] * step
        self.R = self.R + t[:, None, None] * dR
        # the preconditioner ages with the decisions' root mean square move (one row's
        # large move, typically the new row's, changes little of the curvature)
        rms = np.sqrt((dR ** 2 * self.valid).sum(axis=(1, 2))
                      / np.maximum(self.valid.sum(axis=(1, 2)) * self.K, 1))
        self.fits.drift[self.ids] += t * rms
        self.moved = t * mv
        self.n_iter[self.pos] = it
        self.ok[self.pos[conv]] = True
        self.f_prev = f
        gone = conv | ~solved | (t <= 0)
        if gone.any():
            self.leave(gone)
