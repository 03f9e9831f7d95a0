"""Exact semivalues of a tree model of a cooperative game, from its leaves.

A tree (or a forest, or boosted trees) ``f`` fitted on coalitions coded as binary
vectors ``z`` in {0, 1}^n defines the game ``v(S) = f(1_S)``. A leaf is reached
iff the players of a set ``A`` (the splits taken to the "present" side,
``z_j > threshold``) are in ``S`` and those of a set ``B`` (the "absent" side)
are not, so ``v = sum_l value_l * u_{A_l, B_l}`` with the product game
``u_{A,B}(S) = [A subset of S] [B disjoint from S]``. Semivalues are linear in the
game (Dubey, Neyman & Weber, 1981), and those of a product game have a closed
form (below), which makes the semivalue of the tree model exact and cheap: the
surrogate of the regression-adjusted estimators of Witter, Liu & Musco (2025).

For ``|A| = a``, ``|B| = b`` and ``r = n - a - b`` free players, with the weight
``w(s) = m(s) / C(n-1, s)`` of one coalition of size ``s`` that a player joins:

- a player of ``A`` has the marginal ``[A - i subset of T] [B disjoint from T]``,
  hence ``phi_i = sum_{j=0..r} C(r, j) w(a - 1 + j)``;
- a player of ``B`` has the marginal ``-[A subset of T] [B disjoint from T]``,
  hence ``phi_i = -sum_{j=0..r} C(r, j) w(a + j)``;
- every other player is a null player: ``phi_i = 0``.

For Shapley values this is ``(a-1)! b! / (a+b)!`` and ``-a! (b-1)! / (a+b)!``
(Shapley, 1953, for ``b = 0``); for Banzhaf values ``+-1 / 2^(a+b-1)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import logsumexp
from sklearn.dummy import DummyRegressor
from sklearn.ensemble import (
    ExtraTreesRegressor,
    GradientBoostingRegressor,
    RandomForestRegressor,
)
from sklearn.tree import DecisionTreeRegressor
from sklearn.utils.validation import check_is_fitted

from skdvl._coalitions import log_binom

__all__ = ["tree_semivalues"]

_SUPPORTED = ("DecisionTreeRegressor, ExtraTreeRegressor, RandomForestRegressor, "
              "ExtraTreesRegressor or GradientBoostingRegressor")
_GB_LOSSES = ("squared_error", "absolute_error", "huber", "quantile")


def tree_semivalues(model: Any, mass: np.ndarray) -> np.ndarray:
    """Exact semivalues of the game ``v(S) = model.predict(1_S)``.

    Parameters
    ----------
    model : fitted tree regressor
        A single-output ``DecisionTreeRegressor``, ``ExtraTreeRegressor``,
        ``RandomForestRegressor``, ``ExtraTreesRegressor`` or
        ``GradientBoostingRegressor``, fitted on ``n`` binary features (feature
        ``j`` is 1 iff player ``j`` is in the coalition). Forests average their
        trees; boosting adds ``learning_rate`` times its trees to a constant,
        which contributes nothing.
    mass : ndarray of shape (n,)
        The semivalue's mass ``m(k) >= 0`` on the coalitions of size ``k =
        0..n-1`` that a player joins: ``1/n`` for Shapley,
        ``C(n-1, k) / 2^(n-1)`` for Banzhaf.

    Returns
    -------
    values : ndarray of shape (n,)
        ``phi_i = sum_{T not containing i} m(|T|) / C(n-1, |T|) (v(T + i) - v(T))``.

    Notes
    -----
    Each leaf is a product game ``u_{A,B}`` (see the module docstring), whose
    semivalue is summed in log space, so ``n`` may reach thousands. A split whose
    threshold lies outside ``[0, 1)`` sends both binary values to one side: the
    other child is unreachable and the edge constrains nothing. A leaf whose path
    asks a player to be both present and absent is unreachable and skipped.

    References
    ----------
    Witter, Liu & Musco (2025), "Regression-adjusted Monte Carlo estimators for
    Shapley values and probabilistic values", arXiv:2506.11849 (tree surrogates
    with exact values). Dubey, Neyman & Weber (1981), "Value theory without
    efficiency", Math. Oper. Res. 6(1) (semivalues).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.tree import DecisionTreeRegressor
    >>> Z = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    >>> f = DecisionTreeRegressor().fit(Z, [0.0, 0.0, 0.0, 1.0])  # unanimity game
    >>> tree_semivalues(f, np.full(2, 0.5))
    array([0.5, 0.5])
    """
    trees = _weighted_trees(model)
    n = int(model.n_features_in_)
    log_w = _log_weights(mass, n)
    leaf_weight, rows, feats, present = _leaf_constraints(trees, n)
    a = np.bincount(rows[present], minlength=leaf_weight.size)
    b = np.bincount(rows[~present], minlength=leaf_weight.size)
    in_a, in_b = _product_coefficients(log_w, a, b)
    coef = leaf_weight[rows] * np.where(present, in_a[rows], -in_b[rows])
    return np.bincount(feats, weights=coef, minlength=n).astype(np.float64)  # int if empty


def _weighted_trees(model: Any) -> list[tuple[Any, float]]:
    """The fitted ``tree_`` objects of ``model`` and their weights in its prediction."""
    if not isinstance(model, (DecisionTreeRegressor, RandomForestRegressor,
                              ExtraTreesRegressor, GradientBoostingRegressor)):
        raise TypeError(f"model must be a fitted {_SUPPORTED}. "
                        f"Got {type(model).__name__} instead.")
    check_is_fitted(model)
    outputs = getattr(model, "n_outputs_", 1)
    if outputs != 1:
        raise ValueError(f"model must have a single output. Got n_outputs_={outputs} "
                         "instead; value each output with its own model.")
    if isinstance(model, DecisionTreeRegressor):  # ExtraTreeRegressor is one too
        return [(model.tree_, 1.0)]
    if isinstance(model, (RandomForestRegressor, ExtraTreesRegressor)):
        return [(est.tree_, 1.0 / len(model.estimators_)) for est in model.estimators_]
    if model.loss not in _GB_LOSSES:
        raise ValueError(f"The 'loss' of GradientBoostingRegressor must be one of "
                         f"{_GB_LOSSES}. Got {model.loss!r} instead.")
    if not (model.init is None or model.init == "zero"
            or isinstance(model.init, DummyRegressor)):
        raise ValueError("The 'init' of GradientBoostingRegressor must be None, 'zero' or "
                         "a DummyRegressor (a constant) for the model to be a sum of trees. "
                         f"Got {type(model.init).__name__} instead.")
    rate = float(model.learning_rate)
    return [(est.tree_, rate) for est in model.estimators_[:, 0]]


def _log_weights(mass: Any, n: int) -> np.ndarray:
    """``log w(s) = log m(s) - log C(n-1, s)`` for s = 0..n-1, after checking ``mass``."""
    mass = np.asarray(mass, dtype=np.float64)
    if mass.shape != (n,):
        raise ValueError(f"mass must be a 1-D array of length n_features_in_={n} (one "
                         f"entry per coalition size 0..{n - 1}). Got shape {mass.shape} "
                         "instead.")
    if not np.all(np.isfinite(mass)) or np.any(mass < 0):
        raise ValueError(f"mass must be finite and >= 0. Got min(mass)={mass.min()!r} "
                         "instead.")
    with np.errstate(divide="ignore"):
        return np.log(mass) - log_binom(n - 1, np.arange(n))


def _tree_edges(tree: Any, offset: int) -> tuple[np.ndarray, ...]:
    """Per node of ``tree``: its parent (global index), feature and side, and whether
    it is unreachable from its parent (sides: +1 present, -1 absent, 0 no constraint).
    """
    left, right = tree.children_left, tree.children_right
    parent = np.full(tree.node_count, -1, dtype=np.intp)
    feature = np.zeros(tree.node_count, dtype=np.intp)
    side = np.zeros(tree.node_count, dtype=np.int8)
    dead = np.zeros(tree.node_count, dtype=bool)
    inner = np.flatnonzero(left >= 0)
    thr = tree.threshold[inner]
    split = (thr >= 0) & (thr < 1)  # 0 goes left (z <= thr), 1 goes right
    for child, sign, empty in ((left[inner], -1, thr < 0), (right[inner], 1, thr >= 1)):
        parent[child] = inner + offset
        feature[child] = tree.feature[inner]
        side[child] = np.where(split, sign, 0)
        dead[child] = empty
    return parent, feature, side, dead


def _leaf_constraints(trees: list[tuple[Any, float]], n: int) -> tuple[np.ndarray, ...]:
    """Leaves of all trees as weights and ``(leaf, player, present)`` constraints.

    The paths are walked from all leaves to their roots at once; repeated
    constraints count once, and the leaves of contradictory or unreachable paths
    keep no constraint, so that they contribute nothing.
    """
    edges, leaves, weights, offset = [], [], [], 0
    for tree, weight in trees:
        edges.append(_tree_edges(tree, offset))
        is_leaf = tree.children_left < 0
        leaves.append(np.flatnonzero(is_leaf) + offset)
        weights.append(weight * tree.value[is_leaf, 0, 0])
        offset += tree.node_count
    parent, feature, side, dead = (np.concatenate(col) for col in zip(*edges))
    cur = np.concatenate(leaves)
    idx = np.arange(cur.size)
    unreachable = np.zeros(cur.size, dtype=bool)
    found = []
    while cur.size:
        unreachable[idx[dead[cur]]] = True
        has = side[cur] != 0
        found.append((idx[has] * n + feature[cur[has]]) * 2 + (side[cur[has]] > 0))
        cur = parent[cur]
        idx, cur = idx[cur >= 0], cur[cur >= 0]
    key = np.concatenate(found)
    key.sort()
    first = np.ones(key.size, dtype=bool)
    first[1:] = key[1:] != key[:-1]  # a repeated constraint counts once
    key = key[first]
    pair = key // 2
    unreachable[pair[1:][pair[1:] == pair[:-1]] // n] = True  # present and absent
    key = key[~unreachable[pair // n]]
    leaf_weight = np.concatenate(weights)
    return leaf_weight, key // (2 * n), (key // 2) % n, key % 2 == 1


def _product_coefficients(log_w: np.ndarray, a: np.ndarray,
                          b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per leaf, the semivalue of a player of ``A`` and minus that of one of ``B``.

    Computed once per distinct ``(a, b)``: ``sum_j C(r, j) w(a - 1 + j)`` and
    ``sum_j C(r, j) w(a + j)``, ``r = n - a - b`` (0 where the set is empty).
    """
    n = log_w.size
    codes, inverse = np.unique(a * (n + 1) + b, return_inverse=True)
    in_a, in_b = np.zeros(codes.size), np.zeros(codes.size)
    for k, code in enumerate(codes.tolist()):
        size_a, size_b = divmod(code, n + 1)
        r = n - size_a - size_b
        if size_a > 0:
            in_a[k] = _binomial_sum(log_w, size_a - 1, r)
        if size_b > 0:
            in_b[k] = _binomial_sum(log_w, size_a, r)
    return in_a[inverse], in_b[inverse]


def _binomial_sum(log_w: np.ndarray, start: int, r: int) -> float:
    """``sum_{j=0..r} C(r, j) w(start + j)``, summed in log space."""
    j = np.arange(r + 1)
    return float(np.exp(logsumexp(log_binom(r, j) + log_w[start + j])))
