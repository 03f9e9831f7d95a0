"""Data-OOB: the value of a row is the out-of-bag score of the ensemble members that
did not train on it (Kwon & Zou, 2023)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from numbers import Integral
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, clone, is_classifier, is_regressor
from sklearn.ensemble import BaggingClassifier, BaggingRegressor
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor
from sklearn.utils import get_tags

from skdvl._sklearn_compat import (
    HasMethods,
    Interval,
    RealNotInt,
    StrOptions,
    fit_context,
)
from skdvl.base import (
    TASKS,
    ValuerMixin,
    check_targets,
    pandas_index,
    resolve_task,
    validate_valuation_data,
)
from skdvl.result import ValuationResult
from skdvl.valuation._oob_parts import (
    _check_draws,
    _ensemble_parts,
    _finite_scores,
    _fit_ensemble,
    _is_ensemble,
    _member_name,
    _oob_counts,
    _oob_moments,
    _score_members,
    _warn_never_oob,
)

__all__ = ["DataOOBValuer"]

#: Per-sample score functions ``T(y_true, y_pred) -> ndarray``; higher is better.
_POINTWISE_SCORES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "accuracy": lambda y_true, y_pred: (y_true == y_pred).astype(np.float64),
    "neg_squared_error": lambda y_true, y_pred: -np.square(
        np.asarray(y_true, dtype=np.float64) - np.asarray(y_pred, dtype=np.float64)
    ),
    "neg_absolute_error": lambda y_true, y_pred: -np.abs(
        np.asarray(y_true, dtype=np.float64) - np.asarray(y_pred, dtype=np.float64)
    ),
}


class DataOOBValuer(ValuerMixin, BaseEstimator):
    """Data-OOB values: each row's mean score under the bagged models that left it out.

    A bagging ensemble is fitted on ``(X, y)``. For every member :math:`b` and every
    row :math:`i` that member did not draw (its *out-of-bag* rows), the member's
    prediction is scored against :math:`y_i`. The value of row :math:`i` is the mean of
    those scores (Eq. (3) of Kwon & Zou, 2023): rows that the other rows predict well
    are worth more; mislabelled rows score low. It costs one ensemble fit and one
    prediction per member, and needs no validation data.

    Parameters
    ----------
    estimator : estimator, default=None
        The model to bag, or a bagging/forest ensemble to use as it is
        (:class:`~sklearn.ensemble.BaggingClassifier`, ``BaggingRegressor``,
        ``RandomForest*``, ``ExtraTrees*`` with ``bootstrap=True``). None bags
        decision trees, a classifier or a regressor as ``task`` says. An estimator
        decides the task itself (a classifier or a regressor); a ``task`` that
        contradicts it is an error. To value the rows an ensemble was already
        fitted on, pass it wrapped in :class:`sklearn.frozen.FrozenEstimator` with
        that same ``X`` and ``y``.
    n_estimators : int, default=100
        Number of bagged models. Ignored when ``estimator`` is an ensemble.
    max_samples : int or float, default=None
        Rows drawn (with replacement) per model: an int count ``<= n_samples``, a
        float fraction of ``n_samples`` that draws at least one row, or None for
        ``n_samples``. Ignored for an ensemble.
    max_features : int or float, default=1.0
        Features drawn per model, as in ``BaggingClassifier``: an int count
        ``<= n_features`` or a float fraction that selects at least one feature.
        Ignored for an ensemble.
    scoring : {"accuracy", "neg_squared_error", "neg_absolute_error"} or callable, \
            default=None
        Per-row score :math:`T(y_i, \\hat f_b(x_i))`, higher is better; a callable
        takes ``(y_true, y_pred)`` arrays and returns one score per row. None means
        "accuracy" for classifiers and "neg_squared_error" for regressors.
    task : {"auto", "classification", "regression"}, default="auto"
        Used when ``estimator`` is None, to choose the trees. "auto" follows the
        rule of :func:`skdvl.base.resolve_task`: a target whose values are not all
        integers (``type_of_target`` says "continuous") is a regression target;
        strings, booleans and integers are class labels, with a warning naming
        ``task`` when an integer target has more than 20 distinct values (pass
        ``task="regression"`` for a quantity such as a 0-100 score). With an
        estimator, "auto" follows the estimator, and the other values must agree
        with it. Classification refuses (``ValueError`` naming ``y``) a continuous
        ``y``, a single class and labels of mixed types; regression refuses
        non-numeric ``y``.
    n_jobs : int, default=None
        Jobs for fitting the bagged models and for predicting out-of-bag rows.
        Values do not depend on it.
    random_state : int, RandomState instance or None, default=None
        Seeds the bootstrap draws (and the default trees). Ignored for an ensemble,
        whose own ``random_state`` applies.
    verbose : int, default=0
        Show a progress bar over the ensemble members when ``> 0``.

    Attributes
    ----------
    values_ : ndarray or pandas.Series of shape (n_samples,)
        Data-OOB values; NaN for rows that were never out of bag, or whose every
        out-of-bag score was NaN or infinite.
    stderr_ : ndarray or pandas.Series of shape (n_samples,)
        Standard error of each value over the members it was scored by.
    counts_ : ndarray or pandas.Series of shape (n_samples,)
        Number of members for which the row was out of bag and scored a finite
        value.
    result_ : ValuationResult
        The values, variances and counts.
    estimator_ : estimator
        The fitted ensemble (fewer members than asked after an interruption).
    task_ : str
        "classification" or "regression", as used.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Feature names, when ``X`` has string column names.

    Notes
    -----
    Departures from the paper: members of a ``BaggingClassifier`` that also draw
    features are evaluated on their own features (``estimators_features_``), and
    members are compared in the ensemble's label encoding, so labels need not be
    ``0..K-1``. Rows never out of bag (likely only for small ``n_estimators``) get
    NaN and a warning rather than a made-up value. An out-of-bag score that is NaN
    or infinite (a member predicted NaN, say) is left out of its row's mean, with
    one :class:`~skdvl.UtilityFitWarning` giving the count; a row left with no
    finite score gets NaN, and a ``ValueError`` is raised when no score at all is
    finite.

    A bagging or forest ensemble is grown by warm start, a few members per fit:
    scikit-learn draws the members' seeds from ``random_state`` in order, so the
    members are those of a single fit. A ``KeyboardInterrupt`` (Ctrl-C) while the
    ensemble grows keeps the members fitted so far and values the rows with them,
    with a ``RuntimeWarning`` starting "Interrupted:"; with no member fitted yet
    it propagates. Warnings raised by the members' fits (a ``ConvergenceWarning``
    per member, say) come out as one warning per ``fit``, of the first warning's
    category, with their count and the first message. With ``n_jobs > 1`` the
    members are fitted in worker processes, whose warnings are printed by the
    workers and not counted.

    References
    ----------
    .. [1] Kwon, Y. & Zou, J. (2023). "Data-OOB: Out-of-bag Estimate as a Simple and
       Efficient Data Value". ICML 2023, PMLR 202:18135-18152.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_breast_cancer
    >>> from skdvl import DataOOBValuer
    >>> X, y = load_breast_cancer(return_X_y=True)
    >>> y_noisy = y.copy()
    >>> y_noisy[:20] = 1 - y_noisy[:20]
    >>> v = DataOOBValuer(n_estimators=50, random_state=0).fit(X, y_noisy)
    >>> v.values_.shape
    (569,)
    >>> bool(v.values_[:20].mean() < v.values_[20:].mean())
    True
    """

    _parameter_constraints: dict = {
        "estimator": [HasMethods(["fit", "predict"]), None],
        "n_estimators": [Interval(Integral, 1, None, closed="left")],
        "max_samples": [
            None,
            Interval(Integral, 1, None, closed="left"),
            Interval(RealNotInt, 0, 1, closed="right"),
        ],
        "max_features": [
            Interval(Integral, 1, None, closed="left"),
            Interval(RealNotInt, 0, 1, closed="right"),
        ],
        "scoring": [StrOptions(set(_POINTWISE_SCORES)), callable, None],
        "task": [StrOptions(set(TASKS))],
        "n_jobs": [Interval(Integral, None, -1, closed="right"),
                   Interval(Integral, 1, None, closed="left"), None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        estimator: Any = None,
        *,
        n_estimators: int = 100,
        max_samples: float | None = None,
        max_features: float = 1.0,
        scoring: str | Callable | None = None,
        task: str = "auto",
        n_jobs: int | None = None,
        random_state: int | np.random.RandomState | None = None,
        verbose: int = 0,
    ) -> None:
        self.estimator = estimator
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.max_features = max_features
        self.scoring = scoring
        self.task = task
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):  # type: ignore[no-untyped-def]
        tags = super().__sklearn_tags__()
        base = self.estimator if self.estimator is not None else DecisionTreeRegressor()
        inner = get_tags(base)
        tags.input_tags.allow_nan = inner.input_tags.allow_nan
        tags.input_tags.sparse = inner.input_tags.sparse
        return tags

    @fit_context(prefer_skip_nested_validation=False)
    def fit(self, X: Any, y: Any, *, X_val: Any = None, y_val: Any = None) -> DataOOBValuer:
        """Fit the ensemble on ``(X, y)`` and value every row.

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)
            Training rows to value.
        y : array-like of shape (n_samples,)
            Their targets.
        X_val, y_val : None
            Not used: Data-OOB needs no validation data. Accepted, with a warning,
            for the common valuer signature.

        Returns
        -------
        self : DataOOBValuer
        """
        if X_val is not None or y_val is not None:
            warnings.warn(
                "DataOOBValuer scores rows on the ensemble members that left them out "
                "and does not use X_val/y_val; they are ignored.",
                UserWarning, stacklevel=3,
            )
        index = pandas_index(X)
        tags_from = self.estimator if self.estimator is not None else DecisionTreeRegressor()
        X, y, _, _ = validate_valuation_data(self, X, y, estimator=tags_from, min_samples=2)
        self.task_ = self._resolve_task(y)
        check_targets(y, None, self.task_, "DataOOBValuer")
        ensemble = self._make_ensemble(X.shape)
        self.estimator_ = _fit_ensemble(ensemble, X, y, self.verbose)
        members, samples, features = _ensemble_parts(self.estimator_, X.shape)
        classifier = self.task_ == "classification"
        score = self._pointwise_score(classifier)
        classes = self.estimator_.classes_ if classifier else None
        oob, scores = _score_members(
            members, samples, features, X, y, score, classes, self.n_jobs
        )
        _warn_never_oob(_oob_counts(X.shape[0], oob), len(members))
        oob, scores = _finite_scores(oob, scores, X.shape[0], _member_name(members))
        mean, var, counts = _oob_moments(X.shape[0], oob, scores)
        result = ValuationResult(mean, variances=var, counts=counts, algorithm="data_oob")
        self._store_result(result, index=index)
        return self

    def _resolve_task(self, y: np.ndarray) -> str:
        """The task: the estimator's kind, else :func:`skdvl.base.resolve_task`."""
        if self.estimator is None:
            return resolve_task(y, self.task, "DataOOBValuer")
        name = type(self.estimator).__name__
        if is_classifier(self.estimator):
            kind = "classification"
        elif is_regressor(self.estimator):
            kind = "regression"
        else:
            raise ValueError(
                "The 'estimator' parameter of DataOOBValuer must be a classifier or a "
                f"regressor. Got {name} instead."
            )
        if self.task not in ("auto", kind):
            raise ValueError(
                f"The 'task' parameter of DataOOBValuer is {self.task!r}, but the "
                f"estimator {name} does {kind}; pass task='auto' (or {kind!r}), or an "
                f"estimator for {self.task}."
            )
        return resolve_task(y, kind, "DataOOBValuer")

    def _make_ensemble(self, shape: tuple[int, int]) -> Any:
        """The ensemble to fit: the user's own, or ``estimator`` bagged."""
        if self.estimator is not None and _is_ensemble(self.estimator):
            return clone(self.estimator)
        _check_draws(self.max_samples, self.max_features, shape)
        base = self.estimator
        if base is None:
            regression = self.task_ == "regression"
            base = DecisionTreeRegressor() if regression else DecisionTreeClassifier()
        bagging = BaggingRegressor if is_regressor(base) else BaggingClassifier
        return bagging(
            clone(base), n_estimators=self.n_estimators,
            # None is n_samples; scikit-learn < 1.7 spells it 1.0
            max_samples=1.0 if self.max_samples is None else self.max_samples,
            max_features=self.max_features, bootstrap=True, n_jobs=self.n_jobs,
            random_state=self.random_state,
        )

    def _pointwise_score(self, classifier: bool) -> Callable:
        if callable(self.scoring):
            return self.scoring
        name = self.scoring or ("accuracy" if classifier else "neg_squared_error")
        if name == "accuracy" and not classifier:
            raise ValueError(
                "The 'scoring' parameter of DataOOBValuer must not be 'accuracy' for a "
                "regressor; use 'neg_squared_error' or 'neg_absolute_error'."
            )
        return _POINTWISE_SCORES[name]
