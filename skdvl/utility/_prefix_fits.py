"""The fits of :mod:`skdvl.utility._prefix_walk`: prefix ``k + 1`` from prefix ``k``.

Least squares (``Ridge``, ``LinearRegression``) keeps each walk's weighted
means and centred co-moments, updated by one row at a time (West, 1979,
"Updating mean and variance estimates: an improved method", CACM 22(9), the
weighted form of Welford's recurrence): ``O(d^2)`` per prefix, then the normal
equations the batched path solves (:func:`~skdvl.utility._linear_solvers._normal_solve`).
The sums are never inverted or downdated, so nothing drifts that a periodic
refactorisation would have to reset: the rounding error of a co-moment after
``k`` rows is that of a ``k``-term sum, ``O(k eps)`` relative to the sum of the
terms' magnitudes, the order of the batched path's own Gram matrix. A
StandardScaler before the model uses the running (unweighted) mean and
variance of the prefix, with scikit-learn's rule for near-constant features.

L2 logistic regression (binary) keeps each walk's optimum ``theta``, the exact
gradient there of its current prefix objective, and an approximation of the
inverse Hessian. Adding a row adds the row's gradient (the rest of the
gradient is carried, exact) and its curvature as a rank-one (Sherman-Morrison)
term; Newton steps with that inverse (recomputed exactly at the current
point once the training decisions moved by ``_DRIFT`` logit since the last
exact one, or an iteration shrank the Newton decrement by less than 4) run
until the convergence test of the batched path
(:func:`~skdvl.utility._linear_solvers._converged`, on the exact full gradient)
holds, with the step and decrement enlarged by ``exp(drift)``: an inverse exact
where the decisions were ``drift`` logit ago is within that factor of the
exact one (the curvature ``p (1 - p)`` of a row changes by at most
``exp(|dz|)`` when its decision moves by ``dz``). The converged point is
returned (the batched path takes one more
step); a prefix that does not converge within ``_MAX_IT`` iterations is marked
failed and fitted by the batched path instead.

Parametrisation. The walk fits ``z = v . (x - m) + c`` with a fixed centre
``m`` (the mean of all training rows; the intercept absorbs it), so that a
StandardScaler's prefix-dependent standardisation becomes a prefix-dependent
diagonal penalty ``sum_j sigma_j^2 v_j^2 / 2`` on raw coefficients: adding a
row changes the gradient by the row's term and ``(sigma'^2 - sigma^2) v``, both
known without touching the other rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import expit

from skdvl.utility._linear_batch import _padded
from skdvl.utility._linear_solvers import _least_squares, _normal_solve
from skdvl.utility._linear_state import BatchFit, _dict_weights, _standardise
from skdvl.utility._prefix_block import fit_block
from skdvl.utility._prefix_newton import _Work

__all__ = ["LeastSquaresPrefixes", "LogisticPrefixes"]

_MAX_IT = 50
_EPS = np.finfo(np.float64).eps


class _Prefixes:
    """What both kinds share: gathered rows, the scaler's running moments, outputs."""

    def __init__(self, plan: Any, X: np.ndarray, W: int, width: int) -> None:
        self.plan, self.scaler = plan, plan.scaler
        self.n_rows, self.d = X.shape
        self.W, self.width = W, width
        self.Xw = np.zeros((W, 0, width))
        self.sw = np.zeros((W, 0))
        self.cnt = np.zeros(W)
        self.mu = np.zeros((W, self.d))
        self.M2 = np.zeros((W, self.d))

    def _append(self, name: str, block: np.ndarray) -> None:
        setattr(self, name, np.concatenate([getattr(self, name), block], axis=1))

    # ------------------------------------------------------------------ scaler
    def _scaler_start(self, ids: np.ndarray, raw: np.ndarray) -> None:
        """The unweighted mean and squared deviations of each walk's first rows."""
        self.cnt[ids] = raw.shape[1]
        self.mu[ids] = raw.mean(axis=1)
        self.M2[ids] = ((raw - self.mu[ids][:, None]) ** 2).sum(axis=1)

    def _scaler_add(self, ids: np.ndarray, raw: np.ndarray) -> None:
        """Welford's update of the unweighted mean and squared deviations."""
        cnt = self.cnt[ids] + 1.0
        delta = raw - self.mu[ids]
        mu = self.mu[ids] + delta / cnt[:, None]
        self.M2[ids] += delta * (raw - mu)
        self.mu[ids], self.cnt[ids] = mu, cnt

    def _scaler_params(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The prefix scaler's mean, variance and scale (scikit-learn's near-constant
        rule: a scale of 1 where the variance is round-off of the mean)."""
        m, mean = self.cnt[ids][:, None], self.mu[ids]
        var = np.maximum(self.M2[ids] / m, 0.0)
        constant = var <= m * _EPS * var + (m * mean * _EPS) ** 2
        if not self.scaler.with_std:
            return mean, var, np.ones_like(var)
        return mean, var, np.where(constant, 1.0, np.sqrt(var))

    def _fill_scaler(self, out: BatchFit, sel: np.ndarray, ids: np.ndarray) -> None:
        mean, var, scale = self._scaler_params(ids)
        assert out.scaler_mean is not None
        out.scaler_mean[sel] = mean
        if out.scaler_var is not None and out.scaler_scale is not None:
            out.scaler_var[sel], out.scaler_scale[sel] = var, scale

    def empty_fit(self, b: int) -> BatchFit:
        z = np.zeros
        out = BatchFit(coef=z((b, 1, self.d)), intercept=z((b, 1)), degenerate=z(b, bool),
                       failed=z(b, bool), n_iter=z(b, np.intp), n_samples=z(b, np.intp),
                       n_features_in=self.d)
        if self.scaler is not None:
            out.scaler_mean = z((b, self.d))
            if self.scaler.with_std:
                out.scaler_var, out.scaler_scale = z((b, self.d)), np.ones((b, self.d))
        return out


# --------------------------------------------------------------------------- least squares

class LeastSquaresPrefixes(_Prefixes):
    """Ridge / LinearRegression prefixes from running weighted moments (exact)."""

    def __init__(self, plan: Any, X: np.ndarray, y: np.ndarray, W: int) -> None:
        super().__init__(plan, X, W, X.shape[1])
        self.X_ext = np.vstack([X, np.zeros((1, self.d))])
        self.y_ext = np.append(y, 0.0)
        self.yw = np.zeros((W, 0))
        self.fit_intercept = bool(plan.model.fit_intercept)
        d = self.d
        self.S, self.ybar = np.zeros(W), np.zeros(W)
        self.xbar, self.M, self.m = np.zeros((W, d)), np.zeros((W, d, d)), np.zeros((W, d))

    def gather(self, rows: np.ndarray) -> None:
        self._append("Xw", self.X_ext[rows])
        self._append("yw", self.y_ext[rows])
        self._append("sw", (rows < self.n_rows) * 1.0)

    def start(self, ids: np.ndarray, k: int) -> None:
        """The moments of each walk's base (its first ``k`` rows), in two passes."""
        x, y, s = self.Xw[ids, :k], self.yw[ids, :k], self.sw[ids, :k]
        S = s.sum(axis=1)
        self.S[ids] = S
        if self.fit_intercept:
            xbar = (x * s[..., None]).sum(axis=1) / S[:, None]
            ybar = (y * s).sum(axis=1) / S
            x, y = x - xbar[:, None], y - ybar[:, None]
            self.xbar[ids], self.ybar[ids] = xbar, ybar
        xs = x * s[..., None]
        self.M[ids] = np.swapaxes(xs, 1, 2) @ x
        self.m[ids] = (np.swapaxes(xs, 1, 2) @ y[..., None])[..., 0]
        if self.scaler is not None:
            self._scaler_start(ids, self.Xw[ids, :k])

    def add(self, ids: np.ndarray, k: int) -> None:
        """Add row ``k`` of each walk to its moments (the weighted Welford step)."""
        x, y, s = self.Xw[ids, k], self.yw[ids, k], self.sw[ids, k]
        if self.scaler is not None:
            self._scaler_add(ids, x)
        if not self.fit_intercept:
            self.M[ids] += s[:, None, None] * x[:, :, None] * x[:, None, :]
            self.m[ids] += (s * y)[:, None] * x
            self.S[ids] += s
            return
        S0 = self.S[ids]
        S = S0 + s
        frac = np.divide(s, S, out=np.zeros_like(S), where=S > 0)
        dx, dy = x - self.xbar[ids], y - self.ybar[ids]
        c = s * (1.0 - frac)  # s S0 / S
        self.M[ids] += c[:, None, None] * dx[:, :, None] * dx[:, None, :]
        self.m[ids] += (c * dy)[:, None] * dx
        self.xbar[ids] += frac[:, None] * dx
        self.ybar[ids] += frac * dy
        self.S[ids] = S

    def fit(self, ids: np.ndarray, k: int, out: BatchFit, sel: np.ndarray) -> None:
        """Solve the normal equations of the prefixes of length ``k`` of ``ids``."""
        model = self.plan.model
        G, r = self.M[ids].copy(), self.m[ids].copy()
        xbar = self.xbar[ids]
        if self.scaler is not None:
            mean, _, scale = self._scaler_params(ids)
            G /= scale[:, :, None] * scale[:, None, :]
            r /= scale
            xbar = (xbar - (mean if self.scaler.with_mean else 0.0)) / scale
            self._fill_scaler(out, sel, ids)
        n_valid = (self.sw[ids, :k] > 0).sum(axis=1)
        if hasattr(model, "tol") and self.plan.kind == "ols":
            tol = np.full(ids.size, float(model.tol))
        else:
            tol = np.maximum(n_valid, self.d) * _EPS
        alpha = model.alpha if self.plan.kind == "ridge" else None
        coef, singular, failed, unsure = _normal_solve(G, r, alpha, tol)
        out.intercept[sel, 0] = (self.ybar[ids] - (xbar * coef).sum(axis=1)
                                 if self.fit_intercept else 0.0)
        if unsure.any():
            u = np.flatnonzero(unsure)
            coef[u], out.intercept[sel[u], 0], singular[u] = self._solve_from_rows(
                ids[u], k, tol[u])
        out.coef[sel, 0] = coef
        out.failed[sel] = failed | ~(self.S[ids] > 0) | ~np.isfinite(coef).all(axis=1)
        out.n_samples[sel] = k
        if singular is not None and out.singular is not None and out.rank is not None:
            out.singular[sel] = singular
            out.rank[sel] = ((singular >= tol[:, None] * singular[:, :1])
                             & (singular > 0)).sum(axis=1)

    def _solve_from_rows(self, ids: np.ndarray, k: int, tol: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Least squares whose spectrum lies too close to the cut for the co-moments
        to decide it: the batched path's cold solve, from the prefix's rows (the
        direction kept or dropped is decided by round-off, so by the same sums)."""
        Z, y, s = self.Xw[ids, :k].copy(), self.yw[ids, :k], self.sw[ids, :k]
        if self.scaler is not None:
            _standardise(Z, s > 0, self.scaler.with_mean, self.scaler.with_std)
        coef, intercept, singular, _ = _least_squares(Z, y, s, self.fit_intercept, None, tol)
        return coef, intercept, singular

    def empty_fit(self, b: int) -> BatchFit:
        # _Prefixes's, named (not super()): the torch walk's prefixes call this one too
        out = _Prefixes.empty_fit(self, b)
        if self.plan.kind == "ols":
            out.singular, out.rank = np.zeros((b, self.d)), np.zeros(b, np.intp)
        return out


# --------------------------------------------------------------------------- logistic

class _ClassifierPrefixes(_Prefixes):
    """What the logistic kinds share: the raw rows from the centred ones, the
    scaler's penalty, the accounting of each walk's first rows (by the subclass's
    ``_account`` of the rows and their gathered labels, ``_labels()``)."""

    centre: np.ndarray
    reg: np.ndarray
    sumsq: np.ndarray
    n_valid: np.ndarray
    init: np.ndarray

    def _labels(self) -> np.ndarray:
        raise NotImplementedError

    def _account(self, ids: np.ndarray, x: np.ndarray, labels: np.ndarray,
                 s: np.ndarray) -> None:
        raise NotImplementedError

    def _raw(self, x: np.ndarray) -> np.ndarray:
        return x[..., :self.d] + self.centre

    def _set_reg(self, ids: np.ndarray) -> None:
        if self.scaler is not None:
            self.reg[ids, :self.d] = self._scaler_params(ids)[2] ** 2

    def _move_factors(self, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per coefficient, what turns a step of the walk's coefficients into the move
        the batched path tests (its step times its column's root mean square, in its
        coordinates); and the shift that turns them into its intercept's step."""
        cnt = np.maximum(self.n_valid[j], 1.0)[:, None]
        if self.scaler is not None:
            mean, var, scale = self._scaler_params(j)
            rms = (np.sqrt(var) if self.scaler.with_mean
                   else np.sqrt(self.sumsq[j] / cnt)) / scale
            shift = (mean if self.scaler.with_mean else 0.0) - self.centre
            return scale * rms, shift
        return np.sqrt(self.sumsq[j] / cnt), np.broadcast_to(-self.centre, (j.size, self.d))

    def _take_row(self, ids: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
        """Account row ``k`` of each walk (and the scaler's moments and penalty): the
        start of ``add``. Returns the rows, their gathered labels and weights, the
        penalty before the row, and which walks have a fit to step from."""
        x, lab, s = self.Xw[ids, k], self._labels()[ids, k], self.sw[ids, k]
        self._account(ids, x[:, None], lab[:, None], s[:, None])
        reg0 = self.reg[ids]
        if self.scaler is not None:
            self._scaler_add(ids, self._raw(x))
            self._set_reg(ids)
        return x, lab, s, reg0, self.init[ids]

    def start(self, ids: np.ndarray, k: int) -> None:
        x = self.Xw[ids, :k]
        self._account(ids, x, self._labels()[ids, :k], self.sw[ids, :k])
        if self.scaler is not None:
            self._scaler_start(ids, self._raw(x))
            self._set_reg(ids)


class LogisticPrefixes(_ClassifierPrefixes):
    """Binary L2 logistic regression prefixes by warm-started Newton steps."""

    def __init__(self, plan: Any, X: np.ndarray, y: np.ndarray, W: int) -> None:
        model = plan.model
        self.fi = bool(model.fit_intercept)
        d = X.shape[1]
        super().__init__(plan, X, W, d + self.fi)
        self.C = float(model.C)
        self.classes, codes = np.unique(np.asarray(y), return_inverse=True)
        cw = np.ones(2)
        if isinstance(model.class_weight, dict) and model.class_weight:
            cw = _dict_weights(self.classes, model.class_weight)[0]
        self.centre = X.mean(axis=0) if self.fi else np.zeros(d)
        n = X.shape[0]
        ext = np.zeros((n + 1, self.width))
        ext[:n, :d] = X - self.centre
        ext[:n, d:] = 1.0
        self.X_ext = ext
        self.code_ext = np.append(codes, 0).astype(np.intp)
        self.q_ext = np.append(1.0 - 2.0 * codes, 0.0)
        self.s_ext = np.append(cw[codes], 0.0)
        p = self.width
        self.qw, self.cw = np.zeros((W, 0)), cw
        self.z = np.zeros((W, 0))
        self.theta, self.g = np.zeros((W, p)), np.zeros((W, p))
        self.Hinv = np.zeros((W, p, p))
        self.exact_H = np.zeros(W, bool)  # Hinv was computed at theta, nothing since
        self.valid_H = np.zeros(W, bool)  # Hinv may be used (else: recompute first)
        self.drift = np.zeros(W)
        self.f = np.zeros(W)  # the objective at theta (exact at a restart, then modelled)
        self.init = np.zeros(W, bool)
        self.counts = np.zeros((W, 2))
        self.g0 = np.zeros((W, p))  # the gradient at 0, over C; and its round-off bound
        self.b0 = np.zeros((W, p))
        self.sumsq = np.zeros((W, d))
        self.n_valid = np.zeros(W)
        self.reg = np.zeros((W, p))
        self.reg[:, :d] = 1.0

    def empty_fit(self, b: int) -> BatchFit:
        out = super().empty_fit(b)
        out.present = np.zeros((b, 2), bool)
        return out

    # ------------------------------------------------------------------ rows
    def gather(self, rows: np.ndarray) -> None:
        self._append("Xw", self.X_ext[rows])
        self._append("qw", self.q_ext[rows])
        self._append("sw", self.s_ext[rows])
        self._append("z", np.zeros(rows.shape))

    def _account(self, ids: np.ndarray, x: np.ndarray, q: np.ndarray, s: np.ndarray) -> None:
        """Class counts, the gradient at 0, column sums of squares: rows ``x`` added
        (``x`` (A, m, p))."""
        self.counts[ids, 0] += (q > 0).sum(axis=1)
        self.counts[ids, 1] += (q < 0).sum(axis=1)
        r = 0.5 * s * q
        self.g0[ids] += (x * r[..., None]).sum(axis=1)
        self.b0[ids] += (np.abs(x) * np.abs(r)[..., None]).sum(axis=1)
        self.sumsq[ids] += (self._raw(x) ** 2).sum(axis=1)
        self.n_valid[ids] += (s > 0).sum(axis=1)

    def _labels(self) -> np.ndarray:
        return self.qw

    def add(self, ids: np.ndarray, k: int) -> None:
        """Add row ``k`` of each walk: its gradient and curvature at the walk's optimum."""
        x, q, s, reg0, live = self._take_row(ids, k)
        if not live.any():
            return
        j, x, q, s = ids[live], x[live], q[live], s[live]
        theta = self.theta[j]
        zn = (x * theta).sum(axis=1)
        self.z[j, k] = zn
        p = expit(q * zn)
        dreg = self.reg[j] - reg0[live]
        self.g[j] += (self.C * s * q * p)[:, None] * x + dreg * theta
        self.f[j] += (self.C * s * np.logaddexp(0.0, q * zn)
                      + 0.5 * (dreg * theta ** 2).sum(axis=1))
        w = self.C * s * p * (1.0 - p)
        u = (self.Hinv[j] @ x[..., None])[..., 0]
        denom = 1.0 + w * (x * u).sum(axis=1)
        self.Hinv[j] -= (w / denom)[:, None, None] * u[:, :, None] * u[:, None, :]
        self.exact_H[j] = False
        if self.scaler is not None:
            change = np.abs(self.reg[j] - reg0[live]) / np.maximum(self.reg[j], _EPS)
            self.drift[j] += change.max(axis=1)

    # ------------------------------------------------------------------ fit
    def _describe(self, ids: np.ndarray, k: int, out: BatchFit, sel: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Write what the fits of the prefixes of length ``k`` of ``ids`` are before any
        solve (classes present, size, degenerate, the scaler) into ``out[sel]``; return
        the walks with two classes, and their rows of ``out``."""
        present = self.counts[ids] > 0
        assert out.present is not None
        out.classes = self.classes
        out.present[sel] = present
        out.n_samples[sel] = k
        degenerate = present.sum(axis=1) < 2
        out.degenerate[sel] = degenerate
        if self.scaler is not None:
            self._fill_scaler(out, sel, ids)
        return ids[~degenerate], sel[~degenerate]

    def fit(self, ids: np.ndarray, k: int, out: BatchFit, sel: np.ndarray) -> None:
        """Fit the prefixes of length ``k`` of ``ids``; write them into ``out[sel]``."""
        live, lsel = self._describe(ids, k, out, sel)
        if not live.size:
            return
        zero = (np.abs(self.g0[live]) <= int(_padded(k)) * _EPS * self.b0[live]).all(axis=1)
        if zero.any():  # 0 is the optimum up to round-off, as the batched path decides
            self._restart(live[zero], k, zero=True)
        new = live[~zero & ~self.init[live]]
        if new.size:
            self._restart(new, k, zero=False)
        todo = live[~zero]
        n_iter, ok = self._newton(todo, k) if todo.size else (np.zeros(0, np.intp),
                                                            np.zeros(0, bool))
        out.n_iter[lsel[~zero]] = n_iter
        out.failed[lsel[~zero]] = ~ok
        self.init[todo[~ok]] = False
        theta = self.theta[live]
        theta[zero] = 0.0
        self._write(out, lsel, live, theta)

    def fit_block(self, ids: np.ndarray, k: int, B: int, out: BatchFit,
                  sel: np.ndarray) -> None:
        """Add rows ``k .. k + B - 1`` of each walk of ``ids`` (all at prefix ``k``) and
        fit the ``B`` new prefixes into ``out`` rows ``sel`` (``(ids.size, B)``):
        together (:func:`~skdvl.utility._prefix_block.fit_block`) where the walk is
        fitted with both classes present, else (or where that fails) prefix by prefix."""
        blocked = np.zeros(ids.size, bool)
        can = self.init[ids] & (self.counts[ids] > 0).all(axis=1)
        if can.any():
            blocked[can] = fit_block(self, ids[can], k, B, out, sel[can])
        rest = np.flatnonzero(~blocked)
        for j in range(B):
            if rest.size:
                self.add(ids[rest], k + j)
                self.fit(ids[rest], k + j + 1, out, sel[rest, j])

    def _restart(self, j: np.ndarray, k: int, zero: bool) -> None:
        """(Re)start walks ``j`` at their current point (0 if not finite, or at 0 when
        0 is the optimum): exact decisions and gradient over the ``k`` rows."""
        theta = self.theta[j]
        theta[~np.isfinite(theta).all(axis=1) | zero] = 0.0
        self.theta[j] = theta
        X = self.Xw[j, :k]
        self.z[j, :k] = (X @ theta[..., None])[..., 0]
        self.g[j] = self._gradient(j, k, X)
        self.f[j] = (self.C * (self.sw[j, :k] * np.logaddexp(
            0.0, self.qw[j, :k] * self.z[j, :k])).sum(axis=1)
            + 0.5 * (self.reg[j] * theta ** 2).sum(axis=1))
        self.init[j], self.valid_H[j], self.exact_H[j] = True, False, False

    def _gradient(self, j: np.ndarray, k: int, X: np.ndarray) -> np.ndarray:
        r = self.C * self.sw[j, :k] * self.qw[j, :k] * expit(self.qw[j, :k] * self.z[j, :k])
        return (r[:, None, :] @ X)[:, 0] + self.reg[j] * self.theta[j]

    def _newton(self, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Newton iterations of the prefixes of length ``k`` of ``ids`` until converged.

        Returns the iterations taken and which converged (per walk of ``ids``).
        """
        w = _Work(self, ids, k)
        for it in range(1, _MAX_IT + 1):
            w.iterate(it)
            if not w.pos.size:
                break
        w.leave(np.ones(w.pos.size, bool))
        return w.n_iter, w.ok

    def _write(self, out: BatchFit, lsel: np.ndarray, live: np.ndarray,
               theta: np.ndarray) -> None:
        """The fits in the batched path's coordinates (scaled space for a Pipeline)."""
        mean = scale = None
        if self.scaler is not None:
            mean, _, scale = self._scaler_params(live)
        self._write_with(out, lsel, theta, mean, scale)

    def _write_with(self, out: BatchFit, lsel: np.ndarray, theta: np.ndarray,
                    mean: np.ndarray | None, scale: np.ndarray | None) -> None:
        """:meth:`_write` with the prefixes' scaler mean and scale given."""
        d = self.d
        v = theta[:, :d]
        c = theta[:, d] if self.fi else np.zeros(theta.shape[0])
        if self.scaler is not None:
            assert mean is not None and scale is not None
            shift = (mean if self.scaler.with_mean else 0.0) - self.centre
            out.coef[lsel, 0] = v * scale
            out.intercept[lsel, 0] = c + (v * shift).sum(axis=1) if self.fi else 0.0
        else:
            out.coef[lsel, 0] = v
            out.intercept[lsel, 0] = c - (v * self.centre).sum(axis=1) if self.fi else 0.0
        zero = ~theta.any(axis=1)
        out.coef[lsel[zero]] = 0.0
        out.intercept[lsel[zero]] = 0.0
