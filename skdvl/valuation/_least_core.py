"""Least core values: the stablest split of the grand coalition's utility.

Yan & Procaccia (2021), "If you like Shapley then you'll love the core", AAAI
35(6), 5751-5759. A split ``x`` of ``u(N)`` (``sum(x) = u(N)``) is in the core
when no coalition gains by leaving, ``x(S) >= u(S)`` for every ``S``; the core
is often empty, and the *least core* relaxes every constraint by the smallest
subsidy ``e`` that makes it non-empty::

    minimise e  subject to  x(S) + e >= u(S) for every coalition S,  x(N) = u(N)

(their Eq. (2); ``S`` ranges over the non-empty proper coalitions, as in
Maschler, Peleg & Shapley, 1979). The least core is a polytope; the
*egalitarian* least core picks its point of minimal Euclidean norm (their
Section 3). The Monte Carlo least core (their Section 4) keeps only the
constraints of sampled coalitions.

The math is in pure functions on arrays, in :mod:`skdvl.valuation._least_core_lp`:
:func:`least_core_lp` (HiGHS, through :func:`scipy.optimize.linprog`) and
:func:`egalitarian_least_core` (least-distance programming through
:func:`scipy.optimize.nnls`); :class:`LeastCoreValuer` is the estimator shell,
whose coalitions are evaluated by the engine of :mod:`skdvl.sampling._engine`
like every other valuer's.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from numbers import Integral
from typing import Any

import numpy as np
from joblib import Parallel, delayed, effective_n_jobs

from skdvl._coalitions import masks_from_codes
from skdvl._sklearn_compat import Interval, StrOptions
from skdvl.result import ValuationResult
from skdvl.sampling import ExactSampler
from skdvl.sampling._base import TableState
from skdvl.sampling._engine import evaluate_coalitions
from skdvl.stopping import Status
from skdvl.valuation._base import COMMON_CONSTRAINTS as _COMMON_CONSTRAINTS
from skdvl.valuation._base import DEFAULT_MAX_UPDATES, _GameValuer
from skdvl.valuation._least_core_lp import (
    egalitarian_least_core,
    least_core,
    least_core_lp,
)

__all__ = ["LeastCoreValuer", "least_core_lp", "egalitarian_least_core", "least_core"]

#: The largest game ``sampler="exact"`` enumerates: its LP has 2^n - 2 constraints
#: (n = 16: 65,534, about a second of HiGHS). ``sampler=ExactSampler(max_players=k)``
#: insists on more.
EXACT_MAX_PLAYERS = 16
#: Coalitions drawn per seeded block (Monte Carlo).
_BLOCK = 256


# --------------------------------------------------------------------------- sampling
def _proper_coalitions(entropy: int, game: int, n: int, m: int) -> np.ndarray:
    """``m`` coalitions uniform among the ``2^n - 2`` non-empty proper ones (n >= 2).

    Block ``b`` of ``_BLOCK`` draws comes from ``SeedSequence(entropy,
    spawn_key=(game, b))``, the engine's seeding: the first ``m`` draws are the
    same for any larger ``m`` and any ``n_jobs``. Each player is in with
    probability 1/2 (uniform over the powerset); the empty and the grand
    coalition, which have no constraint, are drawn again.
    """
    out = []
    for block in range(-(-m // _BLOCK)):
        rng = np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(game, block)))
        masks = rng.random((_BLOCK, n)) < 0.5
        while True:
            size = masks.sum(axis=1)
            bad = np.flatnonzero((size == 0) | (size == n))
            if bad.size == 0:
                break
            masks[bad] = rng.random((bad.size, n)) < 0.5
        out.append(masks)
    return np.concatenate(out)[:m] if out else np.zeros((0, n), dtype=bool)


@dataclass
class _LeastCoreState(TableState):
    """The evaluated coalitions of one game, and what the fit made of them.

    Exact: the bit codes ``0 .. 2^n - 1`` (``masks`` is None). Monte Carlo:
    ``masks`` holds the distinct coalitions in the order first drawn, after the
    grand coalition (row 0), and ``draws`` the row of each draw.
    """

    masks: np.ndarray | None = None
    draws: np.ndarray | None = None
    subsidy: float = np.nan


def _extend_draws(state: _LeastCoreState | None, entropy: int, game: int, n: int,
                  m: int) -> _LeastCoreState:
    """The state with ``m`` draws (more are never dropped); new coalitions appended."""
    if state is None:
        full = np.ones((1, n), dtype=bool)
        state = _LeastCoreState(n, 1, np.empty(0), masks=full,
                                draws=np.empty(0, dtype=np.intp))
    assert state.masks is not None and state.draws is not None
    have = state.draws.shape[0]
    if m <= have:
        return state
    new = _proper_coalitions(entropy, game, n, m)[have:]
    index = {key.tobytes(): i for i, key in enumerate(np.packbits(state.masks, axis=1))}
    rows = np.empty(new.shape[0], dtype=np.intp)
    added: list[np.ndarray] = []
    for k, key in enumerate(np.packbits(new, axis=1)):
        i = index.setdefault(key.tobytes(), len(index))
        if i == state.masks.shape[0] + len(added):  # first seen
            added.append(new[k])
        rows[k] = i
    if added:
        state.masks = np.concatenate([state.masks, np.asarray(added)])
    state.draws = np.concatenate([state.draws, rows])
    state.total = state.masks.shape[0]
    return state


def _bootstrap_values(masks: np.ndarray, u: np.ndarray, u_full: float, draws: np.ndarray,
                      seeds: list[np.random.SeedSequence], non_negative: bool,
                      options: dict[str, Any] | None,
                      binding: np.ndarray | None = None) -> list[np.ndarray | None]:
    """Egalitarian least cores of resampled draws (None where a replicate is unbounded).

    ``binding`` marks the rows binding at the full fit's optimum: each replicate's
    constraint generation starts from those it drew, which usually spares it a round.
    """
    out: list[np.ndarray | None] = []
    for seed in seeds:
        pick = np.unique(np.random.default_rng(seed).choice(draws, size=draws.size))
        try:
            x, _ = least_core(masks[pick], u[pick], u_full,
                              non_negative_subsidy=non_negative, solver_options=options,
                              start=None if binding is None else binding[pick])
        except RuntimeError:
            x = None
        out.append(x)
    return out


# --------------------------------------------------------------------------- the valuer
class LeastCoreValuer(_GameValuer):
    """Egalitarian least core values of training rows (Yan & Procaccia, 2021).

    The least core splits ``u(N)``, the score of the model fitted on all rows,
    so that every coalition ``S`` of rows is paid at least ``u(S) - e`` with
    the smallest possible subsidy ``e``; of the splits that do, the
    egalitarian least core is the one of minimal Euclidean norm. Yan &
    Procaccia, "If you like Shapley then you'll love the core", AAAI 2021,
    propose it as a data value that no group of rows can object to, and show
    that constraints on a few sampled coalitions give a split that most other
    coalitions accept too (their Theorem 1).

    The subsidy LP is solved by HiGHS (:func:`scipy.optimize.linprog`), the
    minimal-norm split as a least-distance programme by
    :func:`scipy.optimize.nnls` (Lawson & Hanson's "LDP via NNLS": exact, no
    tolerance to tune; see :func:`egalitarian_least_core`). Coalitions are
    evaluated by the engine shared by every valuer: batched and cached fits,
    ``n_jobs``, progress bars, Ctrl-C.

    Parameters
    ----------
    estimator : estimator object, default=None
        The model whose clones are fitted on coalitions of rows. None means
        ``LogisticRegression(max_iter=1000)`` for classification and
        ``LinearRegression()`` for regression (see ``task``).
    scoring : str or callable, default=None
        Scorer for the validation data; None means ``estimator.score``.
    utility : object, default=None
        A custom utility (``n_players`` and ``__call__(subset)``, e.g. a game
        of :mod:`skdvl.games`); then ``fit()`` takes no data.
    sampler : {"montecarlo", "exact"} or ExactSampler, default="montecarlo"
        "montecarlo": constraints of ``max_updates`` coalitions drawn uniformly
        from the powerset (each row in with probability 1/2; the empty and the
        grand coalition drawn again), as Yan & Procaccia's Theorem 1 assumes
        (uniform over the ``2^n`` coalitions is their distribution of choice: a
        sampled split then fails only a small *fraction* of coalitions).
        Duplicate draws are evaluated once and give one constraint.
        "exact": all ``2^n - 2`` constraints, refused for more than 16
        players; ``ExactSampler(max_players=k)`` insists on up to ``k``.
    max_updates : int or "auto", default="auto"
        Monte Carlo budget: coalitions drawn (one utility evaluation each,
        fewer with duplicates), the grand coalition besides. "auto" means
        ``100 * n``, the budget of the other valuers' coalition samplers.
        Ignored by "exact".
    non_negative_subsidy : bool, default=False
        Constrain ``e >= 0``. With False a game with a non-empty core gets a
        negative subsidy (every coalition is paid more than its utility).
    solver_options : dict, default=None
        Options of ``scipy.optimize.linprog(method="highs")`` for the subsidy
        LP, e.g. ``{"time_limit": 60, "presolve": False}`` (see
        ``scipy.optimize.show_options("linprog", "highs")``), over the
        defaults ``primal_feasibility_tolerance`` and
        ``dual_feasibility_tolerance`` of 1e-10; ``"method": "highs-ipm"`` or
        ``"highs-ds"`` picks HiGHS's interior-point or dual simplex solver. An
        option HiGHS does not know raises ``ValueError``.
    n_bootstrap : int, default=10
        Monte Carlo standard errors: the least core is solved again on this
        many resamples (with replacement) of the drawn coalitions; ``stderr_``
        is the standard deviation of the replicates. No utility is evaluated
        again, but each replicate costs one LP and one NNLS. 0 skips it
        (``stderr_`` is then NaN). Ignored by "exact".
    task : {"auto", "classification", "regression"}, default="auto"
        What ``y`` is, as for :class:`~skdvl.ShapleyValuer`.
    cv : int, cross-validation generator or iterable, default=5
        Folds of the cross-valuation used when ``fit`` gets no ``X_val``:
        each fold is the validation set of a game over the other rows, and a
        row's value is the mean of its least core values in the ``cv - 1``
        games it plays in.
    default_score : float, default=0.0
        Utility of the empty coalition and of degenerate ones.
    error_score : "raise", float or None, default=None
        Utility of a coalition whose fit fails; None means ``default_score``.
    batch_fit : "auto", bool, default="auto"
        Fit many coalitions in one vectorised solve for linear models (see
        :class:`~skdvl.ModelUtility`).
    n_jobs : int, default=None
        Parallel workers for the utility evaluations and the bootstrap.
        Values do not depend on it.
    random_state : int, RandomState instance or None, default=None
        Seeds the coalitions drawn and the bootstrap; one seed gives identical
        values for any ``n_jobs``.
    verbose : int, default=0
        Show a progress bar of the evaluations when > 0.
    warm_start : bool, default=False
        Continue from the previous fit: a larger ``max_updates`` draws only the
        new coalitions (the first draws are the same for any budget), and an
        interrupted fit continues. Only valid with the same data and
        parameters otherwise.

    Attributes
    ----------
    values_ : ndarray or Series of shape (n_samples,)
        The egalitarian least core (a Series on the index of a DataFrame ``X``).
    stderr_ : ndarray or Series of shape (n_samples,)
        0 for exact values; for Monte Carlo values the bootstrap standard
        error (NaN with ``n_bootstrap=0``). The least core is the solution of
        an LP, not a Monte Carlo mean: the bootstrap is a rough measure of how
        much the sampled constraints move it (an LP optimum is not a smooth
        statistic, and a resample holds ~63 % of the distinct coalitions).
    counts_ : ndarray or Series of shape (n_samples,)
        Number of (distinct) constraints whose coalition holds the row.
    result_ : ValuationResult
        All of the above in one object.
    subsidy_ : float
        The least core's subsidy ``e`` (with cross-valuation, the mean over
        the fold games). ``values_`` satisfy every constraint with
        ``subsidy_ + 1e-9 * s``, ``s`` the largest |utility| (see
        :func:`least_core`).
    subsidies_ : ndarray of shape (n_games,)
        The subsidy of each game (one without cross-valuation).
    n_utility_evaluations_ : int
        Utility evaluations done (model fits, for model utilities).
    converged_ : bool
        True for exact values, False for Monte Carlo ones (a budget stopped).
    n_players_ : int
        Number of players (training rows).
    n_features_in_ : int
        Number of features seen in ``fit`` (data mode only).
    fit_path_ : str
        How the coalitions were fitted ("batched", "per-coalition: ...", or
        "custom utility").

    Notes
    -----
    Without ``non_negative_subsidy`` the constraints are those of the
    non-empty proper coalitions, as in the classical least core (Maschler,
    Peleg & Shapley, 1979); the empty coalition's constraint would force
    ``e >= u(empty)``. With few Monte Carlo samples the sampled constraints may
    not bound ``e`` from below; ``fit`` then raises, with HiGHS's message.
    A one-player game has no constraint: its value is ``u(N)`` and its
    subsidy ``-inf`` (0 with ``non_negative_subsidy``).

    References
    ----------
    Yan, T. and Procaccia, A. D. (2021). If you like Shapley then you'll love
    the core. *AAAI* 35(6), 5751-5759.

    Maschler, M., Peleg, B. and Shapley, L. S. (1979). Geometric properties of
    the kernel, nucleolus, and related solution concepts. *Mathematics of
    Operations Research* 4(4), 303-338.

    Lawson, C. L. and Hanson, R. J. (1974). *Solving least squares problems*,
    Chapter 23. Prentice-Hall.

    Examples
    --------
    >>> from skdvl.games import MinerGame
    >>> from skdvl.valuation._least_core import LeastCoreValuer
    >>> v = LeastCoreValuer(utility=MinerGame(5), sampler="exact").fit()
    >>> v.values_.round(6)
    array([0.4, 0.4, 0.4, 0.4, 0.4])
    >>> round(v.subsidy_, 6)
    0.4
    """

    _algorithm = "least_core"
    _parameter_constraints = {
        **_COMMON_CONSTRAINTS,
        "sampler": [StrOptions({"montecarlo", "exact"}), ExactSampler],
        "max_updates": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "non_negative_subsidy": ["boolean"],
        "solver_options": [dict, None],
        "n_bootstrap": [Interval(Integral, 0, None, closed="left")],
        "random_state": ["random_state"],
        "warm_start": ["boolean"],
    }

    def __init__(
        self, estimator: Any = None, *, scoring: Any = None, utility: Any = None,
        sampler: Any = "montecarlo", max_updates: int | str = "auto",
        non_negative_subsidy: bool = False, solver_options: dict[str, Any] | None = None,
        n_bootstrap: int = 10, task: str = "auto", cv: Any = 5,
        default_score: float = 0.0, error_score: Any = None, batch_fit: Any = "auto",
        n_jobs: int | None = None, random_state: Any = None, verbose: int = 0,
        warm_start: bool = False,
    ) -> None:
        self.estimator = estimator
        self.scoring = scoring
        self.utility = utility
        self.sampler = sampler
        self.max_updates = max_updates
        self.non_negative_subsidy = non_negative_subsidy
        self.solver_options = solver_options
        self.n_bootstrap = n_bootstrap
        self.task = task
        self.cv = cv
        self.default_score = default_score
        self.error_score = error_score
        self.batch_fit = batch_fit
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start

    # -- hooks of the shell -------------------------------------------------
    def _resolve_sampler(self, n: int | None = None, cheap_prefixes: bool = False) -> Any:
        """An ExactSampler (its ``max_players``) for "exact", None for Monte Carlo."""
        if isinstance(self.sampler, ExactSampler):
            return self.sampler
        if self.sampler == "exact":
            return ExactSampler(max_players=EXACT_MAX_PLAYERS)
        if self.n_bootstrap == 1:
            raise ValueError(
                "The 'n_bootstrap' parameter of LeastCoreValuer must be 0 (no standard "
                "errors) or >= 2 (a standard deviation needs two replicates). Got 1 "
                "instead.")
        return None

    def _value_game(self, utility: Any, sampler: Any, g: int,
                    state: Any) -> tuple[ValuationResult, Any]:
        n = int(utility.n_players)
        desc = f"{type(self).__name__} game {g + 1}"
        if sampler is not None:
            if n > sampler.max_players:
                raise ValueError(
                    f"sampler='exact' needs all 2^n coalitions; n = {n} players is more "
                    f"than max_players = {sampler.max_players}. Use sampler='montecarlo', "
                    f"or pass sampler=ExactSampler(max_players={n}) to insist.")
            state = state if state is not None else _LeastCoreState(n, 1 << n, np.empty(0))
        else:
            budget = DEFAULT_MAX_UPDATES * n if self.max_updates == "auto" else self.max_updates
            state = _extend_draws(state, self._entropy_, g, n, int(budget) if n > 1 else 0)
        state = evaluate_coalitions(utility, state, masks=state.masks, n_jobs=self.n_jobs,
                                    verbose=self.verbose, desc=desc)
        if state.done < state.total:  # interrupted: warm_start continues
            return ValuationResult(np.full(n, np.nan), counts=np.zeros(n, np.int64)), state
        if sampler is not None:
            u_all = state.utilities
            masks = masks_from_codes(np.arange(1, (1 << n) - 1, dtype=np.int64), n)
            u, u_full = u_all[1:-1], float(u_all[-1])
        else:
            state.status = Status.BUDGET
            assert state.masks is not None
            masks, u, u_full = state.masks[1:], state.utilities[1:], float(state.utilities[0])
        x, state.subsidy = least_core(masks, u, u_full,
                                      non_negative_subsidy=self.non_negative_subsidy,
                                      solver_options=self.solver_options)
        counts = masks.sum(axis=0).astype(np.int64) if n > 1 else np.ones(1, np.int64)
        if sampler is not None or n == 1:
            stderr = np.zeros(n)
        else:
            assert state.draws is not None
            scale = max(float(np.max(np.abs(u), initial=0.0)), abs(u_full), 1e-300)
            binding = u - masks @ x - state.subsidy >= -1e-6 * scale
            stderr = self._bootstrap(masks, u, u_full, state.draws - 1, g, binding)
        return ValuationResult(x, variances=stderr**2 * counts, counts=counts), state

    def _bootstrap(self, masks: np.ndarray, u: np.ndarray, u_full: float,
                   draws: np.ndarray, g: int, binding: np.ndarray | None = None) -> np.ndarray:
        """Standard deviation of the least core over resamples of the draws."""
        n = masks.shape[1]
        if self.n_bootstrap == 0:
            return np.full(n, np.nan)
        seeds = np.random.SeedSequence(self._entropy_, spawn_key=(g, 1 << 30)).spawn(
            self.n_bootstrap)
        args = (masks, u, u_full, draws)
        kw: dict[str, Any] = dict(non_negative=self.non_negative_subsidy,
                                  options=self.solver_options, binding=binding)
        n_workers = effective_n_jobs(self.n_jobs)
        if n_workers == 1:
            reps = _bootstrap_values(*args, seeds, **kw)
        else:
            chunks = np.array_split(np.arange(len(seeds)), min(n_workers, len(seeds)))
            parts = Parallel(n_jobs=self.n_jobs)(
                delayed(_bootstrap_values)(*args, [seeds[i] for i in c], **kw)
                for c in chunks)
            reps = [x for part in parts for x in part]
        ok = [x for x in reps if x is not None]
        if len(ok) < len(reps):
            warnings.warn(
                f"{len(reps) - len(ok)} of {len(reps)} bootstrap replicates of the least "
                "core were unbounded (too few distinct coalitions in the resample); "
                "stderr_ rests on the others. Raise max_updates.", UserWarning,
                stacklevel=4)
        if len(ok) < 2:
            return np.full(n, np.nan)
        return np.std(np.asarray(ok), axis=0, ddof=1)

    def _finish(self, parts: list[ValuationResult], index: Any, interrupted: bool,
                played: np.ndarray) -> None:
        super()._finish(parts, index, interrupted, played)
        self.subsidies_ = np.array([getattr(s, "subsidy", np.nan) for s in self._states_])
        self.subsidy_ = float(np.mean(self.subsidies_))

    def reweight(self, valuer: Any) -> Any:
        """Not available: least core values are no semivalue, and have no reweighting.

        Raises
        ------
        ValueError
            Always.
        """
        raise ValueError(
            "LeastCoreValuer cannot reweight its samples into semivalues: the least core "
            "is the solution of a linear programme, not a weighted mean of marginal "
            f"contributions. Fit {type(valuer).__name__} itself.")
