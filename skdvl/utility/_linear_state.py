"""The state of the batched linear fits: what a fit fills in, and how a fit is read.

:class:`BatchFit` holds the coefficients of a batch of coalitions;
:class:`_FitState` fills it in (class weights, each coalition's
StandardScaler) while :mod:`skdvl.utility._linear_batch` solves. Reading a fit:
decision values, the scores computed vectorised, and genuine scikit-learn
estimators carrying a coalition's coefficients (for any other scorer).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.base import clone
from sklearn.utils.class_weight import compute_class_weight

__all__ = ["BatchFit"]

#: whether "balanced" class weights count the classes weighted by sample_weight, as
#: scikit-learn's LogisticRegression does since compute_class_weight takes them (1.7);
#: before, it counted rows
_WEIGHTED_BALANCE = "sample_weight" in inspect.signature(compute_class_weight).parameters


# --------------------------------------------------------------------------- fitted

@dataclass
class BatchFit:
    """The fitted state of a batch of ``b`` coalitions.

    Attributes
    ----------
    coef : ndarray of shape (b, k, n_features)
        Coefficients, in the space the final model sees (standardised when
        pipelined). Regressors and binary classifiers have ``k = 1`` (the
        scikit-learn layout); a problem with ``K >= 3`` global classes has
        ``k = K``, one row per global class in softmax form: rows of absent
        classes are 0, and a coalition with two classes present (fitted as a
        binary problem, as scikit-learn does) holds its coefficients in the row of
        the larger class and 0 in the other.
    intercept : ndarray of shape (b, k)
    classes : ndarray of shape (K,) or None
        The classes of ``y`` (classifiers).
    present : ndarray of shape (b, K) or None
        Which classes each coalition holds (its fitted ``classes_``).
    degenerate : ndarray of shape (b,)
        Coalitions that get ``default_score`` and were not fitted: empty, or
        fewer than two classes for a classifier.
    failed : ndarray of shape (b,)
        Coalitions the batched fit could not reproduce (no convergence within the
        iteration limit, an ill-conditioned system, all weights zero, a
        ``class_weight`` that scikit-learn would refuse): fit them with
        scikit-learn instead.
    n_iter : ndarray of shape (b,)
        Newton iterations of each coalition (0 for closed-form fits).
    scaler_mean, scaler_var, scaler_scale : ndarray of shape (b, n_features) or None
        The StandardScaler's ``mean_``, ``var_`` and ``scale_`` of each coalition
        (``var`` and ``scale`` None when ``with_std=False``).
    n_samples : ndarray of shape (b,)
        Rows in each coalition.
    singular : ndarray of shape (b, n_features) or None
        LinearRegression's ``singular_`` (descending), ``rank`` its ``rank_``.
    """

    coef: np.ndarray
    intercept: np.ndarray
    degenerate: np.ndarray
    failed: np.ndarray
    n_iter: np.ndarray
    n_samples: np.ndarray
    n_features_in: int
    feature_names_in: np.ndarray | None = None
    classes: np.ndarray | None = None
    present: np.ndarray | None = None
    scaler_mean: np.ndarray | None = None
    scaler_var: np.ndarray | None = None
    scaler_scale: np.ndarray | None = None
    singular: np.ndarray | None = None
    rank: np.ndarray | None = None


# --------------------------------------------------------------------------- state

class _FitState:
    """The arrays a fit fills in, and the per-coalition class weights."""

    def __init__(self, b: int, d: int, plan: Any) -> None:
        self.plan, self.K = plan, 1
        z = np.zeros
        self.out = BatchFit(
            coef=z((b, 1, d)), intercept=z((b, 1)), degenerate=z(b, bool),
            failed=z(b, bool), n_iter=z(b, np.intp), n_samples=z(b, np.intp),
            n_features_in=d)
        if plan.scaler is not None:
            self.out.scaler_mean = z((b, d))
            if plan.scaler.with_std:
                self.out.scaler_var, self.out.scaler_scale = z((b, d)), np.ones((b, d))
        if plan.kind == "ols":
            self.out.singular, self.out.rank = z((b, d)), z(b, np.intp)

    def setup_classes(self, classes, codes, masks, sw, class_weight):
        K = self.K = classes.size
        onehot = codes[:, None] == np.arange(K)
        m = masks.astype(np.float64)
        present = (m @ onehot) > 0
        out = self.out
        out.classes, out.present = classes, present
        if K > 2:
            out.coef = np.zeros((masks.shape[0], K, out.n_features_in))
            out.intercept = np.zeros((masks.shape[0], K))
        out.degenerate |= present.sum(axis=1) < 2
        self.cw = np.ones((masks.shape[0], K))
        if class_weight == "balanced":
            # class counts, weighted by sample_weight where scikit-learn weighs them
            per_class = m @ (onehot * (sw[:, None] if _WEIGHTED_BALANCE else 1.0))
            with np.errstate(divide="ignore", invalid="ignore"):
                self.cw = per_class.sum(axis=1, keepdims=True) / (
                    present.sum(axis=1, keepdims=True) * per_class)
            out.failed |= ~np.isfinite(np.where(present, self.cw, 1.0)).all(axis=1)
            self.cw = np.where(present, np.nan_to_num(self.cw, posinf=0.0), 1.0)
        elif isinstance(class_weight, dict) and class_weight:
            weights, in_dict = _dict_weights(classes, class_weight)
            self.cw = np.broadcast_to(weights, present.shape)
            unweighted = (present & ~in_dict).any(axis=1)
            n_weighted = (present & in_dict).sum(axis=1)
            out.failed |= unweighted & (n_weighted != len(class_weight))  # sklearn raises

    def scale(self, rows, Z, valid):
        """Fit a StandardScaler on each coalition (unweighted); standardise Z in place
        (:func:`_standardise`)."""
        scaler, out = self.plan.scaler, self.out
        mean, var, scale = _standardise(Z, valid, scaler.with_mean, scaler.with_std)
        out.scaler_mean[rows] = mean
        if scaler.with_std:
            out.scaler_var[rows], out.scaler_scale[rows] = var, scale


def _standardise(Z, valid, with_mean, with_std):
    """A StandardScaler fitted on each coalition's rows ``Z`` (c, k, d), in place.

    Two-pass variance with scikit-learn's correction term and its test for
    near-constant features (their scale is 1). Padding rows of Z are 0 (``valid``
    False) and stay 0. Returns the mean, and the variance and scale (None without
    ``with_std``).
    """
    m = valid.sum(axis=1)[:, None]
    mean = Z.sum(axis=1) / m
    var = scale = None
    if with_std:
        diff = Z - mean[:, None]
        diff *= valid[:, :, None]
        var = ((diff ** 2).sum(axis=1) - diff.sum(axis=1) ** 2 / m) / m
        eps = np.finfo(np.float64).eps
        constant = var <= m * eps * var + (m * mean * eps) ** 2
        scale = np.where(constant, 1.0, np.sqrt(var))
        if with_mean:
            np.divide(diff, scale[:, None], out=Z)
        else:
            Z /= scale[:, None]
    elif with_mean:
        Z -= mean[:, None]
        Z *= valid[:, :, None]
    return mean, var, scale


def _dict_weights(classes, class_weight):
    """Per-class weights of a dict, with sklearn's int/str key lookup."""
    weights, in_dict = np.ones(classes.size), np.zeros(classes.size, bool)
    for j, c in enumerate(classes):
        try:
            key = int(c)
        except ValueError:
            key = str(c)
        if key in class_weight:
            weights[j], in_dict[j] = class_weight[key], True
    return weights, in_dict


# --------------------------------------------------------------------------- scoring

def _score_vectorised(plan, f, rows, X_val, y_val):
    """Scores (r,) of the fits ``rows`` of ``f``: the plan's scorer, vectorised."""
    raw = _decision(f, rows, X_val, plan.scaler)  # (r, k, n_val)
    if not plan.is_classifier:
        return _regression_score(plan.scoring, raw[:, 0], y_val.astype(np.float64))
    classes = f.classes
    pos = np.clip(np.searchsorted(classes, y_val), 0, classes.size - 1)
    y_code = np.where(classes[pos] == y_val, pos, -1)
    if raw.shape[1] == 1:
        z = raw[:, 0]
        if plan.scoring == "neg_log_loss":
            p1 = expit(z)
            p = np.where(y_code == 1, p1, 1 - p1)
            return _neg_log_loss(p)
        pred = (z > 0).astype(np.intp)
    else:
        raw = np.where(f.present[rows][:, :, None], raw, -np.inf)
        if plan.scoring == "neg_log_loss":
            return _neg_log_loss(_proba_of(raw, y_code, f, rows))
        pred = np.argmax(raw, axis=1)
    if plan.scoring == "balanced_accuracy":
        labels = np.unique(y_code)
        hit = (pred == y_code)[:, :, None] & (y_code[:, None] == labels)[None]
        return (hit.sum(axis=1) / (y_code[:, None] == labels).sum(axis=0)).mean(axis=1)
    return (pred == y_code).mean(axis=1)


def _vectorised_ok(plan, f, rows, y_val):
    """Which coalitions the vectorised scorer reproduces exactly."""
    if plan.is_classifier and (f.classes.dtype.kind in "OSU") != (y_val.dtype.kind in "OSU"):
        return np.zeros(rows.size, bool)  # string against numeric labels: as sklearn does
    if plan.scoring != "neg_log_loss":
        return np.ones(rows.size, bool)
    # log_loss takes the classes from y_val: exact when they are the fit's classes
    seen = np.isin(f.classes, y_val)
    if not np.isin(y_val, f.classes).all():
        return np.zeros(rows.size, bool)
    return (f.present[rows] == seen).all(axis=1)


def _decision(f, rows, X_val, scaler):
    """Decision values (r, k, n_val), with the scaler folded into the coefficients."""
    coef, intercept = f.coef[rows], f.intercept[rows]
    if scaler is not None:
        if scaler.with_std:
            coef = coef / f.scaler_scale[rows][:, None, :]
        if scaler.with_mean:
            intercept = intercept - (coef * f.scaler_mean[rows][:, None, :]).sum(axis=2)
    return coef @ X_val.T + intercept[..., None]


def _proba_of(raw, y_code, f, rows):
    """Probability each fit gives the true class (multiclass layout, masked raw)."""
    present = f.present[rows]
    binary = present.sum(axis=1) == 2
    mx = raw.max(axis=1, keepdims=True)
    e = np.exp(raw - mx)
    proba = e / e.sum(axis=1, keepdims=True)
    p_true = np.take_along_axis(proba, y_code[None, None, :].repeat(len(rows), 0), 1)[:, 0]
    if binary.any():  # scikit-learn's binary probabilities: expit, and 1 - expit
        pos = present.shape[1] - 1 - np.argmax(present[:, ::-1], axis=1)
        z = np.take_along_axis(raw, pos[:, None, None], 1)[:, 0]
        p1 = expit(z)
        p_true[binary] = np.where(y_code == pos[:, None], p1, 1 - p1)[binary]
    return p_true


def _neg_log_loss(p_true):
    eps = np.finfo(np.float64).eps
    return np.log(np.clip(p_true, eps, 1 - eps)).mean(axis=1)


def _regression_score(scoring, pred, y):
    res = y - pred
    if scoring in (None, "r2"):
        num = (res ** 2).sum(axis=1)
        den = ((y - y.mean()) ** 2).sum()
        if den == 0:
            return np.where(num == 0, 1.0, 0.0)
        return 1.0 - num / den
    if scoring == "neg_mean_squared_error":
        return -(res ** 2).mean(axis=1)
    return -np.abs(res).mean(axis=1)


# --------------------------------------------------------------------------- estimators

def _build_estimator(plan: Any, fitted: BatchFit, i: int) -> Any:
    """A genuine fitted scikit-learn estimator for coalition ``i`` of ``fitted``.

    Its ``coef_``, ``intercept_``, ``classes_``, ``n_features_in_`` (and the
    scaler's ``mean_``, ``var_``, ``scale_``) are those of the batched fit, so
    any scorer applied to it sees the model scikit-learn would have fitted.

    Raises
    ------
    ValueError
        When coalition ``i`` is degenerate or failed (it has no fit).
    """
    if fitted.degenerate[i] or fitted.failed[i]:
        raise ValueError(f"Coalition {i} is degenerate or failed: it has no fitted model.")
    est, d = clone(plan.estimator), fitted.n_features_in
    model = est.steps[-1][1] if plan.scaler is not None else est
    if plan.scaler is not None:
        _set_scaler(est.steps[0][1], fitted, i)
    _set_common(model, fitted, plan.scaler is not None)
    if plan.kind == "logistic":
        _set_logistic(model, fitted, i)
    else:
        model.coef_ = fitted.coef[i, 0].copy()
        model.intercept_ = float(fitted.intercept[i, 0]) if model.fit_intercept else 0.0
        if fitted.rank is not None and fitted.singular is not None:  # LinearRegression
            model.rank_ = int(fitted.rank[i])
            model.singular_ = fitted.singular[i, :min(fitted.n_samples[i], d)].copy()
        else:
            model.n_iter_ = None
            model.solver_ = "cholesky" if model.solver == "auto" else model.solver
    return est


def _set_common(model, f, pipelined):
    model.n_features_in_ = f.n_features_in
    if f.feature_names_in is not None and not pipelined:
        model.feature_names_in_ = f.feature_names_in


def _set_scaler(scaler, f, i):
    scaler.n_features_in_ = f.n_features_in
    if f.feature_names_in is not None:
        scaler.feature_names_in_ = f.feature_names_in
    scaler.n_samples_seen_ = np.int64(f.n_samples[i])
    scaler.mean_ = f.scaler_mean[i].copy()
    scaler.var_ = None if f.scaler_var is None else f.scaler_var[i].copy()
    scaler.scale_ = None if f.scaler_scale is None else f.scaler_scale[i].copy()


def _set_logistic(model: Any, f: Any, i: int) -> None:
    present = f.present[i]
    model.n_iter_ = np.array([f.n_iter[i]], dtype=np.int32)
    model.classes_ = f.classes[present]
    if f.coef.shape[1] == 1:
        model.coef_, model.intercept_ = f.coef[i].copy(), f.intercept[i].copy()
    elif present.sum() == 2:
        pos = np.flatnonzero(present)[-1]
        model.coef_ = f.coef[i, pos][None].copy()
        model.intercept_ = f.intercept[i, pos][None].copy()
    else:
        model.coef_, model.intercept_ = f.coef[i][present], f.intercept[i][present]
