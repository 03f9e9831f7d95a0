"""The Newton iterations of one prefix length of :mod:`skdvl.utility._prefix_fits`.

:class:`_Work` gathers the walks of one prefix length from a
:class:`~skdvl.utility._prefix_fits.LogisticPrefixes`, iterates damped Newton steps
on local arrays (an inverse Hessian recomputed exactly where it drifted, the exact
gradient after every step) until the batched path's convergence test holds, and
writes each walk's state back as it leaves.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import expit

from skdvl.utility._linear_solvers import (
    _DEC_FLOOR,
    _DEC_RTOL,
    _FULL_STEP,
    _armijo,
    _converged,
    _spd_equilibrate,
    _step_tol,
)

__all__: list[str] = []

_DRIFT = 0.2  # recompute the inverse Hessian after training decisions moved this much
_SLOW = 0.25  # ... or when an iteration kept more than this share of the decrement
#: the full step is taken unchecked while no training decision moves by more than this
#: (logit): from a warm start the curvature is close, and a step that overshoots shows
#: in the exact gradient of the next iteration, which recomputes the inverse (the batched
#: path, from a cold start, checks every step moving a decision by more than 0.1)
_SAFE_MOVE_WALK = 1.0
_STALL_FROM = 3  # the first iteration whose exact objective the stall test may use

def _inverses(H: np.ndarray) -> np.ndarray:
    """Inverses of a batch of SPD matrices, Jacobi-equilibrated first (LAPACK one
    matrix at a time: a matrix's inverse does not depend on the others); NaN for
    those that are singular."""
    Hs, D = _spd_equilibrate(H)
    try:
        inv = np.linalg.inv(Hs)
    except np.linalg.LinAlgError:
        inv = np.full_like(Hs, np.nan)
        for a in range(Hs.shape[0]):
            try:
                inv[a] = np.linalg.inv(Hs[a])
            except np.linalg.LinAlgError:
                pass
    return inv / (D[:, :, None] * D[:, None, :])


class _Work:
    """The walks of one prefix length being iterated: their state, compacted.

    Gathers each walk's rows and state from
    :class:`~skdvl.utility._prefix_fits.LogisticPrefixes` once, iterates on local
    arrays, and writes a walk's state back when it leaves (converged or failed), so
    that an iteration costs a few batched products whatever the walks. The objective
    is followed by the Newton model between exact evaluations (a restart, a line
    search, and near round-off, where the stall test needs it).
    """

    def __init__(self, fits: Any, ids: np.ndarray, k: int) -> None:
        self.fits, self.C, self.k = fits, fits.C, k
        self.n_iter, self.ok = np.zeros(ids.size, np.intp), np.zeros(ids.size, bool)
        self.pos = np.arange(ids.size)
        self.ids = ids
        # consecutive walks (all of them, typically) are a view, not a copy
        rows: Any = (slice(int(ids[0]), int(ids[-1]) + 1)
                     if ids.size and (np.diff(ids) == 1).all() else ids)
        self.X = fits.Xw[rows, :k]  # compacted only when half of its walks have left
        self.xi = np.arange(ids.size)  # each walk's rows in X
        self.q, self.s = fits.qw[rows, :k], fits.sw[rows, :k]
        self.valid = self.s > 0
        self.all_valid = bool(self.valid.all())
        self.z = fits.z[rows, :k].copy()
        self.theta, self.g, self.Hinv = fits.theta[ids], fits.g[ids], fits.Hinv[ids]
        self.exact, self.fresh = fits.exact_H[ids], fits.valid_H[ids]
        self.drift, self.reg = fits.drift[ids], fits.reg[ids]
        self.fac, self.shift = fits._move_factors(ids)
        self.f_prev = np.full(ids.size, np.inf)
        self.f = fits.f[ids]  # exact at a restart, then followed by the Newton model
        self.dec_prev = np.full(ids.size, np.inf)
        self.prev_exact = np.zeros(ids.size, bool)  # whether f_prev is the exact objective
        self.d, self.fi = fits.d, fits.fi

    _ARRAYS = ("ids", "xi", "q", "s", "valid", "z", "theta", "g", "Hinv", "exact", "fresh",
               "drift", "reg", "fac", "shift", "f_prev", "dec_prev", "f",
               "prev_exact")

    def leave(self, gone: np.ndarray) -> None:
        """Write the state of the walks ``gone`` back, and drop them."""
        f, j = self.fits, self.ids[gone]
        f.theta[j], f.g[j], f.Hinv[j] = self.theta[gone], self.g[gone], self.Hinv[gone]
        f.z[j, :self.k] = self.z[gone]
        f.exact_H[j], f.valid_H[j] = self.exact[gone], self.fresh[gone]
        f.f[j] = self.f[gone]
        f.drift[j] = self.drift[gone]
        if gone.all():
            self.pos = self.pos[:0]
            return
        keep = ~gone
        self.pos = self.pos[keep]
        for name in self._ARRAYS:
            setattr(self, name, getattr(self, name)[keep])
        if 2 * self.xi.size <= self.X.shape[0]:
            self.X, self.xi = self.X[self.xi], np.arange(self.xi.size)

    def _times(self, V: np.ndarray, r: np.ndarray) -> np.ndarray:
        """``X_w @ v_w`` for the walks ``r``, by one product over the rows of X."""
        if r.size == self.X.shape[0]:  # every walk of X, in order
            return (self.X @ V[..., None])[..., 0]
        full = np.zeros((self.X.shape[0], V.shape[1]))
        full[self.xi[r]] = V
        return (self.X @ full[..., None])[..., 0][self.xi[r]]

    def _t_times(self, R: np.ndarray, r: np.ndarray) -> np.ndarray:
        """``X_w' @ r_w`` for the walks ``r``."""
        if r.size == self.X.shape[0]:
            return (R[:, None, :] @ self.X)[:, 0]
        full = np.zeros(self.X.shape[:2])
        full[self.xi[r]] = R
        return (full[:, None, :] @ self.X)[:, 0][self.xi[r]]

    def objective(self, z: np.ndarray, theta: np.ndarray, sel: Any = slice(None)) -> np.ndarray:
        return (self.C * (self.s[sel] * np.logaddexp(0.0, self.q[sel] * z)).sum(axis=1)
                + 0.5 * (self.reg[sel] * theta ** 2).sum(axis=1))

    def move(self, step: np.ndarray) -> np.ndarray:
        dv = step[:, :self.d]
        move = np.abs(dv * self.fac).max(axis=1, initial=0.0)
        if self.fi:
            move = np.maximum(move, np.abs(step[:, self.d] + (dv * self.shift).sum(axis=1)))
        return move

    def refresh(self, r: np.ndarray) -> None:
        """The exact inverse Hessian at the current point of the walks ``r`` (indices
        into the work); NaN where it is singular."""
        p = expit(self.q[r] * self.z[r])
        B = self.X[self.xi[r]] * np.sqrt(self.C * self.s[r] * p * (1.0 - p))[..., None]
        H = np.swapaxes(B, 1, 2) @ B
        P = H.shape[1]
        H[:, np.arange(P), np.arange(P)] += self.reg[r]
        self.Hinv[r] = _inverses(H)
        self.exact[r], self.fresh[r], self.drift[r] = True, True, 0.0

    def iterate(self, it: int) -> None:
        """One Newton iteration of every walk of the work."""
        stale = np.flatnonzero(~self.fresh)
        if stale.size:
            self.refresh(stale)
        step = -(self.Hinv @ self.g[..., None])[..., 0]
        dec = -(self.g * step).sum(axis=1)
        solved = np.isfinite(step).all(axis=1) & (dec >= 0)
        f = self.f.copy()  # exact at a restart or a line search, else the Newton model's
        size = np.abs(self.z if self.all_valid else self.z * self.valid).max(axis=1)
        # an inverse Hessian exact at a point the decisions have since moved ``drift``
        # from is within a factor exp(drift) of the exact one: so is the step
        safety = np.exp(np.where(self.exact, 0.0, self.drift))
        dec_s, move_s, tol = dec * safety, self.move(step) * safety, _step_tol(size)
        # near round-off the stall test decides: it needs exact objectives, now and
        # before; not where the decrement and step already pass (the objective is only
        # a scale there), nor in the first two iterations, after which a warm-started
        # prefix has typically passed (the stall test is for the round-off floor)
        exact_f = ((dec <= _DEC_FLOOR * f) & ~((dec_s <= _DEC_RTOL * f) & (move_s <= tol))
                   & (it >= _STALL_FROM))
        near = np.flatnonzero(exact_f)
        if near.size:
            f[near] = self.objective(self.z[near], self.theta[near], near)
            self.f[near] = f[near]
        f_prev = np.where(self.prev_exact, self.f_prev, np.inf)
        conv = solved & _converged(dec_s, f, f_prev, move_s, tol)
        slow = solved & ~self.exact & (dec > _SLOW * self.dec_prev)
        redo = ~conv & (~solved | slow) & ~self.exact  # a better inverse, then a step
        self.fresh[redo] = False
        self.n_iter[self.pos] = it
        self.ok[self.pos[conv]] = True
        failed = ~conv & ~solved & self.exact
        go = np.flatnonzero(solved & ~redo & ~conv)
        if go.size:
            failed[go[~self.step(go, step[go], dec[go], f[go])]] = True
        self.f_prev[go], self.dec_prev[go] = f[go], dec[go]
        self.prev_exact[go] = exact_f[go]
        gone = conv | failed
        if gone.any():
            self.leave(gone)

    def step(self, r: np.ndarray, step: np.ndarray, dec: np.ndarray,
             f: np.ndarray) -> np.ndarray:
        """A damped Newton step of the walks ``r`` (Armijo where a decision moves by
        more than ``_SAFE_MOVE_WALK``) and their new exact gradient; returns which can go
        on (a walk whose exact inverse found no descent fails)."""
        dz = self._times(step, r)
        mv = np.abs(dz if self.all_valid else dz * self.valid[r]).max(axis=1)
        full = (dec < _FULL_STEP * f) | (mv <= _SAFE_MOVE_WALK)
        if full.all() and r.size == self.z.shape[0]:  # every walk, full steps: in place
            self.theta += step
            self.z += dz
            res = self.q * expit(self.q * self.z)
            res *= self.s
            res *= self.C
            self.g = self._t_times(res, r) + self.reg * self.theta
            self.f = f - 0.5 * dec
            self.exact[:] = False
            self.drift += mv
            self.fresh[self.drift > _DRIFT] = False
            return np.ones(r.size, bool)
        z, theta = self.z[r], self.theta[r]
        search = np.flatnonzero(~full)
        if search.size:  # the line search compares with the exact objective
            f = f.copy()
            f[search] = self.objective(z[search], theta[search], r[search])

        def trial(t_, sel):  # type: ignore[no-untyped-def]
            return self.objective(z[sel] + t_[:, None] * dz[sel],
                                  theta[sel] + t_[:, None] * step[sel], r[sel])

        t = _armijo(trial, f, dec, full)
        moved = t > 0
        stuck = ~moved & ~self.exact[r]
        self.fresh[r[stuck]] = False
        m = np.flatnonzero(moved)
        if m.size:
            rm, sv = r[m], t[m, None] * step[m]
            self.theta[rm] = theta[m] + sv
            self.z[rm] = z[m] + t[m, None] * dz[m]
            res = self.C * self.s[rm] * self.q[rm] * expit(self.q[rm] * self.z[rm])
            g_new = self._t_times(res, rm) + self.reg[rm] * self.theta[rm]
            self.g[rm] = g_new
            tm = t[m]
            self.f[rm] = f[m] - tm * (1.0 - 0.5 * tm) * dec[m]  # the Newton model's
            searched = ~full[m]
            if searched.any():  # the line search computed it: exactly
                rs = rm[searched]
                self.f[rs] = self.objective(self.z[rs], self.theta[rs], rs)
            self.exact[rm] = False  # exact where the walk was: within exp(drift) here
            self.drift[rm] += t[m] * mv[m]
            self.fresh[rm[self.drift[rm] > _DRIFT]] = False
        return moved | stuck
