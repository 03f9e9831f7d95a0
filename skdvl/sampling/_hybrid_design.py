"""The design of the hybrid MSR estimator: size strata, their allocation, and the draws.

A unit is a coalition of a stratum's size (and, paired, its complement). Units are
drawn uniformly without replacement within their stratum, so a stratum's units are a
simple random sample of it, and a stratum drawn completely is enumerated. The
allocation of units to strata follows Neyman (Cochran, 1977, Sec. 5.5; Castro et al.,
2017): see :func:`_size_weights`; a learnt allocation moderates the strata's residual
variances towards their pooled value (:func:`_moderation`).
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from skdvl._coalitions import log_binom
from skdvl.result import ValuationResult
from skdvl.sampling._regression_msr import _msr_coefficients
from skdvl.stopping import Progress, Status

__all__: list[str] = []

_ENUMERATE = 200_000  # a stratum this small is listed, then shuffled, once it is needed
_MAX_PRIOR_DOF = 1e6  # the moderated variance's prior degrees of freedom: at most this

# --------------------------------------------------------------------------- the design
@dataclass
class _Design:
    """The strata of a game: unit ``j`` of stratum ``s`` is a coalition of size
    ``size[s]`` (and, paired, its complement); ``pop[s]`` units exist."""

    n: int
    paired: bool
    size: np.ndarray  # (strata,) size of a unit's first coalition
    pop: np.ndarray  # (strata,) float: units in the stratum
    weight: np.ndarray  # (strata,) Neyman allocation weight, 0 for a stratum never drawn

    @property
    def per_unit(self) -> int:
        return 2 if self.paired else 1


def _size_weights(mass: np.ndarray, n: int) -> np.ndarray:
    """``C(n, s) sqrt(s a(s)^2 + (n - s) b(s)^2)`` for s = 0..n, scaled to max 1.

    The standard deviation of the weights a coalition of size ``s`` carries for the
    ``n`` players, times the stratum's size: Neyman's allocation for a residual of
    the same variance in every stratum.
    """
    sizes = np.arange(n + 1)
    a, b = _msr_coefficients(mass, n, sizes)
    with np.errstate(divide="ignore"):
        log_w = log_binom(n, sizes) + 0.5 * np.log(sizes * a**2 + (n - sizes) * b**2)
    finite = np.isfinite(log_w)
    out = np.zeros(n + 1)
    if finite.any():
        out[finite] = np.exp(log_w[finite] - log_w[finite].max())
    return out


def _population(n: int, sizes: np.ndarray) -> np.ndarray:
    """``C(n, s)`` as floats, exact (integers) where a float holds them."""
    pop = np.exp(log_binom(n, sizes))
    return np.where(pop < 2.0**52, np.rint(pop), pop)


def _design(mass: np.ndarray, n: int, paired: bool) -> _Design:
    w = _size_weights(mass, n)
    w[[0, n]] = np.maximum(w[[0, n]], 1e-12)  # the empty and full coalitions: always
    if not paired:
        sizes = np.arange(n + 1)
        return _Design(n, False, sizes, _population(n, sizes), w)
    sizes = np.arange(n // 2 + 1)
    pop = _population(n, sizes)
    if n % 2 == 0:
        pop[-1] /= 2  # a coalition of size n/2 and its complement are one unit
    return _Design(n, True, sizes, pop, w[sizes] + w[n - sizes])


def _allocate(counts: np.ndarray, design: _Design, cover: int, m: int) -> np.ndarray:
    """The strata of the next ``m`` units, in draw order (``counts`` is updated).

    First every drawn stratum gets ``cover`` units; then the next unit goes to the
    stratum whose ``(units + 1/2) / weight`` is smallest (the Sainte-Lague order of
    a Neyman allocation), skipping the strata drawn completely. The first ``B``
    units of this order are the same whatever the chunks they are drawn in.
    """
    def key(s: int) -> tuple[int, float, int]:
        j = int(counts[s])
        return (0, float(j), s) if j < cover else (1, (j + 0.5) / design.weight[s], s)

    heap = [key(int(s)) for s in np.flatnonzero((design.weight > 0) & (counts < design.pop))]
    heapq.heapify(heap)
    order: list[int] = []
    while heap and len(order) < m:
        s = heapq.heappop(heap)[2]
        order.append(s)
        counts[s] += 1
        if counts[s] < design.pop[s]:
            heapq.heappush(heap, key(s))
    return np.array(order, dtype=np.intp)


def _canonical(masks: np.ndarray, design: _Design) -> np.ndarray:
    """A unit of size n/2 and its complement, named by the one holding player 0."""
    if design.paired and design.n % 2 == 0 and masks.shape[0]:
        flip = (masks.sum(axis=1) * 2 == design.n) & ~masks[:, 0]
        masks[flip] = ~masks[flip]
    return masks


def _draw_units(rng: np.random.Generator, design: _Design, s: int, k: int,
                seen: set[bytes], pool: dict[int, list[np.ndarray]]) -> np.ndarray:
    """``k`` units of stratum ``s`` not in ``seen`` (updated), uniformly without replacement."""
    n, size = design.n, int(design.size[s])
    if design.pop[s] <= _ENUMERATE and (len(seen) + k > design.pop[s] / 4 or s in pool):
        if s not in pool:  # every unit of the stratum, in a random order
            rows = np.array(list(itertools.combinations(range(n), size)), dtype=np.intp)
            masks = np.zeros((rows.shape[0], n), dtype=bool)
            masks[np.repeat(np.arange(rows.shape[0]), size), rows.ravel()] = True
            masks = np.unique(_canonical(masks, design), axis=0)
            fresh = np.array([np.packbits(r).tobytes() not in seen for r in masks], bool)
            pool[s] = list(masks[fresh][rng.permutation(int(fresh.sum()))])
        out = np.array(pool[s][:k]).reshape(-1, n)
        del pool[s][:k]
        seen.update(np.packbits(r).tobytes() for r in out)
        return out
    got: list[np.ndarray] = []
    while len(got) < k:
        m = max(2 * (k - len(got)), 16)
        cols = np.argsort(rng.random((m, n)), axis=1)[:, :size]
        masks = np.zeros((m, n), dtype=bool)
        masks[np.repeat(np.arange(m), size), cols.ravel()] = True
        for row in _canonical(masks, design):
            key = np.packbits(row).tobytes()
            if key not in seen:
                seen.add(key)
                got.append(row)
                if len(got) == k:
                    break
    return np.array(got).reshape(-1, n)


def _coalitions(masks: np.ndarray, paired: bool) -> np.ndarray:
    """The coalitions of units (each followed by its complement when paired)."""
    if not paired:
        return masks
    return np.stack([masks, ~masks], axis=1).reshape(-1, masks.shape[1])


def _unit_terms(masks: np.ndarray, e: np.ndarray, mass: np.ndarray, paired: bool
                ) -> np.ndarray:
    """``h_i = sum over the unit's coalitions C of e(C) c_i(C)``, (units, n).

    ``e`` is (units, per_unit), the residuals of a unit's coalition (and complement).
    """
    n = masks.shape[1]
    s = masks.sum(axis=1)
    a, b = _msr_coefficients(mass, n, s)
    h = np.where(masks, (a * e[:, 0])[:, None], -(b * e[:, 0])[:, None])
    if paired:
        a2, b2 = _msr_coefficients(mass, n, n - s)
        h += np.where(masks, -(b2 * e[:, 1])[:, None], (a2 * e[:, 1])[:, None])
    return h


# --------------------------------------------------------------------------- the allocation
def _moderation(var: np.ndarray, dof: np.ndarray) -> tuple[float, float]:
    """Prior degrees of freedom ``d0`` and scale ``s0^2`` of sample variances ``var``
    with ``dof`` degrees of freedom, by the empirical Bayes moments of their logs
    (Smyth, 2004, "Linear models and empirical Bayes methods for assessing differential
    expression in microarray experiments", Stat. Appl. Genet. Mol. Biol. 3(1), Sec. 6.2).

    The moderated variance ``(dof var + d0 s0^2) / (dof + d0)`` pools strata whose
    variances differ no more than a few units' sampling noise (``d0`` large) and keeps
    them apart where they truly differ (``d0`` small). A zero variance (a residual that
    vanishes on every unit) counts as 1e-12 of the largest.
    """
    from scipy.optimize import brentq
    from scipy.special import digamma, polygamma

    top = float(var.max())
    z = np.log(np.maximum(var, 1e-12 * top))
    e = z - digamma(dof / 2) + np.log(dof / 2)
    spread = float(np.var(e, ddof=1)) - float(np.mean(polygamma(1, dof / 2))) if e.size > 1 \
        else 0.0
    if spread <= 0:  # no more spread than sampling noise: one common variance
        d0 = np.inf
    else:  # trigamma(d0 / 2) = spread, trigamma decreasing from +inf to 0
        d0 = 2 * brentq(lambda x: float(polygamma(1, x)) - spread, 1e-8, 1e8)
    d0 = min(d0, _MAX_PRIOR_DOF)
    s0 = float(np.exp(np.mean(e) + digamma(d0 / 2) - np.log(d0 / 2)))
    return d0, s0


class _NeedsValues(Exception):
    """Raised by a hypothetical progress whose values a criterion asks for."""


def _coalitions_left(criterion: Any, done: int, n: int) -> int | None:
    """Coalitions after which ``criterion`` stops for sure, found from counts alone.

    Every value of this sampler has as many updates as there are coalitions, so a
    budget of updates (``MaxUpdates``, or ``max_updates``) is a budget of
    coalitions: the least count that stops the criterion is searched on
    hypothetical progress that has no values. None when the criterion needs
    values (a standard error) or does not stop within ``2^40`` coalitions.
    """
    def stops(c: int) -> bool:
        def no_values() -> ValuationResult:
            raise _NeedsValues

        progress = Progress(no_values, c, c, np.full(n, c, dtype=np.int64))
        return criterion(progress) != Status.PENDING

    try:
        step = 1
        while not stops(done + step):
            step *= 2
            if step > 2**40:
                return None
        lo, hi = done + step // 2, done + step  # stops at hi, not at lo (or lo == done)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if stops(mid) else (mid, hi)
        return hi - done
    except _NeedsValues:
        return None
