"""The utility protocol and what every utility shares: fit reports, checks, copies.

A utility maps a coalition of players (training rows) to a number. Any object
with an ``n_players`` attribute and ``__call__(subset) -> float`` is one (the
:class:`Utility` protocol); an optional batched ``evaluate(masks)`` lets the
engine evaluate many coalitions in one call. This module holds the protocol,
the :class:`FitReport` of failed and warning fits (and :func:`report_fit_problems`,
which turns it into one warning per kind), :class:`CheckedUtility` for custom
utilities, the checks of the options the model utilities share, and
:class:`WrapperCopyMixin`, the one way a utility that wraps another is copied.
"""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

__all__ = ["Utility", "UtilityFitWarning", "FitReport", "CheckedUtility",
           "WrapperCopyMixin", "report_fit_problems"]

_W = TypeVar("_W", bound="WrapperCopyMixin")
_R = TypeVar("_R", bound="OwnReportMixin")


@runtime_checkable
class Utility(Protocol):
    """What the valuation engine needs from a cooperative game.

    Attributes
    ----------
    n_players : int
        Number of players; coalitions are subsets of ``range(n_players)``.

    Notes
    -----
    ``__call__(subset)`` receives a 1-D integer array of distinct player
    indices (possibly empty, in any order) and returns a float. A utility may
    also define ``evaluate(masks)``, taking a boolean array of shape
    ``(m, n_players)`` (row ``k`` is coalition ``k``) and returning ``m``
    floats; the engine then evaluates coalitions in batches.
    """

    n_players: int

    def __call__(self, subset: np.ndarray) -> float: ...


class UtilityFitWarning(UserWarning):
    """Some utility evaluations failed (a fit raised, a score was NaN or infinite)."""


@dataclass
class FitReport:
    """What happened in the utility evaluations of one process: failures and warnings.

    ``warned`` maps each warning category raised inside the fits to the number of
    fits that raised it and its first message. Workers return their reports to
    the main process, which merges them; a valuer turns the total into one
    warning per kind (see :func:`report_fit_problems`).
    """

    n_fits: int = 0
    n_errors: int = 0
    first_error: str | None = None
    warned: dict[type[Warning], tuple[int, str]] = field(default_factory=dict)

    def copy(self) -> FitReport:
        return replace(self, warned=dict(self.warned))

    def merge(self, other: FitReport) -> None:
        self.n_fits += other.n_fits
        self.n_errors += other.n_errors
        self.first_error = self.first_error or other.first_error
        for category, (count, message) in other.warned.items():
            mine = self.warned.get(category, (0, message))
            self.warned[category] = (mine[0] + count, mine[1])

    def since(self, earlier: FitReport) -> FitReport:
        """The part of this report that came after ``earlier`` (a copy taken then)."""
        warned = {}
        for category, (count, message) in self.warned.items():
            new = count - earlier.warned.get(category, (0, ""))[0]
            if new:
                warned[category] = (new, message)
        return FitReport(
            self.n_fits - earlier.n_fits, self.n_errors - earlier.n_errors,
            self.first_error if self.n_errors > earlier.n_errors else None, warned)

    def failure(self, message: str) -> None:
        self.n_errors += 1
        if self.first_error is None:
            self.first_error = message

    def record(self, caught: list[warnings.WarningMessage]) -> None:
        """Count the warnings of one fit: each category once, with its first message."""
        for category in dict.fromkeys(w.category for w in caught):
            message = next(str(w.message) for w in caught if w.category is category)
            count, first = self.warned.get(category, (0, message))
            self.warned[category] = (count + 1, first)


def _check_score(name: str, value: Any) -> float:
    """``value`` as a finite float, else a ValueError naming the parameter."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number. Got {value!r} instead.") from None
    if not np.isfinite(out):
        raise ValueError(
            f"{name} must be a finite number (it stands in for utilities that could not be "
            f"computed). Got {value!r} instead.")
    return out


def _check_fit_options(batch_fit: Any, error_score: Any) -> None:
    """Refuse a ``batch_fit`` or ``error_score`` a model utility cannot take, naming it."""
    if not (batch_fit == "auto" or isinstance(batch_fit, (bool, np.bool_))):
        raise ValueError(
            f"batch_fit must be 'auto', True or False. Got {batch_fit!r} instead.")
    if not (error_score is None or error_score == "raise"
            or isinstance(error_score, (int, float, np.number))):
        raise ValueError(
            f"error_score must be 'raise', a number or None. Got {error_score!r} instead.")


def _is_finite_dense(X: Any) -> bool:
    """Whether ``X`` is a dense numeric array without NaN or infinity."""
    if hasattr(X, "tocsr") or hasattr(X, "sparse"):
        return False
    try:
        arr = np.asarray(X)
    except Exception:  # noqa: BLE001 - e.g. ragged input: not dense
        return False
    return arr.dtype.kind in "biuf" and bool(np.all(np.isfinite(arr)))


def _take(X: Any, rows: np.ndarray) -> Any:
    """Rows of an array, sparse matrix or DataFrame."""
    if hasattr(X, "iloc"):
        return X.iloc[rows]
    return X[rows]


def report_fit_problems(report: FitReport, n_evaluations: int, owner: str) -> None:
    """Raise when every fit failed; else one warning for failures, one for fit warnings.

    Raises
    ------
    ValueError
        When all of ``report.n_fits > 0`` fits failed: no value was computed.
    """
    if report.n_fits and report.n_errors >= report.n_fits:
        raise ValueError(
            f"All the {report.n_fits} utility evaluations of {owner} failed, so no value was "
            f"computed. The first error was: {report.first_error}. Pass error_score='raise' "
            "to see the traceback.")
    if report.n_errors:
        warnings.warn(
            f"{report.n_errors} of {n_evaluations} utility evaluations raised or scored "
            f"NaN/inf and were given error_score. The first error was: {report.first_error}. "
            "Pass error_score='raise' to see the traceback.",
            UtilityFitWarning, stacklevel=4,
        )
    for category, (count, message) in report.warned.items():
        warnings.warn(
            f"{count} of {report.n_fits} utility fits raised {category.__name__} (shown "
            f"once here, not per fit). The first: {message}",
            category, stacklevel=4,
        )


class CheckedUtility:
    """A custom utility whose non-finite or non-numeric outputs count as failures.

    Wraps any object of the :class:`Utility` protocol: a coalition whose utility
    is NaN, infinite or raises is scored ``default_score`` and recorded in
    ``report``, so that valuers warn about (or refuse) it as they do for failed
    model fits. ``error_score="raise"`` lets the exception through.
    """

    def __init__(self, utility: Any, default_score: float = 0.0,
                 error_score: Any = None) -> None:
        self.utility = utility
        self.n_players = utility.n_players
        self.default_score = _check_score("default_score", default_score)
        self.error_score = error_score
        self.report = FitReport()
        self.n_evaluations = 0

    @classmethod
    def wrap(cls, utility: Any, default_score: float = 0.0,
             error_score: Any = None) -> CheckedUtility:
        """Wrap ``utility``, keeping its batched ``evaluate`` if it has one."""
        batched = callable(getattr(utility, "evaluate", None))
        return (_CheckedBatchUtility if batched else cls)(utility, default_score, error_score)

    def _count(self, m: int) -> None:
        self.n_evaluations += m
        self.report.n_fits += m

    def _failed(self, message: str) -> float:
        if self.error_score == "raise":
            raise ValueError(f"The custom utility {message} (error_score='raise').")
        self.report.failure(f"the utility {message}")
        return self.default_score if self.error_score is None else float(self.error_score)

    def __call__(self, subset: Any) -> float:
        try:
            value = float(self.utility(subset))
        except Exception as exc:  # noqa: BLE001 - reported through error_score
            self._count(1)
            if self.error_score == "raise":
                raise
            return self._failed(f"raised {type(exc).__name__}: {exc}")
        self._count(1)  # counted once finished: an interrupted evaluation is not one
        if not math.isfinite(value):  # math, not numpy: this runs once per coalition
            return self._failed(f"returned {value} for a coalition of "
                                f"{np.asarray(subset).size} players")
        return value


class _CheckedBatchUtility(CheckedUtility):
    """A :class:`CheckedUtility` of a utility with a batched ``evaluate(masks)``."""

    def evaluate(self, masks: np.ndarray) -> np.ndarray:
        m = masks.shape[0]
        u = np.asarray(self.utility.evaluate(masks), dtype=np.float64).reshape(-1)
        self._count(m)
        if u.shape[0] != m:
            raise ValueError(
                f"The custom utility's evaluate(masks) must return one value per mask: "
                f"got {u.shape[0]} values for {m} masks.")
        bad = ~np.isfinite(u)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            value = self._failed(f"returned {u[k]} for a coalition of "
                                 f"{int(masks[k].sum())} players")
            self.report.n_errors += int(bad.sum()) - 1
            u[bad] = value
        return u


class WrapperCopyMixin:
    """``copy.copy`` for a utility that wraps another one, held as ``self.utility``.

    The copy shares every attribute with the original except the inner utility,
    of which it holds its own ``copy.copy``: each worker thread of the engine
    then counts its own evaluations and failures (the inner utility's copy
    decides what it shares, e.g. its cache).
    """

    utility: Any

    def __copy__(self: _W) -> _W:
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.utility = copy.copy(self.utility)
        return new


class FreshCacheMixin:
    """Pickling of a utility with a coalition cache: a worker starts with an empty one."""

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = {}
        return state


class OwnReportMixin:
    """``copy.copy`` that shares everything but the report: each worker thread of the
    engine counts its own fits and failures (the cache is shared)."""

    report: FitReport

    def __copy__(self: _R) -> _R:
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.report = self.report.copy()
        return new


@contextlib.contextmanager
def counted_once_finished(utility: Any) -> Iterator[None]:
    """Take back the count of an evaluation that a KeyboardInterrupt cut short.

    A model utility counts a fit (``n_evaluations``, ``report.n_fits``) as it starts
    it; one interrupted is not an evaluation, so that an interrupted valuer reports
    only the evaluations that finished.
    """
    evaluations, fits = utility.n_evaluations, utility.report.n_fits
    try:
        yield
    except KeyboardInterrupt:
        utility.n_evaluations, utility.report.n_fits = evaluations, fits
        raise
