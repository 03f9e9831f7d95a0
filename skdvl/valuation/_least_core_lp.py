"""The least-core LP solvers: subsidy LP by HiGHS with constraint generation, minimal norm by NNLS.

Yan & Procaccia (2021), "If you like Shapley then you'll love the core", AAAI
35(6), 5751-5759: the least core of the coalitions ``masks`` with utilities
``u`` is ``minimise e subject to x(S) + e >= u(S), x(N) = u(N)`` (their Eq. (2)),
and the egalitarian least core its point of minimal Euclidean norm (their
Section 3). Pure functions on arrays: :func:`least_core_lp` (HiGHS through
:func:`scipy.optimize.linprog`, with constraint generation), and
:func:`egalitarian_least_core` (least-distance programming through
:func:`scipy.optimize.nnls`, Lawson & Hanson's "LDP via NNLS"); :func:`least_core`
chains them.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.optimize import OptimizeWarning, linprog, nnls

__all__ = ["least_core_lp", "egalitarian_least_core", "least_core", "TIE_BREAK_SLACK"]

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


