"""Cooperative games with exact Shapley and Banzhaf values.

Every game here follows the utility protocol used by the valuers: it has an
``n_players`` attribute, ``game(subset)`` returns the worth of one coalition,
``game.evaluate(masks)`` returns the worth of many coalitions given as rows of a
boolean matrix, and ``shapley_values()`` / ``banzhaf_values()`` return the exact
values, computed analytically or by a polynomial (or pseudo-polynomial) algorithm,
never by enumerating the :math:`2^n` coalitions. They serve as teaching examples and
as oracles for the Monte Carlo estimators.

Banzhaf values are the raw (non-normalised) ones,
:math:`\\beta_i = 2^{-(n-1)} \\sum_{S \\subseteq N \\setminus \\{i\\}}
[u(S \\cup \\{i\\}) - u(S)]`.

References
----------
.. [1] Shapley, L. S. (1953). A value for n-person games. In *Contributions to the
   Theory of Games II*, Annals of Mathematics Studies 28, 307-317.
.. [2] Shapley, L. S. and Shubik, M. (1954). A method for evaluating the distribution
   of power in a committee system. *American Political Science Review* 48(3), 787-792.
.. [3] Banzhaf, J. F. (1965). Weighted voting doesn't work: a mathematical analysis.
   *Rutgers Law Review* 19, 317-343.
.. [4] Littlechild, S. C. and Owen, G. (1973). A simple expression for the Shapley
   value in a special case. *Management Science* 20(3), 370-372.
.. [5] Castro, J., Gómez, D. and Tejada, J. (2009). Polynomial calculation of the
   Shapley value based on sampling. *Computers & Operations Research* 36(5), 1726-1730.
.. [6] Matsui, T. and Matsui, Y. (2000). A survey of algorithms for calculating power
   indices of weighted majority games. *J. Oper. Res. Soc. Japan* 43(1), 71-86.
.. [7] Harsanyi, J. C. (1963). A simplified bargaining model for the n-person
   cooperative game. *International Economic Review* 4(2), 194-220.
.. [8] Dubey, P. and Shapley, L. S. (1979). Mathematical properties of the Banzhaf
   power index. *Mathematics of Operations Research* 4(2), 99-131.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import bdtrc, gammaln

from skdvl._games_base import (
    _banzhaf_weighted,
    _check_int,
    _check_subset,
    _Game,
    _is_real,
    _shapley_shubik,
)

__all__ = [
    "AirportGame",
    "AsymmetricVotingGame",
    "MinerGame",
    "ShoesGame",
    "SymmetricVotingGame",
    "UnanimityGame",
]


class SymmetricVotingGame(_Game):
    """Majority voting: a coalition wins if it holds more than half of the players.

    :math:`u(S) = 1` if :math:`|S| > n/2`, else 0. Used as a benchmark by Castro et
    al. (2009). Any ``n_players >= 1`` is accepted: for odd ``n`` a coalition
    needs :math:`(n+1)/2` members, for even ``n`` it needs :math:`n/2 + 1`.

    Parameters
    ----------
    n_players : int
        Number of players, at least 1.

    Notes
    -----
    All players are symmetric, so the Shapley value is :math:`1/n` (efficiency).
    Player ``i`` is pivotal exactly for the coalitions of :math:`\\lfloor n/2
    \\rfloor` other players, so the Banzhaf value is
    :math:`\\binom{n-1}{\\lfloor n/2 \\rfloor} / 2^{n-1}` (Banzhaf, 1965).

    Examples
    --------
    >>> from skdvl.games import SymmetricVotingGame
    >>> game = SymmetricVotingGame(4)
    >>> game([0, 1]), game([0, 1, 3])
    (0.0, 1.0)
    >>> game.shapley_values()
    array([0.25, 0.25, 0.25, 0.25])
    >>> game.banzhaf_values()
    array([0.375, 0.375, 0.375, 0.375])
    """

    _params = ("n_players",)

    def __init__(self, n_players: int) -> None:
        self.n_players = _check_int(n_players, "n_players", type(self).__name__, 1)

    def _evaluate(self, masks: NDArray[np.bool_]) -> NDArray:
        return (2 * masks.sum(axis=1) > self.n_players).astype(np.float64)

    def shapley_values(self) -> NDArray[np.float64]:
        """Exact Shapley values, :math:`1/n` for every player."""
        return np.full(self.n_players, 1.0 / self.n_players)

    def banzhaf_values(self) -> NDArray[np.float64]:
        """Exact Banzhaf values (see Notes)."""
        n = self.n_players
        return np.full(n, math.comb(n - 1, n // 2) / 2 ** (n - 1))


class MinerGame(_Game):
    """Miners carrying gold bars in pairs: :math:`u(S) = \\lfloor |S|/2 \\rfloor`.

    A classical teaching example of a game whose core is empty for odd ``n`` (used,
    e.g., by Yan and Procaccia (2021) for the least core).

    Parameters
    ----------
    n_players : int
        Number of miners, at least 1.

    Notes
    -----
    Players are symmetric, so the Shapley value is :math:`\\lfloor n/2 \\rfloor / n`:
    1/2 for even ``n`` and :math:`(n-1)/(2n)` for odd ``n``. The marginal contribution
    of a miner to a coalition of ``s`` others is 1 if ``s`` is odd and 0 otherwise; a
    uniformly random subset of :math:`n - 1 \\geq 1` players has odd size with
    probability 1/2, so the Banzhaf value is 1/2 (0 when ``n = 1``).

    References
    ----------
    Yan, T. and Procaccia, A. D. (2021). If you like Shapley then you'll love the
    core. *AAAI* 35(6), 5751-5759.

    Examples
    --------
    >>> from skdvl.games import MinerGame
    >>> game = MinerGame(5)
    >>> game([0, 1, 2])
    1.0
    >>> game.shapley_values()
    array([0.4, 0.4, 0.4, 0.4, 0.4])
    >>> game.banzhaf_values()
    array([0.5, 0.5, 0.5, 0.5, 0.5])
    """

    _params = ("n_players",)

    def __init__(self, n_players: int) -> None:
        self.n_players = _check_int(n_players, "n_players", type(self).__name__, 1)

    def _evaluate(self, masks: NDArray[np.bool_]) -> NDArray:
        return (masks.sum(axis=1) // 2).astype(np.float64)

    def shapley_values(self) -> NDArray[np.float64]:
        """Exact Shapley values, :math:`\\lfloor n/2 \\rfloor / n` for every player."""
        n = self.n_players
        return np.full(n, (n // 2) / n)

    def banzhaf_values(self) -> NDArray[np.float64]:
        """Exact Banzhaf values, 1/2 for every player (0 if there is only one)."""
        return np.full(self.n_players, 0.5 if self.n_players > 1 else 0.0)


class AsymmetricVotingGame(_Game):
    """Weighted majority game: a coalition wins if its total weight reaches the quota.

    :math:`u(S) = 1` if :math:`\\sum_{i \\in S} w_i \\geq q`, else 0. Its Shapley value
    is the Shapley-Shubik power index (Shapley and Shubik, 1954) and its Banzhaf
    value the raw Banzhaf index (Banzhaf, 1965). Castro et al. (2009) benchmark on
    such a game.

    Parameters
    ----------
    weights : array-like of int, shape (n_players,)
        Non-negative integer voting weights.
    quota : int
        Non-negative integer quota. ``quota=0`` makes every coalition (even the empty
        one) winning; a quota above the total weight makes none winning.

    Notes
    -----
    Both values are computed exactly by pseudo-polynomial dynamic programming over
    coalition weights below the quota (Matsui and Matsui, 2000), after dividing the
    weights by their greatest common divisor (and the quota by it, rounding up). Time is
    :math:`O(n^2 q \\log d)` for Shapley and :math:`O(n q \\log d)` for Banzhaf, with
    ``d`` distinct weights; memory is :math:`O(n q \\log d)`. Keep quotas moderate.

    Examples
    --------
    >>> from skdvl.games import AsymmetricVotingGame
    >>> game = AsymmetricVotingGame(weights=[3, 2, 1, 1], quota=4)
    >>> game([0, 2]), game([1, 2])
    (1.0, 0.0)
    >>> game.shapley_values()
    array([0.5       , 0.16666667, 0.16666667, 0.16666667])
    >>> game.banzhaf_values()
    array([0.75, 0.25, 0.25, 0.25])
    """

    _params = ("weights", "quota")

    def __init__(self, weights: ArrayLike, quota: int) -> None:
        name = type(self).__name__
        w = np.asarray(weights)
        integral = (
            w.dtype != bool
            and np.issubdtype(w.dtype, np.integer)
            or (
                np.issubdtype(w.dtype, np.floating)
                and np.isfinite(w).all()
                and (w == np.round(w)).all()
            )
        )
        if w.ndim != 1 or not w.size or not integral or (w < 0).any():
            raise ValueError(
                f"The 'weights' parameter of {name} must be a non-empty 1-D array of "
                f"non-negative integers. Got {weights!r} instead."
            )
        self.weights = w.astype(np.int64)
        self.weights.flags.writeable = False
        self.quota = _check_int(quota, "quota", name, 0)
        self.n_players = len(self.weights)

    def _evaluate(self, masks: NDArray[np.bool_]) -> NDArray:
        return (masks @ self.weights >= self.quota).astype(np.float64)

    def _reduced(self) -> tuple[NDArray, int] | None:
        """Weights and quota divided by their gcd; None if the game is constant."""
        w, q = self.weights, self.quota
        if q == 0 or q > w.sum():
            return None
        g = int(np.gcd.reduce(w))
        return w // g, -(-q // g)

    def shapley_values(self) -> NDArray[np.float64]:
        """Exact Shapley-Shubik index by dynamic programming (see Notes)."""
        reduced = self._reduced()
        if reduced is None:
            return np.zeros(self.n_players)
        return _shapley_shubik(*reduced)

    def banzhaf_values(self) -> NDArray[np.float64]:
        """Exact raw Banzhaf index by dynamic programming (see Notes)."""
        reduced = self._reduced()
        if reduced is None:
            return np.zeros(self.n_players)
        return _banzhaf_weighted(*reduced)


def _log_comb(m: int, j: NDArray) -> NDArray:
    return gammaln(m + 1) - gammaln(j + 1) - gammaln(m - j + 1)


def _shoes_shapley(n_same: int, n_other: int) -> float:
    """Shapley value of a shoe owner with ``n_same`` like and ``n_other`` unlike others.

    Sums :math:`\\binom{n_s}{a}\\binom{n_o}{b} / (n \\binom{n-1}{a+b})` over the
    coalitions of ``a`` like and ``b > a`` unlike others, i.e. the hypergeometric
    probabilities of the class Notes, in log space; rows are chunked to bound memory.
    """
    n = n_same + n_other + 1
    b = np.arange(n_other + 1)
    log_b = _log_comb(n_other, b)
    chunk = max(1, 2**20 // (n_other + 1))
    total = 0.0
    for start in range(0, n_same + 1, chunk):
        a = np.arange(start, min(start + chunk, n_same + 1))[:, None]
        log_terms = _log_comb(n_same, a) + log_b - _log_comb(n - 1, a + b)
        total += np.exp(log_terms, where=b > a, out=np.zeros(log_terms.shape)).sum()
    return total / n


class ShoesGame(_Game):
    """Left and right shoes are worth something only in pairs.

    Players ``0, ..., n_left - 1`` own one left shoe each, the following ``n_right``
    players one right shoe each, and :math:`u(S) = \\min(|S \\cap L|, |S \\cap R|)`
    is the number of pairs coalition ``S`` can form. A benchmark in Castro et al.
    (2009) (also known as the glove game).

    Parameters
    ----------
    n_left : int
        Number of left-shoe owners, at least 0.
    n_right : int
        Number of right-shoe owners, at least 0; ``n_left + n_right`` must be >= 1.

    Notes
    -----
    A left player adds one pair exactly when it finds fewer left shoes ``a`` than
    right shoes ``b`` among the others in its coalition. In a random order its
    predecessors are a uniform k-subset of the others, k uniform in ``0..n-1``, and
    ``a`` is hypergeometric, so
    :math:`\\phi_L = \\frac1n \\sum_{k=0}^{n-1} P(H_k \\le \\lceil k/2 \\rceil - 1)`
    with :math:`H_k \\sim \\mathrm{Hypergeom}(n-1, n_L-1, k)` (Shapley, 1953). For
    Banzhaf the others join independently with probability 1/2, so
    ``b + (n_L - 1 - a)`` is
    :math:`\\mathrm{Bin}(n-1, 1/2)` and ``a < b`` reads
    :math:`\\beta_L = P(\\mathrm{Bin}(n-1, 1/2) \\ge n_L)`. Right players are
    symmetric. Both take :math:`O(n^2)` time at most.

    Examples
    --------
    >>> from skdvl.games import ShoesGame
    >>> game = ShoesGame(n_left=1, n_right=2)
    >>> game([0, 1, 2])
    1.0
    >>> game.shapley_values()
    array([0.66666667, 0.16666667, 0.16666667])
    >>> game.banzhaf_values()
    array([0.75, 0.25, 0.25])
    """

    _params = ("n_left", "n_right")

    def __init__(self, n_left: int, n_right: int) -> None:
        name = type(self).__name__
        self.n_left = _check_int(n_left, "n_left", name, 0)
        self.n_right = _check_int(n_right, "n_right", name, 0)
        if self.n_left + self.n_right < 1:
            raise ValueError(
                f"{name} needs at least one player: n_left + n_right must be >= 1. "
                f"Got n_left={n_left}, n_right={n_right} instead."
            )
        self.n_players = self.n_left + self.n_right

    def _evaluate(self, masks: NDArray[np.bool_]) -> NDArray:
        left = masks[:, : self.n_left].sum(axis=1)
        right = masks[:, self.n_left :].sum(axis=1)
        return np.minimum(left, right).astype(np.float64)

    def _per_side(self, value_of_side: Callable[[int], float]) -> NDArray[np.float64]:
        out = np.empty(self.n_players)
        out[: self.n_left] = value_of_side(self.n_left) if self.n_left else 0.0
        out[self.n_left :] = value_of_side(self.n_right) if self.n_right else 0.0
        return out

    def shapley_values(self) -> NDArray[np.float64]:
        """Exact Shapley values from hypergeometric probabilities (see Notes)."""
        n = self.n_players
        return self._per_side(lambda n_same: _shoes_shapley(n_same - 1, n - n_same))

    def banzhaf_values(self) -> NDArray[np.float64]:
        """Exact Banzhaf values, :math:`P(\\mathrm{Bin}(n-1, 1/2) \\ge n_{side})`."""
        n = self.n_players
        return self._per_side(lambda n_same: float(bdtrc(n_same - 1, n - 1, 0.5)))


class AirportGame(_Game):
    """Cost of a runway long enough for the largest plane of the coalition.

    :math:`u(S) = \\max_{i \\in S} c_i` and :math:`u(\\emptyset) = 0`: a cost game,
    whose Shapley value is the classical fair split of the runway cost (Littlechild
    and Owen, 1973). A benchmark in Castro et al. (2009).

    Parameters
    ----------
    costs : array-like of float, shape (n_players,)
        Non-negative, finite cost of the runway each player needs. Ties are allowed.

    Notes
    -----
    With costs sorted increasingly, :math:`c_{(1)} \\le \\dots \\le c_{(n)}` and
    :math:`c_{(0)} = 0`, the game is the sum over segments ``k`` of the cost increment
    :math:`c_{(k)} - c_{(k-1)}` times the game "S contains one of the
    :math:`n - k + 1` players who need segment k". Hence (Littlechild and Owen, 1973)
    :math:`\\phi_{(j)} = \\sum_{k \\le j} (c_{(k)} - c_{(k-1)}) / (n - k + 1)`: each
    increment is shared equally by those who need it. A player adds segment ``k``
    only when none of the other :math:`n - k` players needing it is present, which
    happens with probability :math:`2^{-(n-k)}`, hence the Banzhaf value
    :math:`\\beta_{(j)} = \\sum_{k \\le j} (c_{(k)} - c_{(k-1)}) \\, 2^{-(n-k)}`.

    Examples
    --------
    >>> from skdvl.games import AirportGame
    >>> game = AirportGame(costs=[1.0, 2.0, 4.0])
    >>> game([0, 1]), game([])
    (2.0, 0.0)
    >>> game.shapley_values()
    array([0.33333333, 0.83333333, 2.83333333])
    >>> game.banzhaf_values()
    array([0.25, 0.75, 2.75])
    """

    _params = ("costs",)

    def __init__(self, costs: ArrayLike) -> None:
        c = np.asarray(costs)
        valid = c.ndim == 1 and c.size > 0 and _is_real(c)
        if not valid or not np.isfinite(c).all() or (c < 0).any():
            raise ValueError(
                f"The 'costs' parameter of {type(self).__name__} must be a non-empty "
                f"1-D array of finite, non-negative numbers. Got {costs!r} instead."
            )
        self.costs = c.astype(np.float64)
        self.costs.flags.writeable = False
        self.n_players = len(self.costs)

    def _evaluate(self, masks: NDArray[np.bool_]) -> NDArray:
        return (masks * self.costs).max(axis=1, initial=0.0)  # costs are >= 0

    def _shares(self, divisors: NDArray) -> NDArray[np.float64]:
        order = np.argsort(self.costs, kind="stable")
        increments = np.diff(self.costs[order], prepend=0.0)
        values = np.empty(self.n_players)
        values[order] = np.cumsum(increments / divisors)
        return values

    def shapley_values(self) -> NDArray[np.float64]:
        """Exact Shapley values by the Littlechild-Owen formula (see Notes)."""
        n = self.n_players
        return self._shares(n - np.arange(n, dtype=np.float64))

    def banzhaf_values(self) -> NDArray[np.float64]:
        """Exact Banzhaf values (see Notes)."""
        n = self.n_players
        return self._shares(np.ldexp(1.0, n - 1 - np.arange(n)))


class UnanimityGame(_Game):
    """Weighted sum of unanimity games: :math:`u(S) = \\sum_j a_j [T_j \\subseteq S]`.

    A unanimity game pays 1 when the coalition contains all players of its carrier
    :math:`T`. Every game is a unique linear combination of unanimity games (with
    the Harsanyi dividends as weights; Harsanyi, 1963), and Shapley and Banzhaf
    values are linear in the game, which makes this class a handy teaching tool for
    interactions: the two values differ as soon as a carrier has more than one
    player.

    Parameters
    ----------
    n_players : int
        Number of players, at least 1.
    carriers : sequence of sequences of int
        Non-empty carrier sets :math:`T_j`, each made of distinct indices in
        ``[0, n_players)``. A carrier may repeat (the weights then add up).
    weights : array-like of float, shape (len(carriers),), default=None
        Finite weights :math:`a_j`; all ones if None.

    Notes
    -----
    A member of :math:`T` is pivotal for :math:`u_T` exactly for the coalitions that
    already hold the rest of :math:`T`. This gives
    :math:`\\phi_i = \\sum_{j: i \\in T_j} a_j / |T_j|` (Shapley, 1953) and
    :math:`\\beta_i = \\sum_{j: i \\in T_j} a_j / 2^{|T_j|-1}` (Dubey and Shapley,
    1979).

    Examples
    --------
    >>> from skdvl.games import UnanimityGame
    >>> game = UnanimityGame(4, carriers=[[0, 1, 2], [3]], weights=[3.0, 1.0])
    >>> game([0, 1, 2]), game([0, 1, 3])
    (3.0, 1.0)
    >>> game.shapley_values()
    array([1., 1., 1., 1.])
    >>> game.banzhaf_values()
    array([0.75, 0.75, 0.75, 1.  ])
    """

    _params = ("n_players", "carriers", "weights")

    def __init__(
        self,
        n_players: int,
        carriers: Sequence[Sequence[int]],
        weights: ArrayLike | None = None,
    ) -> None:
        name = type(self).__name__
        self.n_players = _check_int(n_players, "n_players", name, 1)
        is_sequence = isinstance(carriers, Sequence)
        if not is_sequence or isinstance(carriers, (str, bytes)):
            raise ValueError(
                f"The 'carriers' parameter of {name} must be a sequence of sequences "
                f"of player indices. Got {carriers!r} instead."
            )
        checked = []
        for j, carrier in enumerate(carriers):
            idx = _check_subset(carrier, self.n_players, name=f"carriers[{j}]")
            if idx.size == 0:
                raise ValueError(
                    f"carriers[{j}] of {name} must be non-empty. "
                    f"Got {carrier!r} instead."
                )
            checked.append(tuple(sorted(int(i) for i in idx)))
        if not checked:
            raise ValueError(
                f"The 'carriers' parameter of {name} must hold at least one carrier. "
                f"Got {carriers!r} instead."
            )
        self.carriers = tuple(checked)
        w = np.ones(len(checked)) if weights is None else np.array(weights)
        if weights is not None:
            valid = _is_real(w) and w.shape == (len(checked),)
            if not valid or not np.isfinite(w).all():
                raise ValueError(
                    f"The 'weights' parameter of {name} must be a 1-D array of "
                    f"{len(checked)} finite numbers, one per carrier. Got {weights!r} "
                    "instead."
                )
        self.weights = w.astype(np.float64)
        self.weights.flags.writeable = False
        self._members = np.zeros((len(checked), self.n_players))
        for j, carrier in enumerate(checked):
            self._members[j, list(carrier)] = 1.0
        self._sizes = self._members.sum(axis=1)

    def _evaluate(self, masks: NDArray[np.bool_]) -> NDArray:
        if len(self.carriers) > 16:  # many carriers: count the members by matmul
            contains = masks.astype(np.float64) @ self._members.T == self._sizes
        else:  # few carriers: one column each, still no loop over coalitions
            contains = np.empty((len(masks), len(self.carriers)), dtype=bool)
            for j, carrier in enumerate(self.carriers):
                contains[:, j] = masks[:, list(carrier)].all(axis=1)
        # Row-wise reduction: the same rounding for a row alone or inside a batch.
        return np.where(contains, self.weights, 0.0).sum(axis=1)

    def shapley_values(self) -> NDArray[np.float64]:
        """Exact Shapley values, :math:`\\sum_{j: i \\in T_j} a_j / |T_j|`."""
        return (self.weights / self._sizes) @ self._members

    def banzhaf_values(self) -> NDArray[np.float64]:
        """Exact Banzhaf values, :math:`\\sum_{j: i \\in T_j} a_j / 2^{|T_j|-1}`."""
        return np.ldexp(self.weights, 1 - self._sizes.astype(int)) @ self._members
