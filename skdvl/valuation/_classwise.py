"""Class-wise Shapley values (CS-Shapley) of the rows of a classification problem.

Schoch, Xu & Ji (2022), "CS-Shapley: class-wise Shapley values for data
valuation in classification", NeurIPS; reproduced by Semmler & de Benito
Delgado (2024), "[Re] Classwise-Shapley values for data valuation", TMLR.

The validation data ``D`` is split by class: ``D_c`` are the rows of class
``c`` and ``D_{-c}`` the others. A model fitted on rows ``S`` scores its
*in-class* accuracy ``a_S(D_c)`` and *out-of-class* accuracy ``a_S(D_{-c})``
(correct predictions over ``|D|``, so that the two add up to the accuracy on
``D``), and the utility of ``S`` for class ``c`` is::

    u_c(S) = a_S(D_c) * exp(a_S(D_{-c}))

Row ``i`` of class ``c`` (training rows ``T_c``; the others ``T_{-c}``) is
valued by the Shapley value of the in-class game, averaged over out-of-class
*contexts* ``R``, subsets of ``T_{-c}``, all equally likely::

    v_i = 2^-|T_{-c}| sum_{R} sum_{S subset of T_c - i}
          |S|! (|T_c| - |S| - 1)! / |T_c|! * (u_c(S + i + R) - u_c(S + R))

One model fit gives the in-class and out-of-class accuracies of every class at
once: :class:`ClasswiseModelUtility` caches them by coalition, so a coalition
fitted for one class is not fitted again for another (exact enumeration values
``K`` classes with ``2^n`` fits, not ``K 2^n``). The samplers run on the engine
of :mod:`skdvl.sampling._engine` through a game of ``n + K`` players whose last ``K``
players say which class a coalition is scored for, so the engine's cache keys
hold the class as well as the rows.
"""

from __future__ import annotations

import warnings
from numbers import Real
from typing import Any

import numpy as np
from sklearn.base import is_classifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import check_cv
from sklearn.utils.multiclass import type_of_target

from skdvl._sklearn_compat import HasMethods
from skdvl.base import check_targets, pandas_index, resolve_task, validate_valuation_data
from skdvl.result import ValuationResult
from skdvl.sampling import BaseSampler
from skdvl.sampling._classwise import ClasswiseExactSampler, ClasswisePermutationSampler
from skdvl.utility._classwise import (
    ClasswiseModelUtility,
    _CheckedClasswise,
    _Layout,
)
from skdvl.valuation._base import (
    COMMON_CONSTRAINTS,
    SAMPLING_CONSTRAINTS,
    _GameValuer,
    joined_fit_paths,
)

__all__ = [
    "ClasswiseShapleyValuer", "ClasswiseModelUtility", "ClasswisePermutationSampler",
    "ClasswiseExactSampler",
]


# --------------------------------------------------------------------------- the valuer
_CLASSWISE_COMMON = ("estimator", "scoring", "utility", "cv", "default_score", "error_score",
                     "batch_fit", "n_jobs", "verbose")


def _first(y: np.ndarray) -> Any:
    v = np.asarray(y).reshape(-1)[0]
    return v.item() if isinstance(v, np.generic) else v


class ClasswiseShapleyValuer(_GameValuer):
    """Class-wise Shapley values (CS-Shapley) of the training rows of a classifier.

    A row of class ``c`` is valued by its in-class Shapley value under the
    utility ``u_c(S) = a_S(D_c) * exp(a_S(D_{-c}))``, averaged over random
    out-of-class contexts (Schoch, Xu & Ji, 2022, "CS-Shapley: class-wise
    Shapley values for data valuation in classification", NeurIPS).
    ``a_S(D_c)`` is the accuracy of the model fitted on rows ``S`` on the
    validation rows of class ``c`` and ``a_S(D_{-c})`` on the others, each
    counted over all validation rows. A row that helps the accuracy of other
    classes but hurts its own class (a mislabelled row, typically) gets a low
    value, where plain Data Shapley may not tell it apart. Semmler & de Benito
    Delgado (2024), "[Re] Classwise-Shapley values for data valuation", TMLR,
    confirm that it finds corrupted labels well.

    Parameters
    ----------
    estimator : classifier, default=None
        The model whose clones are fitted on coalitions of rows; a regressor is
        refused. None means ``LogisticRegression(max_iter=1000)``. Fix its
        ``random_state`` if it has one.
    scoring : str, callable or None, default=None
        The inner score of ``D_c`` and ``D_{-c}``; None means accuracy (the
        paper's), computed from one ``predict`` per fit. Another scorer is called
        ``2 K`` times per fit and is weighted by the share of validation rows it
        scores, as accuracy is.
    utility : object, default=None
        A custom class-wise utility; then ``fit()`` takes no data. It needs
        ``n_players`` (int), ``labels`` (the class of each player, shape
        ``(n_players,)``) and ``__call__(subset)`` returning an array of shape
        ``(2, n_classes)``: the in-class scores ``a_S(D_c)`` (row 0) and the
        out-of-class scores ``a_S(D_{-c})`` (row 1) of the coalition, for the
        classes ``c`` of ``np.unique(labels)`` in order, all from one
        evaluation. A batched ``evaluate(masks)`` (bool ``(m, n_players)`` to
        ``(m, 2, n_classes)``) is used when present. The valuer combines the
        two scores as ``a * exp(b)`` and normalises with the in-class scores of
        all players. :class:`ClasswiseModelUtility` is the utility built from data.
    sampler : {"permutation", "exact"} or sampler instance, default="permutation"
        "permutation" (:class:`ClasswisePermutationSampler`): per sample and
        class, a random in-class permutation in a fresh random out-of-class
        context, ``n + K`` evaluations for one marginal per row. "exact"
        (:class:`ClasswiseExactSampler`): all ``2^n`` coalitions, each fitted
        once for all classes; refused for ``n > 20``.
    truncation : None, float, RelativeTruncation or FixedTruncation, default=None
        Truncate each in-class permutation (permutation sampler only): a float
        ``rtol`` stops it once the prefix scores within ``rtol`` (relative) of
        the whole class in the same context, taking the later marginals as 0.
    normalize : bool, default=True
        Scale the values of each class so that they sum to the in-class
        accuracy ``a_T(D_c)`` of the model fitted on all rows (the
        normalisation of Schoch et al., kept by the reproduction). A class whose
        values sum to 0 is left as it is, and one whose values sum to less than
        0 too, with a warning (scaling would reverse their order). Standard
        errors are scaled alike.
    max_updates : int, "auto" or None, default="auto"
        Stop once a value has this many updates (one per permutation of its
        class); "auto" means 100, unless ``max_time`` or ``stopping`` is given.
    stderr_tol : float or None, default=None
        Stop (converged) once every standard error is below this (of the
        values before normalisation).
    max_time : float or None, default=None
        Stop after this many seconds.
    stopping : StoppingCriterion or None, default=None
        Any criterion of :mod:`skdvl.stopping`.
    cv : int, cross-validation generator or iterable, default=5
        Folds of the cross-valuation used when ``fit`` gets no ``X_val``
        (stratified for an int): each fold is the validation data of a game
        over the other rows; a row's value is the mean over its games, each
        game normalised on its own.
    default_score : float, default=0.0
        Utility of the empty coalition and of coalitions of a single class.
    error_score : "raise", float or None, default=None
        Utility of a coalition whose fit or score fails (its in-class score;
        out-of-class 0); None means ``default_score``. Failures are summarised in
        one :class:`~skdvl.utility.UtilityFitWarning`.
    batch_fit : "auto", bool, default="auto"
        Fit many coalitions in one vectorised solve for ``LogisticRegression``
        (L2, alone or after a ``StandardScaler``) with accuracy scoring; see
        :class:`ClasswiseModelUtility`.
    n_jobs : int, default=None
        Parallel workers (joblib). Values do not depend on it.
    random_state : int, RandomState instance or None, default=None
        Seeds the sampling: identical values for any ``n_jobs`` and backend.
    verbose : int, default=0
        Show a progress bar when > 0.
    warm_start : bool, default=False
        Continue sampling from the previous fit (same data and parameters but
        the budget), as for :class:`~skdvl.ShapleyValuer`.

    Attributes
    ----------
    values_ : ndarray or Series of shape (n_samples,)
        The values (a Series on the index of ``X`` when ``X`` is a DataFrame).
    stderr_ : ndarray or Series of shape (n_samples,)
        Their standard errors (0 for exact values).
    counts_ : ndarray or Series of shape (n_samples,)
        Marginal contributions behind each value.
    result_ : ValuationResult
        All of the above in one object.
    n_utility_evaluations_ : int
        Coalitions evaluated (model fits, for data; one fit serves every class
        it is scored for; cache hits are not counted).
    converged_ : bool
        True for exact values and when ``stderr_tol`` stopped sampling.
    n_players_ : int
        Number of players (training rows).
    n_features_in_ : int
        Number of features seen in ``fit`` (data mode only).
    fit_path_ : str
        "batched", "per-coalition: " and why, or "custom utility".

    See Also
    --------
    ShapleyValuer : Data Shapley, one utility for all rows.

    Notes
    -----
    Cost: ``max_updates`` permutations per class, each ``n_c + 1`` fits for a
    class of ``n_c`` rows: about ``max_updates * (n + K)`` fits, as many as
    ``max_updates`` permutations of Data Shapley. For two classes the empty
    in-class prefix is a one-class coalition (``default_score``, no fit).

    Departures from pyDVL's ``ClasswiseShapleyValuation``: each permutation
    starts from ``u_c(R)`` of its context (pyDVL starts from the default
    score; the same for two classes, whose ``R`` alone holds one class), every
    context is drawn afresh and contexts lacking a class are kept (the
    definition averages over all of them), and a class whose values sum to
    less than 0 is not normalised.

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> from sklearn.neighbors import KNeighborsClassifier
    >>> from skdvl.valuation._classwise import ClasswiseShapleyValuer
    >>> X, y = make_classification(n_samples=60, random_state=0)
    >>> v = ClasswiseShapleyValuer(KNeighborsClassifier(n_neighbors=1), max_updates=10,
    ...                            random_state=0)
    >>> v.fit(X[:30], y[:30], X_val=X[30:], y_val=y[30:]).values_.shape
    (30,)
    >>> v.n_utility_evaluations_ <= 10 * (30 + 2) + 1
    True
    """

    _algorithm = "classwise_shapley"
    _values_groups = False  # a player has one class; a group of rows may have several
    _samplers = {"permutation": ClasswisePermutationSampler, "exact": ClasswiseExactSampler}
    _parameter_constraints = {
        **{key: COMMON_CONSTRAINTS[key] for key in _CLASSWISE_COMMON},
        **SAMPLING_CONSTRAINTS,
        "sampler": [str, BaseSampler],
        "truncation": [Real, HasMethods(["first_stop"]), None],
        "normalize": ["boolean"],
    }

    def __init__(
        self, estimator: Any = None, *, scoring: Any = None, utility: Any = None,
        sampler: Any = "permutation", truncation: Any = None, normalize: bool = True,
        max_updates: int | str | None = "auto", stderr_tol: float | None = None,
        max_time: float | None = None, stopping: Any = None, cv: Any = 5,
        default_score: float = 0.0, error_score: Any = None, batch_fit: Any = "auto",
        n_jobs: int | None = None, random_state: Any = None, verbose: int = 0,
        warm_start: bool = False,
    ) -> None:
        self.estimator, self.scoring, self.utility = estimator, scoring, utility
        self.sampler, self.truncation, self.normalize = sampler, truncation, normalize
        self.max_updates, self.stderr_tol, self.max_time = max_updates, stderr_tol, max_time
        self.stopping, self.cv, self.default_score = stopping, cv, default_score
        self.error_score, self.batch_fit, self.n_jobs = error_score, batch_fit, n_jobs
        self.random_state, self.verbose, self.warm_start = random_state, verbose, warm_start

    def _mass(self, n: int) -> np.ndarray:
        return np.full(n, np.nan)  # no semivalue of one game: the samplers ignore it

    def _resolve_sampler(self, n: int | None = None, cheap_prefixes: bool = False) -> BaseSampler:
        sampler, truncation, name = self.sampler, self.truncation, type(self).__name__
        if isinstance(sampler, str):
            if sampler not in self._samplers:
                raise ValueError(
                    f"The 'sampler' parameter of {name} must be one of "
                    f"{sorted(self._samplers)} or a class-wise sampler instance. Got "
                    f"{sampler!r} instead.")
            if sampler == "exact":
                if truncation is not None:
                    raise ValueError(
                        f"truncation={truncation!r} applies to the permutation sampler "
                        "only; sampler='exact' does not truncate. Set truncation=None.")
                return ClasswiseExactSampler()
            return ClasswisePermutationSampler(truncation)
        if not isinstance(sampler, (ClasswisePermutationSampler, ClasswiseExactSampler)):
            raise ValueError(
                f"The 'sampler' parameter of {name} must be 'permutation', 'exact', a "
                "ClasswisePermutationSampler or a ClasswiseExactSampler (class-wise values "
                f"need class-wise coalitions). Got {sampler!r} instead.")
        if truncation is not None:
            raise ValueError(
                "Pass truncation to the sampler instance, not to the valuer. Got "
                f"truncation={truncation!r} with sampler={sampler!r}.")
        return sampler

    def reweight(self, valuer: Any) -> Any:
        """Not available: class-wise values are no semivalue of one game.

        Raises
        ------
        ValueError
            Always.
        """
        raise ValueError(
            f"{type(self).__name__} cannot reweight its samples into another semivalue: "
            "class-wise Shapley values average many in-class games. Fit "
            f"{type(valuer).__name__} itself.")

    # -- games ----------------------------------------------------------------
    def _games(self, X: Any, y: Any, X_val: Any, y_val: Any,
               groups: Any = None) -> tuple[list[Any], Any, Any]:
        """The (class-wise utility, global indices of its players) pairs to value."""
        if groups is not None:
            raise ValueError(
                f"{type(self).__name__} does not value groups of rows: a group may hold rows "
                "of several classes, and a player needs one class. Fit without groups.")
        if self.utility is not None:
            return self._custom_game(X, y, X_val), None, None
        name = type(self).__name__
        if y is None:
            raise ValueError(
                f"{name} requires y to be passed, but the target y is None (pass a custom "
                "class-wise utility to value without data).")
        index = pandas_index(X)
        estimator = self._classifier()
        X, y, X_val, y_val = validate_valuation_data(
            self, X, y, X_val, y_val, estimator=estimator, min_samples=2)
        self._check_labels(y, y_val)
        self.n_players_ = n = X.shape[0]
        kwargs = self._utility_kwargs()
        kwargs.pop("device", None)
        data = (X, y, X_val, y_val)
        if X_val is not None:
            utility = ClasswiseModelUtility(estimator, X, y, X_val, y_val, **kwargs)
            self.fit_path_ = utility.fit_path
            return [(utility, np.arange(n))], index, data
        cv = check_cv(self.cv, y, classifier=True)
        games = [(ClasswiseModelUtility(estimator, X[train], y[train], X[test], y[test],
                                        **kwargs), train) for train, test in cv.split(X, y)]
        self.fit_path_ = joined_fit_paths([u for u, _ in games])
        return games, index, data

    def _custom_game(self, X: Any, y: Any, X_val: Any) -> list[Any]:
        name, utility = type(self).__name__, self.utility
        if X is not None or y is not None or X_val is not None:
            raise ValueError(
                "With a custom utility, fit() takes no data: the utility defines the "
                f"players. Got X of type {type(X).__name__} as well.")
        n = getattr(utility, "n_players", None)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(
                f"The 'utility' of {name} must have an integer n_players >= 1. Got "
                f"n_players={n!r} instead.")
        labels = getattr(utility, "labels", None)
        if labels is None or np.shape(labels) != (n,):
            raise ValueError(
                f"The 'utility' of {name} must have 'labels', the class of each of its "
                f"n_players={n} players (an array of shape ({n},)). Got "
                f"{'no labels' if labels is None else f'shape {np.shape(labels)}'} instead.")
        self.n_players_ = int(n)
        self.fit_path_ = "custom utility"
        checked = _CheckedClasswise(utility, self.default_score, self.error_score,
                                    int(np.unique(np.asarray(labels)).shape[0]))
        return [(checked, np.arange(int(n)))]

    def _classifier(self) -> Any:
        est = self.estimator
        if est is None:
            return LogisticRegression(max_iter=1000)
        if not is_classifier(est):
            raise ValueError(
                f"{type(self).__name__} needs a classifier: its utility is the model's "
                "accuracy on each class of the validation data. Got estimator="
                f"{est!r}, which is not a classifier (is_classifier is False for "
                f"{type(est).__name__}). Value a regressor with ShapleyValuer.")
        return est

    def _check_labels(self, y: np.ndarray, y_val: Any) -> None:
        name = type(self).__name__
        for arg, target in (("y", y), ("y_val", y_val)):
            if target is None:
                continue
            target = np.asarray(target)
            if target.dtype.kind in "fc" and type_of_target(target) == "continuous":
                raise ValueError(
                    f"{name} values the rows of a classification problem, but {arg} is "
                    f"continuous (e.g. {_first(target)!r}): class-wise utilities split the "
                    "validation data by class. Value a regression target with "
                    "ShapleyValuer.")
        resolve_task(y, "classification", name)  # refuses labels of mixed types
        check_targets(y, y_val, "classification", name)

    # -- normalisation ----------------------------------------------------------
    def _value_game(self, utility: Any, sampler: BaseSampler, g: int,
                    state: Any) -> tuple[ValuationResult, Any]:
        result, state = super()._value_game(utility, sampler, g, state)
        if self.normalize and np.isfinite(result.values).any():
            evals0 = int(utility.n_evaluations)
            result = self._normalized(result, utility)
            state.n_evaluations += int(utility.n_evaluations) - evals0
        return result, state

    def _normalized(self, result: ValuationResult, utility: Any) -> ValuationResult:
        """Scale each class's values to sum to its in-class score on all players."""
        layout = _Layout(utility.labels)
        in_class = np.asarray(utility(np.arange(layout.n)))[0]
        values, variances = result.values.copy(), result.variances.copy()
        skipped = []
        for k, members in enumerate(layout.members):
            valued = members[np.isfinite(values[members])]
            total = float(values[valued].sum())
            if total < 0:
                skipped.append(f"{_first(layout.classes[k:k + 1])!r} (sum {total:.3g})")
            if total <= 0:  # 0: nothing to scale (e.g. no validation row of the class)
                continue
            scale = in_class[k] / total
            values[members] *= scale
            variances[members] *= scale**2
        if skipped:
            warnings.warn(
                f"{type(self).__name__}: the values of class {', '.join(skipped)} sum to "
                "less than 0, so they are not normalised (scaling them to the in-class "
                "accuracy would reverse their order). Raise the budget, or set "
                "normalize=False.", UserWarning, stacklevel=4)
        return ValuationResult(values, variances=variances, counts=result.counts)
