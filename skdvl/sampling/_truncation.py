"""Truncation of permutations (truncated Monte Carlo Shapley, Ghorbani & Zou, 2019)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from skdvl.sampling._base import Evaluator

__all__ = ["RelativeTruncation", "FixedTruncation"]



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

    def stops(self, u: np.ndarray, j: int, lengths: np.ndarray,
              total: np.ndarray) -> np.ndarray:
        """Which walks truncate at position ``j`` (``u`` their utilities there, walks of
        ``lengths`` players): :meth:`first_stop` one position at a time, vectorised."""
        start = np.maximum(np.ceil(self.burn_in_fraction * lengths), 1)
        return (j >= start) & (np.abs(u - total) < self.rtol * np.abs(total))


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

    def stops(self, u: np.ndarray, j: int, lengths: np.ndarray,
              total: np.ndarray) -> np.ndarray:
        return j >= np.minimum(lengths, np.ceil(self.fraction * lengths))


Truncation = RelativeTruncation | FixedTruncation


def _check_truncation(truncation: Any) -> Truncation | None:
    if truncation is None or isinstance(truncation, (RelativeTruncation, FixedTruncation)):
        return truncation
    if isinstance(truncation, (float, int, np.number)) and not isinstance(truncation, bool):
        if not 0 <= float(truncation) < 1:  # named as the user named it, not as rtol
            raise ValueError(
                "truncation must be a relative tolerance in [0, 1): a permutation stops "
                "once its prefix scores within truncation * |u(N)| of the full data, so 1 "
                f"or more would truncate every permutation at once. Got {truncation!r} "
                "instead.")
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
    if ev.walks:  # the utility fits each prefix from the one before
        return _walk_prefixes(ev, np.zeros((1, n), dtype=bool), [perm], truncation)[0]
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


#: prefixes evaluated per round over all the walks, with truncation
_ROUND_COALITIONS = 256
#: at most this many mask entries (bools) per round, whatever n
_ROUND_BYTES = 1 << 23


def _lockstep_utilities(
    ev: Evaluator, perms: list[np.ndarray], truncation: Truncation | None,
) -> np.ndarray:
    """u of every prefix of each permutation, the permutations walked in lockstep.

    Row ``r`` equals ``_permutation_utilities(ev, perms[r], truncation)``: the
    walks of :func:`_walk_prefixes` from the empty coalition, each truncating
    at the first prefix its own utilities say.
    """
    bases = np.zeros((len(perms), ev.n), dtype=bool)
    return _walk_prefixes(ev, bases, [np.asarray(p) for p in perms], truncation)


#: the utility walks prefixes incrementally (``ev.walk``) from where a nominal group of
#: :data:`_NOMINAL_WALKS` walks times the prefix length reaches this; below, its Newton
#: iterations, one prefix per call, cost more than refitting many prefixes per call
#: (measured: equal near 32 walks of 15 rows)
_WALK_MIN_WORK = 512
#: ... counted for this many walks, whatever the actual group: the first walked prefix
#: (32 for binary models) is the same for every walk, so a prefix's fit (walked or cold,
#: equal to the solver tolerance but not bitwise) does not depend on n_jobs. Once walked,
#: a walk is walked to its end. (Counting the actual group, as before 2026-12-07, made
#: least-squares values differ by 1e-16 to 1e-11 between n_jobs 1 and 2 with r2.)
_NOMINAL_WALKS = 16
#: prefixes a walk fits together per step (:meth:`_UtilityWalk.step_block`): one
#: matrix-matrix product over its rows per pass instead of one matrix-vector product per
#: prefix and Newton iteration
_WALK_BLOCK = 32
#: ... from prefixes of this many blocks on (512 rows): before, a block's rows move its
#: optimum too far for the passes to converge (measured on 3,000 generated rows, 30
#: features: a block of 16 costs 1.6-2.5x a prefix-by-prefix step below 128 rows, 0.9x at
#: 256, 0.37x at 512). Blocks of 32 cost 15% less than blocks of 16 on 10,000 rows (the
#: products of 32 prefixes run at a better rate per prefix; 48 and 64 gain nothing more)
_BLOCK_FROM = 16


def _min_work(ev: Any) -> int:
    """``_WALK_MIN_WORK``, or the utility's own ``walk_min_work`` where it says one (a
    model whose cold fits cost more than its walked ones at any size)."""
    own = getattr(getattr(ev, "utility", None), "walk_min_work", None)
    return _WALK_MIN_WORK if own is None else int(own)


def _walk_prefixes(ev: Any, bases: np.ndarray, orders: list[np.ndarray],
                   truncation: Any) -> np.ndarray:
    """Utilities of ``bases[r]`` plus each prefix of ``orders[r]``, all walks together.

    Row ``r`` of the result holds ``u(base + order[:j])`` at column ``j`` for
    ``j = 0 .. len(order)`` (NaN beyond). A walk truncates at the first prefix within
    ``truncation`` of ``u(base + order)``, as a truncated Monte Carlo permutation
    does at ``u(N)`` (Ghorbani & Zou, 2019); the later marginals are 0. Prefixes are
    evaluated in rounds of batches (:meth:`_Walks.batched`), and, on a utility that
    fits each prefix from the one before (``ev.walks``), walked incrementally while
    there are enough of them (:meth:`_Walks.incrementally`): the same values either
    way, only the cost differs.
    """
    P, W = bases.shape
    lengths = np.array([o.shape[0] for o in orders], dtype=np.intp)
    rank = np.full((P, W), W + 1, dtype=np.intp)
    for r, order in enumerate(orders):
        rank[r, order] = np.arange(order.shape[0])
    u, total = _walk_ends(ev, bases, rank, lengths, truncation)
    horizon = lengths if truncation is None else np.array(
        [truncation.horizon(int(L)) for L in lengths], dtype=np.intp)
    lo = np.ones(P, dtype=np.intp)
    active = np.flatnonzero(lengths > 0)
    walk = _Walks(ev, bases, rank, orders, lengths, horizon, truncation, u, total, lo)
    if ev.walks and active.size:
        # a walk is walked from this prefix on, to its end, whatever group it is in: the
        # walked and the cold fits of a prefix agree to the solver tolerance, not in
        # their bits, so which prefixes are walked must depend on the walk alone, not on
        # how many walks the engine's blocks (and n_jobs) put together
        first = -(-_min_work(ev) // _NOMINAL_WALKS)
        active = walk.batched(active, until=first - 1)
        if active.size:
            active = walk.incrementally(active)
    walk.batched(active)
    return u


class _Walks:
    """The state of :func:`_walk_prefixes`: the utilities table and each walk's next
    position ``lo``, advanced by rounds of batched evaluations or incremental steps."""

    def __init__(self, ev, bases, rank, orders, lengths, horizon, truncation, u, total,
                 lo) -> None:  # type: ignore[no-untyped-def]
        self.ev, self.bases, self.rank, self.orders = ev, bases, rank, orders
        self.lengths, self.horizon, self.truncation = lengths, horizon, truncation
        self.u, self.total, self.lo = u, total, lo

    def _stop(self, r: int, pos: int) -> None:
        """Walk ``r`` truncates at ``pos``: the rest repeats its utility there."""
        self.u[r, pos + 1:self.lengths[r] + 1] = self.u[r, pos]

    def batched(self, active: np.ndarray, until: int | None = None) -> np.ndarray:
        """Rounds of batched evaluations: all the prefixes left without truncation, at
        most ``ev.prefix_step`` per walk with it (the prefixes evaluated past a
        truncation point), up to position ``until``; returns the walks not finished."""
        ev, u, lo, lengths, truncation = self.ev, self.u, self.lo, self.lengths, self.truncation
        W = self.bases.shape[1]
        max_step = int(lengths.max()) if truncation is None else max(1, int(ev.prefix_step))
        last = self.horizon if until is None else np.minimum(self.horizon, until)
        paused = np.zeros(0, dtype=np.intp)
        while active.size:
            fill = int(lengths.max()) if truncation is None else _ROUND_COALITIONS // active.size
            step = max(1, min(max_step, fill, _ROUND_BYTES // max(1, active.size * W)))
            hi = np.minimum(last[active] + 1, lo[active] + step)
            ended = hi <= lo[active]
            for r in active[ended & (last[active] == self.horizon[active])]:
                u[r, lo[r]:lengths[r] + 1] = u[r, lo[r] - 1]  # past the horizon: truncated
            paused = np.concatenate([paused, active[ended & (last[active] < self.horizon[active])]])
            keep = ~ended
            active, hi = active[keep], hi[keep]
            if not active.size:
                break
            counts = hi - lo[active]
            owner = np.repeat(np.arange(active.size), counts)
            j = lo[active][owner] + np.arange(counts.sum()) - np.repeat(
                np.cumsum(counts) - counts, counts)
            u[active[owner], j] = ev.evaluate((j[:, None] > self.rank[active[owner]])
                                              | self.bases[active[owner]])
            still = hi <= lengths[active]
            for a, r in enumerate(active):
                stop = None if truncation is None else truncation.first_stop(
                    u[r, :hi[a]], int(lo[r]), int(lengths[r]), float(self.total[r]))
                if stop is not None:
                    self._stop(r, stop)
                    still[a] = False
            lo[active] = hi
            active = active[still]
        return np.sort(paused)

    def incrementally(self, active: np.ndarray) -> np.ndarray:
        """Incremental steps, one prefix (or a block, :data:`_WALK_BLOCK`) per walk and
        round, each walk to its end or truncation; returns those not finished (none,
        unless the utility cannot walk them).

        The walks start from the prefixes evaluated so far (all at one position).
        A KeyboardInterrupt leaves the prefixes walked in ``ev``'s cache (where the
        engine's salvage looks for them).
        """
        lo, lengths, u = self.lo, self.lengths, self.u
        start = lo[active]
        bases = self.bases[active] | (self.rank[active] < start[:, None] - 1)
        orders = [self.orders[r][lo[r] - 1:] for r in active]
        walk = self.ev.walk(bases, orders)
        if walk is None:
            return active
        local = np.arange(active.size)
        try:
            while local.size:
                rows = active[local]
                j = lo[rows]
                # blocks end at multiples of _WALK_BLOCK (where a walk's blocks lie does
                # not depend on the walks it is stepped with), and at the walk's end
                b = np.minimum(_WALK_BLOCK - (j - 1) % _WALK_BLOCK, lengths[rows] - j + 1)
                if not hasattr(walk, "step_block"):
                    b[:] = 1
                b[j - 1 < _BLOCK_FROM * _WALK_BLOCK] = 1
                done = np.zeros(local.size, dtype=bool)
                for size in np.unique(b):
                    g = np.flatnonzero(b == size)
                    if size == 1:
                        u[rows[g], j[g]] = walk.step(local[g])
                    else:
                        got = walk.step_block(local[g], int(size))
                        u[rows[g, None], j[g, None] + np.arange(size)] = got
                    for t in range(int(size)):  # each walk stops at its first stop
                        pos = j[g] + t
                        stop = ~done[g] & (pos >= lengths[rows[g]])
                        if self.truncation is not None:
                            stop |= ~done[g] & self.truncation.stops(
                                u[rows[g], pos], pos, lengths[rows[g]], self.total[rows[g]])
                        for r, at in zip(rows[g][stop], pos[stop]):
                            self._stop(r, at)
                        done[g[stop]] = True
                lo[rows] = j + b
                local = local[~done]
        except KeyboardInterrupt:
            self._remember(active, start)
            raise
        return active[local]

    def _remember(self, walked: np.ndarray, start: np.ndarray) -> None:
        """Put the prefixes of the walks ``walked`` from position ``start`` up to (not
        including) ``lo`` in the evaluator's cache."""
        for r, first in zip(walked, start):
            for pos in range(int(first), int(self.lo[r])):
                self.ev.remember((self.rank[r] < pos) | self.bases[r], float(self.u[r, pos]))


def _walk_ends(ev: Any, bases: np.ndarray, rank: np.ndarray, lengths: np.ndarray,
               truncation: Any) -> tuple[np.ndarray, np.ndarray]:
    """The utilities table of the walks with each walk's start filled in, and the
    utility of each walk's last coalition (when the truncation needs it; else 0)."""
    P, W = bases.shape
    needs_total = truncation is not None and truncation.needs_total()
    first = np.concatenate([bases, bases | (rank <= W)]) if needs_total else bases
    distinct, back = np.unique(first, axis=0, return_inverse=True)  # walks share starts
    v = ev.evaluate(distinct)[back.reshape(-1)]
    u = np.full((P, lengths.max() + 1), np.nan)
    u[:, 0] = v[:P]
    return u, (v[P:] if needs_total else np.zeros(P))
