"""Utilities: the cooperative games that valuers value.

A utility maps a coalition of players (training rows) to a number. Any object
with an ``n_players`` attribute and ``__call__(subset) -> float`` is one (the
:class:`Utility` protocol); an optional batched ``evaluate(masks)`` lets the
engine evaluate many coalitions in one call. :class:`ModelUtility` is the
utility of machine learning: fit a clone of an estimator on the rows of the
coalition and score it on validation data.
"""

from __future__ import annotations

import contextlib
import math
import sys
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

import numpy as np
import sklearn
from sklearn.base import clone, is_classifier
from sklearn.metrics import check_scoring

__all__ = ["Utility", "ModelUtility", "UtilityFitWarning", "FitReport", "CheckedUtility"]


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


class ModelUtility:
    """u(S): the score on validation data of an estimator fitted on rows S.

    Every call fits ``clone(estimator)`` on ``X[S], y[S]`` and scores it with
    ``scoring`` on ``(X_val, y_val)``. Results are cached by the *set* of rows,
    so a coalition is fitted once whatever the order of its indices. The cache
    lives in the process that evaluates (each joblib worker has its own).

    Parameters
    ----------
    estimator : estimator object
        The model; never fitted itself, only its clones.
    X, y : array-like
        Training data; player ``i`` is row ``i``.
    X_val, y_val : array-like
        Validation data the fitted clones are scored on.
    scoring : str, callable or None, default=None
        A scikit-learn scorer; None means ``estimator.score``.
    default_score : float, default=0.0
        The utility of the empty coalition and of degenerate coalitions (for a
        classifier, rows of a single class). Must be finite.
    error_score : "raise" or float, default=None
        The utility of a coalition whose fit or scoring raises, or whose score
        is NaN or infinite. None means ``default_score``. Failures are counted in
        ``report`` (``n_errors``, ``first_error``); valuers turn them into one
        :class:`UtilityFitWarning`, and raise when every fit failed.
    cache_size : int, default=100_000
        Coalitions kept in the cache; the oldest are dropped first. 0 disables it.
    batch_fit : "auto", bool, default="auto"
        Fit many coalitions in one vectorised solve when the estimator is one the
        fast path reproduces: ``LogisticRegression`` with an L2 penalty (binary,
        or multinomial with at most 64 parameters for "auto"), ``Ridge`` or
        ``LinearRegression``, alone or after a ``StandardScaler`` in a
        ``Pipeline``, on dense finite data (see :mod:`skdvl._linear_batch`). The
        batched solve reaches the optimum of the estimator's own objective to a
        tight tolerance (scikit-learn's ``lbfgs`` at its default ``tol`` stops
        short of it, so a coalition's accuracy can differ by a validation point
        near the decision boundary). "auto" uses it where it is supported and
        faster, and fits coalition by coalition otherwise; True requires it (a
        ``ValueError`` says why it cannot); False never uses it.
    device : None, str or torch.device, default=None
        Where the batched path solves binary logistic regressions: None in
        numpy, else on this torch device in float64 (``"cuda"``, ``"cpu"``...;
        needs torch). Ridge, least squares and multinomial problems stay in
        numpy. Ignored on the per-coalition path.
    random_state : int, RandomState instance or None, default=None
        The base seed of the torch seeds of neural nets: used only when
        ``estimator`` is (or holds, e.g. in a ``Pipeline``) a skorch net. Each
        coalition is then fitted with the torch seed
        ``coalition_seed(base_seed, np.packbits(mask).tobytes())`` (a hash of its
        row mask; see :func:`skdvl._torch_fit.coalition_seed`), where
        ``base_seed = check_random_state(random_state).randint(2**31 - 1)``,
        inside ``torch.random.fork_rng`` and with one torch thread, so that
        u(S) is a pure function of S (identical for any ``n_jobs`` and joblib
        backend) and the caller's torch random state and thread count are left
        as they were. None draws the base seed once, when the utility is made.
        The nets must have ``train_split=None`` (a ``ValueError`` explains why).
        A bare ``NeuralNetClassifier``/``NeuralNetRegressor`` with default
        callbacks and data loading is trained by a leaner loop that reproduces
        skorch's ``fit`` bitwise (checked against it on the first fit of each
        process; see :mod:`skdvl._torch_fit`).

    Attributes
    ----------
    report : FitReport
        Fits attempted, failures and the warnings the fits raised (each fit's
        warnings are recorded, not shown: valuers summarise them once).
    fit_path : str
        "batched" ("batched on torch device ..." with ``device``), or
        "per-coalition: " and why the batched path is not used.

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> from sklearn.linear_model import LogisticRegression
    >>> from skdvl import ModelUtility
    >>> X, y = make_classification(n_samples=40, random_state=0)
    >>> u = ModelUtility(LogisticRegression(), X[:20], y[:20], X[20:], y[20:])
    >>> u.n_players
    20
    >>> u([0, 1, 2, 3, 4, 5]) == u([5, 4, 3, 2, 1, 0]), u.n_evaluations
    (True, 1)
    >>> u([])
    0.0
    """

    def __init__(
        self, estimator: Any, X: Any, y: Any, X_val: Any, y_val: Any, *,
        scoring: Any = None, default_score: float = 0.0, error_score: Any = None,
        cache_size: int = 100_000, batch_fit: Any = "auto", device: Any = None,
        random_state: Any = None,
    ) -> None:
        _check_fit_options(batch_fit, error_score)
        self.estimator = estimator
        self.X, self.y, self.X_val, self.y_val = X, np.asarray(y), X_val, y_val
        self.scoring = scoring
        self.scorer = check_scoring(estimator, scoring=scoring)
        self.default_score = _check_score("default_score", default_score)
        self.error_score = error_score if error_score in (None, "raise") else _check_score(
            "error_score", error_score)
        self.cache_size = int(cache_size)
        self.n_players = int(self.y.shape[0])
        self._is_classifier = is_classifier(estimator)
        self._cache: dict[bytes, float] = {}
        self.n_evaluations = 0
        self.report = FitReport()
        self.batch_fit = batch_fit
        if device is not None:
            from skdvl._linear_batch import _check_device

            _check_device(device)
        self.device = device
        # after one fit has validated the estimator's parameters, its clones skip the
        # validation (the same parameters), and the finiteness check of data checked here
        self._validated = False
        self._finite = _is_finite_dense(X) and _is_finite_dense(X_val)
        self._plan, self.fit_path = self._choose_path(batch_fit)
        self.random_state = random_state
        self._torch = _torch_refit(estimator, random_state)
        if self._torch is not None:
            self.fit_path += f"; {self._torch.description}"

    def _choose_path(self, batch_fit: Any) -> tuple[Any, str]:
        """The batched plan (or None) and a description of the path taken."""
        if batch_fit != "auto" and not batch_fit:
            return None, "per-coalition: batch_fit=False"
        from skdvl._linear_batch import plan_batched

        plan = plan_batched(self.estimator, self.scoring, device=self.device)
        reason = plan if isinstance(plan, str) else ""
        if not reason and not (self._finite and np.ndim(self.X) == 2):
            reason = "X and X_val must be dense finite numeric arrays"
        if not reason and batch_fit == "auto" and self._is_classifier:
            k = np.unique(self.y).shape[0]
            params = k * (np.shape(self.X)[1] + 1)
            if k > 2 and params > _AUTO_MAX_MULTINOMIAL:
                reason = (f"a multinomial model with {params} parameters is faster fitted "
                          "by scikit-learn (batch_fit=True forces the batched solve)")
        if reason:
            if batch_fit is True:
                raise ValueError(f"batch_fit=True, but the batched fit cannot be used: "
                                 f"{reason}.")
            return None, f"per-coalition: {reason}"
        return plan, "batched" if self.device is None else f"batched on torch device {self.device}"

    #: at most this many prefixes of one truncated permutation per batched solve (the
    #: engine walks up to 32 permutations in lockstep, filling a solve with 256
    #: prefixes): measured on TMC (LogisticRegression, 150 rows, rtol 0.01), 8 costs 13%
    #: more fits than the minimum (evaluations past truncation points), 16 costs 23%
    prefix_step = 8

    @property
    def evaluate(self) -> Any:
        """``evaluate(masks)``: utilities of many coalitions (the batched path only).

        None when fits go coalition by coalition, so that the engine calls the
        utility once per coalition and stops a truncated permutation where it
        truncates.
        """
        return self._evaluate_batch if self._plan is not None else None

    @property
    def n_errors(self) -> int:
        return self.report.n_errors

    @property
    def first_error(self) -> str | None:
        return self.report.first_error

    def __repr__(self) -> str:
        return (f"ModelUtility({self.estimator!r}, n_players={self.n_players}, "
                f"scoring={self.scoring!r})")

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = {}  # a worker starts with an empty cache
        return state

    def _key(self, subset: np.ndarray) -> bytes:
        mask = np.zeros(self.n_players, dtype=bool)
        mask[subset] = True
        return np.packbits(mask).tobytes()

    def __call__(self, subset: Any) -> float:
        subset = np.asarray(subset, dtype=np.intp).reshape(-1)
        if subset.size == 0:
            return self.default_score
        key = self._key(subset)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        if self._plan is not None:
            mask = np.zeros((1, self.n_players), dtype=bool)
            mask[0, subset] = True
            value = float(self._fit_score_batch(mask)[0])
        else:
            value = self._fit_score(np.sort(subset))
        self._store(key, value)
        return value

    def _store(self, key: bytes, value: float) -> None:
        if self.cache_size > 0:
            if len(self._cache) >= self.cache_size:
                try:  # threads may share the cache (threading backend)
                    del self._cache[next(iter(self._cache))]
                except (KeyError, RuntimeError, StopIteration):
                    pass
            self._cache[key] = value

    def _evaluate_batch(self, masks: Any) -> np.ndarray:
        """Utilities of the coalitions ``masks`` ((m, n) bool): cached, batched, exact."""
        masks = np.asarray(masks, dtype=bool).reshape(-1, self.n_players)
        out = np.full(masks.shape[0], self.default_score)
        keys = [row.tobytes() for row in np.packbits(masks, axis=1)]
        todo = []
        for i, key in enumerate(keys):
            cached = self._cache.get(key)
            if cached is not None:
                out[i] = cached
            elif masks[i].any():
                todo.append(i)
        for lo in range(0, len(todo), _BATCH):
            idx = np.asarray(todo[lo:lo + _BATCH])
            values = self._fit_score_batch(masks[idx])
            out[idx] = values
            for i, value in zip(idx, values):
                self._store(keys[i], float(value))
        return out

    def _fit_score_batch(self, masks: np.ndarray) -> np.ndarray:
        """One batched solve; degenerate coalitions get ``default_score``, and those the
        solve could not reproduce (or whose score is not finite) go to ``_fit_score``."""
        assert self._plan is not None
        fitted = self._plan.fit(self.X, self.y, masks)
        scores = self._plan.score(fitted, self.X_val, self.y_val)
        values = np.full(masks.shape[0], self.default_score)
        good = ~fitted.degenerate & ~fitted.failed & np.isfinite(scores)
        values[good] = scores[good]
        self.n_evaluations += int(fitted.degenerate.sum() + good.sum())
        self.report.n_fits += int(good.sum())
        for i in np.flatnonzero(~fitted.degenerate & ~good):
            values[i] = self._fit_score(np.flatnonzero(masks[i]))
        return values

    def _fit_score(self, rows: np.ndarray) -> float:
        self.n_evaluations += 1
        y = self.y[rows]
        if self._is_classifier and np.unique(y).shape[0] < 2:
            return self.default_score
        self.report.n_fits += 1
        failed = self.default_score if self.error_score is None else self.error_score
        fast = sklearn.config_context(assume_finite=self._finite,
                                      skip_parameter_validation=True)
        try:
            with warnings.catch_warnings(record=True) as caught, (
                    fast if self._validated else contextlib.nullcontext()):
                warnings.simplefilter("always")
                if self._torch is None:
                    model = clone(self.estimator).fit(_take(self.X, rows), y)
                    self._validated = True  # the parameters passed scikit-learn's validation
                    score = float(self.scorer(model, self.X_val, self.y_val))
                else:
                    key = self._key(rows)
                    with self._torch.context(key):
                        model = self._torch.fit(_take(self.X, rows), y, key)
                        self._validated = True
                        score = float(self.scorer(model, self.X_val, self.y_val))
        except Exception as exc:  # noqa: BLE001 - reported through error_score
            if self.error_score == "raise":
                raise
            self.report.failure(f"{type(exc).__name__}: {exc}")
            return failed  # type: ignore[return-value]
        self.report.record(caught)
        if not np.isfinite(score):
            if self.error_score == "raise":
                raise ValueError(
                    f"The score of a fit on {rows.shape[0]} rows is {score}, not a finite "
                    "number (error_score='raise').")
            self.report.failure(f"the score of a fit on {rows.shape[0]} rows was {score}")
            return failed  # type: ignore[return-value]
        return score


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

    def _failed(self, message: str) -> float:
        if self.error_score == "raise":
            raise ValueError(f"The custom utility {message} (error_score='raise').")
        self.report.failure(f"the utility {message}")
        return self.default_score if self.error_score is None else float(self.error_score)

    def __call__(self, subset: Any) -> float:
        self.n_evaluations += 1
        self.report.n_fits += 1
        try:
            value = float(self.utility(subset))
        except Exception as exc:  # noqa: BLE001 - reported through error_score
            if self.error_score == "raise":
                raise
            return self._failed(f"raised {type(exc).__name__}: {exc}")
        if not math.isfinite(value):  # math, not numpy: this runs once per coalition
            return self._failed(f"returned {value} for a coalition of "
                                f"{np.asarray(subset).size} players")
        return value



class _CheckedBatchUtility(CheckedUtility):
    """A :class:`CheckedUtility` of a utility with a batched ``evaluate(masks)``."""

    def evaluate(self, masks: np.ndarray) -> np.ndarray:
        m = masks.shape[0]
        self.n_evaluations += m
        self.report.n_fits += m
        u = np.asarray(self.utility.evaluate(masks), dtype=np.float64).reshape(-1)
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


#: coalitions per batched solve
_BATCH = 256
#: "auto" fits a multinomial model batched up to this many parameters (classes x
#: (features + 1)): the exact-Newton regime; beyond, the batched solve is not faster
_AUTO_MAX_MULTINOMIAL = 64


def _torch_refit(estimator: Any, random_state: Any) -> Any:
    """A :class:`~skdvl._torch_fit.TorchRefit` if ``estimator`` holds a skorch net, else None."""
    if "skorch" not in sys.modules:  # no skorch net can exist: skip the search
        return None
    from skdvl._torch_fit import TorchRefit, find_skorch_nets

    return TorchRefit(estimator, random_state) if find_skorch_nets(estimator) else None


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
