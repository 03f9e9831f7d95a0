"""The group testing sampler: pairwise differences from random coalitions, then an LP.

Jia et al. (2019), "Towards efficient data valuation based on the Shapley
value", AISTATS, Alg. 1. A coalition ``S`` is drawn with a size ``k`` in
``1..n-1`` of probability

    q(k) = (1/k + 1/(n-k)) / Z,    Z = 2 * sum_{k=1}^{n-1} 1/k,

and uniformly given its size. With ``beta_i = [i in S]``, each draw gives an
unbiased sample ``Z u(S) (beta_i - beta_j)`` of the difference ``s_i - s_j`` of
the Shapley values of every pair ``i, j``, and the values are a point of the
polytope

    sum_i s_i = u(N) - u(empty),   |s_i - s_j - dU_ij| <= epsilon / (2 sqrt(n))  for all i < j,

``dU_ij`` being the mean of the samples. Found by HiGHS
(:func:`scipy.optimize.linprog`), any such point is within ``epsilon`` of the
Shapley values in the Euclidean norm whenever every ``dU_ij`` is within the
tolerance of ``s_i - s_j``, which, by Bennett's inequality and a union bound
over the ``n (n - 1) / 2`` pairs, holds with probability at least
``1 - delta`` after :func:`group_testing_samples` draws (the corrected bound
of Wang & Jia, 2023, "A note on 'Towards efficient data valuation based on
the Shapley value'", arXiv 2302.11431).

The sampler is one of the engine's (:class:`GroupTestingSampler`): blocks of
coalitions are drawn from seeded generators, evaluated as one batch, and
summarised in per-player sums (:class:`_GroupTestingStats`) merged in block
order; the LP is solved from the merged sums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import coo_matrix

from skdvl._coalitions import check_int, uniform_coalitions
from skdvl.result import ValuationResult
from skdvl.sampling._base import EngineState, Evaluator, Runner, _CoalitionSampler
from skdvl.stopping import Status

__all__ = ["GroupTestingSampler", "group_testing_samples"]


# --------------------------------------------------------------------------- the math
def _normaliser(n: int) -> float:
    """``Z = 2 * sum_{k=1}^{n-1} 1/k`` (Jia et al., 2019, Alg. 1)."""
    return 2.0 * float(np.sum(1.0 / np.arange(1, n)))


def _size_distribution(n: int) -> np.ndarray:
    """``q(k) = (1/k + 1/(n-k)) / Z`` on coalition sizes ``0..n`` (0 at 0 and n), n >= 2."""
    q = np.zeros(n + 1)
    k = np.arange(1, n)
    q[k] = (1.0 / k + 1.0 / (n - k)) / _normaliser(n)
    return q


def _difference_samples(masks: np.ndarray, u: np.ndarray, center: float = 0.0) -> np.ndarray:
    """``X_ti = Z (u_t - c) (beta_ti - |S_t| / n)``: shape (len(u), n).

    ``X_ti - X_tj = Z (u_t - c) (beta_ti - beta_tj)``, the paper's sample of
    ``s_i - s_j`` (Jia et al., 2019, Alg. 1, with ``c = 0``). Any constant ``c``
    keeps it unbiased, since ``beta_i - beta_j`` has mean 0 at every size; a
    ``c`` near the utilities removes the variance their offset adds. The
    ``|S_t| / n`` term cancels in every difference and makes the rows sum to
    0, so that ``u(N) / n`` plus the column means is the centre of the
    feasible set (the least-squares solution of the pairwise system).
    """
    n = masks.shape[1]
    sizes = masks.sum(axis=1, keepdims=True)
    return _normaliser(n) * (u - center)[:, None] * (masks - sizes / n)


def _h(x: float) -> float:
    """Bennett's function ``h(x) = (1 + x) log(1 + x) - x``."""
    return (1.0 + x) * math.log1p(x) - x


def group_testing_samples(n_players: int, epsilon: float, delta: float,
                          utility_range: float = 1.0) -> int:
    """Coalitions group testing needs for an ``(epsilon, delta)`` guarantee.

    With ``T`` draws, the estimates of all ``n (n - 1) / 2`` pairwise
    differences are within ``epsilon / (2 sqrt(n))`` with probability at least
    ``1 - delta``, and then every solution of the feasibility problem is
    within ``epsilon`` of the Shapley values in the Euclidean norm, if

        T >= log(n (n - 1) / delta) / ((1 - q_tot) h(epsilon / (2 Z r sqrt(n) (1 - q_tot)))),

    with ``h(x) = (1 + x) log(1 + x) - x``, ``r`` the range of the utility and
    ``1 - q_tot = P(beta_i != beta_j) = 2 / Z`` (Wang & Jia, 2023, the
    corrected Theorem of Jia et al., 2019).

    Parameters
    ----------
    n_players : int
        Number of players, at least 2.
    epsilon : float
        Euclidean error of the values, > 0.
    delta : float
        Probability of exceeding it, in (0, 1).
    utility_range : float, default=1.0
        ``r``: a bound on ``|u(S) - c|`` (see
        :class:`GroupTestingShapleyValuer`); 1 for scores in [0, 1] such as
        accuracy.

    Returns
    -------
    n_samples : int

    Examples
    --------
    >>> from skdvl.valuation._group_testing import group_testing_samples
    >>> group_testing_samples(10, epsilon=0.5, delta=0.05)
    27498
    """
    check_int(n_players, "n_players", 2)
    for name, value, high in (("epsilon", epsilon, None), ("delta", delta, 1.0),
                              ("utility_range", utility_range, None)):
        ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(
            value) and value > 0 and (high is None or float(value) < high)
        if not ok:
            rule = "in (0, 1)" if high else "finite and > 0"
            raise ValueError(f"{name} must be a number {rule}. Got {value!r} instead.")
    n = int(n_players)
    z = _normaliser(n)
    k = np.arange(1, n)
    q = _size_distribution(n)[k]
    differ = float(np.dot(q, 2.0 * k * (n - k) / (n * (n - 1))))  # = 2 / Z
    x = epsilon / (2.0 * z * utility_range * math.sqrt(n) * differ)
    return int(math.ceil(math.log(n * (n - 1) / delta) / (differ * _h(x))))


def _solve_feasibility(means: np.ndarray, total: float, tolerance: float,
                       epsilon: float) -> np.ndarray:
    """A point of ``{s : sum s = total, |s_i - s_j - dU_ij| <= tolerance}`` found by HiGHS.

    ``dU_ij = means[i] - means[j]``; the constraints are sparse, two non-zeros
    per row, ``n (n - 1)`` rows. Raises ``RuntimeError`` with HiGHS's message
    when the solve fails.
    """
    n = means.shape[0]
    i, j = np.triu_indices(n, 1)
    p = i.shape[0]
    rows = np.repeat(np.arange(2 * p), 2)
    cols = np.concatenate([np.stack([i, j], 1), np.stack([j, i], 1)]).reshape(-1)
    data = np.tile([1.0, -1.0], 2 * p)
    a_ub = coo_matrix((data, (rows, cols)), shape=(2 * p, n)).tocsr()
    diff = means[i] - means[j]
    b_ub = np.concatenate([tolerance + diff, tolerance - diff])
    res = linprog(np.zeros(n), A_ub=a_ub, b_ub=b_ub, A_eq=np.ones((1, n)), b_eq=[total],
                  bounds=(None, None), method="highs")
    if res.status != 0 or res.x is None:
        raise RuntimeError(
            f"The group testing feasibility problem ({n} players, tolerance epsilon / "
            f"(2 sqrt(n)) = {tolerance:.3g}) was not solved by HiGHS: {res.message} "
            f"(status {res.status}). Its pairwise differences are consistent by "
            "construction, so a solution exists in exact arithmetic and the failure is "
            f"numerical: raise epsilon (got {epsilon!r}) so that the tolerance is well above "
            "HiGHS's feasibility tolerance (1e-7) at the scale of the utilities, and check "
            "that the utilities are finite.")
    return np.asarray(res.x, dtype=np.float64)


# --------------------------------------------------------------------------- statistics
@dataclass
class _GroupTestingStats:
    """Per-player sums of the samples of one game, from which any centring gives the moments.

    With ``d_ti = beta_ti - |S_t| / n``: ``a0 = sum d``, ``a1 = sum u d``,
    ``b0 = sum d^2``, ``b1 = sum u d^2``, ``b2 = sum u^2 d^2`` (over the
    samples ``t``), and ``count`` samples. Sums merge by addition, in the
    engine's block order, so they do not depend on ``n_jobs``. ``full`` and
    ``empty`` are ``u(N)`` and ``u(empty)`` (from block 0).
    """

    n: int
    count: int
    a0: np.ndarray
    a1: np.ndarray
    b0: np.ndarray
    b1: np.ndarray
    b2: np.ndarray
    full: float = math.nan
    empty: float = math.nan

    @classmethod
    def zeros(cls, n: int) -> _GroupTestingStats:
        return cls(n, 0, np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n))

    @classmethod
    def of_samples(cls, masks: np.ndarray, u: np.ndarray) -> _GroupTestingStats:
        n = masks.shape[1]
        d = masks - masks.sum(axis=1, keepdims=True) / n
        d2 = d * d
        return cls(n, int(u.shape[0]), d.sum(axis=0), u @ d, d2.sum(axis=0), u @ d2,
                   (u * u) @ d2)

    def merge(self, other: _GroupTestingStats) -> None:
        self.count += other.count
        for name in ("a0", "a1", "b0", "b1", "b2"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        if math.isnan(self.full):
            self.full, self.empty = other.full, other.empty

    @property
    def center(self) -> float:
        """The constant ``c`` the utilities are centred at: ``(u(N) + u(empty)) / 2``."""
        return 0.5 * (self.full + self.empty)

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and unbiased sample variance (ddof 1) of ``X_ti = Z (u_t - c) d_ti``.

        The variance is NaN from a single coalition (its spread is unknown).
        """
        z, c, t = _normaliser(self.n), self.center, max(self.count, 1)
        mean = z * (self.a1 - c * self.a0) / t
        second = z * z * (self.b2 - 2.0 * c * self.b1 + c * c * self.b0) / t
        if t < 2:
            return mean, np.full(self.n, np.nan)
        return mean, np.maximum(second - mean * mean, 0.0) * (t / (t - 1))


# --------------------------------------------------------------------------- the sampler
class GroupTestingSampler(_CoalitionSampler):
    """Group testing (Jia et al., 2019, Alg. 1): coalitions of size ``k`` with ``q(k)``.

    Each block draws ``batch_size`` coalitions with sizes in ``1..n-1`` of
    probability ``q(k) = (1/k + 1/(n-k)) / Z``, uniform given their size, and
    evaluates them as one batch; block 0 also evaluates ``u(N)`` and
    ``u(empty)``. Every coalition updates every player. The values are a point
    of the feasibility problem of the module docstring, solved by HiGHS from
    the merged statistics. Estimates Shapley values only.

    Parameters
    ----------
    epsilon : float, default=0.1
        The Euclidean error the feasibility problem's tolerance is set for:
        ``|s_i - s_j - dU_ij| <= epsilon / (2 sqrt(n))``.
    batch_size : int, default=64
        Coalitions per block (evaluated together; the granularity of stopping
        checks).
    solution : {"lp", "center"}, default="lp"
        "lp": the point of the feasible set HiGHS returns (the paper's);
        "center": the centre ``u(N) / n + mean_t X_ti`` of the feasible set
        (the least-squares solution of the pairwise system), which is always
        feasible, so that the guarantee holds for it too, and which is within
        ``epsilon / (2 sqrt(n))`` of the Shapley values in each coordinate
        whenever the pairwise estimates are within their tolerance.

    Notes
    -----
    Departures from the paper: (1) the utilities are centred at
    ``c = (u(N) + u(empty)) / 2`` (unbiased, see :func:`_difference_samples`);
    (2) ``sum s = u(N) - u(empty)``, not ``u(N)``: the paper takes
    ``u(empty) = 0``; (3) a standard error, which the paper does not give:
    that of the centre ``u(N) / n + mean_t X_ti`` of the feasible set
    (``stderr_``); the reported point lies within ``epsilon / sqrt(n)`` of that
    centre in each coordinate, which the standard error does not include.
    """


    def __init__(self, epsilon: float = 0.1, batch_size: int = 64,
                 solution: str = "lp") -> None:
        _check_epsilon(epsilon)
        check_int(batch_size, "batch_size", 1)
        _check_solution(solution)
        self.epsilon = epsilon
        self.batch_size = batch_size
        self.solution = solution

    def zeros(self, n: int) -> tuple[_GroupTestingStats]:
        return (_GroupTestingStats.zeros(n),)

    def weights(self, mass: np.ndarray, n: int) -> None:
        """Check the parameters, and that the semivalue is Shapley's (the only one estimated)."""
        _check_epsilon(self.epsilon)
        self._check_batch_size()
        _check_solution(self.solution)
        mass = np.asarray(mass, dtype=np.float64)
        if mass.shape != (n,) or not np.allclose(mass, 1.0 / n, rtol=1e-9, atol=0.0):
            raise ValueError(
                "Group testing estimates Shapley values only; this valuer's semivalue is "
                "another. Choose another sampler.")
        return None

    def run_block(
        self, ev: Evaluator, rng: np.random.Generator, weights: Any, block: int,
        start: int = 0, stop: int | None = None,
    ) -> tuple[Any, ...]:  # one _GroupTestingStats
        """Statistics of samples ``[start, stop)`` (block 0 adds ``u(N)`` and ``u(empty)``).

        The whole block's sizes and coalitions are drawn before slicing, so a
        block drawn in parts gives the same samples.
        """
        n = ev.n
        sizes = rng.choice(n + 1, size=self.samples_per_block, p=_size_distribution(n))
        masks = uniform_coalitions(rng, sizes, n)[start:stop]
        first = block == 0 and start == 0
        if first:
            masks = np.concatenate([np.ones((1, n), bool), np.zeros((1, n), bool), masks])
        u = ev.evaluate(masks)
        lo = 2 if first else 0
        stats = _GroupTestingStats.of_samples(masks[lo:], u[lo:])
        if first:
            stats.full, stats.empty = float(u[0]), float(u[1])
        return (stats,)

    def result(self, moments: tuple[Any, ...]) -> ValuationResult:
        """The LP's point (NaN before any sample), the centre's variances, and counts."""
        stats = moments[0]
        n = stats.n
        if stats.count == 0 or math.isnan(stats.full):
            return ValuationResult(np.full(n, np.nan), counts=np.zeros(n, np.int64))
        mean, variance = stats.moments()
        total = stats.full - stats.empty
        if self.solution == "center":
            values = mean + total / n
        else:
            values = _solve_feasibility(mean, total, self.epsilon / (2.0 * math.sqrt(n)),
                                        self.epsilon)
        return ValuationResult(values, variances=variance,
                               counts=np.full(n, stats.count, np.int64))

    def counts(self, moments: tuple[Any, ...]) -> np.ndarray:
        """Coalitions behind each value (every coalition updates every player)."""
        stats = moments[0]
        return np.full(stats.n, stats.count if not math.isnan(stats.full) else 0, np.int64)

    def value_game(self, utility: Any, mass: np.ndarray, *, state: Any,
                   run: Runner) -> tuple[ValuationResult, Any]:
        """Block sampling; for one player, ``u(N) - u(empty)`` (exact, 2 evaluations)."""
        n = int(utility.n_players)
        if n >= 2:
            return super().value_game(utility, mass, state=state, run=run)
        self.weights(mass, n)
        state = state if state is not None else EngineState.new(self, n)
        if state.n_evaluations == 0:
            ev = run.evaluator(utility)
            state.moments[0].full, state.moments[0].empty = ev.full(), ev.empty()
            state.n_evaluations, state.report = ev.n_evaluations, ev.report()
        state.interrupted, state.status = False, Status.CONVERGED
        stats = state.moments[0]
        return ValuationResult([stats.full - stats.empty]), state


def _check_epsilon(epsilon: Any) -> None:
    ok = isinstance(epsilon, Real) and not isinstance(epsilon, bool) and math.isfinite(
        epsilon) and float(epsilon) > 0
    if not ok:
        raise ValueError(
            f"The 'epsilon' parameter of GroupTestingSampler must be a finite number > 0. "
            f"Got {epsilon!r} instead.")


def _check_solution(solution: Any) -> None:
    if not (isinstance(solution, str) and solution in ("lp", "center")):
        raise ValueError(
            "The 'solution' parameter of GroupTestingSampler must be 'lp' or 'center'. "
            f"Got {solution!r} instead.")

