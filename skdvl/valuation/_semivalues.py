"""Semivalue valuers: Shapley, Banzhaf, Beta Shapley and leave-one-out.

A semivalue of training row ``i`` averages its marginal contribution
``u(T + i) - u(T)`` over coalitions ``T`` of the other rows, weighing each size
``k`` of ``T`` by a mass ``m(k)`` (Dubey, Neyman & Weber, 1981, "Value theory
without efficiency"). The valuers here differ only in ``m``; the samplers of
:mod:`skdvl.sampling` and the engine of :mod:`skdvl._engine` do the rest.
"""

from __future__ import annotations

import copy
import warnings
from numbers import Integral, Real
from typing import Any

import numpy as np
from scipy.stats import betabinom, binom
from sklearn.base import BaseEstimator, is_classifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import check_cv
from sklearn.utils import check_random_state, get_tags
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.multiclass import type_of_target

from skdvl._engine import EngineState, evaluate_coalitions, run_sampling
from skdvl.base import ValuerMixin, pandas_index, validate_valuation_data
from skdvl.result import ValuationResult
from skdvl.sampling import (
    AntitheticPermutationSampler,
    AntitheticSampler,
    ExhaustiveSampler,
    MSRSampler,
    OwenSampler,
    PermutationSampler,
    StratifiedSampler,
    UniformSampler,
    exact_semivalues,
)
from skdvl.stopping import AbsoluteStandardError, MaxTime, MaxUpdates, Status, StoppingCriterion
from skdvl.utility import ModelUtility, warn_fit_errors

__all__ = ["ShapleyValuer", "BanzhafValuer", "BetaShapleyValuer", "LOOValuer"]


# --------------------------------------------------------------------------- the math
def shapley_mass(n: int) -> np.ndarray:
    """Shapley's mass on coalition sizes 0..n-1: uniform, ``1/n`` (Shapley, 1953)."""
    return np.full(n, 1.0 / n)


def banzhaf_mass(n: int) -> np.ndarray:
    """Banzhaf's mass: every coalition weighs ``1 / 2^(n-1)`` (Banzhaf, 1965)."""
    return binom.pmf(np.arange(n), n - 1, 0.5)


def beta_mass(n: int, alpha: float, beta: float) -> np.ndarray:
    """Beta Shapley's mass on sizes: a beta-binomial(n - 1, beta, alpha) distribution.

    Kwon & Zou (2022), "Beta Shapley: a unified and noise-reduced data valuation
    framework for machine learning", AISTATS, Eq. (4): a coalition of size k
    weighs ``Beta(k + beta, n - 1 - k + alpha) / Beta(alpha, beta)``; summed over
    the ``C(n-1, k)`` coalitions of that size this is the beta-binomial pmf.
    ``alpha = beta = 1`` is Shapley; ``alpha > beta`` favours small coalitions.
    """
    return betabinom.pmf(np.arange(n), n - 1, beta, alpha)


_RARE = 1e-4  # a coalition size drawn less often than this is, in practice, never drawn


def importance_weights(mass: np.ndarray, sampler: Any, n: int) -> np.ndarray:
    """``m(k) / pi(k)``: unbiased weights of a sampler's marginals for a semivalue."""
    pi = sampler.size_distribution(n)
    missing = (pi <= 0) & (mass > 0)
    if np.any(missing):
        raise ValueError(
            f"{sampler!r} never draws coalitions of sizes {np.flatnonzero(missing)[:5]}, "
            "which this semivalue weighs; choose another sampler."
        )
    weights = np.divide(mass, pi, out=np.zeros(n), where=pi > 0)
    unseen = mass[pi < _RARE].sum()
    if unseen > 0.01:
        warnings.warn(
            f"{sampler!r} draws coalitions of sizes {np.flatnonzero(pi < _RARE)[:6]}... less "
            f"than once in {1 / _RARE:.0f} samples, yet they carry {unseen:.0%} of this "
            f"semivalue's weight at n = {n}: estimates and their standard errors are "
            "unreliable. Prefer the permutation, owen or stratified samplers (or msr for "
            "Banzhaf values).", UserWarning, stacklevel=4)
    return weights


def _combine_games(parts: list[ValuationResult], n: int) -> ValuationResult:
    """Average the values a row received in several games (cross-valuation).

    The standard error of the mean of independent estimates is
    ``sqrt(sum(se_g^2)) / G``.
    """
    total, se2, games, counts = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n, np.int64)
    for part in parts:
        se = np.where(part.counts > 0, part.stderr, 0.0)
        np.add.at(total, part.indices, part.values)
        np.add.at(se2, part.indices, se**2)
        np.add.at(games, part.indices, 1)
        np.add.at(counts, part.indices, part.counts)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.where(games > 0, total / games, np.nan)
        stderr2 = se2 / games**2
    variances = np.where(counts > 0, stderr2 * counts, 0.0)
    return ValuationResult(values, variances=variances, counts=counts)


# --------------------------------------------------------------------------- shared shell
_COMMON_CONSTRAINTS: dict[str, list[Any]] = {
    "estimator": [HasMethods(["fit"]), None],
    "scoring": [str, callable, None],
    "utility": [HasMethods(["__call__"]), None],
    "cv": ["cv_object"],
    "default_score": [Real],
    "error_score": [StrOptions({"raise"}), Real, None],
    "n_jobs": [Integral, None],
    "verbose": ["verbose"],
}
_SAMPLING_CONSTRAINTS: dict[str, list[Any]] = {
    "max_updates": [Interval(Integral, 1, None, closed="left"), None],
    "stderr_tol": [Interval(Real, 0, None, closed="neither"), None],
    "max_time": [Interval(Real, 0, None, closed="neither"), None],
    "stopping": [StoppingCriterion, None],
    "random_state": ["random_state"],
    "warm_start": ["boolean"],
}


class _SemivalueValuer(ValuerMixin, BaseEstimator):
    """Validation, cross-valuation and dispatch shared by the semivalue valuers."""

    _samplers: dict[str, Any] = {}
    _algorithm = "semivalue"

    def __sklearn_tags__(self):  # type: ignore[no-untyped-def]
        tags = super().__sklearn_tags__()
        if self.estimator is not None:  # data handling is the estimator's
            inner = get_tags(self.estimator).input_tags
            tags.input_tags.sparse = inner.sparse
            tags.input_tags.allow_nan = inner.allow_nan
        return tags

    # -- hooks --------------------------------------------------------------
    def _mass(self, n: int) -> np.ndarray:
        raise NotImplementedError

    def _resolve_sampler(self) -> Any:
        sampler, truncation = self.sampler, getattr(self, "truncation", None)
        if isinstance(sampler, str):
            if sampler not in self._samplers:
                raise ValueError(
                    f"The 'sampler' parameter of {type(self).__name__} must be one of "
                    f"{sorted(self._samplers)} or a sampler instance. Got {sampler!r} instead."
                )
            factory = self._samplers[sampler]
            if truncation is not None:
                if factory not in (PermutationSampler, AntitheticPermutationSampler):
                    raise ValueError(
                        f"truncation={truncation!r} applies to permutation samplers only; "
                        f"sampler={sampler!r} does not truncate. Set truncation=None."
                    )
                return factory(truncation)
            return factory()
        if not hasattr(sampler, "kind"):
            raise ValueError(
                f"The 'sampler' parameter of {type(self).__name__} must be a name or a sampler "
                f"from skdvl.sampling. Got {sampler!r} instead."
            )
        if truncation is not None:
            raise ValueError(
                "Pass truncation to the sampler instance, not to the valuer. "
                f"Got truncation={truncation!r} with sampler={sampler!r}."
            )
        if sampler.kind == "msr" and self._algorithm != "banzhaf":
            raise ValueError(
                f"MSR sampling estimates Banzhaf values only; {type(self).__name__} cannot use "
                "it. Choose another sampler."
            )
        return sampler

    def _stopping(self) -> StoppingCriterion:
        parts: list[StoppingCriterion] = []
        if self.max_updates is not None:
            parts.append(MaxUpdates(self.max_updates))
        if self.stderr_tol is not None:
            parts.append(AbsoluteStandardError(self.stderr_tol))
        if self.max_time is not None:
            parts.append(MaxTime(self.max_time))
        if self.stopping is not None:
            parts.append(copy.deepcopy(self.stopping))
        if not parts:
            raise ValueError(
                f"{type(self).__name__} needs a budget: set max_updates, stderr_tol, max_time "
                "or stopping. Got all four None."
            )
        criterion = parts[0]
        for part in parts[1:]:
            criterion = criterion | part
        return criterion

    # -- fit ----------------------------------------------------------------
    def fit(self, X: Any = None, y: Any = None, *, X_val: Any = None, y_val: Any = None) -> Any:
        """Value the training rows.

        Parameters
        ----------
        X : array-like, sparse matrix or DataFrame of shape (n_samples, n_features)
            Training data; each row is a player. None when ``utility`` is given.
        y : array-like of shape (n_samples,)
            Training targets.
        X_val, y_val : array-like, default=None
            Validation data. Without it, rows are valued by ``cv``-fold
            cross-valuation: each fold is the validation set of a game over the
            other rows, and a row's value is the mean over the ``cv - 1`` games
            it plays in (``cv`` times the cost of one valuation).

        Returns
        -------
        self : object
            The fitted valuer.
        """
        self._validate_params()
        sampler = self._resolve_sampler()
        games, index = self._games(X, y, X_val, y_val)
        n_total = self.n_players_
        warm = getattr(self, "warm_start", False) and self._can_continue(games)
        if not warm:
            self._entropy_ = int(check_random_state(getattr(self, "random_state", None))
                                 .randint(np.iinfo(np.int32).max))
            self._states_: list[Any] = [None] * len(games)
        parts, done = [], True
        for g, (utility, players) in enumerate(games):
            result, state = self._value_game(utility, sampler, g, self._states_[g])
            self._states_[g] = state
            result.indices = players
            parts.append(result)
            if state.interrupted:
                done = False
                break
        self._finish(parts, n_total, index, done)
        return self

    def _value_game(self, utility: Any, sampler: Any, g: int, state: Any) -> tuple[Any, Any]:
        n = int(utility.n_players)
        desc = f"{type(self).__name__} game {g + 1}"
        if getattr(sampler, "kind", None) == "exhaustive":
            return self._exact(utility, sampler, n, desc)
        weights = None if sampler.kind == "msr" else importance_weights(
            self._mass(n), sampler, n)
        state = run_sampling(
            utility, sampler, weights, self._stopping(), entropy=self._entropy_, game=g,
            state=state, n_jobs=self.n_jobs, verbose=self.verbose,
            algorithm=self._algorithm, desc=desc,
        )
        return state.result(self._algorithm), state

    def _exact(self, utility: Any, sampler: Any, n: int, desc: str) -> tuple[Any, Any]:
        if n > sampler.max_players:
            raise ValueError(
                f"sampler='exact' needs 2^n utility evaluations; n = {n} players is more than "
                f"max_players = {sampler.max_players}. Use a Monte Carlo sampler, or pass "
                f"sampler=ExhaustiveSampler(max_players={n}) to insist."
            )
        u, n_evals, n_err, first = evaluate_coalitions(
            utility, n_codes=1 << n, n_jobs=self.n_jobs, verbose=self.verbose, desc=desc)
        values = exact_semivalues(u, n, self._mass(n))
        state = EngineState.new("exact", n)
        state.n_evaluations, state.status = n_evals, Status.CONVERGED
        state.add_errors(n_err, first)
        counts = np.full(n, 1 << (n - 1), dtype=np.int64)
        return ValuationResult(values, counts=counts, algorithm=self._algorithm), state

    def _finish(self, parts: list[ValuationResult], n: int, index: Any, done: bool) -> None:
        states = [s for s in self._states_ if s is not None]
        result = parts[0] if len(parts) == 1 and len(parts[0]) == n else _combine_games(parts, n)
        result.algorithm = self._algorithm
        self._store_result(result, index)
        self.n_utility_evaluations_ = int(sum(s.n_evaluations for s in states))
        self.converged_ = bool(done and all(s.status == Status.CONVERGED for s in states))
        warn_fit_errors(sum(s.n_errors for s in states),
                        next((s.first_error for s in states if s.first_error), None),
                        self.n_utility_evaluations_)

    def _can_continue(self, games: list[Any]) -> bool:
        states = getattr(self, "_states_", None)
        return (
            states is not None and len(states) == len(games)
            and all(s is not None and s.n == int(u.n_players) and s.kind != "exact"
                    for s, (u, _) in zip(states, games))
        )

    # -- data ---------------------------------------------------------------
    def _games(self, X: Any, y: Any, X_val: Any, y_val: Any) -> tuple[list[Any], Any]:
        """The (utility, global indices of its players) pairs to value."""
        if self.utility is not None:
            if X is not None or y is not None or X_val is not None:
                raise ValueError(
                    "With a custom utility, fit() takes no data: the utility defines the "
                    f"players. Got X of type {type(X).__name__} as well."
                )
            n = int(self.utility.n_players)
            self.n_players_ = n
            return [(self.utility, np.arange(n))], None
        estimator = self._estimator(y)
        index = pandas_index(X)
        X, y, X_val, y_val = validate_valuation_data(
            self, X, y, X_val, y_val, estimator=estimator, min_samples=2)
        self.n_players_ = n = X.shape[0]
        kwargs = dict(scoring=self.scoring, default_score=self.default_score,
                      error_score=self.error_score)
        if X_val is not None:
            return [(ModelUtility(estimator, X, y, X_val, y_val, **kwargs), np.arange(n))], index
        cv = check_cv(self.cv, y, classifier=is_classifier(estimator))
        games = []
        for train, test in cv.split(X, y):
            games.append((ModelUtility(estimator, _rows(X, train), y[train], _rows(X, test),
                                       y[test], **kwargs), train))
        return games, index

    def _estimator(self, y: Any) -> Any:
        if self.estimator is not None:
            return self.estimator
        if y is not None and type_of_target(y) in ("binary", "multiclass"):
            return LogisticRegression(max_iter=1000)
        return LinearRegression()


def _rows(X: Any, rows: np.ndarray) -> Any:
    return X[rows]


def _store_params(obj: Any, params: dict[str, Any]) -> None:
    """``__init__`` stores its arguments, unchanged, under their own names."""
    for name, value in params.items():
        if name not in ("self", "__class__"):
            setattr(obj, name, value)


_SHARED_PARAMS = """
    estimator : estimator object, default=None
        The model whose clones are fitted on coalitions of rows. None means
        ``LogisticRegression(max_iter=1000)`` for classification targets and
        ``LinearRegression()`` otherwise. Fix its ``random_state`` if it has one,
        or values will not be reproducible.
    scoring : str or callable, default=None
        Scorer for the validation data (see :func:`sklearn.metrics.get_scorer`);
        None means ``estimator.score``.
    utility : object, default=None
        A custom utility (any object with ``n_players`` and ``__call__(subset)``,
        e.g. a game of :mod:`skdvl.games`); then ``fit()`` takes no data.
    sampler : str or sampler instance
        How coalitions are drawn; see :mod:`skdvl.sampling`. "exact" evaluates
        each of the ``2^n`` coalitions once and refuses ``n > 20`` unless given
        ``ExhaustiveSampler(max_players=...)``.
    max_updates : int or None, default=100
        Stop once a value has this many updates. Sampling stops at the first of
        ``max_updates``, ``stderr_tol``, ``max_time`` and ``stopping``.
    stderr_tol : float or None, default=None
        Stop (converged) once every standard error is below this.
    max_time : float or None, default=None
        Stop after this many seconds (results then depend on the machine).
    stopping : StoppingCriterion or None, default=None
        Any criterion of :mod:`skdvl.stopping`, e.g. ``RankCorrelation(0.01)``.
    cv : int, cross-validation generator or iterable, default=5
        Folds of the cross-valuation used when ``fit`` gets no ``X_val``.
    default_score : float, default=0.0
        Utility of the empty coalition and of degenerate ones (a single class).
    error_score : "raise", float or None, default=None
        Utility of a coalition whose fit raises; None means ``default_score``.
        Failures are summarised in one :class:`~skdvl.utility.UtilityFitWarning`.
    n_jobs : int, default=None
        Parallel workers (joblib). Values do not depend on it.
    random_state : int, RandomState instance or None, default=None
        Seeds the sampling; one seed gives identical values for any ``n_jobs``
        and joblib backend.
    verbose : int, default=0
        Show a progress bar when > 0.
    warm_start : bool, default=False
        Continue sampling from the previous fit (raise ``max_updates`` to get
        more samples) instead of starting over."""

_SHARED_ATTRS = """
    values_ : ndarray or Series of shape (n_samples,)
        The values (a Series on the index of ``X`` when ``X`` is a DataFrame).
    stderr_ : ndarray or Series of shape (n_samples,)
        Their standard errors (0 for exact values).
    counts_ : ndarray or Series of shape (n_samples,)
        Number of marginal contributions behind each value.
    result_ : ValuationResult
        All of the above in one object.
    n_utility_evaluations_ : int
        Utility evaluations done (model fits, for model utilities; cache hits
        are not counted).
    converged_ : bool
        True for exact values and when a convergence criterion (``stderr_tol``,
        ``RankCorrelation``) stopped sampling; False when a budget did.
    n_players_ : int
        Number of players (training rows).
    n_features_in_ : int
        Number of features seen in ``fit`` (data mode only)."""


def _doc(cls: type) -> type:
    cls.__doc__ = (cls.__doc__ or "").replace("%(params)s", _SHARED_PARAMS).replace(
        "%(attrs)s", _SHARED_ATTRS)
    return cls


@_doc
class ShapleyValuer(_SemivalueValuer):
    """Data Shapley values of training rows.

    The Shapley value of row ``i`` is its marginal contribution to the
    validation score averaged over all orders in which rows could be added
    (Shapley, 1953; Ghorbani & Zou, 2019, "Data Shapley: equitable valuation of
    data for machine learning", ICML).

    Parameters
    ----------%(params)s
    truncation : None, float, RelativeTruncation or FixedTruncation, default=None
        Truncated Monte Carlo for permutation samplers: a float ``rtol`` stops a
        permutation once the prefix scores within ``rtol * |u(N)|`` of the full
        data, taking the remaining marginals as 0 (Ghorbani & Zou, 2019).

    Attributes
    ----------%(attrs)s

    Examples
    --------
    >>> from skdvl import ShapleyValuer
    >>> from skdvl.games import SymmetricVotingGame
    >>> game = SymmetricVotingGame(n_players=6)
    >>> v = ShapleyValuer(utility=game, sampler="exact").fit()
    >>> v.values_.round(4)
    array([0.1667, 0.1667, 0.1667, 0.1667, 0.1667, 0.1667])
    >>> v.n_utility_evaluations_
    64
    """

    _algorithm = "shapley"
    _samplers = {
        "permutation": PermutationSampler, "antithetic": AntitheticPermutationSampler,
        "uniform": UniformSampler, "owen": OwenSampler,
        "antithetic_owen": lambda: OwenSampler(antithetic=True),
        "stratified": StratifiedSampler, "exact": ExhaustiveSampler,
    }
    _parameter_constraints = {
        **_COMMON_CONSTRAINTS, **_SAMPLING_CONSTRAINTS,
        "sampler": [str, HasMethods(["run_block"]), ExhaustiveSampler],
        "truncation": [Real, HasMethods(["first_stop"]), None],
    }

    def __init__(
        self, estimator: Any = None, *, scoring: Any = None, utility: Any = None,
        sampler: Any = "permutation", truncation: Any = None, max_updates: int | None = 100,
        stderr_tol: float | None = None, max_time: float | None = None, stopping: Any = None,
        cv: Any = 5, default_score: float = 0.0, error_score: Any = None,
        n_jobs: int | None = None, random_state: Any = None, verbose: int = 0,
        warm_start: bool = False,
    ) -> None:
        _store_params(self, locals())

    def _mass(self, n: int) -> np.ndarray:
        return shapley_mass(n)


@_doc
class BanzhafValuer(_SemivalueValuer):
    """Data Banzhaf values of training rows.

    The Banzhaf value of row ``i`` is its marginal contribution averaged
    uniformly over all coalitions of the other rows (Banzhaf, 1965). Wang & Jia
    (2023), "Data Banzhaf: a robust data valuation framework for machine
    learning", AISTATS, show it is the most robust semivalue to noisy utilities
    and estimate it by maximum sample reuse ("msr"), which uses every utility
    evaluation for every row.

    Parameters
    ----------%(params)s

    Attributes
    ----------%(attrs)s

    Examples
    --------
    >>> from skdvl import BanzhafValuer
    >>> from skdvl.games import SymmetricVotingGame
    >>> v = BanzhafValuer(utility=SymmetricVotingGame(n_players=4), sampler="exact").fit()
    >>> v.values_
    array([0.375, 0.375, 0.375, 0.375])
    """

    _algorithm = "banzhaf"
    _samplers = {
        "msr": MSRSampler, "uniform": UniformSampler, "antithetic": AntitheticSampler,
        "exact": ExhaustiveSampler,
    }
    _parameter_constraints = {
        **_COMMON_CONSTRAINTS, **_SAMPLING_CONSTRAINTS,
        "sampler": [str, HasMethods(["run_block"]), ExhaustiveSampler],
    }

    def __init__(
        self, estimator: Any = None, *, scoring: Any = None, utility: Any = None,
        sampler: Any = "msr", max_updates: int | None = 100,
        stderr_tol: float | None = None, max_time: float | None = None, stopping: Any = None,
        cv: Any = 5, default_score: float = 0.0, error_score: Any = None,
        n_jobs: int | None = None, random_state: Any = None, verbose: int = 0,
        warm_start: bool = False,
    ) -> None:
        _store_params(self, locals())

    def _mass(self, n: int) -> np.ndarray:
        return banzhaf_mass(n)


@_doc
class BetaShapleyValuer(_SemivalueValuer):
    """Beta Shapley values of training rows (Kwon & Zou, 2022, AISTATS).

    A semivalue whose coalition sizes weigh as a beta-binomial distribution:
    ``alpha > beta`` emphasises small coalitions, where a noisy row's harm shows
    most. ``alpha = beta = 1`` gives Shapley values.

    Parameters
    ----------
    alpha, beta : float, default=16.0, 1.0
        The Beta(alpha, beta) parameters; the paper recommends (16, 1).%(params)s

    Attributes
    ----------%(attrs)s

    Examples
    --------
    >>> from skdvl import BetaShapleyValuer
    >>> from skdvl.games import SymmetricVotingGame
    >>> v = BetaShapleyValuer(alpha=1, beta=1, utility=SymmetricVotingGame(4),
    ...                       sampler="exact").fit()
    >>> v.values_
    array([0.25, 0.25, 0.25, 0.25])
    """

    _algorithm = "beta_shapley"
    _samplers = ShapleyValuer._samplers
    _parameter_constraints = {
        **ShapleyValuer._parameter_constraints,
        "alpha": [Interval(Real, 0, None, closed="neither")],
        "beta": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(
        self, alpha: float = 16.0, beta: float = 1.0, *, estimator: Any = None,
        scoring: Any = None, utility: Any = None, sampler: Any = "permutation",
        truncation: Any = None, max_updates: int | None = 100,
        stderr_tol: float | None = None, max_time: float | None = None, stopping: Any = None,
        cv: Any = 5, default_score: float = 0.0, error_score: Any = None,
        n_jobs: int | None = None, random_state: Any = None, verbose: int = 0,
        warm_start: bool = False,
    ) -> None:
        _store_params(self, locals())

    def _mass(self, n: int) -> np.ndarray:
        return beta_mass(n, self.alpha, self.beta)


class LOOValuer(_SemivalueValuer):
    """Leave-one-out values: ``u(N) - u(N minus i)``, exact, ``n + 1`` utility evaluations.

    Cook (1977) for the statistics; in data valuation, the baseline of
    Ghorbani & Zou (2019). Cheap, but blind to redundancy: of two duplicate
    rows, each has value 0.

    Parameters
    ----------
    estimator, scoring, utility, cv, default_score, error_score, n_jobs, verbose
        As for :class:`ShapleyValuer`.

    Attributes
    ----------
    values_, stderr_, counts_, result_, n_utility_evaluations_, converged_
        As for :class:`ShapleyValuer` (``stderr_`` is 0, ``converged_`` True).

    Examples
    --------
    >>> from skdvl import LOOValuer
    >>> from skdvl.games import SymmetricVotingGame
    >>> LOOValuer(utility=SymmetricVotingGame(4)).fit().values_
    array([0., 0., 0., 0.])
    """

    _algorithm = "loo"
    _parameter_constraints = dict(_COMMON_CONSTRAINTS)

    def __init__(
        self, estimator: Any = None, *, scoring: Any = None, utility: Any = None,
        cv: Any = 5, default_score: float = 0.0, error_score: Any = None,
        n_jobs: int | None = None, verbose: int = 0,
    ) -> None:
        _store_params(self, locals())

    def _resolve_sampler(self) -> Any:
        return None

    def _value_game(self, utility: Any, sampler: Any, g: int, state: Any) -> tuple[Any, Any]:
        n = int(utility.n_players)
        masks = np.ones((n + 1, n), dtype=bool)
        masks[np.arange(1, n + 1), np.arange(n)] = False
        u, n_evals, n_err, first = evaluate_coalitions(
            utility, masks=masks, n_jobs=self.n_jobs, verbose=self.verbose,
            desc=f"LOOValuer game {g + 1}")
        state = EngineState.new("exact", n)
        state.n_evaluations, state.status = n_evals, Status.CONVERGED
        state.add_errors(n_err, first)
        return ValuationResult(u[0] - u[1:], algorithm=self._algorithm), state
