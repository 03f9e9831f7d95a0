"""Amortized valuation: a model that predicts a row's value from the row.

A Monte Carlo valuer gives every training row a noisy, unbiased estimate of its
value. Stochastic amortization (Covert, Kim, Lundberg & Lee, 2024, "Stochastic
amortization: a unified approach to accelerate feature and data attribution",
NeurIPS, arXiv:2401.15866) regresses those noisy estimates on what is known about
each row (its features, its label, cheap signals of how well a model fits it):
the noise averages out across similar rows, so the regression is closer to the
exact values than the estimates it was trained on, and it values rows the valuer
never saw at the cost of a ``predict``.

The math is in the private functions (the row signals, the weights, the cross-fit
and its diagnostics); :class:`AmortizedValuer` validates, seeds and stores.
"""

from __future__ import annotations

import warnings
from numbers import Integral
from typing import Any, cast

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, clone, is_classifier, is_regressor
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.utils import check_random_state, get_tags
from sklearn.utils.validation import check_is_fitted, validate_data

from skdvl._sklearn_compat import HasMethods, Interval, StrOptions, fit_context
from skdvl.base import (
    ValuerMixin,
    pandas_index,
    resolve_task,
    validate_valuation_data,
)
from skdvl.result import ValuationResult
from skdvl.valuation._amortized_features import RowFeatures
from skdvl.valuation._semivalues import ShapleyValuer

__all__ = ["AmortizedValuer", "prefit_values"]

#: ``amortization_score_`` below this warns: the model barely predicts the targets.
LOW_SCORE = 0.3
#: the weight, in samples, of the pooled per-sample variance in a row's shrunk variance
_PRIOR_SAMPLES = 10
#: ``features="auto"`` shows the value model the raw features from this many rows per feature
_ROWS_PER_FEATURE = 20


# ------------------------------------------------------------------------- the math
def _row_weights(stderr: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Inverse-variance weights of the noisy targets, the variances shrunk; mean 1.

    A target averaging ``c_i`` samples of per-sample variance ``sigma_i^2`` has
    variance ``sigma_i^2 / c_i``, and ``sigma_i^2 = c_i stderr_i^2`` is itself
    estimated from those ``c_i`` samples: from two or three, a row whose marginals
    happened to agree would get a near-zero variance and all the weight. So
    ``sigma_i^2`` is shrunk toward the pooled per-sample variance with the weight of
    ``_PRIOR_SAMPLES`` samples, ``((c_i - 1) sigma_i^2 + k sigma^2) / (c_i - 1 + k)``
    (the posterior mean of a normal variance under a scaled inverse-chi-squared prior,
    Gelman et al., 2013, "Bayesian data analysis", Sec. 3.3), and the weight is
    ``c_i`` over it. Rows of unknown (NaN) standard error, or of fewer than two
    samples, get the pooled variance; with no variance known (exact targets) every
    weight is 1.
    """
    c = np.asarray(counts, dtype=np.float64)
    sigma2 = np.asarray(stderr, dtype=np.float64) ** 2 * c
    known = np.isfinite(sigma2) & (c >= 2)
    if not known.any() or not np.any(sigma2[known] > 0):
        return np.ones(c.shape[0])
    dof = np.where(known, c - 1, 0.0)
    pooled = float(np.sum(dof * np.where(known, sigma2, 0.0)) / np.sum(dof))
    shrunk = (dof * np.where(known, sigma2, 0.0) + _PRIOR_SAMPLES * pooled) / (
        dof + _PRIOR_SAMPLES)
    w = np.maximum(c, 1.0) / shrunk
    return w / w.mean()


def _fit_weighted(estimator: Any, F: np.ndarray, t: np.ndarray, w: np.ndarray | None) -> Any:
    """``clone(estimator)`` fitted on ``(F, t)``, with ``sample_weight=w`` if given."""
    model = clone(estimator)
    if w is None:
        return model.fit(F, t)
    if isinstance(model, Pipeline):  # the weights are the last step's
        return model.fit(F, t, **{f"{model.steps[-1][0]}__sample_weight": w})
    return model.fit(F, t, sample_weight=w)


def _cross_fit(estimator: Any, F: np.ndarray, t: np.ndarray, w: np.ndarray | None,
               folds: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Each row's prediction by a model fitted on the folds that do not hold it.

    ``t`` may hold NaN (rows the valuer did not reach): they are predicted, never
    fitted on.
    """
    out = np.full(F.shape[0], np.nan)
    for train, test in folds:
        train = train[np.isfinite(t[train])]
        out[test] = _fit_weighted(estimator, F[train], t[train],
                                  None if w is None else w[train]).predict(F[test])
    return out


def _diagnostics(t: np.ndarray, pred: np.ndarray, stderr: np.ndarray) -> dict[str, float]:
    """The cross-fitted agreement of predictions and noisy targets, and what it implies.

    ``score``: Pearson correlation of the noisy targets ``t`` and their cross-fitted
    predictions. ``reliability``: the share of the targets' variance that is not
    sampling noise, ``1 - mean(s^2) / var(t)``; the score cannot exceed its square
    root even for perfect predictions. ``rmse``: the root mean squared error of the
    predictions against the *exact* values, ``sqrt(mean((t - pred)^2 - s^2))``: a
    cross-fitted prediction is independent of its row's noise, so the noise variance
    adds to the squared residual and is subtracted (0 when negative).
    ``disattenuated``: ``score / sqrt(reliability)`` in [-1, 1], the correlation
    with the exact values that the score implies (Spearman, 1904, "The proof and
    measurement of association between two things"). NaN for a quantity the inputs
    do not determine.
    """
    ok = np.isfinite(t) & np.isfinite(pred)
    var_noise = stderr**2
    out = {"score": np.nan, "reliability": np.nan, "rmse": np.nan, "disattenuated": np.nan}
    if ok.sum() >= 3 and np.std(t[ok]) > 0 and np.std(pred[ok]) > 0:
        out["score"] = float(np.corrcoef(t[ok], pred[ok])[0, 1])
    known = ok & np.isfinite(var_noise)
    if known.sum() >= 2:
        noise = float(np.mean(var_noise[known]))
        if np.var(t[known]) > 0:
            out["reliability"] = 1.0 - noise / float(np.var(t[known]))
        mse = float(np.mean((t[known] - pred[known]) ** 2)) - noise
        out["rmse"] = float(np.sqrt(max(mse, 0.0)))
    if np.isfinite(out["score"]) and out["reliability"] > 0:
        out["disattenuated"] = float(np.clip(out["score"] / np.sqrt(out["reliability"]),
                                             -1.0, 1.0))
    return out


def _folds(n: int, y: np.ndarray, n_splits: int, classification: bool,
           seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n_splits`` shuffled folds (stratified for classes that allow it)."""
    if classification:
        smallest = int(np.unique(y, return_counts=True)[1].min())
        if smallest >= n_splits:
            splitter: Any = StratifiedKFold(n_splits, shuffle=True, random_state=seed)
            return list(splitter.split(np.zeros((n, 1)), y))
    return list(KFold(n_splits, shuffle=True, random_state=seed).split(np.zeros((n, 1))))


def _default_estimator(n: int, seed: int) -> Any:
    """The default value model: stochastic gradient boosting of shallow trees.

    Shrunk (learning rate 0.05) and with leaves of at least ``clip(n // 15, 3, 20)``
    rows, so that a few hundred noisy targets are smoothed rather than fitted
    (Friedman, 2002, "Stochastic gradient boosting").
    """
    return GradientBoostingRegressor(
        n_estimators=100, learning_rate=0.05, max_depth=2, subsample=0.8,
        min_samples_leaf=int(np.clip(n // 15, 3, 20)), random_state=seed)


def _targets(fitted: Any, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fitted valuer's values, standard errors (NaN if none) and counts, checked."""
    name = type(fitted).__name__
    targets = np.asarray(fitted.values_, dtype=np.float64)
    stderr = np.asarray(getattr(fitted, "stderr_", np.full(n, np.nan)), np.float64)
    counts = np.asarray(getattr(fitted, "counts_", np.ones(n, np.int64)))
    if targets.shape != (n,):
        raise ValueError(
            f"The 'valuer' parameter of AmortizedValuer must give one value per row: "
            f"{name} gave values_ of shape {targets.shape} for {n} rows.")
    if not np.isfinite(targets).any():
        raise ValueError(
            f"AmortizedValuer: the valuer {name} valued none of the {n} rows (every value "
            "is NaN); there is nothing to amortize.")
    return targets, stderr, counts


def _signal_model(valuer: Any, task: str) -> Any:
    """The model whose loss and margin describe a row: the valuer's, else a linear one."""
    model = valuer.get_params(deep=False).get("estimator")
    if model is not None:
        return model
    return LogisticRegression(max_iter=1000) if task == "classification" else LinearRegression()


class AmortizedValuer(ValuerMixin, BaseEstimator):
    """Values predicted from the rows: stochastic amortization of a Monte Carlo valuer.

    ``fit`` runs ``valuer`` (with a small budget: its per-row estimates may be very
    noisy), then fits ``estimator``, the *value model*, to predict each row's
    estimate from the row: its standardized features, its label, the loss and the
    margin of the valued model on it, and how many of its nearest training (and
    validation) rows share its label. The noise of the estimates averages out
    across similar rows, so the predictions are closer to the exact values than the
    estimates (Covert et al., 2024). ``values_`` are *cross-fitted* predictions
    (each row's by a value model fitted on the other ``n_splits - 1`` folds), and
    :meth:`predict` values new rows by a model fitted on all rows, without a single
    utility evaluation.

    Parameters
    ----------
    valuer : valuer, default=None
        The valuer whose estimates are amortized: any skdvl valuer, typically a
        semivalue valuer with a small budget (``max_updates``). None means
        ``ShapleyValuer(sampler="permutation", max_updates=10)``. Its
        ``random_state``, when None, is drawn from ``random_state``; its
        ``n_jobs``, when None, is ``n_jobs``.
    estimator : regressor, default=None
        The value model. None means a
        :class:`~sklearn.ensemble.GradientBoostingRegressor` (100 trees of depth 2,
        learning rate 0.05, subsample 0.8, ``min_samples_leaf = clip(n // 15, 3,
        20)``, seeded from ``random_state``); for many thousands of rows a
        :class:`~sklearn.ensemble.HistGradientBoostingRegressor` is faster. It
        gets ``sample_weight`` (the last step's, for a Pipeline) unless
        ``weighting="uniform"``.
    weighting : {"inverse_variance", "uniform"}, default="inverse_variance"
        "inverse_variance" weighs each row by the inverse of its estimate's
        variance, ``counts / sigma^2``, with the per-sample variance ``sigma^2 =
        counts * stderr**2`` shrunk toward the pooled one with the weight of 10
        samples (a variance estimated near 0 from two samples does not take over;
        see ``_row_weights``); rows of unknown variance get the pooled one.
        "uniform" weighs all rows alike (the paper's objective).
    features : {"auto", "all", "signals"}, default="auto"
        What the value model sees of a row. "signals": its label, the loss and
        margin of the valued model on it (fitted without it: out of fold for
        training rows) and the share of its ``n_neighbors`` nearest training rows
        (and validation rows, with ``X_val``) that share its label. "all": the
        same and the row's standardized features. "auto" is "all" from
        ``20 * n_features`` rows on (fewer rows cannot teach a function of the
        raw features), else "signals".
    n_splits : int, default=5
        Folds of the cross-fitting (at least 2, at most ``n_samples``).
    n_neighbors : int, default=5
        Neighbours of the label-agreement features.
    n_jobs : int, default=None
        Parallel fits of the value model, and the wrapped valuer's ``n_jobs``
        when that is None. Values do not depend on it.
    random_state : int, RandomState instance or None, default=None
        Seeds the folds, the default value model and (when it has none) the
        wrapped valuer: one seed gives identical values for any ``n_jobs``.

    Attributes
    ----------
    values_ : ndarray or Series of shape (n_samples,)
        Cross-fitted amortized values (a Series on ``X``'s index for a DataFrame).
        A row the valuer could not value (NaN estimate) is predicted all the same.
    stderr_ : ndarray or Series of shape (n_samples,)
        The estimated root mean squared error of the amortized values against the
        exact ones, ``sqrt(mean(residual^2 - stderr^2))`` over the cross-fitted
        residuals, the same for every row (a pooled estimate, NaN when the
        valuer gives no standard errors).
    counts_ : ndarray or Series of shape (n_samples,)
        The wrapped valuer's counts (samples behind each noisy target).
    result_ : ValuationResult
        All of the above in one object.
    valuer_ : valuer
        The fitted wrapped valuer; ``valuer_.values_`` are the noisy targets.
    estimator_ : regressor
        The value model fitted on every valued row, used by :meth:`predict`.
    amortization_score_ : float
        Pearson correlation of the noisy targets and their cross-fitted
        predictions.
    reliability_ : float
        ``1 - mean(stderr^2) / var(targets)``: the share of the targets' variance
        that is not sampling noise. ``amortization_score_`` cannot exceed its
        square root, even for perfect predictions.
    disattenuated_score_ : float
        ``amortization_score_ / sqrt(reliability_)`` (clipped to [-1, 1]; Spearman's
        correction for attenuation, 1904): an estimate of the correlation of the
        predictions with the *exact* values. A warning is raised when it is below
        0.3 (when it is unknown, when ``amortization_score_`` is). Its estimate is
        rough when the standard errors rest on two or three samples.
    n_utility_evaluations_ : int
        The wrapped valuer's utility evaluations; :meth:`predict` adds none.
    task_ : str
        "classification" or "regression".
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Feature names, when ``X`` has string column names.

    See Also
    --------
    skdvl.DataCleaner : with ``prefit=True``, drops new rows by predicted values.

    Notes
    -----
    What transfers to new rows, and what does not. A value is relative to the
    game: the model, the scoring, the validation data (or, without ``X_val``,
    the cross-valuation folds of the training rows) and the *other* training
    rows. :meth:`predict` answers "what would this row be worth as one more row of
    the training set the valuer saw, against the same validation data and the
    same model". It does not transfer to another validation set or another model
    (refit), nor to a batch so large that it changes the game (the new rows'
    values among themselves are not modelled), and it degrades on rows from a
    shifted distribution: far from the training rows the value model
    extrapolates, and nothing flags it. Check ``amortization_score_`` and
    ``reliability_``, and compare with the plain valuer on a sample when it
    matters.

    Departures from Covert et al. (2024): the value model is a gradient-boosting
    regressor on hand-made row features, not a network sharing the valued
    model's architecture; rows are weighted by inverse estimated variance
    (``weighting``); and the training rows' values are cross-fitted, so that
    ``stderr_`` and ``amortization_score_`` are measured on rows the value model
    was not fitted on.

    References
    ----------
    Covert, I., Kim, C., Lee, S.-I., Zou, J. & Hashimoto, T. (2024). Stochastic
    amortization: a unified approach to accelerate feature and data attribution.
    NeurIPS. arXiv:2401.15866.

    Examples
    --------
    >>> from sklearn.datasets import load_breast_cancer
    >>> from sklearn.linear_model import LogisticRegression
    >>> from skdvl import AmortizedValuer, ShapleyValuer
    >>> X, y = load_breast_cancer(return_X_y=True)
    >>> X = (X - X.mean(0)) / X.std(0)
    >>> valuer = ShapleyValuer(LogisticRegression(), sampler="permutation", max_updates=2)
    >>> amortized = AmortizedValuer(valuer, random_state=0)
    >>> amortized.fit(X[:100], y[:100], X_val=X[400:], y_val=y[400:]).values_.shape
    (100,)
    >>> amortized.predict(X[100:110], y[100:110]).shape
    (10,)
    """

    _parameter_constraints: dict = {
        "valuer": [HasMethods(["fit"]), None],
        "estimator": [HasMethods(["fit", "predict"]), None],
        "weighting": [StrOptions({"inverse_variance", "uniform"})],
        "features": [StrOptions({"auto", "all", "signals"})],
        "n_splits": [Interval(Integral, 2, None, closed="left")],
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "n_jobs": [Integral, None],
        "random_state": ["random_state"],
    }

    def __init__(self, valuer: Any = None, estimator: Any = None, *,
                 weighting: str = "inverse_variance", features: str = "auto", n_splits: int = 5,
                 n_neighbors: int = 5, n_jobs: int | None = None,
                 random_state: Any = None) -> None:
        self.valuer = valuer
        self.estimator = estimator
        self.weighting = weighting
        self.features = features
        self.n_splits = n_splits
        self.n_neighbors = n_neighbors
        self.n_jobs = n_jobs
        self.random_state = random_state

    def __sklearn_tags__(self):  # type: ignore[no-untyped-def]
        tags = super().__sklearn_tags__()
        valuer = self.valuer if isinstance(self.valuer, ValuerMixin) else ShapleyValuer()
        model = valuer.get_params(deep=False).get("estimator")  # None: a linear model
        tags.input_tags.sparse = get_tags(model).input_tags.sparse if model is not None else True
        return tags

    @fit_context(prefer_skip_nested_validation=False)
    def fit(self, X: Any, y: Any, *, X_val: Any = None, y_val: Any = None) -> AmortizedValuer:
        """Value the training rows by the wrapped valuer, then amortize the values.

        Parameters
        ----------
        X : array-like, sparse matrix or DataFrame of shape (n_samples, n_features)
            Training rows.
        y : array-like of shape (n_samples,)
            Their targets.
        X_val, y_val : array-like, default=None
            Validation data, passed to the wrapped valuer (and used for the
            validation label-agreement feature).

        Returns
        -------
        self : AmortizedValuer
        """
        valuer = self._check_valuer()
        index = pandas_index(X)
        seeds = np.random.SeedSequence(
            int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max)))
        seed_valuer, seed_folds, seed_model = (
            int(s.generate_state(1)[0] >> 1) for s in seeds.spawn(3))
        task = self._task(valuer, y)
        model = _signal_model(valuer, task)
        X, y, X_val, y_val = validate_valuation_data(
            self, X, y, X_val, y_val, estimator=model, min_samples=2)
        n = X.shape[0]
        if self.n_splits > n:
            raise ValueError(
                f"n_splits={self.n_splits} folds of cross-fitting need at least "
                f"{self.n_splits} rows; got n_samples={n}. Lower n_splits.")
        self.task_ = task
        self.valuer_ = self._fit_valuer(valuer, seed_valuer, X, y, X_val, y_val)
        targets, stderr, counts = _targets(self.valuer_, n)
        folds = _folds(n, y, self.n_splits, task == "classification", seed_folds)
        raw = self.features == "all" or (
            self.features == "auto" and n >= _ROWS_PER_FEATURE * X.shape[1])
        self.features_ = RowFeatures(model, task == "classification", self.n_neighbors, raw)
        F = self.features_.fit_transform(X, y, X_val, y_val, folds)
        estimator = (self.estimator if self.estimator is not None
                     else _default_estimator(n, seed_model))
        if self.weighting == "inverse_variance" and not np.isfinite(stderr).any():
            warnings.warn(
                f"AmortizedValuer: the valuer {type(valuer).__name__} gave no standard error "
                "(e.g. one sample per row), so every row weighs the same and a few "
                "heavy-tailed single samples can steer the value model: in the breast-cancer "
                "benchmark one permutation per row gave worse than random rankings on 3 of 5 "
                "seeds. Give the valuer a budget of at least 2 samples per row.",
                UserWarning, stacklevel=3)
        weights = _row_weights(stderr, counts) if self.weighting == "inverse_variance" else None
        predictions = self._cross_fit(estimator, F, targets, weights, folds)
        report = _diagnostics(targets, predictions, stderr)
        self.amortization_score_ = report["score"]
        self.reliability_ = report["reliability"]
        self.disattenuated_score_ = report["disattenuated"]
        self._warn_if_low(report)
        self.n_utility_evaluations_ = int(getattr(self.valuer_, "n_utility_evaluations_", 0))
        result = ValuationResult(predictions, variances=np.full(n, report["rmse"] ** 2),
                                 counts=counts, algorithm="amortized")
        self._store_result(result, index)
        return self

    def predict(self, X: Any, y: Any = None) -> Any:
        """Values of new rows, as rows of the training set the valuer saw.

        Parameters
        ----------
        X : array-like, sparse matrix or DataFrame of shape (n_rows, n_features)
            The rows to value, with the features seen in ``fit``.
        y : array-like of shape (n_rows,)
            Their targets (labels of the classes seen in ``fit``). Required: a
            row's value depends on its label (None raises).

        Returns
        -------
        values : ndarray or Series of shape (n_rows,)
            Predicted values (a Series on ``X``'s index for a DataFrame). No
            utility is evaluated; see the class Notes for what transfers.
        """
        check_is_fitted(self, "estimator_")
        if y is None:
            raise ValueError(
                "AmortizedValuer.predict(X, y) requires y: a row's value depends on its "
                "label as well as its features. Got y=None.")
        index = pandas_index(X)
        tags = self.__sklearn_tags__().input_tags
        X, y = validate_data(self, X, y, reset=False, accept_sparse=["csr", "csc"]
                             if tags.sparse else False, dtype=None)
        F = self.features_.transform(X, np.asarray(y))
        values = np.asarray(self.estimator_.predict(F), dtype=np.float64)
        if index is None:
            return values
        return pd.Series(values, index=index, name="values")

    # -- steps ---------------------------------------------------------------
    def _check_valuer(self) -> Any:
        valuer: Any = self.valuer
        if valuer is None:
            return ShapleyValuer(sampler="permutation", max_updates=10)
        if not isinstance(valuer, ValuerMixin) or isinstance(valuer, AmortizedValuer):
            raise ValueError(
                "The 'valuer' parameter of AmortizedValuer must be a skdvl valuer (an "
                "estimator whose fit sets values_, e.g. ShapleyValuer(max_updates=5)) other "
                f"than AmortizedValuer. Got {type(valuer).__name__} instead.")
        utility = cast(Any, valuer).get_params(deep=False).get("utility")
        if utility is not None:
            raise ValueError(
                "AmortizedValuer predicts values from the rows' features, so its valuer "
                f"must value data (X, y), not a custom utility. Got utility={utility!r}.")
        return valuer

    def _task(self, valuer: Any, y: Any) -> str:
        model = valuer.get_params(deep=False).get("estimator")
        if model is not None and is_classifier(model):
            return "classification"
        if model is not None and is_regressor(model):
            return "regression"
        task = valuer.get_params(deep=False).get("task", "auto")
        return resolve_task(np.asarray(y), task, "AmortizedValuer")

    def _fit_valuer(self, valuer: Any, seed: int, X: Any, y: np.ndarray, X_val: Any,
                    y_val: Any) -> Any:
        """A clone of ``valuer``, given this seed and n_jobs where it has none, fitted."""
        fitted = clone(valuer)
        params = fitted.get_params(deep=False)
        if "random_state" in params and params["random_state"] is None:
            fitted.set_params(random_state=seed)
        if "n_jobs" in params and params["n_jobs"] is None and self.n_jobs is not None:
            fitted.set_params(n_jobs=self.n_jobs)
        if X_val is None:
            return fitted.fit(X, y)
        return fitted.fit(X, y, X_val=X_val, y_val=y_val)

    def _cross_fit(self, estimator: Any, F: np.ndarray, targets: np.ndarray,
                   weights: np.ndarray | None,
                   folds: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """Cross-fitted predictions of the targets; sets ``estimator_`` (all rows)."""
        n = F.shape[0]
        tasks = [*folds, (np.arange(n), np.arange(0))]
        fits = Parallel(n_jobs=self.n_jobs)(
            delayed(_fit_weighted)(
                estimator, F[train[np.isfinite(targets[train])]],
                targets[train[np.isfinite(targets[train])]],
                None if weights is None else weights[train[np.isfinite(targets[train])]])
            for train, _ in tasks)
        predictions = np.full(n, np.nan)
        for (_, test), model in zip(folds, fits):
            predictions[test] = model.predict(F[test])
        self.estimator_ = fits[-1]
        return predictions

    def _warn_if_low(self, report: dict[str, float]) -> None:
        """Warn when the predictions barely follow the values they estimate.

        The measure is ``disattenuated_score_`` where the noise is known, else
        ``amortization_score_``: noisy targets alone pull the raw score down.
        """
        score, corrected = report["score"], report["disattenuated"]
        measure = corrected if np.isfinite(corrected) else score
        if np.isfinite(measure) and measure >= LOW_SCORE:
            return
        said = (f"corrected for the targets' noise (disattenuated_score_), "
                f"{corrected:.3f}" if np.isfinite(corrected) else "")
        warnings.warn(
            f"AmortizedValuer: the cross-fitted correlation of the noisy values and their "
            f"predictions (amortization_score_) is {score:.3f}{'; ' if said else ''}{said}, "
            f"below {LOW_SCORE} (reliability_={report['reliability']:.3f}, the share of the "
            "targets' variance that is not noise). The value model hardly predicts the "
            "values from the rows: raise the valuer's budget, try another estimator, or "
            "use the valuer's own values.", UserWarning, stacklevel=4)


def prefit_values(valuer: Any, X: Any, y: Any) -> np.ndarray:
    """Values of ``(X, y)`` by an already fitted valuer's ``predict(X, y)``, as floats.

    What :class:`~skdvl.DataCleaner` calls with ``prefit=True``; ``valuer`` may be
    wrapped in :class:`sklearn.frozen.FrozenEstimator` (which survives ``clone``).

    Raises
    ------
    ValueError
        When ``valuer`` cannot value new rows (no ``predict``) or is not fitted.
    """
    inner: Any = valuer.estimator if isinstance(valuer, FrozenEstimator) else valuer
    if not hasattr(inner, "predict") or not isinstance(inner, ValuerMixin):
        raise ValueError(
            "DataCleaner(prefit=True) values rows by a fitted valuer's predict(X, y), such "
            f"as a fitted AmortizedValuer. Got {type(inner).__name__} instead.")
    check_is_fitted(inner, "values_", msg=(
        f"DataCleaner(prefit=True) needs a fitted valuer, and this {type(inner).__name__} "
        "is not fitted: fit it first (on the rows it should learn from), or set "
        "prefit=False."))
    return np.asarray(cast(Any, inner).predict(X, y), dtype=np.float64)
