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
from skdvl.valuation._amortized_math import diagnostics, noise_variances, row_weights, shrink
from skdvl.valuation._semivalues import ShapleyValuer

__all__ = ["AmortizedValuer", "prefit_values"]

#: ``disattenuated_interval_`` wholly below this warns: the value model predicts the values poorly
LOW_SCORE = 0.3
#: ``features="auto"`` shows the value model the raw features from this many rows per feature
_ROWS_PER_FEATURE = 20


# ------------------------------------------------------------------------- the math
def _fit_weighted(estimator: Any, F: np.ndarray, t: np.ndarray, w: np.ndarray | None) -> Any:
    """``clone(estimator)`` fitted on ``(F, t)``, with ``sample_weight=w`` if given."""
    model = clone(estimator)
    if w is None:
        return model.fit(F, t)
    if isinstance(model, Pipeline):  # the weights are the last step's
        return model.fit(F, t, **{f"{model.steps[-1][0]}__sample_weight": w})
    return model.fit(F, t, sample_weight=w)


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
    estimates (Covert et al., 2024). Each training row's prediction is
    *cross-fitted* (by a value model fitted on the other ``n_splits - 1`` folds),
    and ``values_`` combine it with the row's own estimate by empirical Bayes
    (``combine="shrinkage"``): the prediction where the estimate is noisy, the
    estimate where it is precise, so that the values converge to the valuer's as
    its budget grows. :meth:`predict` values new rows by a model fitted on all
    rows, without a single utility evaluation.

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
        counts * stderr**2`` (the unbiased sample variance) shrunk toward the pooled one with
        the weight of 10 samples (a variance estimated near 0 from two samples
        does not take over; see ``_amortized_math.noise_variances``); rows of
        unknown variance get the pooled one.
        "uniform" weighs all rows alike (the paper's objective).
    combine : {"shrinkage", "prediction"}, default="shrinkage"
        How ``values_`` of the training rows are made. "shrinkage": the
        empirical-Bayes posterior mean ``(tau^2 t_i + s_i^2 p_i) / (tau^2 +
        s_i^2)`` of the row's estimate ``t_i`` (noise variance ``s_i^2``) and
        its cross-fitted prediction ``p_i``, where ``tau^2``, the mean squared
        error of the predictions against the exact values, is estimated from the
        residuals (method of moments; James & Stein, 1961; Efron & Morris,
        1973). "prediction": ``p_i`` alone (Covert et al., 2024), which does not
        converge to the exact values as the valuer's budget grows.
        :meth:`predict` gives the prediction either way (a new row has no
        estimate). Both need the estimates' noise, unless ``weighting="uniform"``
        and ``combine="prediction"``.
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
        Amortized values (see ``combine``; a Series on ``X``'s index for a
        DataFrame). A row the valuer could not value (NaN estimate) gets its
        cross-fitted prediction.
    stderr_ : ndarray or Series of shape (n_samples,)
        The estimated error of each value against the exact one. "shrinkage":
        the root mean squared error at the row's weight, ``sqrt((1 - g_i)^2 tau^2
        + g_i^2 s^2)`` with ``g_i = tau^2 / (tau^2 + s_i^2)`` and the *pooled*
        noise ``s^2`` (a row's own, noisy, variance estimate chose its weight),
        plus the first-order cost of estimating ``tau^2`` (Kass & Steffey,
        1989). "prediction": ``prediction_rmse_`` for every row. NaN when the
        valuer gives no standard errors.
    counts_ : ndarray or Series of shape (n_samples,)
        The wrapped valuer's counts (samples behind each noisy target).
    predictions_ : ndarray or Series of shape (n_samples,)
        The cross-fitted predictions of the value model (``values_`` with
        ``combine="prediction"``).
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
        cross-fitted predictions with the *exact* values.
    disattenuated_interval_ : tuple of float
        Its 90 % bootstrap interval over rows (resamples whose reliability is
        not positive count as -1 for the low end, +1 for the high end): wide
        when the estimates are mostly noise. A warning is raised when the whole
        interval is below 0.3: the data show that the value model predicts the
        values poorly (``predict`` on new rows is then unreliable).
    prediction_rmse_ : float
        ``sqrt(tau^2)``: the estimated root mean squared error of the cross-fitted
        predictions against the exact values (the squared residuals minus the
        estimates' noise, averaged; see ``combine``).
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
    extrapolates, and nothing flags it. Check ``disattenuated_interval_``, and
    compare with the plain valuer on a sample when it matters.

    Departures from Covert et al. (2024): the value model is a gradient-boosting
    regressor on hand-made row features, not a network sharing the valued
    model's architecture; rows are weighted by inverse estimated variance
    (``weighting``); the training rows' predictions are cross-fitted, so that
    ``stderr_`` and the diagnostics are measured on rows the value model was not
    fitted on; and they are combined with the rows' own estimates (``combine``).
    ``tau^2`` is one number for all rows: where the value model errs more on
    some rows (e.g. the extreme ones), their ``stderr_`` is too small and
    others' too large. The noise variances are the per-sample variances behind
    skdvl's ``stderr_`` (unbiased, ddof 1), each shrunk toward the pooled one (see
    ``_amortized_math.noise_variances``).
    With one sample per row no noise is known, and ``fit`` refuses the
    defaults.

    References
    ----------
    Covert, I., Kim, C., Lee, S.-I., Zou, J. & Hashimoto, T. (2024). Stochastic
    amortization: a unified approach to accelerate feature and data attribution.
    NeurIPS. arXiv:2401.15866.

    Efron, B. & Morris, C. (1973). Stein's estimation rule and its competitors:
    an empirical Bayes approach. Journal of the American Statistical
    Association, 68(341), 117-130.

    Kass, R. E. & Steffey, D. (1989). Approximate Bayesian inference in
    conditionally independent hierarchical models (parametric empirical Bayes
    models). Journal of the American Statistical Association, 84(407), 717-726.

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
        "combine": [StrOptions({"shrinkage", "prediction"})],
        "features": [StrOptions({"auto", "all", "signals"})],
        "n_splits": [Interval(Integral, 2, None, closed="left")],
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "n_jobs": [Integral, None],
        "random_state": ["random_state"],
    }

    def __init__(self, valuer: Any = None, estimator: Any = None, *,
                 weighting: str = "inverse_variance", combine: str = "shrinkage",
                 features: str = "auto", n_splits: int = 5,
                 n_neighbors: int = 5, n_jobs: int | None = None,
                 random_state: Any = None) -> None:
        self.valuer = valuer
        self.estimator = estimator
        self.weighting = weighting
        self.combine = combine
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
        seed_valuer, seed_folds, seed_model, seed_boot = (
            int(s.generate_state(1)[0] >> 1) for s in seeds.spawn(4))
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
        noise = noise_variances(stderr, counts)
        self._check_noise(valuer, noise, counts)
        weights = row_weights(noise) if self.weighting == "inverse_variance" else None
        predictions = self._cross_fit(estimator, F, targets, weights, folds)
        pooled = noise_variances(stderr, counts, prior_samples=np.inf)
        values, variances, tau2 = shrink(targets, predictions, noise, pooled)
        if self.combine == "prediction":
            values, variances = predictions, np.full(n, tau2)
        report = diagnostics(targets, predictions, noise, seed_boot)
        self.amortization_score_ = report["score"]
        self.reliability_ = report["reliability"]
        self.disattenuated_score_ = report["disattenuated"]
        self.disattenuated_interval_ = (report["low"], report["high"])
        self.prediction_rmse_ = float(np.sqrt(tau2))
        self._warn_if_low(report)
        self.n_utility_evaluations_ = int(getattr(self.valuer_, "n_utility_evaluations_", 0))
        c = np.maximum(np.asarray(counts, dtype=np.float64), 1.0)  # stderr = sqrt(var / c)
        result = ValuationResult(values, variances=variances * c, counts=counts,
                                 algorithm="amortized")
        self._store_result(result, index)
        self.predictions_ = self._as_output(predictions, "predictions")
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

    def _check_noise(self, valuer: Any, noise: np.ndarray, counts: np.ndarray) -> None:
        """Refuse targets of unknown noise where the noise is needed; else warn.

        With one sample per row no row has a variance, and the pooled one cannot be
        told from the spread of the values themselves: the weights and the shrinkage
        have nothing to rest on, and a few heavy-tailed single samples steer the
        value model (worse than random rankings on 3 of 5 seeds in the benchmark).
        """
        if np.isfinite(noise).any():
            return
        name = type(valuer).__name__
        if self.weighting == "inverse_variance" or self.combine == "shrinkage":
            raise ValueError(
                f"AmortizedValuer(weighting={self.weighting!r}, combine={self.combine!r}) "
                f"needs the noise of the valuer's estimates, and {name} gave no row a "
                f"standard error (at most {int(np.max(counts, initial=0))} sample per "
                "row). Give the valuer at least 2 samples per row (e.g. max_updates=2), "
                "or set weighting='uniform' and combine='prediction' to fit the value "
                "model on estimates of unknown noise.")
        warnings.warn(
            f"AmortizedValuer: the valuer {name} gave no standard error (e.g. one sample "
            "per row): every row weighs the same, a few heavy-tailed single samples can "
            "steer the value model, and stderr_ is NaN.", UserWarning, stacklevel=4)

    def _warn_if_low(self, report: dict[str, float]) -> None:
        """Warn when the data show that the predictions follow the values poorly.

        That is when the 90 % interval of ``disattenuated_score_`` lies below
        ``LOW_SCORE``. Targets too noisy to tell give a wide interval and no
        warning: the interval says so.
        """
        low, high = report["low"], report["high"]
        if not np.isfinite(high) or high >= LOW_SCORE:
            return
        lean = "; values_ lean on the valuer's estimates, as far as their noise allows"
        warnings.warn(
            f"AmortizedValuer: the value model predicts the values poorly: the "
            f"correlation of its cross-fitted predictions with the exact values, "
            f"estimated from the noisy ones (disattenuated_score_="
            f"{report['disattenuated']:.3f}, 90 % interval [{low:.3f}, {high:.3f}]), is "
            f"below {LOW_SCORE}. predict() on new rows will be unreliable"
            f"{lean if self.combine == 'shrinkage' else ''}. Try another estimator or "
            "features, or use the valuer's own values.", UserWarning, stacklevel=4)


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
