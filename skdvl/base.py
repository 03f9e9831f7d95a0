"""What all valuers share: fitted attributes, input validation, pandas alignment."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.utils import get_tags
from sklearn.utils.validation import check_is_fitted, validate_data

from skdvl.result import ValuationResult

__all__ = ["ValuerMixin"]


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

    def _check_fitted(self) -> None:
        check_is_fitted(self, "result_")


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
    X, y = validate_data(valuer, X, y, y_numeric=False, multi_output=False, **check)
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
    return X, y, X_val, y_val
