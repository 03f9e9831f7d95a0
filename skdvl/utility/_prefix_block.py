"""Blocks of consecutive prefixes of a logistic walk, fitted together.

:class:`~skdvl.utility._prefix_fits.LogisticPrefixes` fits prefix ``k + 1`` of a
walk from prefix ``k`` by Newton iterations, each needing the exact gradient over
the prefix's rows: two matrix-*vector* products of ``k x p``, memory-bound, per
iteration and prefix. :func:`fit_block` fits the next ``B`` prefixes of a walk at
once instead:

1. *Prediction*: the rows are added one by one as the prefix-by-prefix path adds
   them (the row's gradient and its curvature, a Sherman-Morrison term, at the
   walk's current point), each followed by the Newton step of the model; ``O(p^2)``
   per prefix, no pass over the rows.
2. *Passes*: the exact decisions and gradients of all ``B`` prefixes at their
   current points in one matrix-*matrix* product each way (``X_{k+B} Theta``, and
   its transpose times the residuals, rows beyond a prefix masked out); every
   prefix whose Newton step then passes the batched path's convergence test
   (:func:`~skdvl.utility._linear_solvers._converged`, with the step and decrement
   enlarged by ``exp(drift)``, as the prefix-by-prefix path does) is done, the
   others take that step, and the next pass looks again. The first pass, at the
   predicted points, only steps: no prefix passed the test there in any run
   measured (3,000 and 10,000 rows), and skipping it saved 6%.

A walk whose block does not converge in ``_PASSES`` passes, or whose steps are not
safe without a line search (a decision moving by more than ``_SAFE_MOVE_WALK``
logit), is put back as it was and fitted
prefix by prefix (the caller's fallback). The accepted point of every prefix is one
the convergence test held at, on the exact gradient: the same criterion as the
prefix-by-prefix and the batched paths, so the fits agree with them to the solver
tolerance.

Each walk's products are its own (one BLAS call per walk and pass, on its own rows),
and which of its prefixes are still iterating depends on the walk alone: a walk's
fits do not depend on the walks it is blocked with.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from skdvl.utility._linear_batch import _padded
from skdvl.utility._linear_solvers import (
    _FULL_STEP,
    _converged,
    _step_tol,
)
from skdvl.utility._prefix_newton import _DRIFT, _SAFE_MOVE_WALK, _inverses

__all__ = ["fit_block"]

_PASSES = 8  # exact passes per block before a walk falls back to prefix by prefix
#: a pass over more rows than this goes through them in chunks of ``_CHUNK_ROWS`` (below,
#: one pass over all of them is as fast or faster)
_CHUNK_FROM = 4096
_CHUNK_ROWS = 512
#: a prefix whose inverse Hessian may be this far (log factor) from the exact one at its
#: point gets the exact one: the bound only makes the convergence test stricter (by its
#: exponential), and the actual error is mostly far below it
_LOOSE = 1.0


def _sigmoid(t: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-t))`` (0 where ``exp(-t)`` overflows, as it should)."""
    with np.errstate(over="ignore"):
        e = np.exp(-t)
    e += 1.0
    return np.reciprocal(e, out=e)


def _exact_inverse(fits: Any, j: np.ndarray, k: int) -> None:
    """The exact inverse Hessian of the walks ``j`` at their current points (their
    first ``k`` rows); NaN where singular (the walk then falls back)."""
    X, q, s = fits.Xw[j, :k], fits.qw[j, :k], fits.sw[j, :k]
    p = _sigmoid(q * fits.z[j, :k])
    w = np.sqrt(fits.C * s * p * (1.0 - p))
    H = np.empty((j.size, X.shape[2], X.shape[2]))
    for a in range(j.size):  # one product per walk: its bits do not depend on the others
        Bm = X[a] * w[a][:, None]
        H[a] = Bm.T @ Bm
    P = H.shape[1]
    H[:, np.arange(P), np.arange(P)] += fits.reg[j]
    fits.Hinv[j] = _inverses(H)
    fits.exact_H[j], fits.valid_H[j], fits.drift[j] = True, True, 0.0


_STATE = ("counts", "g0", "b0", "sumsq", "n_valid", "cnt", "mu", "M2", "reg", "theta",
          "g", "f", "Hinv", "exact_H", "valid_H", "drift", "init")


class _Predicted:
    """The block's prefixes after the prediction: per walk and prefix, the point, the
    inverse Hessian, penalty, modelled objective, drift of the inverse so far, the
    move factors of the convergence test and the scaler's parameters."""

    theta: np.ndarray  # (W, B, p)
    Hinv: np.ndarray  # (W, B, p, p)
    reg: np.ndarray  # (W, B, p)
    f: np.ndarray  # (W, B)
    base: np.ndarray  # (W, B)
    fac: np.ndarray  # (W, B, d)
    shift: np.ndarray  # (W, B, d)
    params: list[Any] | None  # per prefix (mean, var, scale), with a scaler
    zero: np.ndarray  # (W,) some prefix has its optimum at 0
    saved: dict[str, np.ndarray] | None  # the walks' state before (when it was changed)


def _predict_plain(fits: Any, ids: np.ndarray, k: int, B: int) -> _Predicted:
    """The prediction without a scaler, on local arrays (the walks are not changed):
    each row's gradient and curvature at the point before it, then the model's step."""
    W, p, d, C = ids.size, fits.width, fits.d, fits.C
    x, q, s = fits.Xw[ids, k:k + B], fits.qw[ids, k:k + B], fits.sw[ids, k:k + B]
    out = _Predicted()
    theta, g, f = fits.theta[ids].copy(), fits.g[ids].copy(), fits.f[ids].copy()
    Hinv = fits.Hinv[ids].copy()
    out.theta, out.Hinv = np.empty((W, B, p)), np.empty((W, B, p, p))
    out.f = np.empty((W, B))
    zn_all = np.empty((W, B))
    for j in range(B):
        xj, qj, sj = x[:, j], q[:, j], s[:, j]
        zn = np.einsum("wp,wp->w", xj, theta)
        zn_all[:, j] = zn
        pr = _sigmoid(qj * zn)
        g += (C * sj * qj * pr)[:, None] * xj
        f += C * sj * np.logaddexp(0.0, qj * zn)
        w = C * sj * pr * (1.0 - pr)
        u = np.einsum("wab,wb->wa", Hinv, xj)
        Hinv -= (w / (1.0 + w * np.einsum("wp,wp->w", xj, u)))[:, None, None] * (
            u[:, :, None] * u[:, None, :])
        step = -np.einsum("wab,wb->wa", Hinv, g)
        theta += step
        f += 0.5 * np.einsum("wp,wp->w", g, step)
        g[:] = 0.0
        out.theta[:, j], out.Hinv[:, j], out.f[:, j] = theta, Hinv, f
    fits.z[ids, k:k + B] = zn_all
    out.reg = np.broadcast_to(fits.reg[ids][:, None], (W, B, p))
    out.base = np.repeat(fits.drift[ids][:, None], B, axis=1)
    r = 0.5 * s * q
    eps = np.finfo(np.float64).eps
    pad = np.array([int(_padded(k + j + 1)) for j in range(B)], dtype=np.float64)
    g0 = fits.g0[ids][:, None] + np.cumsum(x * r[..., None], axis=1)
    b0 = fits.b0[ids][:, None] + np.cumsum(np.abs(x) * np.abs(r)[..., None], axis=1)
    out.zero = (np.abs(g0) <= pad[None, :, None] * eps * b0).all(axis=2).any(axis=1)
    raw = x[..., :d] + fits.centre
    sumsq = fits.sumsq[ids][:, None] + np.cumsum(raw ** 2, axis=1)
    cnt = np.maximum(fits.n_valid[ids][:, None] + np.cumsum(s > 0, axis=1), 1.0)
    out.fac = np.sqrt(sumsq / cnt[..., None])
    out.shift = np.broadcast_to(-fits.centre, (W, B, d))
    out.params, out.saved = None, None
    return out


def _predict_scaled(fits: Any, ids: np.ndarray, k: int, B: int) -> _Predicted:
    """The prediction with a scaler (a penalty that changes with each row): through
    the walks' own ``add``, their state saved first."""
    W, p, d = ids.size, fits.width, fits.d
    out = _Predicted()
    out.saved = {name: getattr(fits, name)[ids].copy() for name in _STATE}
    out.theta, out.Hinv = np.empty((W, B, p)), np.empty((W, B, p, p))
    out.reg, out.f, out.base = np.empty((W, B, p)), np.empty((W, B)), np.empty((W, B))
    out.fac, out.shift = np.empty((W, B, d)), np.empty((W, B, d))
    out.params = []
    out.zero = np.zeros(W, bool)
    eps = np.finfo(np.float64).eps
    for j in range(B):
        fits.add(ids, k + j)
        step = -(fits.Hinv[ids] @ fits.g[ids][..., None])[..., 0]
        dec = -(fits.g[ids] * step).sum(axis=1)
        fits.theta[ids] += step
        fits.f[ids] -= 0.5 * dec
        fits.g[ids] = 0.0
        out.theta[:, j], out.Hinv[:, j] = fits.theta[ids], fits.Hinv[ids]
        out.reg[:, j], out.f[:, j], out.base[:, j] = fits.reg[ids], fits.f[ids], fits.drift[ids]
        out.fac[:, j], out.shift[:, j] = fits._move_factors(ids)
        out.params.append(fits._scaler_params(ids))
        out.zero |= (np.abs(fits.g0[ids])
                     <= int(_padded(k + j + 1)) * eps * fits.b0[ids]).all(axis=1)
    return out


def fit_block(fits: Any, ids: np.ndarray, k: int, B: int, out: Any,
              sel: np.ndarray) -> np.ndarray:
    """Fit prefixes ``k + 1 .. k + B`` of the walks ``ids`` (all at prefix ``k``,
    fitted, both classes present) into ``out`` rows ``sel`` (``(ids.size, B)``).

    Returns which walks were fitted; the others are as they were before the call,
    for the caller to fit prefix by prefix.
    """
    W = ids.size
    stale = ~fits.valid_H[ids] | (fits.drift[ids] > _DRIFT)
    if stale.any():  # kept by a walk that falls back: the exact inverse at its point
        _exact_inverse(fits, ids[stale], k)
    scaled = fits.scaler is not None
    pred = (_predict_scaled if scaled else _predict_plain)(fits, ids, k, B)
    theta, Hinv, reg, f, base = pred.theta, pred.Hinv, pred.reg, pred.f, pred.base
    fac, shift = pred.fac, pred.shift
    p, d = fits.width, fits.d
    m = k + B
    # each walk's rows, signs, weights and the decisions where each row's curvature
    # was taken: views, until the walks are written back after the passes
    Xw, zw = fits.Xw, fits.z
    weight = fits.C * fits.sw[ids, :m] * fits.qw[ids, :m]
    minus_q = -fits.qw[ids, :m]
    inside = np.arange(B)[:, None] >= np.arange(B)[None, :]  # prefix j has new row j'
    top = np.abs(fits.z[ids, :k]).max(axis=1, initial=0.0)
    done = np.zeros((W, B), bool)
    bad = pred.zero | ~np.isfinite(Hinv).all(axis=(1, 2, 3))
    n_iter = np.zeros((W, B), np.intp)
    g_last, z_last, drift_last = np.zeros((W, p)), np.zeros((W, m)), np.zeros(W)
    fi = fits.fi
    refs: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for it in range(1, _PASSES + 1):  # 2. exact passes
        for a in (int(i) for i in np.flatnonzero(~bad & ~done.all(axis=1))):
            cols = np.flatnonzero(~done[a])
            T = theta[a, cols]  # (c, p)
            Xa, za = Xw[ids[a], :m], zw[ids[a], :m]
            G, moved, z_end = _exact_pass(T, Xa, za, minus_q[a], weight[a], inside[cols], k,
                                          it > 1)
            G += reg[a, cols] * T  # (c, p): the exact gradients
            if it == 1:  # at the predicted points: a step, no test (none would pass)
                step = -(Hinv[a, cols] @ G[..., None])[..., 0]
                dec = -np.einsum("ca,ca->c", G, step)
                if not (np.isfinite(step).all() and (dec >= 0).all()):
                    bad[a] = True
                    continue
                n_iter[a, cols] = it
                theta[a, cols] += step
                f[a, cols] -= 0.5 * dec
                continue
            # the pass keeps only its chunks of the decisions: the few prefixes that need
            # all of theirs below get them computed again (T[at] @ Xa.T)
            size = _largest(T, Xa, k, inside[cols], top[a], moved)
            own = refs.get(a)
            if own is not None:  # prefixes whose inverse was made exact in a pass
                at = np.flatnonzero(own[1][cols])
                if at.size:
                    Dr = np.abs(T[at] @ Xa.T - own[0][cols[at]])
                    Dr[:, k:] *= inside[cols[at]]
                    moved[at] = Dr.max(axis=1)
            drift = base[a, cols] + moved
            loose = np.flatnonzero(drift > _LOOSE)
            if loose.size:  # the exact inverse Hessian at the prefix's point
                Zl = T[loose] @ Xa.T
                Hinv[a, cols[loose]] = _inverse_at(Xa, Zl, minus_q[a], weight[a],
                                                   inside[cols[loose]], k, reg[a, cols[loose]])
                if own is None:
                    own = refs[a] = (np.zeros((B, m)), np.zeros(B, bool))
                own[0][cols[loose]], own[1][cols[loose]] = Zl, True
                base[a, cols[loose]], drift[loose] = 0.0, 0.0
            step = -(Hinv[a, cols] @ G[..., None])[..., 0]
            dec = -np.einsum("ca,ca->c", G, step)
            solved = np.isfinite(step).all(axis=1) & (dec >= 0)
            safety = np.exp(drift)
            dv = step[:, :d]
            mv = np.abs(dv * fac[a, cols]).max(axis=1, initial=0.0)
            if fi:
                mv = np.maximum(mv, np.abs(step[:, d] + (dv * shift[a, cols]).sum(axis=1)))
            fc = f[a, cols]
            conv = solved & _converged(dec * safety, fc, np.full(cols.size, np.inf),
                                       mv * safety, _step_tol(size))
            n_iter[a, cols] = it
            done[a, cols[conv]] = True
            if conv[-1] and cols[-1] == B - 1:  # the walk's state after the block
                g_last[a], z_last[a], drift_last[a] = G[-1], z_end, drift[-1]
            go = ~conv
            if not go.any():
                continue
            # a step whose decisions may move far, or a curvature bound gone loose,
            # needs the prefix-by-prefix path's line search and fresh inverses
            full = (dec[go] < _FULL_STEP * fc[go]) | (mv[go] <= _SAFE_MOVE_WALK)
            if not solved[go].all() or not full.all() or it == _PASSES:
                bad[a] = True
                continue
            theta[a, cols[go]] += step[go]
            f[a, cols[go]] = fc[go] - 0.5 * dec[go]
    ok = ~bad & done.all(axis=1)
    if pred.saved is not None:  # failed walks back as they were
        for name in _STATE:
            getattr(fits, name)[ids[~ok]] = pred.saved[name][~ok]
    w, at = ids[ok], np.flatnonzero(ok)
    if not w.size:
        return ok
    if not scaled:  # the rows' accounting, done by ``add`` where there is a scaler
        fits._account(w, fits.Xw[w, k:m], fits.qw[w, k:m], fits.sw[w, k:m])
    fits.theta[w], fits.g[w], fits.Hinv[w] = theta[at, -1], g_last[at], Hinv[at, -1]
    fits.f[w], fits.drift[w] = f[at, -1], drift_last[at]
    fits.exact_H[w], fits.valid_H[w], fits.init[w] = False, True, True
    fits.z[w, :m] = z_last[at]
    out.classes = fits.classes
    for j in range(B):
        lsel = sel[at, j]
        out.n_samples[lsel] = k + j + 1
        out.n_iter[lsel] = n_iter[at, j]
        out.present[lsel] = True
        mean = scale = None
        if pred.params is not None:
            mean, var, scale = (x[at] for x in pred.params[j])
            out.scaler_mean[lsel] = mean
            if out.scaler_var is not None:
                out.scaler_var[lsel], out.scaler_scale[lsel] = var, scale
        fits._write_with(out, lsel, theta[at, j], mean, scale)
    return ok


def _inverse_at(X: np.ndarray, Z: np.ndarray, minus_q: np.ndarray, weight: np.ndarray,
                inside: np.ndarray, k: int, reg: np.ndarray) -> np.ndarray:
    """Exact inverse Hessians of prefixes of one walk at decisions ``Z`` (``(c, m)``),
    rows ``X`` (``(m, p)``); NaN where singular."""
    c, p = Z.shape[0], X.shape[1]
    H = np.empty((c, p, p))
    for i in range(c):
        with np.errstate(over="ignore"):
            sg = 1.0 / (1.0 + np.exp(np.multiply(Z[i], minus_q)))  # sigma(q z)
        w = np.abs(weight) * sg * (1.0 - sg)  # C s sigma'(q z)
        w[k:] *= inside[i]
        Bm = X * np.sqrt(w)[:, None]
        H[i] = Bm.T @ Bm
    H[:, np.arange(p), np.arange(p)] += reg
    return _inverses(H)


def _largest(T: np.ndarray, X: np.ndarray, k: int, inside: np.ndarray, top: float,
             moved: np.ndarray) -> np.ndarray:
    """The largest decision of each prefix (at points ``T``, over rows ``X``, its rows
    only; padding rows decide 0), clipped to 1 logit as
    :func:`~skdvl.utility._linear_solvers._step_tol` clips it: where the old rows'
    largest decision ``top`` stays above 1 plus the largest move, that is 1 without
    looking."""
    out = np.ones(moved.shape[0])
    look = np.flatnonzero(top - moved < 1.0)
    if look.size:
        Zl = np.abs(T[look] @ X.T)
        Zl[:, k:] *= inside[look]
        out[look] = np.minimum(Zl.max(axis=1), 1.0)
    return out


def _exact_pass(T: np.ndarray, Xa: np.ndarray, za: np.ndarray, minus_q: np.ndarray,
                weight: np.ndarray, inside: np.ndarray, k: int,
                with_moves: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One exact pass of a walk's prefixes at points ``T`` (``(c, p)``) over its rows
    ``Xa`` (``(m, p)``; row ``k + j`` counts for the prefixes where ``inside[:, j]``).

    Returns the loss gradients ``G`` (``(c, p)``, without the penalty), the largest
    move of each prefix's decisions from ``za`` (where the curvature was taken; zeros
    unless ``with_moves``), and the decisions of the last prefix (``(m,)``).

    From :data:`_CHUNK_FROM` rows on, the rows go through in chunks of
    :data:`_CHUNK_ROWS`, so that the decisions and residuals of a chunk stay in the
    core's cache between the elementwise steps (10,000 rows, 32 prefixes: about half
    the time of one pass over all the rows). The chunks depend on ``m`` alone.
    """
    c, m = T.shape[0], Xa.shape[0]
    rows = m if m <= _CHUNK_FROM else _CHUNK_ROWS
    G = np.zeros((c, Xa.shape[1]))
    moved = np.zeros(c)
    z_end = np.empty(m)
    buf = np.empty((2, c, min(rows, m)))
    for lo in range(0, m, rows):
        hi = min(m, lo + rows)
        Xc, w = Xa[lo:hi], hi - lo
        Z = np.matmul(T, Xc.T, out=buf[0, :, :w])  # the exact decisions
        z_end[lo:hi] = Z[-1]
        R = np.multiply(Z, minus_q[lo:hi], out=buf[1, :, :w])
        with np.errstate(over="ignore"):
            np.exp(R, out=R)
        R += 1.0
        np.divide(weight[lo:hi], R, out=R)  # C s q sigma(q z): the loss residuals
        if hi > k:  # a new row counts from its own prefix on
            R[:, max(lo, k) - lo:] *= inside[:, max(lo, k) - k:hi - k]
        G += R @ Xc
        if with_moves:
            D = np.subtract(Z, za[lo:hi], out=R)
            np.abs(D, out=D)
            if hi > k:
                D[:, max(lo, k) - lo:] *= inside[:, max(lo, k) - k:hi - k]
            np.maximum(moved, D.max(axis=1), out=moved)
    return G, moved, z_end
