"""Binary logistic prefix walks on a torch device (``device=``): a GPU included.

Each prefix is fitted by the batched path's own solver,
:func:`~skdvl.utility._linear_solvers._newton_binomial` (damped Newton with
exact Hessians, its convergence test and tolerance), on the device, started
from the optimum of the walk's previous prefix instead of from the batched
path's common start. A prefix ``k + 1`` is prefix ``k`` plus one row, so the
previous optimum is a near-perfect start (typically 2-3 iterations instead of
5-7): the warm start the numpy walk
(:class:`~skdvl.utility._prefix_fits.LogisticPrefixes`) also uses, without its
carried gradient and rank-one inverse updates. Those save the ``O(k d)`` pass
over a prefix's rows that a device runs in parallel anyway; here every
iteration recomputes the decisions, gradient and Hessian of the prefix from its
rows, kept on the device as the walk gathers them.

The bookkeeping that decides what is fitted (class counts, the scaler's running
moments) is the numpy walk's, on the host; with a ``StandardScaler`` the rows
are standardised on the device by the prefix's running mean and scale, and the
start moved from the previous prefix's coordinates to the new ones.

Notes
-----
A prefix's fit equals its cold batched fit to the solver's tolerance (both stop
where no step moves a training decision by more than 1e-7 logit), not bitwise.
On a CPU device each walk is solved alone on an aligned copy of its own rows:
MKL's batched products and reductions give a matrix other last bits depending
on the matrices in its batch (see
:meth:`~skdvl.utility._linear_batch.BatchPlan._binomial_alone`), which would
make values depend on ``n_jobs``. On a GPU the walks of a prefix length are
solved in one batch; whether their bits depend on the batch there is not
measured.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from skdvl.utility._linear_backends import _TorchOps
from skdvl.utility._linear_solvers import _newton_binomial
from skdvl.utility._linear_state import BatchFit
from skdvl.utility._prefix_fits import LogisticPrefixes

__all__ = ["TorchLogisticPrefixes"]

#: on a CPU device, solve each walk alone (see the module's notes); the tests turn it off
#: to run the batched code of a GPU on a CPU
_ALONE_ON_CPU = True


class TorchLogisticPrefixes(LogisticPrefixes):
    """Binary L2 logistic regression prefixes, each solved on ``plan.device`` by the
    batched path's Newton solver from the walk's previous optimum.

    The interface of :class:`~skdvl.utility._prefix_fits.LogisticPrefixes`
    (``gather``, ``start``, ``add``, ``fit``, ``empty_fit``, ``n_rows``), for
    :class:`~skdvl.utility._prefix_walk.PrefixWalk`; blocks of prefixes are fitted
    one prefix at a time (``fit_block`` is None).

    Parameters
    ----------
    plan : BatchPlan
        A binary logistic plan with a ``device``.
    X, y : ndarray
        Training data (float64, dense, finite) and two-class targets.
    W : int
        The number of walks.
    """

    fit_block = None  # type: ignore[assignment]

    def __init__(self, plan: Any, X: np.ndarray, y: np.ndarray, W: int) -> None:
        super().__init__(plan, X, y, W)
        ops = _TorchOps(plan.device)
        self.ops, self.t, self.dev = ops, ops.torch, ops.device
        n, d = X.shape
        raw = np.zeros((n + 1, self.width))  # the rows as the batched path fits them
        raw[:n, :d] = X
        raw[:n, d:] = 1.0
        self.raw_t = self._tensor(raw)
        self.code_t = self._tensor(self.code_ext * 1.0)
        self.s_t = self._tensor(self.s_ext)
        self.Xr = self.t.zeros((W, 0, self.width), dtype=self.t.float64, device=self.dev)
        self.yr = self.t.zeros((W, 0), dtype=self.t.float64, device=self.dev)
        self.sr = self.t.zeros((W, 0), dtype=self.t.float64, device=self.dev)
        # each walk's last optimum in raw coordinates (z = v . x + c), and whether it
        # has one to start from (none before the first fit, nor after a failed one)
        self.start_raw = np.zeros((W, self.width))
        self.warm = np.zeros(W, bool)

    def _tensor(self, a: Any) -> Any:
        return self.t.as_tensor(np.asarray(a, dtype=np.float64), device=self.dev)

    # ------------------------------------------------------------------ rows
    def gather(self, rows: np.ndarray) -> None:
        """Append the rows ``rows`` ((W, m) indices, ``n`` for padding) to each walk: on
        the host for the bookkeeping, on the device for the fits."""
        super().gather(rows)
        r = self.t.as_tensor(np.asarray(rows, dtype=np.int64), device=self.dev)
        self.Xr = self.t.cat([self.Xr, self.raw_t[r]], dim=1)
        self.yr = self.t.cat([self.yr, self.code_t[r]], dim=1)
        self.sr = self.t.cat([self.sr, self.s_t[r]], dim=1)

    def add(self, ids: np.ndarray, k: int) -> None:
        """Account row ``k`` of each walk (class counts, the scaler's moments): the fit
        reads the row from the device."""
        self._take_row(ids, k)

    # ------------------------------------------------------------------ fit
    def fit(self, ids: np.ndarray, k: int, out: BatchFit, sel: np.ndarray) -> None:
        """Fit the prefixes of length ``k`` of ``ids``; write them into ``out[sel]``."""
        live, lsel = self._describe(ids, k, out, sel)
        if not live.size:
            return
        d = self.d
        shift = np.zeros((live.size, d))
        scale = np.ones((live.size, d))
        if self.scaler is not None:
            mean, _, scale = self._scaler_params(live)
            if self.scaler.with_mean:
                shift = mean
        # the start, moved into this prefix's coordinates: z = v_s . (x - shift) / scale
        # + c_s for the raw v . x + c
        theta0 = self.start_raw[live].copy()
        theta0[:, :d] *= scale
        if self.fi:
            theta0[:, d] += (self.start_raw[live, :d] * shift).sum(axis=1)
        theta0[~self.warm[live]] = 0.0
        theta, n_iter, ok = self._solve(live, k, shift, scale, theta0)
        out.coef[lsel, 0] = theta[:, :d]
        out.intercept[lsel, 0] = theta[:, d] if self.fi else 0.0
        out.n_iter[lsel] = n_iter
        out.failed[lsel] = ~ok
        v = theta[:, :d] / scale
        self.start_raw[live, :d] = v
        if self.fi:
            self.start_raw[live, d] = theta[:, d] - (v * shift).sum(axis=1)
        self.warm[live] = ok & np.isfinite(theta).all(axis=1)

    def _solve(self, live: np.ndarray, k: int, shift: np.ndarray, scale: np.ndarray,
               theta0: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:func:`_newton_binomial` on the prefixes of length ``k`` of ``live``: in one
        batch on a GPU, walk by walk on a CPU (see the module's notes)."""
        ops, t = self.ops, self.t
        d = self.d
        if self.dev.type == "cpu" and _ALONE_ON_CPU:
            theta = np.zeros((live.size, self.width))
            n_iter, ok = np.zeros(live.size, np.intp), np.zeros(live.size, bool)
            for a, w in enumerate(live):
                Z = self.Xr[int(w), :k].clone()[None]
                if self.scaler is not None:
                    Z[..., :d] = (Z[..., :d] - self._tensor(shift[a])) / self._tensor(scale[a])
                th, it, good = _newton_binomial(
                    Z, self.yr[int(w), :k].clone()[None], self.sr[int(w), :k].clone()[None],
                    self.C, self.fi, self._tensor(theta0[a:a + 1]), ops)
                theta[a], n_iter[a], ok[a] = (ops.to_numpy(x)[0] for x in (th, it, good))
            return theta, n_iter, ok
        j = t.as_tensor(np.asarray(live, dtype=np.int64), device=self.dev)
        Z = self.Xr[j, :k]  # advanced indexing: a copy
        if self.scaler is not None:
            Z[..., :d] = ((Z[..., :d] - self._tensor(shift)[:, None])
                          / self._tensor(scale)[:, None])
        th, it, good = _newton_binomial(Z, self.yr[j, :k], self.sr[j, :k], self.C, self.fi,
                                        self._tensor(theta0), ops)
        return ops.to_numpy(th), ops.to_numpy(it), ops.to_numpy(good)
