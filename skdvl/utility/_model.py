"""ModelUtility, the utility of machine learning, and the one chooser of its fit path.

:class:`ModelUtility` fits a clone of an estimator on the rows of a coalition
and scores it on validation data. :func:`choose_fit_path` decides, for it and
for the class-wise utility (:mod:`skdvl.utility._classwise`), whether
coalitions are fitted in batched vectorised solves
(:mod:`skdvl.utility._linear_batch`) or one by one with scikit-learn;
:func:`torch_refit_for` gives the seeded refits of skorch nets
(:mod:`skdvl.utility._torch_refit`).
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from typing import Any

import numpy as np
import sklearn
from sklearn.base import clone, is_classifier
from sklearn.metrics import check_scoring

from skdvl.utility._base import (
    FitReport,
    FreshCacheMixin,
    _check_fit_options,
    _check_score,
    _is_finite_dense,
    _take,
    counted_once_finished,
)
from skdvl.utility._linear_batch import BatchPlan, _check_device, plan_batched
from skdvl.utility._prefix_walk import PrefixWalk, walk_reason
from skdvl.utility._torch_refit import TorchRefit, find_skorch_nets

__all__ = ["ModelUtility", "choose_fit_path", "torch_refit_for"]

#: coalitions per batched solve
_BATCH = 256
#: "auto" fits a multinomial model batched up to this many parameters (classes x
#: (features + 1)): the exact-Newton regime; beyond, where permutation prefixes are
#: walked incrementally (:mod:`skdvl.utility._prefix_multinomial`; digits, 650
#: parameters, truncated Monte Carlo: 2.0-2.3x pyDVL 0.10); elsewhere the cold batched
#: solve measured 1.2-3x scikit-learn's lbfgs (coalitions of 75 down to 8 of 150 rows),
#: too little evidence for larger data to leave scikit-learn
_AUTO_MAX_MULTINOMIAL = 64


def choose_fit_path(batch_fit: Any, estimator: Any, scoring: Any, X: Any, y: Any, *,
                    finite: bool, device: Any = None, refused: str = "") -> tuple[Any, str]:
    """The batched plan of a model utility (or None) and a description of the path taken.

    Parameters
    ----------
    batch_fit : "auto" or bool
        The utility's ``batch_fit``: True requires the batched path, False never
        takes it, "auto" takes it where it is supported and faster.
    estimator : estimator object
        The utility's model.
    scoring : str, callable or None
        The scorer the batched fits are scored by.
    X, y : array-like
        The training data.
    finite : bool
        Whether ``X`` and the validation data are dense finite numeric arrays.
    device : None, str or torch.device, default=None
        Where the batched path solves binary logistic regressions.
    refused : str, default=""
        Why the caller cannot take the batched path whatever the estimator ("" when
        it can): the plan is then not made.

    Returns
    -------
    plan : BatchPlan or None
        None on the per-coalition path.
    fit_path : str
        "batched" ("batched on torch device ..." with ``device``; for least
        squares "batched in numpy (prefix walks on torch device ...)"), or
        "per-coalition: " and why.

    Raises
    ------
    ValueError
        When ``batch_fit=True`` and the batched path cannot be taken (the message
        says why).
    """
    if batch_fit != "auto" and not batch_fit:
        return None, "per-coalition: batch_fit=False"
    reason = refused
    plan = None if reason else plan_batched(estimator, scoring, device=device)
    if isinstance(plan, str):
        reason = plan
    if not reason and not (finite and np.ndim(X) == 2):
        reason = "X and X_val must be dense finite numeric arrays"
    if not reason and batch_fit == "auto" and isinstance(plan, BatchPlan) and plan.is_classifier:
        k = np.unique(y).shape[0]
        params = k * (np.shape(X)[1] + 1)
        if k > 2 and params > _AUTO_MAX_MULTINOMIAL and walk_reason(plan, y):
            reason = (f"a multinomial model with {params} parameters is faster fitted "
                      "by scikit-learn (batch_fit=True forces the batched solve)")
    if reason:
        if batch_fit is True:
            raise ValueError(f"batch_fit=True, but the batched fit cannot be used: "
                             f"{reason}.")
        return None, f"per-coalition: {reason}"
    if device is None:
        return plan, "batched"
    if isinstance(plan, BatchPlan) and plan.kind != "logistic":
        return plan, f"batched in numpy (prefix walks on torch device {device})"
    return plan, f"batched on torch device {device}"


def torch_refit_for(estimator: Any, random_state: Any) -> TorchRefit | None:
    """A :class:`~skdvl.utility._torch_refit.TorchRefit` if ``estimator`` holds a skorch
    net, else None."""
    if "skorch" not in sys.modules:  # no skorch net can exist: skip the search
        return None
    return TorchRefit(estimator, random_state) if find_skorch_nets(estimator) else None


class ModelUtility(FreshCacheMixin):
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
        or multinomial: for "auto" with at most 64 parameters, or more where its
        permutation prefixes can be walked incrementally), ``Ridge`` or
        ``LinearRegression``, alone or after a ``StandardScaler`` in a
        ``Pipeline``, on dense finite data (see :mod:`skdvl.utility._linear_batch`). The
        batched solve reaches the optimum of the estimator's own objective to a
        tight tolerance (scikit-learn's ``lbfgs`` at its default ``tol`` stops
        short of it, so a coalition's accuracy can differ by a validation point
        near the decision boundary). "auto" uses it where it is supported and
        faster, and fits coalition by coalition otherwise; True requires it (a
        ``ValueError`` says why it cannot); False never uses it.
    device : None, str or torch.device, default=None
        Where the batched path solves binary logistic regressions: None in
        numpy, else on this torch device in float64 (``"cuda"``, ``"cpu"``...;
        needs torch). ``Ridge`` and ``LinearRegression`` walk permutation
        prefixes on the device (:mod:`skdvl.utility._prefix_torch`; their cold
        fits, and multinomial problems, stay in numpy), and so do binary logistic
        models (:mod:`skdvl.utility._prefix_torch_logistic`); multinomial models
        are fitted cold, not walked. Ignored on the per-coalition path.
    random_state : int, RandomState instance or None, default=None
        The base seed of the torch seeds of neural nets: used only when
        ``estimator`` is (or holds, e.g. in a ``Pipeline``) a skorch net. Each
        coalition is then fitted with the torch seed
        ``coalition_seed(base_seed, np.packbits(mask).tobytes())`` (a hash of its
        row mask; see :func:`skdvl.utility._torch_refit.coalition_seed`), where
        ``base_seed = check_random_state(random_state).randint(2**31 - 1)``,
        inside ``torch.random.fork_rng`` and with one torch thread, so that
        u(S) is a pure function of S (identical for any ``n_jobs`` and joblib
        backend) and the caller's torch random state and thread count are left
        as they were. None draws the base seed once, when the utility is made.
        The nets must have ``train_split=None`` (a ``ValueError`` explains why).
        A bare ``NeuralNetClassifier``/``NeuralNetRegressor`` with default
        callbacks and data loading is trained by a leaner loop that reproduces
        skorch's ``fit`` bitwise (checked against it on the first fit of each
        process; see :mod:`skdvl.utility._torch_refit`).

    Attributes
    ----------
    report : FitReport
        Fits attempted, failures and the warnings the fits raised (each fit's
        warnings are recorded, not shown: valuers summarise them once).
    fit_path : str
        "batched" ("batched on torch device ..." with ``device``; for least
        squares "batched in numpy (prefix walks on torch device ...)"), or
        "per-coalition: " and why the batched path is not used.
    walk_reason : str
        "" when the prefixes of permutation walks are fitted incrementally, each
        from the one before (:meth:`prefix_walk`: ``Ridge``, ``LinearRegression``
        and L2 ``LogisticRegression``, binary or multinomial, on the batched path;
        with ``device``, least squares only), else why not.

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
        _check_device(device)
        self.device = device
        # after one fit has validated the estimator's parameters, its clones skip the
        # validation (the same parameters), and the finiteness check of data checked here
        self._validated = False
        self._finite = _is_finite_dense(X) and _is_finite_dense(X_val)
        self._plan, self.fit_path = choose_fit_path(
            batch_fit, estimator, scoring, X, self.y, finite=self._finite, device=device)
        self.random_state = random_state
        self._torch = torch_refit_for(estimator, random_state)
        if self._torch is not None:
            self.fit_path += f"; {self._torch.description}"
        self.walk_reason = ("not on the batched path" if self._plan is None
                            else walk_reason(self._plan, self.y))

    #: at most this many prefixes of one truncated permutation per batched solve (the
    #: engine walks 32 to 128 permutations in lockstep, filling a solve with 256
    #: prefixes): measured on TMC (LogisticRegression, 150 rows, rtol 0.01, groups of 32),
    #: 8 costs 13% more fits than the minimum (evaluations past truncation points), 16
    #: costs 23%
    prefix_step = 8

    @property
    def walk_min_work(self) -> int | None:
        """Where the engine starts walking prefixes incrementally (active walks times
        prefix length, :mod:`skdvl.sampling._truncation`): from the first prefix on for
        multinomial models, whose cold batched fits cost more than walked prefixes at
        any size (digits, 650 parameters: TMC 9.9 s walked from the start against
        22.9 s with the binary threshold); None leaves the engine's default."""
        plan = self._plan
        if plan is None or self.walk_reason or plan.kind != "logistic":
            return None
        return 1 if np.unique(np.asarray(self.y)).size > 2 else None

    @property
    def walk_bytes(self) -> int | None:
        """About the bytes one prefix walk holds at its end (its gathered rows, their
        decisions and weights, and its parameters' curvature), for the engine's grouping
        of walks; None where the utility does not walk."""
        plan, shape = self._plan, getattr(self.X, "shape", None)
        if plan is None or self.walk_reason or shape is None or len(shape) != 2:
            return None
        rows, d = int(shape[0]), int(shape[1])
        k = np.unique(np.asarray(self.y)).size if plan.kind == "logistic" else 1
        outputs = k if k > 2 else 1
        # a few (d + 1) x (d + 1) matrices per output: the inverse Hessian of a binary
        # walk, the least-squares co-moments, a multinomial walk's per-class blocks
        return 8 * (rows * (d + 2 * outputs + 3) + 4 * outputs * (d + 1) ** 2)

    @property
    def evaluate(self) -> Any:
        """``evaluate(masks)``: utilities of many coalitions (the batched path only).

        None when fits go coalition by coalition, so that the engine calls the
        utility once per coalition and stops a truncated permutation where it
        truncates.
        """
        return self._evaluate_batch if self._plan is not None else None

    def prefix_walk(self, bases: np.ndarray, orders: list[np.ndarray]) -> _UtilityWalk | None:
        """Walks of prefixes ``bases[r] | orders[r][:j]``, each fitted from the one before
        (:mod:`skdvl.utility._prefix_walk`), or None where the batched path cannot
        (``walk_reason`` says why).

        The walk's fits bypass the coalition cache: prefixes of random orders
        hardly ever repeat, and a cache of them would cost more than it saves.
        """
        if self.walk_reason:
            return None
        return _UtilityWalk(self, PrefixWalk(self._plan, self.X, self.y, bases, orders))

    @property
    def n_errors(self) -> int:
        return self.report.n_errors

    @property
    def first_error(self) -> str | None:
        return self.report.first_error

    def __repr__(self) -> str:
        return (f"ModelUtility({self.estimator!r}, n_players={self.n_players}, "
                f"scoring={self.scoring!r})")

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
        with counted_once_finished(self):
            return self._fit_and_score(rows)

    def _fit_and_score(self, rows: np.ndarray) -> float:
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


class _UtilityWalk:
    """A :class:`~skdvl.utility._prefix_walk.PrefixWalk` that answers utilities, counted
    as the batched path counts them; a prefix the walk could not fit (or whose score
    is not finite) is fitted by the batched path, then by scikit-learn."""

    def __init__(self, utility: ModelUtility, walk: PrefixWalk) -> None:
        self.utility, self.walk = utility, walk
        X = utility.X
        self.names = (np.asarray(X.columns, dtype=object) if hasattr(X, "columns")
                      and all(isinstance(c, str) for c in X.columns) else None)

    @property
    def n_walks(self) -> int:
        return self.walk.n_walks

    def step(self, walks: np.ndarray) -> np.ndarray:
        """The utilities of the next prefix of each walk of ``walks``."""
        walks = np.asarray(walks)
        return self._scored(self.walk.step(walks), walks, 1)

    def step_block(self, walks: np.ndarray, B: int) -> np.ndarray:
        """The utilities of the next ``B`` prefixes of each walk of ``walks``, shape
        ``(walks.size, B)``."""
        walks = np.asarray(walks)
        return self._scored(self.walk.step_block(walks, B), walks, B).reshape(-1, B)

    def _scored(self, fitted: Any, walks: np.ndarray, B: int) -> np.ndarray:
        """Scores of the fits (walk by walk, ``B`` prefixes each); a fit that failed is
        refitted by the batched path, from its mask."""
        u = self.utility
        assert u._plan is not None
        fitted.feature_names_in = self.names
        scores = u._plan.score(fitted, u.X_val, u.y_val)
        values = np.full(fitted.coef.shape[0], u.default_score)
        good = ~fitted.degenerate & ~fitted.failed & np.isfinite(scores)
        values[good] = scores[good]
        u.n_evaluations += int(fitted.degenerate.sum() + good.sum())
        u.report.n_fits += int(good.sum())
        redo = np.flatnonzero(~fitted.degenerate & ~good)
        if redo.size:
            masks = np.stack([self.walk.mask_at(int(walks[i // B]), int(i % B) - B + 1)
                              for i in redo])
            values[redo] = u._fit_score_batch(masks)
        return values
