"""Exact Shapley values of K-nearest-neighbour utilities (Jia et al., 2019; Wang & Jia, 2023).

For one validation row, sort the training rows by distance to it. The Shapley value
of the row at rank ``r`` (1 = nearest) in the game "score of the unweighted KNN model
trained on a coalition" depends only on ``r``, on ``K`` and on the labels of the rows
ranked at or after ``r``, so all ``n`` values follow from one sort and a few
cumulative sums: ``O(n log n)`` per validation row instead of ``2^n`` utility
evaluations. This module computes those values for whole blocks of validation rows
at once, in memory bounded by scikit-learn's ``working_memory``, and holds what the
threshold variant (:mod:`skdvl.valuation._knn_threshold`) shares: target checks, the
distance searcher and the pooling of blocks. The hard-label, optionally weighted game
(Wang, Mittal & Jia, 2024) is valued block by block by
:mod:`skdvl.valuation._knn_weighted_blocks`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from numbers import Integral, Real
from typing import Any

import numpy as np
from joblib import Parallel, delayed, effective_n_jobs
from scipy import sparse
from sklearn.base import BaseEstimator, clone
from sklearn.neighbors import NearestNeighbors
from sklearn.utils import check_scalar, gen_batches
from sklearn.utils.extmath import row_norms
from threadpoolctl import ThreadpoolController
from tqdm.auto import tqdm

from skdvl._moments import Moments
from skdvl._sklearn_compat import (
    VALID_METRICS,
    HasMethods,
    Interval,
    StrOptions,
    fit_context,
)
from skdvl.base import (
    ValuerMixin,
    check_targets,
    pandas_index,
    resolve_task,
    validate_valuation_data,
)
from skdvl.result import ValuationResult
from skdvl.valuation._knn_math import (  # noqa: F401 - tests/test_knn.py imports it here
    _EUCLIDEAN,
    _block_moments,
    _block_rows,
    _stable_argsort,
)
from skdvl.valuation._knn_weighted_blocks import (
    check_utility,
    check_weighted_memory,
    format_duration,
    weighted_block_moments,
    weighted_block_rows,
    weighted_grid,
    weighted_seconds,
)

__all__ = ["KNNShapley"]


def _first(y: Any) -> Any:
    """The first entry of ``y`` as a plain Python value, for messages."""
    v = np.asarray(y).reshape(-1)[0]
    return v.item() if isinstance(v, np.generic) else v


# --------------------------------------------------------------------------------------
# Shared by the KNN valuers (KNNShapley, ThresholdKNNShapley): targets, search, blocks.
# --------------------------------------------------------------------------------------


def _resolve_knn_task(task: str, y: np.ndarray, y_val: Any, owner: str) -> str:
    """The task by the rule of :func:`skdvl.base.resolve_task`; refuse unusable targets."""
    if task == "regression":  # before resolve_task: these messages name y or y_val
        for name, target in (("y", y), ("y_val", y_val)):
            if target is not None and not np.issubdtype(np.asarray(target).dtype, np.number):
                raise ValueError(
                    f"task='regression' needs numeric targets; got {name} with dtype "
                    f"{np.asarray(target).dtype} (e.g. {np.asarray(target)[0]!r}). "
                    "Use task='classification' for labels."
                )
    resolved = resolve_task(y, task, owner)
    if resolved == "classification" and np.unique(y).shape[0] < 2:
        if y_val is None:
            raise ValueError(
                f"{owner} needs at least 2 classes in y to value rows against "
                f"each other (no X_val); got only {_first(y)!r} ({y.shape[0]} rows): "
                "every row would get the same value. Pass X_val and y_val.")
        # One class against labelled validation rows is an exact, informative
        # game; check_targets would refuse it, so only the label overlap is checked.
        return resolved
    check_targets(y, y_val, resolved, owner)
    return resolved


def _encode_knn_targets(
    task: str, y: np.ndarray, y_val: Any, owner: str
) -> tuple[np.ndarray, Any]:
    """Targets as float64 (regression) or as integer codes shared with ``y_val``."""
    if task == "regression":
        y_val = None if y_val is None else np.asarray(y_val, dtype=np.float64)
        return np.asarray(y, dtype=np.float64), y_val
    if y_val is None:
        return np.unique(y, return_inverse=True)[1], None
    _, codes = np.unique(np.concatenate([y, y_val]), return_inverse=True)
    codes, codes_val = codes[: y.shape[0]], codes[y.shape[0]:]
    if not np.isin(codes_val, codes).any():
        raise ValueError(
            f"{owner}: no label of y_val occurs in y (y: {y.dtype}, e.g. "
            f"{_first(y)!r}; y_val: {np.asarray(y_val).dtype}, e.g. {_first(y_val)!r}); "
            "no training row can give a validation row its label. Check that y_val "
            "holds the labels of X_val.")
    return codes, codes_val


def _distance_searcher(X: Any, metric: Any, p: float) -> dict[str, Any]:
    """What `_knn_math._distances` needs to compute blockwise distances to ``X``.

    "minkowski" with ``p`` 1 or 2 becomes "manhattan" or "euclidean"; the Euclidean
    family gets the squared row norms of ``X`` (squared distances from BLAS).
    """
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


#: Made at the first fit: inspecting the loaded libraries reads the process's memory
#: map, which took 2.6 ms per fit (as long as valuing 300 validation rows).
_CONTROLLER: list[ThreadpoolController] = []


def _blas_on_one_thread() -> Any:
    """A context in which BLAS runs on one thread (libraries loaded by the first fit)."""
    if not _CONTROLLER:
        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0].limit(limits=1, user_api="blas")


def _pool_blocks(
    owner: str, block: Any, X_val: Any, y_val: np.ndarray, self_rows: np.ndarray | None,
    n_train: int, step: int, args: tuple, n_jobs: int | None, verbose: int,
) -> Moments:
    """Count, mean and M2 per training row, pooled over blocks of ``step`` validation rows.

    ``block(X_val[b], y_val[b], self_rows[b], *args)`` returns the Moments of one
    block. Blocks run on ``n_jobs`` threads and are merged in order; a
    ``KeyboardInterrupt`` keeps the blocks that finished (see KNNShapley's Notes).
    """
    n_val = X_val.shape[0]
    if sparse.issparse(X_val):
        X_val = X_val.tocsr()
    blocks = list(gen_batches(n_val, step))
    task = delayed(block)
    jobs = (
        task(X_val[b], y_val[b], None if self_rows is None else self_rows[b], *args)
        for b in blocks
    )
    # Threads share X and release the GIL in the heavy numpy calls; parallelism
    # comes from the blocks, so BLAS runs single-threaded (its spinning threads
    # slowed the skinny distance products down). joblib.parallel_config overrides.
    # One job: a plain loop, so that an interrupt loses no finished block (joblib
    # computes blocks ahead of the ones it has handed over).
    parallel = (
        (lambda tasks: (f(*a, **kw) for f, a, kw in tasks))
        if effective_n_jobs(n_jobs) == 1
        else Parallel(n_jobs=n_jobs, prefer="threads", return_as="generator")
    )
    # Merged into a new object and assigned at once with the counts of rows and
    # blocks: an interrupt never separates the pooled moments from them.
    done: tuple[Moments, int, int] = (Moments.zeros(n_train), 0, 0)
    try:
        with _blas_on_one_thread():
            for part in tqdm(parallel(jobs), total=len(blocks),
                             disable=verbose <= 0, desc=f"{owner} blocks"):
                b = blocks[done[2]]
                pooled = Moments(done[0].count, done[0].mean, done[0].m2)
                pooled.merge(part)
                done = (pooled, done[1] + b.stop - b.start, done[2] + 1)
    except KeyboardInterrupt:
        if done[2] == 0:
            raise
        warnings.warn(
            f"Interrupted: {owner} returns values averaged over the {done[1]} of "
            f"{n_val} validation rows processed ({done[2]} of {len(blocks)} blocks); "
            "counts_ says how many each value holds.", RuntimeWarning, stacklevel=5)
    return done[0]

# --------------------------------------------------------------------------------------
# The estimator.
# --------------------------------------------------------------------------------------


class KNNShapley(ValuerMixin, BaseEstimator):
    """Exact Shapley values of the training rows for a K-nearest-neighbour model.

    The utility of a coalition :math:`S` of training rows is the score, on one
    validation row, of the KNN model that only knows :math:`S` (see
    ``knn_utility``): by default, classification credits :math:`1/K` for each of the (at
    most) ``K`` nearest rows of :math:`S` that carry the validation label, and
    regression is the negative squared error of the KNN prediction. Jia et al. (2019)
    show that the Shapley values of every training row in this game follow from one
    sort of the training rows by distance, in ``O(n log n)`` instead of ``2^n``
    evaluations; Wang & Jia (2023) do the same for the soft-label utility, and Wang,
    Mittal & Jia (2024) for the hard-label vote of a distance-weighted KNN
    (``weights="distance"``, ``knn_utility="hard_label"``) in polynomial time. A
    row's value is its mean over the validation rows. For the radius (threshold) variant
    see :class:`~skdvl.ThresholdKNNShapley`.

    Parameters
    ----------
    n_neighbors : int or estimator, default=5
        ``K``, the number of neighbours, ``>= 1``; ``K >= n_samples`` is valid (the
        utility then counts the whole coalition). An object with a ``kneighbors``
        method (e.g. :class:`~sklearn.neighbors.NearestNeighbors`, fitted or not) is
        cloned, fitted on ``X`` and used for the neighbour search, with its own
        ``n_neighbors`` as ``K``; ``metric``, ``p`` and ``algorithm`` are then ignored.
    weights : {"uniform", "distance"} or callable, default="uniform"
        Neighbour weights, as in :class:`~sklearn.neighbors.KNeighborsClassifier`.
        "distance" weighs a neighbour at distance :math:`d` by :math:`1/d`, except
        that when training rows lie at distance 0 from the validation row, those get
        weight 1 and all others 0. A callable takes an array of distances (one row
        per validation row, one column per training row) and returns an array of the
        same shape of finite weights ``>= 0``. Weights other than "uniform" value the
        weighted vote and need ``knn_utility="hard_label"``, classification only
        (Wang, Mittal & Jia, 2024; see Notes).
    n_bins : int, default=9
        ``W >= 2``, the number of levels of the discretised weights of
        ``knn_utility="hard_label"``: the weights of a validation row's game are
        divided by their largest and rounded to the grid :math:`\\{0, 1/(W-1),
        \\dots, 1\\}` (9 levels are the paper's 3 bits, and shapiq's default). The
        values are exact for the rounded weights; see Notes for the error bound.
        The cost grows linearly with ``W``. Ignored for ``weights="uniform"``.
    tied_vote : {"incorrect", "correct"}, default="incorrect"
        How ``knn_utility="hard_label"`` scores a vote in which the validation label
        holds exactly half of the weight of the ``K`` nearest rows: as wrong
        (:math:`u(S) = 1[V_+ > V_-]`) or as right (:math:`1[V_+ \\ge V_-]`, the rule of
        shapiq). scikit-learn's classifier gives a tie to the class that sorts first,
        a rule that depends on the label.
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
    knn_utility : {"fixed_k", "soft_label", "hard_label"}, default="fixed_k"
        The score of a coalition :math:`S` on a validation row with label :math:`y`,
        with :math:`\\alpha_k(S)` the ``k``-th nearest row of :math:`S`:

        - "fixed_k", the utility of Jia et al. (2019): the share of the ``K``
          votes that go to :math:`y`, always divided by ``K``,
          :math:`\\frac{1}{K} \\sum_{k=1}^{\\min(K,|S|)} 1[y_{\\alpha_k(S)} = y]`;
          a coalition of fewer than ``K`` rows counts its missing votes as wrong,
          and :math:`u(\\emptyset) = 0`. Regression: the negative squared error of
          the prediction :math:`\\frac{1}{K} \\sum_{k \\le \\min(K,|S|)}
          y_{\\alpha_k(S)}`.
        - "soft_label", the utility of Wang & Jia (2023): the probability of
          :math:`y` that the KNN classifier trained on :math:`S` predicts, the same
          sum divided by :math:`\\min(K, |S|)` (every row of a small coalition
          votes), and :math:`u(\\emptyset) = 1/C` (a uniform guess among the
          ``C`` classes of ``y``). Classification only; the cost is that of
          "fixed_k".
        - "hard_label", the utility of Wang, Mittal & Jia (2024): whether the
          (weighted) vote of the ``min(K, |S|)`` nearest rows of :math:`S` is right,
          :math:`u(S) = 1[V_+ > V_-]` with :math:`V_+` the weight of the rows
          labelled :math:`y` and :math:`V_-` that of the others (see ``tied_vote``),
          and :math:`u(\\emptyset) = 0`. With ``weights="uniform"`` it is the
          majority vote of the unweighted KNN classifier, a different game from
          "fixed_k", whose marginals are shares of votes. Classification only;
          costs :math:`O(n K^2 W)` per validation row (see Notes).
    task : {"auto", "classification", "regression"}, default="auto"
        The task. "auto" follows the rule of :func:`skdvl.base.resolve_task`:
        a target whose values are not all integers (``type_of_target`` says
        "continuous") is a regression target; strings, booleans and integers are
        class labels, with a warning naming ``task`` when an integer target has more
        than 20 distinct values (pass ``task="regression"`` for a quantity such as a
        0-100 score, or ``task="classification"`` to confirm). Classification
        refuses (``ValueError`` naming the argument) a continuous ``y``, a ``y`` with
        a single class, ``y`` and ``y_val`` of different kinds (numbers vs strings),
        and labels of mixed types; regression refuses non-numeric targets.
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
        ``X_val``; fewer after an interruption (see Notes).
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

    Interruption: a ``KeyboardInterrupt`` (Ctrl-C) during ``fit`` keeps the blocks
    of validation rows that finished, in order, and returns their mean with a
    ``RuntimeWarning`` starting "Interrupted:" that gives the number of validation
    rows processed; ``counts_`` holds that number per row, and a row that no
    finished block reached is NaN with count 0 (and infinite ``stderr_``). With
    ``n_jobs > 1`` blocks are kept in order: one that finished after the first
    unfinished block is dropped, so the result is always that of the first
    validation rows. If no block finished, the ``KeyboardInterrupt`` propagates.

    Hard-label (weighted) KNN-Shapley: the values are those of the dynamic programme
    of `skdvl.valuation._knn_weighted.weighted_knn_shapley_levels`, exact for the
    discretised weights of each validation row (our vectorised recursion for the game
    of Wang, Mittal & Jia (2024), checked against brute-force enumeration). Each
    validation row fixes the weights of all training rows from their distances to
    it (the callable sees all of them, not only the ``K`` nearest), so with zero
    distances a coalition without the rows at distance 0 votes with weights 0: a
    tie, scored by ``tied_vote`` (shapiq does the same). With more than two classes
    the vote is right when the validation label holds more than half of the weight
    (at least half for ``tied_vote="correct"``), not when it is the plurality
    label; shapiq instead averages the binary games of the validation label against
    each other class. On binary labels, ``weights="distance", n_bins=2**b + 1,
    tied_vote="correct"`` is the game of shapiq's ``WeightedKNNExplainer(n_bits=b)``.
    Discretisation: rounding moves a normalised weight by at most
    :math:`1/(2(W-1))`, the vote margin of the ``K`` nearest by at most
    :math:`K/(2(W-1))` (in units of the largest weight), so the rounded game scores
    every coalition whose normalised margin is farther than that from zero as the
    exact one does, and the values are equal when all coalitions are (``K = 5,
    W = 9``: 0.31; ``W = 65``: 0.04). Distances the BLAS expansion computes with
    cancellation (below 1e-8 of the squared norms) are recomputed from the
    differences, so duplicates are at distance 0. Regression with weights
    is not implemented (the algorithm is for the classifier's vote). Cost:
    :math:`O(n K X)` per validation row, :math:`X = 2 (K + 1)(W - 1) + 3` vote
    sums (:math:`O(n K^2 W)`, a factor ``n`` below the paper's :math:`O(W K^2
    n^2)`), in blocks of up to 32 validation rows; about 2.5 ms per validation row
    for 300 training rows and 36 ms for 3,000 (``K = 5, W = 9``, one job on a
    lightly loaded 2-core machine). A ``UserWarning`` gives the estimated time
    before a fit estimated to take more than an hour, and a ``ValueError`` names
    the largest ``n_bins`` that fits when one validation row's game would need
    more than ``working_memory``. ``n_jobs=2`` threads gained at most 15% here
    (the steps hold the GIL part of the time); ``joblib.parallel_config(
    backend="loky")`` runs the blocks in processes, with identical values.

    Ties: training rows at equal distance (as computed: squared distances for the
    Euclidean family, in float64) are ranked by their position in ``X``, so values
    are deterministic; the paper leaves the order of ties open.

    Without ``X_val``, each training row is a validation row for the game of the
    other ``n_samples - 1`` rows (leave-self-out), so that a row never votes for
    itself; a row's value is the mean over the ``n_samples - 1`` games it plays in.

    Departures from the papers: Theorem 1 starts its recursion with
    ``1[y_n = y] / n``, which is exact only for ``n >= K``; the closed form used here
    is exact for every ``K`` (see `_knn_classification_shapley`). The regression
    utility divides by ``K`` also when the coalition has fewer than ``K`` rows, as in
    the paper, so its values depend on where ``y = 0`` lies. Wang & Jia (2023)
    give the soft-label values as a recursion (their Theorem 2); the closed form
    used here (see `_knn_soft_label_shapley`) is checked against brute force.

    References
    ----------
    .. [1] Jia, R., Dao, D., Wang, B., Hubis, F. A., Gurel, N. M., Li, B., Zhang, C.,
       Spanos, C. J. & Song, D. (2019). "Efficient task-specific data valuation for
       nearest neighbor algorithms". Proceedings of the VLDB Endowment 12(11),
       1610-1623.
    .. [2] Wang, J. T. & Jia, R. (2023). "A note on 'Efficient task-specific data
       valuation for nearest neighbor algorithms'". arXiv:2304.04258.
    .. [3] Wang, J. T., Mittal, P. & Jia, R. (2024). "Efficient data Shapley for
       weighted nearest neighbor algorithms". AISTATS 2024, arXiv:2401.11103.

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
    >>> v = KNNShapley(n_neighbors=3, knn_utility="soft_label")
    >>> v.fit(X, [0, 1, 0, 1], X_val=[[0.4]], y_val=[0]).values_.round(4)
    array([ 0.3472, -0.2639,  0.3472, -0.2639])
    >>> float(v.values_.sum())   # u(all rows) = 2/3 (rows 0, 1, 2 vote), u(none) = 1/2
    0.1667
    >>> v = KNNShapley(n_neighbors=3, weights="distance", knn_utility="hard_label")
    >>> v.fit(X, [0, 1, 0, 1], X_val=[[0.4]], y_val=[0]).values_.round(4)
    array([ 0.8333, -0.1667,  0.3333,  0.    ])
    """

    _parameter_constraints: dict = {
        "n_neighbors": [Interval(Integral, 1, None, closed="left"), HasMethods(["kneighbors"])],
        "weights": [StrOptions({"uniform", "distance"}), callable],
        "n_bins": [Interval(Integral, 2, None, closed="left")],
        "tied_vote": [StrOptions({"incorrect", "correct"})],
        "metric": [StrOptions(set(VALID_METRICS) - {"precomputed"}), callable],
        "p": [Interval(Real, 0, None, closed="neither")],
        "algorithm": [StrOptions({"auto", "brute", "ball_tree", "kd_tree"})],
        "knn_utility": [StrOptions({"fixed_k", "soft_label", "hard_label"})],
        "task": [StrOptions({"auto", "classification", "regression"})],
        "n_jobs": [Interval(Integral, None, -1, closed="right"),
                   Interval(Integral, 1, None, closed="left"), None],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        n_neighbors: int | Any = 5,
        *,
        weights: str | Callable[[np.ndarray], Any] = "uniform",
        n_bins: int = 9,
        tied_vote: str = "incorrect",
        metric: str | Any = "minkowski",
        p: float = 2,
        algorithm: str = "auto",
        knn_utility: str = "fixed_k",
        task: str = "auto",
        n_jobs: int | None = None,
        verbose: int = 0,
    ) -> None:
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.n_bins = n_bins
        self.tied_vote = tied_vote
        self.metric = metric
        self.p = p
        self.algorithm = algorithm
        self.knn_utility = knn_utility
        self.task = task
        self.n_jobs = n_jobs
        self.verbose = verbose

    def __sklearn_tags__(self):  # type: ignore[no-untyped-def]
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    @fit_context(prefer_skip_nested_validation=True)
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
        self.task_ = _resolve_knn_task(self.task, y, y_val, "KNNShapley")
        check_utility(self.weights, self.knn_utility, self.task, self.task_)
        y, y_val = _encode_knn_targets(self.task_, y, y_val, "KNNShapley")
        searcher = self._make_searcher(X)
        self_rows = None
        if X_val is None:
            X_val, y_val, self_rows = X, y, np.arange(X.shape[0])
        moments = self._run_blocks(X_val, y_val, self_rows, y, searcher)
        result = ValuationResult(
            moments.values(), counts=moments.count,
            algorithm={"soft_label": "soft_label_knn_shapley",
                       "hard_label": "weighted_knn_shapley"}.get(self.knn_utility,
                                                                 "knn_shapley"),
            variances=np.where(moments.count > 0, moments.variance(), np.nan),
        )
        self._store_result(result, index=index)
        return self

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
            try:
                if isinstance(inner, bool):  # check_scalar takes True for 1
                    raise TypeError
                k = check_scalar(inner, "n_neighbors", Integral, min_val=1)
            except (TypeError, ValueError):
                raise ValueError(
                    "The 'n_neighbors' estimator of KNNShapley must have an integer "
                    f"n_neighbors >= 1. Got {type(nn).__name__} with n_neighbors={inner!r}."
                ) from None
        self.n_neighbors_ = int(k)
        self.nn_ = None if nn is None else nn.fit(X)
        if nn is not None:
            return {"nn": self.nn_, "n_train": X.shape[0]}
        return _distance_searcher(X, self.metric, self.p)

    def _run_blocks(
        self, X_val: Any, y_val: np.ndarray, self_rows: np.ndarray | None,
        y: np.ndarray, searcher: dict[str, Any],
    ) -> Moments:
        """Count, mean and M2 per training row, pooled over blocks of validation rows."""
        n_classes = int(np.unique(y).shape[0]) if self.task_ == "classification" else 0
        key = "soft_label" if self.knn_utility == "soft_label" else self.task_
        if self.knn_utility == "hard_label":
            return self._run_weighted_blocks(X_val, y_val, self_rows, y, searcher)
        step = _block_rows(X_val.shape[0], y.shape[0], key)
        args = (y, self.n_neighbors_, self.task_, searcher, self.knn_utility, n_classes)
        # _block_moments is looked up here, at call time (tests replace it).
        return _pool_blocks("KNNShapley", _block_moments, X_val, y_val, self_rows,
                            y.shape[0], step, args, self.n_jobs, self.verbose)

    def _run_weighted_blocks(
        self, X_val: Any, y_val: np.ndarray, self_rows: np.ndarray | None,
        y: np.ndarray, searcher: dict[str, Any],
    ) -> Moments:
        """The hard-label (weighted) game: the DP of Wang, Mittal & Jia (2024), with an ETA."""
        uniform = isinstance(self.weights, str) and self.weights == "uniform"
        top = 1 if uniform else self.n_bins - 1
        n_val, n = X_val.shape[0], y.shape[0] - (self_rows is not None)
        check_weighted_memory(n, self.n_neighbors_, self.n_bins, top)
        step = weighted_block_rows(n_val, n, self.n_neighbors_, top)
        eta = weighted_seconds(n_val, n, self.n_neighbors_, top)
        if eta > 3600:
            k, width = weighted_grid(n, self.n_neighbors_, top)
            warnings.warn(
                f"KNNShapley(knn_utility='hard_label') will take about "
                f"{format_duration(eta)} on one job: {n_val} validation rows x {n} "
                f"training rows, each O(n K X) with K={k} and X={width} vote sums (see "
                "the Notes of KNNShapley). Lower n_bins or n_neighbors, or value fewer "
                "validation rows.", UserWarning, stacklevel=5)
        args = (y, self.n_neighbors_, searcher, self.weights, self.n_bins, self.tied_vote)
        return _pool_blocks("KNNShapley", weighted_block_moments, X_val, y_val, self_rows,
                            y.shape[0], step, args, self.n_jobs, self.verbose)
