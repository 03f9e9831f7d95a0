"""Regression-adjusted MSR: the Banzhaf regression as a control variate for any semivalue.

Witter, Liu & Musco (2025), "Regression-adjusted Monte Carlo estimators for
Shapley values and probabilistic values", arXiv 2506.11849. The shared
statistics are in :mod:`skdvl.sampling._regression`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from skdvl._coalitions import check_int, log_binom, uniform_coalitions
from skdvl.result import ValuationResult
from skdvl.sampling._base import _RARE
from skdvl.sampling._exact import ExactSampler
from skdvl.sampling._regression import (
    CoalitionSamples,
    _nan_result,
    _RegressionSampler,
    _result,
)

__all__ = ["RegressionMSRSampler"]


# --------------------------------------------------------------------------- regression MSR
@dataclass
class _MSRSpec:
    """Sizes of a regression-adjusted MSR game: enumerated border, sampled rest."""

    n: int
    mass: np.ndarray
    border: list[int]
    sizes: np.ndarray
    q: np.ndarray


def _msr_size_distribution(mass: np.ndarray, n: int, sizes: np.ndarray) -> np.ndarray:
    """``q(s)`` proportional to the weight the semivalue gives coalitions of size ``s``.

    A coalition ``S`` of size ``s`` enters player ``i``'s value with weight
    ``m(s - 1) / C(n-1, s-1)`` if ``i`` is in it and ``m(s) / C(n-1, s)`` if not;
    summed over the ``C(n, s)`` coalitions and the players this is
    ``n (m(s - 1) + m(s))``: the sizes the semivalue cares about are drawn most.
    """
    m_prev = np.where(sizes >= 1, mass[np.clip(sizes - 1, 0, n - 1)], 0.0)
    m_here = np.where(sizes <= n - 1, mass[np.clip(sizes, 0, n - 1)], 0.0)
    q = m_prev + m_here
    q = np.maximum(q, q.max() * 1e-12)  # every sampled size stays possible
    return q / q.sum()


def _msr_coefficients(mass: np.ndarray, n: int, sizes: np.ndarray) -> tuple[Any, Any]:
    """Per coalition size: weight of ``u(S)`` for a player in ``S`` (``a``) and out (``b``).

    ``phi_i = sum_S u(S) (1[i in S] a(|S|) - 1[i not in S] b(|S|))`` with
    ``a(s) = m(s - 1) / C(n-1, s-1)`` and ``b(s) = m(s) / C(n-1, s)``.
    """
    sizes = np.asarray(sizes)
    a = np.zeros(sizes.shape)
    b = np.zeros(sizes.shape)
    inside, outside = sizes >= 1, sizes <= n - 1
    a[inside] = mass[sizes[inside] - 1] * np.exp(-log_binom(n - 1, sizes[inside] - 1))
    b[outside] = mass[sizes[outside]] * np.exp(-log_binom(n - 1, sizes[outside]))
    return a, b


class RegressionMSRSampler(_RegressionSampler):
    """Regression-adjusted maximum sample reuse, for any semivalue.

    Witter, Liu & Musco (2025), "Regression-adjusted Monte Carlo estimators for
    Shapley values and probabilistic values", arXiv 2506.11849. Every semivalue
    is a weighted sum of utilities, ``phi_i = sum_S u(S) c_i(S)``, and of a
    linear function ``f(S) = beta_0 + sum_{j in S} beta_j`` it is exactly
    ``beta_i``. So fit a linear model ``f`` to the sampled utilities and
    estimate ``phi_i = beta_i + sum_S (u(S) - f(S)) c_i(S)`` by importance
    sampling (every sample serves every player, as in MSR): only the residual
    of the utility is sampled. The samples are split in ``n_folds`` folds and
    each fold's residuals are taken against a model fitted on the other folds
    (cross-fitting), so the estimate is unbiased whatever the fit.

    Coalition sizes are drawn in proportion to the weight the semivalue puts on
    them (see :func:`_msr_size_distribution`; for Banzhaf values this is MSR's
    uniform coalitions), uniformly given the size. The empty and full coalitions,
    and for semivalues that weigh them (Shapley, Beta Shapley) all coalitions of
    sizes 1 and ``n - 1``, are enumerated once and enter exactly. The samples
    serve any other semivalue too (:meth:`reweight`), unbiased wherever the
    sampled sizes cover the other semivalue's weights.

    Parameters
    ----------
    n_folds : int, default=2
        Folds of the cross-fitting (at least 2).
    ridge : float, default=1e-6
        Ridge penalty of the linear fit, relative to the mean diagonal of its
        Gram matrix; any value keeps the estimate unbiased.
    batch_size : int, default=128
        Coalitions per block.
    """

    def __init__(self, n_folds: int = 2, ridge: float = 1e-6, batch_size: int = 128) -> None:
        check_int(n_folds, "n_folds", 2)
        _check_ridge(ridge)
        check_int(batch_size, "batch_size", 1)
        self.n_folds, self.ridge, self.batch_size = n_folds, ridge, batch_size

    def _check(self) -> None:
        super()._check()
        check_int(self.n_folds, "n_folds", 2)
        _check_ridge(self.ridge)

    def weights(self, mass: np.ndarray, n: int) -> _MSRSpec:
        self._check()
        mass = np.asarray(mass, dtype=np.float64)
        border = [0, n]
        if n >= 4 and mass[0] + mass[n - 1] >= 1.0 / n:
            border += [1, n - 1]
        sizes = np.array([s for s in range(n + 1) if s not in border])
        return _MSRSpec(n, mass, border, sizes, _msr_size_distribution(mass, n, sizes))

    def run_block(self, ev, rng, weights, block, start=0, stop=None):  # type: ignore[no-untyped-def]
        n, spb = ev.n, self.samples_per_block
        stats = CoalitionSamples(n, spec=weights)
        self._border(ev, stats, weights.border, block, start)
        idx = rng.choice(weights.sizes.shape[0], size=spb, p=weights.q)
        sizes = weights.sizes[idx]
        masks = uniform_coalitions(rng, sizes, n)[start:stop]
        q_of_coalition = np.exp(np.log(weights.q[idx]) - log_binom(n, sizes))[start:stop]
        u = ev.evaluate(masks)
        stats.add(masks, u[:, None], 1.0 / q_of_coalition)
        # running sums per fold of the linear fit: sample j of block b is in fold (b*spb+j) % K
        folds = (block * spb + np.arange(spb)[start:stop]) % int(self.n_folds)
        z = np.column_stack([np.ones(masks.shape[0]), masks.astype(np.float64)])
        for k in range(int(self.n_folds)):
            sel = folds == k
            zk = z[sel]
            stats.accumulate(f"gram{k}", zk.T @ zk)
            stats.accumulate(f"zu{k}", zk.T @ u[sel])
        return (stats,)

    def result(self, stats: tuple[Any, ...]) -> ValuationResult:
        s = stats[0]
        return self._estimate(s, None if s.spec is None else s.spec.mass)

    def reweight(self, state: Any, mass: np.ndarray) -> ValuationResult:
        """Values of another semivalue from the same samples (importance reweighting)."""
        if not hasattr(state, "moments"):  # an enumerated small game
            return ExactSampler().reweight(state, mass)
        s = state.moments[0]
        mass = np.asarray(mass, dtype=np.float64)
        if s.spec is not None:
            _warn_uncovered(s.spec, mass)
        return self._estimate(s, mass)

    def _estimate(self, s: CoalitionSamples, mass: np.ndarray | None) -> ValuationResult:
        n, k_folds = s.n, int(self.n_folds)
        if mass is None or s.border_u is None or s.n_units < 2 * k_folds:
            return _nan_result(n)
        assert s.border_masks is not None
        fits = [self._fit(s, k) for k in range(k_folds)]
        if any(f is None for f in fits):
            return _nan_result(n)
        betas = np.array(fits)  # (K, n + 1): the fit without fold k, for fold k
        # fold k's estimate: beta_k + the exact border sum of its residuals + the mean
        # of its sampled units' weighted residuals; the value is the mean over folds
        a_b, b_b = _msr_coefficients(mass, n, s.border_masks.sum(axis=1))
        zb = s.border_masks.astype(np.float64)
        e_b = s.border_u[:, None] - betas[:, 0] - zb @ betas[:, 1:].T  # (border, K)
        exact = betas[:, 1:] + (zb.T @ (a_b[:, None] * e_b)).T - ((1 - zb).T @ (
            b_b[:, None] * e_b)).T
        sums, sq = np.zeros((k_folds, n)), np.zeros((k_folds, n))
        counts = np.zeros(k_folds)
        first = 0
        for masks, u, rho in s.chunks():
            m = masks.shape[0]
            folds = (first + np.arange(m)) % k_folds  # a unit's fold is its draw order mod K
            first += m
            a, b = _msr_coefficients(mass, n, masks.sum(axis=1))
            zf = masks.astype(np.float64)
            beta = betas[folds]
            e = (u[:, 0] - beta[:, 0] - np.einsum("ij,ij->i", zf, beta[:, 1:])) * rho
            h = np.where(masks, (a * e)[:, None], -(b * e)[:, None])
            for k in range(k_folds):
                sel = folds == k
                sums[k] += h[sel].sum(axis=0)
                sq[k] += (h[sel] ** 2).sum(axis=0)
                counts[k] += sel.sum()
        means = sums / counts[:, None]
        var = np.maximum(sq - counts[:, None] * means**2, 0.0) / (counts[:, None] - 1)
        values = (exact + means).mean(axis=0)
        stderr = np.sqrt((var / counts[:, None]).sum(axis=0)) / k_folds
        return _result(values, stderr, s.n_coalitions)

    def _fit(self, s: CoalitionSamples, k: int) -> np.ndarray | None:
        """The linear model fitted on the border coalitions and every fold but ``k``."""
        k_folds = int(self.n_folds)
        assert s.border_masks is not None and s.border_u is not None
        zb = np.column_stack([np.ones(s.border_masks.shape[0]),
                              s.border_masks.astype(np.float64)])
        gram = zb.T @ zb
        zu = zb.T @ s.border_u
        for j in range(k_folds):
            if j != k and f"gram{j}" in s.sums:
                gram = gram + s.sums[f"gram{j}"]
                zu = zu + s.sums[f"zu{j}"]
        lam = float(self.ridge) * max(float(np.trace(gram)) / gram.shape[0], 1e-12)
        reg = np.full(gram.shape[0], lam)
        reg[0] = 0.0  # the intercept is not penalised
        try:
            beta = np.linalg.solve(gram + np.diag(reg), zu)
        except np.linalg.LinAlgError:
            return None
        return beta if np.all(np.isfinite(beta)) else None


def _check_ridge(ridge: Any) -> None:
    ok = isinstance(ridge, (int, float, np.floating, np.integer)) and not isinstance(
        ridge, bool) and math.isfinite(ridge) and ridge >= 0
    if not ok:
        raise ValueError(f"ridge must be a finite number >= 0. Got {ridge!r} instead.")


def _warn_uncovered(spec: _MSRSpec, mass: np.ndarray) -> None:
    """Warn when another semivalue weighs sizes the samples hardly ever drew."""
    n = spec.n
    need = np.zeros(n + 1)
    need[1:] += mass
    need[:n] += mass
    need /= need.sum()
    rare = np.zeros(n + 1, dtype=bool)
    rare[spec.sizes[spec.q < _RARE]] = True
    if need[rare].sum() > 0.01:
        warnings.warn(
            f"The samples drew coalitions of sizes {np.flatnonzero(rare)[:6]}... less than once "
            f"in {1 / _RARE:.0f} draws, yet the new semivalue puts {need[rare].sum():.0%} of its "
            "weight there: its values and standard errors are unreliable. Fit it directly, "
            "or reweight from sampler='svarm' or 'exact'.", UserWarning, stacklevel=4)
