"""Permutation samplers: random permutations (optionally truncated) and antithetic pairs.

Each permutation gives one marginal contribution per player for ``n`` new
utility evaluations (Castro et al., 2009); truncation (Ghorbani & Zou, 2019)
stops a permutation once its prefixes score close to the full data.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from skdvl._moments import Moments
from skdvl.sampling._base import _MarginalSampler
from skdvl.sampling._truncation import (
    _check_truncation,
    _lockstep_utilities,
    _permutation_utilities,
)

__all__ = ["PermutationSampler", "AntitheticPermutationSampler"]


class PermutationSampler(_MarginalSampler):
    """Uniformly random permutations; each gives one marginal per player.

    Castro, Gomez & Tejada (2009), "Polynomial calculation of the Shapley value
    based on sampling". With ``truncation``, truncated Monte Carlo (Ghorbani &
    Zou, 2019).

    Parameters
    ----------
    truncation : None, float, RelativeTruncation or FixedTruncation
        A float is the ``rtol`` of a :class:`RelativeTruncation`.
    """

    def __init__(self, truncation: Any = None) -> None:
        _check_truncation(truncation)
        self.truncation = truncation

    def size_distribution(self, n: int) -> np.ndarray:
        return np.full(n, 1.0 / n)

    def _perms(self, rng: np.random.Generator, n: int) -> list[np.ndarray]:
        return [rng.permutation(n)]

    lockstep = True
    updates_per_sample = 1.0  # each permutation: one marginal of every player

    def marginals(self, ev, rng, weights, block, start=0, stop=None):  # type: ignore[no-untyped-def]
        players, margs = [], []
        truncation = _check_truncation(self.truncation)
        for perm in self._perms(rng, ev.n)[start:stop]:
            u = _permutation_utilities(ev, perm, truncation)
            players.append(perm)
            margs.append(np.diff(u) * weights)
        return np.concatenate(players), np.concatenate(margs)

    def run_blocks(self, ev, items, weights):  # type: ignore[no-untyped-def]
        """The permutations of all the blocks walked in lockstep (a batched utility).

        Every round evaluates the next few prefixes of each permutation not yet
        truncated, all in one batch; each permutation truncates on its own
        utilities, exactly where it would alone (:func:`_lockstep_utilities`).
        """
        if not ev.batched or len(items) < 2:
            return super().run_blocks(ev, items, weights)
        perms = [self._perms(rng, ev.n) for rng, _ in items]
        flat = [p for block in perms for p in block]
        u = _lockstep_utilities(ev, flat, _check_truncation(self.truncation))
        out, row = [], 0
        for block in perms:
            k = len(block)
            margs = np.diff(u[row:row + k], axis=1) * weights
            out.append((Moments.of_samples(np.concatenate(block), margs.reshape(-1), ev.n),))
            row += k
        return out


class AntitheticPermutationSampler(PermutationSampler):
    """Pairs of a random permutation and its reverse (Mitchell et al., 2022,
    "Sampling permutations for Shapley value estimation", JMLR).

    Parameters
    ----------
    truncation : None, float, RelativeTruncation or FixedTruncation, default=None
        As for :class:`PermutationSampler`.
    """

    @property
    def samples_per_block(self) -> int:
        return 2

    def _perms(self, rng: np.random.Generator, n: int) -> list[np.ndarray]:
        perm = rng.permutation(n)
        return [perm, perm[::-1].copy()]

