"""Regression-adjusted MSR: the Banzhaf regression as a control variate for any semivalue.

Witter, Liu & Musco (2025), "Regression-adjusted Monte Carlo estimators for
Shapley values and probabilistic values", arXiv 2506.11849. The shared
statistics are in :mod:`skdvl.sampling._regression`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from skdvl._coalitions import check_int, log_binom, uniform_coalitions
from skdvl.result import ValuationResult
from skdvl.sampling._base import _RARE
from skdvl.sampling._exact import ExactSampler
from skdvl.sampling._regression import (
    CoalitionSamples,
    _nan_result,
    _RegressionSampler,
    _result,
)
from skdvl.sampling._tree_semivalues import tree_semivalues

__all__ = ["RegressionMSRSampler"]


# --------------------------------------------------------------------------- regression MSR
@dataclass
class _MSRSpec:
    """Sizes of a regression-adjusted MSR game: enumerated border, sampled rest."""

    n: int
    mass: np.ndarray
    border: list[int]
    sizes: np.ndarray
    q: np.ndarray


def _msr_size_distribution(mass: np.ndarray, n: int, sizes: np.ndarray) -> np.ndarray:
    """``q(s)`` proportional to the weight the semivalue gives coalitions of size ``s``.

    A coalition ``S`` of size ``s`` enters player ``i``'s value with weight
    ``m(s - 1) / C(n-1, s-1)`` if ``i`` is in it and ``m(s) / C(n-1, s)`` if not;
    summed over the ``C(n, s)`` coalitions and the players this is
    ``n (m(s - 1) + m(s))``: the sizes the semivalue cares about are drawn most.
    """
    m_prev = np.where(sizes >= 1, mass[np.clip(sizes - 1, 0, n - 1)], 0.0)
    m_here = np.where(sizes <= n - 1, mass[np.clip(sizes, 0, n - 1)], 0.0)
    q = m_prev + m_here
    q = np.maximum(q, q.max() * 1e-12)  # every sampled size stays possible
    return q / q.sum()


def _msr_coefficients(mass: np.ndarray, n: int, sizes: np.ndarray) -> tuple[Any, Any]:
    """Per coalition size: weight of ``u(S)`` for a player in ``S`` (``a``) and out (``b``).

    ``phi_i = sum_S u(S) (1[i in S] a(|S|) - 1[i not in S] b(|S|))`` with
    ``a(s) = m(s - 1) / C(n-1, s-1)`` and ``b(s) = m(s) / C(n-1, s)``.
    """
    sizes = np.asarray(sizes)
    a = np.zeros(sizes.shape)
    b = np.zeros(sizes.shape)
    inside, outside = sizes >= 1, sizes <= n - 1
    a[inside] = mass[sizes[inside] - 1] * np.exp(-log_binom(n - 1, sizes[inside] - 1))
    b[outside] = mass[sizes[outside]] * np.exp(-log_binom(n - 1, sizes[outside]))
    return a, b


class RegressionMSRSampler(_RegressionSampler):
    """Regression-adjusted maximum sample reuse, for any semivalue.

    Witter, Liu & Musco (2025), "Regression-adjusted Monte Carlo estimators for
    Shapley values and probabilistic values", arXiv 2506.11849. Every semivalue
    is a weighted sum of utilities, ``phi_i = sum_S u(S) c_i(S)``, and of a
    linear function ``f(S) = beta_0 + sum_{j in S} beta_j`` it is exactly
    ``beta_i``. So fit a linear model ``f`` to the sampled utilities and
    estimate ``phi_i = beta_i + sum_S (u(S) - f(S)) c_i(S)`` by importance
    sampling (every sample serves every player, as in MSR): only the residual
    of the utility is sampled. The samples are split in ``n_folds`` folds and
    each fold's residuals are taken against a model fitted on the other folds
    (cross-fitting), so the estimate is unbiased whatever the fit.

    Coalition sizes are drawn in proportion to the weight the semivalue puts on
    them (see :func:`_msr_size_distribution`; for Banzhaf values this is MSR's
    uniform coalitions), uniformly given the size. The empty and full coalitions,
    and for semivalues that weigh them (Shapley, Beta Shapley) all coalitions of
    sizes 1 and ``n - 1``, are enumerated once and enter exactly. The samples
    serve any other semivalue too (:meth:`reweight`), unbiased wherever the
    sampled sizes cover the other semivalue's weights.

    Parameters
    ----------
    n_folds : int, default=2
        Folds of the cross-fitting (at least 2).
    ridge : float, default=1e-6
        Ridge penalty of the linear fit ("linear"), relative to the mean diagonal of its
        Gram matrix; any value keeps the estimate unbiased.
    batch_size : int, default=128
        Coalitions per block.
    surrogate : "linear", "tree", "auto" or a tree regressor, default="linear"
        The model of the utility whose semivalues are known exactly. "linear" is
        the linear model above. The others add one intercept per coalition size
        (a utility that depends on the size only, as in symmetric games, is then
        fitted exactly; its semivalue is known in closed form) and a scikit-learn
        tree model fitted to that fit's residuals on the coalitions' indicator
        vectors, whose semivalues
        :func:`~skdvl.sampling._tree_semivalues.tree_semivalues` computes
        exactly: "tree" is a ``GradientBoostingRegressor`` of 100 trees of depth
        4; an instance (``DecisionTreeRegressor``, ``ExtraTreeRegressor``,
        ``RandomForestRegressor``, ``ExtraTreesRegressor`` or
        ``GradientBoostingRegressor``) is cloned per fold, an unset
        ``random_state`` becoming the fold's index; "auto" chooses, per fold, among
        no tree, "tree", a full-depth ``DecisionTreeRegressor`` on the residuals
        and one on the utilities themselves, the one that leaves the smallest
        variance of the values on half of the fold's training units when fitted
        on the other half (the fold's own units are not used, so the estimate
        stays unbiased). Trees capture thresholds and interactions that a
        linear model leaves in the residual (Witter et al., 2025); they cost a
        few fits per fold each time the values are asked for.
    """

    def __init__(self, n_folds: int = 2, ridge: float = 1e-6, batch_size: int = 128,
                 surrogate: Any = "linear") -> None:
        check_int(n_folds, "n_folds", 2)
        _check_ridge(ridge)
        check_int(batch_size, "batch_size", 1)
        _check_surrogate(surrogate)
        self.n_folds, self.ridge, self.batch_size = n_folds, ridge, batch_size
        self.surrogate = surrogate

    def _check(self) -> None:
        super()._check()
        check_int(self.n_folds, "n_folds", 2)
        _check_ridge(self.ridge)
        _check_surrogate(self.surrogate)

    def weights(self, mass: np.ndarray, n: int) -> _MSRSpec:
        self._check()
        mass = np.asarray(mass, dtype=np.float64)
        border = [0, n]
        if n >= 4 and mass[0] + mass[n - 1] >= 1.0 / n:
            border += [1, n - 1]
        sizes = np.array([s for s in range(n + 1) if s not in border])
        return _MSRSpec(n, mass, border, sizes, _msr_size_distribution(mass, n, sizes))

    def run_block(self, ev, rng, weights, block, start=0, stop=None):  # type: ignore[no-untyped-def]
        n, spb = ev.n, self.samples_per_block
        stats = CoalitionSamples(n, spec=weights)
        self._border(ev, stats, weights.border, block, start)
        idx = rng.choice(weights.sizes.shape[0], size=spb, p=weights.q)
        sizes = weights.sizes[idx]
        masks = uniform_coalitions(rng, sizes, n)[start:stop]
        q_of_coalition = np.exp(np.log(weights.q[idx]) - log_binom(n, sizes))[start:stop]
        u = ev.evaluate(masks)
        stats.add(masks, u[:, None], 1.0 / q_of_coalition)
        # running sums per fold of the linear fit: sample j of block b is in fold (b*spb+j) % K
        folds = (block * spb + np.arange(spb)[start:stop]) % int(self.n_folds)
        z = np.column_stack([np.ones(masks.shape[0]), masks.astype(np.float64)])
        for k in range(int(self.n_folds)):
            sel = folds == k
            zk = z[sel]
            stats.accumulate(f"gram{k}", zk.T @ zk)
            stats.accumulate(f"zu{k}", zk.T @ u[sel])
        return (stats,)

    def result(self, stats: tuple[Any, ...]) -> ValuationResult:
        s = stats[0]
        return self._estimate(s, None if s.spec is None else s.spec.mass)

    def reweight(self, state: Any, mass: np.ndarray) -> ValuationResult:
        """Values of another semivalue from the same samples (importance reweighting)."""
        if not hasattr(state, "moments"):  # an enumerated small game
            return ExactSampler().reweight(state, mass)
        s = state.moments[0]
        mass = np.asarray(mass, dtype=np.float64)
        if s.spec is not None:
            _warn_uncovered(s.spec, mass)
        return self._estimate(s, mass)

    def _estimate(self, s: CoalitionSamples, mass: np.ndarray | None) -> ValuationResult:
        n, k_folds = s.n, int(self.n_folds)
        if mass is None or s.border_u is None or s.n_units < 2 * k_folds:
            return _nan_result(n)
        assert s.border_masks is not None
        fits = self._fold_fits(s, mass)
        if fits is None:
            return _nan_result(n)
        # fold k's estimate: the exact semivalue of the fit without fold k + the exact
        # border sum of its residuals + the mean of its sampled units' weighted
        # residuals; the value is the mean over folds
        a_b, b_b = _msr_coefficients(mass, n, s.border_masks.sum(axis=1))
        zb = s.border_masks.astype(np.float64)
        e_b = fits.border_residuals(zb, s.border_u)  # (border, K)
        exact = fits.values(mass) + (zb.T @ (a_b[:, None] * e_b)).T - ((1 - zb).T @ (
            b_b[:, None] * e_b)).T
        sums, sq = np.zeros((k_folds, n)), np.zeros((k_folds, n))
        counts = np.zeros(k_folds)
        first = 0
        for masks, u, rho in s.chunks():
            m = masks.shape[0]
            folds = (first + np.arange(m)) % k_folds  # a unit's fold is its draw order mod K
            first += m
            a, b = _msr_coefficients(mass, n, masks.sum(axis=1))
            e = fits.residuals(masks, folds, u[:, 0]) * rho
            h = np.where(masks, (a * e)[:, None], -(b * e)[:, None])
            for k in range(k_folds):
                sel = folds == k
                sums[k] += h[sel].sum(axis=0)
                sq[k] += (h[sel] ** 2).sum(axis=0)
                counts[k] += sel.sum()
        means = sums / counts[:, None]
        var = np.maximum(sq - counts[:, None] * means**2, 0.0) / (counts[:, None] - 1)
        values = (exact + means).mean(axis=0)
        stderr = np.sqrt((var / counts[:, None]).sum(axis=0)) / k_folds
        return _result(values, stderr, s.n_coalitions)

    def _fold_fits(self, s: CoalitionSamples, mass: np.ndarray) -> Any:
        """The surrogate fitted once per fold, on the border and the other folds."""
        if isinstance(self.surrogate, str) and self.surrogate == "linear":
            betas = [self._fit(s, k) for k in range(int(self.n_folds))]
            if any(beta is None for beta in betas):
                return None
            return _LinearFits(np.array(betas))  # (K, n + 1)
        return _TreeFits.fit(self.surrogate, s, int(self.n_folds), mass)

    def _fit(self, s: CoalitionSamples, k: int) -> np.ndarray | None:
        """The linear model fitted on the border coalitions and every fold but ``k``."""
        k_folds = int(self.n_folds)
        assert s.border_masks is not None and s.border_u is not None
        zb = np.column_stack([np.ones(s.border_masks.shape[0]),
                              s.border_masks.astype(np.float64)])
        gram = zb.T @ zb
        zu = zb.T @ s.border_u
        for j in range(k_folds):
            if j != k and f"gram{j}" in s.sums:
                gram = gram + s.sums[f"gram{j}"]
                zu = zu + s.sums[f"zu{j}"]
        return _ridge_solve(gram, zu, float(self.ridge))


def _ridge_solve(gram: np.ndarray, zu: np.ndarray, ridge: float) -> np.ndarray | None:
    """The linear fit's coefficients from its Gram matrix (intercept first, not
    penalised; ``ridge`` relative to the mean diagonal); None if singular."""
    lam = ridge * max(float(np.trace(gram)) / gram.shape[0], 1e-12)
    reg = np.full(gram.shape[0], lam)
    reg[0] = 0.0  # the intercept is not penalised
    try:
        beta = np.linalg.solve(gram + np.diag(reg), zu)
    except np.linalg.LinAlgError:
        return None
    return beta if np.all(np.isfinite(beta)) else None


def _check_ridge(ridge: Any) -> None:
    ok = isinstance(ridge, (int, float, np.floating, np.integer)) and not isinstance(
        ridge, bool) and math.isfinite(ridge) and ridge >= 0
    if not ok:
        raise ValueError(f"ridge must be a finite number >= 0. Got {ridge!r} instead.")


def _warn_uncovered(spec: _MSRSpec, mass: np.ndarray) -> None:
    """Warn when another semivalue weighs sizes the samples hardly ever drew."""
    n = spec.n
    need = np.zeros(n + 1)
    need[1:] += mass
    need[:n] += mass
    need /= need.sum()
    rare = np.zeros(n + 1, dtype=bool)
    rare[spec.sizes[spec.q < _RARE]] = True
    if need[rare].sum() > 0.01:
        warnings.warn(
            f"The samples drew coalitions of sizes {np.flatnonzero(rare)[:6]}... less than once "
            f"in {1 / _RARE:.0f} draws, yet the new semivalue puts {need[rare].sum():.0%} of its "
            "weight there: its values and standard errors are unreliable. Fit it directly, "
            "or reweight from sampler='svarm' or 'exact'.", UserWarning, stacklevel=4)


class _LinearFits:
    """Fold fits of the linear surrogate ``f(S) = beta_0 + sum_{j in S} beta_j``,
    whose semivalue is ``beta`` itself (every marginal of player ``i`` is ``beta_i``)."""

    def __init__(self, betas: np.ndarray) -> None:
        self.betas = betas

    def values(self, mass: np.ndarray) -> np.ndarray:
        return self.betas[:, 1:]

    def border_residuals(self, zb: np.ndarray, u: np.ndarray) -> np.ndarray:
        """``u - f_k`` on the border coalitions ``zb`` (float), (border, K)."""
        return u[:, None] - self.betas[:, 0] - zb @ self.betas[:, 1:].T

    def residuals(self, masks: np.ndarray, folds: np.ndarray, u: np.ndarray) -> np.ndarray:
        """``u - f_k`` of each unit, ``k`` its fold."""
        beta = self.betas[folds]
        return u - beta[:, 0] - np.einsum("ij,ij->i", masks.astype(np.float64), beta[:, 1:])


class _SizedLinear:
    """``g(S) = gamma_{|S|} + sum_{j in S} beta_j`` with ``sum_j beta_j = 0``: one
    intercept per coalition size and player effects that carry no size trend,
    fitted by least squares (minimum norm).

    Its semivalue is exact: ``beta_i`` plus, for every player alike,
    ``sum_k m(k) (gamma_{k+1} - gamma_k)`` (a function of the size gives every
    marginal at size ``k`` that difference). A symmetric game is such a function,
    so its residual is zero. A size without a training coalition takes the
    intercept of the nearest size that has one (the lower of two).
    """

    def __init__(self, Z: np.ndarray, u: np.ndarray) -> None:
        n = Z.shape[1]
        sizes = np.rint(Z.sum(axis=1)).astype(np.intp)
        seen = np.unique(sizes)
        # each size 0..n to its nearest seen size
        near = seen[np.abs(np.arange(n + 1)[:, None] - seen[None, :]).argmin(axis=1)]
        F = np.column_stack([near[sizes][:, None] == seen[None, :], Z - sizes[:, None] / n])
        coef = np.linalg.lstsq(F.astype(np.float64), u, rcond=None)[0]
        self.gamma = coef[np.searchsorted(seen, near)]  # (n + 1,)
        self.beta = coef[seen.size:]
        self.n = n

    def predict(self, Z: np.ndarray) -> np.ndarray:
        sizes = np.rint(Z.sum(axis=1)).astype(np.intp)
        return self.gamma[sizes] + Z @ self.beta - sizes * (self.beta.sum() / self.n)

    def values(self, mass: np.ndarray) -> np.ndarray:
        return (self.beta - self.beta.sum() / self.n) + float(np.sum(mass * np.diff(self.gamma)))


class _TreeFits:
    """Fold fits ``f = g(S) + tree(S)`` whose semivalues are exact: ``g`` the
    size-wise linear fit (:class:`_SizedLinear`), the tree fitted to its residuals,
    with values :func:`~skdvl.sampling._tree_semivalues.tree_semivalues`. A fold
    whose tree is None is ``g`` alone (``surrogate="auto"`` may choose that)."""

    def __init__(self, linear: list[_SizedLinear | None], models: list[Any]) -> None:
        self.linear, self.models = linear, models

    @classmethod
    def fit(cls, surrogate: Any, s: CoalitionSamples, k_folds: int, mass: np.ndarray
            ) -> _TreeFits:
        assert s.border_masks is not None and s.border_u is not None
        parts = [(m, u[:, 0], r) for m, u, r in s.chunks()]
        X = np.concatenate([m for m, _, _ in parts]) if parts else np.zeros((0, s.n), bool)
        y = np.concatenate([u for _, u, _ in parts]) if parts else np.zeros(0)
        rho = np.concatenate([r for _, _, r in parts]) if parts else np.zeros(0)
        folds = np.arange(X.shape[0]) % k_folds
        linear: list[_SizedLinear | None] = []
        models: list[Any] = []
        for k in range(k_folds):
            keep = folds != k
            Z = np.concatenate([s.border_masks, X[keep]]).astype(np.float64)
            u = np.concatenate([s.border_u, y[keep]])
            choice = (_choose_surrogate(Z, u, rho[keep], mass, k)
                      if isinstance(surrogate, str) and surrogate == "auto" else surrogate)
            lin = None if choice == "deep_alone" else _SizedLinear(Z, u)
            model = None if choice is None else _surrogate_model(choice, k)
            if model is not None:
                model.fit(Z, u if lin is None else u - lin.predict(Z))
            linear.append(lin)
            models.append(model)
        return cls(linear, models)

    def values(self, mass: np.ndarray) -> np.ndarray:
        return np.array([(0.0 if lin is None else lin.values(mass))
                         + (0.0 if m is None else tree_semivalues(m, mass))
                         for lin, m in zip(self.linear, self.models)])

    def _predict(self, k: int, z: np.ndarray) -> np.ndarray:
        lin, model = self.linear[k], self.models[k]
        pred = np.zeros(z.shape[0]) if lin is None else lin.predict(z)
        return pred if model is None else pred + model.predict(z)

    def border_residuals(self, zb: np.ndarray, u: np.ndarray) -> np.ndarray:
        return u[:, None] - np.column_stack([self._predict(k, zb)
                                             for k in range(len(self.models))])

    def residuals(self, masks: np.ndarray, folds: np.ndarray, u: np.ndarray) -> np.ndarray:
        out = np.empty(masks.shape[0])
        z = masks.astype(np.float64)
        for k in range(len(self.models)):
            sel = folds == k
            if sel.any():
                out[sel] = u[sel] - self._predict(k, z[sel])
        return out


def _choose_surrogate(Z: np.ndarray, u: np.ndarray, rho: np.ndarray, mass: np.ndarray,
                      fold: int) -> Any:
    """``surrogate="auto"``: None (the size-wise linear fit alone) or the candidate of
    ``_AUTO`` whose fit on half of a fold's training units leaves the smallest
    estimator variance on the other half.

    ``Z`` and ``u`` are the border coalitions, then the sampled units with their
    importance weights ``rho``. The score of a residual ``e`` of a unit of size ``s``
    is ``(rho e)^2 (s a(s)^2 + (n - s) b(s)^2)``, its contribution to the summed
    variance of the values (:func:`_msr_coefficients`), so the choice follows the
    semivalue and the sampling. Only the
    fold's training units are used: the fold's own residuals stay independent of
    its surrogate, and its estimate unbiased.
    """
    n, n_border = Z.shape[1], Z.shape[0] - rho.shape[0]
    rest = np.arange(n_border, Z.shape[0])
    learn = np.concatenate([np.arange(n_border), rest[0::2]])
    test = rest[1::2]
    if test.size < 8:
        return None
    lin = _SizedLinear(Z[learn], u[learn])
    sizes = np.rint(Z[test].sum(axis=1)).astype(np.intp)
    a, b = _msr_coefficients(mass, n, sizes)
    weight = rho[1::2] ** 2 * (sizes * a ** 2 + (n - sizes) * b ** 2)
    r_learn, r_test = u[learn] - lin.predict(Z[learn]), u[test] - lin.predict(Z[test])
    scores: dict[Any, float] = {None: float(np.sum(weight * r_test ** 2))}
    for candidate in _AUTO:
        model = _surrogate_model(candidate, fold)
        alone = candidate == "deep_alone"
        model.fit(Z[learn], u[learn] if alone else r_learn)
        scores[candidate] = float(np.sum(weight * ((u[test] if alone else r_test)
                                                   - model.predict(Z[test])) ** 2))
    return min(scores, key=lambda c: scores[c])  # a tie goes to the cheapest, None


#: the tree of ``surrogate="tree"``: 100 gradient-boosted trees of depth 4 on the linear
#: fit's residuals (see benchmarks/README.md, "Estimators for hard games", for the choice)
_DEFAULT_TREE = {"n_estimators": 100, "max_depth": 4, "learning_rate": 0.1}

_TREE_TYPES = ("DecisionTreeRegressor", "ExtraTreeRegressor", "RandomForestRegressor",
               "ExtraTreesRegressor", "GradientBoostingRegressor")


#: the candidates of ``surrogate="auto"`` besides the size-wise linear fit alone:
#: boosted shallow trees on its residuals (thresholds a few players deep), one
#: full-depth tree on them, and one full-depth tree alone (a utility that is an exact
#: function of a few players' presence, as the airport game's maximum)
_AUTO = ("tree", "deep", "deep_alone")


def _surrogate_model(surrogate: Any, fold: int) -> Any:
    """A fresh, seeded copy of the surrogate for ``fold``: a random ``random_state``
    would make the values irreproducible, so an unset one becomes the fold index."""
    from sklearn.base import clone
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.tree import DecisionTreeRegressor

    if isinstance(surrogate, str):
        if surrogate in ("deep", "deep_alone"):
            return DecisionTreeRegressor(random_state=fold)
        return GradientBoostingRegressor(**_DEFAULT_TREE, random_state=fold)
    model = clone(surrogate)
    if "random_state" in model.get_params() and model.get_params()["random_state"] is None:
        model.set_params(random_state=fold)
    return model


def _check_surrogate(surrogate: Any) -> None:
    if isinstance(surrogate, str) and surrogate in ("linear", "tree", "auto"):
        return
    if type(surrogate).__name__ in _TREE_TYPES and hasattr(surrogate, "get_params"):
        return
    raise ValueError(
        "surrogate must be 'linear', 'tree' or an unfitted scikit-learn tree regressor "
        f"({', '.join(_TREE_TYPES)}), whose semivalues are computed exactly. Got "
        f"{surrogate!r} instead.")
