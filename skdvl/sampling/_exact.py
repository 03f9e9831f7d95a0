"""Exact enumeration: every coalition once (ExactSampler), and leave-one-out's ``n + 1``.

The utilities of all ``2^n`` coalitions, indexed by bit code, give every
semivalue exactly (:func:`_exact_semivalues`); an interrupted enumeration keeps
what it evaluated and ``warm_start`` continues it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from skdvl._coalitions import check_int, log_binom
from skdvl.result import ValuationResult
from skdvl.sampling._base import BaseSampler, Runner, TableState

__all__ = ["ExactSampler"]


class ExactSampler(BaseSampler):
    """Every coalition, each evaluated once: exact values (``sampler="exact"``).

    ``2^n`` utility evaluations (n = 10: 1,024), so refused above ``max_players``.
    An interrupted enumeration keeps the coalitions evaluated so far and
    ``warm_start`` continues it.

    Parameters
    ----------
    max_players : int, default=20
        The largest game to enumerate; at most 62 (coalitions are 64-bit codes).

    Examples
    --------
    >>> from skdvl import ShapleyValuer
    >>> from skdvl.games import SymmetricVotingGame
    >>> from skdvl.sampling import ExactSampler
    >>> game = SymmetricVotingGame(n_players=22)
    >>> ShapleyValuer(utility=game, sampler=ExactSampler(max_players=22))
    ShapleyValuer(sampler=ExactSampler(max_players=22),
                  utility=SymmetricVotingGame(n_players=22))
    """

    def __init__(self, max_players: int = 20) -> None:
        check_int(max_players, "max_players", 1, 62)
        self.max_players = max_players

    def value_game(self, utility: Any, mass: np.ndarray, *, state: Any,
                   run: Runner) -> tuple[ValuationResult, Any]:
        n = int(utility.n_players)
        check_int(self.max_players, "max_players", 1, 62)
        if n > self.max_players:
            raise ValueError(
                f"sampler='exact' needs 2^n utility evaluations; n = {n} players is more than "
                f"max_players = {self.max_players}. Use a Monte Carlo sampler, or pass "
                f"sampler=ExactSampler(max_players={n}) to insist."
            )
        state = state if state is not None else TableState(n, 1 << n, np.empty(0))
        state = run.table(utility, state)
        return self.reweight(state, mass), state

    def reweight(self, state: Any, mass: np.ndarray) -> ValuationResult:
        """Exact values of any semivalue from the table of all utilities."""
        n = state.n
        if state.done < state.total:
            return ValuationResult(np.full(n, np.nan), counts=np.zeros(n, np.int64))
        values = _exact_semivalues(state.utilities, n, mass)
        return ValuationResult(values, counts=np.full(n, 1 << (n - 1), np.int64))


class _LeaveOneOut(BaseSampler):
    """The ``n + 1`` coalitions of leave-one-out: ``u(N) - u(N - i)`` (mass ignored)."""

    def value_game(self, utility: Any, mass: Any, *, state: Any,
                   run: Runner) -> tuple[ValuationResult, Any]:
        n = int(utility.n_players)
        masks = np.ones((n + 1, n), dtype=bool)
        masks[np.arange(1, n + 1), np.arange(n)] = False
        state = state if state is not None else TableState(n, n + 1, np.empty(0))
        state = run.table(utility, state, masks=masks)
        u = np.full(n + 1, np.nan)
        u[:state.done] = state.utilities
        values = u[0] - u[1:]
        return ValuationResult(values, counts=np.isfinite(values).astype(np.int64)), state


def _exact_semivalues(u: np.ndarray, n: int, mass: np.ndarray) -> np.ndarray:
    """Semivalues from the utilities of all ``2^n`` coalitions, indexed by bit code.

    ``phi_i = sum_{T not containing i} m(|T|) / C(n-1, |T|) * (u(T + i) - u(T))``.
    """
    codes = np.arange(1 << n, dtype=np.int64)
    sizes = np.zeros(1 << n, dtype=np.int64)
    for i in range(n):
        sizes += (codes >> i) & 1
    per_set = mass / np.exp(log_binom(n - 1, np.arange(n)))
    values = np.empty(n)
    for i in range(n):
        without = codes[((codes >> i) & 1) == 0]
        values[i] = np.dot(per_set[sizes[without]], u[without | (1 << i)] - u[without])
    return values

