"""Semivalue valuers: Shapley, Banzhaf, Beta Shapley and leave-one-out.

A semivalue of training row ``i`` averages its marginal contribution
``u(T + i) - u(T)`` over coalitions ``T`` of the other rows, weighing each size
``k`` of ``T`` by a mass ``m(k)`` (Dubey, Neyman & Weber, 1981, "Value theory
without efficiency"). The valuers here differ only in ``m``; the samplers of
:mod:`skdvl.sampling` and its engine do the rest.
"""

from __future__ import annotations

from numbers import Real
from typing import Any

import numpy as np
from scipy.stats import betabinom, binom

from skdvl._sklearn_compat import HasMethods, Interval
from skdvl.sampling import (
    AntitheticPermutationSampler,
    AntitheticSampler,
    BaseSampler,
    ExactSampler,
    HybridMSRSampler,
    KernelSampler,
    LeverageSampler,
    MSRSampler,
    NeymanSampler,
    OwenSampler,
    PermutationSampler,
    RegressionMSRSampler,
    StratifiedSampler,
    SVARMSampler,
    UniformSampler,
)
from skdvl.sampling._exact import _LeaveOneOut
from skdvl.valuation._base import COMMON_CONSTRAINTS as _COMMON_CONSTRAINTS
from skdvl.valuation._base import LEARNING_CONSTRAINTS as _LEARNING_CONSTRAINTS
from skdvl.valuation._base import SAMPLING_CONSTRAINTS as _SAMPLING_CONSTRAINTS
from skdvl.valuation._base import _GameValuer

__all__ = ["ShapleyValuer", "BanzhafValuer", "BetaShapleyValuer", "LOOValuer"]


# --------------------------------------------------------------------------- the math
def shapley_mass(n: int) -> np.ndarray:
    """Shapley's mass on coalition sizes 0..n-1: uniform, ``1/n`` (Shapley, 1953)."""
    return np.full(n, 1.0 / n)


def banzhaf_mass(n: int, weight: float = 0.5) -> np.ndarray:
    """The (weighted) Banzhaf mass on coalition sizes: binomial(n - 1, weight).

    ``weight = 0.5``: every coalition weighs ``1 / 2^(n-1)`` (Banzhaf, 1965).
    Otherwise a coalition ``T`` of the others weighs ``w^|T| (1 - w)^(n-1-|T|)``:
    the weighted Banzhaf value of Li & Yu (2023), "Robust data valuation with
    weighted Banzhaf values", NeurIPS, the expected marginal when every other
    player joins independently with probability ``w``.
    """
    return binom.pmf(np.arange(n), n - 1, weight)


def beta_mass(n: int, alpha: float, beta: float) -> np.ndarray:
    """Beta Shapley's mass on sizes: a beta-binomial(n - 1, beta, alpha) distribution.

    Kwon & Zou (2022), "Beta Shapley: a unified and noise-reduced data valuation
    framework for machine learning", AISTATS, Eq. (4): a coalition of size k
    weighs ``Beta(k + beta, n - 1 - k + alpha) / Beta(alpha, beta)``; summed over
    the ``C(n-1, k)`` coalitions of that size this is the beta-binomial pmf.
    ``alpha = beta = 1`` is Shapley; ``alpha > beta`` favours small coalitions.
    """
    return betabinom.pmf(np.arange(n), n - 1, beta, alpha)


def _store_params(obj: Any, params: dict[str, Any]) -> None:
    """``__init__`` stores its arguments, unchanged, under their own names."""
    for name, value in params.items():
        if name not in ("self", "__class__"):
            setattr(obj, name, value)


_SHARED_PARAMS = """
    estimator : estimator object, default=None
        The model whose clones are fitted on coalitions of rows. None means
        ``LogisticRegression(max_iter=1000)`` for classification and
        ``LinearRegression()`` for regression (see ``task``). Fix its
        ``random_state`` if it has one, or values will not be reproducible.
    scoring : str or callable, default=None
        Scorer for the validation data (see :func:`sklearn.metrics.get_scorer`);
        None means ``estimator.score``.
    utility : object, default=None
        A custom utility (any object with ``n_players`` and ``__call__(subset)``,
        e.g. a game of :mod:`skdvl.games`); then ``fit()`` takes no data.
    sampler : str or sampler instance, default="auto"
        How coalitions are drawn and turned into values; see
        :mod:`skdvl.sampling` and the valuer's ``_samplers`` for the names.
        "auto" chooses in ``fit`` once the number of players is known
        (:func:`skdvl.sampling._auto.choose_sampler`; the choice is ``sampler_``):
        "exact" when the ``2^n`` coalitions fit the budget, else
        regression-adjusted MSR with a tree surrogate chosen by cross-fitting
        (``n <= 100``) or a linear one (more players, or data games whose
        coalitions are fitted on the batched linear path), and the permutation
        sampler when ``truncation`` is given.
        "exact" evaluates each of the ``2^n`` coalitions once and refuses
        ``n > 20`` unless given ``ExactSampler(max_players=...)``. The
        regression estimators ("kernel", "leverage", "regression_msr") and
        "svarm" use every evaluation for every row and need far fewer
        evaluations for the same accuracy; the samples of "svarm",
        "regression_msr" and "exact" also give other semivalues through
        :meth:`reweight`.
    max_updates : int, "auto" or None, default="auto"
        Stop once a value has this many updates (for coalition samplers such
        as "msr", "kernel", "svarm" and "regression_msr", an update is one
        evaluated coalition, which updates every value). "auto" means 100
        updates, or ``100 * n`` coalitions for coalition samplers (about
        ``100 * n`` utility evaluations either way), unless ``max_time`` or
        ``stopping`` is given: an explicit criterion replaces the default
        budget instead of being combined with it. None means no bound on
        updates (then another criterion must stop sampling). Sampling stops at
        the first of ``max_updates``, ``stderr_tol``, ``max_time`` and
        ``stopping``, and never draws more samples than a
        :class:`~skdvl.stopping.MaxSamples` allows.
    stderr_tol : float or None, default=None
        Stop (converged) once every standard error is below this.
    max_time : float or None, default=None
        Stop after this many seconds (results then depend on the machine).
    stopping : StoppingCriterion or None, default=None
        Any criterion of :mod:`skdvl.stopping`, e.g. ``RankCorrelation(0.01)``.
    task : {"auto", "classification", "regression"}, default="auto"
        What ``y`` is. With an ``estimator`` the task is the estimator's
        (a contradicting ``task`` is an error). Otherwise "auto" follows one rule
        (:func:`skdvl.base.resolve_task`): ``y`` with non-integer numbers is a
        regression target, anything else (strings, booleans, integers) class
        labels; an integer ``y`` with more than 20 distinct values is taken as
        labels with a warning naming ``task``. Classification refuses a
        continuous or single-class ``y`` and a ``y_val`` of another kind.
    cv : int, cross-validation generator or iterable, default=5
        Folds of the cross-valuation used when ``fit`` gets no ``X_val``.
    default_score : float, default=0.0
        Utility of the empty coalition and of degenerate ones (a single class);
        must be finite.
    error_score : "raise", float or None, default=None
        Utility of a coalition whose fit raises or whose score is NaN or
        infinite (a custom utility's too); None means ``default_score``.
        Failures are summarised in one :class:`~skdvl.utility.UtilityFitWarning`;
        when every fit failed, ``fit`` raises instead: there is no value.
        Warnings raised inside the fits (e.g. ``ConvergenceWarning``) are
        recorded and shown once per ``fit``, with their count.
    batch_fit : "auto", bool, default="auto"
        Fit many coalitions in one vectorised solve when the estimator is
        ``LogisticRegression`` (L2), ``Ridge`` or ``LinearRegression``, alone or
        after a ``StandardScaler`` in a ``Pipeline``: the same optimum as the
        estimator's own fit, without its per-call overhead (see
        :class:`~skdvl.ModelUtility`). "auto" uses it where it is supported and
        faster and fits coalition by coalition otherwise (``fit_path_`` says
        which, and why); True requires it; False never uses it.
    device : None, str or torch.device, default=None
        With the batched fits, the torch device that solves binary logistic
        regressions (``"cuda"``, ``"cpu"``...; needs torch) and walks the
        permutation prefixes of ``Ridge``, ``LinearRegression`` and binary
        ``LogisticRegression`` (multinomial prefixes are then fitted cold, in
        batches); None computes everything in numpy. Values agree with numpy's
        to rounding (logistic fits: to the solver's tolerance).
    utility_model : regressor or None, default=None
        Data utility learning (Wang, Yang & Jia, 2022, "Improving cooperative
        game theory-based data valuation via data utility learning"): a
        scikit-learn regressor trained, per game and before any sampling, on
        ``training_budget`` real utility evaluations of coalitions drawn with
        the sizes the sampler uses (indicator features of the coalition), that
        then answers every other coalition (see
        :class:`~skdvl.utility_learning.LearnedUtility`). It saves real fits,
        not necessarily time: with cheap batched fits, a surrogate's predictions
        can cost more. ``n_real_evaluations_`` counts the real evaluations;
        ``n_utility_evaluations_`` then counts the surrogate's answers.
    training_budget : int or None, default=None
        Real evaluations per game that train ``utility_model`` (required with it).
    n_jobs : int, default=None
        Parallel workers (joblib). Values do not depend on it.
    random_state : int, RandomState instance or None, default=None
        Seeds the sampling; one seed gives identical values for any ``n_jobs``
        and joblib backend.
    verbose : int, default=0
        Show a progress bar when > 0.
    warm_start : bool, default=False
        Continue sampling from the previous fit (raise ``max_updates`` to get
        more samples) instead of starting over; after an interruption, continue
        from where it stopped (game by game in cross-valuation). Only valid with
        the same data, utility, estimator parameters and ``random_state``: a
        change raises ``ValueError`` naming it. A budget already spent samples
        nothing.
"""

#: the shared Notes paragraph, placed in the class's Notes section (made if it has none)
_SHARED_NOTES = """
    Interrupting ``fit`` (Ctrl-C) keeps the samples finished so far, for any
    ``n_jobs``: it returns with a ``RuntimeWarning``, ``converged_`` False, and
    NaN (count 0) for rows no finished sample reached."""

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
        Number of features seen in ``fit`` (data mode only).
    fit_path_ : str
        How the coalitions were fitted: "batched", "per-coalition: " and why, or
        "custom utility".
    n_real_evaluations_ : int
        With ``utility_model`` only: the real utility evaluations that trained it.
    utility_models_ : list of regressors
        With ``utility_model`` only: the fitted surrogate of each game."""


def _doc(cls: type) -> type:
    """Fill in the shared parameters and attributes, and add the shared Notes paragraph
    to the class's own Notes section (one made before References or Examples if none)."""
    doc = (cls.__doc__ or "").replace("%(params)s", _SHARED_PARAMS).replace(
        "%(attrs)s", _SHARED_ATTRS)
    header = "\n    Notes\n    -----\n"
    if header in doc:
        doc = doc.replace(header, header + _SHARED_NOTES.lstrip("\n") + "\n\n", 1)
    else:
        cut = [doc.find(f"\n    {name}\n    {'-' * len(name)}\n")
               for name in ("References", "Examples")]
        at = min((c for c in cut if c >= 0), default=len(doc.rstrip()))
        doc = doc[:at] + header.rstrip("\n") + "\n" + _SHARED_NOTES.lstrip("\n") + "\n" + doc[at:]
    cls.__doc__ = doc
    return cls


@_doc
class ShapleyValuer(_GameValuer):
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
        data, taking the remaining marginals as 0 (Ghorbani & Zou, 2019). With
        ``sampler="auto"`` it selects the permutation sampler.

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
        "stratified": StratifiedSampler, "exact": ExactSampler,
        "kernel": KernelSampler, "leverage": LeverageSampler,
        "regression_msr": RegressionMSRSampler, "svarm": SVARMSampler,
        "neyman": NeymanSampler, "neyman_paired": lambda: NeymanSampler(paired=True),
        "regression_msr_tree": lambda: RegressionMSRSampler(surrogate="auto"),
        "hybrid_msr": HybridMSRSampler,
        "hybrid_msr_paired": lambda: HybridMSRSampler(paired=True),
        "auto": ExactSampler,  # chosen per game in fit: skdvl.sampling._auto
    }
    _parameter_constraints = {
        **_COMMON_CONSTRAINTS, **_SAMPLING_CONSTRAINTS, **_LEARNING_CONSTRAINTS,
        "sampler": [str, BaseSampler],
        "truncation": [Real, HasMethods(["first_stop"]), None],
    }

    def __init__(
        self, estimator: Any = None, *, scoring: Any = None, utility: Any = None,
        sampler: Any = "auto", truncation: Any = None,
        max_updates: int | str | None = "auto",
        stderr_tol: float | None = None, max_time: float | None = None, stopping: Any = None,
        task: str = "auto", cv: Any = 5, default_score: float = 0.0,
        error_score: Any = None, batch_fit: Any = "auto", device: Any = None,
        utility_model: Any = None, training_budget: int | None = None,
        n_jobs: int | None = None, random_state: Any = None, verbose: int = 0,
        warm_start: bool = False,
    ) -> None:
        _store_params(self, locals())

    def _mass(self, n: int) -> np.ndarray:
        return shapley_mass(n)


@_doc
class BanzhafValuer(_GameValuer):
    """Data Banzhaf values of training rows.

    The Banzhaf value of row ``i`` is its marginal contribution averaged
    uniformly over all coalitions of the other rows (Banzhaf, 1965). Wang & Jia
    (2023), "Data Banzhaf: a robust data valuation framework for machine
    learning", AISTATS, show it is the most robust semivalue to noisy utilities
    and estimate it by maximum sample reuse ("msr"), which uses every utility
    evaluation for every row.

    With ``weight`` other than 0.5 it is the weighted Banzhaf value of Li & Yu
    (2023), "Robust data valuation with weighted Banzhaf values", NeurIPS: the
    marginal contribution of row ``i`` averaged over coalitions in which every
    other row is present independently with probability ``weight``. Small
    weights emphasise small coalitions (a row's effect on a small training
    set), large weights large ones; Li & Yu find the most robust weight
    depends on the noise in the utility. MSR then draws coalitions with
    inclusion probability ``weight`` (their estimator).

    Parameters
    ----------
    weight : float in (0, 1), default=0.5
        Inclusion probability of the other rows; 0.5 is the Banzhaf value.%(params)s

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
    _learning_distribution = "banzhaf"
    _samplers = {
        "msr": MSRSampler, "uniform": UniformSampler, "antithetic": AntitheticSampler,
        "exact": ExactSampler, "kernel": KernelSampler, "regression_msr": RegressionMSRSampler,
        "svarm": SVARMSampler, "neyman": NeymanSampler,
        "regression_msr_tree": lambda: RegressionMSRSampler(surrogate="auto"),
        "hybrid_msr": HybridMSRSampler,
        "hybrid_msr_paired": lambda: HybridMSRSampler(paired=True),
        "auto": ExactSampler,  # chosen per game in fit: skdvl.sampling._auto
    }
    _parameter_constraints = {
        **_COMMON_CONSTRAINTS, **_SAMPLING_CONSTRAINTS, **_LEARNING_CONSTRAINTS,
        "sampler": [str, BaseSampler],
        "weight": [Interval(Real, 0, 1, closed="neither")],
    }

    def __init__(
        self, estimator: Any = None, *, weight: float = 0.5, scoring: Any = None,
        utility: Any = None, sampler: Any = "auto", max_updates: int | str | None = "auto",
        stderr_tol: float | None = None, max_time: float | None = None, stopping: Any = None,
        task: str = "auto", cv: Any = 5, default_score: float = 0.0,
        error_score: Any = None, batch_fit: Any = "auto", device: Any = None,
        utility_model: Any = None, training_budget: int | None = None,
        n_jobs: int | None = None, random_state: Any = None, verbose: int = 0,
        warm_start: bool = False,
    ) -> None:
        _store_params(self, locals())

    def _mass(self, n: int) -> np.ndarray:
        return banzhaf_mass(n, self.weight)


@_doc
class BetaShapleyValuer(_GameValuer):
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
        scoring: Any = None, utility: Any = None, sampler: Any = "auto",
        truncation: Any = None, max_updates: int | str | None = "auto",
        stderr_tol: float | None = None, max_time: float | None = None, stopping: Any = None,
        task: str = "auto", cv: Any = 5, default_score: float = 0.0,
        error_score: Any = None, batch_fit: Any = "auto", device: Any = None,
        utility_model: Any = None, training_budget: int | None = None,
        n_jobs: int | None = None, random_state: Any = None, verbose: int = 0,
        warm_start: bool = False,
    ) -> None:
        _store_params(self, locals())

    def _mass(self, n: int) -> np.ndarray:
        return beta_mass(n, self.alpha, self.beta)


class LOOValuer(_GameValuer):
    """Leave-one-out values: ``u(N) - u(N minus i)``, exact, ``n + 1`` utility evaluations.

    Cook (1977) for the statistics; in data valuation, the baseline of
    Ghorbani & Zou (2019). Cheap, but blind to redundancy: of two duplicate
    rows, each has value 0.

    With a skorch net as the estimator, the torch seeds of the fits come from a
    fixed ``random_state=0`` (LOOValuer has no ``random_state``), so values are
    reproducible.

    Parameters
    ----------
    estimator, scoring, utility, task, cv, default_score, error_score, batch_fit, device,
    n_jobs, verbose
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
    _fixed_sampler = _LeaveOneOut
    _parameter_constraints = dict(_COMMON_CONSTRAINTS)

    def __init__(
        self, estimator: Any = None, *, scoring: Any = None, utility: Any = None,
        task: str = "auto", cv: Any = 5, default_score: float = 0.0,
        error_score: Any = None, batch_fit: Any = "auto", device: Any = None,
        n_jobs: int | None = None, verbose: int = 0,
    ) -> None:
        _store_params(self, locals())

    def _mass(self, n: int) -> np.ndarray:
        return np.full(n, np.nan)  # leave-one-out is no semivalue; its sampler ignores it
