"""A surrogate of a game that sees only how many players of each of a few groups a coalition holds.

``f(S) = G(c_1(S), ..., c_L(S))`` with ``c_l(S)`` the number of players of group ``l``
in ``S`` and ``G`` any regressor of those counts. The players of a group are
interchangeable in ``f``, so its semivalue is exact from the counts alone: for a
player of group ``g`` and the others' group sizes ``n'`` (``n_g - 1`` in group ``g``),

    phi = sum_c prod_l C(n'_l, c_l) * w(|c|) * (G(c + e_g) - G(c)),

the sum over the count vectors ``0 <= c <= n'`` of the coalitions the player joins,
``w(k) = m(k) / C(n-1, k)`` the weight of one coalition of size ``k`` (the
multivariate hypergeometric count of coalitions with those counts; Dubey, Neyman &
Weber, 1981, for semivalues). The groups are the players' effects in a linear fit,
clustered in one dimension: players whose additive effects agree are pooled, so that
``G`` can model a threshold or a minimum of sums of their counts (the weighted
voting and shoes games) that trees on the ``n`` indicators split into many cells.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from skdvl._coalitions import log_binom

__all__ = ["CountSurrogate"]

#: most count vectors on the grid of a count surrogate (fewer groups beyond)
_MAX_GRID = 200_000


def _cluster_1d(x: np.ndarray, k: int) -> np.ndarray:
    """Optimal partition of the values ``x`` into ``k`` contiguous clusters (least
    squares; Fisher, 1958, "On grouping for maximum homogeneity", JASA 53), labels 0..k-1."""
    n = x.size
    order = np.argsort(x, kind="stable")
    xs = x[order]
    c1 = np.concatenate([[0.0], np.cumsum(xs)])
    c2 = np.concatenate([[0.0], np.cumsum(xs**2)])

    def sse(i: np.ndarray, j: int) -> np.ndarray:  # cost of xs[i:j] for the i given
        m = j - i
        s = c1[j] - c1[i]
        return c2[j] - c2[i] - s**2 / np.maximum(m, 1)

    cost = np.full((k + 1, n + 1), np.inf)
    cut = np.zeros((k + 1, n + 1), dtype=np.intp)
    cost[0, 0] = 0.0
    for level in range(1, k + 1):
        for j in range(level, n + 1):
            i = np.arange(level - 1, j)
            total = cost[level - 1, i] + sse(i, j)
            best = int(np.argmin(total))
            cost[level, j], cut[level, j] = total[best], i[best]
    labels = np.empty(n, dtype=np.intp)
    j = n
    for level in range(k, 0, -1):
        i = cut[level, j]
        labels[order[i:j]] = level - 1
        j = i
    return labels


def _n_groups(n: int, wanted: int) -> int:
    """``wanted`` groups, fewer if the grid of counts would exceed ``_MAX_GRID``."""
    k = max(1, min(wanted, n))
    while k > 1 and (n / k + 1) ** k > _MAX_GRID:
        k -= 1
    return k


class CountSurrogate:
    """``G(counts of each group in S)``, the groups found from the players' linear effects.

    Parameters
    ----------
    effects : ndarray of shape (n,)
        The players' effects (coefficients of a linear fit); players are grouped
        by them.
    n_groups : int
        Groups wanted (fewer if the grid of counts would be too large).
    regressor : estimator
        A scikit-learn regressor of the ``n_groups`` counts (cloned).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.tree import DecisionTreeRegressor
    >>> Z = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], float)
    >>> y = np.minimum(Z[:, 0], Z[:, 1:].sum(axis=1))  # a glove game: 1 left, 2 right
    >>> f = CountSurrogate(np.array([2.0, 1.0, 1.0]), 2, DecisionTreeRegressor()).fit(Z, y)
    >>> f.values(np.full(3, 1 / 3)).round(4)  # its Shapley values
    array([0.6667, 0.1667, 0.1667])
    """

    def __init__(self, effects: np.ndarray, n_groups: int, regressor: Any) -> None:
        from sklearn.base import clone

        n = effects.size
        k = _n_groups(n, n_groups)
        labels = _cluster_1d(np.asarray(effects, dtype=np.float64), k)
        used = np.unique(labels)
        self.labels = np.searchsorted(used, labels)
        self.sizes = np.bincount(self.labels)
        self.onehot = np.eye(used.size)[self.labels]  # (n, groups)
        self.regressor = clone(regressor)

    def fit(self, Z: np.ndarray, y: np.ndarray) -> CountSurrogate:
        self.regressor.fit(Z @ self.onehot, y)
        return self

    def predict(self, Z: np.ndarray) -> np.ndarray:
        return np.asarray(self.regressor.predict(Z @ self.onehot), dtype=np.float64)

    def values(self, mass: np.ndarray) -> np.ndarray:
        """Exact semivalues of ``f`` (see the module docstring)."""
        sizes = self.sizes
        n = int(sizes.sum())
        grid = np.stack(np.meshgrid(*[np.arange(m + 1) for m in sizes], indexing="ij"),
                        axis=-1).reshape(-1, sizes.size)
        g_all = self.predict_counts(grid)
        radix = np.concatenate([[1], np.cumprod(sizes[::-1] + 1)[:-1]])[::-1]
        with np.errstate(divide="ignore"):
            log_w = np.log(np.asarray(mass, dtype=np.float64)) - log_binom(n - 1, np.arange(n))
        per_group = np.zeros(sizes.size)
        for g in range(sizes.size):
            others = sizes - np.eye(sizes.size, dtype=np.intp)[g]
            c = grid[np.all(grid <= others, axis=1)]
            k = c.sum(axis=1)
            log_count = log_binom(others[None, :], c).sum(axis=1) if c.size else np.zeros(0)
            weight = np.exp(log_count + log_w[k])
            up = c.copy()
            up[:, g] += 1
            diff = g_all[up @ radix] - g_all[c @ radix]
            per_group[g] = float(np.sum(weight * diff))
        return per_group[self.labels]

    def predict_counts(self, counts: np.ndarray) -> np.ndarray:
        return np.asarray(self.regressor.predict(counts.astype(np.float64)), dtype=np.float64)
