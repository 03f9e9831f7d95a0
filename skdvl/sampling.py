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
  player, but only estimates (weighted) Banzhaf values;
- the regression estimators of :mod:`skdvl._regression` (KernelSHAP, Leverage
  SHAP, Kernel Banzhaf, regression-adjusted MSR) and stratified SVARM
  (:mod:`skdvl._svarm`) also use every evaluation for every player, and keep
  their own statistics instead of per-player means.

Samplers are parameters of the valuers (``sampler="owen"`` or an instance).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.special import gammaln
from scipy.stats import binom
from sklearn.base import BaseEstimator

from skdvl._moments import Moments
from skdvl._truncation import (
    FixedTruncation,
    RelativeTruncation,
    _check_truncation,
    _lockstep_utilities,
    _permutation_utilities,
)
from skdvl.result import ValuationResult

__all__ = [
    "BaseSampler", "PermutationSampler", "AntitheticPermutationSampler", "UniformSampler",
    "AntitheticSampler", "OwenSampler", "StratifiedSampler", "MSRSampler", "ExactSampler",
    "RelativeTruncation", "FixedTruncation", "KernelSampler", "LeverageSampler",
    "RegressionMSRSampler", "SVARMSampler",
]

#: ``evaluate(masks) -> utilities`` and ``prefixes(perm, lo, hi) -> u(perm[:j]) for j in
#: range(lo, hi)``: what a sampler asks of the engine's evaluator.
Evaluator = Any


def _log_binom(n: int, k: np.ndarray) -> np.ndarray:
    """log C(n, k), vectorised over ``k``."""
    k = np.asarray(k, dtype=np.float64)
    return gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)


# --------------------------------------------------------------------------- the protocol
class BaseSampler(BaseEstimator):
    """What every sampler answers, so that valuers never ask which one they hold.

    A valuer hands a sampler one game at a time through :meth:`value_game`, with
    the semivalue's mass ``m(k)`` on coalition sizes. The default implementation
    is block sampling: :meth:`weights` binds the sampler to the semivalue (and
    refuses one it cannot estimate), the engine draws blocks of
    ``samples_per_block`` samples, each from its own seeded generator, and
    :meth:`run_block` evaluates a block's coalitions (as one batch of masks where
    it can, so that a utility that fits many coalitions at once gets them
    together) and returns per-player :class:`~skdvl._moments.Moments`;
    :meth:`result` turns the merged moments into values. A sampler that is not a
    Monte Carlo method (:class:`ExactSampler`) overrides :meth:`value_game`.

    Adding a sampler is one subclass (and, to name it by a string, one entry in
    the valuers' ``_samplers``). Parameters are scikit-learn parameters:
    ``ShapleyValuer(sampler=OwenSampler(n_q=20))`` can be searched over
    ``sampler__n_q`` and prints as it was built.
    """

    n_moments = 1
    #: True when a sample is one coalition that updates every player's value (MSR,
    #: the regression and stratified estimators), False when it is one marginal
    #: contribution per player (permutations, toggles). ``max_updates="auto"``
    #: budgets ``100 * n`` coalitions for the first kind and 100 updates for the
    #: second: about ``100 * n`` utility evaluations either way.
    per_coalition = False

    @property
    def samples_per_block(self) -> int:
        """Samples drawn from one block's generator."""
        return 1

    def zeros(self, n: int) -> tuple[Any, ...]:
        """The statistics of a game before any sample: objects with ``merge(other)``.

        Per-player :class:`~skdvl._moments.Moments` by default; a sampler whose
        estimate is not a per-player mean returns its own statistics.
        """
        return tuple(Moments.zeros(n) for _ in range(self.n_moments))

    def weights(self, mass: np.ndarray, n: int) -> Any:
        """Bind to a semivalue: what :meth:`run_block` needs, or raise if it cannot estimate it."""
        raise NotImplementedError

    def run_block(
        self, ev: Evaluator, rng: np.random.Generator, weights: Any, block: int,
        start: int = 0, stop: int | None = None,
    ) -> tuple[Moments, ...]:
        """Moments of samples ``[start, stop)`` of block ``block`` (drawn from ``rng``)."""
        raise NotImplementedError

    #: True when :meth:`run_blocks` gains from several blocks at once (it evaluates
    #: their coalitions together): the engine then hands it up to
    #: ``_engine._LOCKSTEP_BLOCKS`` whole blocks per call when the utility is batched.
    lockstep = False

    def run_blocks(
        self, ev: Evaluator, items: list[tuple[np.random.Generator, int]], weights: Any,
    ) -> list[tuple[Moments, ...]]:
        """Moments of several whole blocks, ``items`` being ``(rng, block)`` pairs.

        Equal, block for block, to :meth:`run_block` on each: a sampler that
        overrides it may only change how the coalitions are evaluated (together,
        in fewer batched calls), never which.
        """
        return [self.run_block(ev, rng, weights, block) for rng, block in items]

    def result(self, moments: tuple[Moments, ...]) -> ValuationResult:
        """Values (NaN for players without samples), variances and counts."""
        m = moments[0]
        return ValuationResult(m.values(), variances=m.variance(), counts=m.count)

    def counts(self, moments: tuple[Moments, ...]) -> np.ndarray:
        """Samples behind each value so far."""
        return moments[0].count

    def value_game(
        self, utility: Any, mass: np.ndarray, *, state: Any, entropy: int, game: int,
        stopping: Callable[[], Any], n_jobs: Any, verbose: int, desc: str,
    ) -> tuple[ValuationResult, Any]:
        """Value one game: the result and the state a ``warm_start`` continues from.

        ``stopping`` makes the criterion (a factory: samplers that do not sample
        never build it); ``state`` is what an earlier call returned, or None.
        """
        from skdvl._engine import run_sampling

        n = int(utility.n_players)
        state = run_sampling(
            utility, self, self.weights(mass, n), stopping(), entropy=entropy, game=game,
            state=state, n_jobs=n_jobs, verbose=verbose, desc=desc)
        return self.result(state.moments), state

    def reweight(self, state: Any, mass: np.ndarray) -> ValuationResult:
        """Values of another semivalue (``mass``) from the samples of ``state``, no new fits.

        Only samplers whose statistics do not depend on the semivalue can
        (:class:`ExactSampler`, :class:`SVARMSampler`,
        :class:`RegressionMSRSampler`); the others raise ``ValueError``.
        """
        raise ValueError(
            f"{self!r} weighs its samples for the semivalue it was fitted for, so they cannot "
            "give another semivalue. Fit with sampler='svarm', 'regression_msr' or 'exact', "
            "whose samples serve every semivalue.")


class _MarginalSampler(BaseSampler):
    """A sampler whose blocks yield (player, weighted marginal) pairs.

    The marginal of a player joining a coalition of size ``k`` is weighed by
    ``m(k) / pi(k)`` (importance sampling), ``pi`` being :meth:`size_distribution`.
    """

    def size_distribution(self, n: int) -> np.ndarray:
        """Probability ``pi(k)`` that the coalition a player joins has size ``k``."""
        raise NotImplementedError

    def weights(self, mass: np.ndarray, n: int) -> np.ndarray:
        return _importance_weights(mass, self, n)

    def marginals(
        self, ev: Evaluator, rng: np.random.Generator, weights: np.ndarray, block: int,
        start: int = 0, stop: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Samples ``[start, stop)`` of one block: (players, weighted marginals)."""
        raise NotImplementedError

    def run_block(
        self, ev: Evaluator, rng: np.random.Generator, weights: Any, block: int,
        start: int = 0, stop: int | None = None,
    ) -> tuple[Moments, ...]:
        players, values = self.marginals(ev, rng, weights, block, start, stop)
        return (Moments.of_samples(players, values, ev.n),)


_RARE = 1e-4  # a coalition size drawn less often than this is, in practice, never drawn


def _importance_weights(mass: np.ndarray, sampler: Any, n: int) -> np.ndarray:
    """``m(k) / pi(k)``: unbiased weights of a sampler's marginals for a semivalue."""
    pi = sampler.size_distribution(n)
    missing = (pi <= 0) & (mass > 0)
    if np.any(missing):
        raise ValueError(
            f"{sampler!r} never draws coalitions of sizes {np.flatnonzero(missing)[:5]}, "
            "which this semivalue weighs; choose another sampler."
        )
    weights = np.divide(mass, pi, out=np.zeros(n), where=pi > 0)
    unseen = mass[pi < _RARE].sum()
    if unseen > 0.01:
        warnings.warn(
            f"{sampler!r} draws coalitions of sizes {np.flatnonzero(pi < _RARE)[:6]}... less "
            f"than once in {1 / _RARE:.0f} samples, yet they carry {unseen:.0%} of this "
            f"semivalue's weight at n = {n}: estimates and their standard errors are "
            "unreliable. Prefer the permutation, owen or stratified samplers (or msr for "
            "Banzhaf values).", UserWarning, stacklevel=7)
    return weights


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
        _check_truncation(truncation)
        self.truncation = truncation

    def size_distribution(self, n: int) -> np.ndarray:
        return np.full(n, 1.0 / n)

    def _perms(self, rng: np.random.Generator, n: int) -> list[np.ndarray]:
        return [rng.permutation(n)]

    lockstep = True

    def marginals(self, ev, rng, weights, block, start=0, stop=None):  # type: ignore[no-untyped-def]
        players, margs = [], []
        truncation = _check_truncation(self.truncation)
        for perm in self._perms(rng, ev.n)[start:stop]:
            u = _permutation_utilities(ev, perm, truncation)
            players.append(perm)
            margs.append(np.diff(u) * weights)
        return np.concatenate(players), np.concatenate(margs)

    def run_blocks(self, ev, items, weights):  # type: ignore[no-untyped-def]
        """The permutations of all the blocks walked in lockstep (a batched utility).

        Every round evaluates the next few prefixes of each permutation not yet
        truncated, all in one batch; each permutation truncates on its own
        utilities, exactly where it would alone (:func:`_lockstep_utilities`).
        """
        if not ev.batched or len(items) < 2:
            return super().run_blocks(ev, items, weights)
        perms = [self._perms(rng, ev.n) for rng, _ in items]
        flat = [p for block in perms for p in block]
        u = _lockstep_utilities(ev, flat, _check_truncation(self.truncation))
        out, row = [], 0
        for block in perms:
            k = len(block)
            margs = np.diff(u[row:row + k], axis=1) * weights
            out.append((Moments.of_samples(np.concatenate(block), margs.reshape(-1), ev.n),))
            row += k
        return out


class AntitheticPermutationSampler(PermutationSampler):
    """Pairs of a random permutation and its reverse (Mitchell et al., 2022,
    "Sampling permutations for Shapley value estimation", JMLR).

    Parameters
    ----------
    truncation : None, float, RelativeTruncation or FixedTruncation, default=None
        As for :class:`PermutationSampler`.
    """

    @property
    def samples_per_block(self) -> int:
        return 2

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

    @property
    def samples_per_block(self) -> int:
        return 2

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
        _check_int(n_q, "n_q", 1)
        if q not in ("grid", "uniform"):
            raise ValueError(f"q must be 'grid' or 'uniform'. Got {q!r} instead.")
        self.n_q, self.q, self.antithetic = n_q, q, antithetic

    @property
    def samples_per_block(self) -> int:
        return 2 if self.antithetic else 1

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
class MSRSampler(BaseSampler):
    """Maximum sample reuse (Wang & Jia, 2023, "Data Banzhaf", AISTATS, Alg. 1).

    Each random coalition S is evaluated once and used for every player: the
    Banzhaf value of i is the mean utility of the samples with i minus the
    mean of those without. Valid for (weighted) Banzhaf values only: for the
    weighted Banzhaf value of weight ``w`` each player is in S with
    probability ``w`` (Li & Yu, 2023, "Robust data valuation with weighted
    Banzhaf values", NeurIPS), since given that i is in (or out of) S, the
    other players of S are then distributed as the semivalue weighs them.

    Parameters
    ----------
    batch_size : int, default=64
        Coalitions per block (the granularity of stopping checks).
    """

    n_moments = 2
    per_coalition = True

    def __init__(self, batch_size: int = 64) -> None:
        _check_int(batch_size, "batch_size", 1)
        self.batch_size = batch_size

    @property
    def samples_per_block(self) -> int:
        return int(self.batch_size)

    def weights(self, mass: np.ndarray, n: int) -> float:
        """The inclusion probability ``w`` of a (weighted) Banzhaf mass; refuse any other."""
        _check_int(self.batch_size, "batch_size", 1)
        w = _banzhaf_weight(mass, n)
        if w is None:
            raise ValueError(
                "MSR sampling estimates (weighted) Banzhaf values only; this valuer's "
                "semivalue is another. Choose another sampler.")
        return w

    def run_block(
        self, ev: Evaluator, rng: np.random.Generator, weights: Any, block: int,
        start: int = 0, stop: int | None = None,
    ) -> tuple[Moments, ...]:
        """Moments of the utilities of samples ``[start, stop)``, with and without each player."""
        masks = (rng.random((self.samples_per_block, ev.n)) < weights)[start:stop]
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


class ExactSampler(BaseSampler):
    """Every coalition, each evaluated once: exact values (``sampler="exact"``).

    ``2^n`` utility evaluations (n = 10: 1,024), so refused above ``max_players``.
    An interrupted enumeration keeps the coalitions evaluated so far and
    ``warm_start`` continues it.

    Parameters
    ----------
    max_players : int, default=20
        The largest game to enumerate; at most 62 (coalitions are 64-bit codes).

    Examples
    --------
    >>> from skdvl import ShapleyValuer
    >>> from skdvl.games import SymmetricVotingGame
    >>> from skdvl.sampling import ExactSampler
    >>> game = SymmetricVotingGame(n_players=22)
    >>> ShapleyValuer(utility=game, sampler=ExactSampler(max_players=22))
    ShapleyValuer(sampler=ExactSampler(max_players=22),
                  utility=SymmetricVotingGame(n_players=22))
    """

    def __init__(self, max_players: int = 20) -> None:
        _check_int(max_players, "max_players", 1, 62)
        self.max_players = max_players

    def value_game(
        self, utility: Any, mass: np.ndarray, *, state: Any, entropy: int, game: int,
        stopping: Callable[[], Any], n_jobs: Any, verbose: int, desc: str,
    ) -> tuple[ValuationResult, Any]:
        from skdvl._engine import TableState, evaluate_coalitions

        n = int(utility.n_players)
        _check_int(self.max_players, "max_players", 1, 62)
        if n > self.max_players:
            raise ValueError(
                f"sampler='exact' needs 2^n utility evaluations; n = {n} players is more than "
                f"max_players = {self.max_players}. Use a Monte Carlo sampler, or pass "
                f"sampler=ExactSampler(max_players={n}) to insist."
            )
        state = state if state is not None else TableState(n, 1 << n, np.empty(0))
        state = evaluate_coalitions(utility, state, n_jobs=n_jobs, verbose=verbose, desc=desc)
        return self.reweight(state, mass), state

    def reweight(self, state: Any, mass: np.ndarray) -> ValuationResult:
        """Exact values of any semivalue from the table of all utilities."""
        n = state.n
        if state.done < state.total:
            return ValuationResult(np.full(n, np.nan), counts=np.zeros(n, np.int64))
        values = _exact_semivalues(state.utilities, n, mass)
        return ValuationResult(values, counts=np.full(n, 1 << (n - 1), np.int64))


class _LeaveOneOut(BaseSampler):
    """The ``n + 1`` coalitions of leave-one-out: ``u(N) - u(N - i)`` (mass ignored)."""

    def value_game(
        self, utility: Any, mass: Any, *, state: Any, entropy: int, game: int,
        stopping: Callable[[], Any], n_jobs: Any, verbose: int, desc: str,
    ) -> tuple[ValuationResult, Any]:
        from skdvl._engine import TableState, evaluate_coalitions

        n = int(utility.n_players)
        masks = np.ones((n + 1, n), dtype=bool)
        masks[np.arange(1, n + 1), np.arange(n)] = False
        state = state if state is not None else TableState(n, n + 1, np.empty(0))
        state = evaluate_coalitions(utility, state, masks=masks, n_jobs=n_jobs,
                                    verbose=verbose, desc=desc)
        u = np.full(n + 1, np.nan)
        u[:state.done] = state.utilities
        values = u[0] - u[1:]
        return ValuationResult(values, counts=np.isfinite(values).astype(np.int64)), state


def _check_int(value: Any, name: str, low: int, high: int | None = None) -> None:
    """Refuse a non-integer (or bool) ``value`` outside ``[low, high]``, naming it."""
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool) and (
        value >= low and (high is None or value <= high))
    if not ok:
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        extra = " (coalitions are coded in 64-bit integers)" if high == 62 else ""
        raise ValueError(f"{name} must be an integer {bounds}{extra}. Got {value!r} instead.")


def _banzhaf_weight(mass: np.ndarray, n: int) -> float | None:
    """``w`` if ``mass`` is the weighted Banzhaf mass binomial(n - 1, w), else None."""
    if n == 1:
        return 0.5
    w = round(float(np.dot(np.arange(n), mass) / (n - 1)), 12)  # 0.5 stays 0.5 exactly
    if not 0 < w < 1:
        return None
    ok = np.allclose(mass, binom.pmf(np.arange(n), n - 1, w), rtol=1e-9, atol=1e-12)
    return w if ok else None


def _uniform_coalitions(rng: np.random.Generator, sizes: np.ndarray, n: int) -> np.ndarray:
    """Boolean (len(sizes), n): row ``k`` uniform among the coalitions of size ``sizes[k]``."""
    order = np.argsort(rng.random((sizes.shape[0], n)), axis=1)
    masks = np.zeros((sizes.shape[0], n), dtype=bool)
    np.put_along_axis(masks, order, np.arange(n)[None, :] < sizes[:, None], axis=1)
    return masks


def _masks_from_codes(codes: np.ndarray, n: int) -> np.ndarray:
    """Boolean (len(codes), n) coalitions whose bit ``i`` of the code is player ``i``."""
    return ((codes[:, None] >> np.arange(n, dtype=np.int64)) & 1).astype(bool)


def _exact_semivalues(u: np.ndarray, n: int, mass: np.ndarray) -> np.ndarray:
    """Semivalues from the utilities of all ``2^n`` coalitions, indexed by bit code.

    ``phi_i = sum_{T not containing i} m(|T|) / C(n-1, |T|) * (u(T + i) - u(T))``.
    """
    codes = np.arange(1 << n, dtype=np.int64)
    sizes = np.zeros(1 << n, dtype=np.int64)
    for i in range(n):
        sizes += (codes >> i) & 1
    per_set = mass / np.exp(_log_binom(n - 1, np.arange(n)))
    values = np.empty(n)
    for i in range(n):
        without = codes[((codes >> i) & 1) == 0]
        values[i] = np.dot(per_set[sizes[without]], u[without | (1 << i)] - u[without])
    return values


from skdvl._regression import (  # noqa: E402  (they subclass BaseSampler, defined above)
    KernelSampler,
    LeverageSampler,
    RegressionMSRSampler,
)
from skdvl._svarm import SVARMSampler  # noqa: E402
