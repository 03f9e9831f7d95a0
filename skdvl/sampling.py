"""Samplers of coalitions for Monte Carlo semivalues, and permutation truncation.

Every semivalue of player ``i`` is an expectation over the coalition ``T`` that
``i`` joins (``T`` excludes ``i``)::

    phi_i = sum_k m(k) * E_{T uniform among the subsets of size k} [u(T + i) - u(T)]

where ``m(k)`` is the semivalue's mass on coalitions of size ``k`` (``1/n`` for
Shapley, ``C(n-1, k) / 2^(n-1)`` for Banzhaf). A sampler draws ``T`` with some
size distribution ``pi(k)`` (and uniformly given its size); the engine weighs
each marginal by ``m(k) / pi(k)``, which makes every sampler an unbiased
estimator of every semivalue (importance sampling). Samplers differ in how many
marginals one utility evaluation buys and in their variance:

- permutation samplers (Castro et al., 2009): ``n`` marginals for ``n`` new
  evaluations, ``pi(k) = 1/n``; optional truncation (Ghorbani & Zou, 2019);
- "toggle" samplers draw a coalition ``S`` of all ``n`` players and evaluate
  ``S`` and the ``n`` coalitions that differ from it by one player, giving one
  marginal per player for ``n + 1`` evaluations: uniform (Banzhaf), antithetic,
  Owen (Okhrati & Lipani, 2021) and stratified by size;
- MSR (Wang & Jia, 2023, "Data Banzhaf") reuses each evaluation for every
  player, but only estimates Banzhaf values.

Samplers are parameters of the valuers (``sampler="owen"`` or an instance).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import gammaln
from scipy.stats import binom

from skdvl._moments import Moments
from skdvl.result import ValuationResult

__all__ = [
    "PermutationSampler", "AntitheticPermutationSampler", "UniformSampler",
    "AntitheticSampler", "OwenSampler", "StratifiedSampler", "MSRSampler",
    "ExhaustiveSampler", "RelativeTruncation", "FixedTruncation",
]

#: ``evaluate(masks) -> utilities`` and ``prefixes(perm, lo, hi) -> u(perm[:j]) for j in
#: range(lo, hi)``: what a sampler asks of the engine's evaluator.
Evaluator = Any


# --------------------------------------------------------------------------- truncation
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


def log_binom(n: int, k: np.ndarray) -> np.ndarray:
    """log C(n, k), vectorised over ``k``."""
    k = np.asarray(k, dtype=np.float64)
    return gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)


# --------------------------------------------------------------------------- base classes
class _MarginalSampler:
    """A sampler whose blocks yield (player, weighted marginal) pairs.

    The engine's protocol, shared with :class:`MSRSampler`: ``samples_per_block``,
    ``run_block(ev, rng, weights, block, start, stop)`` returning a tuple of
    :class:`~skdvl._moments.Moments` for samples ``[start, stop)`` of the block,
    and ``result(moments)`` turning merged moments into values.
    """

    samples_per_block = 1
    n_moments = 1

    def size_distribution(self, n: int) -> np.ndarray:
        """Probability ``pi(k)`` that the coalition a player joins has size ``k``."""
        raise NotImplementedError

    def marginals(
        self, ev: Evaluator, rng: np.random.Generator, weights: np.ndarray, block: int,
        start: int = 0, stop: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Samples ``[start, stop)`` of one block: (players, weighted marginals)."""
        raise NotImplementedError

    def run_block(
        self, ev: Evaluator, rng: np.random.Generator, weights: np.ndarray, block: int,
        start: int = 0, stop: int | None = None,
    ) -> tuple[Moments, ...]:
        players, values = self.marginals(ev, rng, weights, block, start, stop)
        return (Moments.of_samples(players, values, ev.n),)

    def result(self, moments: tuple[Moments, ...]) -> ValuationResult:
        """Values (NaN for players without samples), variances and counts."""
        m = moments[0]
        return ValuationResult(m.values(), variances=m.variance(), counts=m.count)

    def counts(self, moments: tuple[Moments, ...]) -> np.ndarray:
        return moments[0].count

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"


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


# --------------------------------------------------------------------------- permutations
class PermutationSampler(_MarginalSampler):
    """Uniformly random permutations; each gives one marginal per player.

    Castro, Gomez & Tejada (2009), "Polynomial calculation of the Shapley value
    based on sampling". With ``truncation``, truncated Monte Carlo (Ghorbani &
    Zou, 2019).

    Parameters
    ----------
    truncation : None, float, RelativeTruncation or FixedTruncation
        A float is the ``rtol`` of a :class:`RelativeTruncation`.
    """

    def __init__(self, truncation: Any = None) -> None:
        self.truncation = _check_truncation(truncation)

    def size_distribution(self, n: int) -> np.ndarray:
        return np.full(n, 1.0 / n)

    def _perms(self, rng: np.random.Generator, n: int) -> list[np.ndarray]:
        return [rng.permutation(n)]

    def marginals(self, ev, rng, weights, block, start=0, stop=None):  # type: ignore[no-untyped-def]
        players, margs = [], []
        for perm in self._perms(rng, ev.n)[start:stop]:
            u = _permutation_utilities(ev, perm, self.truncation)
            players.append(perm)
            margs.append(np.diff(u) * weights)
        return np.concatenate(players), np.concatenate(margs)


class AntitheticPermutationSampler(PermutationSampler):
    """Pairs of a random permutation and its reverse (Mitchell et al., 2022,
    "Sampling permutations for Shapley value estimation", JMLR)."""

    samples_per_block = 2

    def _perms(self, rng: np.random.Generator, n: int) -> list[np.ndarray]:
        perm = rng.permutation(n)
        return [perm, perm[::-1].copy()]


# --------------------------------------------------------------------------- toggles
class _ToggleSampler(_MarginalSampler):
    """Draw coalitions S of all players; value every player by toggling it in S."""

    def draw(self, rng: np.random.Generator, n: int, block: int) -> np.ndarray:
        """Boolean (samples_per_block, n) coalitions for this block."""
        raise NotImplementedError

    def coalition_size_distribution(self, n: int) -> np.ndarray:
        """Probability ``q(s)`` of drawing S of size s, s = 0..n."""
        raise NotImplementedError

    def size_distribution(self, n: int) -> np.ndarray:
        # T = S minus i has size j if i in S and |S| = j + 1, or i not in S and |S| = j.
        q = self.coalition_size_distribution(n)
        j = np.arange(n)
        return q[j + 1] * (j + 1) / n + q[j] * (n - j) / n

    def marginals(self, ev, rng, weights, block, start=0, stop=None):  # type: ignore[no-untyped-def]
        n = ev.n
        S = self.draw(rng, n, block)[start:stop]
        m = S.shape[0]
        toggled = np.repeat(S, n, axis=0).reshape(m, n, n)
        toggled[:, np.arange(n), np.arange(n)] ^= True
        u = ev.evaluate(np.concatenate([S, toggled.reshape(m * n, n)]))
        u_s, u_t = u[:m, None], u[m:].reshape(m, n)
        marg = np.where(S, u_s - u_t, u_t - u_s)
        k = np.where(S, S.sum(1, keepdims=True) - 1, S.sum(1, keepdims=True))
        players = np.broadcast_to(np.arange(n), (m, n))
        return players.reshape(-1), (marg * weights[k]).reshape(-1)


class UniformSampler(_ToggleSampler):
    """Coalitions drawn uniformly from the powerset (each player in with prob. 1/2).

    Natural for Banzhaf values (weights 1); for Shapley values the importance
    weights of very small and very large coalitions are huge, so prefer the
    permutation or Owen samplers there.
    """

    def draw(self, rng, n, block):  # type: ignore[no-untyped-def]
        return rng.random((1, n)) < 0.5

    def coalition_size_distribution(self, n: int) -> np.ndarray:
        return binom.pmf(np.arange(n + 1), n, 0.5)


class AntitheticSampler(UniformSampler):
    """Uniform coalitions paired with their complements (antithetic variates)."""

    samples_per_block = 2

    def draw(self, rng, n, block):  # type: ignore[no-untyped-def]
        s = rng.random(n) < 0.5
        return np.stack([s, ~s])


class OwenSampler(_ToggleSampler):
    """Owen sampling: include each player with probability q, q spread over [0, 1].

    Okhrati & Lipani (2021), "A multilinear sampling algorithm to estimate
    Shapley values", ICPR. With q uniform on [0, 1] the coalition a player joins
    has exactly Shapley's size distribution.

    Parameters
    ----------
    n_q : int, default=20
        Number of grid points (``q="grid"``: the midpoints ``(k + 1/2) / n_q``,
        visited in turn, one per sample).
    q : {"grid", "uniform"}, default="grid"
        Grid points in turn, or q drawn uniformly at random per sample.
    antithetic : bool, default=False
        Also evaluate the complement of each coalition (Okhrati & Lipani's
        "halved" antithetic variant).

    Notes
    -----
    The engine weighs each marginal by the exact size distribution of the grid
    (a binomial mixture), so the grid variant stays unbiased for any semivalue.
    """

    def __init__(self, n_q: int = 20, q: str = "grid", antithetic: bool = False) -> None:
        if isinstance(n_q, bool) or not isinstance(n_q, (int, np.integer)) or n_q < 1:
            raise ValueError(f"n_q must be an integer >= 1. Got {n_q!r} instead.")
        if q not in ("grid", "uniform"):
            raise ValueError(f"q must be 'grid' or 'uniform'. Got {q!r} instead.")
        self.n_q, self.q, self.antithetic = int(n_q), q, bool(antithetic)
        self.samples_per_block = 2 if antithetic else 1

    def _q(self, rng: np.random.Generator, block: int) -> float:
        if self.q == "uniform":
            return float(rng.random())
        return (block % self.n_q + 0.5) / self.n_q

    def draw(self, rng, n, block):  # type: ignore[no-untyped-def]
        s = rng.random(n) < self._q(rng, block)
        return np.stack([s, ~s]) if self.antithetic else s[None]

    def coalition_size_distribution(self, n: int) -> np.ndarray:
        s = np.arange(n + 1)
        if self.q == "uniform":
            return np.full(n + 1, 1.0 / (n + 1))
        grid = (np.arange(self.n_q) + 0.5) / self.n_q
        return binom.pmf(s[:, None], n, grid[None, :]).mean(axis=1)


class StratifiedSampler(_ToggleSampler):
    """Coalitions of a size drawn from ``size_strategy``, uniform given their size.

    Stratification by coalition size as in Maleki et al. (2013), "Bounding the
    estimation error of sampling-based Shapley value approximation", and Wu et
    al. (2023), "Variance reduced Shapley value estimation for trustworthy data
    valuation" (VRDS).

    Parameters
    ----------
    size_strategy : {"uniform", "harmonic"} or array-like of shape (n + 1,)
        Distribution of the size of the drawn coalition S (0..n): "uniform"
        (which gives Shapley's size distribution exactly), "harmonic" (mass
        proportional to ``1 / (1 + min(s, n - s))``, favouring small and large
        coalitions, where marginals vary most), or explicit probabilities.
    """

    def __init__(self, size_strategy: Any = "uniform") -> None:
        if isinstance(size_strategy, str) and size_strategy not in ("uniform", "harmonic"):
            raise ValueError(
                "size_strategy must be 'uniform', 'harmonic' or an array of n + 1 "
                f"probabilities. Got {size_strategy!r} instead."
            )
        self.size_strategy = size_strategy

    def coalition_size_distribution(self, n: int) -> np.ndarray:
        s = np.arange(n + 1)
        if isinstance(self.size_strategy, str):
            q = np.ones(n + 1) if self.size_strategy == "uniform" else 1.0 / (
                1.0 + np.minimum(s, n - s))
        else:
            q = np.asarray(self.size_strategy, dtype=np.float64)
            if q.shape != (n + 1,) or np.any(q < 0) or q.sum() <= 0:
                raise ValueError(
                    f"size_strategy must hold n + 1 = {n + 1} non-negative probabilities. "
                    f"Got an array of shape {q.shape} instead."
                )
        return q / q.sum()

    def draw(self, rng, n, block):  # type: ignore[no-untyped-def]
        size = rng.choice(n + 1, p=self.coalition_size_distribution(n))
        s = np.zeros(n, dtype=bool)
        s[rng.permutation(n)[:size]] = True
        return s[None]


# --------------------------------------------------------------------------- MSR, exact
class MSRSampler:
    """Maximum sample reuse (Wang & Jia, 2023, "Data Banzhaf", AISTATS, Alg. 1).

    Each uniformly random coalition S is evaluated once and used for every
    player: the Banzhaf value of i is the mean utility of the samples with i
    minus the mean of those without. Valid for Banzhaf values only.

    Parameters
    ----------
    batch_size : int, default=64
        Coalitions per block (the granularity of stopping checks).
    """

    n_moments = 2
    only_semivalue = "banzhaf"
    label = "MSR sampling"

    def __init__(self, batch_size: int = 64) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1. Got {batch_size!r} instead.")
        self.batch_size = int(batch_size)
        self.samples_per_block = self.batch_size

    def run_block(
        self, ev: Evaluator, rng: np.random.Generator, weights: Any, block: int,
        start: int = 0, stop: int | None = None,
    ) -> tuple[Moments, ...]:
        """Moments of the utilities of samples ``[start, stop)``, with and without each player."""
        masks = (rng.random((self.batch_size, ev.n)) < 0.5)[start:stop]
        u = ev.evaluate(masks)
        return Moments.of_masked(masks, u), Moments.of_masked(~masks, u)

    def result(self, moments: tuple[Moments, ...]) -> ValuationResult:
        """Mean with minus mean without; NaN for a player lacking either side."""
        inside, outside = moments
        both = (inside.count > 0) & (outside.count > 0)
        values = np.where(both, inside.mean - outside.mean, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            var_est = inside.variance() / inside.count + outside.variance() / outside.count
        counts = self.counts(moments)
        variances = np.where(both, var_est * counts, 0.0)
        return ValuationResult(values, variances=variances, counts=counts)

    def counts(self, moments: tuple[Moments, ...]) -> np.ndarray:
        """Samples behind each value: with and without the player (0 if either is missing)."""
        inside, outside = moments
        return np.where((inside.count > 0) & (outside.count > 0),
                        inside.count + outside.count, 0)

    def __repr__(self) -> str:
        return f"MSRSampler(batch_size={self.batch_size})"


class ExhaustiveSampler:
    """Every coalition, each evaluated once: exact values.

    ``2^n`` utility evaluations (n = 10: 1,024), so refused above ``max_players``.
    """

    kind = "exhaustive"

    def __init__(self, max_players: int = 20) -> None:
        if isinstance(max_players, bool) or not isinstance(max_players, (int, np.integer)) \
                or not 1 <= max_players <= 62:
            raise ValueError(
                "max_players must be an integer in [1, 62] (coalitions are coded in 64-bit "
                f"integers). Got {max_players!r} instead.")
        self.max_players = int(max_players)

    def __repr__(self) -> str:
        return f"ExhaustiveSampler(max_players={self.max_players})"


def masks_from_codes(codes: np.ndarray, n: int) -> np.ndarray:
    """Boolean (len(codes), n) coalitions whose bit ``i`` of the code is player ``i``."""
    return ((codes[:, None] >> np.arange(n, dtype=np.int64)) & 1).astype(bool)


def exact_semivalues(u: np.ndarray, n: int, mass: np.ndarray) -> np.ndarray:
    """Semivalues from the utilities of all ``2^n`` coalitions, indexed by bit code.

    ``phi_i = sum_{T not containing i} m(|T|) / C(n-1, |T|) * (u(T + i) - u(T))``.
    """
    codes = np.arange(1 << n, dtype=np.int64)
    sizes = np.zeros(1 << n, dtype=np.int64)
    for i in range(n):
        sizes += (codes >> i) & 1
    per_set = mass / np.exp(log_binom(n - 1, np.arange(n)))
    values = np.empty(n)
    for i in range(n):
        without = codes[((codes >> i) & 1) == 0]
        values[i] = np.dot(per_set[sizes[without]], u[without | (1 << i)] - u[without])
    return values
