"""The class-wise utility of CS-Shapley: one fit per coalition, every class's scores.

:class:`ClasswiseModelUtility` fits a model on a coalition once and scores it
for every class (in-class and out-of-class accuracy); custom class-wise
utilities are checked by :class:`_CheckedClasswise`; :class:`_LabelledGame` is
the game of ``n + K`` players the samplers run on (its last ``K`` players say
which class a coalition is scored for).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import numpy as np
import sklearn
from sklearn.base import clone
from sklearn.metrics import check_scoring

from skdvl.utility._base import (
    FitReport,
    FreshCacheMixin,
    OwnReportMixin,
    WrapperCopyMixin,
    _check_fit_options,
    _check_score,
    _is_finite_dense,
    _take,
    counted_once_finished,
)
from skdvl.utility._linear_state import _decision
from skdvl.utility._model import _BATCH, choose_fit_path, torch_refit_for

__all__ = ["ClasswiseModelUtility", "classwise_utility"]


def classwise_utility(in_class: np.ndarray, out_of_class: np.ndarray) -> np.ndarray:
    """``a_S(D_c) * exp(a_S(D_{-c}))``: the value function of Schoch et al. (2022).

    The in-class accuracy counts most, the out-of-class accuracy weighs it; the
    paper shows this form to be essentially the only one that gives in-class
    accuracy priority and keeps in-class values additive.
    """
    return np.asarray(in_class) * np.exp(np.asarray(out_of_class))


class _Layout:
    """The classes of the players: codes, members of each class, and the others."""

    def __init__(self, labels: Any) -> None:
        self.classes, codes = np.unique(np.asarray(labels), return_inverse=True)
        self.codes = codes.reshape(-1)
        self.n, self.K = self.codes.shape[0], self.classes.shape[0]
        self.members = [np.flatnonzero(self.codes == k) for k in range(self.K)]
        self.others = [np.flatnonzero(self.codes != k) for k in range(self.K)]


# --------------------------------------------------------------------------- utilities
class ClasswiseModelUtility(OwnReportMixin, FreshCacheMixin):
    """In-class and out-of-class scores on validation data of a classifier fitted on rows S.

    ``u(S)`` fits ``clone(estimator)`` on ``X[S], y[S]`` once and returns, for
    every class ``c`` of ``y`` (in the order of ``np.unique(y)``), the in-class
    score ``a_S(D_c)`` and the out-of-class score ``a_S(D_{-c})`` on
    ``(X_val, y_val)``: one fit, ``2 K`` numbers. Scores are weighted by the
    share of the validation rows they cover, ``|D_c| / |D|`` and
    ``|D_{-c}| / |D|`` (as Schoch et al., 2022, define them): for accuracy, the correct
    predictions among ``D_c`` (or ``D_{-c}``) over ``|D|``, so that the two add
    up to the accuracy on ``D``. Validation rows of a class absent from ``y``
    are out of class for every class. Results are cached by the set of rows.

    This is the utility :class:`ClasswiseShapleyValuer` builds from data; it is
    also an example of the protocol of a custom class-wise utility (see the
    valuer's ``utility``).

    Parameters
    ----------
    estimator : classifier
        The model; only its clones are fitted.
    X, y : array-like
        Training data; player ``i`` is row ``i``, of class ``y[i]``.
    X_val, y_val : array-like
        Validation data.
    scoring : str, callable or None, default=None
        The inner score, applied to ``D_c`` and to ``D_{-c}``. None means
        accuracy, computed from one ``predict`` of ``X_val``; any other scorer
        is called twice per class and fit.
    default_score : float, default=0.0
        In-class score of the empty coalition and of coalitions of one class
        (whose out-of-class score is 0): their utility is ``default_score``.
    error_score : "raise", float or None, default=None
        In-class score (out-of-class 0) of a coalition whose fit or scoring
        raises or is not finite; None means ``default_score``.
    cache_size : int, default=100_000
        Coalitions kept in the cache; 0 disables it.
    batch_fit : "auto", bool, default="auto"
        Fit many coalitions in one vectorised solve where
        :class:`~skdvl.ModelUtility` would (``LogisticRegression`` with an L2
        penalty, alone or after a ``StandardScaler``), with accuracy as the
        inner score: the batched fits are scored class by class from their
        predictions. True requires it; False never uses it.

    Attributes
    ----------
    n_players : int
    labels : ndarray of shape (n_players,)
        ``y``: the class of each player.
    classes : ndarray of shape (n_classes,)
        ``np.unique(y)``; column ``k`` of the scores is class ``classes[k]``.
    n_evaluations : int
        Coalitions evaluated (fitted, or degenerate); cache hits excluded.
    report : FitReport
        Fits, failures and the warnings the fits raised.
    fit_path : str
        "batched", or "per-coalition: " and why the batched path is not used.

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> from sklearn.neighbors import KNeighborsClassifier
    >>> from skdvl import ClasswiseModelUtility
    >>> X, y = make_classification(n_samples=40, random_state=0)
    >>> u = ClasswiseModelUtility(KNeighborsClassifier(1), X[:20], y[:20], X[20:], y[20:])
    >>> scores = u([0, 1, 2, 3, 4, 5])  # rows: in-class, out-of-class; columns: classes
    >>> scores
    array([[0.25, 0.4 ],
           [0.4 , 0.25]])
    >>> scores.sum(axis=0), u.n_evaluations  # each column adds up to the accuracy
    (array([0.65, 0.65]), 1)
    """

    #: prefixes of a truncated walk per batched call (as ModelUtility.prefix_step)
    prefix_step = 8

    def __init__(
        self, estimator: Any, X: Any, y: Any, X_val: Any, y_val: Any, *,
        scoring: Any = None, default_score: float = 0.0, error_score: Any = None,
        cache_size: int = 100_000, batch_fit: Any = "auto", random_state: Any = None,
    ) -> None:
        _check_fit_options(batch_fit, error_score)
        self.estimator, self.scoring = estimator, scoring
        self.X, self.y, self.X_val = X, np.asarray(y), X_val
        self.y_val = np.asarray(y_val)
        self.labels = self.y
        self.classes = np.unique(self.y)
        self.n_players = int(self.y.shape[0])
        self.default_score = _check_score("default_score", default_score)
        self.error_score = error_score if error_score in (None, "raise") else _check_score(
            "error_score", error_score)
        self.cache_size = int(cache_size)
        self.scorer = None if scoring in (None, "accuracy") else check_scoring(
            estimator, scoring=scoring)
        pos = np.clip(np.searchsorted(self.classes, self.y_val), 0, self.classes.size - 1)
        self._val_code = np.where(self.classes[pos] == self.y_val, pos, -1)
        self._val_onehot = (self._val_code[:, None] == np.arange(self.classes.size)) * 1.0
        self.n_evaluations = 0
        self.report = FitReport()
        self._cache: dict[bytes, np.ndarray] = {}
        self._validated = False
        self._finite = _is_finite_dense(X) and _is_finite_dense(X_val)
        refused = "" if self.scorer is None else (
            f"scoring={self.scoring!r} is applied by scikit-learn (the batched fits are "
            "scored by accuracy only)")
        self._plan, self.fit_path = choose_fit_path(
            batch_fit, estimator, "accuracy", X, self.y, finite=self._finite, refused=refused)
        # a skorch net: each coalition's fit seeded from its row mask (as ModelUtility's)
        self.random_state = random_state
        self._torch = torch_refit_for(estimator, random_state)
        if self._torch is not None:
            self.fit_path += f"; {self._torch.description}"

    @property
    def evaluate(self) -> Any:
        """``evaluate(masks) -> (m, 2, n_classes)`` scores; None on the per-coalition path."""
        return self._evaluate_batch if self._plan is not None else None

    def __repr__(self) -> str:
        return (f"ClasswiseModelUtility({self.estimator!r}, n_players={self.n_players}, "
                f"scoring={self.scoring!r})")

    def __call__(self, subset: Any) -> np.ndarray:
        mask = np.zeros((1, self.n_players), dtype=bool)
        mask[0, np.asarray(subset, dtype=np.intp).reshape(-1)] = True
        if self._plan is not None:
            return self._evaluate_batch(mask)[0]
        key = np.packbits(mask).tobytes()
        cached = self._cache.get(key)
        if cached is None:
            cached = self._fit_scores(np.flatnonzero(mask[0]))
            self._store(key, cached)
        return cached.copy()

    def _store(self, key: bytes, value: np.ndarray) -> None:
        if self.cache_size > 0:
            if len(self._cache) >= self.cache_size:
                with contextlib.suppress(KeyError, RuntimeError, StopIteration):
                    del self._cache[next(iter(self._cache))]
            self._cache[key] = value

    def _degenerate(self, value: float) -> np.ndarray:
        out = np.zeros((2, self.classes.size))
        out[0] = value
        return out

    def _evaluate_batch(self, masks: Any) -> np.ndarray:
        """Scores of the coalitions ``masks``: cached, each coalition fitted once, batched."""
        masks = np.asarray(masks, dtype=bool).reshape(-1, self.n_players)
        out = np.empty((masks.shape[0], 2, self.classes.size))
        todo: dict[bytes, list[int]] = {}
        for i, key in enumerate(row.tobytes() for row in np.packbits(masks, axis=1)):
            cached = self._cache.get(key)
            if cached is not None:
                out[i] = cached
            elif not masks[i].any():
                out[i] = self._degenerate(self.default_score)
            else:
                todo.setdefault(key, []).append(i)
        keys = list(todo)
        for lo in range(0, len(keys), _BATCH):
            part = keys[lo:lo + _BATCH]
            scores = self._fit_scores_batch(masks[[todo[k][0] for k in part]])
            for key, value in zip(part, scores):
                out[todo[key]] = value
                self._store(key, value)
        return out

    def _fit_scores_batch(self, masks: np.ndarray) -> np.ndarray:
        """One batched solve, scored class by class; failed fits go to scikit-learn."""
        plan = self._plan
        fitted = plan.fit(self.X, self.y, masks)
        out = np.empty((masks.shape[0], 2, self.classes.size))
        out[fitted.degenerate] = self._degenerate(self.default_score)
        good = np.flatnonzero(~fitted.degenerate & ~fitted.failed)
        if good.size:
            raw = _decision(fitted, good, np.asarray(self.X_val, dtype=np.float64), plan.scaler)
            if raw.shape[1] == 1:
                pred = (raw[:, 0] > 0).astype(np.intp)
            else:
                pred = np.argmax(np.where(fitted.present[good][:, :, None], raw, -np.inf),
                                 axis=1)
            out[good] = self._scores_of_hits(pred == self._val_code)
        self.n_evaluations += int(fitted.degenerate.sum() + good.size)
        self.report.n_fits += int(good.size)
        for i in np.flatnonzero(~fitted.degenerate & fitted.failed):
            out[i] = self._fit_scores(np.flatnonzero(masks[i]))
        return out

    def _scores_of_hits(self, correct: np.ndarray) -> np.ndarray:
        """(m, 2, K) in- and out-of-class accuracies from (m, n_val) correct predictions."""
        correct = np.atleast_2d(correct).astype(np.float64)
        hits = correct @ self._val_onehot
        n_val = max(1, correct.shape[1])
        return np.stack([hits, correct.sum(axis=1, keepdims=True) - hits], axis=1) / n_val

    def _class_scores(self, model: Any) -> np.ndarray:
        """(2, K) scores of a fitted model: one predict (accuracy), or the scorer per class."""
        if self.scorer is None:
            pred = np.asarray(model.predict(self.X_val))
            return self._scores_of_hits(pred == self.y_val)[0]
        out = np.zeros((2, self.classes.size))
        n_val = self._val_code.shape[0]
        for k in range(self.classes.size):
            for side, rows in enumerate((self._val_code == k, self._val_code != k)):
                if rows.any():
                    idx = np.flatnonzero(rows)
                    score = self.scorer(model, _take(self.X_val, idx), self.y_val[idx])
                    out[side, k] = float(score) * idx.size / n_val
        return out

    def _fit_scores(self, rows: np.ndarray) -> np.ndarray:
        with counted_once_finished(self):
            return self._fit_and_score(rows)

    def _fit_and_score(self, rows: np.ndarray) -> np.ndarray:
        self.n_evaluations += 1
        y = self.y[rows]
        if rows.size == 0 or np.unique(y).shape[0] < 2:
            return self._degenerate(self.default_score)
        self.report.n_fits += 1
        failed = self._degenerate(self.default_score if self.error_score in (None, "raise")
                                  else float(self.error_score))
        fast = sklearn.config_context(assume_finite=self._finite,
                                      skip_parameter_validation=True)
        try:
            with warnings.catch_warnings(record=True) as caught, (
                    fast if self._validated else contextlib.nullcontext()):
                warnings.simplefilter("always")
                if self._torch is None:
                    model = clone(self.estimator).fit(_take(self.X, rows), y)
                    self._validated = True
                    scores = self._class_scores(model)
                else:
                    mask = np.zeros(self.n_players, dtype=bool)
                    mask[rows] = True
                    key = np.packbits(mask).tobytes()
                    with self._torch.context(key):
                        model = self._torch.fit(_take(self.X, rows), y, key)
                        self._validated = True
                        scores = self._class_scores(model)
        except Exception as exc:  # noqa: BLE001 - reported through error_score
            if self.error_score == "raise":
                raise
            self.report.failure(f"{type(exc).__name__}: {exc}")
            return failed
        self.report.record(caught)
        if not np.all(np.isfinite(scores)):
            if self.error_score == "raise":
                raise ValueError(
                    f"A class-wise score of a fit on {rows.shape[0]} rows is not a finite "
                    f"number: {scores.tolist()} (error_score='raise').")
            self.report.failure(f"a class-wise score of a fit on {rows.shape[0]} rows was "
                                f"{scores.tolist()}")
            return failed
        return scores


class _CheckedClasswise(OwnReportMixin, FreshCacheMixin):
    """A custom class-wise utility, cached, whose failed outputs count as failures.

    Each coalition is evaluated once for all classes (the scores are cached by
    the set of players, up to ``_CUSTOM_CACHE`` coalitions). A coalition whose
    scores raise or are not finite gets in-class score ``error_score``
    (``default_score`` when None) and out-of-class score 0, and is recorded in
    ``report``; ``error_score="raise"`` lets the problem through. Scores of
    another shape than ``(2, n_classes)`` raise.
    """

    def __init__(self, utility: Any, default_score: float, error_score: Any,
                 n_classes: int) -> None:
        self.utility, self.n_players = utility, int(utility.n_players)
        self.labels = np.asarray(utility.labels)
        self.default_score = _check_score("default_score", default_score)
        self.error_score, self.K = error_score, n_classes
        self.report, self.n_evaluations = FitReport(), 0
        self.prefix_step = getattr(utility, "prefix_step", 64)
        self._cache: dict[bytes, np.ndarray] = {}

    @property
    def evaluate(self) -> Any:
        return self._evaluate if callable(getattr(self.utility, "evaluate", None)) else None

    def _failed(self, message: str) -> np.ndarray:
        if self.error_score == "raise":
            raise ValueError(f"The custom class-wise utility {message} (error_score='raise').")
        self.report.failure(f"the utility {message}")
        out = np.zeros((2, self.K))
        out[0] = self.default_score if self.error_score is None else float(self.error_score)
        return out

    def _check(self, value: Any, size: int) -> np.ndarray:
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            return self._failed(f"returned {value!r}, not numbers")
        if arr.shape != (2, self.K):
            raise _ShapeError(
                f"A class-wise utility must return an array of shape (2, n_classes) = "
                f"(2, {self.K}) (in-class, out-of-class scores of each class of "
                f"np.unique(labels)). Got shape {arr.shape} instead.")
        if not np.all(np.isfinite(arr)):
            return self._failed(f"returned {arr.tolist()} for a coalition of {size} players")
        return arr

    def _key(self, subset: np.ndarray) -> bytes:
        mask = np.zeros(self.n_players, dtype=bool)
        mask[subset] = True
        return np.packbits(mask).tobytes()

    def __call__(self, subset: Any) -> np.ndarray:
        subset = np.asarray(subset, dtype=np.intp).reshape(-1)
        key = self._key(subset)
        cached = self._cache.get(key)
        if cached is not None:
            return cached.copy()
        try:
            value = self._check(self.utility(subset), subset.size)
        except Exception as exc:  # noqa: BLE001 - reported through error_score
            self.n_evaluations += 1
            self.report.n_fits += 1
            if self.error_score == "raise" or isinstance(exc, _ShapeError):
                raise
            value = self._failed(f"raised {type(exc).__name__}: {exc}")
        else:  # counted once finished: an interrupted evaluation is not one
            self.n_evaluations += 1
            self.report.n_fits += 1
        self._store(key, value)
        return value.copy()

    def _store(self, key: bytes, value: np.ndarray) -> None:
        if len(self._cache) >= _CUSTOM_CACHE:
            with contextlib.suppress(KeyError, RuntimeError, StopIteration):
                del self._cache[next(iter(self._cache))]
        self._cache[key] = value

    def _evaluate(self, masks: np.ndarray) -> np.ndarray:
        out = np.empty((masks.shape[0], 2, self.K))
        todo: dict[bytes, list[int]] = {}
        for i, key in enumerate(row.tobytes() for row in np.packbits(masks, axis=1)):
            cached = self._cache.get(key)
            if cached is None:
                todo.setdefault(key, []).append(i)
            else:
                out[i] = cached
        if not todo:
            return out
        first = [rows[0] for rows in todo.values()]
        m = len(first)
        arr = np.asarray(self.utility.evaluate(masks[first]), dtype=np.float64)
        self.n_evaluations += m
        self.report.n_fits += m
        if arr.shape != (m, 2, self.K):
            raise _ShapeError(
                f"A class-wise utility's evaluate(masks) must return an array of shape "
                f"(m, 2, n_classes) = ({m}, 2, {self.K}). Got shape {arr.shape} instead.")
        for a, (key, rows) in enumerate(todo.items()):
            if not np.isfinite(arr[a]).all():
                arr[a] = self._failed(f"returned {arr[a].tolist()} for a coalition of "
                                      f"{int(masks[rows[0]].sum())} players")
            out[rows] = arr[a]
            self._store(key, arr[a])
        return out


class _ShapeError(ValueError):
    """A custom class-wise utility returned scores of the wrong shape (a bug, not a failure)."""


#: coalitions a custom class-wise utility's scores are cached for
_CUSTOM_CACHE = 100_000


class _LabelledGame(WrapperCopyMixin):
    """What the engine values: a class-wise utility as a game of ``n + K`` players.

    Coalition ``S + {n + k}`` is worth ``u_k(S)``: the last ``K`` players name
    the class a coalition is scored for, so the engine's cache keeps classes
    apart while the utility's own cache fits each ``S`` once for all classes.
    """

    def __init__(self, utility: Any, layout: _Layout) -> None:
        self.utility, self.n, self.K = utility, layout.n, layout.K
        self.n_players = layout.n + layout.K
        self.prefix_step = getattr(utility, "prefix_step", 64)

    @property
    def n_evaluations(self) -> int:
        return int(self.utility.n_evaluations)

    @property
    def report(self) -> FitReport:
        return self.utility.report

    @property
    def evaluate(self) -> Any:
        return self._evaluate if self.utility.evaluate is not None else None

    def __call__(self, subset: Any) -> float:
        subset = np.asarray(subset, dtype=np.intp).reshape(-1)
        label = subset[subset >= self.n]
        if label.shape[0] != 1:  # no class named: nothing to score (the engine never asks)
            return 0.0
        scores = self.utility(subset[subset < self.n])
        return float(classwise_utility(scores[0, label[0] - self.n],
                                       scores[1, label[0] - self.n]))

    def _evaluate(self, masks: np.ndarray) -> np.ndarray:
        scores = self.utility.evaluate(masks[:, :self.n])
        label = np.argmax(masks[:, self.n:], axis=1)
        rows = np.arange(masks.shape[0])
        return classwise_utility(scores[rows, 0, label], scores[rows, 1, label])
