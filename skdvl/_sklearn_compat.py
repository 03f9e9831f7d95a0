"""Every use of scikit-learn's private API, in one place.

skdvl supports scikit-learn >= 1.6. The names below are private in scikit-learn
(a leading underscore, or a private module) and may move between releases; the
rest of skdvl imports them from here only, so that a change in scikit-learn is
mended in one file. CI runs the tests against the oldest supported release too.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from sklearn.base import _fit_context
from sklearn.ensemble._forest import BaseForest
from sklearn.metrics.pairwise import _VALID_METRICS
from sklearn.utils import _safe_indexing
from sklearn.utils._param_validation import (
    HasMethods,
    Interval,
    Options,
    RealNotInt,
    StrOptions,
    validate_params,
)
from sklearn.utils.validation import _check_sample_weight, _num_samples

__all__ = [
    "fit_context", "HasMethods", "Interval", "Options", "RealNotInt", "StrOptions",
    "validate_params", "num_samples", "safe_indexing", "VALID_METRICS", "is_forest",
    "bagging_seeds", "set_bagging_seeds", "check_sample_weight", "called_from_sklearn",
    "validate_parameters",
]

#: ``@fit_context(prefer_skip_nested_validation=...)``: validates the parameters
#: declared in ``_parameter_constraints`` and sets the config for ``fit``.
fit_context = _fit_context
#: Number of samples of an array-like, sparse matrix or DataFrame.
num_samples = _num_samples
#: Rows (or columns) of an array, sparse matrix or DataFrame by position.
safe_indexing = _safe_indexing
#: ``sample_weight`` as a float array of one weight per row of ``X`` (None: ones).
check_sample_weight = _check_sample_weight
#: Metrics by name that :func:`sklearn.metrics.pairwise_distances` accepts.
VALID_METRICS = _VALID_METRICS


def validate_parameters(estimator: Any) -> None:
    """Check ``estimator``'s parameters against its ``_parameter_constraints``.

    ``BaseEstimator._validate_params``, for objects without a ``fit`` (option
    objects) or validated when used rather than fitted.
    """
    estimator._validate_params()


def is_forest(estimator: Any) -> bool:
    """Whether ``estimator`` is a random forest or extra-trees ensemble."""
    return isinstance(estimator, BaseForest)


def bagging_seeds(ensemble: Any) -> np.ndarray:
    """The per-member seeds a fitted bagging ensemble keeps (``_seeds``)."""
    return np.asarray(ensemble._seeds)


def set_bagging_seeds(ensemble: Any, seeds: np.ndarray) -> None:
    """Set the per-member seeds of a bagging ensemble (``_seeds``)."""
    ensemble._seeds = seeds


def called_from_sklearn(functions: frozenset[str], depth: int = 1) -> bool:
    """Whether the caller ``depth`` frames above ours is one of scikit-learn's ``functions``.

    Frame inspection (``sys._getframe``): scikit-learn has no public way to tell
    who asks ``hasattr(step, "transform")``. True when that frame's function is
    named in ``functions`` and its module is under ``sklearn.``.
    """
    caller = sys._getframe(depth + 1)
    return (caller.f_code.co_name in functions
            and str(caller.f_globals.get("__name__", "")).startswith("sklearn."))
