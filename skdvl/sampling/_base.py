"""The sampler protocol: BaseSampler, the Evaluator and Runner it is handed, the states.

The engine (:mod:`skdvl.sampling._engine`) drives every sampler through
:class:`BaseSampler`'s methods only, and a sampler never imports the engine: the
engine hands it an :class:`Evaluator` (batched, cached utility evaluations) for
each block and, in :meth:`BaseSampler.value_game`, a :class:`Runner` whose
methods run block sampling or evaluate a fixed list of coalitions. The states
those return (:class:`EngineState`, :class:`TableState`) are defined here, below
both, so that a sampler can continue one (``warm_start``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from sklearn.base import BaseEstimator

from skdvl._coalitions import check_int
from skdvl._moments import Moments
from skdvl.result import ValuationResult
from skdvl.stopping import Status
from skdvl.utility import FitReport

__all__ = ["BaseSampler", "Evaluator", "Runner", "EngineState", "TableState"]


class Evaluator(Protocol):
    """What a sampler asks of the engine's view of a utility (one per worker and game).

    ``evaluate(masks)`` returns the utilities of the boolean ``(m, n)`` coalitions
    (each evaluated at most once), ``prefixes(perm, lo, hi)`` the utilities
    ``u(perm[:j])`` for ``j`` in ``range(lo, hi)``; ``empty()`` and ``full()`` are
    ``u(empty)`` and ``u(N)``. ``batched`` says whether the utility evaluates many
    coalitions in one call, and ``prefix_step`` how many prefixes of a truncated
    permutation it wants per call. ``walks`` says whether ``walk(bases, orders)``
    gives an incremental walk of prefixes (an object whose ``step(walks)`` returns
    the utilities of the next prefix of each walk listed; None when there is none).
    """

    n: int
    batched: bool
    prefix_step: int
    walks: bool

    def walk(self, bases: np.ndarray, orders: list[np.ndarray]) -> Any: ...

    @property
    def n_evaluations(self) -> int: ...

    def report(self) -> FitReport: ...

    def evaluate(self, masks: np.ndarray) -> np.ndarray: ...

    def prefixes(self, perm: np.ndarray, lo: int, hi: int) -> np.ndarray: ...

    def empty(self) -> float: ...

    def full(self) -> float: ...


class Runner(Protocol):
    """What the engine offers a sampler valuing one game (bound to its seed, criterion, jobs).

    ``sample`` runs seeded block sampling with the criterion until it stops;
    ``table`` evaluates fixed coalitions (the bit codes ``0 .. state.total - 1``
    or the rows of ``masks``); both continue ``state`` when it is not None.
    ``evaluator`` and ``block_rng`` serve a sampler that evaluates a tiny game
    itself; ``stopping()`` builds the game's stopping criterion, for a sampler
    that checks it itself between its own rounds of :meth:`table`.
    """

    stopping: Any

    def sample(self, utility: Any, sampler: Any, weights: Any,
               state: EngineState | None) -> EngineState: ...

    def table(self, utility: Any, state: TableState, *,
              masks: np.ndarray | None = None) -> TableState: ...

    def evaluator(self, utility: Any) -> Evaluator: ...

    def block_rng(self, block: int) -> np.random.Generator: ...


# --------------------------------------------------------------------------- states
@dataclass
class EngineState:
    """Everything needed to continue sampling one game (``warm_start``).

    ``next_block`` is the first block not fully absorbed and ``block_offset`` the
    samples of it already absorbed (a budget of samples may end inside a block).
    """

    n: int
    moments: tuple[Any, ...]  # the sampler's statistics (per-player Moments by default)
    next_block: int = 0
    block_offset: int = 0
    n_samples: int = 0
    n_evaluations: int = 0
    report: FitReport = field(default_factory=FitReport)
    status: Status = Status.PENDING
    interrupted: bool = False

    @classmethod
    def new(cls, sampler: Any, n: int) -> EngineState:
        return cls(n, tuple(sampler.zeros(n)))

    def absorb(self, block: tuple[Moments, ...]) -> None:
        for mine, theirs in zip(self.moments, block):
            mine.merge(theirs)


@dataclass
class TableState:
    """The utilities of a fixed list of coalitions evaluated so far (exact, LOO)."""

    n: int
    total: int
    utilities: np.ndarray
    n_evaluations: int = 0
    report: FitReport = field(default_factory=FitReport)
    status: Status = Status.PENDING
    interrupted: bool = False

    @property
    def done(self) -> int:
        return int(self.utilities.shape[0])


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
    Monte Carlo method (:class:`~skdvl.sampling.ExactSampler`) overrides
    :meth:`value_game`.

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
    #: Updates one sample adds to every value, where that is the same for all values and
    #: samples (a permutation: one marginal contribution per player), else None. The
    #: engine plans its first group of blocks by it (``StoppingCriterion.samples_planned``).
    updates_per_sample: float | None = None

    @property
    def samples_per_block(self) -> int:
        """Samples drawn from one block's generator."""
        return 1

    def min_updates(self, n: int) -> int:
        """Updates per value below which the design is not covered (a grid, all strata).

        A valuer warns when its budget is smaller, and the sampler reports an unknown
        (NaN) standard error for the values that have fewer.
        """
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
    #: the engine's ``_LOCKSTEP_BLOCKS`` whole blocks per call when the utility is batched.
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

    def value_game(self, utility: Any, mass: np.ndarray, *, state: Any,
                   run: Runner) -> tuple[ValuationResult, Any]:
        """Value one game: the result and the state a ``warm_start`` continues from.

        ``run`` is the engine's :class:`Runner` for this game (its seed, stopping
        criterion, jobs and progress bar); ``state`` is what an earlier call
        returned, or None. Block sampling by default; a sampler that is not a
        Monte Carlo method evaluates a table of coalitions (``run.table``).
        """
        n = int(utility.n_players)
        state = run.sample(utility, self, self.weights(mass, n), state)
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


class _CoalitionSampler(BaseSampler):
    """The skeleton of the samplers whose sample is one coalition that updates every value.

    MSR, the regression estimators, stratified SVARM and group testing: a block is
    ``batch_size`` coalitions drawn from the block's generator and evaluated as one
    batch, and ``max_updates="auto"`` budgets ``100 * n`` coalitions.
    """

    per_coalition = True

    @property
    def samples_per_block(self) -> int:
        return int(self.batch_size)

    def _check_batch_size(self) -> None:
        check_int(self.batch_size, "batch_size", 1)


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
            "Banzhaf values).", UserWarning, stacklevel=8)
    return weights

