"""Least-squares prefix walks on a torch device (``device=``): a GPU included.

The torch twin of :class:`~skdvl.utility._prefix_fits.LeastSquaresPrefixes`
(``Ridge`` and ``LinearRegression``, alone or after a ``StandardScaler``): the
same running weighted means and centred co-moments (West, 1979, "Updating mean
and variance estimates: an improved method", CACM 22(9), the weighted form of
Welford's recurrence), the same unweighted running moments for the scaler, and
the same normal equations as
:func:`~skdvl.utility._linear_solvers._normal_solve` (ridge: Jacobi-equilibrated
solve; least squares: the eigen-directions kept where scikit-learn's
``lstsq(cond=tol)`` keeps singular values), every operation in float64 tensors
on one device, so that ``O(d^2)`` per prefix runs there for all walks at once.
Each fit is copied back into the numpy :class:`~skdvl.utility._linear_state.BatchFit`
that the batched path scores.

Notes
-----
The arithmetic is that of the numpy walk operation by operation; only the
order of a few sums (the moments of a walk's base, the batched products) and
the eigen-solver are torch's, so that the prefix solutions agree with the numpy
walk's to a few units of round-off relative, not bitwise. Systems whose
spectrum lies too close to the least-squares cut for the co-moments to decide
it are solved, as in numpy, from the prefix's rows by the batched path's cold
solve, in numpy (their rows are copied back: rare, rank-deficient prefixes).
The state is per walk and every operation acts on each walk's own rows, so a
walk's fits do not depend on the other walks of its set on one device and one
thread count (values identical for any ``n_jobs`` on CPU).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from skdvl.utility._linear_backends import _TorchOps
from skdvl.utility._linear_solvers import _least_squares
from skdvl.utility._linear_state import BatchFit, _standardise
from skdvl.utility._prefix_fits import LeastSquaresPrefixes

__all__ = ["TorchLeastSquaresPrefixes"]

_EPS = np.finfo(np.float64).eps


class TorchLeastSquaresPrefixes:
    """Ridge / LinearRegression prefixes from running weighted moments, on ``plan.device``.

    The interface of :class:`~skdvl.utility._prefix_fits.LeastSquaresPrefixes`
    (``gather``, ``start``, ``add``, ``fit``, ``empty_fit``, ``n_rows``), for
    :class:`~skdvl.utility._prefix_walk.PrefixWalk`.

    Parameters
    ----------
    plan : BatchPlan
        A least-squares plan (``kind`` "ridge" or "ols") with a ``device``.
    X, y : ndarray
        Training data (float64, dense, finite) and targets.
    W : int
        The number of walks.
    """

    def __init__(self, plan: Any, X: np.ndarray, y: np.ndarray, W: int) -> None:
        ops = _TorchOps(plan.device)
        self.t, self.dev = ops.torch, ops.device
        self.plan, self.scaler = plan, plan.scaler
        self.n_rows, self.d = X.shape
        self.W = W
        self.fit_intercept = bool(plan.model.fit_intercept)
        self.X_np = np.vstack([X, np.zeros((1, self.d))])  # for the rare cold solves
        self.y_np = np.append(y, 0.0)
        self.X_ext = self._tensor(self.X_np)
        self.y_ext = self._tensor(self.y_np)
        z = self._zeros
        d = self.d
        self.idx = np.zeros((W, 0), np.intp)  # the gathered rows (n: padding)
        self.Xw, self.yw, self.sw = z(W, 0, d), z(W, 0), z(W, 0)
        self.S, self.ybar = z(W), z(W)
        self.xbar, self.M, self.m = z(W, d), z(W, d, d), z(W, d)
        self.cnt, self.mu, self.M2 = z(W), z(W, d), z(W, d)

    # ------------------------------------------------------------------ tensors
    def _tensor(self, a: Any) -> Any:
        return self.t.as_tensor(np.asarray(a, dtype=np.float64), device=self.dev)

    def _zeros(self, *shape: int) -> Any:
        return self.t.zeros(shape, dtype=self.t.float64, device=self.dev)

    def _ids(self, ids: np.ndarray) -> Any:
        return self.t.as_tensor(np.asarray(ids, dtype=np.int64), device=self.dev)

    def _per_walk(self, fn: Any, *arrays: Any) -> Any:
        """``fn`` of batches of matrices (one per walk). On a CPU one walk at a time, on
        an aligned copy: MKL's products and eigensolvers gave a matrix other bits when
        it started 8 bytes off a 16-byte boundary (the odd walks of a batch of 5 x 5
        float64 matrices; one thread, AVX-512), so a walk's fits depended on the walks
        stepped with it."""
        if self.dev.type != "cpu":
            return fn(*arrays)
        outs = [fn(*(a[i:i + 1].clone() for a in arrays)) for i in range(arrays[0].shape[0])]
        if isinstance(outs[0], tuple):
            return tuple(self.t.cat(parts) for parts in zip(*outs))
        return self.t.cat(outs)

    def _bmm(self, a: Any, b: Any) -> Any:
        return self._per_walk(lambda x, y: x @ y, a, b)

    def _numpy(self, x: Any) -> np.ndarray:
        return x.detach().cpu().numpy()

    # ------------------------------------------------------------------ rows
    def gather(self, rows: np.ndarray) -> None:
        """Append the rows ``rows`` ((W, m) indices, ``n`` for padding) to each walk."""
        cat = self.t.cat
        r = self.t.as_tensor(np.asarray(rows, dtype=np.int64), device=self.dev)
        self.idx = np.concatenate([self.idx, rows], axis=1)
        self.Xw = cat([self.Xw, self.X_ext[r]], dim=1)
        self.yw = cat([self.yw, self.y_ext[r]], dim=1)
        self.sw = cat([self.sw, (r < self.n_rows).to(self.t.float64)], dim=1)

    def start(self, ids: np.ndarray, k: int) -> None:
        """The moments of each walk's base (its first ``k`` rows), in two passes."""
        j = self._ids(ids)
        x, y, s = self.Xw[j, :k], self.yw[j, :k], self.sw[j, :k]
        S = s.sum(dim=1)
        self.S[j] = S
        if self.fit_intercept:
            xbar = (x * s[..., None]).sum(dim=1) / S[:, None]
            ybar = (y * s).sum(dim=1) / S
            x, y = x - xbar[:, None], y - ybar[:, None]
            self.xbar[j], self.ybar[j] = xbar, ybar
        xs = (x * s[..., None]).transpose(1, 2)
        self.M[j] = self._bmm(xs, x)
        self.m[j] = self._bmm(xs, y[..., None])[..., 0]
        if self.scaler is not None:
            raw = self.Xw[j, :k]
            mu = raw.mean(dim=1)
            self.cnt[j] = float(k)
            self.mu[j] = mu
            self.M2[j] = ((raw - mu[:, None]) ** 2).sum(dim=1)

    def add(self, ids: np.ndarray, k: int) -> None:
        """Add row ``k`` of each walk to its moments (the weighted Welford step)."""
        j = self._ids(ids)
        x, y, s = self.Xw[j, k], self.yw[j, k], self.sw[j, k]
        if self.scaler is not None:
            cnt = self.cnt[j] + 1.0
            delta = x - self.mu[j]
            mu = self.mu[j] + delta / cnt[:, None]
            self.M2[j] += delta * (x - mu)
            self.mu[j], self.cnt[j] = mu, cnt
        if not self.fit_intercept:
            self.M[j] += s[:, None, None] * x[:, :, None] * x[:, None, :]
            self.m[j] += (s * y)[:, None] * x
            self.S[j] += s
            return
        S = self.S[j] + s
        frac = self.t.where(S > 0, s / self.t.where(S > 0, S, 1.0), 0.0)
        dx, dy = x - self.xbar[j], y - self.ybar[j]
        c = s * (1.0 - frac)  # s S0 / S
        self.M[j] += c[:, None, None] * dx[:, :, None] * dx[:, None, :]
        self.m[j] += (c * dy)[:, None] * dx
        self.xbar[j] += frac[:, None] * dx
        self.ybar[j] += frac * dy
        self.S[j] = S

    # ------------------------------------------------------------------ fit
    def _scaler_params(self, j: Any) -> tuple[Any, Any, Any]:
        """The prefix scaler's mean, variance and scale (scikit-learn's near-constant
        rule: a scale of 1 where the variance is round-off of the mean)."""
        t = self.t
        m, mean = self.cnt[j][:, None], self.mu[j]
        var = t.clamp(self.M2[j] / m, min=0.0)
        if not self.scaler.with_std:
            return mean, var, t.ones_like(var)
        constant = var <= m * _EPS * var + (m * mean * _EPS) ** 2
        return mean, var, t.where(constant, 1.0, t.sqrt(var))

    def fit(self, ids: np.ndarray, k: int, out: BatchFit, sel: np.ndarray) -> None:
        """Solve the normal equations of the prefixes of length ``k`` of ``ids``."""
        model, j = self.plan.model, self._ids(ids)
        G, r, xbar = self.M[j].clone(), self.m[j].clone(), self.xbar[j]
        if self.scaler is not None:
            mean, var, scale = self._scaler_params(j)
            G /= scale[:, :, None] * scale[:, None, :]
            r /= scale
            xbar = (xbar - mean if self.scaler.with_mean else xbar) / scale
            assert out.scaler_mean is not None
            out.scaler_mean[sel] = self._numpy(mean)
            if out.scaler_var is not None and out.scaler_scale is not None:
                out.scaler_var[sel] = self._numpy(var)
                out.scaler_scale[sel] = self._numpy(scale)
        n_valid = (self.idx[ids, :k] < self.n_rows).sum(axis=1)
        if hasattr(model, "tol") and self.plan.kind == "ols":
            tol = np.full(ids.size, float(model.tol))
        else:
            tol = np.maximum(n_valid, self.d) * _EPS
        alpha = model.alpha if self.plan.kind == "ridge" else None
        coef_t, singular, failed, unsure = self._normal_solve(G, r, alpha, tol)
        intercept = (self.ybar[j] - (xbar * coef_t).sum(dim=1) if self.fit_intercept
                     else self.t.zeros_like(self.S[j]))
        coef, intercept = self._numpy(coef_t), self._numpy(intercept)
        if unsure.any():
            u = np.flatnonzero(unsure)
            assert singular is not None
            coef[u], intercept[u], singular[u] = self._solve_from_rows(ids[u], k, tol[u])
        out.coef[sel, 0] = coef
        out.intercept[sel, 0] = intercept
        out.failed[sel] = (failed | ~(self._numpy(self.S[j]) > 0)
                           | ~np.isfinite(coef).all(axis=1))
        out.n_samples[sel] = k
        if singular is not None and out.singular is not None and out.rank is not None:
            out.singular[sel] = singular
            out.rank[sel] = ((singular >= tol[:, None] * singular[:, :1])
                             & (singular > 0)).sum(axis=1)

    def _normal_solve(self, G: Any, r: Any, alpha: Any, tol: np.ndarray
                      ) -> tuple[Any, np.ndarray | None, np.ndarray, np.ndarray]:
        """:func:`~skdvl.utility._linear_solvers._normal_solve` in torch: coef (a tensor),
        singular values, failed and unsure (numpy). ``G`` is modified (ridge)."""
        t = self.t
        c, d = G.shape[0], G.shape[1]
        unsure = np.zeros(c, bool)
        if alpha is not None:
            diag = t.arange(d, device=self.dev)
            G[:, diag, diag] += alpha
            D = t.sqrt(t.diagonal(G, dim1=1, dim2=2))
            Gs = G / (D[:, :, None] * D[:, None, :])
            lam = self._per_walk(t.linalg.eigvalsh, Gs)
            coef, info = self._per_walk(t.linalg.solve_ex, Gs, (r / D)[..., None])
            coef = coef[..., 0] / D
            coef[info != 0] = float("nan")
            failed = self._numpy(lam[:, 0] <= 1e-12 * lam[:, -1])
            return coef, None, failed, unsure
        lam, V = self._per_walk(t.linalg.eigh, G)
        top = lam[:, -1:]
        cut = self._tensor(tol)[:, None] ** 2 * top
        keep = (lam >= cut) & (top > 0)
        proj = self._bmm(V.transpose(1, 2), r[..., None])[..., 0]
        coef = self._bmm(V, t.where(keep, proj / t.where(keep, lam, 1.0), 0.0)[..., None])[..., 0]
        singular = self._numpy(t.sqrt(t.clamp(lam, min=0.0)).flip(1))
        near = ((lam > 0.25 * cut) & (lam < t.maximum(4 * cut, 1e-8 * top))).any(dim=1)
        unsure = self._numpy(near & (top[:, 0] > 0))
        return coef, singular, np.zeros(c, bool), unsure

    def _solve_from_rows(self, ids: np.ndarray, k: int, tol: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Least squares whose spectrum lies too close to the cut for the co-moments
        to decide it: the batched path's cold solve from the prefix's rows, in numpy."""
        rows = self.idx[ids, :k]
        Z, y = self.X_np[rows], self.y_np[rows]
        s = (rows < self.n_rows) * 1.0
        if self.scaler is not None:
            _standardise(Z, s > 0, self.scaler.with_mean, self.scaler.with_std)
        coef, intercept, singular, _ = _least_squares(Z, y, s, self.fit_intercept, None, tol)
        return coef, intercept, singular

    def empty_fit(self, b: int) -> BatchFit:
        """The numpy walk's (the outputs are numpy arrays either way)."""
        return LeastSquaresPrefixes.empty_fit(self, b)  # type: ignore[arg-type]
