"""The estimator shell shared by the semivalue valuers: validation, games, dispatch.

A valuer here validates its parameters and data, builds the games to value (one
game on ``X_val``, or one per fold of cross-valuation), seeds them, runs the
engine game by game, and combines the results. It also guards what a value
depends on: the targets' task, failed utilities (:class:`~skdvl.utility.FitReport`),
interruption and ``warm_start``'s continuation (a fingerprint of everything the
continued samples depend on).
"""

from __future__ import annotations

import copy
import warnings
from numbers import Integral, Real
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone, is_classifier, is_regressor
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import GroupKFold, check_cv
from sklearn.utils import check_random_state, get_tags

from skdvl._sklearn_compat import HasMethods, Interval, StrOptions, fit_context
from skdvl.base import (
    TASKS,
    ValuerMixin,
    check_targets,
    pandas_index,
    resolve_task,
    validate_valuation_data,
)
from skdvl.groups import GroupedUtility, check_groups
from skdvl.result import ValuationResult
from skdvl.sampling import (
    AntitheticPermutationSampler,
    BaseSampler,
    ExactSampler,
    KernelSampler,
    PermutationSampler,
)
from skdvl.sampling._auto import choose_sampler
from skdvl.sampling._engine import value_game
from skdvl.stopping import AbsoluteStandardError, MaxTime, MaxUpdates, Status, StoppingCriterion
from skdvl.utility import CheckedUtility, FitReport, ModelUtility, report_fit_problems
from skdvl.utility._torch_refit import find_skorch_nets
from skdvl.utility_learning import LearnedUtility
from skdvl.valuation._combine import _combine_games, _param_hash

__all__ = ["_GameValuer", "COMMON_CONSTRAINTS", "SAMPLING_CONSTRAINTS"]

#: The budget when none of max_updates, max_time and stopping is given.
DEFAULT_MAX_UPDATES = 100

COMMON_CONSTRAINTS: dict[str, Any] = {
    "estimator": [HasMethods(["fit"]), None],
    "scoring": [str, callable, None],
    "utility": [HasMethods(["__call__"]), None],
    "task": [StrOptions(set(TASKS))],
    "cv": ["cv_object"],
    "default_score": [Interval(Real, None, None, closed="neither")],
    "error_score": [StrOptions({"raise"}), Interval(Real, None, None, closed="neither"),
                    None],
    "batch_fit": [StrOptions({"auto"}), "boolean"],
    "device": "no_validation",  # None, a str or a torch.device: ModelUtility checks it
    "n_jobs": [Integral, None],
    "verbose": ["verbose"],
}
#: ``utility_model`` and ``training_budget``: data utility learning (Wang, Yang & Jia, 2022)
LEARNING_CONSTRAINTS: dict[str, list[Any]] = {
    "utility_model": [HasMethods(["fit", "predict"]), None],
    "training_budget": [Interval(Integral, 1, None, closed="left"), None],
}
SAMPLING_CONSTRAINTS: dict[str, list[Any]] = {
    "max_updates": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"}), None],
    "stderr_tol": [Interval(Real, 0, None, closed="neither"), None],
    "max_time": [Interval(Real, 0, None, closed="neither"), None],
    "stopping": [StoppingCriterion, None],
    "random_state": ["random_state"],
    "warm_start": ["boolean"],
}
#: Parameters that may change between a fit and its warm-started continuation.
_BUDGET_PARAMS = frozenset(
    {"max_updates", "stderr_tol", "max_time", "stopping", "n_jobs", "verbose", "warm_start"})

def joined_fit_paths(utilities: list[Any]) -> str:
    """The games' fit paths: the one they share, or each game's."""
    paths = sorted({u.fit_path for u in utilities})
    return paths[0] if len(paths) == 1 else "; ".join(
        f"game {g}: {u.fit_path}" for g, u in enumerate(utilities))


class _GameValuer(ValuerMixin, BaseEstimator):
    """Validation, cross-valuation and dispatch shared by the semivalue valuers."""

    #: whether ``fit(..., groups=...)`` values groups of rows
    _values_groups = True
    #: the coalition sizes ``utility_model`` is trained on (see LearnedUtility)
    _learning_distribution = "shapley"

    _samplers: dict[str, Any] = {}
    _fixed_sampler: type[BaseSampler] | None = None
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

    def _resolve_sampler(self, n: int | None = None, cheap_prefixes: bool = False) -> BaseSampler:
        params = self.get_params(deep=False)
        if "sampler" not in params and self._fixed_sampler is not None:
            return self._fixed_sampler()  # a method with one way of choosing coalitions
        sampler, truncation = params["sampler"], params.get("truncation")
        if isinstance(sampler, str) and sampler == "auto" and "auto" in self._samplers:
            if truncation is not None:  # truncation is a rule of permutation sampling
                if PermutationSampler not in self._samplers.values():
                    raise ValueError(
                        f"truncation={truncation!r} applies to permutation samplers only, "
                        f"and {type(self).__name__} has none. Set truncation=None.")
                return PermutationSampler(truncation)
            if n is None:  # before the data: the choice needs the number of players
                return self.__dict__.get("sampler_", ExactSampler())
            return choose_sampler(n, self._budget_calls(n), self._algorithm,
                                  cheap_prefixes=cheap_prefixes)
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
        if not isinstance(sampler, BaseSampler):
            raise ValueError(
                f"The 'sampler' parameter of {type(self).__name__} must be a name or a sampler "
                f"from skdvl.sampling. Got {sampler!r} instead."
            )
        if truncation is not None:
            raise ValueError(
                "Pass truncation to the sampler instance, not to the valuer. "
                f"Got truncation={truncation!r} with sampler={sampler!r}."
            )
        return sampler

    def _budget_calls(self, n: int) -> int | None:
        """About how many utility evaluations ``max_updates`` allows (None: unbounded,
        another criterion stops): ``max_updates * n`` ("auto": 100 per value)."""
        explicit = self.stopping is not None or self.max_time is not None
        if self.max_updates is None or (self.max_updates == "auto" and explicit):
            return None
        k = DEFAULT_MAX_UPDATES if self.max_updates == "auto" else int(self.max_updates)
        return k * n

    def _update_budget(self, sampler: BaseSampler | None, n: int) -> list[StoppingCriterion]:
        """The criterion ``max_updates`` makes (none, or one), before the others are OR-ed."""
        max_updates = self.max_updates
        if (isinstance(max_updates, int) and self.get_params(deep=False).get("sampler")
                == "auto" and getattr(sampler, "per_coalition", False)):
            max_updates *= n  # sampler="auto": max_updates * n evaluations, whatever it picks
        if max_updates == "auto":
            explicit = self.stopping is not None or self.max_time is not None
            per_coalition = bool(getattr(sampler, "per_coalition", False))
            max_updates = None if explicit else DEFAULT_MAX_UPDATES * (n if per_coalition else 1)
        least = int(getattr(sampler, "min_updates", lambda n: 1)(n))
        if max_updates is not None and max_updates < least:
            warnings.warn(
                f"max_updates={max_updates} is fewer than the {least} updates {sampler!r} "
                f"needs to cover its design once at n = {n}: the values come from a part of "
                "it only, and their standard errors are unknown (NaN). Raise max_updates to "
                f"at least {least}.", UserWarning, stacklevel=4)
        return [] if max_updates is None else [MaxUpdates(max_updates)]

    def _stopping(self, sampler: BaseSampler | None = None, n: int = 1) -> StoppingCriterion:
        """The budget: the given criteria, OR-ed; ``max_updates="auto"`` if none bounds it.

        "auto" is 100 updates per value, or ``100 * n`` coalitions for a sampler
        whose samples are single coalitions (about ``100 * n`` utility
        evaluations either way). An explicit ``stopping`` or ``max_time``
        replaces the default budget instead of being OR-ed with a hidden one.
        """
        parts = self._update_budget(sampler, n)
        if self.stderr_tol is not None:
            parts.append(AbsoluteStandardError(self.stderr_tol))
        if self.max_time is not None:
            parts.append(MaxTime(self.max_time))
        if self.stopping is not None:
            parts.append(copy.deepcopy(self.stopping))
        if not parts:
            raise ValueError(
                f"{type(self).__name__} needs a budget: set max_updates, stderr_tol, max_time "
                "or stopping. Got max_updates=None and the other three None."
            )
        criterion = parts[0]
        for part in parts[1:]:
            criterion = criterion | part
        return criterion

    # -- fit ----------------------------------------------------------------
    @fit_context(prefer_skip_nested_validation=False)
    def fit(self, X: Any = None, y: Any = None, *, groups: Any = None, X_val: Any = None,
            y_val: Any = None) -> Any:
        """Value the training rows (or groups of them).

        Parameters
        ----------
        X : array-like, sparse matrix or DataFrame of shape (n_samples, n_features)
            Training data; each row is a player. None when ``utility`` is given.
        y : array-like of shape (n_samples,)
            Training targets.
        groups : array-like of shape (n_samples,), default=None
            A label per row: the players are then the distinct labels (data
            sources), a coalition of groups is fitted on all their rows, and
            ``values_`` is a Series indexed by the labels, in the order of their
            first row. The cost grows with the number of groups, not of rows.
            :mod:`skdvl.groups` makes labels by a column, by class or by
            clustering. In cross-valuation an integer ``cv`` splits by group
            (``GroupKFold``), so a group is never valued on its own rows; a
            splitter is called as ``cv.split(X, y, groups)``.
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
        sampler = self._resolve_sampler()
        self._grouped = groups is not None
        if groups is None:
            games, index, data = self._games(X, y, X_val, y_val)
        elif not self._values_groups:
            raise ValueError(f"{type(self).__name__} does not value groups of rows; fit "
                             "without groups.")
        else:
            games, index, data = self._games(X, y, X_val, y_val, groups=groups)
        if self.get_params(deep=False).get("sampler") == "auto" and games:
            walks = all(getattr(u, "walk_reason", None) == "" for u, _ in games)
            sampler = self._resolve_sampler(max(int(u.n_players) for u, _ in games), walks)
        self.sampler_ = sampler
        if getattr(sampler, "lockstep", False) and games and all(
                getattr(u, "walk_reason", None) == "" for u, _ in games):
            self.fit_path_ += "; permutation prefixes fitted incrementally"
        fingerprint = self._fingerprint(data)
        continued = self._continues(fingerprint, games)
        if not continued:
            seed = self.get_params(deep=False).get("random_state")
            self._entropy_ = int(check_random_state(seed).randint(np.iinfo(np.int32).max))
            self._states_: list[Any] = [None] * len(games)
        games = self._learned_games(games, sampler, continued)
        self._fingerprint_ = fingerprint
        self._warm_utility_ = self.utility  # keeps the id in the fingerprint unique
        self._players_ = [players for _, players in games]
        parts, interrupted = [], False
        for g, (utility, players) in enumerate(games):
            result, state = self._value_game(utility, sampler, g, self._states_[g])
            self._states_[g] = state
            result.indices = players
            parts.append(result)
            if state.interrupted:
                interrupted = True
                break
        played = np.zeros(self.n_players_, dtype=bool)
        for _, players in games:
            played[players] = True
        self._finish(parts, index, interrupted, played)
        self._warn_over_budget(sampler)
        return self

    def _learned_games(self, games: list[Any], sampler: BaseSampler,
                       continued: bool) -> list[Any]:
        """With ``utility_model``: each game's utility learned from ``training_budget``
        real evaluations (:class:`~skdvl.utility_learning.LearnedUtility`), trained once
        per game before sampling (kept for ``warm_start``), seeded from ``random_state``."""
        model = getattr(self, "utility_model", None)
        if model is None:
            budget = getattr(self, "training_budget", None)
            if budget is not None:
                raise ValueError(
                    f"training_budget={budget!r} has no effect without utility_model: it is "
                    "the number of real evaluations a learned utility is trained on. Set "
                    "utility_model (e.g. LinearRegression()) or leave training_budget=None.")
            return games
        if self.training_budget is None:
            raise ValueError(
                f"utility_model={model!r} learns the utility from training_budget real "
                "evaluations per game; set training_budget (e.g. 10 * n_samples).")
        learned = getattr(self, "_learned_", None)
        if not (continued and learned is not None and len(learned) == len(games)):
            dist = self._learning_distribution
            if dist == "shapley" and isinstance(sampler, KernelSampler):  # and leverage
                dist = "kernel"
            learned = []
            for g, (utility, _) in enumerate(games):
                seed = np.random.SeedSequence(self._entropy_, spawn_key=(g, 1 << 30))
                learned.append(LearnedUtility(
                    utility, clone(model), training_budget=self.training_budget,
                    training_distribution=dist, n_jobs=self.n_jobs, verbose=self.verbose,
                    random_state=int(seed.generate_state(1)[0])).fit())
        self._learned_ = learned
        self.utility_models_ = [u.utility_model_ for u in learned]
        self.n_real_evaluations_ = int(sum(u.n_real_evaluations_ for u in learned))
        return [(u, players) for u, (_, players) in zip(learned, games)]

    def _value_game(self, utility: Any, sampler: BaseSampler, g: int,
                    state: Any) -> tuple[ValuationResult, Any]:
        n = int(utility.n_players)
        return value_game(
            sampler, utility, self._mass(n), state=state, entropy=self._entropy_, game=g,
            stopping=lambda: self._stopping(sampler, n), n_jobs=self.n_jobs,
            verbose=self.verbose, desc=f"{type(self).__name__} game {g + 1}")

    def reweight(self, valuer: Any) -> Any:
        """Values of another semivalue from this fit's samples, without a single new fit.

        The samples of ``sampler="svarm"``, ``"regression_msr"`` and ``"exact"``
        do not depend on the semivalue they were drawn for: each semivalue is a
        different weighing of the same utilities (Li & Yu, 2024, "One sample
        fits all: approximating all probabilistic values simultaneously and
        efficiently", NeurIPS). One fit of any semivalue valuer with such a
        sampler thus gives Shapley, Banzhaf, weighted Banzhaf and Beta Shapley
        values of the same rows.

        Parameters
        ----------
        valuer : ShapleyValuer, BanzhafValuer or BetaShapleyValuer
            An unfitted valuer naming the semivalue wanted (its ``weight``,
            ``alpha``, ``beta``); its other parameters are ignored.

        Returns
        -------
        fitted : valuer of the same class as ``valuer``
            A fitted copy whose parameters are this valuer's (data, estimator,
            sampler, budget, seed) except those defining the semivalue, so
            ``clone(fitted).fit(...)`` on the same data recomputes the same
            values. ``n_utility_evaluations_`` is the evaluations its values
            rest on (this fit's); no utility is evaluated.

        Examples
        --------
        >>> from skdvl import BanzhafValuer, ShapleyValuer
        >>> from skdvl.games import SymmetricVotingGame
        >>> sv = ShapleyValuer(utility=SymmetricVotingGame(4), sampler="exact").fit()
        >>> sv.reweight(BanzhafValuer()).values_
        array([0.375, 0.375, 0.375, 0.375])
        """
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "result_")
        if not isinstance(valuer, _GameValuer) or "sampler" not in valuer.get_params():
            raise ValueError(
                "reweight needs an unfitted semivalue valuer with a sampler (ShapleyValuer, "
                f"BanzhafValuer, BetaShapleyValuer). Got {valuer!r} instead.")
        sampler = self._resolve_sampler()
        own = self.get_params(deep=False)
        target = clone(valuer)
        shared = {k: v for k, v in own.items() if k in target.get_params(deep=False)}
        target.set_params(**shared)
        if isinstance(own["sampler"], str) and own["sampler"] not in target._samplers:
            target.set_params(sampler=sampler)
        parts = []
        for state, players in zip(self._states_, self._players_):
            if state is None:
                break
            result = sampler.reweight(state, target._mass(len(players)))
            result.indices = players
            parts.append(result)
        n = self.n_players_
        single = len(parts) == 1 and len(parts[0]) == n
        result = parts[0] if single else _combine_games(parts, n)
        result.algorithm = target._algorithm
        target.n_players_ = n
        for name in ("n_features_in_", "feature_names_in_", "fit_path_"):
            if hasattr(self, name):
                setattr(target, name, getattr(self, name))
        if hasattr(self, "task_"):
            target.task_ = self.task_
        target.n_utility_evaluations_ = self.n_utility_evaluations_
        target.converged_ = self.converged_
        target._store_result(result, getattr(self, "_pandas_index_", None))
        return target

    def _finish(self, parts: list[ValuationResult], index: Any, interrupted: bool,
                played: np.ndarray) -> None:
        n = self.n_players_
        states = [s for s in self._states_ if s is not None]
        single = len(self._states_) == 1 and len(parts[0]) == n
        result = parts[0] if single else _combine_games(parts, n)
        result.algorithm = self._algorithm
        report = FitReport()
        for s in states:
            report.merge(s.report)
        self.n_utility_evaluations_ = int(sum(s.n_evaluations for s in states))
        report_fit_problems(report, self.n_utility_evaluations_, type(self).__name__)
        self._store_result(result, index)
        self.converged_ = bool(not interrupted and len(states) == len(self._states_)
                               and all(s.status == Status.CONVERGED for s in states))
        unreached = int(np.count_nonzero((result.counts == 0) & played))
        noun = "groups" if getattr(self, "_grouped", False) else "rows"
        if unreached and not interrupted:
            warnings.warn(
                f"{unreached} of {n} {noun} got no sample within the budget; their values "
                "are NaN. Raise the budget (max_updates, max_time or stopping).",
                UserWarning, stacklevel=3)
        if not played.all():
            warnings.warn(
                f"{int(np.count_nonzero(~played))} of {n} {noun} are in no training fold of "
                "the cv splits; their values are NaN.", UserWarning, stacklevel=3)

    def _warn_over_budget(self, sampler: BaseSampler) -> None:
        """Say so when a per-coalition sampler evaluated more coalitions than ``max_updates``.

        A block of ``batch_size`` coalitions is drawn between two checks of an update
        budget, and the regression and stratified samplers evaluate their border
        strata (and games of at most 3 players whole) before the first sample: a
        smaller budget is exceeded, and the user is told by how much.
        """
        budget = getattr(self, "max_updates", None)
        if (not isinstance(budget, Integral) or isinstance(budget, bool)
                or not getattr(sampler, "per_coalition", False)
                or getattr(self, "utility_model", None) is not None):
            return
        said = f"max_updates={budget} coalitions per game"
        if self.get_params(deep=False).get("sampler") == "auto":
            # max_updates * n evaluations, and the border the choice enumerates first
            budget = int(budget) * self.n_players_ + 2 * self.n_players_ + 2
            said = (f"max_updates={self.max_updates} (with sampler='auto', {budget} "
                    "coalitions per game)")
        most = max((s.n_evaluations for s in self._states_ if s is not None), default=0)
        if most > budget:
            warnings.warn(
                f"{said} was exceeded: {sampler!r} "
                f"evaluated up to {most} in a game. It evaluates a whole block of "
                "batch_size coalitions between two checks of the budget, and some designs "
                "evaluate coalitions before the first sample (the border sizes 0, 1, n - 1 "
                "and n; every coalition of a game of at most 3 players). "
                "n_utility_evaluations_ counts them all; lower batch_size for a tighter "
                "budget.", UserWarning, stacklevel=3)

    # -- warm start -----------------------------------------------------------
    def _fingerprint(self, data: Any) -> dict[str, Any]:
        """What the continued samples depend on: parameters but the budget, and the data."""
        params = self.get_params(deep=False)
        fingerprint = {k: _param_hash(v) for k, v in params.items() if k not in _BUDGET_PARAMS}
        fingerprint["data (X, y, X_val, y_val)"] = joblib.hash(data)
        return fingerprint

    def _continues(self, fingerprint: dict[str, Any], games: list[Any]) -> bool:
        """Whether this fit continues the previous one; refuse a continuation that differs."""
        if not (self.get_params(deep=False).get("warm_start") and hasattr(self, "_states_")):
            return False
        previous = getattr(self, "_fingerprint_", {})
        changed = sorted(k for k in fingerprint if fingerprint[k] != previous.get(k))
        if changed:
            raise ValueError(
                f"warm_start=True continues the previous fit of {type(self).__name__}, which "
                f"is only valid with the same data, utility, estimator parameters and "
                f"random_state. Changed since then: {', '.join(changed)}. Set "
                "warm_start=False to start over."
            )
        return len(self._states_) == len(games)

    # -- data ---------------------------------------------------------------
    def _games(self, X: Any, y: Any, X_val: Any, y_val: Any,
               groups: Any = None) -> tuple[list[Any], Any, Any]:
        """The (utility, global indices of its players) pairs to value, the index, the data."""
        name = type(self).__name__
        if self.utility is not None and groups is not None:
            raise ValueError(
                "groups apply to data: with a custom utility, fit() takes no data and the "
                "utility defines the players. Got groups as well.")
        if self.utility is not None:
            if X is not None or y is not None or X_val is not None:
                raise ValueError(
                    "With a custom utility, fit() takes no data: the utility defines the "
                    f"players. Got X of type {type(X).__name__} as well."
                )
            n = getattr(self.utility, "n_players", None)
            if isinstance(n, bool) or not isinstance(n, (Integral, np.integer)) or n < 1:
                raise ValueError(
                    f"The 'utility' of {name} must have an integer n_players >= 1. Got "
                    f"n_players={n!r} instead.")
            self.n_players_ = int(n)
            utility = CheckedUtility.wrap(self.utility, self.default_score, self.error_score)
            self.fit_path_ = "custom utility"
            return [(utility, np.arange(self.n_players_))], None, None
        if y is None:
            raise ValueError(
                f"{name} requires y to be passed, but the target y is None (pass a custom "
                "utility to value without data).")
        index = pandas_index(X)
        estimator = self._estimator(y)
        X, y, X_val, y_val = validate_valuation_data(
            self, X, y, X_val, y_val, estimator=estimator, min_samples=2)
        check_targets(y, y_val, self.task_, name)
        self.n_players_ = n = X.shape[0]
        data: tuple[Any, ...] = (X, y, X_val, y_val)
        codes = None
        if groups is not None:  # the players are groups of rows (see fit)
            labels, codes = check_groups(groups, n)
            self.n_players_ = labels.shape[0]
            index, data = pd.Index(labels, name="group"), (*data, codes)
        kwargs = self._utility_kwargs()

        def game(utility: ModelUtility, rows: np.ndarray) -> tuple[Any, np.ndarray]:
            """The game over ``rows`` (all training rows when there is validation data)
            and its players' global indices: rows, or the groups present."""
            if codes is None:
                return utility, rows
            present, local = np.unique(codes[rows], return_inverse=True)
            return GroupedUtility(utility, local), present

        if X_val is not None:
            games = [game(ModelUtility(estimator, X, y, X_val, y_val, **kwargs), np.arange(n))]
        else:
            if codes is not None and isinstance(self.cv, Integral) and not isinstance(
                    self.cv, bool):
                if int(self.cv) > self.n_players_:
                    raise ValueError(
                        f"cv={self.cv} folds need at least {self.cv} groups; got "
                        f"{self.n_players_}. Lower cv or pass X_val.")
                cv: Any = GroupKFold(n_splits=int(self.cv))
            else:
                cv = check_cv(self.cv, y, classifier=is_classifier(estimator))
            games = [game(ModelUtility(estimator, X[train], y[train], X[test], y[test],
                                       **kwargs), train)
                     for train, test in cv.split(X, y, codes)]
        self.fit_path_ = joined_fit_paths([u for u, _ in games])
        return games, index, data

    def _utility_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the games' ``ModelUtility``.

        With a skorch net in the ``estimator``, ``random_state`` is the integer the
        valuer's own ``random_state`` draws first (its sampling entropy, drawn
        from a copy, so that the sampling stream is unchanged); the utility
        hashes each coalition's row mask with it into the torch seed of the
        coalition's fit. A valuer without ``random_state`` (``LOOValuer``: it
        samples nothing) uses the fixed ``random_state=0``, so its values are
        reproducible. Other estimators get ``random_state=None`` (unused).
        """
        kwargs = dict(scoring=self.scoring, default_score=self.default_score,
                      error_score=self.error_score, batch_fit=self.batch_fit,
                      device=getattr(self, "device", None))
        if find_skorch_nets(self.estimator):  # None: a linear model, chosen by the task
            params = self.get_params(deep=False)
            if "random_state" not in params:
                kwargs["random_state"] = 0
            else:
                rng = copy.deepcopy(check_random_state(params["random_state"]))
                kwargs["random_state"] = int(rng.randint(np.iinfo(np.int32).max))
        return kwargs

    def _estimator(self, y: Any) -> Any:
        """The model: the user's, or one chosen by the task; sets ``task_``."""
        name, est = type(self).__name__, self.estimator
        if est is not None and (is_classifier(est) or is_regressor(est)):
            implied = "classification" if is_classifier(est) else "regression"
            if self.task not in ("auto", implied):
                kind = "classifier" if implied == "classification" else "regressor"
                raise ValueError(
                    f"The 'task' parameter of {name} is {self.task!r} but estimator "
                    f"{type(est).__name__} is a {kind}. Set task={implied!r} or 'auto', or "
                    "pass another estimator.")
            self.task_ = resolve_task(y, implied, name)  # also refuses mixed label types
            return est
        self.task_ = resolve_task(y, self.task, name)
        if est is not None:
            return est
        if self.task_ == "classification":
            return LogisticRegression(max_iter=1000)
        return LinearRegression()
