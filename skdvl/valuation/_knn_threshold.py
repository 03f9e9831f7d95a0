"""Exact Shapley values of threshold (radius) nearest-neighbour utilities.

Threshold KNN-Shapley (Wang, Zhu, Wang, Jia & Mittal, 2023): every training row within
distance ``radius`` of a validation row votes, and the rows outside are dummy players.
The value of a row in the radius depends only on its own label, on the size of the
neighbourhood and on how many of its rows carry the validation label, so no sort is
needed: ``O(n)`` per validation row after the distances. This module holds the closed
forms (classification, and our extension to regression), the blockwise computation
and the estimator.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.neighbors import NearestNeighbors

from skdvl._moments import Moments
from skdvl._sklearn_compat import (
    VALID_METRICS,
    Interval,
    StrOptions,
    fit_context,
)
from skdvl.base import ValuerMixin, pandas_index, validate_valuation_data
from skdvl.result import ValuationResult
from skdvl.valuation._knn import (
    _distance_searcher,
    _encode_knn_targets,
    _pool_blocks,
    _resolve_knn_task,
)
from skdvl.valuation._knn_math import _block_rows, _distances, _moments_of_values

__all__ = ["ThresholdKNNShapley"]


# --------------------------------------------------------------------------------------
# The math: values of the rows in the radius, one entry per (validation row, neighbour).
# --------------------------------------------------------------------------------------


def _threshold_classification_shapley(
    match: np.ndarray, size: np.ndarray, hits: np.ndarray, n_classes: int
) -> np.ndarray:
    """Exact Threshold KNN-Shapley values of the rows in the radius (classification).

    Parameters
    ----------
    match : ndarray of shape (n_pairs,)
        1.0 where the neighbour of the pair carries the label of its validation
        row, else 0.0.
    size : ndarray of shape (n_pairs,)
        :math:`m`, the number of training rows within the radius of the pair's
        validation row (``>= 1``).
    hits : ndarray of shape (n_pairs,)
        :math:`A`, how many of those ``m`` rows carry the validation label.
    n_classes : int
        ``C``; a validation row with no neighbour scores ``1 / C``.

    Returns
    -------
    ndarray of shape (n_pairs,)
        The Shapley value of each pair's neighbour in the game of its validation row.

    Notes
    -----
    The utility is the one of Wang et al. (2023), Section 4: with :math:`N(S)` the
    rows of :math:`S` within the radius, :math:`u(S) = 1/C` when :math:`N(S)` is
    empty and else the fraction of :math:`N(S)` that has the validation label,
    :math:`|\\{i \\in N(S) : y_i = y\\}| / |N(S)|`. Rows outside the radius are
    dummies, so the game is one of the ``m`` neighbours (null players do not change
    the others' values). A neighbour :math:`i` adds :math:`m_i - 1/C` to the empty
    coalition; to a coalition of ``s >= 1`` other neighbours it adds, on average over
    those coalitions, :math:`(m_i - \\bar m_{-i}) / (s + 1)`, with
    :math:`\\bar m_{-i} = (A - m_i) / (m - 1)`. Averaged over ``s`` with the Shapley
    weights (each size has weight ``1/m``),

    .. math:: \\phi_i = \\frac{m_i - 1/C}{m} + \\frac{H_m - 1}{m}
              \\Bigl(m_i - \\frac{A - m_i}{m - 1}\\Bigr),

    with :math:`H_m` the harmonic number. This is the closed form of their
    Theorem 13 (arXiv v2), whose sum over ``k`` of ratios of binomial coefficients
    reduces to :math:`H_m` (``O(n)`` per neighbour there, ``O(1)`` here).
    """
    harmonic = np.cumsum(1.0 / np.arange(1, int(size.max(initial=1)) + 1))
    h = harmonic[size.astype(np.intp) - 1]
    others = (hits - match) / np.maximum(size - 1.0, 1.0)
    values = (h - 1.0) * (match - others)
    values += match - 1.0 / n_classes
    values /= size
    return values


def _size_sums(n: int) -> tuple[np.ndarray, ...]:
    """Cumulative sums over ``s = 1..M`` of the weights of `_threshold_regression_shapley`.

    Entry ``M`` (``0 <= M <= n``) of each array sums its weight over ``s = 1..M``.
    """
    s = np.arange(1, n + 1, dtype=np.float64)
    grow = (2.0 * s + 1.0) / (s + 1.0) ** 2          # 1 - s^2 / (s + 1)^2
    weights = (grow, s / (s + 1.0) ** 2, 1.0 / (s + 1.0) ** 2, grow / s)
    return tuple(np.concatenate([[0.0], np.cumsum(w)]) for w in weights)


def _threshold_regression_shapley(
    z: np.ndarray, size: np.ndarray, total: np.ndarray, squares: np.ndarray,
    empty: np.ndarray,
) -> np.ndarray:
    """Exact Shapley values of the rows in the radius, for the regression utility.

    Parameters
    ----------
    z : ndarray of shape (n_pairs,)
        :math:`z_i = y_i - y`: the neighbour's target minus its validation target.
    size : ndarray of shape (n_pairs,)
        :math:`m`, the neighbourhood size of the pair's validation row (``>= 1``).
    total, squares : ndarray of shape (n_pairs,)
        :math:`\\sum z_j` and :math:`\\sum z_j^2` over that neighbourhood.
    empty : ndarray of shape (n_pairs,)
        :math:`u(\\emptyset)` of the pair's validation row.

    Returns
    -------
    ndarray of shape (n_pairs,)
        As in `_threshold_classification_shapley`.

    Notes
    -----
    Our extension of Wang et al. (2023) to regression, with the utility of Jia et
    al. (2019): the negative squared error of the mean target of :math:`N(S)`,
    :math:`u(S) = -(\\bar y_{N(S)} - y)^2`, and the fixed ``empty`` score when
    :math:`N(S)` is empty. As for classification, only the ``m`` neighbours play.
    A neighbour adds :math:`-z_i^2 - u(\\emptyset)` to the empty coalition. For a
    uniform coalition of ``s >= 1`` of the :math:`M = m - 1` other neighbours, with
    mean :math:`\\mu` (of ``z``), :math:`E\\mu = \\zeta`, the mean of the others,
    and :math:`E\\mu^2 = \\zeta^2 + \\sigma^2 (M - s) / (s (M - 1))` (sampling
    without replacement; :math:`\\sigma^2` is the others' population variance), so
    the marginal contribution :math:`\\mu^2 - ((s \\mu + z_i) / (s + 1))^2`
    averages to

    .. math:: (\\zeta^2 + V_s) g_s - \\frac{2 s z_i \\zeta + z_i^2}{(s + 1)^2},
              \\qquad g_s = 1 - \\frac{s^2}{(s + 1)^2}.

    Summed over ``s = 1..M`` with weight ``1/m`` each, the sums over ``s`` are
    tables of cumulative sums (`_size_sums`): ``O(1)`` per neighbour. Our own
    derivation; the tests check it against brute-force enumeration.
    """
    grow, cross, own, spread = _size_sums(int(size.max(initial=1)))
    m_other = size.astype(np.intp) - 1
    safe = np.maximum(m_other, 1).astype(np.float64)
    zeta = (total - z) / safe
    var = np.maximum((squares - z * z) / safe - zeta * zeta, 0.0)
    values = zeta * zeta * grow[m_other]
    values -= 2.0 * z * zeta * cross[m_other]
    values -= z * z * (1.0 + own[m_other])
    values -= empty
    wide = m_other > 1
    tail = m_other * spread[m_other] - grow[m_other]
    values[wide] += var[wide] * tail[wide] / (m_other[wide] - 1.0)
    values /= size
    return values


# --------------------------------------------------------------------------------------
# A block of validation rows.
# --------------------------------------------------------------------------------------


#: Bytes of one chunk of distances in `_in_radius` (a block's rows x some columns).
_CHUNK_BYTES = 2**24


def _in_radius(
    Xb: Any, self_rows: np.ndarray | None, searcher: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """(validation row in the block, training row) of every pair within the radius.

    Row-major order (by validation row, then training row). With ``self_rows``
    (leave-self-out), validation row ``t`` is training row ``self_rows[t]``, which is
    left out of its own neighbourhood. Brute-force distances come in chunks of
    training rows of about `_CHUNK_BYTES`, so memory does not grow with the training
    set beyond the pairs found.
    """
    nn = searcher.get("nn")
    if nn is None:
        X, x_sq, n = searcher["X"], searcher["x_sq"], searcher["X"].shape[0]
        chunk = max(1, _CHUNK_BYTES // (8 * max(1, Xb.shape[0])))
        found_rows, found_cols = [], []
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            d = _distances(Xb, X[lo:hi], None if x_sq is None else x_sq[lo:hi],
                           searcher["metric"], searcher["p"])
            if self_rows is not None:  # radius is finite, so inf is outside it
                mine = np.flatnonzero((self_rows >= lo) & (self_rows < hi))
                d[mine, self_rows[mine] - lo] = np.inf
            r, c = np.nonzero(d <= searcher["threshold"])
            found_rows.append(r)
            found_cols.append(c + lo)
        rows, cols = np.concatenate(found_rows), np.concatenate(found_cols)
        order = np.lexsort((cols, rows))
        return rows[order], cols[order]
    graph = nn.radius_neighbors_graph(Xb, mode="connectivity").tocsr()
    rows = np.repeat(np.arange(Xb.shape[0]), np.diff(graph.indptr))
    cols = graph.indices.astype(np.intp, copy=False)
    if self_rows is not None:
        keep = cols != self_rows[rows]
        rows, cols = rows[keep], cols[keep]
    return rows, cols


def _threshold_block_moments(
    Xb: Any, yb: np.ndarray, self_rows: np.ndarray | None, y_train: np.ndarray,
    task: str, searcher: dict[str, Any], n_classes: int,
) -> Moments:
    """Moments of every training row's Threshold KNN-Shapley values over a block.

    A training row outside the radius of a validation row is worth 0 in its game;
    one does not count in the game where it is the validation row. Regression: with
    no neighbour the model predicts the mean target of the game's training rows
    (all of ``y_train``, or all but the validation row with ``self_rows``).
    """
    n_rows, n = Xb.shape[0], y_train.shape[0]
    rows, cols = _in_radius(Xb, self_rows, searcher)
    size = np.bincount(rows, minlength=n_rows).astype(np.float64)[rows]
    if task == "classification":
        match = (y_train[cols] == yb[rows]).astype(np.float64)
        hits = np.bincount(rows, weights=match, minlength=n_rows)[rows]
        values = _threshold_classification_shapley(match, size, hits, n_classes)
    else:
        z = y_train[cols] - yb[rows]
        total = np.bincount(rows, weights=z, minlength=n_rows)[rows]
        squares = np.bincount(rows, weights=z * z, minlength=n_rows)[rows]
        if self_rows is None:
            prediction = np.full(n_rows, np.mean(y_train))
        else:
            prediction = (np.sum(y_train) - y_train[self_rows]) / (n - 1.0)
        empty = -((prediction - yb) ** 2)[rows]
        values = _threshold_regression_shapley(z, size, total, squares, empty)
    return _moments_of_values(cols, values, n, n_rows, self_rows)


# --------------------------------------------------------------------------------------
# The estimator.
# --------------------------------------------------------------------------------------


class ThresholdKNNShapley(ValuerMixin, BaseEstimator):
    """Exact Shapley values of the training rows for a threshold (radius) KNN model.

    Threshold KNN-Shapley (TKNN-Shapley) of Wang et al. (2023): the model that only
    knows a coalition :math:`S` of training rows lets every row of :math:`S` within
    distance ``radius`` of a validation row vote (a radius neighbours classifier),
    and the utility is the fraction of those votes that go to the validation label.
    **When no row of** :math:`S` **lies within the radius, the model guesses
    uniformly among the** ``C`` **classes of** ``y`` **and scores** :math:`1/C`: the
    paper's rule, so a neighbourhood needs at least one row and no other minimum
    applies. Rows outside the radius are worth 0 in that validation row's game. The
    values have a closed form in the size of the neighbourhood and its number of
    matching labels, so each validation row costs its distances and ``O(n)``
    arithmetic, with no sort. A row's value is its mean over the validation rows.

    Parameters
    ----------
    radius : float, default=1.0
        ``tau``, the radius, finite and ``>= 0``: training rows at distance ``<= radius`` of a
        validation row (as computed, see Notes) are its neighbours.
    metric : str or callable, default="minkowski"
        Distance between rows, as in :class:`~sklearn.neighbors.NearestNeighbors`.
        "minkowski" with ``p=2``, "euclidean" and "l2" compare squared Euclidean
        distances (from BLAS) with ``radius ** 2``; "sqeuclidean" compares the
        squared distance with ``radius``.
    p : float, default=2
        Power of the Minkowski metric.
    algorithm : {"auto", "brute", "ball_tree", "kd_tree"}, default="auto"
        "auto" and "brute" compute blockwise distance matrices; the tree algorithms
        query :meth:`~sklearn.neighbors.NearestNeighbors.radius_neighbors_graph`,
        which visits only the neighbourhoods (1.2x faster for 50,000 rows in 2-D and
        a small radius; slower for few rows).
    task : {"auto", "classification", "regression"}, default="auto"
        The task, by the rule of :func:`skdvl.base.resolve_task`, with the checks
        of :class:`~skdvl.KNNShapley`. Classification is the utility of the paper.
        Regression is our extension (the closed form extends): the utility is the
        negative squared error of the mean target of the neighbours in :math:`S`,
        and, with no neighbour, of the mean target of the game's training rows
        (``y``, or the other rows without ``X_val``): the prediction of a model
        that knows no neighbour.
    n_jobs : int, default=None
        Jobs over blocks of validation rows, as in :class:`~skdvl.KNNShapley`
        (threads; values do not depend on it).
    verbose : int, default=0
        Show a progress bar over blocks when ``> 0``.

    Attributes
    ----------
    values_ : ndarray or pandas.Series of shape (n_samples,)
        Mean TKNN-Shapley value of each training row over the validation rows.
    stderr_ : ndarray or pandas.Series of shape (n_samples,)
        Standard deviation of a row's value across validation rows over the square
        root of their number. Each per-row value is exact.
    counts_ : ndarray or pandas.Series of shape (n_samples,)
        Number of validation rows averaged: ``n_val``, or ``n_samples - 1`` without
        ``X_val``; fewer after an interruption.
    result_ : ValuationResult
        The values, variances and counts.
    task_ : str
        "classification" or "regression", as used.
    n_classes_ : int
        ``C``, the number of classes in ``y`` (0 for regression).
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Feature names, when ``X`` has string column names.

    Notes
    -----
    Cost: the distances of a block of validation rows, in chunks of training rows
    of about 16 MB (so memory holds the pairs within the radius, not the distance
    matrix), then ``O(n_samples)`` per block and ``O(1)`` per pair within the radius
    (no sort, unlike :class:`~skdvl.KNNShapley`); blocks are sized by
    ``working_memory`` for the worst case, every pair within the radius. Validation
    rows with an empty neighbourhood give every training row 0: choose ``radius`` so
    that most validation rows have neighbours (the paper tunes it on validation accuracy).

    The radius test uses the distances as computed: squared Euclidean distances
    from ``|x|^2 + |v|^2 - 2 x.v`` in float64 can put a row at exactly the radius
    (or a duplicate of the validation row, with ``radius=0``) a rounding error
    to either side, as in scikit-learn's radius neighbours.

    Without ``X_val``, each training row is a validation row for the game of the
    other rows (leave-self-out), as in :class:`~skdvl.KNNShapley` (``C`` still
    counts the classes of all of ``y``); interruption (Ctrl-C) keeps the finished
    blocks in the same way.

    References
    ----------
    .. [1] Wang, J. T., Zhu, Y., Wang, Y.-X., Jia, R. & Mittal, P. (2023).
       "Threshold KNN-Shapley: A linear-time and privacy-friendly approach to data
       valuation". Advances in Neural Information Processing Systems 36.
       arXiv:2308.15709.

    Examples
    --------
    >>> import numpy as np
    >>> from skdvl import ThresholdKNNShapley
    >>> X = np.array([[0.0], [1.0], [3.0], [5.0]])
    >>> v = ThresholdKNNShapley(radius=1.5).fit(X, [0, 0, 1, 1], X_val=[[0.5]], y_val=[0])
    >>> v.values_     # rows 0 and 1 are the neighbours; a uniform guess scores 1/2
    array([0.25, 0.25, 0.  , 0.  ])
    >>> v = ThresholdKNNShapley(radius=1.5).fit(X, [0, 1, 0, 1], X_val=[[0.5]], y_val=[0])
    >>> v.values_     # u({0}) = 1, u({1}) = 0, u({0, 1}) = 1/2
    array([ 0.5, -0.5,  0. ,  0. ])
    """

    _parameter_constraints: dict = {
        "radius": [Interval(Real, 0, None, closed="left")],
        "metric": [StrOptions(set(VALID_METRICS) - {"precomputed"}), callable],
        "p": [Interval(Real, 0, None, closed="neither")],
        "algorithm": [StrOptions({"auto", "brute", "ball_tree", "kd_tree"})],
        "task": [StrOptions({"auto", "classification", "regression"})],
        "n_jobs": [Interval(Integral, None, -1, closed="right"),
                   Interval(Integral, 1, None, closed="left"), None],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        radius: float = 1.0,
        *,
        metric: str | Any = "minkowski",
        p: float = 2,
        algorithm: str = "auto",
        task: str = "auto",
        n_jobs: int | None = None,
        verbose: int = 0,
    ) -> None:
        self.radius = radius
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

    @fit_context(prefer_skip_nested_validation=True)
    def fit(
        self, X: Any, y: Any, *, X_val: Any = None, y_val: Any = None
    ) -> ThresholdKNNShapley:
        """Compute the TKNN-Shapley value of every row of ``X``.

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
        self : ThresholdKNNShapley
        """
        owner = "ThresholdKNNShapley"
        index = pandas_index(X)
        X, y, X_val, y_val = validate_valuation_data(
            self, X, y, X_val, y_val, estimator=NearestNeighbors(),
            min_samples=1 if X_val is not None else 2,
        )
        self.task_ = _resolve_knn_task(self.task, y, y_val, owner)
        y, y_val = _encode_knn_targets(self.task_, y, y_val, owner)
        classification = self.task_ == "classification"
        self.n_classes_ = int(np.unique(y).shape[0]) if classification else 0
        searcher = self._make_searcher(X)
        self_rows = None
        if X_val is None:
            X_val, y_val, self_rows = X, y, np.arange(X.shape[0])
        moments = self._run_blocks(X_val, y_val, self_rows, y, searcher)
        result = ValuationResult(
            moments.values(), counts=moments.count, algorithm="threshold_knn_shapley",
            variances=np.where(moments.count > 0, moments.variance(), np.nan),
        )
        self._store_result(result, index=index)
        return self

    def _make_searcher(self, X: Any) -> dict[str, Any]:
        """What finds the training rows within ``radius`` of a block of rows."""
        if self.algorithm in ("ball_tree", "kd_tree"):
            nn = NearestNeighbors(radius=self.radius, algorithm=self.algorithm,
                                  metric=self.metric, p=self.p)
            return {"nn": nn.fit(X)}
        searcher = _distance_searcher(X, self.metric, self.p)
        squared = searcher["x_sq"] is not None and searcher["metric"] != "sqeuclidean"
        searcher["threshold"] = float(self.radius) ** 2 if squared else float(self.radius)
        return searcher

    def _run_blocks(
        self, X_val: Any, y_val: np.ndarray, self_rows: np.ndarray | None,
        y: np.ndarray, searcher: dict[str, Any],
    ) -> Moments:
        """Count, mean and M2 per training row, pooled over blocks of validation rows."""
        step = _block_rows(X_val.shape[0], y.shape[0], f"threshold_{self.task_}")
        args = (y, self.task_, searcher, self.n_classes_)
        return _pool_blocks("ThresholdKNNShapley", _threshold_block_moments, X_val, y_val,
                            self_rows, y.shape[0], step, args, self.n_jobs, self.verbose)
