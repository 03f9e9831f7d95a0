"""Exact Shapley values of K-nearest-neighbour utilities (Jia et al., 2019).

For one validation row, sort the training rows by distance to it. The Shapley value
of the row at rank ``r`` (1 = nearest) in the game "score of the unweighted KNN model
trained on a coalition" depends only on ``r``, on ``K`` and on the labels of the rows
ranked at or after ``r``, so all ``n`` values follow from one sort and a few
cumulative sums: ``O(n log n)`` per validation row instead of ``2^n`` utility
evaluations. This module computes those values for whole blocks of validation rows
at once, in memory bounded by scikit-learn's ``working_memory``.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from scipy import sparse
from sklearn import get_config
from sklearn.base import BaseEstimator, _fit_context, clone
from sklearn.metrics import pairwise_distances
from sklearn.metrics.pairwise import _VALID_METRICS
from sklearn.neighbors import NearestNeighbors
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.extmath import row_norms, safe_sparse_dot
from sklearn.utils.multiclass import type_of_target
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from skdvl.base import ValuerMixin, pandas_index, validate_valuation_data
from skdvl.result import ValuationResult

__all__ = ["KNNShapley"]

#: Metrics computed blockwise from the BLAS product ``X_val @ X.T`` (squared distances,
#: which rank the rows exactly as the distances do).
_EUCLIDEAN = frozenset({"euclidean", "l2", "sqeuclidean"})
#: float64 arrays of shape (rows, n_train) alive at once per block, by task; sizes the
#: blocks (see ``_block_rows``). Measured peaks were below these counts.
_ARRAYS_PER_ROW = {"classification": 5, "regression": 8}
#: Blocks are at most 1/16 of the validation rows, so that ``n_jobs`` workers share
#: the work evenly; the block boundaries never depend on ``n_jobs``.
_MIN_BLOCKS = 16
#: Target size of one ``(rows, n_train)`` float64 array of a block (see `_block_rows`).
_CACHE_BYTES = 2**21


# --------------------------------------------------------------------------------------
# The math: values in rank order, for a block of validation rows.
# --------------------------------------------------------------------------------------


def _exclusive_suffix_sum(x: np.ndarray) -> np.ndarray:
    """``out[:, r] = x[:, r+1:].sum(axis=1)``, for every ``r`` at once (a new array)."""
    out = np.empty_like(x)
    np.cumsum(x[:, :0:-1], axis=1, out=out[:, -2::-1])
    out[:, -1] = 0.0
    return out


def _knn_classification_shapley(match: np.ndarray, k: int) -> np.ndarray:
    """Exact KNN-Shapley values of the classification utility, in rank order.

    Parameters
    ----------
    match : ndarray of shape (n_rows, n)
        ``match[t, r - 1]`` is 1.0 when the training row ranked ``r``-th nearest to
        validation row ``t`` has the label of that validation row, else 0.0.
    k : int
        Number of neighbours, ``K >= 1``; any ``K``, also ``K >= n``.

    Returns
    -------
    ndarray of shape (n_rows, n)
        ``values[t, r - 1]``: the Shapley value of the rank-``r`` row in the game of
        validation row ``t``.

    Notes
    -----
    The utility is the one of Theorem 1 of Jia et al. (2019),
    :math:`u(S) = \\frac{1}{K} \\sum_{k=1}^{\\min(K, |S|)} 1[y_{\\alpha_k(S)} = y]`
    (a coalition smaller than ``K`` still divides by ``K``; ``u(\\emptyset) = 0``).
    Theorem 1 of the paper states the values as the recursion
    :math:`s_n = 1[y_{\\alpha_n} = y] / n` and
    :math:`s_r = s_{r+1} + \\frac{1[y_{\\alpha_r} = y] - 1[y_{\\alpha_{r+1}} = y]}{K}
    \\frac{\\min(K, r)}{r}`. Unrolled, it is the closed form computed here,

    .. math:: s_r = \\frac{m_r}{K} \\frac{\\min(K, r)}{r}
              - \\sum_{j > \\max(r, K)} \\frac{m_j}{j (j - 1)},

    one reversed cumulative sum instead of a loop. Deviation: the paper's start
    :math:`s_n = m_n / n` assumes ``n >= K``; for ``n < K`` the exact value of the
    farthest row is :math:`m_n / K`, which the closed form gives for every ``n``
    (every row then gets :math:`m_r / K`: the game is additive).
    """
    n = match.shape[1]
    rank = np.arange(1, n + 1, dtype=np.float64)
    near = np.minimum(k, rank) / (k * rank)
    far = np.zeros(n)
    tail = rank > k
    far[tail] = 1.0 / (rank[tail] * (rank[tail] - 1.0))
    values = _exclusive_suffix_sum(match * far)
    np.negative(values, out=values)
    values += match * near
    return values


def _regression_rank_weights(n: int, k: int) -> tuple[np.ndarray, ...]:
    """Per-rank weights of the regression values (see `_knn_regression_shapley`)."""
    rank = np.arange(1, n + 1, dtype=np.float64)
    tail = rank > k
    r = rank[tail]
    enter = np.minimum(k, rank) / rank              # P(rank r enters the top K)
    push = np.zeros(n)                              # one closer row pushes j out
    push[tail] = k / (r * (r - 1.0))
    pair = np.full(n, 0.5)                          # a pair both in the top K
    pair[tail] = k * (k - 1.0) / (2.0 * r * (r - 1.0))
    split = np.zeros(n)                             # a third row splits the pair
    if k > 1:
        split[tail] = -k * (k - 1.0) / (r * (r - 1.0) * (r - 2.0))
    return enter, push, pair, split


def _knn_regression_shapley(y_sorted: np.ndarray, y_val: np.ndarray, k: int) -> np.ndarray:
    """Exact KNN-Shapley values of the regression utility, in rank order.

    Parameters
    ----------
    y_sorted : ndarray of shape (n_rows, n)
        ``y_sorted[t, r - 1]``: target of the training row ranked ``r``-th nearest to
        validation row ``t`` (0.0 for a row that does not play, see Notes).
    y_val : ndarray of shape (n_rows,)
        Targets of the validation rows.
    k : int
        Number of neighbours, ``K >= 1``; any ``K``, also ``K >= n``.

    Returns
    -------
    ndarray of shape (n_rows, n)
        Values in rank order, as in `_knn_classification_shapley`.

    Notes
    -----
    The utility is the KNN-regression utility of Jia et al. (2019), the negative
    squared error of the unweighted KNN prediction,
    :math:`u(S) = -\\bigl(\\frac{1}{K} \\sum_{k=1}^{\\min(K,|S|)} y_{\\alpha_k(S)}
    - y\\bigr)^2`, so :math:`u(\\emptyset) = -y^2`. Expanding the square splits it
    into games whose Shapley values have closed forms (with :math:`T(S)` the ``K``
    nearest rows of :math:`S` and :math:`P_r = \\sum_{i<r} y_i`):

    * :math:`\\sum_{i \\in T(S)} a_i` with :math:`a_i = 2 y y_i / K - y_i^2 / K^2`:
      :math:`a_r \\min(K,r)/r - \\sum_{j>\\max(r,K)} a_j K / (j(j-1))`;
    * :math:`-\\frac{2}{K^2} \\sum_{i<j \\in T(S)} y_i y_j`: the pair
      :math:`(i, j)`, ``i`` nearer, counts when both are in :math:`T(S)`, worth
      :math:`w_j = 1/2` to each of them if ``j <= K``, else
      :math:`K(K-1) / (2 j (j-1))`; each row ranked before ``j`` other than ``i``
      gets :math:`\\psi_j = -K(K-1) / (j(j-1)(j-2))` for ``j > K``, else 0.

    Summed by rank with reversed cumulative sums, these give every value in
    ``O(n)`` after the sort. They are our own derivation from the subset formula;
    the tests check them against brute-force enumeration to 1e-12. A row with target
    0.0 at the last rank is a dummy player, which is how leave-self-out removes a
    validation row from its own game.
    """
    enter, push, pair, split = _regression_rank_weights(y_sorted.shape[1], k)
    c2 = 2.0 / k**2
    prefix = np.cumsum(y_sorted, axis=1)
    prefix -= y_sorted                               # P_r, rows nearer than r
    single = y_sorted * (2.0 / k * y_val[:, None] - y_sorted / k**2)
    farther = single * push
    farther += c2 * split * y_sorted * prefix
    values = single * enter
    del single
    pair_part = _exclusive_suffix_sum(y_sorted * (pair - split))
    pair_part += pair * prefix
    pair_part *= y_sorted
    values -= c2 * pair_part
    del pair_part, prefix
    values -= _exclusive_suffix_sum(farther)
    return values


# --------------------------------------------------------------------------------------
# Neighbour ranking of a block of validation rows.
# --------------------------------------------------------------------------------------


def _distances(
    Xb: Any, X: Any, x_sq: np.ndarray | None, metric: Any, p: float | None
) -> np.ndarray:
    """Distances (squared for the Euclidean family) from rows ``Xb`` to rows ``X``."""
    if x_sq is not None:
        d = np.asarray(safe_sparse_dot(Xb, X.T, dense_output=True), dtype=np.float64)
        d *= -2.0
        d += row_norms(Xb, squared=True)[:, None]
        d += x_sq[None, :]
        np.maximum(d, 0.0, out=d)
        return d
    kwargs = {"p": p} if metric == "minkowski" else {}
    return np.asarray(pairwise_distances(Xb, X, metric=metric, n_jobs=1, **kwargs))


def _stable_argsort(d: np.ndarray) -> np.ndarray:
    """Row-wise argsort of ``d`` with ties broken by column index (``d`` may be modified).

    Equivalent to ``np.argsort(d, axis=1, kind="stable")``, and faster: each distance's
    order-preserving 64-bit pattern keeps its high bits and takes the column index as
    its low bits, and these keys are sorted by value (no indirect sort, no gather).
    Keys that tie on the kept bits but not on the full distances (values closer than
    about ``2**(b - 52)`` relative, ``b = log2(n_columns)``) are rare; rows holding one
    are sorted again with the stable argsort, so the result is always exact.
    """
    n = d.shape[1]
    bits = max(1, (n - 1).bit_length())
    low = np.int64((1 << bits) - 1)
    if np.signbit(d).any():                            # -0.0 or a negative "distance"
        d += 0.0                                       # -0.0 -> +0.0
        key = d.view(np.int64).copy()
        key ^= (key >> 63) & np.int64(0x7FFFFFFFFFFFFFFF)  # negatives: reverse order
        key &= ~low
    else:                                              # bit patterns already ordered
        key = d.view(np.int64) & ~low
    key |= np.arange(n, dtype=np.int64)
    key.sort(axis=1)
    high = key & ~low
    near = high[:, 1:] == high[:, :-1]
    del high
    key &= low
    if near.any():
        rows, cols = np.nonzero(near)
        differ = d[rows, key[rows, cols]] != d[rows, key[rows, cols + 1]]
        redo = np.unique(rows[differ])
        if redo.size:
            key[redo] = np.argsort(d[redo], axis=1, kind="stable")
    return key


def _rank_block(
    Xb: Any, self_rows: np.ndarray | None, searcher: dict[str, Any]
) -> np.ndarray:
    """Training rows ordered from nearest to farthest, one row per validation row.

    Ties in distance are broken by training index. With ``self_rows`` (leave-self-out),
    validation row ``t`` is training row ``self_rows[t]``, which is moved to the
    last rank, where the caller makes it a dummy player.
    """
    nn = searcher.get("nn")
    if nn is None:
        d = _distances(Xb, searcher["X"], searcher["x_sq"], searcher["metric"], searcher["p"])
        if self_rows is not None:
            d[np.arange(d.shape[0]), self_rows] = np.inf
        return _stable_argsort(d)
    d, ind = nn.kneighbors(Xb, n_neighbors=searcher["n_train"])
    d = np.asarray(d, dtype=np.float64)
    if self_rows is not None:
        d[ind == self_rows[:, None]] = np.inf
    order = np.lexsort((ind, d), axis=-1)
    return np.take_along_axis(np.asarray(ind), order, axis=1)


def _block_moments(
    Xb: Any, yb: np.ndarray, self_rows: np.ndarray | None, y_train: np.ndarray,
    k: int, task: str, searcher: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sum, sum of squares and count of the values of every training row over a block.

    A training row does not count in the game where it is the validation row.
    """
    order = _rank_block(Xb, self_rows, searcher)
    n = order.shape[1]
    if task == "classification":
        target = (y_train[order] == yb[:, None]).astype(np.float64)
    else:
        target = y_train[order]
    if self_rows is not None:
        target[:, -1] = 0.0
    if task == "classification":
        values = _knn_classification_shapley(target, k)
    else:
        values = _knn_regression_shapley(target, yb, k)
    del target
    flat = order.ravel()
    total = np.bincount(flat, weights=values.ravel(), minlength=n)
    np.square(values, out=values)
    squares = np.bincount(flat, weights=values.ravel(), minlength=n)
    counts = np.full(n, order.shape[0], dtype=np.int64)
    if self_rows is not None:
        counts -= np.bincount(self_rows, minlength=n)
    return total, squares, counts


def _block_rows(n_val: int, n_train: int, task: str) -> int:
    """Validation rows per block: within ``working_memory`` and cache-sized.

    Blocks whose arrays stay near ``_CACHE_BYTES`` ran about 15% faster than
    blocks of 100 MB arrays (fewer trips to main memory in the elementwise passes).
    """
    budget = get_config()["working_memory"] * 2**20
    rows = int(budget // (8 * n_train * _ARRAYS_PER_ROW[task]))
    cache_rows = _CACHE_BYTES // (8 * n_train)
    return max(1, min(rows, cache_rows, math.ceil(n_val / _MIN_BLOCKS)))


def _merge_block(
    acc: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    part: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pool a block's (sum, sum of squares, count) into running (mean, M2, count).

    Within a block the squared deviations come from the sums; across blocks they are
    pooled with Chan, Golub & LeVeque (1979), which keeps them accurate for many rows.
    """
    total, squares, n_b = part
    safe = np.maximum(n_b, 1)
    mean_b = total / safe
    m2_b = np.maximum(squares - total * mean_b, 0.0)
    if acc is None:
        return mean_b, m2_b, n_b
    mean_a, m2_a, n_a = acc
    n = n_a + n_b
    delta = mean_b - mean_a
    frac = n_b / np.maximum(n, 1)
    return mean_a + delta * frac, m2_a + m2_b + delta**2 * n_a * frac, n


# --------------------------------------------------------------------------------------
# The estimator.
# --------------------------------------------------------------------------------------


class KNNShapley(ValuerMixin, BaseEstimator):
    """Exact Shapley values of the training rows for a K-nearest-neighbour model.

    The utility of a coalition :math:`S` of training rows is the score, on one
    validation row, of the unweighted KNN model that only knows :math:`S`:
    classification credits :math:`1/K` for each of the (at most) ``K`` nearest rows of
    :math:`S` that carry the validation label; regression is the negative squared
    error of the KNN prediction. Jia et al. (2019) show that the Shapley values of
    every training row in this game follow from one sort of the training rows by
    distance, in ``O(n log n)`` instead of ``2^n`` evaluations. A row's value is its
    mean over the validation rows.

    Parameters
    ----------
    n_neighbors : int or estimator, default=5
        ``K``, the number of neighbours, ``>= 1``; ``K >= n_samples`` is valid (the
        utility then counts the whole coalition). An object with a ``kneighbors``
        method (e.g. :class:`~sklearn.neighbors.NearestNeighbors`, fitted or not) is
        cloned, fitted on ``X`` and used for the neighbour search, with its own
        ``n_neighbors`` as ``K``; ``metric``, ``p`` and ``algorithm`` are then ignored.
    weights : {"uniform"}, default="uniform"
        Neighbour weighting. Only the unweighted model has an efficient exact
        algorithm (weighted KNN costs ``O(n^K)`` in the paper), so only "uniform" is
        accepted; the parameter exists for the KNN vocabulary of scikit-learn.
    metric : str or callable, default="minkowski"
        Distance between rows, as in :class:`~sklearn.neighbors.NearestNeighbors`.
        "minkowski" with ``p=2``, "euclidean", "l2" and "sqeuclidean" rank rows by
        squared Euclidean distance computed blockwise with BLAS.
    p : float, default=2
        Power of the Minkowski metric.
    algorithm : {"auto", "brute", "ball_tree", "kd_tree"}, default="auto"
        "auto" and "brute" rank the training rows from blockwise distance matrices
        (every row has to be ranked, which is what brute force does best); the tree
        algorithms go through :class:`~sklearn.neighbors.NearestNeighbors`.
    task : {"auto", "classification", "regression"}, default="auto"
        The utility. "auto" means regression when ``y`` is continuous (see
        :func:`~sklearn.utils.multiclass.type_of_target`), else classification.
    n_jobs : int, default=None
        Jobs over blocks of validation rows, as in scikit-learn (``None`` means 1
        unless in a :func:`joblib.parallel_config` context); threads by default, and
        BLAS on one thread per job, so this is the only parallelism. Values do not
        depend on it: the blocks and the order in which they are summed do not change.
    verbose : int, default=0
        Show a progress bar over blocks when ``> 0``.

    Attributes
    ----------
    values_ : ndarray or pandas.Series of shape (n_samples,)
        Mean KNN-Shapley value of each training row over the validation rows.
    stderr_ : ndarray or pandas.Series of shape (n_samples,)
        Standard deviation of a row's value across validation rows over the square
        root of their number: how much the mean depends on the validation sample.
        Each per-row value is exact.
    counts_ : ndarray or pandas.Series of shape (n_samples,)
        Number of validation rows averaged: ``n_val``, or ``n_samples - 1`` without
        ``X_val``.
    result_ : ValuationResult
        The values, variances and counts.
    n_neighbors_ : int
        ``K`` as used.
    task_ : str
        "classification" or "regression", as used.
    nn_ : estimator or None
        The fitted neighbours estimator when one was used, else None.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Feature names, when ``X`` has string column names.

    Notes
    -----
    Memory: validation rows are processed in blocks whose temporary arrays (a few
    ``block x n_samples`` float64 arrays) fit in scikit-learn's ``working_memory``
    (:func:`sklearn.set_config`, 1024 MiB by default), per job as in scikit-learn:
    ``n_jobs`` workers use up to ``n_jobs`` times that. No ``n_val x n_samples``
    array is ever built. Time: one distance block and one row sort per validation
    row, ``O(n_val n_samples (d + log n_samples))``.

    Ties: training rows at equal distance (as computed: squared distances for the
    Euclidean family, in float64) are ranked by their position in ``X``, so values
    are deterministic; the paper leaves the order of ties open.

    Without ``X_val``, each training row is a validation row for the game of the
    other ``n_samples - 1`` rows (leave-self-out), so that a row never votes for
    itself; a row's value is the mean over the ``n_samples - 1`` games it plays in.

    Departures from the paper: Theorem 1 starts its recursion with
    ``1[y_n = y] / n``, which is exact only for ``n >= K``; the closed form used here
    is exact for every ``K`` (see `_knn_classification_shapley`). The regression
    utility divides by ``K`` also when the coalition has fewer than ``K`` rows, as in
    the paper, so its values depend on where ``y = 0`` lies.

    References
    ----------
    .. [1] Jia, R., Dao, D., Wang, B., Hubis, F. A., Gurel, N. M., Li, B., Zhang, C.,
       Spanos, C. J. & Song, D. (2019). "Efficient task-specific data valuation for
       nearest neighbor algorithms". Proceedings of the VLDB Endowment 12(11),
       1610-1623.

    Examples
    --------
    >>> import numpy as np
    >>> from skdvl import KNNShapley
    >>> X = np.array([[0.0], [1.0], [2.0], [3.0]])
    >>> y = np.array([0, 0, 1, 1])
    >>> v = KNNShapley(n_neighbors=1).fit(X, y, X_val=[[0.4], [2.6]], y_val=[0, 1])
    >>> v.values_
    array([0.25, 0.25, 0.25, 0.25])
    >>> v = KNNShapley(n_neighbors=1).fit(X, [0, 1, 0, 1], X_val=[[0.4]], y_val=[0])
    >>> v.values_   # row 1 is nearest but one, wrong, and hides row 2 behind it
    array([ 0.83333333, -0.16666667,  0.33333333,  0.        ])
    >>> float(v.values_.sum())   # efficiency: u(all rows) - u(no row)
    1.0
    """

    _parameter_constraints: dict = {
        "n_neighbors": [Interval(Integral, 1, None, closed="left"), HasMethods(["kneighbors"])],
        "weights": [StrOptions({"uniform"})],
        "metric": [StrOptions(set(_VALID_METRICS) - {"precomputed"}), callable],
        "p": [Interval(Real, 0, None, closed="neither")],
        "algorithm": [StrOptions({"auto", "brute", "ball_tree", "kd_tree"})],
        "task": [StrOptions({"auto", "classification", "regression"})],
        "n_jobs": [Integral, None],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        n_neighbors: int | Any = 5,
        *,
        weights: str = "uniform",
        metric: str | Any = "minkowski",
        p: float = 2,
        algorithm: str = "auto",
        task: str = "auto",
        n_jobs: int | None = None,
        verbose: int = 0,
    ) -> None:
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.metric = metric
        self.p = p
        self.algorithm = algorithm
        self.task = task
        self.n_jobs = n_jobs
        self.verbose = verbose

    def __sklearn_tags__(self):  # type: ignore[no-untyped-def]
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any, *, X_val: Any = None, y_val: Any = None) -> KNNShapley:
        """Compute the KNN-Shapley value of every row of ``X``.

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)
            Training rows to value.
        y : array-like of shape (n_samples,)
            Their labels (classification) or targets (regression).
        X_val : array-like or sparse matrix of shape (n_val, n_features), default=None
            Validation rows. None values each row of ``X`` against the others
            (leave-self-out; needs ``n_samples >= 2``).
        y_val : array-like of shape (n_val,), default=None
            Labels or targets of ``X_val``; given exactly when ``X_val`` is.

        Returns
        -------
        self : KNNShapley
        """
        index = pandas_index(X)
        X, y, X_val, y_val = validate_valuation_data(
            self, X, y, X_val, y_val, estimator=NearestNeighbors(),
            min_samples=1 if X_val is not None else 2,
        )
        self.task_ = self._resolve_task(y)
        y, y_val = self._encode_targets(y, y_val)
        searcher = self._make_searcher(X)
        self_rows = None
        if X_val is None:
            X_val, y_val, self_rows = X, y, np.arange(X.shape[0])
        mean, m2, counts = self._run_blocks(X_val, y_val, self_rows, y, searcher)
        variances = m2 / np.maximum(counts, 1)
        result = ValuationResult(
            mean, variances=variances, counts=counts, algorithm="knn_shapley"
        )
        self._store_result(result, index=index)
        return self

    def _resolve_task(self, y: np.ndarray) -> str:
        if self.task != "auto":
            return str(self.task)
        return "regression" if type_of_target(y) == "continuous" else "classification"

    def _encode_targets(self, y: np.ndarray, y_val: Any) -> tuple[np.ndarray, Any]:
        """Targets as float64 (regression) or as integer codes shared with ``y_val``."""
        if self.task_ == "regression":
            for name, target in (("y", y), ("y_val", y_val)):
                if target is not None and not np.issubdtype(np.asarray(target).dtype, np.number):
                    raise ValueError(
                        f"task='regression' needs numeric targets; got {name} with dtype "
                        f"{np.asarray(target).dtype} (e.g. {np.asarray(target)[0]!r}). "
                        "Use task='classification' for labels."
                    )
            y_val = None if y_val is None else np.asarray(y_val, dtype=np.float64)
            return np.asarray(y, dtype=np.float64), y_val
        if y_val is None:
            return np.unique(y, return_inverse=True)[1], None
        _, codes = np.unique(np.concatenate([y, y_val]), return_inverse=True)
        return codes[: y.shape[0]], codes[y.shape[0]:]

    def _make_searcher(self, X: Any) -> dict[str, Any]:
        """Set ``n_neighbors_`` and ``nn_``; return what ranks rows by distance."""
        if isinstance(self.n_neighbors, Integral):
            k = int(self.n_neighbors)
            nn = None
            if self.algorithm in ("ball_tree", "kd_tree"):
                nn = NearestNeighbors(algorithm=self.algorithm, metric=self.metric, p=self.p)
        else:
            nn = clone(self.n_neighbors)
            inner = getattr(nn, "n_neighbors", None)
            if not isinstance(inner, Integral) or isinstance(inner, bool) or inner < 1:
                raise ValueError(
                    "The 'n_neighbors' estimator of KNNShapley must have an integer "
                    f"n_neighbors >= 1. Got {type(nn).__name__} with n_neighbors={inner!r}."
                )
            k = int(inner)
        self.n_neighbors_ = int(k)
        self.nn_ = None if nn is None else nn.fit(X)
        if nn is not None:
            return {"nn": self.nn_, "n_train": X.shape[0]}
        metric, p = self.metric, self.p
        if metric == "minkowski" and p in (1, 2):
            metric = "manhattan" if p == 1 else "euclidean"
        euclid = isinstance(metric, str) and metric in _EUCLIDEAN
        if euclid:
            X = X.astype(np.float64, copy=False)
            if sparse.issparse(X):
                X = X.tocsr()
        return {
            "nn": None, "X": X, "metric": metric, "p": p,
            "x_sq": row_norms(X, squared=True) if euclid else None,
        }

    def _run_blocks(
        self, X_val: Any, y_val: np.ndarray, self_rows: np.ndarray | None,
        y: np.ndarray, searcher: dict[str, Any],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean, M2 and count per training row, over blocks of validation rows."""
        n_val, n_train = X_val.shape[0], y.shape[0]
        if searcher.get("nn") is None and sparse.issparse(X_val):
            X_val = X_val.tocsr()
        step = _block_rows(n_val, n_train, self.task_)
        blocks = [slice(s, min(s + step, n_val)) for s in range(0, n_val, step)]
        task = delayed(_block_moments)
        jobs = (
            task(X_val[b], y_val[b], None if self_rows is None else self_rows[b],
                 y, self.n_neighbors_, self.task_, searcher)
            for b in blocks
        )
        acc: Any = None
        # Threads share X and release the GIL in the heavy numpy calls; parallelism
        # comes from the blocks, so BLAS runs single-threaded (its spinning threads
        # slowed the skinny distance products down). joblib.parallel_config overrides.
        parallel = Parallel(n_jobs=self.n_jobs, prefer="threads", return_as="generator")
        with threadpool_limits(limits=1, user_api="blas"):
            for part in tqdm(parallel(jobs), total=len(blocks),
                             disable=self.verbose <= 0, desc="KNNShapley blocks"):
                acc = _merge_block(acc, part)
        return acc
