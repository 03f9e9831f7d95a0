"""The container of data values: :class:`ValuationResult`."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from skdvl._moments import merge_moments as _merge_moments

__all__ = ["ValuationResult"]


class ValuationResult:
    """Values of a set of data points, with their uncertainty.

    Each entry holds a running mean (``values``), the unbiased sample variance
    (ddof 1) of the samples that made it (``variances``) and the number of those
    samples (``counts``). The standard error of a value is
    ``sqrt(variances / counts)``, the usual standard error of a mean. Exact methods
    store zero variance; a value from a single sample has NaN variance (its spread
    is unknown). Estimators with their own standard-error formula (stratified,
    regression, bootstrap) store ``stderr**2 * counts``, so that the relation holds.

    Parameters
    ----------
    values : array-like of shape (n,)
        The values.
    variances : array-like of shape (n,), default=None
        Unbiased sample variance (ddof 1) of the samples behind each value;
        zeros if None.
    counts : array-like of shape (n,), default=None
        Number of samples behind each value; ones if None.
    indices : array-like of shape (n,), default=None
        Positions of the points in the data they were valued from;
        ``arange(n)`` if None. Merging with ``+`` matches entries by index.
    names : array-like of shape (n,), default=None
        Labels of the points (e.g. a DataFrame's index); ``indices`` if None.
    algorithm : str, default=""
        What produced the values, for display.

    Examples
    --------
    >>> from skdvl import ValuationResult
    >>> a = ValuationResult([1.0, 2.0], variances=[1.0, 0.0], counts=[2, 2])
    >>> b = ValuationResult([3.0, 2.0], variances=[1.0, 0.0], counts=[2, 2])
    >>> (a + b).values
    array([2., 2.])
    >>> (a + b).variances
    array([2., 0.])
    >>> a.sort(reverse=True).indices
    array([1, 0])
    """

    def __init__(
        self,
        values: Any,
        *,
        variances: Any = None,
        counts: Any = None,
        indices: Any = None,
        names: Any = None,
        algorithm: str = "",
    ) -> None:
        self.values = np.asarray(values, dtype=np.float64).reshape(-1).copy()
        n = self.values.shape[0]
        self.variances = _column(variances, n, 0.0, np.float64, "variances")
        self.counts = _column(counts, n, 1, np.int64, "counts")
        self.indices = _column(indices, n, None, np.int64, "indices")
        if names is None:
            self.names = self.indices.copy()
        else:
            self.names = np.asarray(names).reshape(-1).copy()
            if self.names.shape[0] != n:
                raise ValueError(
                    f"names must have one entry per value ({n}). "
                    f"Got {self.names.shape[0]} instead."
                )
        self.algorithm = str(algorithm)

    @classmethod
    def zeros(cls, n: int, *, algorithm: str = "", names: Any = None) -> ValuationResult:
        """An empty result (zero values, zero counts) for ``n`` points."""
        return cls(
            np.zeros(n), variances=np.zeros(n), counts=np.zeros(n, dtype=np.int64),
            names=names, algorithm=algorithm,
        )

    @property
    def stderr(self) -> np.ndarray:
        """Standard error of each value, ``sqrt(variances / counts)``.

        With ``variances`` the unbiased sample variance (ddof 1), this is the usual
        standard error of a mean. inf where there is no sample; NaN where it is
        unknown (a Monte Carlo value from a single sample); 0 for exact values.
        """
        with np.errstate(divide="ignore", invalid="ignore"):
            se = np.sqrt(self.variances / self.counts)
        se[self.counts == 0] = np.inf
        return se

    def __len__(self) -> int:
        return self.values.shape[0]

    def __repr__(self) -> str:
        return (
            f"ValuationResult(algorithm={self.algorithm!r}, n={len(self)}, "
            f"mean_count={self.counts.mean() if len(self) else 0:.1f})"
        )

    def __getitem__(self, key: Any) -> ValuationResult:
        """Positional selection: an int, a slice, an index array or a boolean mask."""
        if isinstance(key, (int, np.integer)):
            key = [key]
        return ValuationResult(
            self.values[key], variances=self.variances[key], counts=self.counts[key],
            indices=self.indices[key], names=self.names[key], algorithm=self.algorithm,
        )

    def sort(self, *, reverse: bool = False, key: str = "value") -> ValuationResult:
        """A copy sorted by ``key`` ("value", "index", "name", "stderr" or "count").

        The sort is stable, so ties keep their positional order.
        """
        columns = {
            "value": self.values, "index": self.indices, "name": self.names,
            "stderr": self.stderr, "count": self.counts,
        }
        if key not in columns:
            raise ValueError(
                f"key must be one of {sorted(columns)}. Got {key!r} instead."
            )
        order = np.argsort(columns[key], kind="stable")
        if reverse:
            order = order[::-1]
        return self[order]

    def __add__(self, other: ValuationResult) -> ValuationResult:
        """Merge two results: count-weighted means and pooled variances.

        Entries are matched by ``indices``; an index present in only one
        operand (or with no sample in the other) is kept as it is. Each side's
        sum of squared deviations is ``variances * (counts - 1)`` (0 for one
        sample, whose variance is NaN), the sides are pooled as in Chan, Golub &
        LeVeque (1979), "Updating formulae and a pairwise algorithm for computing
        sample variances", and the merged variance is ``m2 / (counts - 1)``, the
        unbiased sample variance of the pooled samples.
        """
        if not isinstance(other, ValuationResult):
            return NotImplemented
        all_idx = np.union1d(self.indices, other.indices)
        n = all_idx.shape[0]
        mean = np.zeros(n)
        m2 = np.zeros(n)
        cnt = np.zeros(n, dtype=np.int64)
        names = np.empty(n, dtype=np.result_type(self.names.dtype, other.names.dtype))
        unvalued = np.zeros(n, dtype=bool)  # NaN, no sample: stays NaN if still none
        for part in (other, self):
            pos = np.searchsorted(all_idx, part.indices)
            names[pos] = part.names
            sampled = part.counts > 0  # a side without sample adds nothing, NaN or not
            unvalued[pos] |= ~sampled & np.isnan(part.values)
            mean[pos], m2[pos], cnt[pos] = _merge_moments(
                mean[pos], m2[pos], cnt[pos], np.where(sampled, part.values, 0.0),
                _sum_sq_dev(part.variances, part.counts), part.counts,
            )
        mean[unvalued & (cnt == 0)] = np.nan
        with np.errstate(divide="ignore", invalid="ignore"):
            var = np.where(cnt > 1, m2 / np.maximum(cnt - 1, 1), 0.0)
        var[cnt == 1] = np.nan
        for part in (self, other):  # a side alone (the other has no sample) is kept
            pos = np.searchsorted(all_idx, part.indices)
            alone = (part.counts > 0) & (cnt[pos] == part.counts)
            var[pos[alone]] = part.variances[alone]
        algorithm = self.algorithm if self.algorithm == other.algorithm else (
            f"{self.algorithm}+{other.algorithm}"
        )
        return ValuationResult(
            mean, variances=var, counts=cnt, indices=all_idx, names=names,
            algorithm=algorithm,
        )

    def to_dataframe(self, column: str | None = None) -> pd.DataFrame:
        """A DataFrame indexed by ``names`` with value, stderr and count columns.

        Parameters
        ----------
        column : str, default=None
            Name of the value column; ``algorithm`` (or "value") if None.
        """
        col = column or self.algorithm or "value"
        return pd.DataFrame(
            {col: self.values, f"{col}_stderr": self.stderr, f"{col}_count": self.counts},
            index=pd.Index(self.names),
        )

    def save(self, path: str | os.PathLike) -> None:
        """Write the result to a ``.npz`` file (no pickle)."""
        names = self.names
        if names.dtype == object:
            names = names.astype(str)
        np.savez(
            path, values=self.values, variances=self.variances, counts=self.counts,
            indices=self.indices, names=names, algorithm=np.array(self.algorithm),
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> ValuationResult:
        """Read a result written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as f:
            return cls(
                f["values"], variances=f["variances"], counts=f["counts"],
                indices=f["indices"], names=f["names"], algorithm=str(f["algorithm"]),
            )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ValuationResult):
            return NotImplemented
        return (
            len(self) == len(other)
            and all(
                np.array_equal(getattr(self, a), getattr(other, a))
                for a in ("values", "variances", "counts", "indices", "names")
            )
        )

    __hash__ = None  # type: ignore[assignment]


def _sum_sq_dev(variances: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``variances * (counts - 1)``; 0 where there is at most one sample."""
    with np.errstate(invalid="ignore"):
        return np.where(counts > 1, variances * np.maximum(counts - 1, 0), 0.0)


def _column(x: Any, n: int, fill: Any, dtype: Any, name: str) -> np.ndarray:
    if x is None:
        return np.arange(n, dtype=dtype) if fill is None else np.full(n, fill, dtype=dtype)
    arr = np.asarray(x, dtype=dtype).reshape(-1).copy()
    if arr.shape[0] != n:
        raise ValueError(
            f"{name} must have one entry per value ({n}). Got {arr.shape[0]} instead."
        )
    return arr
