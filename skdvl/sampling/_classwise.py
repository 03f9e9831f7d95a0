"""The class-wise samplers: in-class permutations in random contexts, and enumeration.

Schoch, Xu & Ji (2022), "CS-Shapley: class-wise Shapley values for data
valuation in classification", NeurIPS. Both run on the engine through a game of
``n + K`` players (:class:`~skdvl.utility._classwise._LabelledGame`) whose last
``K`` players say which class a coalition is scored for, so the engine's cache
keys hold the class as well as the rows. :func:`_exact_classwise` sums the
definition over the table of all coalitions.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from skdvl._coalitions import check_int, masks_from_codes
from skdvl._moments import Moments
from skdvl.result import ValuationResult
from skdvl.sampling._base import BaseSampler, Runner, TableState
from skdvl.sampling._exact import ExactSampler
from skdvl.sampling._truncation import _check_truncation, _walk_prefixes
from skdvl.utility._classwise import _LabelledGame, _Layout

__all__ = ["ClasswisePermutationSampler", "ClasswiseExactSampler"]


# --------------------------------------------------------------------------- the math
def _exact_classwise(u: np.ndarray, layout: _Layout) -> np.ndarray:
    """Class-wise Shapley values from ``u[code, k] = u_k(coalition code)`` (all 2^n codes).

    Row ``i`` of class ``k``: the in-class Shapley weight of ``|S cap T_k|``,
    ``1 / (n_k C(n_k - 1, s))``, times the uniform ``2^-(n - n_k)`` over contexts,
    summed over the coalitions without ``i`` (the definition of Schoch et al., 2022).
    """
    n = layout.n
    codes = np.arange(1 << n, dtype=np.int64)
    values = np.empty(n)
    for k, members in enumerate(layout.members):
        n_k = members.shape[0]
        size = np.zeros(1 << n, dtype=np.int64)
        for i in members:
            size += (codes >> int(i)) & 1
        per_size = np.array([1.0 / (n_k * math.comb(n_k - 1, s)) for s in range(n_k)])
        per_size /= 2.0 ** (n - n_k)
        for i in members:
            without = codes[((codes >> int(i)) & 1) == 0]
            values[i] = np.dot(per_size[size[without]],
                               u[without | (1 << int(i)), k] - u[without, k])
    return values


# --------------------------------------------------------------------------- samplers
def _check_classwise_utility(sampler: Any, utility: Any) -> _Layout:
    labels = getattr(utility, "labels", None)
    if labels is None:
        raise ValueError(
            f"{type(sampler).__name__} values class-wise utilities (with the labels of "
            "their players), for ClasswiseShapleyValuer; it got "
            f"{type(getattr(utility, 'utility', utility)).__name__}, which has no 'labels'.")
    return _Layout(labels)


class ClasswisePermutationSampler(BaseSampler):
    """In-class permutations, each with a fresh out-of-class context.

    One sample draws, for every class ``c``, a context ``R`` uniformly from the
    subsets of the other classes' rows (each row in with probability 1/2) and a
    uniformly random permutation of the rows of class ``c``, and evaluates
    ``u_c(R + prefix)`` for every prefix of the permutation, the empty one
    included: ``n + K`` utility evaluations give one marginal to every row
    (Schoch et al., 2022). The marginals are unbiased for the
    class-wise Shapley value: the permutation gives the in-class Shapley
    weights, the context the uniform average over ``R``.

    Parameters
    ----------
    truncation : None, float, RelativeTruncation or FixedTruncation, default=None
        Truncated Monte Carlo within each in-class permutation: a float ``rtol``
        stops it at the first prefix ``P`` with
        ``|u_c(R + P) - u_c(R + T_c)| < rtol * |u_c(R + T_c)|`` (the whole class
        in the same context), taking the later marginals as 0.

    Notes
    -----
    A new context per permutation keeps the samples independent, so the
    standard errors are those of a plain mean. pyDVL's ``ClasswiseSampler``
    may reuse one context for several permutations, skips contexts lacking a
    class, and starts each permutation from the default score instead of
    ``u_c(R)``; here every permutation starts from ``u_c(R)``, as the
    definition's marginal ``u_c(S + i + R) - u_c(S + R)`` does at ``S`` empty.
    """

    lockstep = True

    def __init__(self, truncation: Any = None) -> None:
        _check_truncation(truncation)
        self.truncation = truncation

    def value_game(self, utility: Any, mass: Any, *, state: Any,
                   run: Runner) -> tuple[ValuationResult, Any]:
        layout = _check_classwise_utility(self, utility)
        bound = _BoundPermutations(_check_truncation(self.truncation), layout)
        state = run.sample(_LabelledGame(utility, layout), bound, None, state)
        return bound.result(state.moments), state


class _BoundPermutations:
    """A :class:`ClasswisePermutationSampler` bound to one game: what the engine drives.

    Its statistics are the per-row moments of the ``n`` rows (not of the ``K``
    class players of the :class:`_LabelledGame`).
    """

    samples_per_block = 1
    lockstep = True

    def __init__(self, truncation: Any, layout: _Layout) -> None:
        self.truncation, self.layout = truncation, layout

    def zeros(self, n: int) -> tuple[Moments, ...]:
        return (Moments.zeros(self.layout.n),)

    def _draw(self, rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
        """One sample: per class, the context and the label as a mask, and the order."""
        lay = self.layout
        bases = np.zeros((lay.K, lay.n + lay.K), dtype=bool)
        orders = []
        for k in range(lay.K):
            others = lay.others[k]
            bases[k, others[rng.random(others.shape[0]) < 0.5]] = True
            bases[k, lay.n + k] = True
            orders.append(lay.members[k][rng.permutation(lay.members[k].shape[0])])
        return bases, orders

    def run_block(self, ev: Any, rng: np.random.Generator, weights: Any, block: int,
                  start: int = 0, stop: int | None = None) -> tuple[Moments, ...]:
        if stop is not None and stop <= start:
            return self.zeros(self.layout.n)
        return self.run_blocks(ev, [(rng, block)], weights)[0]

    def run_blocks(self, ev: Any, items: list[Any], weights: Any) -> list[tuple[Moments, ...]]:
        """Whole blocks; their walks are evaluated together (the same values as one by one)."""
        draws = [self._draw(rng) for rng, _ in items]
        bases = np.concatenate([b for b, _ in draws])
        orders = [o for _, block in draws for o in block]
        u = _walk_prefixes(ev, bases, orders, self.truncation)
        out: list[tuple[Moments, ...]] = []
        K = self.layout.K
        for b, (_, block) in enumerate(draws):
            players = np.concatenate(block)
            margs = np.concatenate([np.diff(u[b * K + k, :o.shape[0] + 1])
                                    for k, o in enumerate(block)])
            out.append((Moments.of_samples(players, margs, self.layout.n),))
        return out

    def result(self, moments: tuple[Moments, ...]) -> ValuationResult:
        m = moments[0]
        return ValuationResult(m.values(), variances=m.variance(), counts=m.count)

    def counts(self, moments: tuple[Moments, ...]) -> np.ndarray:
        return moments[0].count


class ClasswiseExactSampler(ExactSampler):
    """Every coalition for every class: exact class-wise Shapley values.

    ``2^n`` coalitions, each fitted once and scored for all ``K`` classes
    (``K 2^n`` utilities from ``2^n`` fits), then the definition of Schoch et
    al. (2022) summed exactly. Refused above ``max_players``.

    Parameters
    ----------
    max_players : int, default=20
        The largest game to enumerate.
    """

    def value_game(self, utility: Any, mass: Any, *, state: Any,
                   run: Runner) -> tuple[ValuationResult, Any]:
        layout = _check_classwise_utility(self, utility)
        n, K = layout.n, layout.K
        check_int(self.max_players, "max_players", 1, 62)
        if n > self.max_players:
            raise ValueError(
                f"sampler='exact' needs 2^n fits; n = {n} players is more than max_players = "
                f"{self.max_players}. Use sampler='permutation', or pass "
                f"sampler=ClasswiseExactSampler(max_players={n}) to insist.")
        # coalition-major: the K classes of a coalition are adjacent (one fit for all)
        masks = np.zeros((K << n, n + K), dtype=bool)
        masks[:, :n] = np.repeat(masks_from_codes(np.arange(1 << n, dtype=np.int64), n), K, 0)
        masks[np.arange(K << n), n + np.tile(np.arange(K), 1 << n)] = True
        state = state if state is not None else TableState(n + K, K << n, np.empty(0))
        state = run.table(_LabelledGame(utility, layout), state, masks=masks)
        if state.done < state.total:
            return ValuationResult(np.full(n, np.nan), counts=np.zeros(n, np.int64)), state
        values = _exact_classwise(state.utilities.reshape(1 << n, K), layout)
        return ValuationResult(values, counts=np.full(n, 1 << (n - 1), np.int64)), state

    def reweight(self, state: Any, mass: Any) -> ValuationResult:
        raise ValueError("Class-wise Shapley values are not a semivalue of one game: they "
                         "cannot be reweighted into another semivalue.")


