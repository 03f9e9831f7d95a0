"""The row features of amortized valuation: what the value model sees of a row.

Fitted on the training rows, applied to new ones the same way: a signal a new row
gets from a model not fitted on it, a training row gets out of fold (Covert et al.,
2024, arXiv:2401.15866, amortize from the inputs; the signals here are ours).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import StandardScaler

__all__ = ["RowFeatures"]


def _knn_agreement(Z_ref: np.ndarray, y_ref: np.ndarray, Z: np.ndarray, y: np.ndarray,
                   k: int, classification: bool, leave_self_out: bool) -> np.ndarray:
    """How much the ``k`` nearest reference rows agree with each row's label.

    Classification: the share of the neighbours with the row's label (the quantity
    behind KNN-Shapley, Jia et al., 2019, "Efficient task-specific data valuation for
    nearest neighbor algorithms", VLDB). Regression: minus the mean absolute gap
    between the row's target and its neighbours'. With ``leave_self_out`` the rows are
    the reference rows themselves, and each row's own entry is skipped.
    """
    k = min(k, Z_ref.shape[0] - int(leave_self_out))
    if k < 1:
        return np.zeros(Z.shape[0])
    nn = NearestNeighbors(n_neighbors=k + int(leave_self_out)).fit(Z_ref)
    idx = nn.kneighbors(Z, return_distance=False)
    if leave_self_out:  # drop each row's own position (ties may put it second)
        own = np.arange(Z.shape[0])[:, None]
        keep = idx != own
        keep[keep.sum(axis=1) > k, -1] = False
        idx = idx[keep].reshape(Z.shape[0], k)
    neighbours = y_ref[idx]
    if classification:
        return (neighbours == y[:, None]).mean(axis=1)
    return -np.abs(neighbours - y[:, None]).mean(axis=1)


def _model_signals(proba: np.ndarray | None, pred: np.ndarray, codes: np.ndarray,
                   classification: bool) -> np.ndarray:
    """Loss and margin of each row under a model that was not fitted on it.

    Classification with probabilities: the log loss ``-log p(y)`` and the margin
    ``p(y) - max_{c != y} p(c)``; without probabilities, 0/1 error twice.
    Regression: the squared and the signed residual. ``codes`` are the rows'
    labels as class positions (classification) or their targets (regression).
    """
    if not classification:
        residual = codes - pred
        return np.column_stack([residual**2, residual])
    if proba is None:
        wrong = (pred != codes).astype(np.float64)
        return np.column_stack([wrong, -wrong])
    rows = np.arange(codes.shape[0])
    p_true = proba[rows, codes]
    other = proba.copy()
    other[rows, codes] = -np.inf
    margin = p_true - (other.max(axis=1) if proba.shape[1] > 1 else 0.0)
    return np.column_stack([-np.log(np.clip(p_true, 1e-12, None)), margin])


class RowFeatures:
    """The features of a row for the value model, fitted on the training rows.

    Every column standardized on the training rows: the features, the label
    (one-hot, or the target), the loss
    and margin of ``model`` on the row (out-of-fold for training rows, from the model
    fitted on every training row for new ones), the label agreement of the row's
    nearest training rows (leave-self-out for training rows) and, with validation
    data, of its nearest validation rows. ``raw=False`` leaves the features out.
    """

    def __init__(self, model: Any, classification: bool, n_neighbors: int,
                 raw: bool = True) -> None:
        self.model, self.classification, self.n_neighbors = model, classification, n_neighbors
        self.raw = raw

    def fit_transform(self, X: Any, y: np.ndarray, X_val: Any, y_val: Any,
                      folds: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        self.scaler_ = StandardScaler().fit(_dense(X))
        Z = self.scaler_.transform(_dense(X))
        if self.classification:
            self.classes_ = np.unique(y)
        else:
            self.y_mean_, self.y_scale_ = float(np.mean(y)), float(np.std(y)) or 1.0
        codes = self._codes(y)
        proba, pred = self._oof(X, y, folds)
        self.model_ = clone(self.model).fit(X, y)
        self.Z_, self.codes_ = Z, codes
        self.Z_val_ = None if X_val is None else self.scaler_.transform(_dense(X_val))
        self.codes_val_ = None if y_val is None else self._codes(np.asarray(y_val), "y_val")
        signals = _model_signals(proba, pred, codes, self.classification)
        F = self._stack(Z, codes, signals, leave_self_out=True)
        self.columns_ = StandardScaler().fit(F)  # every column on one scale (penalties)
        return self.columns_.transform(F)

    def transform(self, X: Any, y: np.ndarray) -> np.ndarray:
        Z = self.scaler_.transform(_dense(X))
        codes = self._codes(y)
        proba = pred = None
        if self.classification and hasattr(self.model_, "predict_proba"):
            proba = self.model_.predict_proba(X)
        else:
            pred = self._coded(self.model_.predict(X))
        signals = _model_signals(proba, pred, codes, self.classification)  # type: ignore[arg-type]
        return self.columns_.transform(self._stack(Z, codes, signals, leave_self_out=False))

    def _codes(self, y: np.ndarray, name: str = "y") -> np.ndarray:
        if not self.classification:
            return (np.asarray(y, dtype=np.float64) - self.y_mean_) / self.y_scale_
        codes = np.searchsorted(self.classes_, y)
        codes = np.clip(codes, 0, self.classes_.shape[0] - 1)
        unknown = self.classes_[codes] != y
        if unknown.any():
            raise ValueError(
                f"AmortizedValuer: {name} holds labels the valuer was not fitted on (e.g. "
                f"{np.asarray(y)[unknown][:1].tolist()[0]!r}; fitted classes "
                f"{self.classes_.tolist()}); a row of an unseen class cannot be valued by "
                "amortization.")
        return codes

    def _coded(self, pred: np.ndarray) -> np.ndarray:
        return self._codes(pred) if not self.classification else np.searchsorted(
            self.classes_, pred)

    def _oof(self, X: Any, y: np.ndarray,
             folds: list[tuple[np.ndarray, np.ndarray]]) -> tuple[Any, Any]:
        """Out-of-fold probabilities (or predictions) of ``model`` for the training rows."""
        n = y.shape[0]
        with_proba = self.classification and hasattr(self.model, "predict_proba")
        proba = np.full((n, len(getattr(self, "classes_", [0]))), 1.0) if with_proba else None
        pred = np.zeros(n)
        for train, test in folds:
            present = np.unique(y[train])
            if self.classification and present.shape[0] < 2:  # a constant model, as the
                code = int(np.searchsorted(self.classes_, present[0]))  # utility's
                if proba is not None:
                    proba[test] = np.eye(self.classes_.shape[0])[code]
                pred[test] = code
                continue
            model = clone(self.model).fit(_rows(X, train), y[train])
            if proba is not None:
                cols = np.searchsorted(self.classes_, model.classes_)
                proba[test] = 0.0
                proba[np.ix_(test, cols)] = model.predict_proba(_rows(X, test))
            else:
                pred[test] = self._coded(model.predict(_rows(X, test)))
        return proba, pred

    def _stack(self, Z: np.ndarray, codes: np.ndarray, signals: np.ndarray,
               leave_self_out: bool) -> np.ndarray:
        label = (np.eye(self.classes_.shape[0])[codes] if self.classification
                 else codes[:, None])
        k, cls = self.n_neighbors, self.classification
        parts = [*([Z] if self.raw else []), label, signals,
                 _knn_agreement(self.Z_, self.codes_, Z, codes, k, cls, leave_self_out)[:, None]]
        if self.Z_val_ is not None and self.codes_val_ is not None:
            parts.append(_knn_agreement(self.Z_val_, self.codes_val_, Z, codes, k, cls,
                                        False)[:, None])
        return np.column_stack(parts)


def _dense(X: Any) -> np.ndarray:
    return X.toarray() if hasattr(X, "toarray") else np.asarray(X, dtype=np.float64)


def _rows(X: Any, rows: np.ndarray) -> Any:
    return X[rows]
