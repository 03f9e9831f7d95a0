"""Toggle samplers: a coalition of all players and its ``n`` one-player toggles.

Uniform (Banzhaf), antithetic, Owen (Okhrati & Lipani, 2021) and stratified by
size (Maleki et al., 2013; Wu et al., 2023): each draws coalitions ``S`` and
evaluates ``S`` with the ``n`` coalitions that differ from it by one player,
one marginal per player for ``n + 1`` evaluations.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import binom

from skdvl._coalitions import check_int
from skdvl._moments import Moments
from skdvl.result import ValuationResult
from skdvl.sampling._base import _MarginalSampler

__all__ = ["UniformSampler", "AntitheticSampler", "OwenSampler", "StratifiedSampler"]


class _ToggleSampler(_MarginalSampler):
    """Draw coalitions S of all players; value every player by toggling it in S."""

    def draw(self, rng: np.random.Generator, n: int, block: int) -> np.ndarray:
        """Boolean (samples_per_block, n) coalitions for this block."""
        raise NotImplementedError

    def coalition_size_distribution(self, n: int) -> np.ndarray:
        """Probability ``q(s)`` of drawing S of size s, s = 0..n."""
        raise NotImplementedError

    def size_distribution(self, n: int) -> np.ndarray:
        # T = S minus i has size j if i in S and |S| = j + 1, or i not in S and |S| = j.
        q = self.coalition_size_distribution(n)
        j = np.arange(n)
        return q[j + 1] * (j + 1) / n + q[j] * (n - j) / n

    def marginals(self, ev, rng, weights, block, start=0, stop=None):  # type: ignore[no-untyped-def]
        n = ev.n
        S = self.draw(rng, n, block)[start:stop]
        m = S.shape[0]
        toggled = np.repeat(S, n, axis=0).reshape(m, n, n)
        toggled[:, np.arange(n), np.arange(n)] ^= True
        u = ev.evaluate(np.concatenate([S, toggled.reshape(m * n, n)]))
        u_s, u_t = u[:m, None], u[m:].reshape(m, n)
        marg = np.where(S, u_s - u_t, u_t - u_s)
        k = np.where(S, S.sum(1, keepdims=True) - 1, S.sum(1, keepdims=True))
        players = np.broadcast_to(np.arange(n), (m, n))
        return players.reshape(-1), (marg * weights[k]).reshape(-1)


class UniformSampler(_ToggleSampler):
    """Coalitions drawn uniformly from the powerset (each player in with prob. 1/2).

    Natural for Banzhaf values (weights 1); for Shapley values the importance
    weights of very small and very large coalitions are huge, so prefer the
    permutation or Owen samplers there.
    """

    def draw(self, rng, n, block):  # type: ignore[no-untyped-def]
        return rng.random((1, n)) < 0.5

    def coalition_size_distribution(self, n: int) -> np.ndarray:
        return binom.pmf(np.arange(n + 1), n, 0.5)


class AntitheticSampler(UniformSampler):
    """Uniform coalitions paired with their complements (antithetic variates)."""

    @property
    def samples_per_block(self) -> int:
        return 2

    def draw(self, rng, n, block):  # type: ignore[no-untyped-def]
        s = rng.random(n) < 0.5
        return np.stack([s, ~s])


class OwenSampler(_ToggleSampler):
    """Owen sampling: include each player with probability q, q spread over [0, 1].

    Okhrati & Lipani (2021), "A multilinear sampling algorithm to estimate
    Shapley values", ICPR. With q uniform on [0, 1] the coalition a player joins
    has exactly Shapley's size distribution.

    Parameters
    ----------
    n_q : int, default=20
        Number of grid points (``q="grid"``: the midpoints ``(k + 1/2) / n_q``,
        visited in turn, one per sample).
    q : {"grid", "uniform"}, default="grid"
        Grid points in turn, or q drawn uniformly at random per sample.
    antithetic : bool, default=False
        Also evaluate the complement of each coalition (Okhrati & Lipani's
        "halved" antithetic variant).

    Notes
    -----
    The engine weighs each marginal by the exact size distribution of the grid
    (a binomial mixture), so the grid variant stays unbiased for any semivalue.
    """

    def __init__(self, n_q: int = 20, q: str = "grid", antithetic: bool = False) -> None:
        check_int(n_q, "n_q", 1)
        if q not in ("grid", "uniform"):
            raise ValueError(f"q must be 'grid' or 'uniform'. Got {q!r} instead.")
        self.n_q, self.q, self.antithetic = n_q, q, antithetic

    @property
    def samples_per_block(self) -> int:
        return 2 if self.antithetic else 1

    def _q(self, rng: np.random.Generator, block: int) -> float:
        if self.q == "uniform":
            return float(rng.random())
        return (block % self.n_q + 0.5) / self.n_q

    def draw(self, rng, n, block):  # type: ignore[no-untyped-def]
        s = rng.random(n) < self._q(rng, block)
        return np.stack([s, ~s]) if self.antithetic else s[None]

    def min_updates(self, n: int) -> int:
        """The whole grid: ``n_q`` samples (``2 n_q`` antithetic); 1 for ``q="uniform"``."""
        return int(self.n_q) * self.samples_per_block if self.q == "grid" else 1

    def result(self, moments: tuple[Moments, ...]) -> ValuationResult:
        """Values; the standard error is unknown (NaN) until the grid was visited once.

        Before, the samples came from the first inclusion probabilities of the grid
        only (near-empty coalitions): their spread says nothing of the error.
        """
        result = super().result(moments)
        short = result.counts < self.min_updates(result.counts.shape[0])
        result.variances[short & (result.counts > 0)] = np.nan
        return result

    def coalition_size_distribution(self, n: int) -> np.ndarray:
        s = np.arange(n + 1)
        if self.q == "uniform":
            return np.full(n + 1, 1.0 / (n + 1))
        grid = (np.arange(self.n_q) + 0.5) / self.n_q
        return binom.pmf(s[:, None], n, grid[None, :]).mean(axis=1)


class StratifiedSampler(_ToggleSampler):
    """Coalitions of a size drawn from ``size_strategy``, uniform given their size.

    Stratification by coalition size as in Maleki et al. (2013), "Bounding the
    estimation error of sampling-based Shapley value approximation", and Wu et
    al. (2023), "Variance reduced Shapley value estimation for trustworthy data
    valuation" (VRDS).

    Parameters
    ----------
    size_strategy : {"uniform", "harmonic"} or array-like of shape (n + 1,)
        Distribution of the size of the drawn coalition S (0..n): "uniform"
        (which gives Shapley's size distribution exactly), "harmonic" (mass
        proportional to ``1 / (1 + min(s, n - s))``, favouring small and large
        coalitions, where marginals vary most), or explicit probabilities.
    """

    def __init__(self, size_strategy: Any = "uniform") -> None:
        if isinstance(size_strategy, str) and size_strategy not in ("uniform", "harmonic"):
            raise ValueError(
                "size_strategy must be 'uniform', 'harmonic' or an array of n + 1 "
                f"probabilities. Got {size_strategy!r} instead."
            )
        self.size_strategy = size_strategy

    def coalition_size_distribution(self, n: int) -> np.ndarray:
        s = np.arange(n + 1)
        if isinstance(self.size_strategy, str):
            q = np.ones(n + 1) if self.size_strategy == "uniform" else 1.0 / (
                1.0 + np.minimum(s, n - s))
        else:
            q = np.asarray(self.size_strategy, dtype=np.float64)
            if q.shape != (n + 1,) or np.any(q < 0) or q.sum() <= 0:
                raise ValueError(
                    f"size_strategy must hold n + 1 = {n + 1} non-negative probabilities. "
                    f"Got an array of shape {q.shape} instead."
                )
        return q / q.sum()

    def draw(self, rng, n, block):  # type: ignore[no-untyped-def]
        size = rng.choice(n + 1, p=self.coalition_size_distribution(n))
        s = np.zeros(n, dtype=bool)
        s[rng.permutation(n)[:size]] = True
        return s[None]

