"""The engine's evaluator of a utility (batched, cached, counted) and its cache-only probe.

:class:`CachedEvaluator` is what the samplers see as the
:class:`~skdvl.sampling._base.Evaluator` of a utility. When a KeyboardInterrupt
lands inside a block, :func:`cached_prefix` finds the largest leading part of the
block whose coalitions were all evaluated, by running the sampler again on a
:class:`CachedOnly` view that answers from the cache and never calls the utility,
so that the finished evaluations are used and nothing is evaluated twice.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from skdvl.utility import FitReport

__all__ = ["CachedEvaluator", "CachedOnly", "cached_prefix", "cached_leading"]


class _PartialEvaluation(KeyboardInterrupt):
    """A KeyboardInterrupt that carries the utilities finished before it, in order."""

    def __init__(self, utilities: np.ndarray) -> None:
        super().__init__()
        self.utilities = utilities


class _Missing(Exception):
    """A coalition the cache-only view was asked for was never evaluated."""


#: Bytes of coalition keys an evaluator's cache may hold (about 40 MB with overhead).
_CACHE_BYTES = 16_000_000


class CachedEvaluator:
    """The engine's view of a utility: batched evaluation, counted, never twice the same.

    It implements the :class:`~skdvl.sampling._base.Evaluator` protocol that samplers see.

    Uses the utility's vectorised ``evaluate(masks)`` when it has one, else
    calls it coalition by coalition. A batch of masks is deduplicated and looked
    up in a cache of the coalitions this evaluator already evaluated (bit-packed
    keys; the oldest are dropped beyond ``_CACHE_BYTES``), so a coalition drawn
    twice costs one evaluation. Caches u(empty) and u(N).
    """

    def __init__(self, utility: Any, cache: bool = True) -> None:
        self.utility = utility
        self.n = int(utility.n_players)
        self.batched = callable(getattr(utility, "evaluate", None))
        # prefixes of a truncated permutation per batched call: a utility may say (a
        # costly one wants fewer evaluated past the truncation point)
        self.prefix_step = max(1, int(getattr(utility, "prefix_step", 64))) if self.batched else 1
        # whether the utility fits prefix walks incrementally (prefix_walk)
        self.walks = self.batched and callable(getattr(utility, "prefix_walk", None))
        self._calls = 0
        self.evaluations_at_start = 0  # a worker's copy may start from the utility's count
        self._empty: float | None = None
        self._full: float | None = None
        self._cache: dict[bytes, float] = {}
        self._cache_size = max(1024, _CACHE_BYTES // (self.n // 8 + 64)) if cache else 0

    @property
    def n_evaluations(self) -> int:
        """Evaluations done: the utility's own count if it keeps one (cache hits excluded)."""
        return int(getattr(self.utility, "n_evaluations", self._calls))

    def report(self) -> FitReport:
        """A copy of the utility's report of fits and failures (empty if it keeps none)."""
        report = getattr(self.utility, "report", None)
        return report.copy() if isinstance(report, FitReport) else FitReport()

    def empty(self) -> float:
        if self._empty is None:
            self._empty = self._one(np.zeros(self.n, dtype=bool))
        return self._empty

    def full(self) -> float:
        if self._full is None:
            self._full = self._one(np.ones(self.n, dtype=bool))
        return self._full

    def _one(self, mask: np.ndarray) -> float:
        """One coalition: through the batched, cached path when there is one, so that
        it is evaluated once whether asked for here or in a batch of masks."""
        if self.batched:
            return float(self.evaluate(mask[None, :])[0])
        return self._call(np.flatnonzero(mask))

    def _call(self, subset: np.ndarray) -> float:
        value = float(self.utility(subset))
        self._calls += 1
        return value

    def evaluate(self, masks: np.ndarray) -> np.ndarray:
        """Utilities of the coalitions ``masks`` (bool, (m, n)), each evaluated at most once."""
        m = masks.shape[0]
        if m == 0:
            return np.empty(0)
        if self._cache_size == 0:
            return self._evaluate(masks)
        keys = np.packbits(masks, axis=1)
        row_keys = [k.tobytes() for k in keys]
        cache = self._cache
        out = np.empty(m)
        todo: dict[bytes, list[int]] = {}
        for i, key in enumerate(row_keys):
            hit = cache.get(key)
            if hit is None:
                todo.setdefault(key, []).append(i)
            else:
                out[i] = hit
        if todo:
            first = np.fromiter((rows[0] for rows in todo.values()), np.intp, len(todo))
            try:
                u = self._evaluate(masks[first])
            except _PartialEvaluation as exc:  # keep what finished before the interrupt
                for key, value in zip(todo, exc.utilities):
                    cache[key] = float(value)
                raise
            for (key, rows), value in zip(todo.items(), u):
                out[rows] = value
                cache[key] = float(value)
            while len(cache) > self._cache_size:
                del cache[next(iter(cache))]
        return out

    def _evaluate(self, masks: np.ndarray) -> np.ndarray:
        """Evaluate ``masks``, counting only the evaluations that finished.

        A KeyboardInterrupt in the middle of coalition-by-coalition evaluation is
        raised again as a :class:`_PartialEvaluation` carrying the utilities that
        finished before it (a batched utility's call finishes all or none).
        """
        if self.batched:
            u = np.asarray(self.utility.evaluate(masks), dtype=np.float64).reshape(-1)
            self._calls += masks.shape[0]
            return u
        call, m = self.utility, masks.shape[0]
        out = np.empty(m)
        for i, row in enumerate(masks):
            try:
                out[i] = call(np.flatnonzero(row))
            except KeyboardInterrupt as exc:
                raise _PartialEvaluation(out[:i]) from exc
            self._calls += 1
        return out

    def prefixes(self, perm: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """u(perm[:j]) for j in range(lo, hi)."""
        if self.batched:
            return self.evaluate(np.arange(lo, hi)[:, None] > _rank(perm, self.n)[None, :])
        call, out = self.utility, np.empty(hi - lo)
        keys = np.packbits(np.arange(lo, hi)[:, None] > _rank(perm, self.n)[None, :], axis=1)
        for j, key in zip(range(lo, hi), keys):
            k = key.tobytes()
            hit = self._cache.get(k) if self._cache_size else None
            if hit is None:  # in the permutation's order: a custom utility may care
                hit = float(call(perm[:j]))
                self._calls += 1
                self._remember(k, hit)
            out[j - lo] = hit
        return out

    def walk(self, bases: np.ndarray, orders: list[np.ndarray]) -> Any:
        """The utility's incremental walk of the prefixes ``bases[r] | orders[r][:j]``
        (an object whose ``step(walks)`` returns the next prefixes' utilities), or None
        where it has none. Its evaluations are counted by the utility, not cached."""
        return self.utility.prefix_walk(bases, orders) if self.walks else None

    def remember(self, mask: np.ndarray, value: float) -> None:
        """Cache the utility of the coalition ``mask`` (evaluated elsewhere)."""
        self._remember(np.packbits(mask).tobytes(), value)

    def _remember(self, key: bytes, value: float) -> None:
        if self._cache_size:
            self._cache[key] = value
            while len(self._cache) > self._cache_size:
                del self._cache[next(iter(self._cache))]


def _rank(perm: np.ndarray, n: int) -> np.ndarray:
    """The position of each of the ``n`` players in ``perm`` (a permutation of them)."""
    rank = np.empty(n, dtype=np.intp)
    rank[perm] = np.arange(n)
    return rank


class CachedOnly:
    """An :class:`~skdvl.sampling._base.Evaluator` that answers from an evaluator's cache.

    It raises :class:`_Missing` for a coalition that was not evaluated, and asks for
    the prefixes of a permutation one at a time (so that a walk stops asking where
    it truncates, as a walk in lockstep did).
    """

    walks = False  # a walk of the cache is the cold walk, one prefix at a time

    def __init__(self, ev: CachedEvaluator) -> None:
        self.ev, self.n, self.batched, self.prefix_step = ev, ev.n, ev.batched, 1

    def walk(self, bases: np.ndarray, orders: list[np.ndarray]) -> None:
        return None

    @property
    def n_evaluations(self) -> int:
        return self.ev.n_evaluations

    def report(self) -> FitReport:
        return self.ev.report()

    def evaluate(self, masks: np.ndarray) -> np.ndarray:
        u = cached_leading(self.ev, masks)
        if u.shape[0] < masks.shape[0]:
            raise _Missing
        return u

    def prefixes(self, perm: np.ndarray, lo: int, hi: int) -> np.ndarray:
        return self.evaluate(np.arange(lo, hi)[:, None] > _rank(perm, self.n)[None, :])

    def _one(self, known: float | None, full: bool) -> float:
        if known is not None:
            return known
        return float(self.evaluate(np.full((1, self.n), full))[0])

    def empty(self) -> float:
        return self._one(self.ev._empty, False)

    def full(self) -> float:
        return self._one(self.ev._full, True)


def cached_prefix(ev: CachedEvaluator, run: Callable[[Any, int], Any],
                  room: int) -> tuple[int, Any]:
    """The most samples ``k <= room`` of a block whose coalitions are all in ``ev``'s cache.

    ``run(evaluator, k)`` computes the block's first ``k`` samples (from the start
    of what is left of it). Binary search: a part of a block needs the coalitions
    of any shorter part. Returns ``(k, statistics)``; ``(0, None)`` when not one
    sample finished.
    """
    probe, lo, hi, best = CachedOnly(ev), 0, room, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        while lo < hi:
            mid = (lo + hi + 1) // 2
            try:
                stats = run(probe, mid)
            except _Missing:
                hi = mid - 1
            else:
                lo, best = mid, stats
    return lo, best


def cached_leading(ev: CachedEvaluator, masks: np.ndarray) -> np.ndarray:
    """The utilities of the leading rows of ``masks`` in ``ev``'s cache, up to the first
    that is not (a fixed list of coalitions interrupted part way)."""
    out = []
    for key in np.packbits(masks, axis=1):
        hit = ev._cache.get(key.tobytes())
        if hit is None:
            break
        out.append(hit)
    return np.asarray(out, dtype=np.float64)
