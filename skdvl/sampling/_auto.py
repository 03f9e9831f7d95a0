"""``sampler="auto"``: the estimator a semivalue valuer uses when the user names none.

The rule rests on the side-by-side measurements of ``benchmarks/bench_estimators.py``
(``benchmarks/README.md``, "Estimators for hard games"): at 40 players and 400 to 40,000
utility calls, and on a 16-row data game, hybrid regression-adjusted MSR
(:class:`~skdvl.sampling.HybridMSRSampler`: size strata drawn without replacement, the
small ones enumerated, a surrogate chosen among linear, count and tree models) had the
lowest or near-lowest error of skdvl's estimators on the airport, weighted and symmetric
voting, miner, shoes and breast-cancer games, for Shapley and Banzhaf values alike;
exact enumeration wins whenever the budget covers the ``2^n`` coalitions. One rule
depends on the budget and the semivalue: for Banzhaf values from ``5 n`` to ``20 n``
calls the choice is Kernel Banzhaf (:class:`~skdvl.sampling.KernelSampler`, paired least squares).
At ``10 n`` calls (4 seeds, ``estimators_auto_*.json``) it had 2.7-23x lower error than
the hybrid estimator on the breast-cancer and airport games, but 1.46x higher on shoes,
1.5x on weighted voting, and on the symmetric voting game, which the hybrid estimator's
size-wise fit makes exact, 1.3e-03 against rounding; from ``30 n`` the hybrid estimator
is lower on every game but airport (1.5x). Shapley values keep the hybrid estimator at
every budget: at ``10 n`` it was the lowest of skdvl's estimators on four of the six
games and within 1.3x on weighted voting (the old tree MSR). Below ``20 n`` calls it
cross-fits over up to 4 folds instead of 2 (``_hybrid_folds``): a fold's surrogate is
fitted on ``(k - 1) / k`` of the units, and at small budgets the surrogate is what
the units are short of. Banzhaf values from ``30 n`` calls also get 4 folds, and tree
ensembles fitted to the utilities alone (a random forest, deep boosting:
``ensembles=True``) among the surrogates; those gain from the larger training share,
which brought the breast-cancer game at ``30 n`` level with shapiq's
RegressionMSR(xgboost) (3.6e-05 both, 16 seeds). Shapley values do not get the
ensembles: their effect there was mixed (breast cancer 10 n 5.2e-04 -> 4.7e-04, airport
30 n 1.2e-04 -> 1.3e-04 over 16 seeds, its median 9x higher on seeds 0-7). The hybrid
estimator keeps every coalition's indicators and tree fits grow with ``n`` times the
samples, so above ``_TREE_MAX_PLAYERS`` players the estimator is
:class:`~skdvl.sampling.RegressionMSRSampler` with its linear surrogate (running sums
only). On data games whose coalitions are cheap to fit (linear models on the batched
path, whose permutation prefixes are fitted incrementally) the tree fits cost more than
the utility calls they save: a logistic regression on 100 breast-cancer rows (1 thread,
3 seeds, MSE against 3,000 permutations) took 8.6 s with a tree surrogate at the default
budget (MSE 2.2e-05), 2.6 s with the linear one (3.0e-05) and 1.4 s by permutations
(7.6e-05). Those games get the hybrid estimator with the linear surrogate.
"""

from __future__ import annotations

from skdvl.sampling._base import BaseSampler
from skdvl.sampling._exact import ExactSampler
from skdvl.sampling._hybrid_msr import HybridMSRSampler
from skdvl.sampling._kernel import KernelSampler
from skdvl.sampling._regression_msr import RegressionMSRSampler

__all__ = ["choose_sampler"]

#: above this many players the hybrid estimator's stored indicators and tree fits (a
#: few per fold, on every sample's n indicators) cost more than they save
_TREE_MAX_PLAYERS = 100
#: the hybrid estimator needs a budget of this many times the units that cover its strata
#: once (``min_updates``: 158 coalitions at n = 40); below, regression MSR is used
_COVERS = 2
#: without a budget (another criterion stops sampling), enumerate up to this many
_EXACT_UNBOUNDED = 10
#: Banzhaf values with fewer than this many calls per player: Kernel Banzhaf (paired
#: least squares) had 2.7-23x lower error than the hybrid estimator at 10 n calls on
#: the airport and breast-cancer games, the hybrid 1.5x lower on voting and shoes, and
#: the hybrid won from 30 n; at 20 n (4 seeds) the hybrid was 2.7-3.2x lower on voting
#: and shoes, Kernel Banzhaf 2.5x and 1.9x lower on airport and breast cancer: no
#: budget serves both kinds of games
_KERNEL_BANZHAF_CALLS_PER_PLAYER = 20
#: below this many calls per player the hybrid estimator cross-fits over more folds: its
#: surrogate, fitted on (k - 1) / k of the units, is starved at small budgets. At 10 n
#: calls (40 players, 6 seeds) 4 folds instead of 2 took weighted voting from 6.2e-04 to
#: 4.7e-04, shoes 4.5e-03 to 2.2e-03, airport 1.3e-02 to 5.4e-03, and 3 or 4 folds the
#: breast-cancer game (16 rows) 5.2e-04 to 3.8e-04 or 4.4e-04; at 20 n and 30 n the folds made no
#: consistent difference (4 seeds: within 1.25x either way but airport, heavy-tailed)
_MORE_FOLDS_CALLS_PER_PLAYER = 20
#: ... at most this many folds (5 cost airport 2.6x and the breast-cancer game 1.25x
#: against 4 at 10 n), and only as many as leave this share of the budget, at least, to
#: the learnt allocation after every stratum has its ``2 n_folds`` units
_MAX_FOLDS = 4
_COVER_SHARE = 0.8
#: with those 4 folds (and the tree candidates), the allocation after the cover is learnt
#: from the held-out residuals of the folds' surrogates instead of the size-wise linear
#: fit's (``neyman_residuals="surrogate"``): at 10 n calls, 16 seeds, weighted voting
#: 4.41e-04 -> 3.60e-04, shoes 2.31e-03 -> 1.65e-03, airport 5.5e-03 -> 5.95e-03 and
#: the breast-cancer game 5.10e-04 -> 5.18e-04; with 3 folds (more units left to the
#: allocation) the breast-cancer game went from 5.2e-04 to 8.4e-04, so not there. At
#: 15 n (8 seeds): voting 2.06e-04 -> 1.57e-04, shoes 1.30e-03 -> 1.05e-03, airport
#: 9.1e-04 -> 1.4e-03 (medians 8.3e-04, 9.0e-04: one heavy seed), breast cancer 2.3e-04
#: -> 2.2e-04; at 20 n with 2 folds (4 seeds) mixed (voting 1.2x worse), so not there
#: Banzhaf values from this many calls per player on cross-fit over ``_MAX_FOLDS`` folds
#: too (the allocation learnt from the linear fit): with the tree ensembles fitted to
#: the utilities alone among the candidates (``_hybrid_msr._ALONE``), which gain most
#: from fitting 3/4 of the units instead of 1/2, 4 folds against 2 took the
#: breast-cancer game at 30 n (16 seeds) from 4.8e-05 to 3.6e-05, airport at 300 n (4
#: seeds) from 3.5e-07 to 2.2e-07, shoes at 30 n and 100 n (8 seeds) from 2.1e-04 to
#: 1.8e-04 and 2.1e-05 to 1.8e-05, and left weighted voting as it was (2.1e-04 and
#: 2.0e-04 at 30 n over 16 seeds, 4.5e-05 and 4.7e-05 at 100 n over 8); at 20 n the 4
#: folds' cover (314 of 800 calls at 40 players) cost weighted voting 1.3x (3.9e-04 to
#: 5.1e-04, 8 seeds) and the breast-cancer game gained nothing (1.07e-04, 1.05e-04)
_BANZHAF_FOLDS_CALLS_PER_PLAYER = 30
#: ... from this many calls per player on: below, Kernel Banzhaf's least squares has
#: too few distinct coalitions and leaves rows without a value (NaN; 8 players: none
#: valued at 14 calls, all at 28-32), where regression MSR's surrogate values every row
_KERNEL_MIN_CALLS_PER_PLAYER = 5


def choose_sampler(n: int, budget_calls: int | None, algorithm: str, *,
                   cheap_prefixes: bool = False) -> BaseSampler:
    """The sampler of ``sampler="auto"`` for a game of ``n`` players.

    Parameters
    ----------
    n : int
        Players of the game (rows, or groups of rows).
    budget_calls : int or None
        About how many utility evaluations the budget allows; None when no
        ``max_updates`` bounds them.
    algorithm : str
        The valuer's semivalue ("shapley", "banzhaf", "beta_shapley", ...):
        "banzhaf" (any ``weight``) with ``5 n`` to ``20 n`` calls gets Kernel
        Banzhaf.
    cheap_prefixes : bool, default=False
        Whether every game's coalitions are fitted on the batched linear path
        (``ModelUtility.walk_reason == ""``): then calls are cheap and the
        surrogate stays linear.

    Returns
    -------
    sampler : BaseSampler
        ``ExactSampler()`` when the ``2^n`` coalitions fit the budget (or ``n`` is
        at most 10 without a budget), else, for Banzhaf values with a budget of
        ``5 n`` to ``20 n`` calls and up to 100 players, ``KernelSampler(batch_size=b)`` with
        blocks that add up to the budget, else ``HybridMSRSampler()`` up to 100
        players (``HybridMSRSampler(surrogate="linear")`` with ``cheap_prefixes``)
        when the budget is at least twice its ``min_updates`` (below ``20 n``
        calls with up to 4 folds instead of 2, as many as leave a fifth of the
        budget beyond their cover, and with 4 the allocation learnt from the
        surrogates' residuals: ``HybridMSRSampler(n_folds=4,
        neyman_residuals='surrogate')`` at ``10 n``; Banzhaf values from ``30 n``
        calls with 4 folds and tree ensembles among the surrogates,
        ``HybridMSRSampler(ensembles=True, n_folds=4)``), and
        ``RegressionMSRSampler(surrogate="auto")`` (linear with ``cheap_prefixes``)
        below that or ``RegressionMSRSampler()`` above 100 players.
    """
    limit = ExactSampler().max_players
    if n <= limit and (2 ** n <= budget_calls if budget_calls is not None
                       else n <= _EXACT_UNBOUNDED):
        return ExactSampler()
    if (algorithm == "banzhaf" and n <= _TREE_MAX_PLAYERS and budget_calls is not None
            and _KERNEL_MIN_CALLS_PER_PLAYER * n <= budget_calls
            < _KERNEL_BANZHAF_CALLS_PER_PLAYER * n):
        # blocks of at most 128 pairs that add up to the budget: a budget of updates is
        # checked between blocks, so a block of 128 would overshoot it
        pairs = max(budget_calls // 2, 1)
        blocks = -(-pairs // 128)
        return KernelSampler(batch_size=-(-pairs // blocks))
    hybrid = HybridMSRSampler(surrogate="linear") if cheap_prefixes else HybridMSRSampler()
    if n <= _TREE_MAX_PLAYERS and (budget_calls is None
                                   or budget_calls >= _COVERS * hybrid.min_updates(n)):
        folds = _hybrid_folds(n, budget_calls)
        if (algorithm == "banzhaf" and not cheap_prefixes and budget_calls is not None
                and budget_calls >= _BANZHAF_FOLDS_CALLS_PER_PLAYER * n
                and _cover_fits(_MAX_FOLDS, n, budget_calls)):
            return hybrid.set_params(n_folds=_MAX_FOLDS, ensembles=True)
        if folds == _MAX_FOLDS and not cheap_prefixes:  # measured there only
            return hybrid.set_params(n_folds=folds, neyman_residuals="surrogate")
        return hybrid.set_params(n_folds=folds) if folds != 2 else hybrid
    if n <= _TREE_MAX_PLAYERS and not cheap_prefixes:  # too small a budget for its strata
        return RegressionMSRSampler(surrogate="auto")
    return RegressionMSRSampler()


def _hybrid_folds(n: int, budget_calls: int | None) -> int:
    """Folds of the hybrid estimator's cross-fitting for ``budget_calls`` on ``n`` players.

    2 from ``_MORE_FOLDS_CALLS_PER_PLAYER * n`` calls on (or without a budget), else
    the most, up to ``_MAX_FOLDS``, whose cover (``min_updates``) takes at most
    ``_COVER_SHARE`` of the budget: 4 at 400 calls on 40 players (cover 314) and at 160
    on 16 (cover 122). The folds are fixed before any draw, so the estimate stays
    unbiased.
    """
    if budget_calls is None or budget_calls >= _MORE_FOLDS_CALLS_PER_PLAYER * n:
        return 2
    for k in range(_MAX_FOLDS, 2, -1):
        if _cover_fits(k, n, budget_calls):
            return k
    return 2


def _cover_fits(folds: int, n: int, budget_calls: int) -> bool:
    """Whether the cover of ``folds`` folds (``min_updates``) takes at most
    ``_COVER_SHARE`` of the budget."""
    return HybridMSRSampler(n_folds=folds).min_updates(n) <= _COVER_SHARE * budget_calls
