"""Private helpers of the attribution metrics of :mod:`skdvl.evaluation`.

Refits on subsets of the training rows, one output per test row of each refit (loss,
margin or prediction), and column-wise rank correlations.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from scipy.stats import rankdata
from sklearn.base import clone, is_classifier

from skdvl._sklearn_compat import num_samples, safe_indexing

__all__ = ["check_output", "check_scores", "outputs_of_fits", "columnwise_correlation",
           "mean_finite"]


def check_output(estimator: Any, output: Any) -> None:
    """Refuse an output the estimator cannot give, before any fit."""
    if output == "margin" and not is_classifier(estimator):
        raise ValueError(f"output='margin' needs a classifier (with predict_proba); got "
                         f"{type(estimator).__name__}. Use output='loss' or 'prediction'.")


def check_scores(scores: Any, n_test: int, n: int) -> np.ndarray:
    S = np.asarray(scores, dtype=np.float64)
    if S.shape != (n_test, n):
        raise ValueError(f"scores must have shape (n_test, n_samples) = ({n_test}, {n}). Got "
                         f"{S.shape} instead.")
    if not np.isfinite(S).all():
        raise ValueError(f"scores contain {int((~np.isfinite(S)).sum())} NaN or infinite "
                         "entries.")
    return S


def outputs_of_fits(estimator, X, y, X_test, y_test, kept, output, n_jobs, verbose, desc):
    """Outputs on the test rows of clones fitted on each ``kept``, shape (len(kept), n_test)."""
    jobs = (delayed(_fit_and_output)(estimator, X, y, k, X_test, y_test, output) for k in kept)
    results = Parallel(n_jobs=n_jobs, return_as="generator")(jobs)
    if verbose > 0:
        from tqdm.auto import tqdm

        results = tqdm(results, total=len(kept), desc=desc)
    n_test = num_samples(X_test)
    outs = np.full((len(kept), n_test), np.nan)
    first_error, n_failed = None, 0
    for j, (values, error) in enumerate(results):
        if error is not None:
            n_failed += 1
            first_error = first_error or error
        else:
            outs[j] = values
    if first_error is not None:
        warnings.warn(f"{n_failed} of {len(kept)} fits failed and were left out; the first "
                      f"error was: {first_error!r}", UserWarning, stacklevel=3)
    return outs


def _fit_and_output(estimator, X, y, kept, X_test, y_test, output):
    try:
        model = clone(estimator).fit(safe_indexing(X, kept), safe_indexing(y, kept))
        return _model_output(model, X_test, y_test, output), None
    except Exception as exc:  # noqa: BLE001 - reported in one summary warning
        return None, exc


def _model_output(model, X_test, y_test, output) -> np.ndarray:
    """One value per test row: the loss, margin or prediction of a fitted model."""
    n_test = num_samples(X_test)
    if callable(output):
        values = np.asarray(output(model, X_test, y_test), dtype=np.float64).reshape(-1)
        if values.shape[0] != n_test:
            raise ValueError(f"output(estimator, X_test, y_test) must return one value per "
                             f"test row ({n_test}). Got {values.shape[0]} instead.")
        return values
    y_true = np.asarray(y_test)
    if output == "prediction" or not hasattr(model, "predict_proba"):
        if output == "margin":
            raise ValueError("output='margin' needs a classifier with predict_proba; got "
                             f"{type(model).__name__}.")
        pred = np.asarray(model.predict(X_test), dtype=np.float64).reshape(n_test, -1)
        if output == "prediction":
            return pred[:, 0] if pred.shape[1] == 1 else pred.sum(1)
        return ((pred - y_true.reshape(n_test, -1)) ** 2).sum(1)
    proba = np.asarray(model.predict_proba(X_test), dtype=np.float64)
    classes = np.asarray(model.classes_)
    pos = np.searchsorted(classes, y_true.reshape(-1))
    pos = np.minimum(pos, len(classes) - 1)
    found = classes[pos] == y_true.reshape(-1)
    p = np.where(found, proba[np.arange(n_test), pos], 0.0)
    eps = 1e-12
    if output == "loss":
        return -np.log(np.clip(p, eps, None))
    return np.log(np.clip(p, eps, None)) - np.log(np.clip(1.0 - p, eps, None))


def columnwise_correlation(a: np.ndarray, b: np.ndarray, kind: str) -> np.ndarray:
    """Correlation of each column of ``a`` with that of ``b``, over the finite rows of ``b``.

    Spearman: Pearson of average ranks (ties as in :func:`scipy.stats.spearmanr`). NaN
    where a column is constant.
    """
    ok = np.isfinite(b).all(1)
    a, b = a[ok], b[ok]
    if kind == "spearman":
        a, b = rankdata(a, axis=0), rankdata(b, axis=0)
    a = a - a.mean(0)
    b = b - b.mean(0)
    denom = np.sqrt((a**2).sum(0) * (b**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(0) / denom
    return np.where(denom > 0, r, np.nan)


def mean_finite(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")
