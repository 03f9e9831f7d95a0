"""Private helpers of the attribution metrics of :mod:`skdvl.evaluation`.

Refits on subsets of the training rows, one output per test row of each refit (loss,
margin or prediction), column-wise rank correlations, and
:func:`holdout_regularization` (public through :mod:`skdvl.evaluation`).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from scipy.stats import rankdata
from sklearn.base import clone, is_classifier
from sklearn.utils import Bunch, check_random_state

from skdvl._sklearn_compat import num_samples, safe_indexing

__all__ = ["check_output", "check_scores", "outputs_of_fits", "columnwise_correlation",
           "mean_finite", "holdout_regularization"]


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


def holdout_regularization(attribute, estimator, X, y, grid, *, held_out=0.2, n_subsets=40,
                           fraction=0.5, output="loss", random_state=None, n_jobs=None,
                           verbose=0) -> Bunch:
    """Choose an attribution's regularization without test data: the LDS of held-out rows.

    The rule: hold out ``held_out`` random training rows, fit a clone of ``estimator``
    on the others (the *fit rows*), attribute the held-out rows' outputs to the fit rows
    at every value of ``grid`` (``attribute``), refit clones on ``n_subsets`` random
    subsets of ``fraction`` of the fit rows, and return the value whose attribution has
    the highest linear datamodeling score (Park et al., 2023) on the held-out rows
    (:func:`~skdvl.evaluation.linear_datamodeling_score`, the same refits for every
    value). No test row is read; use the value (or the multiple of a data-dependent rule
    that ``grid`` holds) for the attribution of the full training set.

    Cost: one fit on the fit rows, ``attribute``'s work (one attribution per value of
    ``grid``, or one shared fit re-regularized, as the callable chooses) and
    ``n_subsets`` refits. The held-out rows are fewer and the models see fewer rows than
    the final attribution, so the choice is the best value for a slightly smaller
    problem.

    Parameters
    ----------
    attribute : callable
        ``attribute(fitted, X_fit, y_fit, X_held, y_held, grid)`` returns one score
        matrix of shape ``(n_held, n_fit)`` per value of ``grid``, in skdvl's sign
        convention (positive: the training row raises ``output`` on the held-out row);
        ``fitted`` is ``estimator`` fitted on the fit rows.
    estimator : estimator
        The model, refitted (clones) on the fit rows and on the subsets; seed it so
        that every refit starts alike.
    X, y : array-like
        The training data.
    grid : sequence
        The candidate regularizations (or multiples: their meaning is ``attribute``'s).
    held_out : float in (0, 1) or int, default=0.2
        Share or number of held-out training rows.
    n_subsets : int, default=40
    fraction : float in (0, 1), default=0.5
        Share of the fit rows in each subset.
    output : {"loss", "margin", "prediction"} or callable, default="loss"
        As in :func:`~skdvl.evaluation.linear_datamodeling_score`.
    random_state : int, RandomState instance or None, default=None
        Draws the held-out rows and the subsets.
    n_jobs : int, default=None
        Parallel refits (joblib).
    verbose : int, default=0

    Returns
    -------
    result : Bunch
        ``regularization`` (the chosen value of ``grid``), ``scores`` (the held-out LDS
        of each value, shape ``(len(grid),)``), ``grid``, ``held`` and ``fit`` (the row
        positions), ``subsets`` (positions within the fit rows).

    References
    ----------
    Park, S. M., Georgiev, K., Ilyas, A., Leclerc, G. and Madry, A. (2023). TRAK:
    Attributing model behavior at scale. ICML.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import Ridge
    >>> from skdvl.evaluation import holdout_regularization
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(60, 3))
    >>> y = X @ [1.0, -2.0, 0.5] + rng.normal(size=60)
    >>> def attribute(model, Xf, yf, Xh, yh, grid):
    ...     gf = Xf * (Xf @ model.coef_ - yf)[:, None]  # squared-loss gradients
    ...     gh = Xh * (Xh @ model.coef_ - yh)[:, None]
    ...     H = Xf.T @ Xf / len(Xf)
    ...     return [-gh @ np.linalg.solve(H + lam * np.eye(3), gf.T) for lam in grid]
    >>> res = holdout_regularization(attribute, Ridge(fit_intercept=False), X, y,
    ...                              [1e-3, 1e-1, 1e1], n_subsets=10, random_state=0)
    >>> res.scores.shape, res.regularization in (1e-3, 1e-1, 1e1)
    ((3,), True)
    """
    grid = list(grid)
    if not grid:
        raise ValueError("The 'grid' parameter of holdout_regularization must hold at least "
                         "one value. Got an empty sequence instead.")
    n = num_samples(X)
    n_held = round(held_out * n) if isinstance(held_out, float) else int(held_out)
    if not 1 <= n_held <= n - 2:
        raise ValueError(f"The 'held_out' parameter of holdout_regularization must leave "
                         f"at least 1 held-out and 2 fit rows of the {n}. Got "
                         f"{held_out!r} instead.")
    if not 0 < fraction < 1:
        raise ValueError("The 'fraction' parameter of holdout_regularization must be in "
                         f"(0, 1). Got {fraction!r} instead.")
    check_output(estimator, output)
    rng = check_random_state(random_state)
    order = rng.permutation(n)
    held, fit = np.sort(order[:n_held]), np.sort(order[n_held:])
    Xf, yf = safe_indexing(X, fit), safe_indexing(y, fit)
    Xh, yh = safe_indexing(X, held), safe_indexing(y, held)
    scores = list(attribute(clone(estimator).fit(Xf, yf), Xf, yf, Xh, yh, grid))
    if len(scores) != len(grid):
        raise ValueError(f"attribute returned {len(scores)} score matrices for a grid of "
                         f"{len(grid)} values; it must return one per value.")
    scores = [check_scores(s, n_held, len(fit)) for s in scores]
    size = min(len(fit), max(1, round(fraction * len(fit))))
    subsets = np.stack([np.sort(rng.choice(len(fit), size, replace=False))
                        for _ in range(n_subsets)])
    actual = outputs_of_fits(estimator, Xf, yf, Xh, yh, list(subsets), output, n_jobs,
                             verbose, "holdout regularization")
    mask = np.zeros((n_subsets, len(fit)))
    mask[np.arange(n_subsets)[:, None], subsets] = 1.0
    lds = np.array([mean_finite(columnwise_correlation(mask @ s.T, actual, "spearman"))
                    for s in scores])
    if not np.isfinite(lds).any():
        raise ValueError("No value of 'grid' gave a finite held-out LDS (every refit "
                         "failed, or every held-out output was constant).")
    best = int(np.nanargmax(lds))
    return Bunch(regularization=grid[best], scores=lds, grid=grid, held=held, fit=fit,
                 subsets=subsets)
