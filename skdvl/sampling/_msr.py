"""Maximum sample reuse (MSR): one coalition updates every player's Banzhaf value.

Wang & Jia (2023), "Data Banzhaf", AISTATS, Alg. 1; weighted Banzhaf values as
in Li & Yu (2023).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from skdvl._coalitions import banzhaf_weight, check_int
from skdvl._moments import Moments
from skdvl.result import ValuationResult
from skdvl.sampling._base import Evaluator, _CoalitionSampler

__all__ = ["MSRSampler"]


class MSRSampler(_CoalitionSampler):
    """Maximum sample reuse (Wang & Jia, 2023, "Data Banzhaf", AISTATS, Alg. 1).

    Each random coalition S is evaluated once and used for every player: the
    Banzhaf value of i is the mean utility of the samples with i minus the
    mean of those without. Valid for (weighted) Banzhaf values only: for the
    weighted Banzhaf value of weight ``w`` each player is in S with
    probability ``w`` (Li & Yu, 2023, "Robust data valuation with weighted
    Banzhaf values", NeurIPS), since given that i is in (or out of) S, the
    other players of S are then distributed as the semivalue weighs them.

    Parameters
    ----------
    batch_size : int, default=64
        Coalitions per block (the granularity of stopping checks).
    """

    n_moments = 2

    def __init__(self, batch_size: int = 64) -> None:
        check_int(batch_size, "batch_size", 1)
        self.batch_size = batch_size

    def weights(self, mass: np.ndarray, n: int) -> float:
        """The inclusion probability ``w`` of a (weighted) Banzhaf mass; refuse any other."""
        self._check_batch_size()
        w = banzhaf_weight(mass, n)
        if w is None:
            raise ValueError(
                "MSR sampling estimates (weighted) Banzhaf values only; this valuer's "
                "semivalue is another. Choose another sampler.")
        return w

    def run_block(
        self, ev: Evaluator, rng: np.random.Generator, weights: Any, block: int,
        start: int = 0, stop: int | None = None,
    ) -> tuple[Moments, ...]:
        """Moments of the utilities of samples ``[start, stop)``, with and without each player."""
        masks = (rng.random((self.samples_per_block, ev.n)) < weights)[start:stop]
        u = ev.evaluate(masks)
        return Moments.of_masked(masks, u), Moments.of_masked(~masks, u)

    def result(self, moments: tuple[Moments, ...]) -> ValuationResult:
        """Mean with minus mean without; NaN for a player lacking either side."""
        inside, outside = moments
        both = (inside.count > 0) & (outside.count > 0)
        values = np.where(both, inside.mean - outside.mean, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            var_est = inside.variance() / inside.count + outside.variance() / outside.count
        counts = self.counts(moments)
        variances = np.where(both, var_est * counts, 0.0)
        return ValuationResult(values, variances=variances, counts=counts)

    def counts(self, moments: tuple[Moments, ...]) -> np.ndarray:
        """Samples behind each value: with and without the player (0 if either is missing)."""
        inside, outside = moments
        return np.where((inside.count > 0) & (outside.count > 0),
                        inside.count + outside.count, 0)

