"""Stratified marginal contributions with Neyman allocation learned from a warm-up.

Castro, Gómez, Molina & Tejada (2017), "Improving polynomial estimation of the
Shapley value by stratified random sampling with optimum allocation", Computers
& Operations Research 82, 180-188, for any semivalue. A *stratum* is a player
``i`` and a size ``k``: the marginal ``u(T + i) - u(T)``, ``T`` uniform among the
``C(n-1, k)`` coalitions of size ``k`` of the others; ``phi_i = sum_k m(k)
mean_{i,k}`` has the variance ``sum_k m(k)^2 s^2_{i,k} / n_{i,k}``, smallest for a
given number of draws with ``n_{i,k}`` proportional to ``m(k) s_{i,k}`` (Neyman,
1934, "On the two different aspects of the representative method", JRSS 97(4)).
Coalitions are drawn without replacement within a stratum, in a random order
with random access (a keyed Feistel permutation of their colex ranks), so a
stratum drawn ``C(n-1, k)`` times is exact. The statistics (per stratum, or per
pair of strata for paired draws) do not depend on the semivalue.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from skdvl._coalitions import check_int
from skdvl.result import ValuationResult
from skdvl.sampling._base import BaseSampler, EngineState, Evaluator, Runner, TableState
from skdvl.sampling._svarm import _check_mass, _unknown
from skdvl.stopping import Status

__all__ = ["NeymanSampler"]

_CAP = 2**61  # binomials saturate here (two of them add up without overflow)
_WITHOUT_REPLACEMENT = 2**53  # strata of at most this many coalitions (the others: with)
_WINDOW = 4  # the sizes on either side of a stratum whose samples predict its variance
_PRIOR_DF = 2.0  # degrees of freedom of that prediction in the standard errors
_DRAWS_PER_CYCLE = 8  # draws per stratum in one cycle of the allocation, on average
_SEED_BLOCK = 1 << 40  # the game's streams and warm-up are seeded as a block never drawn
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


# --------------------------------------------------------------------------- coalitions
def _pascal(n: int) -> np.ndarray:
    """``C(c, j)`` for ``c, j`` in ``0..n`` as int64, saturated at ``_CAP``."""
    b = np.zeros((n + 1, n + 1), dtype=np.int64)
    b[:, 0] = 1
    for c in range(1, n + 1):
        b[c, 1:] = np.minimum(b[c - 1, 1:] + b[c - 1, :-1], _CAP)
    return b


def _mix(z: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser (Steele, Lea & Flood, 2014), elementwise on uint64."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def _permute(x: np.ndarray, size: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """``pi(x)``, ``pi`` a keyed pseudo-random permutation of ``range(size)``, per row.

    A balanced Feistel network of ``keys.shape[1]`` rounds on ``2h`` bits
    (``4^h >= size``) with cycle walking (Black & Rogaway, 2002, "Ciphers with
    arbitrary finite domains", CT-RSA): random access to a random order.
    """
    size = size.astype(np.uint64)
    bits = np.frexp((size - np.uint64(1)).astype(np.float64))[1]
    half = np.maximum((bits + 1) // 2, 1).astype(np.uint64)
    mask = (np.uint64(1) << half) - np.uint64(1)
    y = x.astype(np.uint64)
    todo = np.arange(y.shape[0])
    while todo.size:
        h, msk = half[todo], mask[todo]
        left, right = y[todo] >> h, y[todo] & msk
        for r in range(keys.shape[1]):
            left, right = right, left ^ (_mix(right ^ keys[todo, r]) & msk)
        y[todo] = (left << h) | right
        todo = todo[y[todo] >= size[todo]]
    return y.astype(np.int64)


def _unrank(rank: np.ndarray, t: np.ndarray, pool: np.ndarray, binom: np.ndarray,
            width: int) -> np.ndarray:
    """Boolean (m, width): the ``t``-subsets of ``range(pool)`` of colex rank ``rank``.

    The combinatorial number system (Knuth, TAOCP 4A, 7.2.1.3, Eq. (3)): the
    largest element of a ``j``-subset of rank ``r`` is the largest ``c`` with
    ``C(c, j) <= r``. A subset of more than half the pool is its complement's.
    """
    flip = 2 * t > pool
    s = np.where(flip, pool - t, t)
    out = np.zeros((rank.shape[0], width), dtype=bool)
    r = rank.copy()
    for j in range(int(s.max(initial=0)), 0, -1):
        rows = np.flatnonzero(s >= j)
        c = np.searchsorted(binom[:, j], r[rows], side="right") - 1
        out[rows, c] = True
        r[rows] -= binom[c, j]
    out[flip] ^= np.arange(width)[None, :] < pool[flip, None]
    return out


@dataclass
class _Design:
    """The units of a game: unit ``i * K + k`` is player ``i``'s stratum ``k``, or paired,
    its strata ``k`` and ``n - 1 - k`` (``k <= (n - 1) / 2``).

    A unit draws ``t`` of a ``pool`` of other players (``k`` of the ``n - 1``); the
    *middle* pair (``2k = n - 1``) puts the first other player in ``T`` and draws
    ``k - 1`` of the ``n - 2`` others, so that each pair is one coalition of its
    ``population``.
    """

    n: int
    paired: bool
    k_units: int  # units per player
    per_draw: int  # marginals per draw
    player: np.ndarray
    size: np.ndarray
    middle: np.ndarray
    t: np.ndarray
    pool: np.ndarray
    population: np.ndarray
    binom: np.ndarray

    @classmethod
    def of(cls, n: int, paired: Any) -> _Design:
        paired = bool(paired) and n > 1
        kk = (n - 1) // 2 + 1 if paired else n
        player, size = np.repeat(np.arange(n), kk), np.tile(np.arange(kk), n)
        middle = paired & (2 * size == n - 1)
        t, pool, binom = size - middle, n - 1 - middle, _pascal(n)
        return cls(n, paired, kk, 1 + paired, player, size, middle, t, pool, binom[pool, t],
                   binom)

    def masses(self, mass: np.ndarray) -> np.ndarray:
        """(units, 2): the semivalue's mass on each unit's stratum and on its partner."""
        partner = np.where(self.paired & ~self.middle, mass[self.n - 1 - self.size], 0.0)
        return np.column_stack([mass[self.size], partner])

    def warm_up(self, mass: np.ndarray, warm_up: int) -> np.ndarray:
        """Draws per unit first: all of a stratum of at most ``n - 1`` coalitions,
        ``warm_up`` of the others, none of a unit the semivalue does not weigh."""
        pop = self.population
        take = np.where(pop <= self.n - 1, pop, np.minimum(warm_up, pop))
        return np.where(self.masses(mass).sum(axis=1) > 0, take, 0)

    def draw(self, units: np.ndarray, index: np.ndarray, keys: np.ndarray,
             rng: np.random.Generator) -> np.ndarray:
        """Boolean (m, n): coalition ``index`` of each unit's stream (its permutation;
        uniform from ``rng``, drawn for every row, above ``_WITHOUT_REPLACEMENT``)."""
        n, m, width = self.n, units.shape[0], max(self.n - 1, 0)
        t, pool, pop = self.t[units], self.pool[units], self.population[units]
        noise = rng.random((m, width))
        noise[np.arange(width)[None, :] >= pool[:, None]] = np.inf
        chosen = np.zeros((m, width), dtype=bool)
        np.put_along_axis(chosen, np.argsort(noise, axis=1),
                          np.arange(width)[None, :] < t[:, None], axis=1)
        listed = pop <= _WITHOUT_REPLACEMENT
        if listed.any():
            j = np.where(index < pop, index, 0)[listed]
            ranks = _permute(j, pop[listed], keys[units[listed]])
            chosen[listed] = _unrank(ranks, t[listed], pool[listed], self.binom, width)
        i, mid = self.player[units], self.middle[units]
        first = (i == 0).astype(np.int64)  # the first other player: in T of a middle pair
        lo, hi = np.where(mid, np.minimum(i, first), i), np.where(mid, np.maximum(i, first), n)
        q = np.arange(width)[None, :] + (np.arange(width)[None, :] >= lo[:, None])
        q = q + (q >= hi[:, None])  # pool position -> player, skipping i (and first)
        coalitions = np.zeros((m, n), dtype=bool)
        rows, cols = np.nonzero(chosen)
        coalitions[rows, q[rows, cols]] = True
        coalitions[np.flatnonzero(mid), first[mid]] = True
        return coalitions

    def masks(self, units: np.ndarray, coalitions: np.ndarray) -> np.ndarray:
        """What to evaluate: ``T`` and ``T + i`` (paired: and the same of ``N - i - T``)."""
        own = np.zeros_like(coalitions)
        own[np.arange(units.shape[0]), self.player[units]] = True
        parts = [coalitions, coalitions | own]
        if self.paired:
            complement = ~(coalitions | own)
            parts += [complement, complement | own]
        return np.concatenate(parts)

    def marginals(self, units: np.ndarray, u: np.ndarray) -> np.ndarray:
        """(m, 2) marginals from the utilities of :meth:`masks` (a middle pair's averaged)."""
        u = u.reshape(2 * self.per_draw, units.shape[0])
        x = np.zeros((units.shape[0], 2))
        x[:, 0] = u[1] - u[0]
        if self.paired:
            other, mid = u[3] - u[2], self.middle[units]
            x[:, 0] = np.where(mid, (x[:, 0] + other) / 2, x[:, 0])
            x[:, 1] = np.where(mid, 0.0, other)
        return x


# --------------------------------------------------------------------------- statistics
@dataclass
class _UnitMoments:
    """Count, means, sums of squared deviations and co-moment of the two sides of each unit.

    ``index`` None: all units (dense, the engine's running state), else those
    listed (a block's). ``draws[i]``: marginals drawn for player ``i``, those of
    exhausted strata (skipped, free) included. ``mass``: the semivalue fitted.
    """

    n: int
    paired: bool
    index: np.ndarray | None
    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    co: np.ndarray
    draws: np.ndarray
    mass: np.ndarray | None = None

    @classmethod
    def zeros(cls, design: _Design) -> _UnitMoments:
        u = design.size.shape[0]
        return cls(design.n, design.paired, None, np.zeros(u, np.int64), np.zeros((u, 2)),
                   np.zeros((u, 2)), np.zeros(u), np.zeros(design.n, np.int64))

    @classmethod
    def of_draws(cls, design: _Design, units: np.ndarray, x: np.ndarray, draws: np.ndarray,
                 mass: np.ndarray | None) -> _UnitMoments:
        """Statistics of the marginals ``x`` (m, 2) of draws of ``units``; two passes."""
        index, inverse = np.unique(units, return_inverse=True)
        m = index.shape[0]
        count = np.bincount(inverse, minlength=m)
        total = np.column_stack([np.bincount(inverse, x[:, s], m) for s in (0, 1)])
        mean = total / np.maximum(count, 1)[:, None]
        d = x - mean[inverse]
        m2 = np.column_stack([np.bincount(inverse, d[:, s] ** 2, m) for s in (0, 1)])
        co = np.bincount(inverse, d[:, 0] * d[:, 1], m)
        return cls(design.n, design.paired, index.astype(np.int64), count.astype(np.int64),
                   mean, m2, co, draws.astype(np.int64), mass)

    def merge(self, other: _UnitMoments) -> None:
        """Pool ``other`` into these statistics, in place (Chan, Golub & LeVeque, 1979)."""
        if self.mass is None and other.mass is not None:
            self.mass = np.array(other.mass, dtype=np.float64)
        self.draws = self.draws + other.draws
        if self.index is not None:
            dense = _UnitMoments.zeros(_Design.of(self.n, self.paired))
            dense.merge(self)
            self.index, self.count, self.mean, self.m2, self.co = (
                None, dense.count, dense.mean, dense.m2, dense.co)
        w: Any = slice(None) if other.index is None else other.index
        n_a, n_b = self.count[w], other.count
        total = np.maximum(n_a + n_b, 1)
        delta = other.mean - self.mean[w]
        self.mean[w] = self.mean[w] + delta * (n_b / total)[:, None]
        self.m2[w] = self.m2[w] + other.m2 + delta**2 * (n_a * n_b / total)[:, None]
        self.co[w] = self.co[w] + other.co + delta[:, 0] * delta[:, 1] * n_a * n_b / total
        self.count[w] = n_a + n_b


def _smooth(v: np.ndarray, skip_partner: bool) -> np.ndarray:
    """Each entry from the finite ones of its row within ``_WINDOW`` columns, weighed
    ``1 / |d|``: itself left out (``skip_partner``: column ``width - 1 - k`` too)."""
    width = v.shape[1]
    known = np.isfinite(v)
    values = np.where(known, v, 0.0)
    num, den = np.zeros_like(values), np.zeros_like(values)
    k = np.arange(width)
    for d in [*range(-_WINDOW, 0), *range(1, _WINDOW + 1)]:
        j = k + d
        w = ((j >= 0) & (j < width) & ~(skip_partner & (j == width - 1 - k))) / abs(d)
        jj = np.clip(j, 0, max(width - 1, 0))
        num += w * values[:, jj]
        den += w * known[:, jj]
    return np.divide(num, den, out=np.full_like(num, np.nan), where=den > 0)


def _priors(stats: _UnitMoments, design: _Design) -> tuple[np.ndarray, ...]:
    """Each unit's variances (its two sides) and covariance, predicted by its neighbours.

    The sample variances of the player's strata of the ``_WINDOW`` nearest sizes
    on either side, never the unit's own (:func:`_smooth`); where no neighbour
    has two draws, the variance pooled over the game; NaN if nothing has.
    Middle pairs (averages of two marginals) inform no one.
    """
    n, kk = design.n, design.k_units
    df = np.maximum(stats.count - 1, 0).astype(np.float64)
    side = ~design.middle & (df > 0)
    i, k = design.player[side], design.size[side]
    s2 = np.full((n, n), np.nan)
    s2[i, k] = stats.m2[side, 0] / df[side]
    if design.paired:
        s2[i, n - 1 - k] = stats.m2[side, 1] / df[side]
    pooled = (stats.m2[side].sum() / (design.per_draw * df[side].sum()) if side.any()
              else np.nan)
    var = _smooth(s2, design.paired)
    var = np.where(np.isnan(var), pooled, var)
    a = var[design.player, design.size]
    b = np.where(design.paired & ~design.middle, var[design.player, n - 1 - design.size], 0.0)
    c = np.zeros_like(a)
    if design.paired:
        cov = np.full(n * kk, np.nan)
        cov[side] = stats.co[side] / df[side]
        c = np.nan_to_num(_smooth(cov.reshape(n, kk), False).reshape(-1))
        a = np.where(design.middle, np.maximum((a + c) / 2, 0.0), a)
        c = np.where(design.middle, 0.0, c)
    return a, b, c


def _moderate(m2: np.ndarray, df: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """``(d0 prior + m2) / (d0 + df)``, ``d0 = _PRIOR_DF``: the moderated variance of Smyth
    (2004), "Linear models and empirical Bayes methods for assessing differential
    expression in microarray experiments", SAGMB 3(1), Eq. (4); NaN if nothing is known."""
    d0 = np.where(np.isfinite(prior), _PRIOR_DF, 0.0)
    num = d0 * np.nan_to_num(prior) + m2
    return np.divide(num, d0 + df, out=np.full_like(num, np.nan), where=d0 + df > 0)


def _estimate(stats: _UnitMoments, design: _Design, mass: np.ndarray) -> ValuationResult:
    """``phi_i = sum_k m(k) mean_{i,k}``; the variance of a unit's mean of
    ``m_a x_a + m_b x_b`` is ``(1 - c / C) (m_a^2 s_a^2 + m_b^2 s_b^2 + 2 m_a m_b s_ab) / c``
    (moderated variances). NaN while a weighed unit has no draw."""
    n, kk = design.n, design.k_units
    w, count = design.masses(mass), stats.count
    unseen = ((w.sum(axis=1) > 0) & (count == 0)).reshape(n, kk).any(axis=1)
    values = (w * stats.mean).sum(axis=1).reshape(n, kk).sum(axis=1)
    a0, b0, c0 = _priors(stats, design)
    df = np.maximum(count - 1, 0).astype(np.float64)
    var = (w[:, 0] ** 2 * _moderate(stats.m2[:, 0], df, a0)
           + w[:, 1] ** 2 * _moderate(stats.m2[:, 1], df, b0)
           + 2 * w[:, 0] * w[:, 1] * _moderate(stats.co, df, c0))
    fpc = 1.0 - count / design.population.astype(np.float64)
    live = (fpc > 0) & (count > 0) & (w.sum(axis=1) > 0)
    of_mean = np.divide(np.maximum(var, 0.0) * fpc, count, out=np.zeros(count.shape),
                        where=live)
    stderr = np.sqrt(of_mean.reshape(n, kk).sum(axis=1))
    counts = (count * design.per_draw).reshape(n, kk).sum(axis=1)
    values[unseen], stderr[unseen], counts[unseen] = np.nan, 0.0, 0
    return ValuationResult(values, variances=stderr**2 * counts, counts=counts)


# --------------------------------------------------------------------------- the allocation
@dataclass
class _Plan:
    """The draws of blocks ``start, start + 1, ...``: cycles of ``per_cycle`` draws per unit,
    each unit's spread evenly over the cycle (``slot_unit``, ``slot_rank`` its draw in
    the cycle); a unit's stream goes on from its ``base`` draws."""

    design: _Design
    mass: np.ndarray
    keys: np.ndarray
    base: np.ndarray
    per_cycle: np.ndarray
    start: int
    slot_unit: np.ndarray
    slot_rank: np.ndarray


def _allocate(stats: _UnitMoments, design: _Design, mass: np.ndarray,
              min_share: float) -> np.ndarray:
    """Draws per cycle: proportional to the predicted ``sd(m_a x_a + m_b x_b)`` of each unit
    (Neyman, 1934, with :func:`_priors`), at least ``min_share`` times that of an average
    unit of its mass; none where the mass is 0 or every coalition was drawn."""
    w = design.masses(mass)
    weight = w.sum(axis=1)
    active = (weight > 0) & (design.population > stats.count)
    if not active.any():
        return np.zeros(weight.shape[0], dtype=np.int64)
    a, b, c = (np.nan_to_num(p) for p in _priors(stats, design))
    var = w[:, 0] ** 2 * a + w[:, 1] ** 2 * b + 2 * w[:, 0] * w[:, 1] * c
    sd = np.sqrt(np.maximum(var, 0.0))
    level = sd[active].sum() / weight[active].sum()
    score = np.where(active, np.maximum(sd, min_share * weight * level), 0.0)
    if score.sum() <= 0:  # every unit looks constant (and no floor): by mass
        score = np.where(active, weight, 0.0)
    return np.rint(_DRAWS_PER_CYCLE * active.sum() * score / score.sum()).astype(np.int64)


def _plan(stats: _UnitMoments, design: _Design, mass: np.ndarray, keys: np.ndarray,
          start: int, min_share: float) -> _Plan | None:
    """The allocation of the blocks from ``start`` on; None when nothing is left to draw."""
    per_cycle = _allocate(stats, design, mass, min_share)
    if per_cycle.sum() == 0:
        return None
    units = np.repeat(np.arange(per_cycle.shape[0]), per_cycle)
    rank = np.arange(units.shape[0]) - np.repeat(np.cumsum(per_cycle) - per_cycle, per_cycle)
    order = np.lexsort((units, (rank + 0.5) / per_cycle[units]))
    return _Plan(design, mass, keys, stats.count.copy(), per_cycle, start, units[order],
                 rank[order])


def _unique_rows(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of boolean ``masks`` and where each row is among them."""
    packed = np.ascontiguousarray(np.packbits(masks, axis=1))
    keys = packed.view(np.dtype((np.void, packed.shape[1])))[:, 0]
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return masks[first], inverse.reshape(-1)


# --------------------------------------------------------------------------- the sampler
class NeymanSampler(BaseSampler):
    """Stratified by player and coalition size, with Neyman allocation (``"neyman"``).

    Castro, Gómez, Molina & Tejada (2017), "Improving polynomial estimation of
    the Shapley value by stratified random sampling with optimum allocation",
    Computers & Operations Research 82, 180-188, for any semivalue: each
    (player ``i``, size ``k``) is a stratum of marginals ``u(T + i) - u(T)``,
    ``phi_i = sum_k m(k) mean_{i,k}``. A warm-up draws every coalition of the
    strata of at most ``n - 1`` (sizes 0, 1, ``n - 2``, ``n - 1``) and ``warm_up``
    of each other stratum; the draws that follow go to the strata in proportion
    to ``m(k)`` times their standard deviations. Within a stratum coalitions are
    drawn without replacement: one drawn as often as it has coalitions is exact.

    Parameters
    ----------
    warm_up : int, default=4
        Draws of each sampled stratum before the allocation is learned.
    paired : bool, default=False
        Draw ``T`` with its complement ``N - i - T`` (a draw is then two marginals,
        four evaluations): at 40,000 calls and ``n = 40`` it cut the MSE 4.8x on
        the shoes game, 5.7x on the airport game and 2x on a weighted vote.
    min_share : float in [0, 1], default=0.3
        The floor: a stratum whose neighbours look constant still gets
        ``min_share`` times the draws of an average stratum of its mass ``m(k)``.
    batch_size : int, default=256
        Draws per block (evaluated together; the granularity of stopping checks).

    Notes
    -----
    *Determinism.* The warm-up is a fixed, seeded table of coalitions; the
    allocation is computed from it once, and each block then draws a fixed slice
    of a deterministic cycle (each stratum's share spread evenly over it) from
    its own seeded generator: no block depends on another's results, so values
    are identical for any ``n_jobs`` and backend. The engine's runner cannot stop
    at a fixed point to re-allocate, so within one ``fit`` the allocation is
    learned once (the paper's two stages); a ``warm_start`` continuation
    re-learns it from all the draws so far (and differs from one longer fit).

    *Unbiasedness.* A stratum's share is predicted from the sample variances of
    the player's strata within 4 sizes, never its own (:func:`_priors`): its
    number of draws does not depend on its draws (but through the normalisation
    of all ``n^2`` shares), so its mean is unbiased. The paper's own-variance
    allocation biases the means (a stratum that looked constant gets fewer).

    *Standard errors*: ``sqrt(sum_k (1 - c/C) m(k)^2 s_k^2 / c)``, ``s_k^2`` moderated
    towards the neighbours' variance with 2 degrees of freedom (:func:`_moderate`).
    ``counts_`` counts each player's marginals; ``max_updates`` the marginals per
    player on average (two evaluations each, fewer with repeats), the warm-up's
    ``2n + warm_up (n - 4)`` included. The warm-up costs about ``2 warm_up n^2``
    evaluations (12,834 at ``n = 40``) and is spent whatever the budget (a smaller
    ``max_updates`` warns). At 40,000 calls and ``n = 40`` the MSE was 0.03 times
    permutation sampling's on the airport game, 1.0 on a weighted vote and 1.3 on
    the shoes game (0.005, 0.5 and 0.27 paired); regression-adjusted MSR with a
    tree surrogate was lower on all three (``benchmarks/README.md``).

    Examples
    --------
    >>> import numpy as np
    >>> from skdvl import ShapleyValuer
    >>> from skdvl.games import AirportGame
    >>> from skdvl.sampling import NeymanSampler
    >>> game = AirportGame(np.linspace(1.0, 4.0, 8))
    >>> v = ShapleyValuer(utility=game, sampler=NeymanSampler(), max_updates=200,
    ...                   random_state=0).fit()
    >>> bool(np.all(np.abs(v.values_ - game.shapley_values()) < 4 * v.stderr_ + 1e-12))
    True
    """

    def __init__(self, warm_up: int = 4, paired: bool = False, min_share: float = 0.3,
                 batch_size: int = 256) -> None:
        self.warm_up, self.paired = warm_up, paired
        self.min_share, self.batch_size = min_share, batch_size
        self._check()

    def _check(self) -> None:
        check_int(self.warm_up, "warm_up", 1)
        check_int(self.batch_size, "batch_size", 1)
        share, paired = self.min_share, self.paired
        if not isinstance(paired, (bool, np.bool_)):
            raise ValueError(f"The 'paired' parameter of NeymanSampler must be a bool. Got "
                             f"{paired!r} instead.")
        if isinstance(share, bool) or not (isinstance(share, (int, float, np.number))
                                           and math.isfinite(share) and 0 <= share <= 1):
            raise ValueError("The 'min_share' parameter of NeymanSampler must be a float in "
                             f"[0, 1]. Got {share!r} instead.")

    @property
    def samples_per_block(self) -> int:
        return int(self.batch_size)

    def min_updates(self, n: int) -> int:
        """The warm-up's marginals per player (every stratum weighed)."""
        design = _Design.of(n, self.paired)
        draws = design.warm_up(np.ones(n), int(self.warm_up)).sum() * design.per_draw
        return int(-(-draws // n))

    def zeros(self, n: int) -> tuple[_UnitMoments]:
        return (_UnitMoments.zeros(_Design.of(n, self.paired)),)

    def run_block(
        self, ev: Evaluator, rng: np.random.Generator, weights: Any, block: int,
        start: int = 0, stop: int | None = None,
    ) -> tuple[Any, ...]:  # one _UnitMoments
        """Draws ``[start, stop)`` of the block's slice of the cycle of ``weights`` (a plan);
        a draw past a stratum's coalitions is skipped, but counted in ``draws``."""
        plan: _Plan = weights
        design, spb = plan.design, self.samples_per_block
        g = (block - plan.start) * spb + np.arange(spb)
        cycle, pos = np.divmod(g, plan.slot_unit.shape[0])
        units = plan.slot_unit[pos]
        index = plan.base[units] + cycle * plan.per_cycle[units] + plan.slot_rank[pos]
        coalitions = design.draw(units, index, plan.keys, rng)[start:stop]
        units, index = units[start:stop], index[start:stop]
        draws = np.bincount(design.player[units], minlength=design.n) * design.per_draw
        live = index < design.population[units]
        units, coalitions = units[live], coalitions[live]
        masks = design.masks(units, coalitions)
        u = ev.evaluate(masks) if masks.shape[0] else np.zeros(0)
        x = design.marginals(units, u)
        return (_UnitMoments.of_draws(design, units, x, draws, plan.mass),)

    def value_game(self, utility: Any, mass: np.ndarray, *, state: Any,
                   run: Runner) -> tuple[ValuationResult, Any]:
        """The warm-up (a table of coalitions), then block sampling with its allocation."""
        self._check()
        n = int(utility.n_players)
        mass, design = _check_mass(mass, n), _Design.of(n, self.paired)
        seeds = run.block_rng(_SEED_BLOCK)
        keys = seeds.integers(0, 2**64, size=(design.size.shape[0], 4), dtype=np.uint64)
        if not isinstance(state, EngineState):
            state = self._warm_up(utility, design, mass, keys, seeds, state, run)
            if isinstance(state, TableState):  # interrupted
                return _unknown(n), state
        plan = _plan(state.moments[0], design, mass, keys, state.next_block,
                     float(self.min_share))
        if plan is None:  # every stratum weighed is exact
            state.status, state.interrupted = Status.CONVERGED, False
        else:
            state = run.sample(utility, self, plan, state)
        return self.result(state.moments), state

    def _warm_up(self, utility: Any, design: _Design, mass: np.ndarray, keys: np.ndarray,
                 seeds: np.random.Generator, state: TableState | None,
                 run: Runner) -> EngineState | TableState:
        """Evaluate the warm-up's distinct coalitions (continuing ``state``); its statistics."""
        take = design.warm_up(mass, int(self.warm_up))
        units = np.repeat(np.arange(take.shape[0]), take)
        index = np.arange(units.shape[0]) - np.repeat(np.cumsum(take) - take, take)
        unique, inverse = _unique_rows(design.masks(units, design.draw(units, index, keys,
                                                                       seeds)))
        table = state if state is not None else TableState(design.n, unique.shape[0],
                                                           np.empty(0))
        table = run.table(utility, table, masks=unique)
        if table.done < table.total:
            return table
        x = design.marginals(units, table.utilities[inverse])
        draws = np.bincount(design.player[units], minlength=design.n) * design.per_draw
        engine = EngineState.new(self, design.n)
        stats: Any = (_UnitMoments.of_draws(design, units, x, draws, mass),)
        engine.absorb(stats)
        engine.n_samples, engine.n_evaluations = int(units.shape[0]), table.n_evaluations
        engine.report = table.report
        return engine

    def result(self, moments: tuple[Any, ...]) -> ValuationResult:
        """Values (NaN while a weighed stratum has no draw), standard errors and counts."""
        stats = moments[0]
        if stats.mass is None:
            return _unknown(stats.n)
        return _estimate(stats, _Design.of(stats.n, stats.paired), stats.mass)

    def counts(self, moments: tuple[Any, ...]) -> np.ndarray:
        """Marginals drawn per player on average, for every player (what budgets count)."""
        stats = moments[0]
        return np.full(stats.n, int(stats.draws.sum()) // max(stats.n, 1), dtype=np.int64)

    def reweight(self, state: Any, mass: np.ndarray) -> ValuationResult:
        """Values of the semivalue ``mass`` from the strata of ``state``, no new evaluation;
        NaN (with a warning) for players with a stratum it weighs that was never drawn."""
        if not isinstance(state, EngineState):
            return _unknown(int(state.n))
        stats = state.moments[0]
        design = _Design.of(stats.n, stats.paired)
        mass = _check_mass(mass, stats.n)
        missing = (design.masses(mass).sum(axis=1) > 0) & (stats.count == 0)
        if missing.any():
            warnings.warn(
                f"The fit drew no coalition of sizes {np.unique(design.size[missing])[:6]}, "
                "which the new semivalue weighs (the fitted one gave them no mass): the "
                f"values of {np.unique(design.player[missing]).shape[0]} players are NaN. "
                "Fit the new semivalue directly.", UserWarning, stacklevel=4)
        return _estimate(stats, design, mass)
