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

The math is in pure functions on arrays: :func:`least_core_lp` (HiGHS, through
:func:`scipy.optimize.linprog`) and :func:`egalitarian_least_core` (least-distance
programming through :func:`scipy.optimize.nnls`); :class:`LeastCoreValuer` is
the estimator shell, whose coalitions are evaluated by the engine of
:mod:`skdvl._engine` like every other valuer's.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from numbers import Integral
from typing import Any

import numpy as np
import scipy.sparse as sp
from joblib import Parallel, delayed, effective_n_jobs
from scipy.optimize import OptimizeWarning, linprog, nnls

from skdvl._engine import TableState, evaluate_coalitions
from skdvl.result import ValuationResult
from skdvl.sampling import ExactSampler, _masks_from_codes
from skdvl.stopping import Status
from skdvl.utils._sklearn_compat import Interval, StrOptions
from skdvl.valuation._shell import COMMON_CONSTRAINTS as _COMMON_CONSTRAINTS
from skdvl.valuation._shell import DEFAULT_MAX_UPDATES, _SemivalueValuer

__all__ = ["LeastCoreValuer", "least_core_lp", "egalitarian_least_core", "least_core"]

#: The largest game ``sampler="exact"`` enumerates: its LP has 2^n - 2 constraints
#: (n = 16: 65,534, about a second of HiGHS). ``sampler=ExactSampler(max_players=k)``
#: insists on more.
EXACT_MAX_PLAYERS = 16
#: The least-core vector of minimal norm is sought with the subsidy raised by this
#: much, relative to the largest |utility| (see :func:`least_core`).
TIE_BREAK_SLACK = 1e-9
#: Default HiGHS tolerances: tighter than HiGHS's own 1e-7, so that the reported
#: subsidy satisfies the constraints to ~1e-10 of the utilities' scale.
_DEFAULT_OPTIONS = {"primal_feasibility_tolerance": 1e-10,
                    "dual_feasibility_tolerance": 1e-10}
_METHODS = ("highs", "highs-ds", "highs-ipm")
#: Constraint generation: rows per player in the first relaxed problem, rows added
#: per player and round, and the violation (normalised units) that adds a row.
_FIRST_ROWS, _ADDED_ROWS, _CUT_TOL, _MAX_ROUNDS = 16, 4, 1e-10, 200
#: Coalitions drawn per seeded block (Monte Carlo).
_BLOCK = 256


# --------------------------------------------------------------------------- the math
def _linprog(G: sp.csr_matrix, b: np.ndarray, u_full: float, floor: float | None,
             options: dict[str, Any]) -> tuple[np.ndarray, float]:
    """``min e`` s.t. ``G x + e >= b``, ``sum(x) = u_full``, ``e >= floor``: HiGHS.

    Raises ``RuntimeError`` carrying the solver's message when it finds no optimum,
    and ``ValueError`` for an option HiGHS does not know.
    """
    m, n = G.shape
    options = dict(options)
    method = options.pop("method", "highs")
    c = np.zeros(n + 1)
    c[-1] = 1.0
    A_ub = sp.hstack([-G, -np.ones((m, 1))], format="csr")
    A_eq = sp.csr_matrix(np.r_[np.ones(n), 0.0][None, :])
    bounds = [(None, None)] * n + [(floor, None)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", OptimizeWarning)
        res = linprog(c, A_ub=A_ub, b_ub=-b, A_eq=A_eq, b_eq=[u_full], bounds=bounds,
                      method=method, options=options)
    for w in caught:
        if "nrecognized option" in str(w.message):
            raise ValueError(
                f"The 'solver_options' of LeastCoreValuer are options of "
                f"scipy.optimize.linprog(method={method!r}); HiGHS refused some: "
                f"{w.message}")
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if res.status != 0 or res.x is None:
        hint = {2: " The least-core LP is always feasible: this is a numerical failure.",
                3: " The sampled coalitions do not bound the subsidy from below: sample "
                   "more coalitions (raise max_updates) or set non_negative_subsidy=True."}
        raise RuntimeError(
            f"HiGHS found no least-core subsidy (linprog status {res.status}): "
            f"{res.message}{hint.get(res.status, '')}")
    return res.x[:n], float(res.x[n])


def least_core_lp(
    masks: np.ndarray, utilities: np.ndarray, u_full: float, *,
    non_negative_subsidy: bool = False, solver_options: dict[str, Any] | None = None,
    start: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """The minimal subsidy ``e`` of the least core, and one least-core vector.

    Solves Eq. (2) of Yan & Procaccia (2021) with HiGHS
    (:func:`scipy.optimize.linprog`, sparse constraints)::

        minimise e  s.t.  masks @ x + e >= utilities,  sum(x) = u_full  [, e >= 0]

    by delayed constraint generation (Bertsimas & Tsitsiklis, 1997,
    "Introduction to linear optimization", Section 6.3): HiGHS solves the
    problem on a few rows (those most violated by the equal split), the rows
    its optimum violates are added, and so on until the optimum violates none;
    it is then the optimum of the whole problem. Only about ``n`` of the rows
    are active at an optimum, so each LP stays small.

    Parameters
    ----------
    masks : ndarray of bool of shape (m, n)
        The constrained coalitions, one per row (neither empty nor the grand
        coalition).
    utilities : ndarray of shape (m,)
        Their utilities.
    u_full : float
        Utility of the grand coalition.
    non_negative_subsidy : bool, default=False
        Constrain ``e >= 0``.
    solver_options : dict, default=None
        Options of ``linprog(method="highs")``; the key "method" may choose
        "highs-ds" or "highs-ipm".
    start : ndarray of bool of shape (m,), default=None
        Rows to solve with from the first round on (e.g. those binding in a
        similar problem: the bootstrap starts from the full fit's), besides
        those the equal split violates most. Only the number of rounds depends
        on it, not the optimum.

    Returns
    -------
    x : ndarray of shape (n,)
        A least-core vector (a vertex; not the egalitarian one).
    subsidy : float
        The minimal ``e``.

    Raises
    ------
    RuntimeError
        With HiGHS's message, when it finds no optimum (e.g. unbounded: too
        few sampled coalitions to bound ``e`` from below).

    Notes
    -----
    The utilities are divided by their largest magnitude ``s`` before solving,
    so HiGHS's tolerances are relative to them. In those units a bounded
    problem has ``e >= -2`` (weak duality: any balanced collection gives a
    lower bound ``sum(l_S u_S) - nu u(N) >= -1 - nu``, ``nu <= 1``), so the
    relaxed problems carry the bound ``e >= -3``: a final optimum at that
    bound means the whole problem is unbounded, and it is then handed to
    HiGHS whole, which says so.
    """
    options = {**_DEFAULT_OPTIONS, **(solver_options or {})}
    if options.get("method", "highs") not in _METHODS:
        raise ValueError(
            f"solver_options['method'] must be one of {list(_METHODS)} (HiGHS through "
            f"scipy.optimize.linprog). Got {options['method']!r} instead.")
    G = sp.csr_matrix(masks, dtype=np.float64)
    m, n = G.shape
    s = _scale(utilities, u_full)
    b, full = np.asarray(utilities, dtype=np.float64) / s, u_full / s
    floor = 0.0 if non_negative_subsidy else -3.0
    x = np.full(n, full / n)
    rows = _most_violated(b - G @ x, np.zeros(m, dtype=bool), _FIRST_ROWS * n)
    if start is not None:  # at most as many as the first round takes: ties can be many
        rows = np.union1d(rows, np.flatnonzero(start)[:_FIRST_ROWS * n])
    chosen = np.zeros(m, dtype=bool)
    for _ in range(_MAX_ROUNDS):
        chosen[rows] = True
        x, e = _linprog(G[chosen], b[chosen], full, floor, options)
        rows = _most_violated(b - G @ x - e, chosen, _ADDED_ROWS * n)
        if rows.size == 0:
            break
    else:  # pragma: no cover - constraint generation always ends; be safe anyway
        x, e = _linprog(G, b, full, floor, options)
    if not non_negative_subsidy and e <= floor + 1e-6:
        x, e = _linprog(G, b, full, None, options)  # unbounded: HiGHS will say so
    return x * s, e * s


def _scale(utilities: np.ndarray, u_full: float) -> float:
    """The largest |utility| (1 if all are 0): the unit the solvers work in."""
    s = max(float(np.max(np.abs(utilities), initial=0.0)), abs(float(u_full)))
    return s if s > 0 and np.isfinite(s) else 1.0


def _most_violated(violation: np.ndarray, chosen: np.ndarray, k: int) -> np.ndarray:
    """Up to ``k`` rows not yet chosen whose violation exceeds the tolerance, worst first."""
    candidates = np.flatnonzero((violation > _CUT_TOL) & ~chosen)
    if candidates.size > k:
        top = np.argpartition(-violation[candidates], k - 1)[:k]
        candidates = candidates[top]
    return candidates


def egalitarian_least_core(
    masks: np.ndarray, lower: np.ndarray, u_full: float,
) -> np.ndarray:
    """The vector of minimal norm with ``masks @ x >= lower`` and ``sum(x) = u_full``.

    The egalitarian tie-break of Yan & Procaccia (2021), Section 3, with
    ``lower = utilities - subsidy``. It is a least-distance programme (LDP),
    solved exactly by one non-negative least-squares problem (Lawson & Hanson,
    1974, "Solving least squares problems", Chapter 23, Section 4, "LDP via
    NNLS") with :func:`scipy.optimize.nnls`:

    1. The equality is eliminated: ``x = u_full / n + Q y`` with ``Q`` an
       orthonormal basis of the vectors summing to 0 (a Householder
       reflection), so that ``|x|^2 = u_full^2 / n + |y|^2`` and the problem is
       ``min |y|`` s.t. ``A y >= c`` with ``A = masks Q``,
       ``c = lower - masks u_full / n``.
    2. ``w = argmin_{w >= 0} |E w - f|`` with ``E = [A^T; c^T]`` and
       ``f = (0, ..., 0, 1)``; with ``r = E w - f``, the solution is
       ``y = -r[:-1] / r[-1]``, and ``r = 0`` means no ``y`` is feasible.

    The LDP is solved on a subset of the rows and rows its solution violates
    are added until none is (as in :func:`least_core_lp`): the minimiser over
    a larger feasible set that satisfies every row is the minimiser over all.

    Why NNLS: it is exact, finite and well kept (scipy's implementation of
    Lawson & Hanson's active-set algorithm), needs no tolerance of its own,
    and its cost grows with ``n`` times the rows, where a general solver
    (``minimize(method="trust-constr")``, an SQP) iterates to a tolerance and
    handles thousands of inequalities poorly.

    Parameters
    ----------
    masks : ndarray of bool of shape (m, n)
        The constrained coalitions.
    lower : ndarray of shape (m,)
        Lower bounds of ``x(S)``.
    u_full : float
        ``sum(x)``.

    Returns
    -------
    x : ndarray of shape (n,)

    Raises
    ------
    RuntimeError
        When the constraints admit no vector (NNLS's residual vanishes), or
        NNLS returns one that violates them.
    """
    G = sp.csr_matrix(masks, dtype=np.float64)
    m, n = G.shape
    s = _scale(lower, u_full)
    h, full = np.asarray(lower, dtype=np.float64) / s, u_full / s
    x0 = np.full(n, full / n)
    v = -np.full(n, 1.0 / np.sqrt(n))
    v[0] += 1.0  # H = I - beta v v^T maps e_0 to the mean direction; H[:, 1:] = Q
    beta = 2.0 / float(v @ v)
    c = h - G @ x0
    chosen = np.zeros(m, dtype=bool)
    rows = _most_violated(c, chosen, _FIRST_ROWS * n)
    x = x0
    for _ in range(_MAX_ROUNDS):
        if rows.size == 0:
            break
        chosen[rows] = True
        Gw = G[chosen].toarray()
        A = (Gw - beta * (Gw @ v)[:, None] * v[None, :])[:, 1:]
        y = _ldp(A, c[chosen])
        yy = np.r_[0.0, y]
        x = x0 + yy - beta * v * float(v @ yy)
        violation = h - G @ x
        worst = float(np.max(violation[chosen]))
        if worst > 1e-7:
            raise RuntimeError(
                "scipy.optimize.nnls returned a tie-break vector that violates its "
                f"constraints by {worst * s:.3g}: the least-distance problem is "
                "ill-conditioned at this subsidy.")
        rows = _most_violated(violation, chosen, _ADDED_ROWS * n)
    return x * s


def _ldp(A: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``argmin |y|`` s.t. ``A y >= c`` (Lawson & Hanson, 1974, Alg. LDP, via NNLS)."""
    if c.size == 0 or np.max(c) <= 0:
        return np.zeros(A.shape[1])  # y = 0 is feasible
    sc = float(np.max(np.abs(c)))
    E = np.vstack([A.T, c[None, :] / sc])
    f = np.zeros(E.shape[0])
    f[-1] = 1.0
    w, _ = nnls(E, f, maxiter=max(100, 10 * E.shape[1]))
    r = E @ w - f
    if -r[-1] <= 1e-13:  # |r|^2 = -r[-1]; r = 0: f is in the cone of E, no y is feasible
        raise RuntimeError(
            "The egalitarian tie-break found no least-core vector at the subsidy given "
            f"(scipy.optimize.nnls residual {np.linalg.norm(r):.3g}: the least-distance "
            "problem is infeasible).")
    return -r[:-1] / r[-1] * sc


def least_core(
    masks: np.ndarray, utilities: np.ndarray, u_full: float, *,
    non_negative_subsidy: bool = False, solver_options: dict[str, Any] | None = None,
    start: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """The egalitarian least core of the constraints of ``masks``, and its subsidy.

    :func:`least_core_lp` gives the minimal subsidy ``e``;
    :func:`egalitarian_least_core` the least-core vector of minimal norm at
    ``e + TIE_BREAK_SLACK * s`` (``s`` the largest |utility|). The slack makes
    the least core full-dimensional: at ``e`` itself it is often a single point
    or a face, which the floating-point ``e`` misses by rounding, making the
    tie-break infeasible. So the vector returned satisfies every constraint
    with the subsidy ``e + 1e-9 s`` (to rounding), and its norm is within
    ~``1e-9 s`` of the minimal one at ``e``.

    Returns
    -------
    x : ndarray of shape (n,)
    subsidy : float
    """
    n = masks.shape[1]
    if n == 1 or masks.shape[0] == 0:  # no coalition to satisfy
        return np.full(n, float(u_full) / n), 0.0 if non_negative_subsidy else -np.inf
    _, e = least_core_lp(masks, utilities, u_full, non_negative_subsidy=non_negative_subsidy,
                         solver_options=solver_options, start=start)
    slack = TIE_BREAK_SLACK * _scale(utilities, u_full)
    return egalitarian_least_core(masks, utilities - e - slack, u_full), e


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
class LeastCoreValuer(_SemivalueValuer):
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
    def _resolve_sampler(self) -> Any:
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
            masks = _masks_from_codes(np.arange(1, (1 << n) - 1, dtype=np.int64), n)
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
