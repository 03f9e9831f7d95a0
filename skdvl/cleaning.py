"""Data cleaning by value: drop the rows that hurt the model, inside a pipeline.

:class:`DataCleaner` is a resampler (``fit_resample``, the imbalanced-learn protocol,
duck-typed) for :class:`imblearn.pipeline.Pipeline`; :class:`CleanedEstimator` does the
same job as a meta-estimator inside a plain scikit-learn :class:`~sklearn.pipeline.Pipeline`.
"""

from __future__ import annotations

import os
import warnings
from numbers import Real
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone, is_classifier, is_regressor
from sklearn.utils import get_tags
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted, check_memory, validate_data

from skdvl._sklearn_compat import (
    HasMethods,
    Interval,
    called_from_sklearn,
    check_sample_weight,
    fit_context,
    num_samples,
    safe_indexing,
    validate_params,
)
from skdvl.base import ValuerMixin, pandas_index
from skdvl.groups import check_groups
from skdvl.valuation import KNNShapley
from skdvl.valuation._amortized import prefit_values

__all__ = ["CleanedEstimator", "DataCleaner", "rows_to_keep"]

#: Methods that make an estimator a model or a transformer, not a valuer.
_NOT_VALUER_METHODS = ("predict", "transform", "fit_resample", "kneighbors")

#: scikit-learn functions that ask whether a step transforms: Pipeline's and
#: FeatureUnion's step checks, ColumnTransformer's, and the fit of a step.
_STEP_CHECKS = frozenset({"_validate_steps", "_validate_transformers", "_fit_transform_one"})

_PIPELINE_MESSAGE = (
    "DataCleaner drops rows, so it cannot be an intermediate step of a scikit-learn "
    "Pipeline (or ColumnTransformer, FeatureUnion), which passes every row on through "
    "fit_transform / transform. Use CleanedEstimator(estimator, DataCleaner(...)) as "
    "the last step of a sklearn Pipeline, or an imblearn.pipeline.Pipeline, which "
    "calls DataCleaner.fit_resample at fit time only."
)


def _default_valuer() -> Any:
    """KNN-Shapley: exact, and fast enough to run inside every cross-validation fold."""
    return KNNShapley()


def _value_rows(valuer: Any, X: Any, y: Any, groups: Any = None) -> np.ndarray:
    """Fit an (unfitted) valuer and return its values as a float array.

    Module-level so that ``joblib.Memory`` can cache it: the key is the valuer's
    parameters and the data, never ``fraction`` or ``threshold``. With
    ``groups``, the values are the groups', in the order of their first row.
    """
    if groups is None:
        fitted = valuer.fit(X, y)
    elif getattr(valuer, "_values_groups", False):
        fitted = valuer.fit(X, y, groups=groups)
    else:
        raise ValueError(
            f"DataCleaner got groups, but its valuer {type(valuer).__name__} does not value "
            "groups of rows; use a utility-based valuer (ShapleyValuer, BanzhafValuer, "
            "BetaShapleyValuer, LOOValuer, ...) or fit without groups.")
    if not hasattr(fitted, "values_"):
        raise ValueError(
            "The 'valuer' parameter of DataCleaner must set values_ in fit. Got "
            f"{type(valuer).__name__} instead, which did not."
        )
    return np.asarray(fitted.values_, dtype=np.float64)


def _check_valuer(valuer: Any) -> None:
    """Refuse, before any work, a model or transformer given as ``valuer``."""
    if valuer is None or isinstance(valuer, ValuerMixin):
        return
    roles = [m for m in _NOT_VALUER_METHODS if hasattr(valuer, m)]
    if roles or is_classifier(valuer) or is_regressor(valuer):
        name = type(valuer).__name__
        has = f" (it has {roles[0]}())" if roles else ""
        hint = (f"; to value rows with this model, pass e.g. DataOOBValuer({name}(...)) "
                f"or ShapleyValuer({name}(...))"
                if is_classifier(valuer) or is_regressor(valuer) else "")
        raise ValueError(
            "The 'valuer' parameter of DataCleaner must be a valuer: an estimator whose "
            "fit(X, y) sets values_, such as KNNShapley() or DataOOBValuer(). Got "
            f"{name} instead{has}, which is not a valuer{hint}."
        )


def _check_values(values: np.ndarray, n: int, valuer: Any) -> None:
    """Refuse values that cannot rank the rows; warn about the rows kept unvalued."""
    name = type(valuer).__name__
    if values.shape != (n,):
        raise ValueError(
            f"The 'valuer' parameter of DataCleaner must give one value per row: "
            f"{name} gave values_ of shape {values.shape} for {n} rows."
        )
    missing = int(np.count_nonzero(np.isnan(values)))
    if missing == n:
        raise ValueError(
            f"DataCleaner: the valuer {name} gave no value (NaN) to any of the {n} rows, "
            "so there is nothing to rank them by; see the valuer's warnings."
        )
    if missing:
        warnings.warn(
            f"DataCleaner: {missing} of {n} rows have no value (NaN: the valuer {name} "
            "could not value them, e.g. never out of bag or interrupted before they "
            "were reached); they are kept, never dropped.", UserWarning, stacklevel=4)


class _StepGuard:
    """``transform`` / ``fit_transform`` of DataCleaner: absent, except to sklearn's
    step checks, which get an error pointing to CleanedEstimator.

    scikit-learn's Pipeline asks ``hasattr(step, "transform")`` of every
    intermediate step and would otherwise fail with a message that does not say
    what to use instead. imbalanced-learn's Pipeline asks the same question from
    its own module and must get "no" (a step must not both transform and resample),
    so the caller is told apart by its module and function name.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is not None and called_from_sklearn(_STEP_CHECKS):
            raise TypeError(_PIPELINE_MESSAGE)
        owner = objtype.__name__ if objtype is not None else "DataCleaner"
        raise AttributeError(
            f"'{owner}' object has no attribute '{self.name}'; DataCleaner resamples "
            "(fit_resample) and does not transform.")


#: Constraints of ``fraction`` and ``threshold``, shared by DataCleaner and rows_to_keep.
_CUT_CONSTRAINTS: dict = {
    "fraction": [Interval(Real, 0, 1, closed="left")],
    "threshold": [Interval(Real, None, None, closed="neither"), None],
}


@validate_params(
    {"values": ["array-like"], **_CUT_CONSTRAINTS}, prefer_skip_nested_validation=True
)
def rows_to_keep(
    values: ArrayLike, fraction: float = 0.1, threshold: float | None = None
) -> np.ndarray:
    """Positions of the rows that survive cleaning by value, in their original order.

    The rule of :class:`DataCleaner`, for values computed elsewhere: with
    ``threshold``, the rows valued strictly below it are dropped; otherwise the
    ``floor(fraction * n)`` lowest-valued rows are, ties at the cut going by
    position. NaN values (rows a method could not value) are never dropped.

    Parameters
    ----------
    values : array-like of shape (n_samples,)
        One value per row, higher is better; NaN for a row without value.
    fraction : float in [0, 1), default=0.1
        Share of rows to drop, lowest values first. Ignored when ``threshold`` is set.
    threshold : float, default=None
        If set (a finite number), drop exactly the rows valued below it instead.

    Returns
    -------
    kept : ndarray of shape (n_kept,)
        Sorted positions of the rows kept; empty if ``threshold`` drops every row.

    See Also
    --------
    DataCleaner : values the rows with a valuer, then applies this rule.

    Examples
    --------
    >>> import numpy as np
    >>> from skdvl.cleaning import rows_to_keep
    >>> values = np.array([0.3, -0.2, np.nan, 0.5, -0.1])
    >>> rows_to_keep(values, fraction=0.4)
    array([0, 2, 3])
    >>> rows_to_keep(values, threshold=0.4)   # NaN is kept
    array([2, 3])
    """
    return _rows_to_keep(np.asarray(values, dtype=np.float64).reshape(-1), fraction, threshold)


def _rows_to_keep(values: np.ndarray, fraction: float, threshold: float | None) -> np.ndarray:
    """:func:`rows_to_keep` on a float array, without validation."""
    n = values.shape[0]
    drop = np.zeros(n, dtype=bool)
    if threshold is not None:
        with np.errstate(invalid="ignore"):
            drop = values < threshold
    else:
        k = int(np.floor(fraction * n + 1e-9))
        valued = np.flatnonzero(~np.isnan(values))
        order = valued[np.argsort(values[valued], kind="stable")]
        drop[order[:k]] = True
    return np.flatnonzero(~drop)


class DataCleaner(BaseEstimator):
    """Drop the lowest-valued training rows: a resampler for imbalanced-learn pipelines.

    ``fit_resample(X, y)`` values every row with ``valuer`` and returns the rows that
    survive. In an :class:`imblearn.pipeline.Pipeline` it runs at fit time only (on
    the training folds of a cross-validation) and is skipped at predict time, so the
    drop fraction can be chosen by :class:`~sklearn.model_selection.GridSearchCV`.
    Values do not depend on ``fraction`` or ``threshold``: with ``memory`` set, a grid
    over fractions values each training fold once.

    Parameters
    ----------
    valuer : valuer, default=None
        Any estimator with ``fit(X, y)`` that sets ``values_`` (higher is better).
        None means ``KNNShapley()``.
    fraction : float in [0, 1), default=0.1
        Share of rows to drop, lowest values first (``floor(fraction * n)`` rows).
        0 keeps every row and skips valuation. Ignored when ``threshold`` is set.
    threshold : float, default=None
        If set (a finite number), drop exactly the rows valued below it instead.
    memory : str, path, joblib.Memory or None, default=None
        Where to cache values, keyed by the valuer's parameters and the data (as in
        :class:`~sklearn.pipeline.Pipeline`'s ``memory``). None caches nothing.
    prefit : bool, default=False
        If True, ``valuer`` is already fitted and values new rows by
        ``predict(X, y)`` (a fitted :class:`~skdvl.AmortizedValuer`, wrapped in
        :class:`sklearn.frozen.FrozenEstimator` to survive ``clone`` in pipelines
        and grid searches): ``fit_resample`` drops by the predicted values, with no
        utility evaluated. Sound only where the rows' values are those of the game
        the valuer learned: the same model and validation data, and rows from the
        same distribution (see the AmortizedValuer Notes).

    Attributes
    ----------
    values_ : ndarray or pandas.Series of shape (n_samples,), or None
        The values of the rows seen in the last fit (a Series on ``X``'s index for
        DataFrame input); None when ``fraction=0`` skipped valuation. With
        ``groups``, a Series of the groups' values indexed by their labels.
    sample_indices_ : ndarray of shape (n_kept,)
        Positions, in ``X``, of the rows kept, in their original order.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Feature names, when ``X`` has string column names.

    See Also
    --------
    CleanedEstimator : the same cleaning inside a plain scikit-learn ``Pipeline``.

    Notes
    -----
    Rows whose value is NaN (e.g. never out of bag for Data-OOB, or not reached
    before an interruption) are never dropped, with a warning that counts them;
    when every value is NaN, ``fit`` raises. ``valuer`` is checked before any work:
    a model or transformer (anything with ``predict``, ``transform``,
    ``fit_resample`` or ``kneighbors`` that is not a skdvl valuer) is refused. The
    valuer's own warnings (e.g. :class:`~skdvl.UtilityFitWarning` for failed fits)
    and errors pass through, except that a ``memory`` cache hit replays no warning.

    ``fit_resample(X, y, groups=g)`` drops whole groups (data sources): the
    valuer values the groups (the players are the labels of ``g``), and
    ``fraction`` is then the share of *groups* dropped, lowest values first. In
    an imbalanced-learn Pipeline the labels reach the cleaner as a step
    parameter, ``pipe.fit(X, y, clean__groups=g)``, which ``GridSearchCV``
    slices by fold like any per-row fit parameter.

    In a plain :class:`sklearn.pipeline.Pipeline` a DataCleaner cannot be an
    intermediate step (those must keep every row): such a pipeline raises a
    ``TypeError`` pointing to :class:`CleanedEstimator`.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_breast_cancer
    >>> from skdvl.cleaning import DataCleaner
    >>> from skdvl import DataOOBValuer
    >>> X, y = load_breast_cancer(return_X_y=True)
    >>> cleaner = DataCleaner(DataOOBValuer(n_estimators=30, random_state=0), fraction=0.1)
    >>> X_kept, y_kept = cleaner.fit_resample(X, y)
    >>> X_kept.shape
    (513, 30)
    >>> cleaner.sample_indices_[:5]
    array([0, 1, 2, 3, 4])
    """

    _parameter_constraints: dict = {
        "valuer": [HasMethods(["fit"]), None],
        **_CUT_CONSTRAINTS,
        "memory": [None, str, os.PathLike, HasMethods(["cache"])],
        "prefit": ["boolean"],
    }

    def __init__(
        self,
        valuer: Any = None,
        *,
        fraction: float = 0.1,
        threshold: float | None = None,
        memory: Any = None,
        prefit: bool = False,
    ) -> None:
        self.valuer = valuer
        self.fraction = fraction
        self.threshold = threshold
        self.memory = memory
        self.prefit = prefit

    transform = _StepGuard()
    fit_transform = _StepGuard()

    def __sklearn_tags__(self):  # type: ignore[no-untyped-def]
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        if self.valuer is not None:
            inner = get_tags(self.valuer).input_tags
            tags.input_tags.allow_nan = inner.allow_nan
            tags.input_tags.sparse = inner.sparse
        return tags

    def fit(self, X: Any, y: Any, *, groups: Any = None) -> DataCleaner:
        """Value the rows of ``(X, y)`` and choose those to keep.

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)
            Training rows (a DataFrame keeps its index in ``values_``).
        y : array-like of shape (n_samples,)
            Their targets.
        groups : array-like of shape (n_samples,), default=None
            A label per row: value and drop whole groups (see the class notes).

        Returns
        -------
        self : DataCleaner
        """
        self._fit(X, y, groups)
        return self

    def fit_resample(self, X: Any, y: Any, *, groups: Any = None) -> tuple[Any, Any]:
        """Value the rows of ``(X, y)`` and return the rows kept.

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)
            Training rows (a DataFrame keeps its index in ``values_``).
        y : array-like of shape (n_samples,)
            Their targets.
        groups : array-like of shape (n_samples,), default=None
            A label per row: value and drop whole groups (see the class notes).

        Returns
        -------
        X_resampled : same type as X, shape (n_kept, n_features)
        y_resampled : same type as y, shape (n_kept,)
        """
        X, y = self._fit(X, y, groups)
        return (
            safe_indexing(X, self.sample_indices_),
            safe_indexing(y, self.sample_indices_),
        )

    @fit_context(prefer_skip_nested_validation=False)
    def _fit(self, X: Any, y: Any, groups: Any = None) -> tuple[Any, Any]:
        """Set the fitted attributes; return ``X`` and ``y`` as they are to be sliced.

        DataFrames and Series come back as they are (pandas in, pandas out); any
        other input comes back validated (an ndarray or a CSR/CSC matrix).
        """
        if not self.prefit:
            _check_valuer(self.valuer)
        tags = self.__sklearn_tags__().input_tags
        X_checked, y_checked = validate_data(
            self, X, y, accept_sparse=["csr", "csc"] if tags.sparse else False,
            ensure_all_finite="allow-nan" if tags.allow_nan else True, dtype=None,
            ensure_min_samples=2,
        )
        X = X if isinstance(X, pd.DataFrame) else X_checked
        y = y if isinstance(y, (pd.Series, pd.DataFrame)) else y_checked
        n = X.shape[0]
        if self.fraction == 0 and self.threshold is None:
            self.values_ = None
            self.sample_indices_ = np.arange(n)
            return X, y
        if self.prefit and groups is not None:
            raise ValueError("DataCleaner(prefit=True) values rows, not groups; fit "
                             "without groups or set prefit=False.")
        valuer = clone(self.valuer) if self.valuer is not None else _default_valuer()
        memory = os.fspath(self.memory) if isinstance(self.memory, os.PathLike) else self.memory
        if groups is not None:
            labels, codes = check_groups(groups, n)
        if self.prefit:  # the fitted valuer predicts: nothing to cache
            valuer = self.valuer
            values = prefit_values(valuer, X, y)
        else:
            values = check_memory(memory).cache(_value_rows)(valuer, X, y, groups)
        if groups is None:
            _check_values(values, n, valuer)
            kept = _rows_to_keep(values, self.fraction, self.threshold)
        else:
            _check_values(values, labels.shape[0], valuer)
            kept_groups = _rows_to_keep(values, self.fraction, self.threshold)
            kept = np.flatnonzero(np.isin(codes, kept_groups))
        if kept.size == 0:
            raise ValueError(
                f"The 'threshold' parameter of DataCleaner would drop all {n} rows "
                f"(every value is below {self.threshold}); lower it."
            )
        index = pandas_index(X)
        if groups is not None:
            self.values_ = pd.Series(values, index=pd.Index(labels, name="group"),
                                     name="value")
        else:
            self.values_ = values if index is None else pd.Series(values, index=index,
                                                                  name="value")
        self.sample_indices_ = kept
        return X, y


def _estimator_has(attr: str):  # type: ignore[no-untyped-def]
    """Check the fitted estimator if there is one, else the unfitted one."""

    def check(self: CleanedEstimator) -> bool:
        est = getattr(self, "estimator_", self.estimator)
        return hasattr(est, attr)

    return check


def _delegate(name: str, summary: str) -> Any:
    """``CleanedEstimator.<name>(X)``: the fitted estimator's own, on all rows given."""

    def method(self: CleanedEstimator, X: Any) -> np.ndarray:
        check_is_fitted(self, "estimator_")
        return getattr(self.estimator_, name)(X)

    method.__name__ = name
    method.__qualname__ = f"CleanedEstimator.{name}"
    method.__doc__ = f"""{summary}

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)
            Rows to {name.replace("_", " ")} (none are dropped).

        Returns
        -------
        ndarray
            The output of ``estimator_.{name}(X)``.
        """
    return available_if(_estimator_has(name))(method)


class CleanedEstimator(MetaEstimatorMixin, BaseEstimator):
    """Fit ``estimator`` on the rows a :class:`DataCleaner` keeps.

    The meta-estimator form of :class:`DataCleaner`, for plain scikit-learn
    pipelines (whose steps may not drop rows): ``fit`` cleans, then fits a clone of
    ``estimator`` on the kept rows; ``predict``, ``predict_proba``,
    ``decision_function``, ``score`` and ``classes_`` are those of the fitted
    estimator, applied to all rows given.

    Parameters
    ----------
    estimator : estimator
        The model to fit on the cleaned rows.
    cleaner : DataCleaner, default=None
        How to clean; None means ``DataCleaner()``. Its parameters are reachable
        as ``cleaner__fraction`` etc. in a grid search.

    Attributes
    ----------
    estimator_ : estimator
        ``estimator`` fitted on the kept rows.
    cleaner_ : DataCleaner
        The fitted cleaner.
    sample_indices_ : ndarray of shape (n_kept,)
        Positions of the kept rows.
    classes_ : ndarray of shape (n_classes,)
        The classes, for classifiers.
    n_features_in_ : int
        Number of features seen in ``fit``.

    Examples
    --------
    >>> from sklearn.datasets import load_breast_cancer
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skdvl.cleaning import CleanedEstimator, DataCleaner
    >>> from skdvl import DataOOBValuer
    >>> X, y = load_breast_cancer(return_X_y=True)
    >>> cleaner = DataCleaner(DataOOBValuer(n_estimators=30, random_state=0), fraction=0.05)
    >>> model = make_pipeline(StandardScaler(), CleanedEstimator(LogisticRegression(), cleaner))
    >>> model.fit(X, y).predict(X[:3])
    array([0, 0, 0])
    >>> model[-1].sample_indices_.shape
    (541,)
    """

    _parameter_constraints: dict = {
        "estimator": [HasMethods(["fit"])],
        "cleaner": [HasMethods(["fit_resample"]), None],
    }

    def __init__(self, estimator: Any, cleaner: Any = None) -> None:
        self.estimator = estimator
        self.cleaner = cleaner

    def __sklearn_tags__(self):  # type: ignore[no-untyped-def]
        tags = super().__sklearn_tags__()
        inner = get_tags(self.estimator)
        cleaner = get_tags(self.cleaner if self.cleaner is not None else DataCleaner())
        tags.estimator_type = inner.estimator_type
        tags.classifier_tags = inner.classifier_tags
        tags.regressor_tags = inner.regressor_tags
        tags.target_tags.required = True
        tags.input_tags.sparse = inner.input_tags.sparse and cleaner.input_tags.sparse
        tags.input_tags.allow_nan = inner.input_tags.allow_nan and cleaner.input_tags.allow_nan
        return tags

    @fit_context(prefer_skip_nested_validation=False)
    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> CleanedEstimator:
        """Clean ``(X, y)``, then fit the estimator on the rows kept.

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)
            Training rows (a DataFrame keeps its index in ``values_``).
        y : array-like of shape (n_samples,)
            Their targets.
        sample_weight : array-like of shape (n_samples,), default=None
            Passed to ``estimator.fit``, sliced to the kept rows; the cleaner
            does not see it.

        Returns
        -------
        self : CleanedEstimator
        """
        self.cleaner_ = clone(self.cleaner) if self.cleaner is not None else DataCleaner()
        X_kept, y_kept = self.cleaner_.fit_resample(X, y)
        self.sample_indices_ = self.cleaner_.sample_indices_
        fit_params = {}
        if sample_weight is not None:
            weights = check_sample_weight(sample_weight, np.empty((num_samples(X), 0)))
            fit_params["sample_weight"] = weights[self.sample_indices_]
        self.estimator_ = clone(self.estimator).fit(X_kept, y_kept, **fit_params)
        self.n_features_in_ = self.cleaner_.n_features_in_
        if hasattr(self.cleaner_, "feature_names_in_"):
            self.feature_names_in_ = self.cleaner_.feature_names_in_
        return self

    @property
    def classes_(self) -> np.ndarray:
        """The classes of the fitted classifier."""
        check_is_fitted(self, "estimator_")
        return self.estimator_.classes_

    predict = _delegate("predict", "Predict with the estimator fitted on the cleaned rows.")
    predict_proba = _delegate(
        "predict_proba", "Class probabilities from the estimator fitted on the cleaned rows.")
    predict_log_proba = _delegate(
        "predict_log_proba",
        "Log class probabilities from the estimator fitted on the cleaned rows.")
    decision_function = _delegate(
        "decision_function", "Decision function of the estimator fitted on the cleaned rows.")

    @available_if(_estimator_has("score"))
    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """The fitted estimator's ``score`` on ``(X, y)`` (all rows, none dropped).

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)
            Test rows.
        y : array-like of shape (n_samples,)
            Their targets.
        sample_weight : array-like of shape (n_samples,), default=None
            Passed to the estimator's ``score`` when given.

        Returns
        -------
        float
        """
        check_is_fitted(self, "estimator_")
        if sample_weight is None:
            return self.estimator_.score(X, y)
        return self.estimator_.score(X, y, sample_weight=sample_weight)
