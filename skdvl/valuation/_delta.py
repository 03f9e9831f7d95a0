"""Delta Shapley: Shapley's average over coalition sizes, restricted to a range of sizes.

Watson, Kujawa, Andreeva, Yang, Elahi & Sarkar (2023), "Accelerated Shapley
value approximation for data evaluation", arXiv 2311.05346, define the
delta-Shapley value of row ``i`` as the average over the sizes ``k`` in
``[l, u]`` of the mean marginal contribution of ``i`` to the coalitions of
``k`` other rows:

    phi_i = 1 / (u - l + 1) * sum_{k=l}^{u} mean_{T of size k, i not in T} [u(T + i) - u(T)].

They show that, for models trained by stochastic gradient descent, the
marginal contributions to large coalitions are small, so that small ones
carry most of the value. As a semivalue (:mod:`skdvl.valuation._semivalues`)
this is the mass ``m(k) = 1 / (u - l + 1)`` on the sizes ``l..u`` and 0
elsewhere; with the full range ``[0, n - 1]`` it is Shapley's ``1 / n``.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any

import numpy as np

from skdvl._sklearn_compat import Interval
from skdvl.result import ValuationResult
from skdvl.sampling import BaseSampler, ExactSampler, StratifiedSampler
from skdvl.valuation._base import COMMON_CONSTRAINTS as _COMMON_CONSTRAINTS
from skdvl.valuation._base import LEARNING_CONSTRAINTS as _LEARNING_CONSTRAINTS
from skdvl.valuation._base import SAMPLING_CONSTRAINTS as _SAMPLING_CONSTRAINTS
from skdvl.valuation._base import _GameValuer
from skdvl.valuation._semivalues import _doc, _store_params

__all__ = ["DeltaShapleyValuer", "delta_mass"]


def _size_range(n: int, lower_bound: int, upper_bound: int | None) -> tuple[int, int]:
    """The sizes ``[l, u]`` of a game of ``n`` players (``u`` None or past ``n - 1``: ``n - 1``)."""
    upper = n - 1 if upper_bound is None else min(int(upper_bound), n - 1)
    lower = int(lower_bound)
    if lower > upper:
        raise ValueError(
            f"lower_bound={lower_bound} must be <= upper_bound and below the number of "
            f"players: a game of {n} players has coalitions of the others of sizes 0..{n - 1}"
            f"{'' if upper_bound is None else f' (upper_bound={upper_bound})'}. Lower "
            "lower_bound.")
    return lower, upper


def delta_mass(n: int, lower_bound: int = 0, upper_bound: int | None = None) -> np.ndarray:
    """Delta Shapley's mass on coalition sizes ``0..n-1``: ``1 / (u - l + 1)`` on ``[l, u]``.

    Watson et al. (2023), the definition of delta-Shapley: the mean marginal
    contribution at each size ``k`` in ``[l, u]``, averaged uniformly over the
    sizes. ``l = 0, u = n - 1`` is Shapley's mass ``1 / n``; clipped, the
    values are ``n / (u - l + 1)`` times the part of the Shapley value that the
    sizes ``l..u`` contribute.

    Parameters
    ----------
    n : int
        Number of players.
    lower_bound : int, default=0
        Smallest size ``l`` of the coalition of the others.
    upper_bound : int or None, default=None
        Largest size ``u``; None (or above ``n - 1``) means ``n - 1``.

    Returns
    -------
    mass : ndarray of shape (n,)

    Examples
    --------
    >>> from skdvl.valuation._delta import delta_mass
    >>> delta_mass(5, 1, 2)
    array([0. , 0.5, 0.5, 0. , 0. ])
    """
    lower, upper = _size_range(n, lower_bound, upper_bound)
    mass = np.zeros(n)
    mass[lower:upper + 1] = 1.0 / (upper - lower + 1)
    return mass


def _clipped_sizes(n: int, lower: int, upper: int) -> np.ndarray:
    """Sizes of the drawn coalition ``S``: uniform on ``l..u+1`` (of ``0..n``).

    A player toggled in ``S`` joins ``S`` minus itself (size ``|S| - 1``) or
    ``S`` (size ``|S|``); with ``|S|`` uniform on ``l..u+1`` the coalition it
    joins has each size ``k`` in ``[l, u]`` with the same probability
    ``(n + 1) / (n (u - l + 2))``, so every marginal weighs the same. On
    ``[0, n - 1]`` this is the stratified sampler's "uniform" strategy.
    """
    q = np.zeros(n + 1)
    q[lower:upper + 2] = 1.0
    return q


@_doc
class DeltaShapleyValuer(_GameValuer):
    """Delta Shapley values (Watson et al., 2023): Shapley over a range of coalition sizes.

    The value of row ``i`` is the average, over the sizes ``k`` from
    ``lower_bound`` to ``upper_bound``, of its mean marginal contribution to
    the coalitions of ``k`` other rows. With the full range (``lower_bound=0``,
    ``upper_bound=None``) it is the Shapley value. Clipped, it is the part of
    the Shapley value that those sizes contribute, times ``n / (u - l + 1)``:
    Shapley values "up to a constant" only in that sense, and only if the
    clipped sizes' marginal contributions are negligible. Watson et al. show
    that for models trained by stochastic gradient descent the marginal
    contributions to large coalitions shrink with their size, so that small
    coalitions, which are also the cheapest to fit, carry the value.

    Coalitions are drawn by the stratified sampler
    (:class:`~skdvl.sampling.StratifiedSampler`) with sizes in the range, each
    size equally often; ``sampler="exact"`` enumerates them.

    Parameters
    ----------
    lower_bound : int, default=0
        Smallest size of the coalition of the other rows, >= 0.
    upper_bound : int or None, default=None
        Largest size; None means ``n - 1`` (all rows but one). In
        cross-valuation a bound above a fold's ``n - 1`` is clipped to it.%(params)s

    Attributes
    ----------%(attrs)s

    Notes
    -----
    Watson et al. allocate the samples of each size, and choose the range,
    from constants of the learning problem (Lipschitz and smoothness
    constants of the loss, the learning rate, the number of SGD steps), which
    are rarely known in practice. Here the range is a parameter and the sizes
    are drawn uniformly within it (the sampler's size strategy is uniform on
    ``lower_bound..upper_bound + 1``); pass a
    :class:`~skdvl.sampling.StratifiedSampler` (or any sampler of
    :class:`~skdvl.ShapleyValuer`) as ``sampler`` for another allocation: the
    engine's importance weights keep it unbiased.

    References
    ----------
    Watson, L., Kujawa, Z., Andreeva, R., Yang, H.-T., Elahi, T. and Sarkar,
    R. (2023). Accelerated Shapley value approximation for data evaluation.
    arXiv 2311.05346.

    Examples
    --------
    >>> from skdvl.games import SymmetricVotingGame
    >>> from skdvl.valuation._delta import DeltaShapleyValuer
    >>> game = SymmetricVotingGame(n_players=5)
    >>> DeltaShapleyValuer(utility=game, sampler="exact").fit().values_
    array([0.2, 0.2, 0.2, 0.2, 0.2])
    >>> DeltaShapleyValuer(upper_bound=2, utility=game, sampler="exact").fit().values_
    array([0.33333333, 0.33333333, 0.33333333, 0.33333333, 0.33333333])
    """

    _algorithm = "delta_shapley"
    _samplers = {"stratified": StratifiedSampler, "exact": ExactSampler}
    _parameter_constraints = {
        **_COMMON_CONSTRAINTS, **_SAMPLING_CONSTRAINTS, **_LEARNING_CONSTRAINTS,
        "lower_bound": [Interval(Integral, 0, None, closed="left")],
        "upper_bound": [Interval(Integral, 0, None, closed="left"), None],
        "sampler": [str, BaseSampler],
    }

    def __init__(
        self, estimator: Any = None, *, lower_bound: int = 0, upper_bound: int | None = None,
        scoring: Any = None, utility: Any = None,
        sampler: Any = "stratified", max_updates: int | str | None = "auto",
        stderr_tol: float | None = None, max_time: float | None = None, stopping: Any = None,
        task: str = "auto", cv: Any = 5, default_score: float = 0.0,
        error_score: Any = None, batch_fit: Any = "auto", device: Any = None,
        utility_model: Any = None, training_budget: int | None = None,
        n_jobs: int | None = None, random_state: Any = None, verbose: int = 0,
        warm_start: bool = False,
    ) -> None:
        _store_params(self, locals())

    def _mass(self, n: int) -> np.ndarray:
        return delta_mass(n, self.lower_bound, self.upper_bound)

    def _resolve_sampler(self, n: int | None = None, cheap_prefixes: bool = False) -> BaseSampler:
        if self.upper_bound is not None and self.lower_bound > self.upper_bound:
            raise ValueError(
                f"lower_bound={self.lower_bound} must be <= upper_bound={self.upper_bound}. "
                "Swap them, or lower lower_bound.")
        return super()._resolve_sampler()

    def _value_game(self, utility: Any, sampler: BaseSampler, g: int,
                    state: Any) -> tuple[ValuationResult, Any]:
        """The named stratified sampler gets this game's size range (``n`` differs by fold)."""
        if isinstance(self.sampler, str) and self.sampler == "stratified":
            lower, upper = _size_range(int(utility.n_players), self.lower_bound,
                                       self.upper_bound)
            sizes = _clipped_sizes(int(utility.n_players), lower, upper)
            sampler = StratifiedSampler(size_strategy=sizes)
        return super()._value_game(utility, sampler, g, state)
