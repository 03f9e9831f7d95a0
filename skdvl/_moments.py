"""Running per-player moments: the one pooled mean / variance kernel.

Every Monte Carlo estimate in skdvl is a per-player mean of samples. Blocks of
samples are summarised as (count, mean, sum of squared deviations) and pooled
with the update of Chan, Golub & LeVeque (1979), "Updating formulae and a
pairwise algorithm for computing sample variances", so that merging is exact
whatever the order in which blocks arrive and however they were split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Moments", "merge_moments"]


def merge_moments(
    mean_a: np.ndarray, m2_a: np.ndarray, n_a: np.ndarray,
    mean_b: np.ndarray, m2_b: np.ndarray, n_b: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pool (mean, sum of squared deviations, count) of two sample sets, entrywise."""
    n = n_a + n_b
    safe = np.maximum(n, 1)
    delta = mean_b - mean_a
    mean = mean_a + delta * (n_b / safe)
    m2 = m2_a + m2_b + delta**2 * (n_a * n_b / safe)
    return mean, m2, n


@dataclass
class Moments:
    """Running count, mean and sum of squared deviations per player."""

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def zeros(cls, n: int) -> Moments:
        return cls(np.zeros(n, dtype=np.int64), np.zeros(n), np.zeros(n))

    @classmethod
    def of_samples(cls, players: np.ndarray, values: np.ndarray, n: int) -> Moments:
        """Moments of ``values[k]`` credited to player ``players[k]``."""
        count = np.bincount(players, minlength=n)
        total = np.bincount(players, weights=values, minlength=n)
        mean = np.divide(total, count, out=np.zeros(n), where=count > 0)
        m2 = np.bincount(players, weights=(values - mean[players]) ** 2, minlength=n)
        return cls(count, mean, m2)

    @classmethod
    def of_masked(cls, masks: np.ndarray, u: np.ndarray) -> Moments:
        """Moments of ``u`` over the samples where each player's mask is True."""
        center = u.mean() if u.size else 0.0
        v = u - center
        w = masks.astype(np.float64)
        count = masks.sum(axis=0).astype(np.int64)
        s1, s2 = w.T @ v, w.T @ (v * v)
        mean = np.divide(s1, count, out=np.zeros_like(s1), where=count > 0)
        m2 = np.maximum(s2 - count * mean**2, 0.0)
        return cls(count, mean + center * (count > 0), m2)

    def merge(self, other: Moments) -> None:
        self.mean, self.m2, self.count = merge_moments(
            self.mean, self.m2, self.count, other.mean, other.m2, other.count)

    def variance(self) -> np.ndarray:
        """Unbiased sample variance (ddof 1); 0 where there is no sample, NaN where one.

        ``m2 / (count - 1)``, so that ``sqrt(variance / count)`` is the usual
        standard error of the mean (the population variance, ddof 0, made it too
        small by ``sqrt((c - 1) / c)``: 11% at 5 samples). One sample says nothing
        of the spread: its standard error is unknown (NaN), not 0 (which would
        report a one-sample estimate as exact).
        """
        var = np.divide(self.m2, self.count - 1, out=np.zeros_like(self.m2),
                        where=self.count > 1)
        var[self.count == 1] = np.nan
        return var

    def values(self) -> np.ndarray:
        """The means; NaN where there is no sample (nothing was computed)."""
        return np.where(self.count > 0, self.mean, np.nan)
