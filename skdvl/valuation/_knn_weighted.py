"""Exact Shapley values of hard-label weighted KNN classification (WKNN-Shapley).

Pure, vectorised functions over blocks of validation rows, after Wang, Mittal & Jia
(2024), "Efficient Data Shapley for Weighted Nearest Neighbor Algorithms" (AISTATS,
arXiv:2401.11103). The game of one validation row ``(x, y)`` is the correctness of a
distance-weighted KNN classifier trained on a coalition; its weights are discretised to
``n_bins`` integer levels, and the values are exact for the discretised game.

* `weighted_knn_shapley_levels`: the exact values for integer weight levels in rank
  order (the dynamic programme);
* `discretize_weights`: distances in rank order to integer levels (``"rbf"``,
  ``"uniform"`` or a callable kernel);
* `weighted_knn_shapley`: both steps, for one validation row or a block, in rank order;
* `weighted_knn_shapley_block`: a block of validation rows from distances and labels
  in training order (ranking, ties broken by column index, and the scatter back).

The estimator shell is not here: these functions take arrays and return arrays.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Integral, Real
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "discretize_weights",
    "weighted_knn_shapley",
    "weighted_knn_shapley_block",
    "weighted_knn_shapley_levels",
]

#: Decision threshold of the integer vote margin, by tie rule: u = 1[margin >= theta].
_THRESHOLD = {"incorrect": 1, "correct": 0}
#: Weight kernels known by name (a callable is the alternative).
_KERNELS = ("rbf", "uniform")
#: Bytes of the stored prefix distributions of one block of rows (see `_block_plan`).
_BLOCK_BYTES = 2**27
#: Validation rows per block at most (more share the loop overhead no better).
_BLOCK_ROWS = 32


# --------------------------------------------------------------------------------------
# Checks of the arguments (the functions are private, their callers are not).
# --------------------------------------------------------------------------------------


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, Integral) or k < 1:
        raise ValueError(f"The 'k' parameter must be an int >= 1. Got {k!r} instead.")
    return int(k)


def _check_ties(ties: Any) -> int:
    if ties not in _THRESHOLD:
        raise ValueError(
            f"The 'ties' parameter must be one of {sorted(_THRESHOLD)}. Got {ties!r} instead."
        )
    return _THRESHOLD[ties]


def _as_block(name: str, a: Any, dtype: Any) -> np.ndarray:
    """``a`` as a 2-D array (one row for a 1-D input)."""
    a = np.asarray(a, dtype=dtype)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise ValueError(f"'{name}' must be 1-D or 2-D. Got an array of shape {a.shape}.")
    return a


def _check_levels(levels: Any, match: Any) -> tuple[np.ndarray, np.ndarray]:
    raw = np.asarray(levels)
    if raw.size and not np.issubdtype(raw.dtype, np.integer):
        if not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw)):
            raise ValueError("'levels' must hold non-negative integers (discretised weights).")
    lv = _as_block("levels", raw, np.int64)
    mt = _as_block("match", match, bool)
    if lv.shape != mt.shape:
        raise ValueError(
            f"'levels' and 'match' must have the same shape. Got {lv.shape} and {mt.shape}."
        )
    if lv.size and lv.min() < 0:
        raise ValueError(f"'levels' must be >= 0. Got a minimum of {lv.min()}.")
    return lv, mt


# --------------------------------------------------------------------------------------
# Discretised weights.
# --------------------------------------------------------------------------------------


def discretize_weights(
    d_sorted: Any,
    *,
    weights: str | Callable[[np.ndarray], Any] = "rbf",
    tau: float = 1.0,
    n_bins: int = 32,
) -> np.ndarray:
    """Integer weight levels ``0 .. n_bins - 1`` of training rows, from their distances.

    Parameters
    ----------
    d_sorted : array-like of shape (n,) or (n_rows, n)
        Distances from a validation row to the training rows (any order; rank order
        for the other functions of this module). Not squared distances, for ``"rbf"``.
    weights : {"rbf", "uniform"} or callable, default="rbf"
        The kernel :math:`w(d)`: ``"rbf"`` is :math:`\\exp(-d / \\tau)`, the kind of
        kernel of the paper's experiments; ``"uniform"`` gives every row the top level (the
        unweighted, majority-vote KNN); a callable maps the distances array to an
        array of the same shape of finite weights ``>= 0``.
    tau : float, default=1.0
        Length scale of the ``"rbf"`` kernel, ``> 0``.
    n_bins : int, default=32
        Number of weight levels ``W >= 2`` (the paper's :math:`W = 2^b`).

    Returns
    -------
    ndarray of int64, same shape as ``d_sorted``
        :math:`q_j = \\mathrm{round}((W - 1)\\, w_j / \\max_l w_l)`, the weights of each
        row of distances divided by their largest weight and rounded to the grid
        :math:`\\{0, 1/(W-1), \\dots, 1\\}` (a row whose weights are all 0 gets 0).

    Notes
    -----
    Scaling the weights does not change the weighted vote, so the division by the
    largest weight only chooses the grid. Rounding moves a normalised weight by at most
    :math:`1 / (2(W-1))`, hence the margin of the vote of the at most ``K`` neighbours
    by at most :math:`K / (2(W-1))` (in units of the largest weight): the discretised
    game differs from the undiscretised one only on coalitions whose normalised vote
    margin is within that distance of zero, and where no coalition is, both games and
    their Shapley values are equal. The cost of the values grows linearly with ``W``.
    Deviation: the paper's code scales its RBF weights by min-max normalisation over
    the training rows, which shifts them and so changes the vote (the farthest row
    gets weight 0); here they are only divided by their maximum.

    Examples
    --------
    >>> discretize_weights([0.0, 0.5, 1.0, 3.0], tau=1.0, n_bins=11)
    array([10,  6,  4,  0])
    >>> discretize_weights([0.0, 0.5, 1.0], weights="uniform", n_bins=4)
    array([3, 3, 3])
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, Integral) or n_bins < 2:
        raise ValueError(f"The 'n_bins' parameter must be an int >= 2. Got {n_bins!r} instead.")
    d = np.asarray(d_sorted, dtype=np.float64)
    if weights == "uniform":
        return np.full(d.shape, n_bins - 1, dtype=np.int64)
    if weights == "rbf":
        if isinstance(tau, bool) or not isinstance(tau, Real) or not tau > 0:
            raise ValueError(f"The 'tau' parameter must be a float > 0. Got {tau!r} instead.")
        if d.size and (not np.all(np.isfinite(d)) or d.min() < 0):
            raise ValueError("'d_sorted' must hold finite distances >= 0.")
        nearest = d.min(axis=-1, keepdims=True) if d.size else 0.0
        w = np.exp(-(d - nearest) / tau)             # exp(-d / tau), divided by its max
    elif callable(weights):
        w = np.asarray(weights(d), dtype=np.float64)
        if w.shape != d.shape:
            raise ValueError(
                f"The 'weights' callable must return an array of shape {d.shape}. "
                f"Got {w.shape} instead."
            )
        if w.size and not np.all(np.isfinite(w)):
            raise ValueError(
                "The 'weights' callable must return finite weights >= 0. Got "
                f"{float(w[~np.isfinite(w)].ravel()[0])} instead.")
        if w.size and w.min() < 0:
            raise ValueError(
                "The 'weights' callable must return finite weights >= 0. Got a minimum "
                f"of {float(w.min())} instead.")
        top = w.max(axis=-1, keepdims=True) if w.size else 1.0
        w = np.divide(w, top, out=np.zeros_like(w), where=top > 0)
    else:
        raise ValueError(
            f"The 'weights' parameter must be one of {list(_KERNELS)} or a callable. "
            f"Got {weights!r} instead."
        )
    return np.rint(w * (n_bins - 1)).astype(np.int64)


# --------------------------------------------------------------------------------------
# The dynamic programme, for a block of validation rows in rank order.
# --------------------------------------------------------------------------------------


def _windows(a: np.ndarray, width: int) -> np.ndarray:
    """The sliding windows of length ``width`` along the last axis of ``a`` (a view)."""
    return sliding_window_view(a, width, axis=-1)


def _prefix_steps(out: np.ndarray, v: np.ndarray, first: int, pad: int) -> None:
    """Fill ``out[1:]`` with :math:`\\hat P(first + 1), \\dots` from ``out[0] = \\hat P(first)``.

    ``out[j, t, a, pad + radius + x]`` is the share of the ``a``-subsets of ranks
    ``1 .. first + j`` of validation row ``t`` with vote sum ``x``:
    :math:`\\hat P(i, a, x) = \\#\\{A \\subseteq [i], |A| = a, \\sum_A v = x\\} /
    \\binom{i}{a}` (zero when ``a > i``), on the grid ``x = -radius .. radius`` stored with
    ``pad`` zeros either side. The recursion :math:`\\hat P(i, a) = (1 - a/i)\\,
    \\hat P(i-1, a) + (a/i)\\, \\hat P(i-1, a-1)(\\cdot - v_i)` keeps every entry in
    [0, 1]; the support ``|x| <= (k - 1) max|v|`` never reaches the padding.
    """
    width = out.shape[-1] - 2 * pad
    k = out.shape[2]
    grid = out[..., pad:pad + width]
    windows = _windows(out, width)
    rows = np.arange(out.shape[1])
    a = np.arange(k, dtype=np.float64)
    for j in range(1, out.shape[0]):
        i = first + j
        np.multiply(np.maximum(1.0 - a / i, 0.0)[:, None], grid[j - 1], out=grid[j])
        if k > 1:
            moved = windows[j - 1][rows, :-1, pad - v[:, i - 1]]    # P(i-1, a-1, x - v_i)
            moved *= (a[1:] / i)[:, None]
            grid[j, :, 1:] += moved


class _Prefix:
    """:math:`\\hat P(i)` for ``i = n - 1, n - 2, .., 0`` (see `_prefix_steps`).

    Stores all ``n`` of them when ``stride >= n``; otherwise only every ``stride``-th,
    and recomputes the others one segment at a time, as the backward pass asks for them
    (twice the forward work, a memory of ``n / stride + stride`` distributions).
    """

    def __init__(self, v: np.ndarray, k: int, width: int, pad: int, stride: int):
        n_rows, n = v.shape
        self.v, self.pad, self.width, self.n = v, pad, width, n
        self.stride = min(stride, n)
        self.segment = np.zeros((self.stride + 1, n_rows, k, width + 2 * pad))
        self.segment[0, :, 0, pad + width // 2] = 1.0      # P(0): the empty set, sum 0
        if self.stride == n:
            _prefix_steps(self.segment[:n], v, 0, pad)
            self.first = 0
            return
        starts = range(0, n, self.stride)
        self.saved = np.empty((len(starts),) + self.segment.shape[1:])
        for c, first in enumerate(starts):                  # forward pass, keeping starts
            self.saved[c] = self.segment[0]
            if first + self.stride < n:
                _prefix_steps(self.segment, v, first, pad)
                self.segment[0] = self.segment[-1]
        self.first = -n                                     # nothing in the segment yet

    def grid(self, i: int) -> np.ndarray:
        """:math:`\\hat P(i)` on the grid, shape (n_rows, k, width)."""
        if not self.first <= i < self.first + self.stride:
            c = i // self.stride
            self.first = c * self.stride
            self.segment[0] = self.saved[c]
            _prefix_steps(self.segment[:min(self.stride, self.n - self.first)], self.v,
                          self.first, self.pad)
        return self.segment[i - self.first, ..., self.pad:self.pad + self.width]


def _values_from_prefix(
    v: np.ndarray, prefix: _Prefix, k: int, radius: int, pad: int, theta: int
) -> np.ndarray:
    """The values of the game of signed levels ``v``, by the backward recursion.

    See `weighted_knn_shapley_levels` (Notes) for the two channels ``A[:, 0]`` (the
    coalitions' utility with ``i``) and ``A[:, 1]`` (without it). The suffix arrays
    are constant beyond the grid (every vote sum there wins, or every one loses), so
    their padding repeats the edge values.
    """
    n_rows, n = v.shape
    width = 2 * radius + 1
    grid = np.arange(-radius, radius + 1)
    wins = (grid >= theta).astype(np.float64)
    buf = np.empty((n_rows, 2, k, width + 2 * pad))
    acc = buf[..., pad:pad + width]
    acc[...] = wins / n                              # A(n + 1)
    windows = _windows(buf, width)
    rows = np.arange(n_rows)
    a = np.arange(k, dtype=np.float64)
    values = np.empty((n_rows, n))
    for i in range(n, 0, -1):
        buf[..., :pad] = buf[..., pad:pad + 1]
        buf[..., pad + width:] = buf[..., pad + width - 1:pad + width]
        vi = v[:, i - 1]
        moved = windows[rows, :, :, pad + vi]        # A(i + 1, a, x + v_i)
        diff = moved[:, 0] - acc[:, 1]
        values[:, i - 1] = np.einsum("rax,rax->r", prefix.grid(i - 1), diff)
        if i == 1:
            break
        acc *= np.maximum(1.0 - a / (i - 1), 0.0)[:, None]
        if k > 1:
            moved = moved[:, :, 1:]
            moved *= ((a[:-1] + 1.0) / (i - 1))[:, None]
            acc[:, :, :-1] += moved
        if i > k:                                    # rank i is the K-th of S + its last
            gain = k / (i * (i - 1.0))
            acc[:, 0, k - 1] += gain * wins
            acc[:, 1, k - 1] += gain * (grid[None, :] + vi[:, None] >= theta)
    if theta <= 0:                                   # u(empty) = 0, not 1[0 >= theta]
        values += 1.0 / n
    return values


def _block_plan(n: int, k: int, width: int) -> tuple[int, int]:
    """Validation rows per block and the `_Prefix` stride, within `_BLOCK_BYTES`.

    Blocks of `_BLOCK_ROWS` rows share the Python overhead of the ``2n`` steps. All
    ``n`` prefix distributions are stored when those of such a block fit; otherwise every
    ``stride``-th, ``stride ~ sqrt(n)`` (which minimises ``n / stride + stride``).
    """
    one = 8 * k * width                              # bytes of one row's distribution
    if _BLOCK_ROWS * n * one <= _BLOCK_BYTES:
        return _BLOCK_ROWS, n
    stride = math.isqrt(n) + 1
    held = (-(-n // stride) + stride + 1) * one
    return max(1, min(_BLOCK_ROWS, _BLOCK_BYTES // held)), stride


def weighted_knn_shapley_levels(
    levels: Any, match: Any, k: int, *, ties: str = "incorrect"
) -> np.ndarray:
    """Exact Shapley values of the hard-label weighted KNN game, in rank order.

    Parameters
    ----------
    levels : array-like of int of shape (n,) or (n_rows, n)
        ``levels[t, r - 1] >= 0``: the (discretised, integer) weight of the training
        row ranked ``r``-th nearest to validation row ``t`` (see `discretize_weights`).
    match : array-like of bool, same shape
        ``match[t, r - 1]``: whether that training row has the label of validation
        row ``t``.
    k : int
        Number of neighbours, ``K >= 1``; any ``K``, also ``K >= n``.
    ties : {"incorrect", "correct"}, default="incorrect"
        How a vote in which the correct label holds exactly half of the weight is
        scored (see Notes).

    Returns
    -------
    ndarray of shape (n_rows, n), or (n,) for 1-D inputs
        ``values[t, r - 1]``: the Shapley value of the rank-``r`` row in the game of
        validation row ``t``.

    Notes
    -----
    **Utility.** For a coalition ``S`` of training rows, let :math:`T(S)` be its
    :math:`\\min(K, |S|)` nearest rows (ties in distance broken by rank), and
    :math:`V_+` and :math:`V_-` the total weights in :math:`T(S)` of the rows with the
    label ``y`` of the validation row and of the rows with another label. Then
    :math:`u(\\emptyset) = 0` and, for :math:`S \\neq \\emptyset`,
    :math:`u(S) = 1[V_+ > V_-]` (``ties="incorrect"``) or :math:`1[V_+ \\ge V_-]`
    (``ties="correct"``). This is the hard-label weighted KNN accuracy of Wang et
    al. (2024): for binary labels, :math:`1[V_+ > V_-]` says that the weighted vote
    predicts ``y``. Deviations: with more than two classes, the utility asks that the
    correct label hold more than half (``"correct"``: at least half) of the weight
    (the signed-weight reduction of the binary case), not that it be the plurality
    label; the scoring of a tied vote and of the empty coalition are fixed here
    explicitly (``ties``, :math:`u(\\emptyset) = 0`).

    **Algorithm.** Write :math:`v_j = q_j (2\\,1[y_j = y] - 1)` for the signed levels,
    so that :math:`u(S) = 1[\\sum_{T(S)} v \\ge \\theta]`. A coalition ``S`` without
    row ``i`` changes its utility when ``i`` joins only if fewer than ``K`` rows of
    ``S`` are nearer than ``i``. Split ``S`` into the set ``A`` of its rows nearer than
    ``i`` (``|A| = a < K``) and the rest. Either ``S`` has at most ``K - 1`` rows and
    the marginal contribution is :math:`u(M_S + v_i) - u(M_S)`; or the rest has a
    :math:`(K-a)`-th nearest row ``p``, which ``i`` pushes out of the ``K`` nearest:
    with ``D`` the ``K - 1`` rows of ``S`` nearer than ``p`` other than ``i``, the
    contribution is :math:`u(M_D + v_i) - u(M_D + v_p)`, and summing the Shapley
    weights over the free rows farther than ``p`` gives
    :math:`\\sum_t \\binom{n-p}{t} \\frac{1}{n \\binom{n-1}{K+t}} =
    \\frac{1}{p \\binom{p-1}{K}}` (a Beta integral). Both cases factor into a prefix
    over the ranks before ``i`` (the distribution of :math:`M_A` over ``a``-subsets,
    `_prefix_steps`) and a suffix over the ranks after ``i``, which obeys the
    recursion, in the two channels ``c`` = 0 (argument :math:`x + v_i`) and 1,

    .. math:: A_c(i, a) = (1 - \\tfrac{a}{i-1}) A_c(i+1, a)
              + \\tfrac{a+1}{i-1} A_c(i+1, a+1)(\\cdot + v_i)
              + 1[a = K-1, i > K] \\tfrac{K}{i(i-1)} u_c,

    with :math:`u_0(x) = u(x)`, :math:`u_1(x) = u(x + v_i)` and
    :math:`A_c(n+1, a) = u / n`. Then
    :math:`\\phi_i = \\sum_{a<K} \\sum_x \\hat P(i-1, a, x)
    [A_0(i+1, a, x + v_i) - A_1(i+1, a, x)]`, plus :math:`1/n` for
    ``ties="correct"`` (for :math:`u(\\emptyset) = 0`). Everything is normalised by
    binomial coefficients, so the entries stay in [0, 1] for any ``n`` and ``K`` and
    no step subtracts large counts. The recursion is our own derivation from the
    subset formula, for the same game as the paper's counting algorithm
    (:math:`O(W K^2 N^2)`); the tests check it against brute-force enumeration.

    **Cost.** With ``W - 1`` the largest level and ``K = min(K, n)``, the vote sums
    live on a grid of :math:`X = 2 (K (W-1) + 1) + 1` points; one validation row
    costs :math:`O(n K X) = O(n K^2 W)` time: a forward pass of ``n`` vectorised steps
    over the prefix distributions and a backward pass over the suffix arrays, each
    step vectorised over a block of up to `_BLOCK_ROWS` validation rows. The ``n``
    prefix distributions (``n K X`` floats per row) are kept when a block's fit in
    `_BLOCK_BYTES`; otherwise every ``sqrt(n)``-th is kept and the rest recomputed
    (about ``2 sqrt(n) K X`` floats per row, one more forward pass). That is a factor
    ``n`` below the paper's exact algorithm, :math:`O(W K^2 N^2)`, and below its
    deterministic approximation, :math:`O(W K^2 N M^\\star)`, too.

    Examples
    --------
    The farther row, of the wrong label, outvotes the nearer one with twice its weight:

    >>> weighted_knn_shapley_levels([1, 2], [True, False], k=2)
    array([ 0.5, -0.5])
    """
    k = _check_k(k)
    theta = _check_ties(ties)
    flat = np.ndim(levels) == 1
    lv, mt = _check_levels(levels, match)
    n_rows, n = lv.shape
    if n == 0 or n_rows == 0:
        values = np.zeros((n_rows, n))
        return values[0] if flat and n_rows else values
    k = min(k, n)                                    # T(S) = S for every S when K >= n
    v = np.where(mt, lv, -lv)
    pad = max(1, int(lv.max()))                      # the largest |v|, a shift
    radius = k * pad + 1
    values = np.empty((n_rows, n))
    step, stride = _block_plan(n, k, 2 * (radius + pad) + 1)
    for start in range(0, n_rows, step):
        vb = v[start:start + step]
        prefix = _Prefix(vb, k, 2 * radius + 1, pad, stride)
        values[start:start + step] = _values_from_prefix(vb, prefix, k, radius, pad, theta)
        del prefix
    return values[0] if flat else values


def weighted_knn_shapley(
    d_sorted: Any,
    match: Any,
    k: int,
    *,
    weights: str | Callable[[np.ndarray], Any] = "rbf",
    tau: float = 1.0,
    n_bins: int = 32,
    ties: str = "incorrect",
) -> np.ndarray:
    """WKNN-Shapley values of one validation row (or a block), in rank order.

    `discretize_weights` then `weighted_knn_shapley_levels`.

    Parameters
    ----------
    d_sorted : array-like of shape (n,) or (n_rows, n)
        Distances from the validation row to the training rows, in rank order
        (nondecreasing along each row).
    match : array-like of bool, same shape
        Whether the training row at each rank has the validation row's label.
    k : int
        Number of neighbours, ``K >= 1``.
    weights, tau, n_bins
        The kernel and its discretisation (see `discretize_weights`).
    ties : {"incorrect", "correct"}, default="incorrect"
        Scoring of a tied vote (see `weighted_knn_shapley_levels`).

    Returns
    -------
    ndarray, same shape as ``d_sorted``
        Values in rank order, exact for the discretised weights.

    Examples
    --------
    >>> d = [0.1, 0.2, 0.3]
    >>> weighted_knn_shapley(d, [True, False, True], k=1, weights="uniform").round(4)
    array([ 0.8333, -0.1667,  0.3333])
    """
    d = np.asarray(d_sorted, dtype=np.float64)
    if d.ndim in (1, 2) and d.shape[-1] > 1 and np.any(np.diff(d, axis=-1) < 0):
        raise ValueError("'d_sorted' must be sorted (nondecreasing) along its last axis.")
    levels = discretize_weights(d, weights=weights, tau=tau, n_bins=n_bins)
    return weighted_knn_shapley_levels(levels, match, k, ties=ties)


def weighted_knn_shapley_block(
    distances: Any,
    y: Any,
    y_val: Any,
    k: int,
    *,
    weights: str | Callable[[np.ndarray], Any] = "rbf",
    tau: float = 1.0,
    n_bins: int = 32,
    ties: str = "incorrect",
) -> np.ndarray:
    """WKNN-Shapley values of a block of validation rows, in training order.

    Parameters
    ----------
    distances : array-like of shape (n_val, n)
        ``distances[t, j]``: distance from validation row ``t`` to training row ``j``.
    y : array-like of shape (n,)
        Labels of the training rows.
    y_val : array-like of shape (n_val,)
        Labels of the validation rows.
    k : int
        Number of neighbours, ``K >= 1``.
    weights, tau, n_bins, ties
        As in `weighted_knn_shapley`.

    Returns
    -------
    ndarray of shape (n_val, n)
        ``values[t, j]``: the value of training row ``j`` in the game of validation
        row ``t``; the valuation of the block is their mean over ``t``.

    Notes
    -----
    Rows at equal distances are ranked by column index (a stable sort), so the
    values are deterministic; the paper leaves the order of ties open.

    Examples
    --------
    >>> weighted_knn_shapley_block([[0.3, 0.1]], [0, 1], [1], k=1).round(4)
    array([[0., 1.]])
    """
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 2:
        raise ValueError(f"'distances' must be 2-D (n_val, n). Got shape {d.shape}.")
    y = np.asarray(y)
    y_val = np.asarray(y_val)
    if y.shape != (d.shape[1],) or y_val.shape != (d.shape[0],):
        raise ValueError(
            f"'y' and 'y_val' must have shapes ({d.shape[1]},) and ({d.shape[0]},) "
            f"for distances of shape {d.shape}. Got {y.shape} and {y_val.shape}."
        )
    order = np.argsort(d, axis=1, kind="stable")
    d_sorted = np.take_along_axis(d, order, axis=1)
    match = y[order] == y_val[:, None]
    ranked = weighted_knn_shapley(d_sorted, match, k, weights=weights, tau=tau,
                                  n_bins=n_bins, ties=ties)
    values = np.empty_like(ranked)
    np.put_along_axis(values, order, ranked, axis=1)
    return values
