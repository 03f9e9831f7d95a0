"""How good are data values? Point-removal curves, noisy-row detection, datamodeling.

Standard benchmarks of data valuation (Ghorbani & Zou, 2019, "Data Shapley:
Equitable Valuation of Data for Machine Learning", ICML; Kwon & Zou, 2023) and of
training-data attribution (Park et al., 2023, "TRAK: Attributing model behavior at
scale", ICML; Koh & Liang, 2017):

* **point removal**: retrain after removing the lowest-valued (or highest-valued, or
  random) x % of training rows and score on held-out data. Good values make the
  lowest-first curve rise or stay flat and the highest-first curve fall fast;
* **detection**: with known noisy rows (e.g. flipped labels), how well do low values
  find them (AUROC, precision at k);
* **linear datamodeling score** (LDS): how well an attribution matrix, summed over a
  random subset of training rows, ranks the outputs of models retrained on such
  subsets; **leave-one-out correlation**: how well it predicts the effect of removing
  one row.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from scipy.stats import rankdata
from sklearn.base import clone
from sklearn.metrics import check_scoring
from sklearn.utils import Bunch, check_random_state

from skdvl._datamodels import (
    check_output,
    check_scores,
    columnwise_correlation,
    holdout_regularization,
    mean_finite,
    outputs_of_fits,
)
from skdvl._sklearn_compat import (
    HasMethods,
    Interval,
    StrOptions,
    num_samples,
    safe_indexing,
    validate_params,
)

__all__ = ["holdout_regularization", "linear_datamodeling_score", "loo_correlation",
           "noisy_auroc", "precision_at_k", "removal_curve"]

_STRATEGIES = ("lowest", "highest", "random")


def _as_values(values: Any) -> np.ndarray:
    """Values as a 1-D float array, from an array, a Series or a fitted valuer."""
    values = getattr(values, "values_", values)
    return np.asarray(values, dtype=np.float64).reshape(-1)


def _check_noisy(values: Any, is_noisy: Any) -> tuple[np.ndarray, np.ndarray]:
    v = _as_values(values)
    noisy = np.asarray(is_noisy).reshape(-1)
    if noisy.dtype != bool:
        noisy = noisy.astype(bool)
    if noisy.shape != v.shape:
        raise ValueError(
            f"is_noisy must have one entry per value ({v.shape[0]}). "
            f"Got {noisy.shape[0]} instead."
        )
    return v, noisy


def _lowest_first(values: np.ndarray) -> np.ndarray:
    """Positions ordered by value, lowest first; ties by position; NaN last."""
    return np.argsort(np.where(np.isnan(values), np.inf, values), kind="stable")


#: ``values`` of the metrics: an array-like or a fitted valuer (read for ``values_``).
_VALUES = "no_validation"


@validate_params(
    {"values": _VALUES, "is_noisy": ["array-like"]}, prefer_skip_nested_validation=True
)
def noisy_auroc(values: Any, is_noisy: Any) -> float:
    """Area under the ROC curve of finding noisy rows by low value.

    1.0 means every noisy row is valued below every clean row; 0.5 is chance.
    Ties count one half (Mann-Whitney U); NaN values rank as the highest.

    Parameters
    ----------
    values : array-like of shape (n,) or fitted valuer
        Data values (higher is better).
    is_noisy : array-like of bool of shape (n,)
        Which rows are noisy.

    Returns
    -------
    float

    Examples
    --------
    >>> from skdvl.evaluation import noisy_auroc
    >>> noisy_auroc([0.1, 0.9, 0.8, 0.2], [True, False, False, False])
    1.0
    >>> noisy_auroc([0.5, 0.9, 0.8, 0.2], [True, False, False, False])
    0.6666666666666666
    """
    v, noisy = _check_noisy(values, is_noisy)
    n_pos = int(noisy.sum())
    n_neg = noisy.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"is_noisy must mark at least one noisy and one clean row. Got {n_pos} noisy "
            f"and {n_neg} clean rows instead."
        )
    ranks = rankdata(-np.where(np.isnan(v), np.inf, v))  # low value -> high rank
    u = ranks[noisy].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


@validate_params(
    {"values": _VALUES, "is_noisy": ["array-like"],
     "k": [Interval(Integral, 1, None, closed="left"), None]},
    prefer_skip_nested_validation=True,
)
def precision_at_k(values: Any, is_noisy: Any, k: int | None = None) -> float:
    """Share of noisy rows among the ``k`` lowest-valued rows.

    Parameters
    ----------
    values : array-like of shape (n,) or fitted valuer
        Data values (higher is better).
    is_noisy : array-like of bool of shape (n,)
        Which rows are noisy.
    k : int, default=None
        How many lowest-valued rows to inspect; None means the number of noisy
        rows (then precision equals recall).

    Returns
    -------
    float

    Examples
    --------
    >>> from skdvl.evaluation import precision_at_k
    >>> precision_at_k([0.1, 0.9, 0.3, 0.2], [True, False, True, False])
    0.5
    >>> precision_at_k([0.1, 0.9, 0.3, 0.2], [True, False, True, False], k=1)
    1.0
    """
    v, noisy = _check_noisy(values, is_noisy)
    k = int(noisy.sum()) if k is None else k
    if not 1 <= k <= v.shape[0]:
        raise ValueError(
            f"k must be in [1, n_samples={v.shape[0]}]. Got k={k} instead."
        )
    return float(noisy[_lowest_first(v)[:k]].mean())


@validate_params(
    {
        "estimator": [HasMethods(["fit"])],
        "X": ["array-like", "sparse matrix"],
        "y": ["array-like"],
        "values": _VALUES,
        "X_test": ["array-like", "sparse matrix"],
        "y_test": ["array-like"],
        "fractions": ["array-like"],
        "strategies": ["array-like"],
        "scoring": [str, callable, None],
        "n_repeats": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "n_jobs": [Integral, None],
        "verbose": ["verbose"],
    },
    prefer_skip_nested_validation=False,
)
def removal_curve(
    estimator: Any,
    X: Any,
    y: Any,
    values: Any,
    *,
    X_test: Any,
    y_test: Any,
    fractions: Sequence[float] = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5),
    strategies: Sequence[str] = _STRATEGIES,
    scoring: str | Callable[..., float] | None = None,
    n_repeats: int = 5,
    random_state: int | np.random.RandomState | None = None,
    n_jobs: int | None = None,
    verbose: int = 0,
) -> Bunch:
    """Test score after removing a growing share of training rows, by value.

    For each fraction ``f`` the first ``floor(f * n)`` rows of an ordering are removed,
    a clone of ``estimator`` is fitted on the rest and scored on ``(X_test, y_test)``.
    Orderings: ``"lowest"`` value first, ``"highest"`` first, and ``"random"``
    (``n_repeats`` seeds, the baseline). NaN values are removed last in both value
    orderings. A fit that fails scores NaN, with one summary warning.

    Parameters
    ----------
    estimator : estimator
        The model to retrain.
    X, y : array-like
        The training data the values belong to.
    values : array-like of shape (n_samples,) or fitted valuer
        Their values.
    X_test, y_test : array-like
        Held-out data to score on.
    fractions : sequence of float in [0, 1), default=(0, .05, .1, .15, .2, .3, .4, .5)
        Shares of rows to remove.
    strategies : sequence of {"lowest", "highest", "random"}, default=all three
        Orderings to evaluate.
    scoring : str or callable, default=None
        A scikit-learn scorer; None uses ``estimator.score``.
    n_repeats : int, default=5
        Random orderings (seeds) for ``"random"``.
    random_state : int, RandomState instance or None, default=None
        Seeds the random orderings.
    n_jobs : int, default=None
        Parallel fits (joblib).
    verbose : int, default=0
        Show a progress bar when > 0.

    Returns
    -------
    curve : Bunch
        ``fractions`` and ``n_removed`` of shape (n_fractions,); ``lowest`` and
        ``highest`` of shape (n_fractions,); ``random`` of shape
        (n_repeats, n_fractions); only the strategies asked for.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_breast_cancer
    >>> from sklearn.naive_bayes import GaussianNB
    >>> from skdvl.evaluation import removal_curve
    >>> X, y = load_breast_cancer(return_X_y=True)
    >>> values = np.random.default_rng(0).random(400)
    >>> curve = removal_curve(GaussianNB(), X[:400], y[:400], values, X_test=X[400:],
    ...                       y_test=y[400:], fractions=[0.0, 0.5], n_repeats=2,
    ...                       random_state=0)
    >>> curve.n_removed
    array([  0, 200])
    >>> curve.random.shape
    (2, 2)
    """
    v = _as_values(values)
    n = num_samples(X)
    fracs = _check_fractions(fractions, strategies, n, v.shape[0])
    n_removed = np.floor(fracs * n + 1e-9).astype(int)
    orders = _removal_orders(v, strategies, n_repeats, random_state)
    scorer = check_scoring(estimator, scoring=scoring)
    tasks = [(s, r, j) for (s, r) in orders for j in range(fracs.shape[0])]
    jobs = (
        delayed(_fit_and_score)(
            estimator, X, y, orders[(s, r)][n_removed[j]:], X_test, y_test, scorer
        )
        for s, r, j in tasks
    )
    results = Parallel(n_jobs=n_jobs, return_as="generator")(jobs)
    if verbose > 0:
        from tqdm.auto import tqdm

        results = tqdm(results, total=len(tasks), desc="removal curve")
    scores, first_error = _collect(tasks, results, strategies, n_repeats, fracs.shape[0])
    if first_error is not None:
        n_failed = sum(int(np.isnan(a).sum()) for a in scores.values())
        warnings.warn(
            f"{n_failed} of {len(tasks)} fits failed and scored NaN; the first error "
            f"was: {first_error!r}",
            UserWarning, stacklevel=2,
        )
    return Bunch(fractions=fracs, n_removed=n_removed, **scores)


def _check_fractions(
    fractions: Sequence[float], strategies: Sequence[str], n: int, n_values: int
) -> np.ndarray:
    fracs = np.asarray(fractions, dtype=np.float64).reshape(-1)
    if fracs.size == 0 or np.any((fracs < 0) | (fracs >= 1)):
        raise ValueError(
            f"fractions must be a non-empty sequence of floats in [0, 1). Got "
            f"{list(fractions)} instead."
        )
    bad = [s for s in strategies if s not in _STRATEGIES]
    if bad or not strategies:
        raise ValueError(
            f"strategies must be a non-empty subset of {list(_STRATEGIES)}. Got "
            f"{list(strategies)} instead."
        )
    if n_values != n:
        raise ValueError(
            f"values must have one entry per row of X ({n}). Got {n_values} instead."
        )
    return fracs


def _removal_orders(
    values: np.ndarray, strategies: Sequence[str], n_repeats: int, random_state: Any
) -> dict[tuple[str, int], np.ndarray]:
    """Row orderings to remove from, keyed by (strategy, repeat); seeds drawn here."""
    low = _lowest_first(values)
    n_valued = int(np.count_nonzero(~np.isnan(values)))
    high = np.concatenate([low[:n_valued][::-1], low[n_valued:]])
    rng = check_random_state(random_state)
    orders: dict[tuple[str, int], np.ndarray] = {}
    for s in strategies:
        if s == "lowest":
            orders[(s, 0)] = low
        elif s == "highest":
            orders[(s, 0)] = high
        else:
            for r in range(n_repeats):
                orders[(s, r)] = rng.permutation(values.shape[0])
    return orders


def _fit_and_score(
    estimator: Any, X: Any, y: Any, kept: np.ndarray, X_test: Any, y_test: Any, scorer: Any
) -> tuple[float, BaseException | None]:
    kept = np.sort(kept)
    try:
        model = clone(estimator).fit(safe_indexing(X, kept), safe_indexing(y, kept))
        return float(scorer(model, X_test, y_test)), None
    except Exception as exc:  # noqa: BLE001 - reported in one summary warning
        return np.nan, exc


def _collect(
    tasks: list, results: Any, strategies: Sequence[str], n_repeats: int, n_fracs: int
) -> tuple[dict[str, np.ndarray], BaseException | None]:
    scores = {
        s: np.full((n_repeats, n_fracs) if s == "random" else n_fracs, np.nan)
        for s in strategies
    }
    first_error = None
    for (s, r, j), (score, error) in zip(tasks, results):
        if s == "random":
            scores[s][r, j] = score
        else:
            scores[s][j] = score
        if error is not None and first_error is None:
            first_error = error
    return scores, first_error


# ---------------------------------------------------------------- attribution metrics
_OUTPUTS = ("loss", "margin", "prediction")
_ATTRIBUTION_PARAMS = {
    "scores": ["array-like"],
    "estimator": [HasMethods(["fit"])],
    "X": ["array-like", "sparse matrix"],
    "y": ["array-like"],
    "X_test": ["array-like", "sparse matrix"],
    "y_test": ["array-like"],
    "output": [StrOptions(set(_OUTPUTS)), callable],
    "n_jobs": [Integral, None],
    "verbose": ["verbose"],
}


@validate_params(
    {**_ATTRIBUTION_PARAMS,
     "n_subsets": [Interval(Integral, 2, None, closed="left")],
     "fraction": [Interval(Real, 0, 1, closed="neither")],
     "random_state": ["random_state"]},
    prefer_skip_nested_validation=False,
)
def linear_datamodeling_score(
    scores: Any,
    estimator: Any,
    X: Any,
    y: Any,
    X_test: Any,
    y_test: Any,
    *,
    n_subsets: int = 50,
    fraction: float = 0.5,
    output: str | Callable[..., Any] = "loss",
    random_state: int | np.random.RandomState | None = None,
    n_jobs: int | None = None,
    verbose: int = 0,
) -> Bunch:
    """Linear datamodeling score of an attribution matrix (Park et al., 2023).

    ``n_subsets`` random subsets ``S`` of ``round(fraction * n)`` training rows are
    drawn; a clone of ``estimator`` is fitted on each. For each test row ``t``, the
    predicted output ``sum_{i in S} scores[t, i]`` is rank-correlated (Spearman) with
    the actual output of the model fitted on ``S``, over the subsets; the LDS is the mean
    of these correlations over the test rows.

    Parameters
    ----------
    scores : array-like of shape (n_test, n_samples)
        The attribution: ``scores[t, i] > 0`` means that training row ``i`` raises
        ``output`` on test row ``t``. skdvl's influences (positive: the row raises the
        test loss) go with ``output="loss"``; TRAK's own scores (positive: the row raises
        the correct-class margin) with ``output="margin"``.
    estimator : estimator
        The model to refit; set its seed (e.g. ``random_state`` or the initialisation of
        a net) so that every refit starts alike: the LDS then measures the attribution,
        not the refits' noise.
    X, y : array-like
        The training data the scores belong to.
    X_test, y_test : array-like
        The test rows of ``scores``.
    n_subsets : int, default=50
        Subsets (model fits).
    fraction : float in (0, 1), default=0.5
        Share of the training rows in each subset.
    output : {"loss", "margin", "prediction"} or callable, default="loss"
        What the refitted model is measured by, per test row: ``"loss"`` is the log-loss
        ``-log p_y`` of a classifier (``predict_proba``) or the squared error of a
        regressor; ``"margin"`` is TRAK's correct-class margin ``log(p_y / (1 - p_y))``
        (a classifier); ``"prediction"`` is ``predict`` (a regressor). A callable
        ``output(fitted_estimator, X_test, y_test)`` returns one value per test row.
    random_state : int, RandomState instance or None, default=None
        Draws the subsets (all of them, before any fit).
    n_jobs : int, default=None
        Parallel fits (joblib).
    verbose : int, default=0
        Show a progress bar when > 0.

    Returns
    -------
    result : Bunch
        ``score`` (float, the LDS: mean of ``per_row`` over its finite entries),
        ``per_row`` of shape (n_test,) (NaN where a row's actual output is constant),
        ``subsets`` (n_subsets, subset size) training row positions, ``predicted`` and
        ``actual`` of shape (n_subsets, n_test). A fit that fails gives NaN outputs,
        left out of the correlations, with one summary warning.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import Ridge
    >>> from skdvl.evaluation import linear_datamodeling_score
    >>> rng = np.random.default_rng(0)
    >>> X, X_test = rng.normal(size=(40, 3)), rng.normal(size=(5, 3))
    >>> y, y_test = X @ [1.0, -2.0, 0.5], X_test @ [1.0, -2.0, 0.5]
    >>> scores = rng.normal(size=(5, 40))  # a random attribution scores about 0
    >>> lds = linear_datamodeling_score(scores, Ridge(), X, y, X_test, y_test,
    ...                                 n_subsets=10, random_state=0)
    >>> lds.per_row.shape, lds.subsets.shape
    ((5,), (10, 20))
    """
    n, n_test = num_samples(X), num_samples(X_test)
    S = check_scores(scores, n_test, n)
    check_output(estimator, output)
    rng = check_random_state(random_state)
    size = min(n, max(1, round(fraction * n)))
    subsets = np.stack([np.sort(rng.choice(n, size, replace=False)) for _ in range(n_subsets)])
    actual = outputs_of_fits(estimator, X, y, X_test, y_test, list(subsets), output,
                              n_jobs, verbose, "linear datamodeling score")
    mask = np.zeros((n_subsets, n), dtype=bool)
    mask[np.arange(n_subsets)[:, None], subsets] = True
    predicted = mask.astype(np.float64) @ S.T
    per_row = columnwise_correlation(predicted, actual, "spearman")
    return Bunch(score=mean_finite(per_row), per_row=per_row, subsets=subsets,
                 predicted=predicted, actual=actual)


@validate_params(
    {**_ATTRIBUTION_PARAMS,
     "indices": ["array-like", None],
     "correlation": [StrOptions({"spearman", "pearson"})]},
    prefer_skip_nested_validation=False,
)
def loo_correlation(
    scores: Any,
    estimator: Any,
    X: Any,
    y: Any,
    X_test: Any,
    y_test: Any,
    *,
    indices: Any = None,
    output: str | Callable[..., Any] = "loss",
    correlation: str = "spearman",
    n_jobs: int | None = None,
    verbose: int = 0,
) -> Bunch:
    """Correlation of an attribution with real leave-one-out refits (Koh & Liang, 2017).

    A clone of ``estimator`` is fitted on all training rows and one without each row
    ``i`` of ``indices``. For each test row ``t``, the actual change
    ``output_{-i}(t) - output(t)`` is correlated, over the rows ``i``, with the predicted
    change ``-scores[t, i]`` (removing a row removes its contribution).

    Parameters
    ----------
    scores : array-like of shape (n_test, n_samples)
        The attribution, in the sign convention of :func:`linear_datamodeling_score`.
    estimator : estimator
        The model to refit (seeded, so that refits differ only by the row removed).
    X, y : array-like
        The training data.
    X_test, y_test : array-like
        The test rows of ``scores``.
    indices : array-like of int, default=None
        The training rows to leave out, one fit each; None means all of them.
    output : {"loss", "margin", "prediction"} or callable, default="loss"
        As in :func:`linear_datamodeling_score`.
    correlation : {"spearman", "pearson"}, default="spearman"
    n_jobs : int, default=None
        Parallel fits (joblib).
    verbose : int, default=0
        Show a progress bar when > 0.

    Returns
    -------
    result : Bunch
        ``score`` (float, mean of ``per_row`` over its finite entries), ``per_row`` of
        shape (n_test,), ``indices``, and ``predicted`` and ``actual`` of shape
        (n_indices, n_test).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LinearRegression
    >>> from skdvl.evaluation import loo_correlation
    >>> rng = np.random.default_rng(0)
    >>> X, X_test = rng.normal(size=(12, 2)), rng.normal(size=(3, 2))
    >>> y, y_test = X @ [1.0, 2.0] + rng.normal(size=12), X_test @ [1.0, 2.0]
    >>> loo = loo_correlation(np.zeros((3, 12)), LinearRegression(), X, y, X_test, y_test,
    ...                       indices=[0, 1, 2])
    >>> loo.actual.shape
    (3, 3)
    """
    n, n_test = num_samples(X), num_samples(X_test)
    S = check_scores(scores, n_test, n)
    check_output(estimator, output)
    idx = np.arange(n) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size == 0 or idx.min() < -n or idx.max() >= n:
        raise ValueError(f"indices must be positions of training rows in [0, {n}). Got "
                         f"{idx.tolist()[:10]} instead.")
    idx = idx % n
    kept = [np.arange(n)] + [np.delete(np.arange(n), i) for i in idx]
    outs = outputs_of_fits(estimator, X, y, X_test, y_test, kept, output, n_jobs, verbose,
                            "leave-one-out")
    actual = outs[1:] - outs[0]
    predicted = -S[:, idx].T
    per_row = columnwise_correlation(predicted, actual, correlation)
    return Bunch(score=mean_finite(per_row), per_row=per_row, indices=idx,
                 predicted=predicted, actual=actual)
