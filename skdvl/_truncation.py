"""Truncation of permutations (truncated Monte Carlo Shapley, Ghorbani & Zou, 2019)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["RelativeTruncation", "FixedTruncation"]

#: The engine's evaluator, as seen by a sampler (see :mod:`skdvl._engine`).
Evaluator = Any


@dataclass(frozen=True)
class RelativeTruncation:
    """Stop a permutation once the prefix's utility is close to u(N).

    After ``burn_in_fraction * n`` positions, the first prefix ``P`` with
    ``|u(P) - u(N)| < rtol * |u(N)|`` truncates the permutation: the marginals
    of the remaining players are taken as 0 and not evaluated (truncated Monte
    Carlo Shapley, Ghorbani & Zou, 2019, "Data Shapley", Algorithm 1).
    Truncation biases the estimate towards 0 for late players; that is the price
    of the saved fits.
    """

    rtol: float = 0.01
    burn_in_fraction: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.rtol, bool) or not self.rtol >= 0:
            raise ValueError(f"rtol must be >= 0. Got {self.rtol!r} instead.")
        if not self.rtol < 1:
            raise ValueError(
                "rtol must be < 1: it is a tolerance relative to |u(N)|, and 1 or more "
                f"truncates every permutation at once. Got {self.rtol!r} instead.")
        if not 0 <= self.burn_in_fraction <= 1:
            raise ValueError(
                f"burn_in_fraction must be in [0, 1]. Got {self.burn_in_fraction!r} instead."
            )

    def first_stop(self, u: np.ndarray, lo: int, n: int, total: float) -> int | None:
        """First position in ``[lo, len(u))`` where truncation starts, or None.

        ``u[j]`` is the utility of the prefix of length ``j``.
        """
        start = max(lo, int(np.ceil(self.burn_in_fraction * n)), 1)
        if start >= u.shape[0]:
            return None
        close = np.abs(u[start:] - total) < self.rtol * abs(total)
        hit = np.flatnonzero(close)
        return int(start + hit[0]) if hit.size else None

    def needs_total(self) -> bool:
        return True

    def horizon(self, n: int) -> int:
        """Prefixes beyond this length are never evaluated."""
        return n


@dataclass(frozen=True)
class FixedTruncation:
    """Evaluate only the first ``ceil(fraction * n)`` prefixes of each permutation.

    The marginals of later players are taken as 0.
    """

    fraction: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1]. Got {self.fraction!r} instead.")

    def first_stop(self, u: np.ndarray, lo: int, n: int, total: float) -> int | None:
        stop = int(np.ceil(self.fraction * n))
        return stop if stop < u.shape[0] and stop >= lo else None

    def needs_total(self) -> bool:
        return False

    def horizon(self, n: int) -> int:
        return min(n, int(np.ceil(self.fraction * n)))


Truncation = RelativeTruncation | FixedTruncation


def _check_truncation(truncation: Any) -> Truncation | None:
    if truncation is None or isinstance(truncation, (RelativeTruncation, FixedTruncation)):
        return truncation
    if isinstance(truncation, (float, int, np.number)) and not isinstance(truncation, bool):
        return RelativeTruncation(rtol=float(truncation))
    raise ValueError(
        "truncation must be None, a relative tolerance (float) or a RelativeTruncation/"
        f"FixedTruncation. Got {truncation!r} instead."
    )


def _permutation_utilities(
    ev: Evaluator, perm: np.ndarray, truncation: Truncation | None,
) -> np.ndarray:
    """u of every prefix of ``perm`` (``u[j]`` = u(perm[:j])), truncated ones repeated."""
    n = perm.shape[0]
    u = np.empty(n + 1)
    u[0] = ev.empty()
    if truncation is None:
        u[1:] = ev.prefixes(perm, 1, n + 1)
        return u
    total = ev.full() if truncation.needs_total() else 0.0
    horizon = truncation.horizon(n)
    lo = 1
    while lo <= n:
        hi = min(horizon + 1, lo + ev.prefix_step)
        if hi <= lo:  # past the horizon: the rest is truncated
            u[lo:] = u[lo - 1]
            break
        u[lo:hi] = ev.prefixes(perm, lo, hi)
        stop = truncation.first_stop(u[:hi], lo, n, total)
        if stop is not None:
            u[stop + 1:] = u[stop]
            break
        lo = hi
    return u


#: prefixes evaluated per lockstep round, over all the permutations walked together
_ROUND_COALITIONS = 256
#: at most this many mask entries (bools) per round, whatever n
_ROUND_BYTES = 1 << 23


def _lockstep_utilities(
    ev: Evaluator, perms: list[np.ndarray], truncation: Truncation | None,
) -> np.ndarray:
    """u of every prefix of each permutation, the permutations walked in lockstep.

    Row ``r`` equals ``_permutation_utilities(ev, perms[r], truncation)``: each
    permutation truncates at the first prefix its own utilities say, and later
    prefixes are never used. Every round evaluates, for each permutation still
    running, its next ``step`` prefixes in one ``ev.evaluate`` call. With
    truncation, ``step`` spreads about ``_ROUND_COALITIONS`` coalitions over the
    permutations left, and is at most ``ev.prefix_step``, which bounds the
    prefixes evaluated past a truncation point; without, every prefix goes in
    the first round (up to ``_ROUND_BYTES`` of masks). Which prefixes a round evaluates only
    changes the cost, never the result.
    """
    n, P = ev.n, len(perms)
    u = np.empty((P, n + 1))
    u[:, 0] = ev.empty()
    rank = np.empty((P, n), dtype=np.intp)
    rank[np.arange(P)[:, None], np.asarray(perms)] = np.arange(n)
    total = ev.full() if truncation is not None and truncation.needs_total() else 0.0
    horizon = n if truncation is None else truncation.horizon(n)
    max_step = n if truncation is None else max(1, int(ev.prefix_step))
    lo = np.ones(P, dtype=np.intp)
    active = np.arange(P)
    while active.size:
        fill = n if truncation is None else _ROUND_COALITIONS // active.size
        step = max(1, min(max_step, fill, _ROUND_BYTES // max(1, active.size * n)))
        hi = np.minimum(horizon + 1, lo[active] + step)
        past = hi <= lo[active]  # past the horizon: the rest is truncated
        for r in active[past]:
            u[r, lo[r]:] = u[r, lo[r] - 1]
        active, hi = active[~past], hi[~past]
        if not active.size:
            break
        counts = hi - lo[active]
        owner = np.repeat(np.arange(active.size), counts)
        j = lo[active][owner] + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts,
                                                                     counts))
        values = ev.evaluate(j[:, None] > rank[active[owner]])
        u[active[owner], j] = values
        still = np.ones(active.size, dtype=bool)
        for i, r in enumerate(active):
            h = int(hi[i])
            stop = None if truncation is None else truncation.first_stop(
                u[r, :h], int(lo[r]), n, total)
            if stop is not None:
                u[r, stop + 1:] = u[r, stop]
                still[i] = False
            elif h > n:
                still[i] = False
            lo[r] = h
        active = active[still]
    return u
