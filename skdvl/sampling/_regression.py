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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from skdvl.result import ValuationResult
from skdvl.sampling._base import Evaluator, Runner, _CoalitionSampler
from skdvl.sampling._exact import ExactSampler

__all__ = ["CoalitionSamples", "DistinctUnits"]

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


class _RegressionSampler(_CoalitionSampler):
    """Shared machinery: exact small games, the border, the units of a block."""


    def _check(self) -> None:
        self._check_batch_size()

    def zeros(self, n: int) -> tuple[Any, ...]:
        return (CoalitionSamples(n),)

    def counts(self, stats: tuple[Any, ...]) -> np.ndarray:
        """Every evaluated coalition informs every player's value."""
        s = stats[0]
        return np.full(s.n, s.n_coalitions, dtype=np.int64)

    def value_game(self, utility: Any, mass: np.ndarray, *, state: Any,
                   run: Runner) -> tuple[ValuationResult, Any]:
        """Games of at most 3 players are enumerated (at most 8 evaluations): exact values."""
        self._check()
        if int(utility.n_players) <= 3:
            return ExactSampler().value_game(utility, mass, state=state, run=run)
        return super().value_game(utility, mass, state=state, run=run)

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


