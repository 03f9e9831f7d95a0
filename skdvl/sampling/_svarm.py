"""Stratified SVARM: every utility evaluation updates the value of every player.

Kolpaczki, Bengs, Muschalik & Hüllermeier (2024), "Approximating the Shapley
value without marginal contributions", AAAI, Alg. 2 ("Stratified SVARM"), here
for any semivalue. With ``m(l)`` the semivalue's mass on the size ``l`` of the
coalition ``T`` of the other players (``1/n`` for Shapley),

    phi_i = sum_{l=0}^{n-1} m(l) * (phi^+_{i,l} - phi^-_{i,l}),

where the *strata means* ``phi^+_{i,l}`` and ``phi^-_{i,l}`` are the mean
utilities of the coalitions of size ``l + 1`` that contain ``i`` and of size
``l`` that do not (each coalition of a size equally weighted). A coalition ``A``
of size ``s`` drawn uniformly given its size is a sample of ``phi^+_{i,s-1}``
for each ``i`` in ``A`` and of ``phi^-_{i,s}`` for each ``i`` outside it: one
evaluation serves all players. The strata means do not depend on the
semivalue, so the same samples give Shapley, (weighted) Banzhaf and Beta
Shapley values (Li & Yu, 2024, "One sample fits all: approximating all
probabilistic values simultaneously and efficiently", NeurIPS, make the same
observation for their estimator); :meth:`SVARMSampler.reweight` exposes it.

The statistics of a game are the pooled count, mean and sum of squared
deviations of every stratum (Chan, Golub & LeVeque, 1979), ``2 n^2`` of each:
about 48 MB at ``n = 1000``. A block's statistics hold only the strata its
coalitions reached.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from skdvl._coalitions import check_int, masks_from_codes, uniform_coalitions
from skdvl._moments import merge_moments
from skdvl.result import ValuationResult
from skdvl.sampling._base import EngineState, Evaluator, Runner, _CoalitionSampler
from skdvl.stopping import Status

__all__ = ["SVARMSampler"]

_STRATEGIES = ("paper", "uniform")


# --------------------------------------------------------------------------- size distributions
def _paper_size_distribution(n: int) -> np.ndarray:
    """The size distribution ``P~(s)`` of stratified SVARM on sizes ``0..n`` (0 off ``2..n-2``).

    Kolpaczki et al. (2024), Sec. "Stratified SVARM": for odd ``n``,
    ``P~(s) = 1 / (2 min(s, n - s) (H_{(n-1)/2} - 1))``; for even ``n``,
    ``P~(n/2) = 1 / (n log n)`` and otherwise
    ``P~(s) = (n log n - 1) / (2 min(s, n - s) n log n (H_{n/2-1} - 1))``
    (``H_k`` the harmonic numbers). Then every stratum ``phi^+_{i,s-1}`` with
    ``s <= n/2`` expects the same number of samples.

    Notes
    -----
    Normalised to sum to 1, which changes it only for ``n = 4``: there the
    formula gives ``P~(2) = 1 / (4 log 4)``, though size 2 is the only one left.
    """
    q = np.zeros(n + 1)
    if n < 4:
        return q
    s = np.arange(2, n - 1)
    half = np.minimum(s, n - s)
    if n % 2:
        h = np.sum(1.0 / np.arange(1, (n - 1) // 2 + 1))
        q[s] = 1.0 / (2.0 * half * (h - 1.0))
    else:
        nlogn = n * np.log(n)
        side = s != n // 2
        if side.any():  # n >= 6, so H_{n/2-1} > 1
            h = np.sum(1.0 / np.arange(1, n // 2))
            q[s[side]] = (nlogn - 1.0) / (2.0 * half[side] * nlogn * (h - 1.0))
        q[n // 2] = 1.0 / nlogn
    return q / q.sum()


def _check_size_strategy(size_strategy: Any) -> None:
    """Refuse what can never be a size strategy (the length is checked once ``n`` is known)."""
    if isinstance(size_strategy, str):
        if size_strategy not in _STRATEGIES:
            raise ValueError(
                "The 'size_strategy' parameter of SVARMSampler must be 'paper', 'uniform' or "
                f"an array of n + 1 probabilities. Got {size_strategy!r} instead.")
        return
    try:
        q = np.asarray(size_strategy, dtype=np.float64)
    except (TypeError, ValueError):
        q = np.empty((0, 0))
    if q.ndim != 1 or not np.all(np.isfinite(q)) or np.any(q < 0):
        raise ValueError(
            "The 'size_strategy' parameter of SVARMSampler must be 'paper', 'uniform' or a "
            f"1-D array of non-negative probabilities. Got {size_strategy!r} instead.")


def _size_distribution(size_strategy: Any, n: int) -> np.ndarray:
    """Probabilities of the sampled coalition's size, ``0..n``; 0 outside ``2..n-2``."""
    _check_size_strategy(size_strategy)
    if isinstance(size_strategy, str):
        if size_strategy == "paper":
            return _paper_size_distribution(n)
        q = np.zeros(n + 1)
        q[2:n - 1] = 1.0
        return q / max(q.sum(), 1.0)
    q = np.asarray(size_strategy, dtype=np.float64)
    if q.shape != (n + 1,):
        raise ValueError(
            f"size_strategy must hold n + 1 = {n + 1} probabilities, one per coalition size "
            f"0..{n}. Got an array of shape {q.shape} instead.")
    if n < 4:  # no size left to sample: every stratum is exact
        return np.zeros(n + 1)
    border = np.r_[0, 1, n - 1, n]
    if np.any(q[border] > 0) or q.sum() <= 0:
        raise ValueError(
            f"size_strategy must put all its mass on sizes 2..{n - 2}: the strata of sizes "
            f"0, 1, {n - 1} and {n} are computed exactly. Got mass {q[border].sum():g} on "
            f"those and {q.sum() - q[border].sum():g} on the others.")
    return q / q.sum()


# --------------------------------------------------------------------------- coalitions
def _border_coalitions(n: int) -> np.ndarray:
    """The coalitions that make the border strata exact (Kolpaczki et al., "ExactCalculation").

    The empty set (``phi^-_{i,0}``), the singletons (``phi^+_{i,0}`` and, all
    together, ``phi^-_{i,1}``), the coalitions of size ``n - 1`` (``phi^-_{i,n-1}``
    and ``phi^+_{i,n-2}``) and the full set (``phi^+_{i,n-1}``): ``2n + 2``
    coalitions. For ``n <= 3`` these are all ``2^n`` coalitions (each once).
    """
    if n <= 3:
        return masks_from_codes(np.arange(1 << n, dtype=np.int64), n)
    eye = np.eye(n, dtype=bool)
    return np.concatenate([np.zeros((1, n), bool), eye, ~eye, np.ones((1, n), bool)])


def _exact_strata(n: int) -> np.ndarray:
    """Boolean (2, n): which strata ``(+, l)`` and ``(-, l)`` the border coalitions make exact."""
    exact = np.zeros((2, n), dtype=bool)
    exact[0, [0, max(n - 2, 0), n - 1]] = True
    exact[1, [0, min(1, n - 1), n - 1]] = True
    return exact


def _warm_up(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One sample of every sampled stratum: (coalitions, credited +, credited -).

    Kolpaczki et al. (2024), "WarmUp+" and "WarmUp-" of Alg. 2: for each size
    ``s`` in ``2..n-2`` a random permutation is cut into groups of ``s``
    players; a group ``G`` is a sample of ``phi^+_{i,s-1}`` for its members
    (WarmUp+), and ``N - G`` one of ``phi^-_{i,n-s}`` for them (WarmUp-). The
    last, short group is topped up with random other players, who are not
    credited. Each credited player gets a coalition uniform in its stratum.
    """
    coalitions, plus, minus = [], [], []
    for side in (0, 1):
        for s in range(2, n - 1):
            perm = rng.permutation(n)
            groups = -(-n // s)
            credit = np.zeros((groups, n), dtype=bool)
            credit[np.arange(n) // s, perm] = True
            members = credit.copy()
            r = n % s
            if r:
                members[-1, perm[rng.choice(n - r, s - r, replace=False)]] = True
            none = np.zeros_like(credit)
            coalitions.append(members if side == 0 else ~members)
            plus.append(credit if side == 0 else none)
            minus.append(none if side == 0 else credit)
    return np.concatenate(coalitions), np.concatenate(plus), np.concatenate(minus)


# --------------------------------------------------------------------------- statistics
@dataclass
class _StrataMoments:
    """Count, mean and sum of squared deviations of the strata of one game.

    Strata are numbered ``side * n^2 + i * n + l`` (side 0: ``phi^+_{i,l}``,
    side 1: ``phi^-_{i,l}``). ``index`` None means all ``2 n^2`` strata
    (dense, the engine's running state); otherwise the statistics are those of
    the strata listed (a block's). ``updates[i]`` counts the coalitions credited
    to player ``i``; ``mass`` is the semivalue the samples were drawn for.
    """

    n: int
    index: np.ndarray | None
    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    updates: np.ndarray
    mass: np.ndarray | None = None
    _known: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def zeros(cls, n: int) -> _StrataMoments:
        size = 2 * n * n
        return cls(n, None, np.zeros(size, np.int64), np.zeros(size), np.zeros(size),
                   np.zeros(n, np.int64))

    @classmethod
    def of_coalitions(
        cls, coalitions: np.ndarray, u: np.ndarray, plus: np.ndarray, minus: np.ndarray,
        mass: np.ndarray | None,
    ) -> _StrataMoments:
        """Statistics of utilities ``u`` of ``coalitions`` credited to ``plus`` / ``minus``.

        ``plus[k, i]`` (``i`` in coalition ``k``, of size ``s``) makes ``u[k]`` a
        sample of ``phi^+_{i,s-1}``; ``minus[k, i]`` (``i`` outside) one of
        ``phi^-_{i,s}``. Two passes (mean, then squared deviations): exact.
        """
        n = coalitions.shape[1]
        sizes = coalitions.sum(axis=1)
        kp, ip = np.nonzero(plus)
        km, im = np.nonzero(minus)
        strata = np.concatenate([ip * n + sizes[kp] - 1, n * n + im * n + sizes[km]])
        samples = u[np.concatenate([kp, km])]
        index, inverse = np.unique(strata, return_inverse=True)
        count = np.bincount(inverse, minlength=index.shape[0])
        mean = np.bincount(inverse, weights=samples, minlength=index.shape[0]) / np.maximum(
            count, 1)
        m2 = np.bincount(inverse, weights=(samples - mean[inverse]) ** 2,
                         minlength=index.shape[0])
        updates = (plus | minus).sum(axis=0).astype(np.int64)
        return cls(n, index.astype(np.int64), count.astype(np.int64), mean, m2, updates, mass)

    def merge(self, other: _StrataMoments) -> None:
        """Pool ``other`` into these statistics, in place (exact in any order)."""
        if self.mass is None and other.mass is not None:
            self.mass = np.array(other.mass, dtype=np.float64)
        self.updates = self.updates + other.updates
        if self.index is not None:
            self._densify()
        where: Any = slice(None) if other.index is None else other.index
        self.mean[where], self.m2[where], self.count[where] = merge_moments(
            self.mean[where], self.m2[where], self.count[where],
            other.mean, other.m2, other.count)

    def _densify(self) -> None:
        dense = _StrataMoments.zeros(self.n)
        if self.index is not None:
            dense.count[self.index], dense.mean[self.index] = self.count, self.mean
            dense.m2[self.index] = self.m2
        self.index, self.count, self.mean, self.m2 = None, dense.count, dense.mean, dense.m2

    def known(self, mass: np.ndarray) -> np.ndarray:
        """Players whose strata weighed by ``mass`` all have a sample.

        Cached for the mass of the samples: counts only grow, so a player
        once known stays known and only the others are checked again.
        """
        own = mass is self.mass
        known = self._known if own and self._known is not None else np.zeros(self.n, bool)
        todo = np.flatnonzero(~known)
        if todo.size:
            count = self.strata()[0][:, todo][:, :, mass > 0]
            known = known.copy()
            known[todo] = np.all(count > 0, axis=(0, 2))
        if own:
            self._known = known
        return known

    def strata(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Count, mean and m2 of every stratum, each of shape (2, n, n): side, player, size."""
        if self.index is not None:
            self._densify()
        shape = (2, self.n, self.n)
        return self.count.reshape(shape), self.mean.reshape(shape), self.m2.reshape(shape)


def _variance_of_means(count: np.ndarray, mean: np.ndarray, m2: np.ndarray) -> np.ndarray:
    """Estimated variance of every stratum mean, (2, n, n); 0 for exact and empty strata.

    The unbiased sample variance over the count. A stratum with a single
    sample has no variance estimate of its own; it gets the largest of (a) the
    sample variances of the player's other sampled strata and (b) the variance
    of all the utilities the player's sampled strata received, pooled (the
    spread between the strata means included), which is conservative; ``inf``
    when the player has fewer than two such utilities.
    """
    exact = _exact_strata(count.shape[1])
    c = count.astype(np.float64)
    c[0][:, exact[0]] = 0.0
    c[1][:, exact[1]] = 0.0
    s2 = np.divide(m2, c - 1.0, out=np.zeros_like(m2), where=c >= 2)
    rows = np.flatnonzero((c == 1).any(axis=(0, 2)))
    if rows.size:
        cr, mr, m2r, s2r = c[:, rows], mean[:, rows], m2[:, rows], s2[:, rows]
        total = cr.sum(axis=(0, 2))
        grand = np.einsum("sil,sil->i", cr, mr) / np.maximum(total, 1.0)
        spread = np.einsum("sil,sil->i", cr, (mr - grand[None, :, None]) ** 2)
        spread += np.where(cr > 0, m2r, 0.0).sum(axis=(0, 2))
        pooled = np.divide(spread, total - 1.0, out=np.full(rows.size, np.inf),
                           where=total >= 2)
        fallback = np.maximum(s2r.max(axis=(0, 2)), pooled)
        s2[:, rows] = np.where(cr == 1, fallback[None, :, None], s2r)
    return np.divide(s2, c, out=np.zeros_like(s2), where=c > 0)


def _semivalue_estimates(
    stats: _StrataMoments, mass: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Values, standard errors and whether each is known: ``sum_l m(l) (phi^+ - phi^-)``.

    A value is unknown (NaN) while a stratum its semivalue weighs has no
    sample. ``Var = sum_l m(l)^2 (Var phi^+_{i,l} + Var phi^-_{i,l})``: the strata
    means of one player rest on disjoint samples.
    """
    count, mean, m2 = stats.strata()
    weighed = mass > 0
    known = stats.known(mass)
    diff = np.where(weighed & (count[0] > 0) & (count[1] > 0), mean[0] - mean[1], 0.0)
    values = np.where(known, diff @ mass, np.nan)
    var = np.where(weighed, _variance_of_means(count, mean, m2).sum(axis=0), 0.0)
    stderr = np.where(known, np.sqrt(var @ mass**2), 0.0)
    return values, stderr, known


# --------------------------------------------------------------------------- the sampler
class SVARMSampler(_CoalitionSampler):
    """Stratified SVARM (``sampler="svarm"``): one coalition updates every player's value.

    Kolpaczki, Bengs, Muschalik & Hüllermeier (2024), "Approximating the
    Shapley value without marginal contributions", AAAI, Alg. 2, for any
    semivalue. A semivalue is a weighted sum over coalition sizes ``l`` of the
    mean utility of the coalitions of size ``l + 1`` with player ``i`` minus
    that of size ``l`` without it; each evaluated coalition is a sample of one
    of these *strata* for every player. The strata of sizes 0, 1, ``n - 1`` and
    ``n`` are computed exactly from ``2n + 2`` coalitions, a warm-up gives every
    other stratum one sample, and then coalitions are drawn with a random size
    in ``2..n-2`` (from ``size_strategy``), uniformly given their size.

    The samples do not depend on the semivalue: a fit of any semivalue valuer
    gives the values of all others with ``reweight``, without a new utility
    evaluation.

    Parameters
    ----------
    batch_size : int, default=64
        Coalitions per block (evaluated together; the granularity of stopping
        checks).
    size_strategy : {"paper", "uniform"} or array-like of shape (n + 1,), default="paper"
        Distribution of the size of the sampled coalitions: the paper's
        (proportional to ``1 / min(s, n - s)``, so that the strata of small and
        of large coalitions expect equally many samples), uniform on
        ``2..n-2``, or probabilities of sizes ``0..n`` with no mass on 0, 1,
        ``n - 1`` and ``n``.
    warm_up : bool, default=True
        Give every stratum one sample first (``2 sum_s ceil(n / s)`` coalitions,
        about ``2 n log n``), as the paper does. Without it, values whose
        strata are not all reached stay NaN.

    Notes
    -----
    Departures from the paper: (1) any semivalue, by weighing the strata with
    its mass ``m(l)`` instead of ``1/n``; (2) the empty coalition is evaluated,
    not taken as 0; (3) the size distribution is normalised (it matters for
    ``n = 4`` only), and for ``n <= 3`` the ``2^n`` coalitions are all
    evaluated, which gives exact values; (4) standard errors, which the paper
    does not give: ``sum_l m(l)^2 (s2^+_{i,l} / c^+_{i,l} + s2^-_{i,l} / c^-_{i,l})``
    with the unbiased sample variances of the strata (0 for the exact ones);
    a stratum with a single sample borrows the largest variance seen for the
    player (see :func:`_variance_of_means`). ``counts_`` is the number of
    coalitions credited to a player (the same for all), 0 where the value is NaN;
    ``max_updates`` counts them, the border and warm-up coalitions included.

    Examples
    --------
    >>> from skdvl import BanzhafValuer, ShapleyValuer
    >>> from skdvl.games import SymmetricVotingGame
    >>> sv = ShapleyValuer(utility=SymmetricVotingGame(6), sampler="svarm",
    ...                    max_updates=200, random_state=0).fit()
    >>> sv.values_.round(4)
    array([0.1667, 0.1667, 0.1667, 0.1667, 0.1667, 0.1667])
    >>> sv.reweight(BanzhafValuer()).values_.round(4)
    array([0.3125, 0.3125, 0.3125, 0.3125, 0.3125, 0.3125])
    """


    def __init__(self, batch_size: int = 64, size_strategy: Any = "paper",
                 warm_up: bool = True) -> None:
        check_int(batch_size, "batch_size", 1)
        _check_size_strategy(size_strategy)
        _check_warm_up(warm_up)
        self.batch_size = batch_size
        self.size_strategy = size_strategy
        self.warm_up = warm_up

    def zeros(self, n: int) -> tuple[_StrataMoments]:
        return (_StrataMoments.zeros(n),)

    def weights(self, mass: np.ndarray, n: int) -> np.ndarray:
        """The semivalue's mass, checked; the parameters are checked against ``n`` too."""
        self._check_batch_size()
        probs = _size_distribution(self.size_strategy, n)
        mass = _check_mass(mass, n)
        if not _check_warm_up(self.warm_up) and n >= 4:
            s = np.arange(2, n - 1)
            never = s[(probs[s] == 0) & ((mass[s - 1] > 0) | (mass[s] > 0))]
            if never.size:
                raise ValueError(
                    f"With warm_up=False, size_strategy never draws coalitions of sizes "
                    f"{never.tolist()[:6]}, whose strata this semivalue weighs: its values "
                    "would stay NaN. Give those sizes a probability or set warm_up=True.")
        return mass

    def run_block(
        self, ev: Evaluator, rng: np.random.Generator, weights: Any, block: int,
        start: int = 0, stop: int | None = None,
    ) -> tuple[Any, ...]:  # one _StrataMoments
        """Statistics of samples ``[start, stop)`` of a block (block 0 adds the exact strata).

        The whole block's sizes and coalitions are drawn before slicing, so a
        block drawn in parts gives the same samples; the warm-up is drawn after
        them, in block 0 only.
        """
        n = ev.n
        probs = _size_distribution(self.size_strategy, n)
        m = self.samples_per_block
        if probs.sum() > 0:
            sizes = rng.choice(n + 1, size=m, p=probs)
            drawn = uniform_coalitions(rng, sizes, n)[start:stop]
        else:  # n <= 3: nothing to sample, the border coalitions are all of them
            drawn = np.zeros((0, n), dtype=bool)
        parts = [(drawn, drawn, ~drawn)]
        if block == 0 and start == 0:
            border = _border_coalitions(n)
            parts.insert(0, (border, border, ~border))
            if _check_warm_up(self.warm_up) and n >= 4:
                parts.insert(1, _warm_up(rng, n))
        coalitions, plus, minus = (np.concatenate(p) for p in zip(*parts))
        u = ev.evaluate(coalitions) if coalitions.shape[0] else np.zeros(0)
        return (_StrataMoments.of_coalitions(coalitions, u, plus, minus, weights),)

    def result(self, moments: tuple[Any, ...]) -> ValuationResult:
        """Values (NaN while a weighed stratum has no sample), standard errors and counts."""
        stats = moments[0]
        if stats.mass is None:
            return _unknown(stats.n)
        return self._result(stats, stats.mass)

    def counts(self, moments: tuple[Any, ...]) -> np.ndarray:
        """Coalitions credited to each player; 0 where its value is still unknown."""
        stats = moments[0]
        if stats.mass is None:
            return np.zeros(stats.n, dtype=np.int64)
        return np.where(stats.known(stats.mass), stats.updates, 0)

    def reweight(self, state: Any, mass: np.ndarray) -> ValuationResult:
        """Values of the semivalue ``mass`` from the strata of ``state``: no utility evaluated."""
        stats = state.moments[0]
        return self._result(stats, _check_mass(mass, stats.n))

    def _result(self, stats: _StrataMoments, mass: np.ndarray) -> ValuationResult:
        values, stderr, known = _semivalue_estimates(stats, mass)
        counts = np.where(known, stats.updates, 0)
        return ValuationResult(values, variances=stderr**2 * counts, counts=counts)

    def value_game(self, utility: Any, mass: np.ndarray, *, state: Any,
                   run: Runner) -> tuple[ValuationResult, Any]:
        """Block sampling; for ``n <= 3``, the ``2^n`` coalitions once (exact values)."""
        n = int(utility.n_players)
        if n >= 4:
            return super().value_game(utility, mass, state=state, run=run)
        weights = self.weights(mass, n)
        state = state if state is not None else EngineState.new(self, n)
        if state.next_block == 0:
            ev = run.evaluator(utility)
            state.absorb(self.run_block(ev, run.block_rng(0), weights, 0))
            state.next_block = 1
            state.n_evaluations += ev.n_evaluations
            state.report.merge(ev.report())
        state.interrupted, state.status = False, Status.CONVERGED
        return self.result(state.moments), state


def _check_warm_up(warm_up: Any) -> bool:
    if not isinstance(warm_up, (bool, np.bool_)):
        raise ValueError(
            f"The 'warm_up' parameter of SVARMSampler must be a bool. Got {warm_up!r} instead.")
    return bool(warm_up)


def _check_mass(mass: Any, n: int) -> np.ndarray:
    """A semivalue's mass on the sizes ``0..n-1``: shape (n,), finite, non-negative."""
    m = np.asarray(mass, dtype=np.float64)
    if m.shape != (n,) or not np.all(np.isfinite(m)) or np.any(m < 0):
        raise ValueError(
            f"A semivalue's mass must be {n} finite non-negative weights of the coalition "
            f"sizes 0..{n - 1}. Got an array of shape {m.shape}: {m[:5]}...")
    return m


def _unknown(n: int) -> ValuationResult:
    return ValuationResult(np.full(n, np.nan), counts=np.zeros(n, dtype=np.int64))
