"""Data utility learning: a regressor that answers for the utility.

Wang, Yang & Jia (2022), "Improving cooperative game theory-based data
valuation via data utility learning" (ICLR 2022 workshop; arXiv 2107.06336):
most of the cost of a data value is utility evaluations, one model fit each,
and the utility of a coalition is a smooth enough function of the coalition to
be learned. So evaluate a few coalitions for real, fit a regressor from the
coalition (its indicator vector) to its utility, and let the estimator sample
as many coalitions as it wants from the regressor's predictions.

:class:`LearnedUtility` is that wrapper. It follows the utility protocol
(``n_players``, ``__call__``, a batched ``evaluate``), so every sampler of
every valuer takes it through ``utility=``. Its training coalitions are drawn
and evaluated in :meth:`LearnedUtility.fit`, in the main process and before
any sampling: the engine copies the utility into each worker, and a model
learned from "the first coalitions this worker saw" would differ from worker
to worker.
"""

from __future__ import annotations

import math
import warnings
from numbers import Integral
from typing import Any

import numpy as np
from scipy.stats import binom
from sklearn.base import BaseEstimator, clone, is_regressor
from sklearn.exceptions import NotFittedError
from sklearn.utils import check_random_state

from skdvl._coalitions import masks_from_codes, uniform_coalitions
from skdvl._sklearn_compat import HasMethods, StrOptions, fit_context
from skdvl.sampling._base import TableState
from skdvl.sampling._engine import evaluate_coalitions
from skdvl.utility import FitReport, report_fit_problems

__all__ = ["LearnedUtility"]

#: Enumerate the eligible coalitions (and sample without replacement from them)
#: when there are at most this many and the budget takes over a quarter of them;
#: otherwise draw and drop repeats.
_ENUMERATE_MAX = 1 << 20


class LearnedUtility(BaseEstimator):
    """A utility learned from a few real evaluations (data utility learning).

    :meth:`fit` draws ``training_budget`` distinct coalitions from
    ``training_distribution``, evaluates them with ``utility`` (in parallel,
    through the valuation engine, with the batched ``evaluate`` of ``utility``
    when it has one), and fits a clone of ``utility_model`` from the
    coalitions' features to their utilities (Wang, Yang & Jia, 2022). The
    fitted object is then a utility: a coalition of the training set gets its
    real utility back (the training set is a cache), any other the model's
    prediction. Hand it to a valuer as ``utility=`` once fitted; no real
    evaluation happens after :meth:`fit`.

    Parameters
    ----------
    utility : object
        The real utility: ``n_players`` and ``__call__(subset)``, optionally a
        batched ``evaluate(masks)`` (e.g. a :class:`~skdvl.ModelUtility`, or a
        game of :mod:`skdvl.games`). Only :meth:`fit` evaluates it.
    utility_model : regressor
        A scikit-learn regressor, cloned and fitted on the training coalitions.
        Its parameters named ``random_state`` (or ending in ``__random_state``)
        that are None are seeded from ``random_state``.
    training_budget : int
        Real evaluations: the number of distinct training coalitions, in
        ``[1, 2^n_players]`` (at most the coalitions ``training_distribution``
        can draw).
    training_distribution : {"shapley", "banzhaf", "kernel"} or array-like of \
shape (n_players + 1,), default="shapley"
        How the training coalitions are drawn. The full and empty coalitions
        come first (the full one alone when ``training_budget=1``), then
        coalitions of size ``s`` in ``1 .. n - 1`` with probability proportional
        to ``p(s)``, uniform given their size, without repeats. "shapley":
        ``p(s)`` uniform, the sizes of the prefixes of random permutations (the
        permutation, Owen and uniform-stratified samplers); "banzhaf": binomial
        ``(n, 1/2)``, every player in with probability 1/2 (MSR and the uniform
        toggle sampler); "kernel": ``p(s)`` proportional to ``1 / (s (n - s))``,
        the Shapley kernel of KernelSHAP and Leverage SHAP; an array: the
        ``n + 1`` probabilities ``p(0) .. p(n)`` (``p(0)`` and ``p(n)`` are
        ignored: those two coalitions are always in).
    featurize : callable or None, default=None
        ``featurize(masks) -> features``: maps a boolean array of shape
        ``(m, n_players)`` to ``m`` rows of features for ``utility_model``
        (e.g. class counts of the coalition, or pairwise products). None means
        the indicator vector of the coalition, as floats.
    random_state : int, RandomState instance or None, default=None
        Seeds the draw of the training coalitions and the unseeded
        ``random_state`` parameters of ``utility_model``.
    n_jobs : int, default=None
        Parallel workers for the real evaluations of :meth:`fit` (joblib). The
        training set, the model and every prediction do not depend on it.
    verbose : int, default=0
        Show a progress bar of the real evaluations when > 0.

    Attributes
    ----------
    utility_model_ : regressor
        The fitted clone of ``utility_model``.
    training_masks_ : ndarray of bool, shape (training_budget, n_players)
        The training coalitions, in the order drawn.
    training_utilities_ : ndarray of shape (training_budget,)
        Their real utilities.
    n_real_evaluations_ : int
        Evaluations of ``utility`` done by :meth:`fit`, as ``utility`` counts
        them (a :class:`~skdvl.ModelUtility` does not count the empty
        coalition, which costs no fit); a utility that keeps no count counts
        one per training coalition. Nothing after :meth:`fit` adds to it.
    training_report_ : FitReport
        Fits and failures of the real evaluations (as
        :class:`~skdvl.ModelUtility` records them).
    predict_path_ : str
        How predictions are computed: "linear" (exact sums of ``coef_``) or
        "predict, rounded to float32" (see Notes).
    n_evaluations : int
        Coalitions answered by this copy since :meth:`fit` (training-set hits
        and predictions): what the engine reports as utility evaluations.

    Notes
    -----
    Determinism. Everything random happens in :meth:`fit`, in the calling
    process, so one ``random_state`` gives the same training set, model and
    values for any ``n_jobs`` of :meth:`fit` or of the valuer. The engine sends
    different batches of coalitions to :meth:`evaluate` for different
    ``n_jobs``, and BLAS-based ``predict`` methods (linear models, neural
    nets) change the last bits of a prediction with the batch it is in. So a
    model that :meth:`fit` finds linear in its features (``predict`` equals
    ``features @ coef_ + intercept_``) is predicted here by sums in a fixed
    order, row by row: bit-identical in any batch. Other models' predictions
    are rounded to float32 precision (a relative change below 6e-8), which
    makes a last-bit difference change the result only if it straddles a
    float32 rounding boundary (probability about 1e-8 per differing
    prediction); tree ensembles and nearest neighbours do not differ at all.

    Departures from the paper. Wang, Yang & Jia train on the coalitions the
    Monte Carlo estimator samples first and use deep-set networks; here the
    training coalitions are drawn up front from the estimator's size
    distribution (the distinct-coalition version of the same thing), always
    include the full and empty coalitions, so that values that add up (Shapley)
    add up to the real ``u(N) - u(empty)``, and the model is any scikit-learn
    regressor (``featurize`` gives it set-level features).

    References
    ----------
    .. [1] Wang, T., Yang, Y. and Jia, R. (2022). Improving cooperative game
       theory-based data valuation via data utility learning. ICLR 2022
       Workshop on Socially Responsible Machine Learning. arXiv:2107.06336.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import make_classification
    >>> from sklearn.linear_model import LinearRegression, LogisticRegression
    >>> from skdvl import ModelUtility, ShapleyValuer
    >>> from skdvl.utility_learning import LearnedUtility
    >>> X, y = make_classification(n_samples=60, random_state=0)
    >>> real = ModelUtility(LogisticRegression(), X[:30], y[:30], X[30:], y[30:],
    ...                     scoring="neg_log_loss", default_score=-np.log(2))
    >>> learned = LearnedUtility(real, LinearRegression(), training_budget=100,
    ...                          random_state=0).fit()
    >>> learned.n_real_evaluations_, learned.predict_path_
    (99, 'linear')
    >>> v = ShapleyValuer(utility=learned, max_updates=500, random_state=0).fit()
    >>> bool(np.isclose(v.values_.sum(), real(np.arange(30)) - real([])))
    True
    """

    _parameter_constraints: dict[str, list[Any]] = {
        "utility": [HasMethods(["__call__"])],
        "utility_model": [HasMethods(["fit", "predict"])],
        "training_budget": [Integral],
        "training_distribution": [StrOptions({"shapley", "banzhaf", "kernel"}), "array-like"],
        "featurize": [callable, None],
        "random_state": ["random_state"],
        "n_jobs": [Integral, None],
        "verbose": ["verbose"],
    }

    def __init__(
        self, utility: Any, utility_model: Any, *, training_budget: int,
        training_distribution: Any = "shapley", featurize: Any = None,
        random_state: Any = None, n_jobs: int | None = None, verbose: int = 0,
    ) -> None:
        self.utility = utility
        self.utility_model = utility_model
        self.training_budget = training_budget
        self.training_distribution = training_distribution
        self.featurize = featurize
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.verbose = verbose

    def __sklearn_clone__(self) -> LearnedUtility:
        """A fitted LearnedUtility is a game, not a model to refit: ``clone`` returns it.

        So ``clone(ShapleyValuer(utility=learned))`` values the same learned game
        (as :class:`sklearn.frozen.FrozenEstimator` is not refitted by clones); an
        unfitted one is cloned as any estimator.
        """
        if hasattr(self, "utility_model_"):
            return self
        return super().__sklearn_clone__()  # type: ignore[no-any-return]

    @property
    def n_players(self) -> int:
        """Players of the game: those of ``utility``."""
        return int(self.utility.n_players)

    # -- fit ----------------------------------------------------------------
    @fit_context(prefer_skip_nested_validation=False)
    def fit(self) -> LearnedUtility:
        """Draw the training coalitions, evaluate them for real, fit the model.

        Returns
        -------
        self : LearnedUtility
            The fitted utility, ready to be valued.

        Raises
        ------
        ValueError
            For a bad parameter (named, with the value received), or when
            every real evaluation failed or returned NaN or infinity.
        """
        n = _check_players(self.utility)
        if not is_regressor(self.utility_model):
            raise ValueError(
                "The 'utility_model' parameter of LearnedUtility must be a scikit-learn "
                "regressor (it predicts a utility, a number; is_regressor(utility_model) "
                f"must be True). Got {self.utility_model!r} instead.")
        sizes = _size_distribution(self.training_distribution, n)
        budget = _check_budget(self.training_budget, n, sizes)
        if budget < min(n + 1, 1 << min(n, 62)):
            warnings.warn(
                f"training_budget={budget} is fewer than n_players + 1 = {n + 1} coalitions: "
                "not even a linear model of which players are in a coalition is determined "
                "by so few utilities, so the learned utility (and the values) are mostly "
                f"the model's guess. Use at least {n + 1}, better 10 * n_players.",
                UserWarning, stacklevel=2)
        entropy = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        draw_seq, model_seq = np.random.SeedSequence(entropy).spawn(2)
        draw_rng = np.random.default_rng(draw_seq)
        masks = _draw_coalitions(draw_rng, n, budget, sizes)
        masks = _spanning(masks, draw_rng, n, sizes)
        utilities, n_real, report = self._evaluate_real(masks)
        features = self._features(masks)
        model = _seed(clone(self.utility_model), model_seq)
        model.fit(features, utilities)
        self._linear = _linear_terms(model, features)
        self.predict_path_ = "linear" if self._linear is not None else (
            "predict, rounded to float32")
        self.utility_model_ = model
        self.training_masks_ = masks
        self.training_utilities_ = utilities
        self.n_real_evaluations_ = n_real
        self.training_report_ = report
        self._known = dict(zip(_keys(masks), utilities.tolist()))
        self.n_evaluations = 0
        return self

    def _evaluate_real(self, masks: np.ndarray) -> tuple[np.ndarray, int, FitReport]:
        """Real utilities of ``masks``, evaluated by the engine (parallel, batched, once)."""
        m, n = masks.shape
        state = evaluate_coalitions(
            self.utility, TableState(n, m, np.empty(0)), masks=masks, n_jobs=self.n_jobs,
            verbose=self.verbose, desc="LearnedUtility: real evaluations")
        if state.interrupted:
            raise KeyboardInterrupt(
                f"LearnedUtility.fit was interrupted after {state.done} of {m} real "
                "evaluations; nothing was fitted.")
        report_fit_problems(state.report, state.n_evaluations, "LearnedUtility.fit")
        utilities = np.asarray(state.utilities, dtype=np.float64)
        bad = ~np.isfinite(utilities)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"The utility returned a non-finite value for {int(bad.sum())} of the {m} "
                f"training coalitions (the first: {utilities[k]} for a coalition of "
                f"{int(masks[k].sum())} players); a regressor cannot learn from them. "
                "Wrap the utility in skdvl.utility.CheckedUtility.wrap(utility) to score "
                "them default_score instead.")
        return utilities, int(state.n_evaluations), state.report.copy()

    # -- the utility ----------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "utility_model_"):
            raise NotFittedError(
                "This LearnedUtility is not fitted yet: call fit() first, which evaluates "
                "the training coalitions for real and fits utility_model, then value it.")

    def __call__(self, subset: Any) -> float:
        """The utility of one coalition, given as distinct player indices."""
        mask = np.zeros((1, self.n_players), dtype=bool)
        mask[0, np.asarray(subset, dtype=np.intp).reshape(-1)] = True
        return float(self.evaluate(mask)[0])

    def evaluate(self, masks: Any) -> np.ndarray:
        """Utilities of many coalitions: real ones for training coalitions, else predicted.

        Parameters
        ----------
        masks : ndarray of bool, shape (m, n_players)
            Row ``k`` marks the members of coalition ``k``.

        Returns
        -------
        ndarray of float64, shape (m,)
        """
        self._check_fitted()
        masks = np.asarray(masks)
        n = self.n_players
        if masks.ndim != 2 or masks.shape[1] != n:
            raise ValueError(
                f"masks must be a 2-D boolean array of shape (n_coalitions, n_players={n}). "
                f"Got shape {masks.shape} instead.")
        masks = masks.astype(bool, copy=False)
        m = masks.shape[0]
        self.n_evaluations += m
        out = np.empty(m)
        known = self._known
        todo = []
        for i, key in enumerate(_keys(masks)):
            value = known.get(key)
            if value is None:
                todo.append(i)
            else:
                out[i] = value
        if todo:
            idx = np.asarray(todo, dtype=np.intp)
            out[idx] = self._predict(self._features(masks[idx]))
        return out

    def _features(self, masks: np.ndarray) -> Any:
        if self.featurize is None:
            return masks.astype(np.float64)
        features = self.featurize(masks)
        rows = getattr(features, "shape", (None,))[0]
        if rows != masks.shape[0] or len(getattr(features, "shape", ())) != 2:
            raise ValueError(
                "featurize(masks) must return a 2-D array with one row per coalition: got "
                f"shape {getattr(features, 'shape', None)} for {masks.shape[0]} coalitions.")
        return features

    def _predict(self, features: Any) -> np.ndarray:
        if self._linear is not None:
            return _linear_predict(features, *self._linear)
        pred = np.asarray(self.utility_model_.predict(features), dtype=np.float64).reshape(-1)
        bad = ~np.isfinite(pred)
        if bad.any():  # checked like a real utility's value: never passed on as a value
            raise ValueError(
                f"utility_model={self.utility_model_!r} predicted {int(bad.sum())} "
                f"non-finite utilities for {pred.shape[0]} coalitions (first: {pred[bad][0]}). "
                "A learned utility must be finite: check the model and its features.")
        with np.errstate(over="ignore"):
            rounded = pred.astype(np.float32).astype(np.float64)
        return np.where(np.isfinite(rounded), rounded, pred)  # beyond float32: unrounded


# --------------------------------------------------------------------------- helpers
def _check_players(utility: Any) -> int:
    n = getattr(utility, "n_players", None)
    if isinstance(n, bool) or not isinstance(n, (Integral, np.integer)) or n < 1:
        raise ValueError(
            "The 'utility' parameter of LearnedUtility must have an integer n_players >= 1. "
            f"Got n_players={n!r} instead.")
    return int(n)


def _size_distribution(spec: Any, n: int) -> np.ndarray:
    """Probabilities ``p(0) .. p(n)`` of the sizes of the drawn coalitions."""
    s = np.arange(n + 1)
    if isinstance(spec, str):
        if spec == "shapley":
            return np.full(n + 1, 1.0 / (n + 1))
        if spec == "banzhaf":
            return binom.pmf(s, n, 0.5)
        inner = (s > 0) & (s < n)  # "kernel": the Shapley kernel, p(s) ~ 1 / (s (n - s))
        p = np.zeros(n + 1)
        p[inner] = 1.0 / (s[inner] * (n - s[inner]))
        return p / p.sum() if p.sum() > 0 else p
    p = np.asarray(spec, dtype=np.float64)
    if p.shape != (n + 1,) or not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError(
            "The 'training_distribution' parameter of LearnedUtility must be 'shapley', "
            f"'banzhaf', 'kernel' or n_players + 1 = {n + 1} non-negative probabilities of "
            f"the coalition sizes 0..{n}. Got an array of shape {p.shape} ({spec!r}) instead.")
    return p


def _eligible(n: int, sizes: np.ndarray) -> int:
    """Coalitions of sizes 1 .. n-1 that ``sizes`` can draw."""
    if np.all(sizes[1:n] > 0):
        return (1 << n) - 2 if n > 1 else 0
    return sum(math.comb(n, k) for k in range(1, n) if sizes[k] > 0)


def _check_budget(budget: Any, n: int, sizes: np.ndarray) -> int:
    most = min(2, 1 << n) + _eligible(n, sizes)
    integer = isinstance(budget, (Integral, np.integer)) and not isinstance(
        budget, (bool, np.bool_))
    if not (integer and 1 <= int(budget) <= most):
        if most == 1 << n:
            top = most if n <= 62 else f"2^{n}"
            rule = f"in [1, 2^n_players] = [1, {top}] (the coalitions of {n} players)"
        else:
            rule = (f"in [1, {most}] (the coalitions of {n} players that "
                    "training_distribution can draw)")
        raise ValueError(
            f"The 'training_budget' parameter of LearnedUtility must be an integer {rule}. "
            f"Got {budget!r} instead.")
    return int(budget)


def _draw_coalitions(rng: np.random.Generator, n: int, budget: int,
                     sizes: np.ndarray) -> np.ndarray:
    """``budget`` distinct coalitions: the full and empty ones, then drawn by size.

    The others have a size ``s`` in ``1 .. n-1`` drawn with probability
    proportional to ``sizes[s]`` and are uniform given their size; repeats are
    drawn again (successive sampling without replacement, the distribution of
    the distinct coalitions of an i.i.d. stream).
    """
    first = np.stack([np.ones(n, dtype=bool), np.zeros(n, dtype=bool)])[:budget]
    m = budget - first.shape[0]
    if m == 0:
        return first
    p = sizes[1:n] / sizes[1:n].sum()
    eligible = _eligible(n, sizes)
    if n <= 20 and eligible <= _ENUMERATE_MAX and 4 * m > eligible:
        codes = np.arange(1, (1 << n) - 1, dtype=np.int64)
        size = np.zeros(codes.shape[0], dtype=np.intp)
        for i in range(n):
            size += ((codes >> i) & 1).astype(np.intp)
        log_comb = np.array([math.log(math.comb(n, k)) for k in range(1, n)])
        with np.errstate(divide="ignore"):
            w = np.exp(np.log(p) - log_comb)[size - 1]
        codes, w = codes[w > 0], w[w > 0]
        picked = rng.choice(codes, size=m, replace=False, p=w / w.sum())
        return np.concatenate([first, masks_from_codes(picked, n)])
    seen = set(_keys(first))
    rows: list[np.ndarray] = []
    while len(rows) < m:
        draw = rng.choice(n - 1, size=2 * (m - len(rows)) + 8, p=p) + 1
        cand = uniform_coalitions(rng, draw, n)
        for row, key in zip(cand, _keys(cand)):
            if key not in seen:
                seen.add(key)
                rows.append(row)
                if len(rows) == m:
                    break
    return np.concatenate([first, np.asarray(rows)])


#: above this many players, the training coalitions are not checked for spanning
_SPAN_MAX_PLAYERS = 2000
#: candidate draws per player to replace coalitions that do not add to the span
_SPAN_TRIES = 50


def _spanning(masks: np.ndarray, rng: np.random.Generator, n: int,
              sizes: np.ndarray) -> np.ndarray:
    """The training coalitions, changed so that they span every additive utility.

    An additive utility ``c + sum_{i in S} w_i`` is determined by coalitions
    whose indicator vectors, with a constant 1, have rank ``n + 1``; random
    draws often fall short (at n = 7 and 8 coalitions of uniform sizes, 8 times
    in 10). Going through the coalitions in order, one that adds nothing to the
    span of those before it (while the span is not full) is replaced by a new
    draw from the same distribution that does, as long as such draws come
    within ``_SPAN_TRIES * n`` tries. With at least ``n + 1`` coalitions, a linear
    ``utility_model`` then recovers an additive utility exactly. Skipped above
    ``_SPAN_MAX_PLAYERS`` players.
    """
    m = masks.shape[0]
    if n > _SPAN_MAX_PLAYERS or m < 2:
        return masks
    basis = np.zeros((min(m, n + 1), n + 1))
    rank, redundant = 0, []

    def adds(row: np.ndarray) -> bool:
        nonlocal rank
        v = np.r_[1.0, row.astype(np.float64)]
        for _ in range(2):  # Gram-Schmidt, twice for round-off
            v -= basis[:rank].T @ (basis[:rank] @ v)
        norm = float(np.linalg.norm(v))
        if norm <= 1e-8 * math.sqrt(n + 1):
            return False
        basis[rank] = v / norm
        rank += 1
        return True

    for j in range(m):
        if rank == basis.shape[0]:
            break
        if not adds(masks[j]):
            redundant.append(j)
    if rank == basis.shape[0] or not redundant:
        return masks
    out = masks.copy()
    seen = set(_keys(out))
    p = sizes[1:n] / sizes[1:n].sum()
    tries = 0
    while redundant and rank < basis.shape[0] and tries < _SPAN_TRIES * n:
        draw = rng.choice(n - 1, size=64, p=p) + 1
        cand = uniform_coalitions(rng, draw, n)
        for row, key in zip(cand, _keys(cand)):
            tries += 1
            if key in seen or not adds(row):
                continue
            seen.add(key)
            out[redundant.pop()] = row
            if not redundant or rank == basis.shape[0]:
                break
    return out


def _keys(masks: np.ndarray) -> list[bytes]:
    """Bit-packed keys of the rows of ``masks``."""
    return [row.tobytes() for row in np.packbits(masks, axis=1)]


def _seed(model: Any, seq: np.random.SeedSequence) -> Any:
    """Give the unseeded ``random_state`` parameters of ``model`` seeds from ``seq``."""
    names = sorted(k for k, v in model.get_params(deep=True).items()
                   if (k == "random_state" or k.endswith("__random_state")) and v is None)
    if names:
        seeds = np.random.default_rng(seq).integers(np.iinfo(np.int32).max, size=len(names))
        model.set_params(**{k: int(s) for k, s in zip(names, seeds)})
    return model


def _linear_terms(model: Any, features: Any) -> tuple[np.ndarray, float] | None:
    """``(coef, intercept)`` if ``model.predict`` is ``features @ coef + intercept``."""
    if not (isinstance(features, np.ndarray) and features.ndim == 2
            and features.dtype == np.float64):
        return None
    try:
        coef = np.asarray(model.coef_, dtype=np.float64).reshape(-1)
        intercept = np.asarray(getattr(model, "intercept_", 0.0), dtype=np.float64).reshape(-1)
    except (AttributeError, TypeError, ValueError):
        return None
    if coef.shape[0] != features.shape[1] or intercept.shape != (1,) or not (
            np.all(np.isfinite(coef)) and np.isfinite(intercept[0])):
        return None
    terms = (coef, float(intercept[0]))
    pred = np.asarray(model.predict(features), dtype=np.float64).reshape(-1)
    scale = max(1.0, float(np.max(np.abs(pred), initial=0.0)))
    if not np.allclose(_linear_predict(features, *terms), pred, rtol=1e-9, atol=1e-12 * scale):
        return None  # e.g. a generalised linear model: predict is exp(features @ coef)
    return terms


def _linear_predict(features: np.ndarray, coef: np.ndarray, intercept: float) -> np.ndarray:
    """``features @ coef + intercept`` by a fixed pairwise sum per row.

    Only elementwise operations: each row's result depends on that row alone,
    never on the batch it is computed in (a BLAS product's may).
    """
    terms = features * coef
    while terms.shape[1] > 1:
        if terms.shape[1] % 2:
            terms = np.concatenate([terms, np.zeros((terms.shape[0], 1))], axis=1)
        terms = terms[:, 0::2] + terms[:, 1::2]
    total = terms[:, 0] if terms.shape[1] else np.zeros(terms.shape[0])
    return total + intercept
