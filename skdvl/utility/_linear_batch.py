"""Batched fits of linear models on many coalitions at once.

Model-based utilities fit one estimator per coalition (a subset of the training
rows) and score it on validation data; for small linear models the per-call
overhead of scikit-learn dominates. :func:`plan_batched` inspects an estimator
and, when this module reproduces its optimum exactly, returns a
:class:`BatchPlan` that fits a whole batch of coalitions (a boolean mask array of
shape ``(b, n)``) in a few vectorised solves and scores them vectorised.

Supported: ``LogisticRegression`` (L2 penalty, any finite ``C``, any solver but
liblinear, ``class_weight`` None / "balanced" / dict, binary and multinomial),
``Ridge`` (``positive=False``), ``LinearRegression`` (``positive=False``, the
minimum-norm least-squares solution of rank-deficient coalitions, as
scikit-learn's ``lstsq``), each alone or as the last step of
``Pipeline([StandardScaler(), model])``.

Notes
-----
How it works. The coalitions are sorted by size and cut into blocks; each
block gathers its coalitions' rows into a padded array (padding rows are zero
and weigh 0), so every solve is a batched matrix product. Logistic regression
minimises scikit-learn's objective ``C * sum_i w_i loss_i + ||coef||^2 / 2``
(``w`` = sample weight times class weight, the intercept unpenalised):

- binary problems (and multiclass coalitions holding two classes, which
  scikit-learn fits as binary): damped Newton with exact Hessians, warm-started
  at 0.8 times the fit on all rows, chord steps near the optimum;
- three or more classes: damped Newton on the multinomial loss, with exact
  Hessians while ``K (d + 1) <= 64``, else truncated Newton (Newton-CG)
  preconditioned by the Hessian's exact per-class diagonal blocks for
  coalitions of at most 32 (padded) rows, and above by each class's block taken
  as a multiple of the weighted Gram matrix, both projected onto the zero-sum
  subspace (the full Hessian, ``(K d)^2`` per coalition, would cost more than it
  saves).

Each coalition iterates until its Newton decrement is below 1e-14 of the
objective and no coefficient step moves a decision by more than 1e-7 logit, or
by more than 1e-7 of the largest training decision where that is below 1 logit
(with a tiny ``C`` the decisions are of order ``C``); then one last step is
taken. This is far tighter than scikit-learn's default ``tol=1e-4``; a
coalition that does not get there within 100 iterations is marked ``failed``
for the caller to refit with scikit-learn, never returned unconverged. A
coalition whose gradient at 0 is 0 up to round-off (balanced classes on
constant features) gets the fit 0, as scikit-learn's solvers return it, so that
its tied decisions go to the first class as ``predict`` sends them. Ridge
solves its weighted-centred normal equations (Jacobi-equilibrated);
LinearRegression cuts the Gram spectrum where scikit-learn's
``lstsq(cond=tol)`` cuts singular values, and hands coalitions whose spectrum
comes near the cut to ``scipy.linalg.lstsq`` itself.

Departures from scikit-learn. The fit is scikit-learn's *optimum*, not the
point where its solver stops: with default tolerances lbfgs stops 0.1-2 % from
it on standardised data, enough to flip the prediction of validation points
near the boundary, so a few per cent of accuracy utilities differ from
``clone(estimator).fit(...).score(...)`` (each by one or two validation points
whose decision the default solver's error moved across 0). With extreme
settings (C >= 1e4 on separable data, features spanning 8 orders of magnitude)
scikit-learn's own solvers disagree with each other; this fit then reaches an
objective at least as low as the best of them. With a tiny ``C`` (1e-6 and
below) the objective lbfgs minimises is nearly flat along the intercept and it
stops after one or two iterations, at any ``tol``, while the decisions vary by
about ``C`` logit, so that its accuracies can differ from the optimum's (found
here, and by ``solver="newton-cholesky"``): 12 coalitions in 100 on 40 unscaled
rows of ``make_classification`` with ``C=1e-6``. Warnings scikit-learn would
raise (ConvergenceWarning, ...) are not raised.

The solvers themselves live in :mod:`skdvl.utility._linear_solvers` (on the array
back ends of :mod:`skdvl.utility._linear_backends`), the fitted state and its
scoring in :mod:`skdvl.utility._linear_state`.
"""

from __future__ import annotations

import hashlib
import math
from numbers import Real
from typing import Any

import numpy as np
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.metrics import check_scoring
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.multiclass import type_of_target

from skdvl.utility._linear_backends import NUMPY, backend
from skdvl.utility._linear_solvers import _least_squares, _newton_binomial, _newton_multinomial
from skdvl.utility._linear_state import (
    BatchFit,
    _build_estimator,
    _FitState,
    _score_vectorised,
    _vectorised_ok,
)

__all__ = ["BatchFit", "BatchPlan", "plan_batched"]

_CLASSIFIER_SCORINGS = {None, "accuracy", "balanced_accuracy", "neg_log_loss"}
_REGRESSOR_SCORINGS = {None, "r2", "neg_mean_squared_error", "neg_mean_absolute_error"}
_WARM = 0.8  # start from this fraction of the fit on all rows
_BLOCK = 1 << 18  # floats per gathered block of coalitions (cache-sized)


# --------------------------------------------------------------------------- plan

def plan_batched(estimator: Any, scoring: Any = None, device: Any = None) -> BatchPlan | str:
    """A batched fitter for ``estimator``, or why there is none.

    Parameters
    ----------
    estimator : estimator object
        The (unfitted) model a utility would clone and fit per coalition.
    scoring : str, callable or None, default=None
        The scorer of the utility. ``None``, "accuracy", "balanced_accuracy",
        "neg_log_loss", "r2", "neg_mean_squared_error" and
        "neg_mean_absolute_error" are computed vectorised; any other scorer is
        applied to genuine fitted estimators (see :meth:`BatchPlan.build_estimator`).
    device : None, str or torch.device, default=None
        Where binary logistic regressions are solved: None in numpy, else on this
        torch device in float64 (``"cpu"``, ``"cuda"``, ``"cuda:1"``...). Needs
        torch. Least squares, ridge and multinomial problems are solved in numpy
        whatever the device (closed forms and small systems: the transfer would
        cost more than the solve).

    Returns
    -------
    plan : BatchPlan or str
        The plan when the batched fit reaches the estimator's own optimum,
        otherwise a short sentence saying what is not supported.

    Raises
    ------
    ValueError
        When ``scoring`` is not a scorer (as :func:`sklearn.metrics.check_scoring`),
        or ``device`` is not a torch device this machine has.
    ImportError
        When ``device`` is given and torch is not installed.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> plan_batched(LogisticRegression(C=0.5))
    BatchPlan(LogisticRegression(C=0.5), scoring=None)
    >>> plan_batched(LogisticRegression(solver="liblinear"))
    "solver='liblinear' is not supported (one-vs-rest, penalised intercept)"
    """
    scorer = check_scoring(estimator, scoring=scoring)
    _check_device(device)
    scaler, model = None, estimator
    if isinstance(estimator, Pipeline):
        reason = _pipeline_reason(estimator)
        if reason:
            return reason
        scaler, model = estimator.steps[0][1], estimator.steps[1][1]
    if type(model) is LogisticRegression:
        reason = _logistic_reason(model)
        kind = "logistic"
    elif type(model) is Ridge:
        reason, kind = _ridge_reason(model), "ridge"
    elif type(model) is LinearRegression:
        reason = "positive=True is not supported" if model.positive else ""
        kind = "ols"
    else:
        return f"{type(model).__name__} is not supported"
    if reason:
        return reason
    return BatchPlan(estimator, scoring, scorer, kind, scaler, model, device)


def _check_device(device: Any) -> None:
    """Refuse a ``device`` torch cannot use here, naming it."""
    if device is None:
        return
    try:
        import torch
    except ImportError as exc:
        raise ImportError(
            f"device={device!r} runs the batched fits on torch, which is not installed: "
            "pip install torch, or leave device=None (numpy).") from exc
    try:
        dev = torch.device(device)
        torch.zeros(1, dtype=torch.float64, device=dev)
    except (RuntimeError, TypeError, ValueError, AssertionError) as exc:
        raise ValueError(
            f"device must be None or a torch device this machine has; got {device!r} "
            f"({type(exc).__name__}: {exc}).") from exc


def _pipeline_reason(pipe: Pipeline) -> str:
    steps = pipe.steps
    if len(steps) != 2 or type(steps[0][1]) is not StandardScaler:
        return "only Pipeline([StandardScaler(), model]) is supported"
    if getattr(pipe, "transform_input", None) is not None:
        return "Pipeline(transform_input=...) is not supported"
    return ""


def _logistic_reason(est: LogisticRegression) -> str:
    params = est.get_params()
    penalty, l1_ratio = params.get("penalty", "l2"), params.get("l1_ratio")
    if penalty == "deprecated":  # scikit-learn >= 1.8: l1_ratio and C choose it
        if not (l1_ratio is None or l1_ratio == 0):
            return f"l1_ratio={l1_ratio!r} (an L1 penalty) is not supported"
    elif penalty != "l2":
        return f"penalty={penalty!r} is not supported"
    C = params["C"]
    if not (isinstance(C, Real) and 0 < float(C) < math.inf):
        return (f"C={C!r} is not supported (a finite C > 0 is: the L2 penalty keeps the "
                "optimum finite)")
    if params["solver"] == "liblinear":
        return "solver='liblinear' is not supported (one-vs-rest, penalised intercept)"
    if params.get("dual"):
        return "dual=True is not supported"
    if params.get("multi_class", "auto") not in ("auto", "deprecated"):
        return f"multi_class={params['multi_class']!r} is not supported"
    if params["warm_start"]:
        return "warm_start=True is not supported"
    if params["max_iter"] < 100 or params["tol"] > 1e-4:
        return (f"max_iter={params['max_iter']}, tol={params['tol']} is not supported: "
                "scikit-learn would stop before the optimum (max_iter >= 100 and "
                "tol <= 1e-4 are)")
    cw = params["class_weight"]
    if not (cw is None or cw == "balanced" or isinstance(cw, dict)):
        return f"class_weight={cw!r} is not supported"
    if getattr(est, "_skl_callbacks", None):
        return "callbacks are not supported"
    return ""


def _ridge_reason(est: Ridge) -> str:
    if est.positive:
        return "positive=True is not supported"
    alpha = est.alpha
    if np.ndim(alpha) != 0 or not (isinstance(alpha, Real) and 0 < float(alpha) < math.inf):
        return f"alpha={alpha!r} is not supported (a finite alpha > 0 is)"
    if est.solver in ("sparse_cg", "lsqr", "sag", "saga") and (
            est.tol > 1e-4 or est.max_iter is not None):
        return (f"solver={est.solver!r} with tol={est.tol}, max_iter={est.max_iter} is not "
                "supported: scikit-learn may stop before the optimum")
    return ""


# --------------------------------------------------------------------------- the plan

class BatchPlan:
    """Fits and scores one estimator on many coalitions at once.

    Made by :func:`plan_batched`, which has checked that the estimator is
    supported. :meth:`fit` solves every coalition's problem to a tight tolerance;
    :meth:`score` scores the fits vectorised (or through genuine estimators built
    by :meth:`build_estimator` for other scorers).

    Parameters
    ----------
    estimator : estimator object
        The supported estimator (a model or ``Pipeline([StandardScaler(), model])``).
    scoring : str, callable or None
        As for :func:`plan_batched`.
    scorer : callable
        ``check_scoring(estimator, scoring)``.
    kind : {"logistic", "ridge", "ols"}
    scaler : StandardScaler or None
    model : estimator object
        The final model.
    device : None, str or torch.device, default=None
        As for :func:`plan_batched`.
    """

    def __init__(self, estimator: Any, scoring: Any, scorer: Any, kind: str,
                 scaler: StandardScaler | None, model: Any, device: Any = None) -> None:
        self.device = device
        self.estimator = estimator
        self.scoring = scoring
        self.scorer = scorer
        self.kind = kind
        self.scaler = scaler
        self.model = model
        self.is_classifier = kind == "logistic"
        allowed = _CLASSIFIER_SCORINGS if self.is_classifier else _REGRESSOR_SCORINGS
        self.vectorised = isinstance(scoring, str) and scoring in allowed or scoring is None

    def __repr__(self) -> str:
        return f"BatchPlan({self.estimator!r}, scoring={self.scoring!r})"

    # ------------------------------------------------------------------ fit
    def fit(self, X: Any, y: Any, masks: Any, sample_weight: Any = None) -> BatchFit:
        """Fit every coalition of ``masks``.

        Parameters
        ----------
        X : array-like of shape (n, n_features)
            Training data (dense, finite).
        y : array-like of shape (n,)
            Targets; class labels for a classifier.
        masks : array-like of bool, shape (b, n)
            Row ``i`` is coalition ``i``: the rows of ``X`` where it is True.
        sample_weight : array-like of shape (n,), default=None
            Non-negative row weights, as ``fit(X[S], y[S], sample_weight=w[S])``;
            for a Pipeline they go to the final model only (as
            ``fit(..., **{f"{last_step}__sample_weight": w[S]})``).

        Returns
        -------
        fitted : BatchFit

        Raises
        ------
        ValueError
            For sparse or non-finite X, shapes that do not match, targets that are
            not class labels (classifiers) or not finite (regressors), and
            negative or non-finite sample weights.
        """
        X, y, masks, sw, names = self._check_fit_input(X, y, masks, sample_weight)
        return self._fit(X, y, masks, sw, names, warm=True)

    def _fit(self, X, y, masks, sw, names, warm):
        b, d = masks.shape[0], X.shape[1]
        sizes = masks.sum(axis=1)
        state = _FitState(b, d, self)
        state.out.feature_names_in = names
        state.out.n_samples[:] = sizes
        if self.is_classifier:
            classes, codes = np.unique(y, return_inverse=True)
            state.setup_classes(classes, codes, masks, sw, self.model.class_weight)
        else:
            codes = None
        state.out.degenerate |= sizes == 0
        state.out.failed |= ~state.out.degenerate & ~(masks.astype(np.float64) @ sw > 0)
        todo = np.flatnonzero(~state.out.degenerate & ~state.out.failed)
        groups = [todo]
        if self.is_classifier and state.K > 2:  # two classes present: a binary fit
            binary = state.out.present[todo].sum(axis=1) == 2
            groups = [todo[binary], todo[~binary]]
        n = X.shape[0]
        extra = int(self.is_classifier and self.model.fit_intercept)
        X_ext = np.zeros((n + 1, d + extra))  # a zero row for padding, the intercept
        X_ext[:n, :d] = X
        X_ext[:n, d:] = 1.0
        y_ext = np.append(codes if self.is_classifier else y, 0)
        sw_ext = np.append(sw, 0.0)
        theta0 = self._start(X, y, sw) if self.is_classifier and warm and todo.size else None
        for group in groups:
            order = group[np.argsort(sizes[group], kind="stable")]
            for rows, idx, valid in _blocks(masks, order, sizes, d + 1, n):
                Z = X_ext[idx]
                if self.scaler is not None:
                    state.scale(rows, Z[..., :d], valid)
                self._solve(state, rows, Z, idx, y_ext, sw_ext, theta0)
        return state.out

    def _start(self, X, y, sw):
        """The starting point of the Newton iterations: part of the fit on all rows.

        Computed once per training set (the last one is kept, keyed by a digest of
        ``X``, ``y`` and the weights): a valuation fits batch after batch of the same
        rows, and a coalition's result must not depend on which batch it is in.
        """
        digest = hashlib.blake2b(digest_size=16)
        for arr in (X, y, sw):
            digest.update(str((arr.shape, arr.dtype.str)).encode())
            if arr.dtype.kind == "O":  # labels as Python objects
                digest.update(repr(arr.tolist()).encode())
            else:
                digest.update(np.ascontiguousarray(arr).view(np.uint8).reshape(-1))
        key = digest.digest()
        cached = self.__dict__.get("_start_cache")
        if cached is not None and cached[0] == key:
            return cached[1]
        full = self._fit(X, y, np.ones((1, X.shape[0]), bool), sw, None, warm=False)
        theta = None
        if not (full.failed[0] or full.degenerate[0]):
            theta = full.coef[0]
            if self.model.fit_intercept:
                theta = np.concatenate([theta, full.intercept[0][:, None]], axis=1)
            theta = _WARM * theta
        self._start_cache = (key, theta)
        return theta

    def _check_fit_input(self, X, y, masks, sample_weight):
        if hasattr(X, "toarray") or hasattr(X, "tocsr"):
            raise ValueError("X must be dense for the batched fit; got a sparse matrix.")
        names = None
        if hasattr(X, "columns") and all(isinstance(c, str) for c in X.columns):
            names = np.asarray(X.columns, dtype=object)
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        masks = np.asarray(masks, dtype=bool)
        if X.ndim != 2 or not np.isfinite(X).all():
            raise ValueError(f"X must be a finite 2-D array; got shape {X.shape}.")
        n = X.shape[0]
        if y.shape != (n,):
            raise ValueError(f"y must have shape ({n},) to match X; got {y.shape}.")
        if masks.ndim != 2 or masks.shape[1] != n:
            raise ValueError(f"masks must have shape (b, {n}); got {masks.shape}.")
        if self.is_classifier and type_of_target(y) not in ("binary", "multiclass"):
            raise ValueError(f"y must hold class labels; got type {type_of_target(y)!r}.")
        if not self.is_classifier:
            y = y.astype(np.float64)
            if not np.isfinite(y).all():
                raise ValueError("y must be finite for a regressor; got NaN or infinity.")
        sw = np.ones(n) if sample_weight is None else np.asarray(sample_weight, np.float64)
        if sw.shape != (n,) or not np.isfinite(sw).all() or (sw < 0).any():
            raise ValueError(
                f"sample_weight must be finite, non-negative and of shape ({n},); got "
                f"shape {sw.shape} with minimum {sw.min() if sw.size else None}.")
        return X, y, masks, sw, names

    def _solve(self, state, rows, Z, idx, y, sw, theta0):
        s = sw[idx]
        out = state.out
        if self.kind != "logistic":
            if hasattr(self.model, "tol"):  # scikit-learn >= 1.7: lstsq(cond=tol)
                tol = np.full(rows.size, float(self.model.tol))
            else:  # before: cond = max(n_samples, n_features) * eps of the coalition
                tol = np.maximum((s > 0).sum(axis=1), Z.shape[2]) * np.finfo(np.float64).eps
            coef, intercept, singular, bad = _least_squares(
                Z, y[idx], s, self.model.fit_intercept,
                self.model.alpha if self.kind == "ridge" else None, tol)
            out.coef[rows, 0], out.intercept[rows, 0] = coef, intercept
            out.failed[rows] |= bad
            if singular is not None:
                out.singular[rows] = singular
                out.rank[rows] = ((singular >= tol[:, None] * singular[:, :1])
                                  & (singular > 0)).sum(axis=1)
            return
        c = y[idx]
        s = s * state.cw[rows[:, None], c]
        C, fi = float(self.model.C), self.model.fit_intercept
        present = out.present[rows]
        if state.K == 2 or present.sum(axis=1).max() == 2:
            pos = present.shape[1] - 1 - np.argmax(present[:, ::-1], axis=1)
            if theta0 is not None and state.K > 2:
                neg = np.argmax(present, axis=1)
                theta0 = theta0[pos] - theta0[neg]
            theta, n_iter, ok = self._binomial(Z, (c == pos[:, None]) * 1.0, s, C, fi,
                                               theta0)
            k = 0 if state.K == 2 else pos
            out.coef[rows, k] = theta[:, :Z.shape[2] - fi]
            out.intercept[rows, k] = theta[:, -1] if fi else 0.0
        else:
            theta, n_iter, ok = _newton_multinomial(Z, c, s, present, C, fi, theta0)
            out.coef[rows] = theta[:, :, :Z.shape[2] - fi]
            if fi:
                out.intercept[rows] = theta[:, :, -1]
        out.n_iter[rows] = n_iter
        out.failed[rows] |= ~ok

    def _binomial(self, Z, y, s, C, fit_intercept, theta0):
        """The binary logistic solves, in numpy or on the plan's torch device."""
        ops = backend(self.device)
        if ops is NUMPY:
            return _newton_binomial(Z, y, s, C, fit_intercept, theta0)
        if ops.device.type == "cpu":
            return self._binomial_alone(Z, y, s, C, fit_intercept, theta0, ops)
        Z, y, s = ops.asarray(Z), ops.asarray(y), ops.asarray(s)
        if theta0 is not None:
            theta0 = ops.asarray(np.asarray(theta0, dtype=np.float64))
        theta, n_iter, ok = _newton_binomial(Z, y, s, C, fit_intercept, theta0, ops)
        return ops.to_numpy(theta), ops.to_numpy(n_iter), ops.to_numpy(ok)

    @staticmethod
    def _binomial_alone(Z, y, s, C, fit_intercept, theta0, ops):
        """On a CPU torch device, each coalition solved alone on its own weighted rows:
        MKL's batched products and reductions gave a coalition other last bits depending
        on the coalitions solved with it (14 of 21 refits of a batch of 7 in batches of 1
        or 2), which would make values depend on ``n_jobs``."""
        c = Z.shape[0]
        theta, n_iter = np.zeros((c, Z.shape[2])), np.zeros(c, np.intp)
        ok = np.zeros(c, bool)
        start = None if theta0 is None else np.asarray(theta0, dtype=np.float64)
        each = start is not None and start.ndim == 2 and start.shape[0] == c  # else one for all
        for i in range(c):
            rows = np.flatnonzero(s[i] > 0)
            t0 = None if start is None else ops.asarray(start[i:i + 1] if each else start)
            th, it, good = _newton_binomial(
                ops.asarray(Z[i:i + 1, rows]), ops.asarray(y[i:i + 1, rows]),
                ops.asarray(s[i:i + 1, rows]), C, fit_intercept, t0, ops)
            theta[i], n_iter[i], ok[i] = (ops.to_numpy(x)[0] for x in (th, it, good))
        return theta, n_iter, ok

    # ------------------------------------------------------------------ score
    def score(self, fitted: BatchFit, X_val: Any, y_val: Any) -> np.ndarray:
        """The score of every fitted coalition on ``(X_val, y_val)``.

        Returns
        -------
        scores : ndarray of shape (b,)
            NaN for degenerate and failed coalitions, and for those whose scorer
            raised (scikit-learn's fit-and-score reproduces the error): the caller
            gives the first ``default_score`` and refits the others with
            scikit-learn.
        """
        b = fitted.coef.shape[0]
        scores = np.full(b, np.nan)
        ok = np.flatnonzero(~fitted.degenerate & ~fitted.failed)
        X_val_arr = None if hasattr(X_val, "tocsr") else np.asarray(X_val, dtype=np.float64)
        generic = ok
        if self.vectorised and X_val_arr is not None and np.shape(y_val)[0] >= 2:
            y_arr = np.asarray(y_val)
            try:
                vec = _vectorised_ok(self, fitted, ok, y_arr)
                for part in np.array_split(ok[vec], max(1, ok[vec].size * fitted.coef.shape[1]
                                                        * y_arr.shape[0] // _BLOCK + 1)):
                    if part.size:
                        scores[part] = _score_vectorised(self, fitted, part, X_val_arr, y_arr)
                generic = ok[~vec]
            except (TypeError, ValueError):  # e.g. labels of another type than y's
                scores[ok] = np.nan
        for i in generic:
            try:
                scores[i] = float(self.scorer(self.build_estimator(fitted, int(i)), X_val, y_val))
            except Exception:  # noqa: BLE001 - reported as NaN: the caller refits
                scores[i] = np.nan
        return scores

    # ------------------------------------------------------------------ estimator
    def build_estimator(self, fitted: BatchFit, i: int) -> Any:
        """A genuine fitted scikit-learn estimator for coalition ``i`` of ``fitted``
        (see :func:`~skdvl.utility._linear_state._build_estimator`)."""
        return _build_estimator(self, fitted, i)


# --------------------------------------------------------------------------- gathering

def _blocks(masks, order, sizes, width, pad):
    """Blocks of coalitions (sorted by size): rows, gathered indices, validity.

    A coalition of ``s`` rows is padded (index ``pad``, validity 0) to
    ``_padded(s)``, a width that depends on ``s`` alone, and a block holds
    coalitions of one padded width only (at most about ``_BLOCK`` floats of
    gathered data): so every coalition's arithmetic, and its result to the last
    bit, is the same whatever else is in the batch (any batch size, any
    ``n_jobs``).
    """
    start, sorted_sizes = 0, sizes[order]
    widths = _padded(sorted_sizes)
    while start < order.size:
        m = int(widths[start])
        same = int(np.searchsorted(widths, m, side="right"))
        count = min(same - start, max(1, _BLOCK // max(1, m * width)))
        rows = order[start:start + count]
        r, col = np.nonzero(masks[rows])
        pos = np.arange(r.size) - np.repeat(np.cumsum(sizes[rows]) - sizes[rows], sizes[rows])
        idx = np.full((rows.size, m), pad, np.intp)
        valid = np.zeros((rows.size, m))
        idx[r, pos], valid[r, pos] = col, 1.0
        yield rows, idx, valid
        start += count


def _padded(sizes):
    """The padded width of coalitions of these sizes: the next multiple of 8 (at least 8)."""
    return np.maximum(8, -(-np.asarray(sizes, dtype=np.intp) // 8) * 8)
