"""Pure helpers of the valuer shell: the results of several games combined, and the
fingerprint of a parameter (what ``warm_start`` compares)."""

from __future__ import annotations

from typing import Any

import joblib
import numpy as np
from sklearn.base import clone

from skdvl.result import ValuationResult

__all__ = ["_combine_games", "_param_hash"]


def _combine_games(parts: list[ValuationResult], n: int) -> ValuationResult:
    """Average the values a row received in the games that reached it (cross-valuation).

    A game counts for a row only if it gave the row at least one sample (an
    interrupted or short game may not have); rows no game reached are NaN with
    count 0. The standard error of the mean of independent estimates is
    ``sqrt(sum(se_g^2)) / G``.
    """
    total, se2, games, counts = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n, np.int64)
    for part in parts:
        reached = (part.counts > 0) & np.isfinite(part.values)
        idx = part.indices[reached]
        se = part.stderr[reached]  # NaN (one sample) stays NaN: unknown, not 0
        np.add.at(total, idx, part.values[reached])
        np.add.at(se2, idx, se**2)
        np.add.at(games, idx, 1)
        np.add.at(counts, idx, part.counts[reached])
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.where(games > 0, total / games, np.nan)
        stderr2 = se2 / games**2
    variances = np.where(counts > 0, stderr2 * counts, 0.0)
    return ValuationResult(values, variances=variances, counts=counts)


def _param_hash(value: Any) -> Any:
    """A fingerprint of one parameter: estimators by their parameters, RNGs by identity."""
    if isinstance(value, np.random.RandomState) or (
            callable(value) and hasattr(value, "n_players")):
        return ("id", id(value))
    estimator = hasattr(value, "get_params") and hasattr(value, "fit")
    try:
        return joblib.hash(clone(value) if estimator else value)
    except Exception:  # noqa: BLE001 - unpicklable: its parameters, or its identity
        if estimator:
            return ("params", type(value).__qualname__, repr(value.get_params(deep=True)))
        return ("id", id(value))
