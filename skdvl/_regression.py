"""Regression estimators of semivalues: KernelSHAP, Leverage SHAP, Kernel Banzhaf, regression MSR.

A semivalue is also the solution of a least-squares problem over coalitions:

- the Shapley value is the linear model ``u(z) - u(0) ~ z^T phi`` fitted with the
  Shapley kernel weights under the constraint ``sum(phi) = u(N) - u(0)``
  (Charnes et al., 1988; Lundberg & Lee, 2017, "A unified approach to
  interpreting model predictions", NeurIPS: KernelSHAP);
- the (weighted) Banzhaf value of weight ``w`` is the coefficient vector of the
  linear model with intercept fitted to ``u`` when every player is in the
  coalition independently with probability ``w`` (Hammer & Holzman, 1992; Liu
  et al., 2024, "Kernel Banzhaf: a fast and robust estimator for Banzhaf
  values": for a product measure the centred indicators are uncorrelated, so
  each coefficient is ``E[u | i in] - E[u | i out]``).

Sampling coalitions and solving the sampled problem fits the *additive part*
of the utility exactly, whatever the number of samples, so only the
non-additive rest carries sampling noise: that is why these estimators need
far fewer utility evaluations than marginal-contribution sampling on data
games, whose utilities are close to additive. :class:`RegressionMSRSampler`
uses the same idea as a control variate for any semivalue (Witter, Liu &
Musco, 2025, "Regression-adjusted Monte Carlo estimators for Shapley values
and probabilistic values", arXiv 2506.11849).

Every sampler here stores the coalitions it evaluated (bit-packed) with their
utilities, and running Gram matrices, so that the estimate is a solve and its
standard error a pass over the samples, at any time (stopping criteria may ask
after every block).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from skdvl.result import ValuationResult
from skdvl.sampling import (
    _RARE,
    BaseSampler,
    Evaluator,
    ExactSampler,
    _banzhaf_weight,
    _check_int,
    _log_binom,
    _uniform_coalitions,
)

__all__ = ["KernelSampler", "LeverageSampler", "RegressionMSRSampler"]

_CHUNK = 4096  # samples unpacked at a time when passing over the stored samples


# --------------------------------------------------------------------------- the statistics
@dataclass
class DistinctUnits:
    """Units of the small strata, each kept once, in the order they were first drawn.

    A unit drawn again costs no utility call (the evaluator caches it) and adds
    no information, so its repeats are dropped and the distinct units carry
    Horvitz-Thompson weights (inclusion probability ``1 - (1 - r)^m`` after
    ``m`` draws of per-draw probability ``r``); a stratum drawn completely
    then enters exactly. The set of distinct units does not depend on the
    order of the blocks, only their insertion order (and so the rounding of
    the sums, taken over fixed chunks of it) does.
    """

    n: int
    keys: set[bytes] = field(default_factory=set)
    packed: list[np.ndarray] = field(default_factory=list)
    utilities: list[np.ndarray] = field(default_factory=list)
    rho: list[np.ndarray] = field(default_factory=list)
    stratum: list[np.ndarray] = field(default_factory=list)
    draws: int = 0  # draws that landed in these strata, repeats included
    coalitions: int = 0  # their coalitions (draws x coalitions per unit)
    _summed: tuple[int, dict[int, Any]] = (0, {})  # sums of the complete chunks
    _summed_u0: float = math.nan

    @property
    def n_distinct(self) -> int:
        return len(self.keys)

    def add(self, packed: np.ndarray, u: np.ndarray, rho: np.ndarray,
            stratum: np.ndarray) -> None:
        """Append the units of ``packed`` (bit-packed canonical masks) not seen before."""
        keep = []
        for i, row in enumerate(packed):
            key = row.tobytes()
            if key not in self.keys:
                self.keys.add(key)
                keep.append(i)
        if keep:
            self.packed.append(packed[keep])
            self.utilities.append(u[keep])
            self.rho.append(rho[keep])
            self.stratum.append(stratum[keep])

    def merge(self, other: DistinctUnits) -> None:
        self.draws += other.draws
        self.coalitions += other.coalitions
        for args in zip(other.packed, other.utilities, other.rho, other.stratum):
            self.add(*args)
        if len(self.packed) > 64:
            self._consolidate()

    def _consolidate(self) -> None:
        if len(self.packed) > 1:
            for name in ("packed", "utilities", "rho", "stratum"):
                setattr(self, name, [np.concatenate(getattr(self, name))])

    def chunks(self, start: int = 0) -> Any:
        """Yield ``(masks, utilities, rho, stratum)``, ``_CHUNK`` units at a time from
        unit ``start`` (a multiple of ``_CHUNK``)."""
        self._consolidate()
        if not self.packed:
            return
        for lo in range(start, self.packed[0].shape[0], _CHUNK):
            hi = lo + _CHUNK
            masks = np.unpackbits(self.packed[0][lo:hi], axis=1, count=self.n).astype(bool)
            yield masks, self.utilities[0][lo:hi], self.rho[0][lo:hi], self.stratum[0][lo:hi]

    def stratum_sums(self, u0: float) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Per stratum: ``sum rho Z^T Z / k`` and ``sum rho Z^T (u - u0) / k`` over units.

        ``k`` is the number of coalitions per unit. Complete chunks are summed once and
        kept; the rounding depends only on the insertion order.
        """
        done, kept = self._summed if self._summed_u0 == u0 else (0, {})
        total = {key: [g.copy(), b.copy()] for key, (g, b) in kept.items()}
        for masks, u, rho, stratum in self.chunks(start=done):
            part: dict[int, list[np.ndarray]] = {}
            per = u.shape[1]
            for key in np.unique(stratum):
                sel = stratum == key
                gram, zu = np.zeros((self.n, self.n)), np.zeros(self.n)
                for j, z in enumerate([masks[sel], ~masks[sel]][:per]):
                    zf = z.astype(np.float64)
                    w = rho[sel] / per
                    gram += (zf * w[:, None]).T @ zf
                    zu += zf.T @ (w * (u[sel, j] - u0))
                part[int(key)] = [gram, zu]
            for key, (g, b) in part.items():
                if key in total:
                    total[key][0] += g
                    total[key][1] += b
                else:
                    total[key] = [g, b]
            if masks.shape[0] == _CHUNK:  # a complete chunk (only the last one is not)
                done += _CHUNK
                self._summed = (done, {k: (g.copy(), b.copy()) for k, (g, b) in total.items()})
                self._summed_u0 = u0
        return {k: (g, b) for k, (g, b) in total.items()}


@dataclass
class CoalitionSamples:
    """The coalitions one game evaluated: an exactly enumerated border and random samples.

    Random samples are *units* (a coalition, or a coalition and its
    complement) stored bit-packed with their utilities and a weight; ``sums``
    are running sums (Gram matrices and the like) that :meth:`merge` adds.
    """

    n: int
    packed: list[np.ndarray] = field(default_factory=list)  # (units, ceil(n/8)) uint8
    utilities: list[np.ndarray] = field(default_factory=list)  # (units, per_unit)
    rho: list[np.ndarray] = field(default_factory=list)  # (units,) importance weights
    sums: dict[str, Any] = field(default_factory=dict)
    border_masks: np.ndarray | None = None
    border_u: np.ndarray | None = None
    spec: Any = None  # what the sampler was bound to (the semivalue's spec)
    small: DistinctUnits | None = None  # units of the small strata, without repeats

    @property
    def n_units(self) -> int:
        return int(sum(u.shape[0] for u in self.utilities))

    @property
    def n_coalitions(self) -> int:
        sampled = int(sum(u.size for u in self.utilities))
        if self.small is not None:
            sampled += self.small.coalitions
        return sampled + (0 if self.border_u is None else int(self.border_u.shape[0]))

    @property
    def n_draws(self) -> int:
        """Units drawn, repeats in the small strata included."""
        return self.n_units + (0 if self.small is None else self.small.draws)

    def add(self, masks: np.ndarray, u: np.ndarray, rho: np.ndarray) -> None:
        """Append units: ``masks`` (units, n) bool, ``u`` (units, per_unit), ``rho`` (units,)."""
        self.packed.append(np.packbits(masks, axis=1))
        self.utilities.append(u)
        self.rho.append(rho)

    def accumulate(self, name: str, value: Any) -> None:
        self.sums[name] = self.sums[name] + value if name in self.sums else value

    def merge(self, other: CoalitionSamples) -> None:
        self.packed += other.packed
        self.utilities += other.utilities
        self.rho += other.rho
        for name, value in other.sums.items():
            self.accumulate(name, value)
        if other.border_u is not None:
            self.border_masks, self.border_u = other.border_masks, other.border_u
        if other.small is not None:
            if self.small is None:
                self.small = DistinctUnits(self.n)
            self.small.merge(other.small)
        if self.spec is None:
            self.spec = other.spec
        if len(self.packed) > 64:  # keep the lists short: pickling and passes stay cheap
            self._consolidate()

    def _consolidate(self) -> None:
        if len(self.packed) > 1:
            self.packed = [np.concatenate(self.packed)]
            self.utilities = [np.concatenate(self.utilities)]
            self.rho = [np.concatenate(self.rho)]

    def chunks(self) -> Any:
        """Yield ``(masks, utilities, rho)`` of the stored units, ``_CHUNK`` at a time."""
        self._consolidate()
        if not self.packed:
            return
        packed, u, rho = self.packed[0], self.utilities[0], self.rho[0]
        for lo in range(0, packed.shape[0], _CHUNK):
            hi = lo + _CHUNK
            masks = np.unpackbits(packed[lo:hi], axis=1, count=self.n).astype(bool)
            yield masks, u[lo:hi], rho[lo:hi]


def _all_of_sizes(n: int, sizes: list[int]) -> np.ndarray:
    """Every coalition of sizes 0, 1, n - 1 or n in ``sizes`` (the border strata)."""
    rows = []
    for s in sorted(set(sizes)):
        if s == 0:
            rows.append(np.zeros((1, n), dtype=bool))
        elif s == n:
            rows.append(np.ones((1, n), dtype=bool))
        elif s == 1:
            rows.append(np.eye(n, dtype=bool))
        elif s == n - 1:
            rows.append(~np.eye(n, dtype=bool))
        else:  # pragma: no cover - only the four border sizes are enumerated
            raise ValueError(f"size {s} is not a border size")
    return np.concatenate(rows)


def _is_shapley(mass: np.ndarray, n: int) -> bool:
    return bool(np.allclose(mass, 1.0 / n, rtol=1e-9, atol=1e-12))


def _check_bool(value: Any, name: str) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False. Got {value!r} instead.")


class _RegressionSampler(BaseSampler):
    """Shared machinery: exact small games, the border, the units of a block."""

    per_coalition = True

    @property
    def samples_per_block(self) -> int:
        return int(self.batch_size)

    def _check(self) -> None:
        _check_int(self.batch_size, "batch_size", 1)

    def zeros(self, n: int) -> tuple[Any, ...]:
        return (CoalitionSamples(n),)

    def counts(self, stats: tuple[Any, ...]) -> np.ndarray:
        """Every evaluated coalition informs every player's value."""
        s = stats[0]
        return np.full(s.n, s.n_coalitions, dtype=np.int64)

    def value_game(
        self, utility: Any, mass: np.ndarray, *, state: Any, entropy: int, game: int,
        stopping: Callable[[], Any], n_jobs: Any, verbose: int, desc: str,
    ) -> tuple[ValuationResult, Any]:
        """Games of at most 3 players are enumerated (at most 8 evaluations): exact values."""
        self._check()
        if int(utility.n_players) <= 3:
            return ExactSampler().value_game(
                utility, mass, state=state, entropy=entropy, game=game, stopping=stopping,
                n_jobs=n_jobs, verbose=verbose, desc=desc)
        return super().value_game(
            utility, mass, state=state, entropy=entropy, game=game, stopping=stopping,
            n_jobs=n_jobs, verbose=verbose, desc=desc)

    def _border(self, ev: Evaluator, stats: CoalitionSamples, sizes: list[int],
                block: int, start: int) -> None:
        """Evaluate the border strata once per game: in block 0, with its first sample."""
        if block == 0 and start == 0 and sizes:
            masks = _all_of_sizes(ev.n, sizes)
            stats.border_masks, stats.border_u = masks, ev.evaluate(masks)


def _nan_result(n: int) -> ValuationResult:
    return ValuationResult(np.full(n, np.nan), counts=np.zeros(n, np.int64))


def _result(values: np.ndarray, stderr: np.ndarray, count: int) -> ValuationResult:
    """A result with the given standard errors (ValuationResult keeps variance * count)."""
    counts = np.full(values.shape[0], count, dtype=np.int64)
    return ValuationResult(values, variances=stderr**2 * max(count, 1), counts=counts)


def _unit_variance(stats: CoalitionSamples, per_unit: Callable[..., np.ndarray],
                   m: int | None = None) -> np.ndarray:
    """``var(h) / m`` per player, ``h = per_unit(masks, u, rho)`` one row per stored unit.

    ``m`` (default: the stored units) counts the draws; draws not stored (those of the
    small strata, estimated apart) count as ``h = 0``.
    """
    m = stats.n_units if m is None else int(m)
    total, total2 = np.zeros(stats.n), np.zeros(stats.n)
    for masks, u, rho in stats.chunks():
        h = per_unit(masks, u, rho)
        total += h.sum(axis=0)
        total2 += (h * h).sum(axis=0)
    mean = total / m
    var = np.maximum(total2 - m * mean**2, 0.0) / (m - 1)
    return var / m


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
    log_c = _log_binom(n, np.arange(n + 1))
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
    n_of_size = np.exp(_log_binom(spec.n, sizes))
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
        _check_int(batch_size, "batch_size", 1)
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
        w = _banzhaf_weight(mass, n)
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
            masks = _uniform_coalitions(rng, weights.sizes[idx], n)[start:stop]
            rho = (weights.p[weights.sizes] / weights.q)[idx][start:stop]
            u = ev.evaluate(np.concatenate([masks, ~masks])).reshape(2, -1).T
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
        u = ev.evaluate(np.concatenate(units)).reshape(len(units), -1).T
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
    a[inside] = mass[sizes[inside] - 1] * np.exp(-_log_binom(n - 1, sizes[inside] - 1))
    b[outside] = mass[sizes[outside]] * np.exp(-_log_binom(n - 1, sizes[outside]))
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
        _check_int(n_folds, "n_folds", 2)
        _check_ridge(ridge)
        _check_int(batch_size, "batch_size", 1)
        self.n_folds, self.ridge, self.batch_size = n_folds, ridge, batch_size

    def _check(self) -> None:
        super()._check()
        _check_int(self.n_folds, "n_folds", 2)
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
        masks = _uniform_coalitions(rng, sizes, n)[start:stop]
        q_of_coalition = np.exp(np.log(weights.q[idx]) - _log_binom(n, sizes))[start:stop]
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
