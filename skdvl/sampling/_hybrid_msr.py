"""Hybrid exact/sampled regression-adjusted MSR: size strata drawn without replacement.

A semivalue is a weighted sum of utilities over coalition sizes, ``phi_i = sum_s
sum_{|S| = s} u(S) c_i(S)`` (:func:`~skdvl.sampling._regression_msr._msr_coefficients`).
Each size is a stratum: its coalitions are drawn uniformly *without* replacement, so
a small stratum (sizes 0, 1, 2, ``n - 2``, ...) is enumerated as soon as the budget
covers it and then enters exactly, and a surrogate ``f`` whose semivalue is known
exactly (Witter, Liu & Musco, 2025) leaves only its residual ``u - f`` to be
estimated in the others. The residual of a stratum is estimated by cross-fitting
(the finite-population estimator of shapiq's ProxySHAP): in fold ``k`` the
surrogate is fitted on every sampled unit but those held out in ``k``; the units it
was fitted on count for themselves exactly and the held-out ones, a uniform sample
of the coalitions it did not see, stand for all of those. Given the fitted
surrogate this is unbiased, whatever the surrogate.

The budget goes to the strata by Neyman allocation with a common residual variance
(Castro et al., 2017; Cochran, 1977, Sec. 5.5): stratum ``s`` gets draws in
proportion to ``C(n, s) sqrt(s a(s)^2 + (n - s) b(s)^2)``, the spread of the weights
its coalitions carry (``1 / sqrt(s (n - s))`` for Shapley values, the binomial for
Banzhaf values), a stratum that the allocation would overfill being enumerated;
after a pilot the common variance gives way to each stratum's residual variance (of
the size-wise linear fit, or of the folds' surrogates on their held-out units),
moderated towards the pooled one by empirical Bayes (Smyth, 2004) so that the
variances of a few units per stratum, at small budgets, do not starve a stratum.
Optionally each coalition is paired with its complement (antithetic sampling).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from skdvl._coalitions import check_int
from skdvl.result import ValuationResult
from skdvl.sampling._base import Runner, TableState, _CoalitionSampler
from skdvl.sampling._count_surrogate import CountSurrogate
from skdvl.sampling._exact import ExactSampler
from skdvl.sampling._hybrid_design import (
    _allocate,
    _coalitions,
    _coalitions_left,
    _Design,
    _design,
    _draw_units,
    _moderation,
    _unit_terms,
)
from skdvl.sampling._regression import _check_bool, _nan_result, _result
from skdvl.sampling._regression_msr import (
    _check_surrogate,
    _ridge_solve,
    _SizedLinear,
    _surrogate_model,
)
from skdvl.sampling._tree_semivalues import tree_semivalues
from skdvl.stopping import Progress, Status
from skdvl.utility import FitReport

__all__ = ["HybridMSRSampler"]

_CHUNK = 4096  # units per pass when summing their residuals
_GROUPS = 2  # groups of players of the count surrogate ("counts")
#: the boosted trees among the candidates of ``surrogate="auto"`` (on the size-wise
#: linear fit's residuals): shallow ones for small samples, deep ones for large
_BOOSTED = {
    "boost5": {"n_estimators": 100, "max_depth": 5, "learning_rate": 0.1},
    "boost8": {"n_estimators": 100, "max_depth": 8, "learning_rate": 0.1, "subsample": 0.8},
}
#: the tree ensembles among the candidates that model the utilities with no linear
#: fit beneath (as shapiq's RegressionMSR does with its xgboost proxy): 100 bagged
#: full-depth trees, and 200 boosted trees of depth 6 with at least 3 coalitions a leaf.
#: For Banzhaf values they took the breast-cancer game (16 rows, 480 calls, 16 seeds)
#: from 7.2e-05 to 4.8e-05 with 2 folds and 5.8e-05 to 3.6e-05 with 4, and the airport
#: game (40 players, 12,000 calls, 4 seeds, 2 folds) from 1.0e-06 to 3.5e-07; weighted
#: voting and shoes never chose them (errors unchanged to the digit)
_ALONE: dict[str, tuple[str, dict[str, Any]]] = {
    "forest_alone": ("RandomForestRegressor", {"n_estimators": 100}),
    "boost6_alone": ("GradientBoostingRegressor", {"n_estimators": 200, "max_depth": 6,
                                                   "learning_rate": 0.1, "min_samples_leaf": 3}),
}
#: the candidates of ``surrogate="auto"`` besides the size-wise linear fit alone; a
#: "plain" one has one intercept instead of one per size: fewer parameters to fit on
#: few units (a candidate ``"plain+X"`` is ``X`` on the plain fit's residuals)
_CANDIDATES = ("plain", "counts2", "plain+counts2", "boost5", "boost8", "deep_alone")
_CHOOSE_MAX = 4000  # most coalitions the candidates of "auto" are fitted on
_PILOT = 0.3  # share of a known budget drawn before the allocation is learnt
_FLOOR = 0.05  # least learnt weight of a stratum, relative to its share under the prior


def _count_regressor(fold: int) -> Any:
    """The regressor of a count surrogate: 100 boosted trees of depth 3 on the counts."""
    from sklearn.ensemble import GradientBoostingRegressor

    return GradientBoostingRegressor(n_estimators=100, max_depth=3, random_state=fold)


def _alone_regressor(choice: str, fold: int) -> Any:
    """The tree ensemble of candidate ``choice`` of :data:`_ALONE`, seeded by the fold."""
    from sklearn import ensemble

    name, params = _ALONE[choice]
    return getattr(ensemble, name)(**params, random_state=fold)


@dataclass
class HybridState:
    """The units one game evaluated, in draw order, and what drawing more needs."""

    n: int
    design: _Design
    rng: np.random.Generator
    masks: list[np.ndarray] = field(default_factory=list)  # (units, n) first coalitions
    utilities: list[np.ndarray] = field(default_factory=list)  # (units, per_unit)
    stratum: list[np.ndarray] = field(default_factory=list)  # (units,)
    position: list[np.ndarray] = field(default_factory=list)  # (units,) index in stratum
    counts: np.ndarray | None = None
    seen: list[set[bytes]] = field(default_factory=list)
    pool: dict[int, list[np.ndarray]] = field(default_factory=dict)
    prior: np.ndarray | None = None  # the allocation weights before any sample
    piloted: bool = False
    stale: bool = False  # units were added since the allocation was last learnt
    n_evaluations: int = 0
    report: FitReport = field(default_factory=FitReport)
    status: Status = Status.PENDING
    interrupted: bool = False

    @property
    def n_units(self) -> int:
        return int(sum(p.shape[0] for p in self.stratum))

    @property
    def n_coalitions(self) -> int:
        return self.n_units * self.design.per_unit

    def arrays(self) -> tuple[np.ndarray, ...]:
        """All units: first coalitions, utilities, strata, positions (consolidated)."""
        if len(self.masks) > 1:
            for name in ("masks", "utilities", "stratum", "position"):
                setattr(self, name, [np.concatenate(getattr(self, name))])
        if not self.masks:
            n, per = self.n, self.design.per_unit
            return (np.zeros((0, n), bool), np.zeros((0, per)), np.zeros(0, np.intp),
                    np.zeros(0, np.intp))
        return self.masks[0], self.utilities[0], self.stratum[0], self.position[0]


def _linear_terms(state: HybridState, mass: np.ndarray) -> np.ndarray:
    """The unit terms (:func:`_unit_terms`) of the residuals of the size-wise linear fit
    on every unit: what the learnt allocation reads with ``neyman_residuals="linear"``."""
    masks, u, _, _ = state.arrays()
    Z = _coalitions(masks, state.design.paired).astype(np.float64)
    lin = _SizedLinear(Z, u.ravel())
    e = (u.ravel() - lin.predict(Z)).reshape(u.shape)
    return _unit_terms(masks, e, mass, state.design.paired)


def _neyman_weights(state: HybridState, h: np.ndarray, prior: np.ndarray,
                    used: np.ndarray | None = None) -> np.ndarray:
    """Neyman allocation weights ``M_s S_s`` learnt from the units drawn so far.

    ``S_s`` is the spread (root summed variance over players) in stratum ``s`` of
    the units' terms ``h`` (:func:`_unit_terms` of a residual; ``used``: the units
    that have one, all by default) (Cochran, 1977, Eq. 5.26 summed over players).
    Strata with fewer than 2 units keep their prior weight, rescaled; every weight is
    at least ``_FLOOR`` times its prior share, so that no stratum is starved on a
    noisy estimate.
    """
    stratum = state.arrays()[2]
    if used is not None:
        stratum, h = stratum[used], h[used]
    design = state.design
    k = design.size.shape[0]
    t = np.bincount(stratum, minlength=k).astype(np.float64)
    total, sq = np.zeros((k, h.shape[1])), np.zeros((k, h.shape[1]))
    np.add.at(total, stratum, h)
    np.add.at(sq, stratum, h**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        var = np.maximum(sq - total**2 / np.maximum(t, 1)[:, None], 0).sum(axis=1) / (t - 1)
        shape = (prior / design.pop) ** 2  # the variance the prior assumes, up to a scale
    known = (t >= 2) & (prior > 0) & np.isfinite(var) & (shape > 0)
    if not known.any() or np.sum(var, where=known) <= 0:
        return prior.copy()
    dof = np.where(known, t - 1, 0.0)
    prior_dof, scale = _moderation(var[known] / shape[known], dof[known])
    with np.errstate(invalid="ignore"):
        shrunk = (dof * np.where(known, var, 0.0) + prior_dof * scale * shape) / (dof + prior_dof)
    learnt = design.pop * np.sqrt(shrunk)
    ratio = learnt[known].sum() / prior[known].sum()
    out = prior * ratio  # strata without an estimate: the prior, on the learnt scale
    out[known] = np.maximum(learnt[known], _FLOOR * prior[known] * ratio)
    return np.where(prior > 0, out, 0.0)


# --------------------------------------------------------------------------- surrogates
class _PlainLinear:
    """``g(S) = beta_0 + sum_{j in S} beta_j`` by least squares (a tiny ridge, relative
    to the mean diagonal of the Gram matrix, the intercept unpenalised): ``n + 1``
    parameters where :class:`_SizedLinear` has ``2 n + 1``. Its semivalue is ``beta``
    (a semivalue's weights sum to one over the sizes)."""

    def __init__(self, Z: np.ndarray, u: np.ndarray) -> None:
        F = np.column_stack([np.ones(Z.shape[0]), Z])
        gram = F.T @ F
        coef = _ridge_solve(gram, F.T @ u, 1e-6)
        if coef is None:  # pragma: no cover - the ridge keeps it regular
            coef = np.linalg.lstsq(F, u, rcond=None)[0]
        self.beta0, self.beta = float(coef[0]), coef[1:]

    def predict(self, Z: np.ndarray) -> np.ndarray:
        return np.asarray(self.beta0 + Z @ self.beta)

    def values(self, mass: np.ndarray) -> np.ndarray:
        return np.asarray(self.beta * float(np.sum(mass)))


class _Surrogate:
    """``g(S) + tree(S)``: the size-wise linear fit and a tree on its residuals (either
    may be absent), with exact semivalues."""

    def __init__(self, Z: np.ndarray, u: np.ndarray, choice: Any, fold: int) -> None:
        plain = isinstance(choice, str) and choice.startswith("plain")
        if plain:
            choice = choice[6:] or None  # "plain" alone, or "plain+X"
        self.lin: Any = (None if choice == "deep_alone" or choice in _ALONE else
                         _PlainLinear(Z, u) if plain else _SizedLinear(Z, u))
        if isinstance(choice, str) and choice.startswith("counts"):
            assert self.lin is not None
            self.model: Any = CountSurrogate(self.lin.beta, int(choice[6:] or _GROUPS),
                                             _count_regressor(fold))
        elif isinstance(choice, str) and choice in _ALONE:
            self.model = _alone_regressor(choice, fold)
        elif isinstance(choice, str) and choice in _BOOSTED:
            from sklearn.ensemble import GradientBoostingRegressor

            self.model = GradientBoostingRegressor(**_BOOSTED[choice], random_state=fold)
        else:
            self.model = None if choice is None else _surrogate_model(choice, fold)
        if self.model is not None:
            self.model.fit(Z, u if self.lin is None else u - self.lin.predict(Z))

    def predict(self, Z: np.ndarray) -> np.ndarray:
        pred = np.zeros(Z.shape[0]) if self.lin is None else self.lin.predict(Z)
        return pred if self.model is None else pred + self.model.predict(Z)

    def values(self, mass: np.ndarray) -> np.ndarray:
        n = int(mass.shape[0])
        lin = np.zeros(n) if self.lin is None else self.lin.values(mass)
        if isinstance(self.model, CountSurrogate):
            return np.asarray(lin + self.model.values(mass))
        return np.asarray(lin + (0.0 if self.model is None else tree_semivalues(self.model, mass)))


def _choose(Z: np.ndarray, u: np.ndarray, unit_of: np.ndarray, test_units: np.ndarray,
            scale: np.ndarray, mass: np.ndarray, paired: bool, fold: int,
            ensembles: bool = False) -> Any:
    """``surrogate="auto"``: the candidate (None: the size-wise linear fit alone; with
    ``ensembles``, :data:`_ALONE` too) whose fit on the other training units leaves the
    least variance on ``test_units``.

    ``Z``, ``u`` are a fold's training coalitions and ``unit_of`` their units; the
    score of a test unit is ``scale^2 |h|^2`` (:func:`_unit_terms`), its share of
    the summed variance of the values. Only the fold's training units are used, so
    its own estimate stays unbiased.
    """
    test = np.isin(unit_of, test_units)
    if test_units.size < 8:
        return None
    learn = np.flatnonzero(~test)
    learn = learn[::max(1, -(-learn.size // _CHOOSE_MAX))]  # a spread subset: time
    per = 2 if paired else 1
    Zt = Z[test].reshape(-1, per, Z.shape[1])[:, 0]
    scores: dict[Any, float] = {}
    for candidate in (None, *_CANDIDATES, *(_ALONE if ensembles else ())):
        f = _Surrogate(Z[learn], u[learn], candidate, fold)
        e = (u[test] - f.predict(Z[test])).reshape(-1, per)
        h = _unit_terms(Zt.astype(bool), e, mass, paired)
        scores[candidate] = float(np.sum(scale[:, None] ** 2 * h**2))
    return min(scores, key=lambda c: scores[c])  # a tie goes to the cheapest, None


# --------------------------------------------------------------------------- the sampler
class HybridMSRSampler(_CoalitionSampler):
    """Regression-adjusted MSR over size strata drawn without replacement, for any semivalue.

    Coalitions are drawn stratum by stratum (one stratum per coalition size),
    uniformly without replacement, so a stratum that the budget covers is
    enumerated and enters exactly: hybrid exact/sampling. The budget goes to
    the strata in proportion to the weight the semivalue's estimator gives them
    (Neyman allocation, Castro et al., 2017), after every stratum has ``2 n_folds``
    units (the smallest design whose standard errors are known), and with
    ``neyman=True`` after a pilot of 30 % of a known budget by the strata's
    residual variances, moderated towards their pooled value (Smyth, 2004). A
    surrogate whose semivalues are exact (Witter, Liu & Musco, 2025) is fitted
    to the utilities; only its residual is sampled, estimated by cross-fitting
    over ``n_folds`` folds with the finite-population weights of shapiq's
    ProxySHAP (the coalitions a fold's surrogate was fitted on count for
    themselves, its held-out ones for the coalitions it never saw), which keeps
    the estimate unbiased and exact once every stratum is enumerated.

    Parameters
    ----------
    surrogate : "linear", "tree", "auto" or a tree regressor, default="auto"
        As in :class:`~skdvl.sampling.RegressionMSRSampler`: "linear" is the
        size-wise linear fit (one intercept per coalition size and one effect per
        player), the others add a tree model of its residuals; "auto" chooses per
        fold the one that leaves the least variance on half of the fold's
        training units, among the size-wise linear fit alone, a plain linear fit
        (one intercept: half the parameters, for small budgets), count surrogates
        on either, boosted trees and a full-depth tree on its residuals, and a
        full-depth tree on the utilities (with ``ensembles``, also a random forest
        and deeper boosted trees on the utilities).
    n_folds : int, default=2
        Folds of the cross-fitting (at least 2).
    paired : bool, default=False
        Whether each drawn coalition comes with its complement (antithetic
        sampling); a unit is then two utility calls.
    neyman : bool, default=True
        Whether the allocation is learnt from the residuals after the pilot.
    neyman_residuals : {"linear", "surrogate"}, default="linear"
        The residuals the learnt allocation reads: "linear", those of the
        size-wise linear fit on every unit; "surrogate", the held-out residuals
        of the folds' surrogates, whose variance the estimate has (one more round
        of fold fits, the surrogate choice included, each time the allocation is
        learnt: once with a known budget). Where the surrogate fits some sizes far
        better than the linear fit (the extreme sizes of a voting game), the
        linear residuals send units where the estimate does not need them.
    batch_size : int, default=128
        Coalitions evaluated at a time when no budget of samples says how many.
    ensembles : bool, default=False
        With ``surrogate="auto"``, also offer a random forest and deeper boosted trees
        fitted to the utilities alone (as shapiq's RegressionMSR fits its xgboost
        proxy). ``sampler="auto"`` sets it for Banzhaf values from ``30 n`` calls,
        where it halved the error on the 16-row breast-cancer game; the fits cost
        more (13-15 s per valuation at 12,000 calls, 40 players).

    References
    ----------
    Witter, Liu & Musco (2025), "Regression-adjusted Monte Carlo estimators for
    Shapley values and probabilistic values", arXiv:2506.11849. Castro, Gomez,
    Molina & Tejada (2017), "Improving polynomial estimation of the Shapley value
    by stratified random sampling with optimum allocation", Comput. Oper. Res. 82.
    Smyth (2004), "Linear models and empirical Bayes methods for assessing
    differential expression in microarray experiments", Stat. Appl. Genet. Mol.
    Biol. 3(1).

    Examples
    --------
    >>> from skdvl import ShapleyValuer
    >>> from skdvl.games import AirportGame
    >>> from skdvl.sampling import HybridMSRSampler
    >>> game = AirportGame([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    >>> v = ShapleyValuer(utility=game, sampler=HybridMSRSampler(surrogate="linear"),
    ...                   max_updates=64, random_state=0).fit()
    >>> bool(abs(v.values_ - game.shapley_values()).max() < 1e-9)  # 64 = 2^6: enumerated
    True
    """

    def __init__(self, surrogate: Any = "auto", n_folds: int = 2, paired: bool = False,
                 neyman: bool = True, neyman_residuals: str = "linear",
                 batch_size: int = 128, ensembles: bool = False) -> None:
        self.surrogate, self.n_folds, self.paired = surrogate, n_folds, paired
        self.ensembles = ensembles
        self.neyman, self.neyman_residuals = neyman, neyman_residuals
        self.batch_size = batch_size

    def _check(self) -> None:
        s = self.surrogate
        if not (isinstance(s, str) and s in ("counts", "counts2", "counts3", "counts4")):
            _check_surrogate(s)
        check_int(self.n_folds, "n_folds", 2)
        _check_bool(self.paired, "paired")
        _check_bool(self.neyman, "neyman")
        _check_bool(self.ensembles, "ensembles")
        if not (isinstance(self.neyman_residuals, str)
                and self.neyman_residuals in ("linear", "surrogate")):
            raise ValueError("The 'neyman_residuals' parameter of HybridMSRSampler must be "
                             f"'linear' or 'surrogate'. Got {self.neyman_residuals!r} instead.")
        self._check_batch_size()

    @property
    def _cover(self) -> int:
        return 2 * int(self.n_folds)

    def min_updates(self, n: int) -> int:
        """Coalitions that give every stratum its first units (or all of them)."""
        design = _design(np.full(n, 1.0 / n), n, bool(self.paired))
        return int(np.minimum(design.pop, self._cover).sum()) * design.per_unit

    def value_game(self, utility: Any, mass: np.ndarray, *, state: Any,
                   run: Runner) -> tuple[ValuationResult, Any]:
        self._check()
        n = int(utility.n_players)
        if n <= 3:
            return ExactSampler().value_game(utility, mass, state=state, run=run)
        mass = np.asarray(mass, dtype=np.float64)
        if state is None:
            design = _design(mass, n, bool(self.paired))
            state = HybridState(n, design, run.block_rng(0),
                                counts=np.zeros(design.size.shape[0]),
                                seen=[set() for _ in design.size],
                                prior=design.weight.copy())
        state.interrupted = False
        criterion = run.stopping()
        criterion.reset()
        asked = [False]

        def estimate() -> ValuationResult:
            asked[0] = True
            return self._estimate(state, mass)

        chunk = int(self.batch_size)
        while True:
            progress = Progress(estimate, state.n_coalitions, state.n_evaluations,
                                np.full(n, state.n_coalitions, dtype=np.int64))
            status = criterion(progress)
            if status != Status.PENDING:
                state.status = status
                break
            left = criterion.samples_left(progress)
            if left is None:
                left = _coalitions_left(criterion, state.n_coalitions, n)
            per = state.design.per_unit
            m = max(chunk // per, 1) if left is None else left // per
            if left is not None and self.neyman and not state.piloted:
                # a pilot of _PILOT of the budget, then the rest by the learnt allocation
                pilot = int(_PILOT * (state.n_coalitions + left)) // per - state.n_units
                m = min(m, max(pilot, 1))
                state.piloted = True
            if m > 0 and self.neyman and state.stale:  # learnt only when it will be used
                state.design.weight = self._learnt_weights(state, mass)
                state.stale = False
            if m == 0 or self._extend(state, m, utility, run) == 0:
                state.status = Status.BUDGET if m == 0 else Status.CONVERGED
                break
            state.stale = True
            if state.interrupted:
                break
            if asked[0]:  # a criterion that reads the values: check less often
                chunk *= 2
        return self._estimate(state, mass), state

    def _extend(self, state: HybridState, m: int, utility: Any, run: Runner) -> int:
        """Draw and evaluate up to ``m`` more units; the number added."""
        assert state.counts is not None
        counts = state.counts.copy()
        order = _allocate(counts, state.design, self._cover, m)
        if order.size == 0:
            return 0
        blocks, position = [], np.empty(order.size, dtype=np.intp)
        for s in np.unique(order):
            at = np.flatnonzero(order == s)
            blocks.append((at, _draw_units(state.rng, state.design, int(s), at.size,
                                           state.seen[s], state.pool)))
            position[at] = state.counts[s] + np.arange(at.size)
        masks = np.zeros((order.size, state.n), dtype=bool)
        for at, rows in blocks:
            masks[at] = rows
        per = state.design.per_unit
        table = TableState(state.n, order.size * per, np.empty(0))
        table = run.table(utility, table, masks=_coalitions(masks, state.design.paired))
        state.n_evaluations += table.n_evaluations
        state.report.merge(table.report)
        done = table.done // per
        if table.interrupted:  # keep the units evaluated in full, in order
            state.interrupted = True
            for s in range(counts.size):  # units not kept may be drawn again later
                for row in masks[done:][order[done:] == s]:
                    state.seen[s].discard(np.packbits(row).tobytes())
        np.add.at(state.counts, order[:done], 1)
        state.masks.append(masks[:done])
        state.utilities.append(table.utilities[:done * per].reshape(done, per))
        state.stratum.append(order[:done])
        state.position.append(position[:done])
        return done

    def result(self, stats: tuple[Any, ...]) -> ValuationResult:  # pragma: no cover
        raise NotImplementedError("HybridMSRSampler values games through value_game")

    def reweight(self, state: Any, mass: np.ndarray) -> ValuationResult:
        """Values of another semivalue from the same units (NaN if a stratum it weighs
        was not drawn)."""
        if not isinstance(state, HybridState):  # an enumerated small game
            return ExactSampler().reweight(state, mass)
        return self._estimate(state, np.asarray(mass, dtype=np.float64))

    # -- the estimate ---------------------------------------------------------------
    def _estimate(self, state: HybridState, mass: np.ndarray) -> ValuationResult:
        n, design, k_folds = state.n, state.design, int(self.n_folds)
        masks, u, stratum, _ = state.arrays()
        counts = np.bincount(stratum, minlength=design.size.shape[0]).astype(np.float64)
        full = counts >= design.pop
        need = _design(mass, n, design.paired).weight > 0
        if np.any(need & ~full & (counts < self._cover)):
            return _nan_result(n)  # a stratum the semivalue weighs is not covered yet
        estimates, variances = np.zeros((k_folds, n)), np.zeros((k_folds, n))
        for k, held, t, scale, f in self._fold_fits(state, mass):
            train = counts - t
            with np.errstate(divide="ignore", invalid="ignore"):
                fpc = np.where(t > 0, 1.0 - t / (design.pop - train), 0.0)
            totals, sq = np.zeros((counts.size, n)), np.zeros((counts.size, n))
            est = f.values(mass) * np.ones(n)
            for lo in range(0, masks.shape[0], _CHUNK):
                sl = slice(lo, lo + _CHUNK)
                z = _coalitions(masks[sl], design.paired)
                e = u[sl] - f.predict(z.astype(np.float64)).reshape(u[sl].shape)
                h = _unit_terms(masks[sl], e, mass, design.paired)
                w = np.where(held[sl], scale[stratum[sl]], 1.0)
                est += (w[:, None] * h).sum(axis=0)
                sh = w[held[sl], None] * h[held[sl]]  # scaled: no overflow at large n
                np.add.at(totals, stratum[sl][held[sl]], sh)
                np.add.at(sq, stratum[sl][held[sl]], sh**2)
            estimates[k] = est
            with np.errstate(divide="ignore", invalid="ignore"):
                mean = totals / np.maximum(t, 1)[:, None]
                var_h = np.maximum(sq - t[:, None] * mean**2, 0) / np.maximum(t - 1, 1)[:, None]
                part = fpc[:, None] * t[:, None] * var_h  # (M - tr)^2 (1 - t/(M - tr)) S^2 / t
            variances[k] = np.where((t > 0)[:, None], part, 0.0).sum(axis=0)
        values = estimates.mean(axis=0)
        stderr = np.sqrt(variances.sum(axis=0)) / k_folds
        return _result(values, stderr, state.n_coalitions)

    def _fold_fits(self, state: HybridState, mass: np.ndarray) -> Any:
        """Per fold ``k``: its held-out units (a mask), their count ``t`` per stratum,
        the scale ``(M - train) / t`` of a held-out unit per stratum, and the surrogate
        fitted on the other units. A unit's fold is its position in its stratum modulo
        ``n_folds``, fixed before it is drawn; enumerated strata hold out none."""
        design, k_folds = state.design, int(self.n_folds)
        masks, u, stratum, position = state.arrays()
        counts = np.bincount(stratum, minlength=design.size.shape[0]).astype(np.float64)
        fold = np.where((counts >= design.pop)[stratum], -1, position % k_folds)
        for k in range(k_folds):
            held = fold == k
            t = np.bincount(stratum[held], minlength=counts.size).astype(np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                scale = np.where(t > 0, (design.pop - (counts - t)) / t, 1.0)
            f = self._fit(masks, u, ~held, scale[stratum], mass, design.paired, k)
            yield k, held, t, scale, f

    def _learnt_weights(self, state: HybridState, mass: np.ndarray) -> np.ndarray:
        """The allocation weights learnt from the residuals that ``neyman_residuals``
        names (:func:`_neyman_weights`)."""
        assert state.prior is not None
        if self.neyman_residuals == "linear":
            return _neyman_weights(state, _linear_terms(state, mass), state.prior)
        masks, u, _, _ = state.arrays()
        h, used = np.zeros((masks.shape[0], state.n)), np.zeros(masks.shape[0], dtype=bool)
        for _, held, _, _, f in self._fold_fits(state, mass):
            z = _coalitions(masks[held], state.design.paired).astype(np.float64)
            e = u[held] - f.predict(z).reshape(u[held].shape)
            h[held] = _unit_terms(masks[held], e, mass, state.design.paired)
            used |= held
        return _neyman_weights(state, h, state.prior, used)

    def _fit(self, masks: np.ndarray, u: np.ndarray, train: np.ndarray, scale: np.ndarray,
             mass: np.ndarray, paired: bool, fold: int) -> _Surrogate:
        """Fold ``fold``'s surrogate, fitted on the coalitions of the ``train`` units."""
        Z = _coalitions(masks[train], paired).astype(np.float64)
        y = u[train].ravel()
        choice = self.surrogate
        if isinstance(choice, str) and choice == "auto":
            units = np.repeat(np.arange(int(train.sum())), 2 if paired else 1)
            idx = np.flatnonzero(train)
            # score on the odd-numbered sampled units (not those of enumerated strata)
            sampled = np.flatnonzero(scale[idx] != 1.0)
            test = sampled[1::2]
            choice = _choose(Z, y, units, test, scale[idx][test], mass, paired, fold,
                             bool(self.ensembles))
        elif isinstance(choice, str) and choice == "linear":
            choice = None
        return _Surrogate(Z, y, choice, fold)

