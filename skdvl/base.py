"""What all valuers share: fitted attributes, input validation, pandas alignment."""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

import numpy as np
import pandas as pd
import sklearn
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.utils import get_tags
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import validate_data

from skdvl.result import ValuationResult

__all__ = ["ValuerMixin", "resolve_task", "check_targets", "TASKS"]

#: The values of every valuer's ``task`` parameter.
TASKS = ("auto", "classification", "regression")

#: An integer target with more distinct values than this looks like a quantity
#: (a score, a count), not class labels: ``task="auto"`` then warns.
_MANY_INTEGER_VALUES = 20


class ValuerMixin:
    """Mixin for data valuers: estimators whose ``fit`` sets ``values_``.

    A valuer stores a :class:`~skdvl.ValuationResult` in ``result_`` and exposes
    its columns as ``values_``, ``stderr_`` and ``counts_``: numpy arrays, or
    :class:`pandas.Series` on the input's index when ``X`` was a DataFrame.
    """

    def __sklearn_tags__(self):  # type: ignore[no-untyped-def]
        tags = super().__sklearn_tags__()  # type: ignore[misc]
        tags.target_tags.required = True
        return tags

    def _store_result(self, result: ValuationResult, index: Any = None) -> None:
        """Set ``result_``, ``values_``, ``stderr_``, ``counts_`` from ``result``.

        ``index`` is the input DataFrame's index (pandas in, pandas out) or None.
        """
        if index is not None:
            result.names = np.asarray(index)
        self.result_ = result
        self._pandas_index_ = index
        self.values_ = self._as_output(result.values, "values")
        self.stderr_ = self._as_output(result.stderr, "stderr")
        self.counts_ = self._as_output(result.counts, "counts")

    def _as_output(self, arr: np.ndarray, name: str) -> Any:
        index = getattr(self, "_pandas_index_", None)
        if index is None:
            return arr
        return pd.Series(arr, index=index, name=name)


def pandas_index(X: Any) -> Any:
    """The index of a DataFrame or Series, else None."""
    return X.index if isinstance(X, (pd.DataFrame, pd.Series)) else None


def validate_valuation_data(
    valuer: Any, X: Any, y: Any, X_val: Any = None, y_val: Any = None,
    *, estimator: Any = None, min_samples: int = 1,
) -> tuple[Any, np.ndarray, Any, Any]:
    """Validate training and validation data for ``valuer.fit``.

    Sparse input and NaN are accepted when ``estimator``'s tags say it takes them.
    Sets ``n_features_in_`` (and ``feature_names_in_``) on ``valuer``.

    pandas inputs are checked before anything is fitted: a ``y`` (``y_val``)
    whose index holds the labels of ``X``'s (``X_val``'s) in another order is
    aligned to it, with a warning, and one with other labels is refused (see
    :func:`align_target`); DataFrame columns of strings that ``estimator``
    cannot fit are refused by name (see :func:`check_feature_dtypes`).

    Returns
    -------
    X, y, X_val, y_val
        Validated arrays; ``X_val`` and ``y_val`` are None when not given.
    """
    accept_sparse: Any = False
    allow_nan = takes_strings = False
    if estimator is not None:
        tags = get_tags(estimator).input_tags
        accept_sparse = ["csr", "csc"] if tags.sparse else False
        allow_nan, takes_strings = tags.allow_nan, tags.string
    check: dict[str, Any] = dict(
        accept_sparse=accept_sparse,
        ensure_all_finite="allow-nan" if allow_nan else True,
        dtype=None if takes_strings else "numeric",
    )
    name = type(valuer).__name__
    y = align_target(X, y, name)
    y_val = align_target(X_val, y_val, name, names=("X_val", "y_val"))
    check_feature_dtypes(X, estimator, name)
    check_feature_dtypes(X_val, estimator, name, x_name="X_val")
    X, y = validate_data(valuer, X, y, y_numeric=False, multi_output=False, **check)
    keep = takes_strings or isinstance(estimator, (Pipeline, ColumnTransformer))
    X = _numeric(X, keep)
    n = X.shape[0]
    if n < min_samples:
        raise ValueError(
            f"{name} needs at least {min_samples} samples to value; got "
            f"n_samples = {n} ({n} sample{'s' if n != 1 else ''})."
        )
    if (X_val is None) != (y_val is None):
        raise ValueError(
            f"X_val and y_val must be given together. Got X_val "
            f"{'None' if X_val is None else 'set'} and y_val "
            f"{'None' if y_val is None else 'set'}."
        )
    if X_val is not None:
        X_val, y_val = validate_data(valuer, X_val, y_val, reset=False, **check)
        X_val = _numeric(X_val, keep)
    return X, y, X_val, y_val


def _numeric(X: Any, keep: bool) -> Any:
    """Numbers held as strings (an ``object`` array) as float64, as scikit-learn 1.9
    converts them (1.6 keeps a DataFrame's mixed columns as objects); ``keep`` for an
    estimator that takes strings or may encode them (a Pipeline)."""
    if keep or getattr(X, "dtype", None) != np.dtype(object):
        return X
    try:
        return np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):  # not numbers: the estimator's own error stands
        return X


def align_target(
    X: Any, y: Any, owner: str, *, names: tuple[str, str] = ("X", "y")
) -> Any:
    """``y`` aligned to ``X``'s index when both are pandas objects with the same labels.

    scikit-learn pairs ``X`` and ``y`` by position; a pandas user expects the
    pairing by label. When both carry an index and the two hold the same labels
    in a different order, ``y`` is reordered to ``X``'s index (as pandas would
    align them) with a ``UserWarning`` naming both. Other inputs are returned as
    they are.

    Raises
    ------
    ValueError
        When the two indexes have the same length but different labels, or the
        same labels in another order with some repeated (no alignment is
        unambiguous): pairing by position or by label would silently differ.
    """
    x_name, y_name = names
    if not isinstance(X, (pd.DataFrame, pd.Series)) or not isinstance(
            y, (pd.DataFrame, pd.Series)):
        return y
    x_index, y_index = X.index, y.index
    if len(x_index) != len(y_index) or x_index.equals(y_index):
        return y  # a length mismatch is validate_data's error
    fix = (f"Pass {y_name}.set_axis({x_name}.index) to pair the rows by position, or "
           f"{y_name}.loc[{x_name}.index] to pair them by label.")
    if x_index.has_duplicates or y_index.has_duplicates:
        raise ValueError(
            f"{owner}: the index of {y_name} differs from the index of {x_name}, and an "
            f"index with repeated labels cannot be aligned. {fix}")
    positions = y_index.get_indexer(x_index)
    missing = np.flatnonzero(positions < 0)
    if missing.size:
        raise ValueError(
            f"{owner}: the index of {y_name} does not hold the labels of the index of "
            f"{x_name} ({missing.size} of {len(x_index)} labels of {x_name} are not in "
            f"{y_name}, e.g. {x_index[missing[0]]!r}), so the rows cannot be paired by "
            f"label. {fix}")
    warnings.warn(
        f"{owner}: the index of {y_name} holds the labels of the index of {x_name} in a "
        f"different order (the first row of {x_name} is {x_index[0]!r}, of {y_name} "
        f"{y_index[0]!r}); {y_name} is aligned to the index of {x_name}, pairing the "
        f"rows by label. Pass {y_name}.to_numpy() to pair them by position.",
        UserWarning, stacklevel=_caller_stacklevel())
    return y.iloc[positions]


def _caller_stacklevel() -> int:
    """The ``stacklevel`` for a warning of the caller that points at the user's code:
    the first frame outside skdvl and scikit-learn (valuers call this at different
    depths)."""
    roots = tuple(os.path.dirname(str(path)) + os.sep for path in (__file__, sklearn.__file__))
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(roots):
        frame, level = frame.f_back, level + 1
    return level


def _is_text(column: pd.Series, encoded: bool) -> bool:
    """Whether a DataFrame column holds strings that no numeric conversion reads.

    A ``category`` column of strings reaches the estimator as strings (scikit-learn's
    validation keeps it); with ``encoded`` (a Pipeline, which may encode it) it passes.
    """
    dtype = column.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return not encoded and not pd.api.types.is_numeric_dtype(dtype.categories.dtype)
    if not (pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype)):
        return False
    try:
        column.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        return True
    return False


def check_feature_dtypes(X: Any, estimator: Any, owner: str, *, x_name: str = "X") -> None:
    """Refuse, before any fit, DataFrame columns of strings ``estimator`` cannot fit.

    The valuers pass ``X`` to the estimator as an array: a column of strings
    (``object``, ``string`` or ``category`` dtype) would fail every fit with
    "could not convert string to float" and no column name. Estimators whose tags
    say they take strings or categorical input are trusted, and so are ``category``
    columns with a :class:`~sklearn.pipeline.Pipeline` or
    :class:`~sklearn.compose.ColumnTransformer`, which may encode them (by
    position: the column names do not reach it).

    Raises
    ------
    ValueError
        Naming the columns, their dtypes and the estimator.
    """
    if not isinstance(X, pd.DataFrame):
        return
    if estimator is not None:
        tags = get_tags(estimator).input_tags
        if tags.string or tags.categorical:
            return
    encoded = isinstance(estimator, (Pipeline, ColumnTransformer))
    bad = [j for j in range(X.shape[1]) if _is_text(X.iloc[:, j], encoded)]
    if not bad:
        return
    columns = [X.columns[j] for j in bad]
    shown = ", ".join(f"{c!r} ({X.dtypes.iloc[j]})" for c, j in zip(columns[:5], bad))
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    est = type(estimator).__name__ if estimator is not None else "the estimator"
    raise ValueError(
        f"{owner}: {x_name} has {len(bad)} non-numeric column(s) that {est} cannot fit: "
        f"{shown}{more}. {owner} passes {x_name} to the estimator as an array. Encode "
        f"them as numbers first (e.g. pandas.get_dummies({x_name}, columns="
        f"{columns[:5]!r})), or give them the 'category' dtype and pass a Pipeline that "
        f"encodes them by position, e.g. make_pipeline(make_column_transformer("
        f"(OneHotEncoder(), {bad[:5]}), remainder='passthrough'), <your estimator>).")


def _kind(y: np.ndarray) -> str:
    """"number", "bool", "label" (strings) or "mixed" (strings and numbers) for a target."""
    y = np.asarray(y)
    if y.dtype.kind == "b":
        return "bool"
    if y.dtype.kind in "iuf":
        return "number"
    if y.dtype.kind != "O":
        return "label"
    sample = y.reshape(-1)[:10_000]
    numeric = [isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
               for v in sample]
    if all(numeric):
        return "number"
    return "label" if not any(numeric) else "mixed"


def _first(y: np.ndarray) -> Any:
    """The first entry of ``y`` as a plain Python value, for messages."""
    v = np.asarray(y).reshape(-1)[0]
    return v.item() if isinstance(v, np.generic) else v


def resolve_task(y: Any, task: str, owner: str) -> str:
    """"classification" or "regression" for target ``y`` and a ``task`` parameter.

    The rule of ``task="auto"``: a target whose values are not all integers
    (scikit-learn's :func:`~sklearn.utils.multiclass.type_of_target` says
    "continuous") is a regression target; anything else (strings, booleans,
    integers, integral floats) is class labels. An integer target with more than
    20 distinct values (a 0-100 score) is still taken as labels, with a warning
    naming ``task``: pass ``task="regression"`` for a quantity, or
    ``task="classification"`` to confirm (and silence the warning).

    Raises
    ------
    ValueError
        When ``task`` is unknown, ``y`` mixes types (strings and numbers), or
        ``task="regression"`` gets non-numeric labels.
    """
    if task not in TASKS:
        raise ValueError(
            f"The 'task' parameter of {owner} must be one of {list(TASKS)}. "
            f"Got {task!r} instead.")
    y = np.asarray(y)
    kind = _kind(y)
    if kind == "mixed":
        kinds = sorted({type(v).__name__ for v in y.reshape(-1)[:10_000]})
        raise ValueError(
            f"{owner}: y mixes label types ({', '.join(kinds)}); labels must all be "
            "strings or all numbers.")
    if task == "regression":
        if kind != "number":
            raise ValueError(
                f"{owner} got task='regression' but y holds non-numeric labels "
                f"(dtype {y.dtype}, e.g. {_first(y)!r}); use task='classification'.")
        return "regression"
    if task == "classification":
        return "classification"
    if kind != "number":
        return "classification"
    if type_of_target(y) == "continuous":
        return "regression"
    n_distinct = np.unique(y).shape[0]
    if n_distinct > _MANY_INTEGER_VALUES:
        warnings.warn(
            f"{owner}: y holds {n_distinct} distinct integer values, so task='auto' treats "
            f"it as classification with {n_distinct} classes. If y is a quantity (a score, "
            "a count), pass task='regression'; pass task='classification' to confirm.",
            UserWarning, stacklevel=3)
    return "classification"


def check_targets(y: Any, y_val: Any, task: str, owner: str) -> None:
    """Refuse targets a ``task`` cannot use, naming the argument at fault.

    Classification needs discrete labels (not a continuous ``y``), at least two
    classes in ``y``, and ``y_val`` of the same kind as ``y`` (numbers vs
    strings). Regression needs numeric ``y`` and ``y_val``.
    """
    y = np.asarray(y)
    if task == "classification":
        if _kind(y) == "number" and type_of_target(y) == "continuous":
            raise ValueError(
                f"{owner} is valuing for classification, but y is continuous (e.g. "
                f"{_first(y)!r}); pass task='regression' or a regressor.")
        n_classes = np.unique(y).shape[0]
        if n_classes < 2:
            raise ValueError(
                f"{owner} needs at least 2 classes in y for classification; got only "
                f"{_first(y)!r} ({y.shape[0]} rows). Every coalition would be "
                "degenerate and every value 0.")
    if y_val is None:
        return
    y_val = np.asarray(y_val)
    kind, kind_val = _kind(y), _kind(y_val)
    if kind_val == "mixed":
        raise ValueError(f"{owner}: y_val mixes label types; labels must all be strings or "
                         "all numbers.")
    if task == "regression":
        if kind_val != "number":
            raise ValueError(
                f"{owner}: y_val must be numeric for regression; got dtype {y_val.dtype} "
                f"(e.g. {_first(y_val)!r}).")
        return
    if {kind, kind_val} == {"number", "label"} or {kind, kind_val} == {"bool", "label"}:
        raise ValueError(
            f"{owner}: y and y_val hold labels of different kinds (y: {y.dtype}, e.g. "
            f"{_first(y)!r}; y_val: {y_val.dtype}, e.g. {_first(y_val)!r}); "
            "no validation row could ever match a training label.")
    if kind_val == "number" and type_of_target(y_val) == "continuous":
        raise ValueError(
            f"{owner}: y_val is continuous (e.g. {_first(y_val)!r}) but the task is "
            "classification; pass task='regression' or fix y_val.")
