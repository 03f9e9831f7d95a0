"""The math of KNN-Shapley: values in rank order and neighbour ranking.

The utilities of Jia et al. (2019) and the soft-label utility of Wang & Jia (2023).
Pure, vectorised functions over blocks of validation rows; the estimator lives in
:mod:`skdvl.valuation._knn`, the threshold (radius) variant in
:mod:`skdvl.valuation._knn_threshold`.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
from sklearn import get_config
from sklearn.metrics import pairwise_distances
from sklearn.utils.extmath import row_norms, safe_sparse_dot

from skdvl._moments import Moments

#: Metrics computed blockwise from the BLAS product ``X_val @ X.T`` (squared distances,
#: which rank the rows exactly as the distances do).
_EUCLIDEAN = frozenset({"euclidean", "l2", "sqeuclidean"})
#: float64 arrays of shape (rows, n_train) alive at once per block, by task; sizes the
#: blocks (see ``_block_rows``). Measured peaks (tracemalloc) were below these counts:
#: 4.0 and 5.0 (soft label) for classification; for the threshold variant, 9.0 and
#: 17.1 when every training row is in the radius (fewer neighbours, less memory).
_ARRAYS_PER_ROW = {
    "classification": 5, "regression": 8, "soft_label": 6,
    "threshold_classification": 10, "threshold_regression": 18,
}
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
    near, far = _classification_rank_weights(match.shape[1], k)
    values = _exclusive_suffix_sum(match * far)
    np.negative(values, out=values)
    values += match * near
    return values


@functools.lru_cache(maxsize=4)
def _classification_rank_weights(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-rank weights of `_knn_classification_shapley` (read-only, cached per ``n, K``).

    ``near[r - 1] = min(K, r) / (K r)`` and ``far[r - 1] = 1 / (r (r - 1))`` for
    ``r > K``, else 0. A fit at a million training rows reuses them for every block.
    """
    rank = np.arange(1, n + 1, dtype=np.float64)
    near = np.minimum(k, rank) / (k * rank)
    far = np.zeros(n)
    tail = rank > k
    far[tail] = 1.0 / (rank[tail] * (rank[tail] - 1.0))
    near.flags.writeable = False
    far.flags.writeable = False
    return near, far


def _harmonic(n: int) -> float:
    """The harmonic number :math:`H_n = \\sum_{j=1}^n 1/j` (0 for ``n = 0``)."""
    return float(np.sum(1.0 / np.arange(1, n + 1, dtype=np.float64)))


def _knn_soft_label_shapley(match: np.ndarray, k: int, n_classes: int) -> np.ndarray:
    """Exact Shapley values of the soft-label KNN utility, in rank order.

    Parameters
    ----------
    match : ndarray of shape (n_rows, n)
        As in `_knn_classification_shapley`; every one of the ``n`` columns plays.
    k : int
        Number of neighbours, ``K >= 1``; any ``K``, also ``K >= n``.
    n_classes : int
        ``C``, the number of classes; the empty coalition scores ``1 / C``.

    Returns
    -------
    ndarray of shape (n_rows, n)
        Values in rank order, as in `_knn_classification_shapley`.

    Notes
    -----
    The utility is the soft-label utility of Wang & Jia (2023): the
    probability that the KNN model trained on :math:`S` gives the validation label,
    :math:`u(S) = \\frac{1}{\\min(K, |S|)} \\sum_{k=1}^{\\min(K,|S|)}
    1[y_{\\alpha_k(S)} = y]`, and :math:`u(\\emptyset) = 1/C` (a uniform guess).
    Their Theorem 2 states the values as a recursion over ranks; here they come
    from the values :math:`s^{J}_r` of the utility of Jia et al. (2019) (same top-K,
    divided by ``K``), by our own derivation from the subset formula. A coalition
    of ``s >= K`` rows has ``K`` voters under both utilities, so the marginal
    contributions differ only for ``s < K``, where the new row always votes: there
    the soft-label marginal averages, over the coalitions of size ``s``, to
    :math:`(m_r - \\bar m_{-r}) / (s + 1)` (:math:`\\bar m_{-r}`, the mean of
    ``match`` over the other rows) and :math:`m_r - 1/C` at ``s = 0``, while
    the one of Jia et al. is :math:`m_r / K`. With :math:`L = \\min(K, n)` and
    :math:`H_L` the harmonic number,

    .. math:: s_r = s^{J}_r - \\frac{L\\, m_r}{n K} + \\frac{m_r - 1/C}{n}
              + \\frac{H_L - 1}{n} (m_r - \\bar m_{-r}).

    ``O(n)`` after the sort; the tests check it against brute-force enumeration.
    Unlike the utility of Jia et al., a row that never matches is not a dummy
    player (it dilutes the vote of a small coalition), so leave-self-out drops the
    validation row from the columns instead (see `_block_moments`).
    """
    n = match.shape[1]
    top = min(k, n)
    spread = (_harmonic(top) - 1.0) / (n * (n - 1.0)) if n > 1 else 0.0
    values = _knn_classification_shapley(match, k)
    values += match * (1.0 / n + (_harmonic(top) - 1.0) / n - top / (n * k) + spread)
    offset = match.sum(axis=1) * -spread - 1.0 / (n_classes * n)
    values += offset[:, None]
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
    about ``2**(b - 52)`` relative, ``b = log2(n_columns)``) are rare in small rows but
    not in rows of a million columns (about a hundred pairs per row); they sit in runs
    of equal kept bits, which `_order_runs` puts right, so the result is always exact.
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
        _order_runs(key, d, rows, cols)
    return key


#: Rounds of `_order_runs` before a row falls back to a full stable sort.
_RUN_ROUNDS = 16


def _order_runs(order: np.ndarray, d: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> None:
    """Sort, in place, the runs of ``order`` whose packed keys tied, by (distance, index).

    ``(rows[j], cols[j])`` marks that ranks ``cols[j]`` and ``cols[j] + 1`` of row
    ``rows[j]`` tied on the kept bits. Truncating the bit patterns keeps their order,
    so only such neighbours can be out of order, and the rows of a run of tied keys
    belong to that run in the exact order. An odd-even transposition sort on the
    marked pairs orders each run (a run of ``L`` in ``L`` rounds); a swap only undoes
    an inversion, so exact ties keep their index order. Rows still swapping after
    `_RUN_ROUNDS` rounds (long runs) are sorted in full.
    """
    parity = [(cols & 1) == 0, (cols & 1) == 1]
    pairs = [(rows[m], cols[m]) for m in parity]
    busy = np.zeros(0, dtype=np.intp)
    for _ in range(_RUN_ROUNDS):
        moved = []
        for r, c in pairs:
            a, b = order[r, c], order[r, c + 1]
            da, db = d[r, a], d[r, b]
            swap = (da > db) | ((da == db) & (a > b))
            if swap.any():
                rs, cs = r[swap], c[swap]
                order[rs, cs], order[rs, cs + 1] = b[swap], a[swap]
                moved.append(rs)
        if not moved:
            return
        busy = np.unique(np.concatenate(moved))
    for r in busy:  # long runs: the exact order outright
        order[r] = np.argsort(d[r], kind="stable")


def _block_distances(
    Xb: Any, self_rows: np.ndarray | None, searcher: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Distances from a block of validation rows to every training row, and their columns.

    One BLAS product for the whole block (the training rows are read once per block,
    not once per row). With a fitted neighbours searcher (``searcher["nn"]``) the
    distances come in its order and the second array holds the training rows of each
    column; otherwise it is None (columns are training rows). With ``self_rows``
    (leave-self-out), validation row ``t`` is training row ``self_rows[t]``, whose
    distance becomes ``inf`` (the last rank).
    """
    nn = searcher.get("nn")
    if nn is None:
        d = _distances(Xb, searcher["X"], searcher["x_sq"], searcher["metric"], searcher["p"])
        if self_rows is not None:
            d[np.arange(d.shape[0]), self_rows] = np.inf
        return d, None
    d, ind = nn.kneighbors(Xb, n_neighbors=searcher["n_train"])
    d = np.asarray(d, dtype=np.float64)
    if self_rows is not None:
        d[ind == self_rows[:, None]] = np.inf
    return d, np.asarray(ind)


def _rank_rows(d: np.ndarray, ind: np.ndarray | None) -> np.ndarray:
    """Training rows from nearest to farthest, ties broken by training index.

    ``d`` and ``ind`` as returned by `_block_distances` (``d`` may be modified).
    """
    if ind is None:
        return _stable_argsort(d)
    order = np.lexsort((ind, d), axis=-1)
    return np.take_along_axis(ind, order, axis=1)


def _rank_values(
    order: np.ndarray, yb: np.ndarray, y_train: np.ndarray, k: int, task: str,
    leave_self_out: bool, utility: str, n_classes: int,
) -> np.ndarray:
    """Values in rank order of the games of some validation rows, ranked by ``order``."""
    if task == "classification":
        target = (y_train[order] == yb[:, None]).astype(np.float64)
    else:
        target = y_train[order]
    if leave_self_out:
        target[:, -1] = 0.0
    if utility == "soft_label" and not leave_self_out:
        return _knn_soft_label_shapley(target, k, n_classes)
    if utility == "soft_label":  # the validation row, ranked last, leaves its game
        values = np.zeros_like(target)
        values[:, :-1] = _knn_soft_label_shapley(target[:, :-1], k, n_classes)
        return values
    if task == "classification":
        return _knn_classification_shapley(target, k)
    return _knn_regression_shapley(target, yb, k)


def _block_moments(
    Xb: Any, yb: np.ndarray, self_rows: np.ndarray | None, y_train: np.ndarray,
    k: int, task: str, searcher: dict[str, Any], utility: str = "fixed_k",
    n_classes: int = 2,
) -> Moments:
    """Count, mean and sum of squared deviations of every training row's values over a block.

    A training row does not count in the game where it is the validation row.
    ``utility`` is "fixed_k" (Jia et al., 2019) or "soft_label" (Wang & Jia, 2023;
    classification, with ``n_classes`` classes). The distances of the whole block come
    from one product; the sorts and the values run on sub-blocks of about
    ``_CACHE_BYTES`` per array (one row at a million training rows: the gathers of
    larger ones miss the cache), accumulated row by row into the sums, in the order
    and with the bits of one pass over the block (see `_SumsOfValues`).
    """
    n_rows, n = Xb.shape[0], y_train.shape[0]
    d, ind = _block_distances(Xb, self_rows, searcher)
    sums = _SumsOfValues(n)
    sub = max(1, _CACHE_BYTES // (8 * n))
    for lo in range(0, n_rows, sub):
        rows = slice(lo, lo + sub)
        order = _rank_rows(d[rows], None if ind is None else ind[rows])
        values = _rank_values(order, yb[rows], y_train, k, task, self_rows is not None,
                              utility, n_classes)
        sums.add(order, values)
    del d, ind
    return sums.moments(n_rows, self_rows)


class _SumsOfValues:
    """Per-player sums of values and of squared values over games, added row by row.

    ``add(players, values)`` takes one row per game (``players[t]`` a permutation of
    the ``n`` players or a subset of them, ``values[t]`` their values); absent players
    are valued 0. Rows are scattered into the player order and added in turn: the
    same additions, in the same order, as ``np.bincount`` over the rows
    concatenated (which starts each sum at 0.0), so the bits do not depend on how a
    block is split into calls.
    """

    def __init__(self, n: int):
        self.total = np.zeros(n)
        self.squares = np.zeros(n)
        self._row = np.empty(n)

    def add(self, players: np.ndarray, values: np.ndarray) -> None:
        row = self._row
        for p, v in zip(players, values):
            if p.shape[0] < row.shape[0]:
                row.fill(0.0)
            row[p] = v
            self.total += row
            np.square(row, out=row)
            self.squares += row

    def moments(self, n_rows: int, self_rows: np.ndarray | None) -> Moments:
        """Moments over ``n_rows`` games; a player does not count where it is the
        validation row (``self_rows``)."""
        n = self.total.shape[0]
        counts = np.full(n, n_rows, dtype=np.int64)
        if self_rows is not None:
            counts -= np.bincount(self_rows, minlength=n)
        mean = self.total / np.maximum(counts, 1)
        return Moments(counts, mean, np.maximum(self.squares - self.total * mean, 0.0))


def _moments_of_values(
    players: np.ndarray, values: np.ndarray, n: int, n_rows: int,
    self_rows: np.ndarray | None,
) -> Moments:
    """Moments over ``n_rows`` games of the values ``values[j]`` of ``players[j]``.

    A player that has no entry in a game is valued 0 there; a player does not count
    in the game where it is the validation row (``self_rows``). The squared
    deviations come from the sums of values and of their squares (one pass, no
    gather of the means; ``values`` is overwritten); blocks are pooled exactly with
    :meth:`skdvl._moments.Moments.merge` (Chan, Golub & LeVeque, 1979), which keeps
    them accurate for many rows.
    """
    total = np.bincount(players, weights=values, minlength=n)
    np.square(values, out=values)
    squares = np.bincount(players, weights=values, minlength=n)
    counts = np.full(n, n_rows, dtype=np.int64)
    if self_rows is not None:
        counts -= np.bincount(self_rows, minlength=n)
    mean = total / np.maximum(counts, 1)
    return Moments(counts, mean, np.maximum(squares - total * mean, 0.0))


def _block_rows(n_val: int, n_train: int, task: str) -> int:
    """Validation rows per block: within ``working_memory``, and at least `_MIN_BLOCKS` blocks.

    ``task`` is a key of ``_ARRAYS_PER_ROW``. A block's distances come from one BLAS
    product (the training rows are read once per block); its sorts and values run on
    cache-sized sub-blocks (see `_block_moments`): blocks whose arrays stay near
    ``_CACHE_BYTES`` ran about 15% faster than blocks of 100 MB arrays, and at a
    million training rows sub-blocks of 8 rows took 1.5x as long as single rows
    (their gathers in ``_stable_argsort`` miss the cache).
    """
    budget = get_config()["working_memory"] * 2**20
    rows = int(budget // (8 * n_train * _ARRAYS_PER_ROW[task]))
    return max(1, min(rows, math.ceil(n_val / _MIN_BLOCKS)))
