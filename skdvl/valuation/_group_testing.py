"""The group testing Shapley valuer: a guaranteed budget of group tests, then an LP.

Jia et al. (2019), "Towards efficient data valuation based on the Shapley
value", AISTATS, Alg. 1, with the corrected sample bound of Wang & Jia (2023).
The sampler, its statistics and the LP are in :mod:`skdvl.sampling._group_testing`;
this module holds the estimator: parameters, the budget the guarantee needs and
the warning before a large one.
"""

from __future__ import annotations

import warnings
from numbers import Real
from typing import Any

import numpy as np

from skdvl._sklearn_compat import Interval, StrOptions
from skdvl.sampling import BaseSampler
from skdvl.sampling._group_testing import GroupTestingSampler, group_testing_samples
from skdvl.stopping import MaxSamples, Progress, Status, StoppingCriterion
from skdvl.valuation._base import COMMON_CONSTRAINTS as _COMMON_CONSTRAINTS
from skdvl.valuation._base import SAMPLING_CONSTRAINTS as _SAMPLING_CONSTRAINTS
from skdvl.valuation._base import _GameValuer
from skdvl.valuation._semivalues import _SHARED_ATTRS, _store_params, shapley_mass

__all__ = ["GroupTestingShapleyValuer", "GroupTestingSampler", "group_testing_samples"]


class _GuaranteeSamples(MaxSamples):
    """Stop, converged, once the samples of the ``(epsilon, delta)`` guarantee are drawn."""

    def _check(self, progress: Progress) -> Status:
        done = progress.n_samples >= self.n_samples
        return Status.CONVERGED if done else Status.PENDING


# --------------------------------------------------------------------------- the valuer
#: a guarantee that needs more coalitions than this warns before sampling
_LARGE_BUDGET = 100_000


class GroupTestingShapleyValuer(_GameValuer):
    """Shapley values by group testing (Jia et al., 2019), with an ``(epsilon, delta)`` guarantee.

    Random coalitions, with sizes weighed towards the smallest and the
    largest, give estimates of the differences ``s_i - s_j`` of the Shapley
    values of all pairs of rows at once; the values are then a solution of a
    linear feasibility problem (the differences within
    ``epsilon / (2 sqrt(n))`` of their estimates, the sum equal to
    ``u(N) - u(empty)``), solved by HiGHS. With the number of coalitions of
    the corrected bound of Wang & Jia (2023) (:func:`group_testing_samples`,
    the default budget), the values are within ``epsilon`` of the Shapley
    values in the Euclidean norm with probability at least ``1 - delta``.

    That bound grows as ``n log(n)^2 / epsilon^2``: about 2.7e4 coalitions
    for 10 rows at ``epsilon = 0.5``, 2e7 for 100 rows at ``epsilon = 0.1``,
    each one model fit. Give an explicit ``max_updates`` (coalitions) to spend
    less, without the guarantee.

    Parameters
    ----------
    estimator : estimator object, default=None
        As for :class:`~skdvl.ShapleyValuer`.
    epsilon : float, default=0.1
        Euclidean error of the values the guarantee is for; the tolerance of
        the feasibility problem is ``epsilon / (2 sqrt(n))``.
    delta : float, default=0.05
        Probability that the error exceeds ``epsilon`` (with the default
        budget).
    utility_range : float, default=1.0
        ``r`` in the bound: the largest ``|u(S) - c|``, the utilities being
        centred at ``c = (u(N) + u(empty)) / 2``; 1 is safe for scores in
        [0, 1] such as accuracy. Used only by the default budget.
    solution : {"lp", "center"}, default="lp"
        Which point of the feasible set to report: the one HiGHS finds (the
        paper's), or its centre, the least-squares solution of the pairwise
        system (always feasible, so the guarantee holds for it as well, and
        usually closer to the Shapley values: a solution of the LP may lie
        anywhere in the set, up to ``epsilon / sqrt(n)`` from the centre in
        each coordinate). See :class:`GroupTestingSampler`.
    scoring, utility, task, cv, default_score, error_score, batch_fit, device
        As for :class:`~skdvl.ShapleyValuer`.
    n_jobs, random_state, verbose, warm_start
        As for :class:`~skdvl.ShapleyValuer`.
    max_updates : int, "auto" or None, default="auto"
        Coalitions to draw per game: "auto" is the guarantee's
        :func:`group_testing_samples` (unless ``max_time`` or ``stopping`` is
        given), an int that many coalitions, None no bound on coalitions.
    stderr_tol, max_time, stopping
        Further criteria, OR-ed with ``max_updates`` (see
        :class:`~skdvl.ShapleyValuer`). ``stderr_tol`` applies to ``stderr_``
        (see Notes).

    Attributes
    ----------%(attrs)s
    n_samples_bound_ : int
        Coalitions the ``(epsilon, delta)`` guarantee needs for the largest
        game (all rows, or the training rows of a cross-valuation fold).

    Notes
    -----
    ``converged_`` is True when the default budget was drawn (the guarantee
    holds). Departures from the paper (see :class:`GroupTestingSampler`):
    utilities centred at ``(u(N) + u(empty)) / 2``, which keeps the estimates
    unbiased and lowers their variance; ``sum s = u(N) - u(empty)``; and
    ``stderr_`` is the standard error of the centre of the feasible set, from
    which the reported solution may differ by up to ``epsilon / sqrt(n)`` per
    row. The pairwise estimates are differences of per-row means, so the
    feasibility problem always has that centre as a solution: a failed solve
    is numerical, and raises ``RuntimeError`` with HiGHS's message.

    References
    ----------
    Jia, R., Dao, D., Wang, B., Hubis, F. A., Hynes, N., Gürel, N. M., Li, B.,
    Zhang, C., Song, D. and Spanos, C. J. (2019). Towards efficient data
    valuation based on the Shapley value. *AISTATS*, PMLR 89, 1167-1176.

    Wang, J. T. and Jia, R. (2023). A note on "Towards efficient data valuation
    based on the Shapley value". arXiv 2302.11431.

    Examples
    --------
    >>> from skdvl.games import SymmetricVotingGame
    >>> from skdvl.valuation._group_testing import GroupTestingShapleyValuer
    >>> game = SymmetricVotingGame(n_players=6)
    >>> v = GroupTestingShapleyValuer(utility=game, epsilon=0.5, random_state=0).fit()
    >>> v.n_samples_bound_, v.converged_
    (11407, True)
    >>> bool(((v.values_ - game.shapley_values()) ** 2).sum() ** 0.5 < 0.5)
    True
    """

    _algorithm = "group_testing_shapley"
    _parameter_constraints = {
        **_COMMON_CONSTRAINTS, **_SAMPLING_CONSTRAINTS,
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "delta": [Interval(Real, 0, 1, closed="neither")],
        "utility_range": [Interval(Real, 0, None, closed="neither")],
        "solution": [StrOptions({"lp", "center"})],
    }

    def __init__(
        self, estimator: Any = None, *, epsilon: float = 0.1, delta: float = 0.05,
        utility_range: float = 1.0, solution: str = "lp", scoring: Any = None,
        utility: Any = None,
        max_updates: int | str | None = "auto", stderr_tol: float | None = None,
        max_time: float | None = None, stopping: Any = None, task: str = "auto",
        cv: Any = 5, default_score: float = 0.0, error_score: Any = None,
        batch_fit: Any = "auto", device: Any = None, n_jobs: int | None = None,
        random_state: Any = None, verbose: int = 0, warm_start: bool = False,
    ) -> None:
        _store_params(self, locals())

    def _mass(self, n: int) -> np.ndarray:
        return shapley_mass(n)

    def _resolve_sampler(self, n: int | None = None, cheap_prefixes: bool = False) -> BaseSampler:
        return GroupTestingSampler(epsilon=float(self.epsilon), solution=self.solution)

    def _update_budget(self, sampler: BaseSampler | None, n: int) -> list[StoppingCriterion]:
        """``max_updates`` counts coalitions exactly; "auto" is the guarantee's number."""
        explicit = self.stopping is not None or self.max_time is not None
        if self.max_updates == "auto" and not explicit:
            bound = self._bound(max(n, 2))
            if bound > _LARGE_BUDGET:
                warnings.warn(
                    f"max_updates='auto' draws the {bound:,} coalitions (utility "
                    f"evaluations) that the guarantee needs for epsilon={self.epsilon}, "
                    f"delta={self.delta} and {n} players. Pass a larger epsilon, or "
                    "max_updates=<coalitions> to bound the cost (the guarantee then "
                    "no longer holds).", UserWarning, stacklevel=5)
            return [_GuaranteeSamples(bound)]
        if self.max_updates not in ("auto", None):
            return [MaxSamples(int(self.max_updates))]
        return []

    def _bound(self, n: int) -> int:
        return group_testing_samples(n, float(self.epsilon), float(self.delta),
                                     float(self.utility_range))

    def fit(self, X: Any = None, y: Any = None, *, groups: Any = None, X_val: Any = None,
            y_val: Any = None) -> Any:
        """Value the training rows (see :meth:`skdvl.ShapleyValuer.fit`).

        Parameters
        ----------
        X : array-like, sparse matrix or DataFrame of shape (n_samples, n_features)
            Training data; each row is a player. None when ``utility`` is given.
        y : array-like of shape (n_samples,)
            Training targets.
        groups : array-like of shape (n_samples,), default=None
            A label per row: the players are then the groups (see
            :meth:`skdvl.ShapleyValuer.fit`).
        X_val, y_val : array-like, default=None
            Validation data; without it, ``cv``-fold cross-valuation.

        Returns
        -------
        self : object
            The fitted valuer.
        """
        super().fit(X, y, groups=groups, X_val=X_val, y_val=y_val)
        largest = max(len(players) for players in self._players_)
        self.n_samples_bound_ = self._bound(max(largest, 2))
        return self


GroupTestingShapleyValuer.__doc__ = (GroupTestingShapleyValuer.__doc__ or "").replace(
    "%(attrs)s", _SHARED_ATTRS)
