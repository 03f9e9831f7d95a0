"""The cooperative games' base class, their input checks and the power-index recursions.

:class:`_Game` gives every game of :mod:`skdvl.games` the utility protocol
(``n_players``, ``game(subset)``, ``game.evaluate(masks)``); the pseudo-polynomial
dynamic programmes of Matsui & Matsui (2000) give the exact Shapley-Shubik and
Banzhaf indices of weighted voting games.
"""

from __future__ import annotations

import numbers
import operator
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray


def _check_int(value: Any, name: str, owner: str, min_value: int) -> int:
    integer = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if integer and operator.index(value) >= min_value:
        return operator.index(value)
    raise ValueError(
        f"The '{name}' parameter of {owner} must be an integer >= {min_value}. "
        f"Got {value!r} instead."
    )


def _check_subset(subset: ArrayLike, n_players: int, name: str = "subset") -> NDArray:
    """Validate player indices; return them as a 1-D intp array."""
    if isinstance(subset, (set, frozenset)):
        subset = sorted(subset)
    idx = np.asarray(subset)
    if idx.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D array-like of player indices. "
            f"Got an array of shape {idx.shape} instead."
        )
    if idx.size == 0:
        return np.empty(0, dtype=np.intp)
    if idx.dtype == bool or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(
            f"{name} must contain integer player indices. Got dtype {idx.dtype} "
            f"({idx.tolist()!r}) instead."
        )
    bad = idx[(idx < 0) | (idx >= n_players)]
    if bad.size:
        raise ValueError(
            f"{name} contains player index {bad[0]}, out of range for a game with "
            f"n_players={n_players}; indices must be in [0, {n_players})."
        )
    idx = idx.astype(np.intp)
    if np.unique(idx).size != idx.size:
        counts = np.bincount(idx)
        raise ValueError(
            f"{name} contains player {int(np.argmax(counts > 1))} more than once; "
            "the players of a coalition must be distinct."
        )
    return idx


def _check_masks(masks: ArrayLike, n_players: int) -> NDArray[np.bool_]:
    masks = np.asarray(masks)
    if masks.ndim != 2 or masks.shape[1] != n_players:
        raise ValueError(
            f"masks must be a 2-D boolean array of shape (n_coalitions, "
            f"n_players={n_players}). Got shape {masks.shape} instead."
        )
    if masks.dtype != bool:
        if not (
            np.issubdtype(masks.dtype, np.integer) and np.isin(masks, (0, 1)).all()
        ):
            raise ValueError(
                f"masks must be boolean (or integers in {{0, 1}}). Got dtype "
                f"{masks.dtype} instead."
            )
        masks = masks.astype(bool)
    return masks


def _is_real(a: NDArray) -> bool:
    """Whether an array holds real numbers (not bool, complex, str or object)."""
    return a.dtype.kind in "iuf"


def _format_param(value: object) -> str:
    if isinstance(value, np.ndarray):
        return np.array2string(value, separator=", ", threshold=12)
    return repr(value)


class _Game:
    """Shared plumbing: validation of coalitions, ``__call__`` and ``__repr__``.

    Subclasses set ``n_players``, list their constructor arguments in ``_params``, and
    implement ``_evaluate(masks)`` (vectorised, masks already validated) and
    ``shapley_values``; ``banzhaf_values`` where a formula is known.
    """

    n_players: int
    _params: tuple[str, ...] = ()

    def __call__(self, subset: ArrayLike) -> float:
        """Worth of one coalition, given as distinct player indices (any order)."""
        idx = _check_subset(subset, self.n_players)
        mask = np.zeros((1, self.n_players), dtype=bool)
        mask[0, idx] = True
        return float(self._evaluate(mask)[0])

    def evaluate(self, masks: ArrayLike) -> NDArray[np.float64]:
        """Worth of many coalitions at once.

        Parameters
        ----------
        masks : ndarray of bool, shape (n_coalitions, n_players)
            Row ``k`` marks the members of coalition ``k``.

        Returns
        -------
        ndarray of float64, shape (n_coalitions,)
        """
        masks = _check_masks(masks, self.n_players)
        return np.asarray(self._evaluate(masks), dtype=np.float64)

    def _evaluate(self, masks: NDArray[np.bool_]) -> NDArray:
        raise NotImplementedError  # pragma: no cover

    def shapley_values(self) -> NDArray[np.float64]:
        raise NotImplementedError  # pragma: no cover

    def banzhaf_values(self) -> NDArray[np.float64]:
        raise NotImplementedError(
            f"{type(self).__name__} has no known closed-form Banzhaf values; "
            "estimate them with BanzhafValuer(utility=game) instead."
        )

    def __repr__(self) -> str:
        args = ", ".join(f"{p}={_format_param(getattr(self, p))}" for p in self._params)
        return f"{type(self).__name__}({args})"




def _loo_dp_states(
    weights: NDArray, init: NDArray, add: Callable[[NDArray, int, int], NDArray]
) -> dict[int, NDArray]:
    """DP state over all players but one, for each distinct weight.

    ``add(state, w, t)`` returns the state after adding a player of weight ``w`` to
    ``t`` players already added. The leave-one-out states are built by divide and
    conquer over the distinct weights: each recursion level adds every player once,
    so there are O(n log d) calls to ``add`` instead of O(n d) (d distinct weights).
    """
    values, counts = np.unique(weights, return_counts=True)
    states: dict[int, NDArray] = {}

    def add_groups(state: NDArray, t: int, groups: range) -> tuple[NDArray, int]:
        for g in groups:
            for _ in range(counts[g]):
                state, t = add(state, int(values[g]), t), t + 1
        return state, t

    def recurse(state: NDArray, t: int, lo: int, hi: int) -> None:
        if hi - lo == 1:
            for _ in range(counts[lo] - 1):
                state, t = add(state, int(values[lo]), t), t + 1
            states[int(values[lo])] = state
            return
        mid = (lo + hi) // 2
        recurse(*add_groups(state, t, range(mid, hi)), lo, mid)
        recurse(*add_groups(state, t, range(lo, mid)), mid, hi)

    recurse(init, 0, 0, len(values))
    return states


def _shapley_shubik(weights: NDArray, quota: int) -> NDArray[np.float64]:
    """Shapley-Shubik index of the weighted majority game [quota; weights].

    Dynamic programming over (coalition size k, coalition weight w < quota), as
    surveyed by Matsui and Matsui (2000), storing for the others of player i the
    *fraction* ``P[k, w]`` of the k-subsets that weigh w (rather than their count,
    which overflows). Adding one player of
    weight ``v`` to ``t`` players gives, with :math:`\\binom{t}{k}/\\binom{t+1}{k} =
    (t+1-k)/(t+1)`, ``P'[k, w] = (t+1-k)/(t+1) P[k, w] + k/(t+1) P[k-1, w-v]``. Then
    :math:`\\phi_i = \\frac1n \\sum_k \\sum_{q - w_i \\le w < q} P_{-i}[k, w]`.
    """
    n = len(weights)
    k = np.arange(n)

    def add(P: NDArray, v: int, t: int) -> NDArray:
        r = min(t + 2, n)  # only sizes k <= t + 1 can have mass afterwards
        new = np.zeros_like(P)
        np.multiply(P[:r], ((t + 1 - k[:r]) / (t + 1))[:, None], out=new[:r])
        if v < quota:
            new[1:r, v:] += P[: r - 1, : quota - v] * (k[1:r] / (t + 1))[:, None]
        return new

    init = np.zeros((n, quota))
    init[0, 0] = 1.0
    states = _loo_dp_states(weights, init, add)
    per_weight = {v: P[:, max(quota - v, 0) :].sum() / n for v, P in states.items()}
    return np.array([per_weight[int(v)] for v in weights])


def _banzhaf_weighted(weights: NDArray, quota: int) -> NDArray[np.float64]:
    """Banzhaf values of the weighted majority game [quota; weights].

    ``B[w]`` is the probability that a uniformly random subset of the others of player
    i weighs w; adding a player of weight v gives ``B'[w] = (B[w] + B[w-v]) / 2``
    (Matsui and Matsui, 2000), and
    :math:`\\beta_i = \\sum_{q - w_i \\le w < q} B_{-i}[w]`.
    """

    def add(B: NDArray, v: int, t: int) -> NDArray:
        new = 0.5 * B
        if v < quota:
            new[v:] += 0.5 * B[: quota - v]
        return new

    init = np.zeros(quota)
    init[0] = 1.0
    states = _loo_dp_states(weights, init, add)
    per_weight = {v: B[max(quota - v, 0) :].sum() for v, B in states.items()}
    return np.array([per_weight[int(v)] for v in weights])
