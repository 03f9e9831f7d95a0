"""Stopping criteria for Monte Carlo valuation, composable with ``&``, ``|`` and ``~``.

The engine checks its criterion after every block of samples and passes it a
:class:`Progress`. A check answers one of three statuses: keep going
(``PENDING``), stop because the estimate is good enough (``CONVERGED``) or stop
because a budget ran out (``BUDGET``); valuers report the difference in
``converged_``.

Examples
--------
>>> from skdvl.stopping import MaxUpdates, AbsoluteStandardError, MaxTime
>>> criterion = (AbsoluteStandardError(0.01) & MaxUpdates(50)) | MaxTime(60)
>>> criterion
((AbsoluteStandardError(threshold=0.01, fraction=1.0, burn_in=4) & MaxUpdates(50)) | MaxTime(60))
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from enum import IntEnum

import numpy as np
from scipy.stats import spearmanr
from sklearn.base import BaseEstimator

from skdvl.result import ValuationResult

__all__ = [
    "Status", "Progress", "StoppingCriterion", "MaxUpdates", "MinUpdates", "MaxSamples",
    "MaxTime", "AbsoluteStandardError", "RankCorrelation",
]


class Status(IntEnum):
    """The answer of a stopping check."""

    PENDING = 0
    CONVERGED = 1
    BUDGET = 2


class Progress:
    """What a stopping criterion sees: the running result and the work done.

    ``result`` may be given as a callable; it is then built only if a criterion
    asks for it (``counts`` alone is cheap).
    """

    def __init__(self, result: ValuationResult | Callable[[], ValuationResult],
                 n_samples: int, n_evaluations: int, counts: np.ndarray | None = None) -> None:
        self._result = result
        self.n_samples, self.n_evaluations = n_samples, n_evaluations
        self._counts = counts

    @property
    def result(self) -> ValuationResult:
        if callable(self._result):
            self._result = self._result()
        return self._result

    @property
    def counts(self) -> np.ndarray:
        return self._counts if self._counts is not None else self.result.counts


class StoppingCriterion(BaseEstimator):
    """Base class: subclasses implement ``_check`` and ``completion``.

    Criteria are scikit-learn parameters of the valuers: ``get_params`` /
    ``set_params`` reach their arguments (``stopping__n_updates`` in a grid
    search), and composites (``a & b``, ``a | b``, ``~a``) expose their parts as
    ``a`` and ``b``.
    """

    def reset(self) -> None:
        """Called by the engine when sampling (re)starts."""

    def __call__(self, progress: Progress) -> Status:
        return self._check(progress)

    def _check(self, progress: Progress) -> Status:
        raise NotImplementedError

    def completion(self, progress: Progress) -> float:
        """Fraction of the work done, in [0, 1], for progress bars."""
        return 0.0

    def samples_left(self, progress: Progress) -> int | None:
        """Samples after which this criterion stops for sure, or None if unknown.

        The engine draws no more than this, so that a budget of samples is met
        exactly (not rounded up to a block of samples).
        """
        return None

    def samples_planned(self, progress: Progress, updates_per_sample: float) -> int | None:
        """Samples this criterion is expected to take if each sample adds
        ``updates_per_sample`` updates to the most updated value, or None if it cannot say.

        A plan, not a bound (that is :meth:`samples_left`): the engine uses it to group
        the blocks it evaluates together before any sample is in, and a wrong plan only
        costs work (blocks past the stop are dropped, so the values do not change).
        """
        return self.samples_left(progress)

    def __and__(self, other: StoppingCriterion) -> StoppingCriterion:
        return _And(self, other)

    def __or__(self, other: StoppingCriterion) -> StoppingCriterion:
        return _Or(self, other)

    def __invert__(self) -> StoppingCriterion:
        return _Not(self)


class _And(StoppingCriterion):
    """Stops when both stop; converged if either part converged."""

    def __init__(self, a: StoppingCriterion, b: StoppingCriterion) -> None:
        self.a, self.b = a, b

    def reset(self) -> None:
        self.a.reset()
        self.b.reset()

    def _check(self, progress: Progress) -> Status:
        sa, sb = self.a(progress), self.b(progress)
        if sa == Status.PENDING or sb == Status.PENDING:
            return Status.PENDING
        return Status.CONVERGED if Status.CONVERGED in (sa, sb) else Status.BUDGET

    def completion(self, progress: Progress) -> float:
        return min(self.a.completion(progress), self.b.completion(progress))

    def samples_left(self, progress: Progress) -> int | None:
        a, b = self.a.samples_left(progress), self.b.samples_left(progress)
        return None if a is None or b is None else max(a, b)

    def samples_planned(self, progress: Progress, updates_per_sample: float) -> int | None:
        a = self.a.samples_planned(progress, updates_per_sample)
        b = self.b.samples_planned(progress, updates_per_sample)
        return None if a is None or b is None else max(a, b)

    def __repr__(self) -> str:
        return f"({self.a!r} & {self.b!r})"


class _Or(_And):
    """Stops when either stops, with the status of the first that did."""

    def _check(self, progress: Progress) -> Status:
        sa, sb = self.a(progress), self.b(progress)
        return sa if sa != Status.PENDING else sb

    def completion(self, progress: Progress) -> float:
        return max(self.a.completion(progress), self.b.completion(progress))

    def samples_left(self, progress: Progress) -> int | None:
        known = [k for k in (self.a.samples_left(progress), self.b.samples_left(progress))
                 if k is not None]
        return min(known) if known else None

    def samples_planned(self, progress: Progress, updates_per_sample: float) -> int | None:
        # the part that cannot say may stop first: no plan (samples_left's bound stands)
        a = self.a.samples_planned(progress, updates_per_sample)
        b = self.b.samples_planned(progress, updates_per_sample)
        return None if a is None or b is None else min(a, b)

    def __repr__(self) -> str:
        return f"({self.a!r} | {self.b!r})"


class _Not(StoppingCriterion):
    """Stops (as a budget) exactly when the inner criterion would not."""

    def __init__(self, a: StoppingCriterion) -> None:
        self.a = a

    def reset(self) -> None:
        self.a.reset()

    def _check(self, progress: Progress) -> Status:
        return Status.BUDGET if self.a(progress) == Status.PENDING else Status.PENDING

    def samples_planned(self, progress: Progress, updates_per_sample: float) -> int | None:
        return None

    def __repr__(self) -> str:
        return f"~{self.a!r}"


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, bool)


def _check_positive(value: object, name: str) -> None:
    if not (_is_number(value) and value > 0):  # type: ignore[operator]
        raise ValueError(f"{name} must be a number > 0. Got {value!r} instead.")
    if not np.isfinite(value):  # type: ignore[call-overload]
        raise ValueError(f"{name} must be finite. Got {value!r} instead.")


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1. Got {value!r} instead.")
    return int(value)


class MaxUpdates(StoppingCriterion):
    """Stop once some value has ``n_updates`` updates (a budget).

    Parameters
    ----------
    n_updates : int
        Updates (marginal contributions, or MSR samples) of the most updated value.
    """

    def __init__(self, n_updates: int) -> None:
        _positive_int(n_updates, "n_updates")
        self.n_updates = n_updates

    def _check(self, progress: Progress) -> Status:
        counts = progress.counts
        return Status.BUDGET if counts.size and counts.max() >= self.n_updates else (
            Status.PENDING)

    def completion(self, progress: Progress) -> float:
        counts = progress.counts
        return min(1.0, counts.max() / self.n_updates) if counts.size else 0.0

    def _most(self, counts: np.ndarray) -> float:
        return float(counts.max())

    def samples_planned(self, progress: Progress, updates_per_sample: float) -> int | None:
        counts = progress.counts
        if not counts.size or not updates_per_sample > 0:
            return None
        return max(0, math.ceil((self.n_updates - self._most(counts)) / updates_per_sample))

    def __repr__(self) -> str:
        return f"MaxUpdates({self.n_updates})"


class MinUpdates(MaxUpdates):
    """Stop once every value has at least ``n_updates`` updates (a budget).

    Parameters
    ----------
    n_updates : int
        Updates of the least updated value.
    """

    def _check(self, progress: Progress) -> Status:
        counts = progress.counts
        return Status.BUDGET if counts.size and counts.min() >= self.n_updates else (
            Status.PENDING)

    def completion(self, progress: Progress) -> float:
        counts = progress.counts
        return min(1.0, counts.min() / self.n_updates) if counts.size else 0.0

    def _most(self, counts: np.ndarray) -> float:
        return float(counts.min())

    def __repr__(self) -> str:
        return f"MinUpdates({self.n_updates})"


class MaxSamples(StoppingCriterion):
    """Stop after exactly ``n_samples`` samples (permutations, coalitions) in all.

    The engine never draws more, even when the budget ends inside a block.

    Parameters
    ----------
    n_samples : int
        Samples per game.
    """

    def __init__(self, n_samples: int) -> None:
        _positive_int(n_samples, "n_samples")
        self.n_samples = n_samples

    def _check(self, progress: Progress) -> Status:
        return Status.BUDGET if progress.n_samples >= self.n_samples else Status.PENDING

    def completion(self, progress: Progress) -> float:
        return min(1.0, progress.n_samples / self.n_samples)

    def samples_left(self, progress: Progress) -> int | None:
        return max(self.n_samples - progress.n_samples, 0)

    def __repr__(self) -> str:
        return f"MaxSamples({self.n_samples})"


class MaxTime(StoppingCriterion):
    """Stop after ``seconds`` of wall time since sampling started.

    Note that results then depend on the machine's speed, not only on the seed.

    Parameters
    ----------
    seconds : float
        Wall time, finite and > 0.
    """

    def __init__(self, seconds: float) -> None:
        _check_positive(seconds, "seconds")
        self.seconds = seconds
        self._start: float | None = None

    def reset(self) -> None:
        self._start = time.monotonic()

    def _elapsed(self) -> float:
        if self._start is None:
            self.reset()
        return time.monotonic() - (self._start or 0.0)

    def _check(self, progress: Progress) -> Status:
        return Status.BUDGET if self._elapsed() >= self.seconds else Status.PENDING

    def completion(self, progress: Progress) -> float:
        return min(1.0, self._elapsed() / self.seconds)

    def __repr__(self) -> str:
        return f"MaxTime({self.seconds})"


class AbsoluteStandardError(StoppingCriterion):
    """Converged once ``stderr < threshold`` for a ``fraction`` of the values.

    Values with fewer than ``burn_in`` updates never count as converged (their
    variance estimate is meaningless).

    Parameters
    ----------
    threshold : float
        Standard error below which a value counts as converged (finite, > 0).
    fraction : float, default=1.0
        Share of the values that must have converged, in (0, 1].
    burn_in : int, default=4
        Updates a value needs before its standard error counts.
    """

    def __init__(self, threshold: float, fraction: float = 1.0, burn_in: int = 4) -> None:
        _check_positive(threshold, "threshold")
        if not (_is_number(fraction) and 0 < fraction <= 1):
            raise ValueError(f"fraction must be in (0, 1]. Got {fraction!r} instead.")
        self.threshold, self.fraction = threshold, fraction
        _positive_int(burn_in, "burn_in")
        self.burn_in = burn_in

    def _ok(self, progress: Progress) -> np.ndarray:
        r = progress.result
        return (r.stderr < self.threshold) & (r.counts >= self.burn_in)

    def _check(self, progress: Progress) -> Status:
        ok = self._ok(progress)
        return Status.CONVERGED if ok.size and ok.mean() >= self.fraction else Status.PENDING

    def completion(self, progress: Progress) -> float:
        ok = self._ok(progress)
        return min(1.0, ok.mean() / self.fraction) if ok.size else 0.0

    def __repr__(self) -> str:
        return (f"AbsoluteStandardError(threshold={self.threshold}, fraction={self.fraction}, "
                f"burn_in={self.burn_in})")


class RankCorrelation(StoppingCriterion):
    """Converged once the ranking of the values stops moving.

    Every ``interval`` updates (per value), the Spearman correlation between the
    current values and those at the previous checkpoint is computed; sampling
    stops when it exceeds ``1 - rtol``, after ``burn_in`` updates.

    Parameters
    ----------
    rtol : float, default=0.01
        Converged once the correlation exceeds ``1 - rtol``; in (0, 1).
    burn_in : int, default=10
        Updates of every value before the first comparison.
    interval : int, default=10
        Updates between comparisons.
    """

    def __init__(self, rtol: float = 0.01, burn_in: int = 10, interval: int = 10) -> None:
        if not (_is_number(rtol) and 0 < rtol < 1):
            raise ValueError(f"rtol must be in (0, 1). Got {rtol!r} instead.")
        self.rtol = rtol
        _positive_int(burn_in, "burn_in")
        self.burn_in = burn_in
        _positive_int(interval, "interval")
        self.interval = interval
        self.reset()

    def reset(self) -> None:
        self._previous: np.ndarray | None = None
        self._checkpoint = 0
        self._corr = 0.0

    def _check(self, progress: Progress) -> Status:
        r = progress.result
        level = int(r.counts.min()) if r.counts.size else 0
        if level < max(self.burn_in, self._checkpoint + self.interval):
            return Status.PENDING
        if self._previous is not None:
            corr = spearmanr(self._previous, r.values).statistic
            self._corr = 1.0 if np.isnan(corr) else float(corr)
        self._previous, self._checkpoint = r.values.copy(), level
        return Status.CONVERGED if self._corr > 1 - self.rtol else Status.PENDING

    def completion(self, progress: Progress) -> float:
        return float(np.clip(self._corr / (1 - self.rtol), 0.0, 1.0))

    def __repr__(self) -> str:
        return f"RankCorrelation(rtol={self.rtol}, burn_in={self.burn_in})"
