"""Utilities: the cooperative games that valuers value.

A utility maps a coalition of players (training rows) to a number. Any object
with an ``n_players`` attribute and ``__call__(subset) -> float`` is one (the
:class:`Utility` protocol); an optional batched ``evaluate(masks)`` lets the
engine evaluate many coalitions in one call. :class:`ModelUtility` is the
utility of machine learning: fit a clone of an estimator on the rows of the
coalition and score it on validation data.
"""

from __future__ import annotations

import warnings
from typing import Any, Protocol, runtime_checkable

import numpy as np
from sklearn.base import clone, is_classifier
from sklearn.metrics import check_scoring

__all__ = ["Utility", "ModelUtility", "UtilityFitWarning"]


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
    """Some fits of the estimator raised and were scored ``error_score``."""


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
        classifier, rows of a single class).
    error_score : "raise" or float, default=None
        The utility of a coalition whose fit or scoring raises. None means
        ``default_score``. Failures are counted in ``n_errors`` and the first
        message kept in ``first_error``; valuers turn them into one
        :class:`UtilityFitWarning`.
    cache_size : int, default=100_000
        Coalitions kept in the cache; the oldest are dropped first. 0 disables it.

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
        cache_size: int = 100_000,
    ) -> None:
        if not (error_score is None or error_score == "raise"
                or isinstance(error_score, (int, float, np.number))):
            raise ValueError(
                f"error_score must be 'raise', a number or None. Got {error_score!r} instead."
            )
        self.estimator = estimator
        self.X, self.y, self.X_val, self.y_val = X, np.asarray(y), X_val, y_val
        self.scoring = scoring
        self.scorer = check_scoring(estimator, scoring=scoring)
        self.default_score = float(default_score)
        self.error_score = error_score
        self.cache_size = int(cache_size)
        self.n_players = int(self.y.shape[0])
        self._is_classifier = is_classifier(estimator)
        self._cache: dict[bytes, float] = {}
        self.n_evaluations = 0
        self.n_errors = 0
        self.first_error: str | None = None

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
        value = self._fit_score(np.sort(subset))
        if self.cache_size > 0:
            if len(self._cache) >= self.cache_size:
                try:  # threads may share the cache (threading backend)
                    del self._cache[next(iter(self._cache))]
                except (KeyError, RuntimeError, StopIteration):
                    pass
            self._cache[key] = value
        return value

    def _fit_score(self, rows: np.ndarray) -> float:
        self.n_evaluations += 1
        y = self.y[rows]
        if self._is_classifier and np.unique(y).shape[0] < 2:
            return self.default_score
        try:
            model = clone(self.estimator).fit(_take(self.X, rows), y)
            return float(self.scorer(model, self.X_val, self.y_val))
        except Exception as exc:  # noqa: BLE001 - reported through error_score
            if self.error_score == "raise":
                raise
            self.n_errors += 1
            if self.first_error is None:
                self.first_error = f"{type(exc).__name__}: {exc}"
            return self.default_score if self.error_score is None else float(self.error_score)


def _take(X: Any, rows: np.ndarray) -> Any:
    """Rows of an array, sparse matrix or DataFrame."""
    if hasattr(X, "iloc"):
        return X.iloc[rows]
    return X[rows]


def warn_fit_errors(n_errors: int, first_error: str | None, n_evaluations: int) -> None:
    """One summary warning for the failed fits of a valuation."""
    if n_errors:
        warnings.warn(
            f"{n_errors} of {n_evaluations} utility evaluations raised and were given "
            f"error_score. The first error was: {first_error}. Pass error_score='raise' "
            "to see the traceback.",
            UtilityFitWarning, stacklevel=4,
        )
