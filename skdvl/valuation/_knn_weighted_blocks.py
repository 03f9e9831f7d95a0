"""Blocks of validation rows for the weighted and hard-label KNN-Shapley of `KNNShapley`.

The estimator (:mod:`skdvl.valuation._knn`) hands each block of validation rows to
`weighted_block_moments`, which ranks the training rows by distance, turns the distances
into integer weight levels (`distance_levels`: scikit-learn's ``weights="distance"``,
``"uniform"`` or a callable kernel) and values them with the dynamic programme of
:func:`skdvl.valuation._knn_weighted.weighted_knn_shapley_levels` (Wang, Mittal & Jia,
2024, arXiv:2401.11103). `weighted_seconds` is the cost model behind the ETA warning.
Pure functions over arrays; the parameters are validated by the estimator.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import sparse
from sklearn import get_config

from skdvl._moments import Moments
from skdvl.valuation._knn_math import _block_distances, _moments_of_values, _rank_rows
from skdvl.valuation._knn_weighted import (
    _block_plan,
    discretize_weights,
    weighted_knn_shapley_levels,
)

__all__ = [
    "check_utility", "check_weighted_memory", "distance_levels", "format_duration",
    "ranked_distances", "weighted_block_moments", "weighted_block_rows", "weighted_bytes",
    "weighted_grid", "weighted_seconds",
]

#: The cost model of `weighted_seconds`, fitted to fits of 300 to 10,000 training rows
#: on a 2-core machine: seconds per entry of the ``K x X`` grid of one training row of
#: one validation row, and per vectorised step of a block (its Python overhead).
_SECONDS_PER_ENTRY = 1.5e-8
_SECONDS_PER_STEP = 4e-5
#: Relative size below which a squared Euclidean distance from the BLAS expansion
#: ``|x|^2 - 2 x.y + |y|^2`` is recomputed from the difference ``x - y``: below it,
#: cancellation leaves a relative error above about 1e-8 (and duplicates get > 0).
_CANCELLATION = 1e-8
#: float64 arrays of shape (rows, n_train) alive at once in a block (distances, order,
#: sorted distances, match, levels, values).
_ARRAYS_PER_ROW = 6
#: Pairs of rows whose difference is computed at once by `_exact_small_distances`.
_PAIRS_PER_CHUNK = 4096


# --------------------------------------------------------------------------------------
# Distances of the weights.
# --------------------------------------------------------------------------------------


def _pair_sq_distances(Xb: Any, X: Any, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances ``|Xb[rows[p]] - X[cols[p]]|^2`` from the differences."""
    out = np.empty(rows.shape[0])
    for lo in range(0, rows.shape[0], _PAIRS_PER_CHUNK):
        r, c = rows[lo:lo + _PAIRS_PER_CHUNK], cols[lo:lo + _PAIRS_PER_CHUNK]
        diff = Xb[r] - X[c]
        if sparse.issparse(diff):
            out[lo:lo + r.shape[0]] = np.asarray(diff.multiply(diff).sum(axis=1)).ravel()
        else:
            out[lo:lo + r.shape[0]] = np.einsum("pf,pf->p", diff, diff)
    return out


def _exact_small_distances(d_sq: np.ndarray, Xb: Any, searcher: dict[str, Any]) -> None:
    """Recompute, in place, the squared distances that the BLAS expansion got inexact.

    ``d_sq`` comes from `_knn_math._distances`; where it is below `_CANCELLATION` times
    ``|x|^2 + |y|^2`` it is recomputed from ``x - y``, so that duplicate rows are at
    distance exactly 0 (the rule of ``weights="distance"`` for zero distances needs it)
    and near-duplicates get accurate weights.
    """
    xb_sq = np.asarray(Xb.multiply(Xb).sum(axis=1)).ravel() if sparse.issparse(Xb) \
        else np.einsum("ij,ij->i", Xb, Xb)
    scale = xb_sq[:, None] + searcher["x_sq"][None, :]
    rows, cols = np.nonzero(d_sq <= _CANCELLATION * scale)
    if rows.size:
        X = searcher["X"]
        if sparse.issparse(Xb):
            Xb = Xb.tocsr()
        d_sq[rows, cols] = _pair_sq_distances(Xb, X, rows, cols)


def ranked_distances(
    Xb: Any, self_rows: np.ndarray | None, searcher: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """Training rows from nearest to farthest and their distances, per validation row.

    Ties in distance are broken by training index. Distances are the metric's own
    (the square root of the BLAS squared distances for "euclidean" and "l2"). With
    ``self_rows`` (leave-self-out) the validation row's own training row is ranked last,
    at distance ``inf``; the caller drops it from the game.
    """
    d, ind = _block_distances(Xb, self_rows, searcher)
    if ind is None and searcher["x_sq"] is not None:
        _exact_small_distances(d, Xb, searcher)  # the inf of self rows stays inf
    order = _rank_rows(d, ind)
    if ind is not None:  # d is in the searcher's order; its sorted values are the ranks'
        return order, np.sort(d, axis=1)
    d_sorted = np.take_along_axis(d, order, axis=1)
    if searcher["x_sq"] is not None and searcher["metric"] != "sqeuclidean":
        np.sqrt(d_sorted, out=d_sorted)
    return order, d_sorted


def distance_levels(
    d_sorted: np.ndarray, weights: str | Callable[[np.ndarray], Any], n_bins: int
) -> np.ndarray:
    """Integer weight levels ``0 .. n_bins - 1`` of training rows, in rank order.

    Parameters
    ----------
    d_sorted : ndarray of shape (n_rows, n)
        Distances from each validation row to the training rows, nondecreasing.
    weights : {"uniform", "distance"} or callable
        scikit-learn's meaning (:class:`~sklearn.neighbors.KNeighborsClassifier`):
        "uniform" gives every row level 1 (the majority vote; ``n_bins`` is then
        irrelevant, as scaling the weights changes no vote); "distance" is
        :math:`w = 1/d`, except that when some training rows are at distance 0 from the
        validation row, those get weight 1 and all others 0; a callable maps the
        distances to finite weights ``>= 0`` of the same shape.
    n_bins : int
        Number of levels ``W >= 2``: the weights of each validation row are divided by
        their largest and rounded to the grid ``{0, 1/(W-1), .., 1}`` (see
        :func:`~skdvl.valuation._knn_weighted.discretize_weights`).

    Returns
    -------
    ndarray of int64, same shape as ``d_sorted``

    Examples
    --------
    >>> distance_levels(np.array([[1.0, 2.0, 4.0], [0.0, 0.0, 3.0]]), "distance", 9)
    array([[8, 4, 2],
           [8, 8, 0]])
    """
    if weights == "uniform":
        return np.ones(d_sorted.shape, dtype=np.int64)
    if callable(weights):
        return discretize_weights(d_sorted, weights=weights, n_bins=n_bins)
    if d_sorted.size == 0:
        return np.zeros(d_sorted.shape, dtype=np.int64)
    nearest = d_sorted[:, :1]
    w = np.divide(nearest, d_sorted, out=np.zeros_like(d_sorted), where=d_sorted > 0)
    zero = d_sorted == 0                     # sklearn: the rows at distance 0 get 1, others 0
    at_zero = nearest[:, 0] == 0
    w[at_zero] = zero[at_zero]
    return np.rint(w * (n_bins - 1)).astype(np.int64)


# --------------------------------------------------------------------------------------
# One block of validation rows.
# --------------------------------------------------------------------------------------


def weighted_block_moments(
    Xb: Any, yb: np.ndarray, self_rows: np.ndarray | None, y_train: np.ndarray, k: int,
    searcher: dict[str, Any], weights: str | Callable[[np.ndarray], Any], n_bins: int,
    ties: str,
) -> Moments:
    """Count, mean and M2 of every training row's hard-label weighted KNN-Shapley values.

    The game of each validation row is the one of
    :func:`~skdvl.valuation._knn_weighted.weighted_knn_shapley_levels` (``ties`` is its
    tie rule) with the levels of `distance_levels`. Without ``X_val`` (``self_rows``)
    a validation row's own training row leaves its game: it is dropped from the ranks
    (it would not be a dummy player: even at weight 0 it takes one of the ``K`` places).
    """
    order, d_sorted = ranked_distances(Xb, self_rows, searcher)
    n = order.shape[1]
    match = y_train[order] == yb[:, None]
    values = np.zeros(order.shape)
    m = n - 1 if self_rows is not None else n
    if np.isnan(d_sorted[:, :m]).any():
        raise ValueError(
            f"The metric {searcher.get('metric')!r} returned NaN distances; the weights "
            "of KNNShapley need finite distances >= 0.")
    levels = distance_levels(d_sorted[:, :m], weights, n_bins)
    values[:, :m] = weighted_knn_shapley_levels(levels, match[:, :m], k, ties=ties)
    return _moments_of_values(order.ravel(), values.ravel(), n, order.shape[0], self_rows)


def check_utility(weights: Any, knn_utility: str, task: str, resolved: str) -> None:
    """Refuse the combinations of utility, weights and task of `KNNShapley` with no algorithm.

    ``task`` is the parameter, ``resolved`` the task it resolved to.
    """
    weighted = not (isinstance(weights, str) and weights == "uniform")
    shown = weights if isinstance(weights, str) else "<callable>"
    if weighted and resolved == "regression":
        raise ValueError(
            f"weights={shown!r} of KNNShapley is not implemented for regression "
            f"(task={task!r} resolved to 'regression'): the exact weighted algorithm "
            "(Wang, Mittal & Jia, 2024) values the hard-label weighted vote of a "
            "classifier. Use weights='uniform' for regression.")
    if knn_utility in ("soft_label", "hard_label") and resolved == "regression":
        raise ValueError(
            f"knn_utility={knn_utility!r} of KNNShapley is a classification utility; got "
            f"a regression task (task={task!r}). Use knn_utility='fixed_k' for regression.")
    if weighted and knn_utility != "hard_label":
        raise ValueError(
            f"knn_utility={knn_utility!r} of KNNShapley with weights={shown!r} is not "
            "implemented: the weighted game with an exact algorithm is the correctness of "
            "the weighted vote (Wang, Mittal & Jia, 2024). Pass knn_utility='hard_label', "
            "or weights='uniform'.")


def weighted_grid(n: int, k: int, top_level: int) -> tuple[int, int]:
    """``(K, X)``: the effective ``K`` and the grid width of the dynamic programme."""
    k = min(k, n)
    pad = max(1, top_level)
    return k, 2 * (k * pad + 1 + pad) + 1


def weighted_block_rows(n_val: int, n: int, k: int, top_level: int) -> int:
    """Validation rows per block: one block of the dynamic programme, within memory.

    The programme's steps are vectorised over the rows of a block (up to 16), so blocks
    are not split further for ``n_jobs``; the distance arrays of a block (about
    `_ARRAYS_PER_ROW` of ``n`` floats per row) stay within ``working_memory``.
    """
    k, width = weighted_grid(max(n, 1), k, top_level)
    budget = get_config()["working_memory"] * 2**20 // (8 * max(n, 1) * _ARRAYS_PER_ROW)
    return max(1, min(budget, _block_plan(max(n, 1), k, width)[0], n_val))


def weighted_bytes(n: int, k: int, top_level: int) -> int:
    """Bytes the dynamic programme needs for one validation row, at the least.

    The prefix distributions it keeps (every ``sqrt(n)``-th and one segment, see
    `_block_plan`) and the suffix arrays, ``K X`` floats each.
    """
    k, width = weighted_grid(max(n, 1), k, top_level)
    stride = math.isqrt(max(n, 1)) + 1
    return 8 * k * width * (-(-n // stride) + stride + 4)


def check_weighted_memory(n: int, k: int, n_bins: int, top_level: int) -> None:
    """Refuse a game whose one validation row needs more than ``working_memory``."""
    budget = get_config()["working_memory"] * 2**20
    need = weighted_bytes(n, k, top_level)
    if need <= budget:
        return
    lo, hi = 1, top_level                            # the largest top level that fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if weighted_bytes(n, k, mid) <= budget else (lo, mid - 1)
    fits = (f"n_bins <= {lo + 1}" if weighted_bytes(n, k, lo) <= budget
            else "fewer training rows or a smaller n_neighbors")
    raise ValueError(
        f"KNNShapley(knn_utility='hard_label') with n_bins={n_bins}, n_neighbors={k} and "
        f"{n} training rows needs {need / 2**20:.0f} MiB per validation row, more than "
        f"working_memory={budget / 2**20:.0f} MiB (sklearn.set_config); use {fits}.")


def weighted_seconds(n_val: int, n: int, k: int, top_level: int) -> float:
    """Estimated seconds of the dynamic programme for ``n_val`` games of ``n`` rows.

    One game costs :math:`O(n K X)`, :math:`X = 2 (K + 1)(W - 1) + 3` the grid of vote
    sums (``W - 1 = top_level``, ``K = min(K, n)``; see `weighted_grid`), and a block of
    games takes ``2 n`` vectorised steps: `_SECONDS_PER_ENTRY` per grid entry plus
    `_SECONDS_PER_STEP` per step, times 1.5 when the prefix distributions are recomputed
    (`_block_plan`). Within a factor 1.5 of the times measured for 300 to 10,000
    training rows, K from 3 to 10 and W from 2 to 33.
    """
    if n == 0 or n_val == 0:
        return 0.0
    k, width = weighted_grid(n, k, top_level)
    again = 1.5 if _block_plan(n, k, width)[1] < n else 1.0
    blocks = -(-n_val // weighted_block_rows(n_val, n, k, top_level))
    return again * (_SECONDS_PER_STEP * blocks * 2 * n
                    + _SECONDS_PER_ENTRY * n_val * n * k * width)


def format_duration(seconds: float) -> str:
    """``seconds`` as hours or minutes, for the ETA warning."""
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{math.ceil(seconds / 60)} minutes"
