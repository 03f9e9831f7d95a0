"""KernelSHAP, Leverage SHAP and Kernel Banzhaf: semivalues as a weighted least squares.

Lundberg & Lee (2017), "A unified approach to interpreting model predictions"
(KernelSHAP); Musco & Witter (2025), "Provably accurate Shapley value
estimation via leverage score sampling" (Leverage SHAP); Liu et al. (2024),
"Kernel Banzhaf" (the Banzhaf regression). The shared statistics and the
exact small games are in :mod:`skdvl.sampling._regression`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from skdvl._coalitions import banzhaf_weight, check_int, log_binom, uniform_coalitions
from skdvl.result import ValuationResult
from skdvl.sampling._base import Evaluator
from skdvl.sampling._regression import (
    CoalitionSamples,
    DistinctUnits,
    _check_bool,
    _is_shapley,
    _nan_result,
    _RegressionSampler,
    _result,
    _unit_variance,
)

__all__ = ["KernelSampler", "LeverageSampler"]


# --------------------------------------------------------------------------- KernelSHAP
@dataclass
class _ShapleySpec:
    """The Shapley kernel regression of n players, split into border and sampled sizes."""

    n: int
    border: list[int]
    sizes: np.ndarray  # sampled sizes
    q: np.ndarray  # their sampling probabilities
    p: np.ndarray  # kernel probability of each size 0..n (0 at 0 and n)
    alpha: float  # A_ii - A_ij of the exact kernel matrix
    small: np.ndarray  # (n + 1,) bool: size s's pairs are kept without repeats
    r: np.ndarray  # (n + 1,) per-draw probability of one pair {S, N - S}, |S| = s
    pairs: np.ndarray  # (n + 1,) pairs {S, N - S} with min(|S|, n - |S|) = s


#: strata of at most this many coalitions keep their units without repeats
_SMALL_STRATUM = 20_000


def _shapley_spec(n: int, strategy: str) -> _ShapleySpec:
    s = np.arange(n + 1, dtype=np.float64)
    p = np.zeros(n + 1)
    p[1:n] = 1.0 / (s[1:n] * (n - s[1:n]))
    p /= p.sum()
    border = [0, 1, n - 1, n]  # u(empty) and u(N) enter through the constraint
    sizes = np.arange(2, n - 1)
    q = p[sizes] if strategy == "kernel" else np.ones(sizes.shape[0])
    q = q / q.sum()
    a_ij = float(np.dot(p, s * (s - 1)) / (n * (n - 1)))
    q_of_size = np.zeros(n + 1)
    q_of_size[sizes] = q
    log_c = log_binom(n, np.arange(n + 1))
    # a pair {S, N - S} is drawn when S or its complement is: q(s) + q(n - s) over C(n, s)
    r = (q_of_size + q_of_size[::-1]) * np.exp(-log_c)
    small = np.zeros(n + 1, dtype=bool)
    small[sizes] = log_c[sizes] <= math.log(_SMALL_STRATUM)
    k = np.arange(n + 1)
    pairs = np.where(small, np.exp(log_c) / np.where(2 * k == n, 2, 1), np.inf)
    return _ShapleySpec(n, border, sizes, q, p, 0.5 - a_ij, small, r, np.round(pairs))


def _border_gram(spec: _ShapleySpec, masks: np.ndarray, y: np.ndarray) -> tuple[Any, Any]:
    """Kernel-weighted ``Z^T Z`` and ``Z^T y`` of the enumerated border strata."""
    sizes = masks.sum(axis=1)
    n_of_size = np.exp(log_binom(spec.n, sizes))
    w = np.where(np.isin(sizes, spec.border), spec.p[sizes] / n_of_size, 0.0)
    z = masks.astype(np.float64)
    return (z * w[:, None]).T @ z, z.T @ (w * y)


class KernelSampler(_RegressionSampler):
    """KernelSHAP and Kernel Banzhaf: semivalues as least-squares fits of sampled coalitions.

    **Shapley values** (``ShapleyValuer(sampler="kernel")``): coalition sizes
    are drawn from the Shapley kernel, ``P(s)`` proportional to
    ``1 / (s (n - s))``, each coalition paired with its complement (Covert &
    Lee, 2021, "Improving KernelSHAP: practical Shapley value estimation via
    linear regression", AISTATS), and the weighted least-squares problem is
    solved under the constraint ``sum(phi) = u(N) - u(empty)``, so efficiency
    holds exactly (to rounding). The strata of sizes 1 and ``n - 1`` (``2 n``
    coalitions, about ``1 / ln n`` of the kernel's weight) are enumerated once,
    exactly, instead of being sampled over and over. In the other small strata
    (at most 20,000 coalitions of a size) a pair drawn again is dropped, and
    the distinct pairs of a stratum stand for it as a sample without
    replacement (weight: the stratum's kernel weight over the share of its
    pairs drawn), so a small stratum drawn out enters exactly and repeats,
    which cost no utility call, carry no weight.

    **(Weighted) Banzhaf values** (``BanzhafValuer(sampler="kernel")``): Kernel
    Banzhaf (Liu, Musco, Witter et al., 2024, "Kernel Banzhaf: a fast and
    robust estimator for Banzhaf values"): coalitions in which each player is
    present with probability ``weight`` (paired with their complements when
    ``weight = 0.5``), and the linear model with intercept fitted by least
    squares; its coefficients are the values.

    The standard error is the sandwich (delta-method) estimate of the
    least-squares solution: the spread over the sampled units of their
    residuals' contribution, through the exact population matrix of the
    regression (known in closed form), with the finite-population correction
    in the small strata (0 for a stratum drawn out).

    Parameters
    ----------
    paired : bool, default=True
        Evaluate each drawn coalition's complement too (antithetic pairs; a
        sample is then the pair). Ignored for weighted Banzhaf with
        ``weight != 0.5``, whose complements have another distribution.
    batch_size : int, default=128
        Samples per block (the granularity of stopping checks).

    Notes
    -----
    Each standard-error check is a pass over all stored samples (and an
    ``n x n`` solve), so with ``stderr_tol`` on large games prefer a larger
    ``batch_size``. The stored samples take ``n / 8`` bytes each.
    """

    _strategy = "kernel"

    def __init__(self, paired: bool = True, batch_size: int = 128) -> None:
        _check_bool(paired, "paired")
        check_int(batch_size, "batch_size", 1)
        self.paired, self.batch_size = paired, batch_size

    def _check(self) -> None:
        super()._check()
        _check_bool(self.paired, "paired")

    # -- binding ---------------------------------------------------------------
    def weights(self, mass: np.ndarray, n: int) -> Any:
        """The regression to sample: Shapley's kernel, or a Bernoulli(w) design for Banzhaf."""
        self._check()
        if _is_shapley(mass, n):
            return _shapley_spec(n, self._strategy)
        w = banzhaf_weight(mass, n)
        if w is None or type(self) is not KernelSampler:
            what = "Shapley values" if type(self) is not KernelSampler else (
                "Shapley and (weighted) Banzhaf values")
            raise ValueError(
                f"{type(self).__name__} estimates {what} only; this valuer's semivalue is "
                "another. Use sampler='svarm' or 'regression_msr', which estimate any "
                "semivalue.")
        return w

    # -- sampling --------------------------------------------------------------
    def run_block(self, ev, rng, weights, block, start=0, stop=None):  # type: ignore[no-untyped-def]
        n, spb = ev.n, self.samples_per_block
        stats = CoalitionSamples(n, spec=weights)
        if isinstance(weights, _ShapleySpec):
            self._border(ev, stats, weights.border, block, start)
            idx = rng.choice(weights.sizes.shape[0], size=spb, p=weights.q)
            masks = uniform_coalitions(rng, weights.sizes[idx], n)[start:stop]
            rho = (weights.p[weights.sizes] / weights.q)[idx][start:stop]
            u = _evaluate_units(ev, [masks, ~masks])
            sizes = weights.sizes[idx][start:stop]
            small = weights.small[sizes]
            if small.any():  # kept without repeats, canonical: player 0 out of the mask
                flip = masks[small, 0]
                canon = np.where(flip[:, None], ~masks[small], masks[small])
                cu = np.where(flip[:, None], u[small][:, ::-1], u[small])
                stats.small = DistinctUnits(n, draws=int(small.sum()),
                                            coalitions=2 * int(small.sum()))
                stats.small.add(np.packbits(canon, axis=1), cu, rho[small],
                                np.minimum(sizes[small], n - sizes[small]))
            self._accumulate(stats, masks[~small], u[~small], rho[~small], 2)
            return (stats,)
        else:
            masks = (rng.random((spb, n)) < weights)[start:stop]
            rho = np.ones(masks.shape[0])
            paired = bool(self.paired) and weights == 0.5
        units = [masks, ~masks] if paired else [masks]
        u = _evaluate_units(ev, units)
        self._accumulate(stats, masks, u, rho, len(units))
        return (stats,)

    @staticmethod
    def _accumulate(stats: CoalitionSamples, masks: np.ndarray, u: np.ndarray,
                    rho: np.ndarray, per: int) -> None:
        """Store units (``per`` coalitions each: the mask, and its complement if 2)."""
        if masks.shape[0] == 0:
            return
        stats.add(masks, u, rho)
        for k, z in enumerate([masks, ~masks][:per]):
            zf = z.astype(np.float64)
            stats.accumulate("gram", (zf * (rho / per)[:, None]).T @ zf)
            stats.accumulate("zu", zf.T @ (rho * u[:, k] / per))
            stats.accumulate("z", zf.T @ (rho / per))
        stats.accumulate("u", float(np.dot(rho, u.mean(axis=1))))
        stats.accumulate("rho", float(rho.sum()))

    # -- estimate ----------------------------------------------------------------
    def result(self, stats: tuple[Any, ...]) -> ValuationResult:
        s = stats[0]
        n = s.n
        if isinstance(s.spec, _ShapleySpec):
            if s.n_draws < 2 or s.border_u is None:
                return _nan_result(n)
            return self._shapley(s, s.spec)
        if s.n_units < 2 or "gram" not in s.sums:
            return _nan_result(n)
        return self._banzhaf(s, float(s.spec))

    def _shapley(self, s: CoalitionSamples, spec: _ShapleySpec) -> ValuationResult:
        n, m = s.n, s.n_draws
        assert s.border_masks is not None and s.border_u is not None
        sizes = s.border_masks.sum(axis=1)
        u0, un = s.border_u[sizes == 0], s.border_u[sizes == n]
        if u0.size == 0 or un.size == 0:  # not enumerated with the border: read them off
            raise RuntimeError("the border of a KernelSHAP game lacks u(empty) or u(N)")
        u0, un = float(u0[0]), float(un[0])
        A, b = _border_gram(spec, s.border_masks, s.border_u - u0)
        if "gram" in s.sums:  # sampled strata: each draw weighs 1 / m
            A = A + s.sums["gram"] / m
            b = b + (s.sums["zu"] - u0 * s.sums["z"]) / m
        # small strata: the distinct pairs of a stratum are a uniform sample of it without
        # replacement, weighed by r / f, f = the share of its pairs drawn (post-stratified;
        # unbiased given f > 0); a stratum drawn completely (f = 1) enters exactly
        ht, f = np.zeros(n + 1), np.zeros(n + 1)
        if s.small is not None and s.small.stratum:
            drawn = np.bincount(np.concatenate(s.small.stratum), minlength=n + 1)
            f = np.minimum(drawn / spec.pairs, 1.0)
            np.divide(spec.r, f, out=ht, where=f > 0)
        if s.small is not None:
            for key, (g, zu) in s.small.stratum_sums(u0).items():
                A = A + ht[key] * g
                b = b + ht[key] * zu
        phi = _constrained_lstsq(A, b, un - u0)
        if phi is None:
            return _nan_result(n)

        def per_unit(masks: np.ndarray, u: np.ndarray, rho: np.ndarray) -> np.ndarray:
            g = np.zeros((masks.shape[0], n))
            for k, z in enumerate([masks, ~masks][:u.shape[1]]):
                zf = z.astype(np.float64)
                r = u[:, k] - u0 - zf @ phi
                g += zf * (rho * r / u.shape[1])[:, None]
            return (g - g.mean(axis=1, keepdims=True)) / spec.alpha

        var = _unit_variance(s, per_unit, m) if s.n_units else np.zeros(n)
        if s.small is not None:  # with the finite-population correction 1 - f
            for masks, u, rho, stratum in s.small.chunks():
                h = per_unit(masks, u, rho) * ht[stratum][:, None]
                var += ((1.0 - f[stratum])[:, None] * h * h).sum(axis=0)
        return _result(phi, np.sqrt(var), s.n_coalitions)

    def _banzhaf(self, s: CoalitionSamples, w: float) -> ValuationResult:
        n, m = s.n, s.n_units
        total = s.sums["rho"]  # = units: Banzhaf units weigh 1
        mean_z = s.sums["z"] / total
        cov = s.sums["gram"] / total - np.outer(mean_z, mean_z)
        cross = s.sums["zu"] / total - mean_z * (s.sums["u"] / total)
        try:
            phi = np.linalg.solve(cov, cross)
        except np.linalg.LinAlgError:
            return _nan_result(n)
        if not np.all(np.isfinite(phi)) or np.linalg.cond(cov) > 1e12:
            return _nan_result(n)
        c = s.sums["u"] / total - mean_z @ phi

        def per_unit(masks: np.ndarray, u: np.ndarray, rho: np.ndarray) -> np.ndarray:
            g = np.zeros((masks.shape[0], n))
            for k, z in enumerate([masks, ~masks][:u.shape[1]]):
                zf = z.astype(np.float64)
                r = u[:, k] - c - zf @ phi
                g += (zf - w) * (r / u.shape[1])[:, None]
            return g / (w * (1 - w))

        # HC1: residuals of a fit with n + 1 parameters are smaller than the errors
        dof = m / max(m - (n + 1), 1)
        return _result(phi, np.sqrt(dof * _unit_variance(s, per_unit)), s.n_coalitions)


def _evaluate_units(ev: Evaluator, units: list[np.ndarray]) -> np.ndarray:
    """Utilities ``(m, len(units))`` of the coalitions of each unit, evaluated unit by unit.

    A sample's coalitions (a mask and its complement) are adjacent in the batch, so
    that an interrupted evaluation leaves whole samples finished, in their order.
    """
    m, n = units[0].shape
    return ev.evaluate(np.stack(units, axis=1).reshape(m * len(units), n)).reshape(
        m, len(units))


def _constrained_lstsq(A: np.ndarray, b: np.ndarray, total: float) -> np.ndarray | None:
    """``argmin phi^T A phi - 2 b^T phi`` subject to ``sum(phi) = total``; None if singular."""
    n = A.shape[0]
    try:
        sol = np.linalg.solve(A, np.column_stack([b, np.ones(n)]))
    except np.linalg.LinAlgError:
        return None
    a_inv_b, a_inv_1 = sol[:, 0], sol[:, 1]
    denom = a_inv_1.sum()
    if not np.isfinite(denom) or abs(denom) < 1e-300:
        return None
    phi = a_inv_b - a_inv_1 * (a_inv_b.sum() - total) / denom
    return phi if np.all(np.isfinite(phi)) else None


class LeverageSampler(KernelSampler):
    """Leverage SHAP: the KernelSHAP regression sampled by leverage scores (Shapley only).

    Musco & Witter (2025), "Provably accurate Shapley value estimation via
    leverage score sampling", ICLR, show that the statistical leverage of a
    coalition in the (constraint-projected) Shapley regression depends only
    on its size, and that every size ``1 .. n - 1`` carries the same total
    leverage. Sampling coalition sizes uniformly (and the coalition uniformly
    given its size, paired with its complement) and weighing each sample by
    kernel weight / sampling probability solves the same regression as
    :class:`KernelSampler` with their guarantee of ``O(n log n)`` samples for
    a near-optimal fit. The paper samples without replacement for a budget
    fixed in advance; here blocks are drawn independently (for any ``n_jobs``
    and any stopping rule) and the same effect comes from the other side: the
    border strata (sizes 1 and ``n - 1``) are enumerated exactly, and in every
    stratum of at most ``_SMALL_STRATUM`` coalitions repeated pairs are
    dropped (they cost no utility call) and the distinct pairs are weighed as
    a sample without replacement of their stratum, post-stratified, so a
    stratum drawn completely enters exactly.

    Parameters
    ----------
    paired : bool, default=True
        Evaluate each coalition's complement too.
    batch_size : int, default=128
        Samples per block.
    """

    _strategy = "leverage"


