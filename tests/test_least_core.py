"""Oracles, invariances and errors of LeastCoreValuer (Yan & Procaccia, 2021).

The oracles never reuse the code under test: constraints are enumerated here,
the subsidy is checked against the dual LP (solved by another HiGHS method),
the tie-break against SLSQP and an LP optimality certificate, and the least
cores of symmetric games and of the miner game against their derivations.
"""

import warnings

import numpy as np
import pytest
import scipy.optimize
from scipy.optimize import linprog, minimize
from sklearn.datasets import make_classification
from sklearn.neighbors import KNeighborsClassifier

from skdvl.games import AsymmetricVotingGame, MinerGame, ShoesGame, SymmetricVotingGame
from skdvl.sampling import ExactSampler
from skdvl.valuation._least_core import LeastCoreValuer
from skdvl.valuation._least_core_lp import TIE_BREAK_SLACK

pytestmark = pytest.mark.filterwarnings("ignore::skdvl.UtilityFitWarning")


class TableGame:
    """A game given by its table: ``u(S) = table[code(S)]``, ``code`` the bit code."""

    def __init__(self, table):
        self.table = np.asarray(table, dtype=float)
        self.n_players = int(np.log2(self.table.size))

    def __call__(self, subset):
        return float(self.table[int(np.sum(1 << np.asarray(subset, dtype=np.int64)))])

    def __repr__(self):
        return f"TableGame(n_players={self.n_players})"


def _coalitions(n):
    """Boolean masks of the non-empty proper coalitions, by bit code 1 .. 2^n - 2."""
    codes = np.arange(1, 2**n - 1)
    return ((codes[:, None] >> np.arange(n)) & 1).astype(bool)


def _utilities(game, masks):
    return np.array([game(np.flatnonzero(m)) for m in masks])


def _convex_game(rng, n):
    """u(S) = w(S)^2 / w(N): supermodular, so its core is non-empty and full-dimensional."""
    w = rng.uniform(0.5, 2.0, n)
    codes = np.arange(2**n)
    masks = ((codes[:, None] >> np.arange(n)) & 1).astype(bool)
    return TableGame((masks @ w) ** 2 / w.sum())


def _random_game(rng, n):
    codes = np.arange(2**n)
    masks = ((codes[:, None] >> np.arange(n)) & 1).astype(bool)
    table = masks.sum(1) / n + 0.3 * rng.random(2**n)
    table[0] = 0.0
    return TableGame(table)


def _dual_subsidy(masks, u, u_full, non_negative):
    """The least-core LP's dual (Bondareva-Shapley), solved by HiGHS's interior point.

    Lagrange multipliers l_S >= 0 of ``x(S) + e >= u(S)`` and nu of
    ``x(N) = u(N)``: stationarity in x_i gives ``sum_{S ni i} l_S = nu`` and in e
    ``sum_S l_S = 1`` (``<= 1`` when ``e >= 0``); the dual maximises
    ``sum_S l_S u(S) - nu u(N)``.
    """
    m, n = masks.shape
    c = np.r_[-u, u_full]  # minimise the negated dual objective over (l, nu)
    A_eq = np.c_[masks.T.astype(float), -np.ones(n)]
    ones = np.r_[np.ones(m), 0.0][None, :]
    kw = (dict(A_ub=ones, b_ub=[1.0], A_eq=A_eq, b_eq=np.zeros(n)) if non_negative else
          dict(A_eq=np.r_[A_eq, ones], b_eq=np.r_[np.zeros(n), 1.0]))
    res = linprog(c, bounds=[(0, None)] * m + [(None, None)], method="highs-ipm", **kw)
    assert res.status == 0, res.message
    return -res.fun


GAMES = [
    AsymmetricVotingGame([1, 1, 2, 3, 5, 8, 1, 2], quota=12),
    ShoesGame(3, 4),
    MinerGame(7),
]


# --------------------------------------------------------------------- exact oracles
@pytest.mark.parametrize("non_negative", [False, True])
@pytest.mark.parametrize("game", GAMES + ["random", "convex"], ids=repr)
def test_exact_least_core_satisfies_every_constraint_and_the_dual_subsidy(
        game, non_negative, rng):
    if game == "random":
        game = _random_game(rng, 7)
    elif game == "convex":
        game = _convex_game(rng, 7)
    n = game.n_players
    v = LeastCoreValuer(utility=game, sampler="exact",
                        non_negative_subsidy=non_negative).fit()
    masks = _coalitions(n)
    u, u_full = _utilities(game, masks), game(np.arange(n))
    x, e = np.asarray(v.values_), v.subsidy_
    scale = max(np.abs(u).max(), abs(u_full))
    assert (masks @ x + e - u).min() >= -2 * TIE_BREAK_SLACK * scale
    assert x.sum() == pytest.approx(u_full, abs=1e-12 * scale)
    assert e == pytest.approx(_dual_subsidy(masks, u, u_full, non_negative), abs=1e-8)
    assert not non_negative or e >= 0
    assert v.n_utility_evaluations_ == 2**n
    assert v.converged_
    np.testing.assert_array_equal(v.stderr_, 0.0)
    np.testing.assert_array_equal(v.counts_, 2 ** (n - 1) - 1)


@pytest.mark.parametrize("n", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("f", [lambda s, n: float(2 * s > n), lambda s, n: s // 2,
                               lambda s, n: np.sqrt(s), lambda s, n: s**2 / n],
                         ids=["voting", "miner", "sqrt", "square"])
def test_symmetric_game_least_core_is_the_equal_split(f, n):
    """u(S) = f(|S|): the least core is the equal split, e = max_s f(s) - s f(n) / n.

    Derivation: the constraints are invariant under permutations of the players,
    so the mean of a least-core vector over all permutations (the equal split
    f(n)/n) is feasible with the same e: the equal split is in the least core,
    and e is the least subsidy it needs, max over sizes 1 <= s <= n - 1 of
    f(s) - s f(n)/n. Among all vectors summing to f(n) the equal split has the
    least norm, so it is the egalitarian tie-break.
    """
    codes = np.arange(2**n)
    sizes = ((codes[:, None] >> np.arange(n)) & 1).sum(1)
    game = TableGame([f(s, n) for s in sizes])
    v = LeastCoreValuer(utility=game, sampler="exact").fit()
    np.testing.assert_allclose(v.values_, f(n, n) / n, atol=1e-8)
    s = np.arange(1, n)
    assert v.subsidy_ == pytest.approx(max(f(k, n) - k * f(n, n) / n for k in s), abs=1e-9)


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 7, 9, 10])
def test_miner_game_least_core(n):
    """u(S) = floor(|S|/2). Derivation (independent of the symmetric-game argument).

    Even n >= 4: every pair {i, j} lies in a perfect matching M; summing
    ``x_i + x_j + e >= 1`` over M gives ``n/2 + (n/2) e >= n/2``, so e >= 0, and
    e = 0 is reached by the equal split 1/2. At e = 0 the sum over M is tight,
    so every pair has ``x_i + x_j = 1``; for n >= 3 that forces all x_i = 1/2:
    the least core is the single point 1/2. n = 2: only the singletons
    constrain, ``x_i + e >= 0`` with ``x_1 + x_2 = 1``: e = -1/2 at (1/2, 1/2).
    Odd n: the coalitions N - i give ``(n-1)/2 - x_i + e >= (n-1)/2``, i.e.
    ``x_i <= e``, so ``(n-1)/2 = sum x <= n e``: e >= (n-1)/(2n), with equality
    only if every x_i = e: the least core is the single point (n-1)/(2n), which
    satisfies the other constraints (x(S) = |S|(n-1)/(2n) >= floor(|S|/2) - e).
    """
    v = LeastCoreValuer(utility=MinerGame(n), sampler="exact").fit()
    if n % 2 == 0:
        value, subsidy = 0.5, (-0.5 if n == 2 else 0.0)
    else:
        value = subsidy = (n - 1) / (2 * n)
    np.testing.assert_allclose(v.values_, value, atol=1e-8)
    assert v.subsidy_ == pytest.approx(subsidy, abs=1e-10)


def test_shoes_game_least_core_gives_the_scarce_side_everything():
    """ShoesGame(2, 3): e = 0 and (1, 1, 0, 0, 0), the classical glove-market core.

    With a = the left players' pay, b = the right ones' (symmetric within a
    side): the coalition of both left shoes and two right shoes gives
    ``2a + 2b + e >= 2`` with ``2a + 3b = 2``, i.e. ``e >= b``; a right
    singleton gives ``b + e >= 0``. So e >= 0 (e < 0 would need b > 0 >= e), and
    e = 0 forces b = 0, a = 1.
    """
    v = LeastCoreValuer(utility=ShoesGame(2, 3), sampler="exact").fit()
    np.testing.assert_allclose(v.values_, [1, 1, 0, 0, 0], atol=1e-8)
    assert v.subsidy_ == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("non_negative", [True, False])
def test_tie_break_is_the_minimal_norm_least_core_vector(non_negative, rng):
    """Checked by an LP certificate, a KKT check and SLSQP, none of them NNLS.

    On the convex set K of least-core vectors (subsidy e + slack), x is the point
    of minimal norm iff ``x . y >= |x|^2`` for every y in K, i.e. iff the LP
    ``min x . y over K`` has the value |x|^2. With non_negative_subsidy the least
    core of this convex game is its whole core, a full-dimensional polytope, so
    the tie-break is not trivial.
    """
    n = 7
    game = _convex_game(rng, n)
    v = LeastCoreValuer(utility=game, sampler="exact",
                        non_negative_subsidy=non_negative).fit()
    masks = _coalitions(n)
    u, u_full = _utilities(game, masks), game(np.arange(n))
    x, e = np.asarray(v.values_), v.subsidy_
    scale = max(np.abs(u).max(), abs(u_full))
    lower = u - e - TIE_BREAK_SLACK * scale
    res = linprog(x, A_ub=-masks.astype(float), b_ub=-lower, A_eq=np.ones((1, n)),
                  b_eq=[u_full], bounds=[(None, None)] * n, method="highs-ds")
    assert res.status == 0
    assert res.fun >= x @ x - 1e-9
    # KKT: x = sum of l_S 1_S over the active S plus mu 1, with l >= 0
    active = masks[masks @ x - lower < 1e-7]
    kkt = scipy.optimize.lsq_linear(
        np.c_[active.T.astype(float), np.ones(n)], x,
        bounds=(np.r_[np.zeros(len(active)), -np.inf], np.inf))
    assert np.linalg.norm(kkt.fun) < 1e-7
    slsqp = minimize(lambda z: z @ z, np.full(n, u_full / n), jac=lambda z: 2 * z,
                     method="SLSQP", constraints=[
                         {"type": "ineq", "fun": lambda z: masks @ z - lower,
                          "jac": lambda z: masks.astype(float)},
                         {"type": "eq", "fun": lambda z: z.sum() - u_full,
                          "jac": lambda z: np.ones((1, n))}],
                     options={"ftol": 1e-14, "maxiter": 500})
    assert slsqp.success
    np.testing.assert_allclose(x, slsqp.x, atol=1e-6)
    if non_negative:  # the core is big: the tie-break moved far from a vertex
        assert e == 0.0 or e < 1e-12
        assert len(active) < n - 1


def test_non_negative_subsidy_is_the_free_subsidy_clipped_at_zero(rng):
    game = _convex_game(rng, 6)  # a non-empty core: the free subsidy is negative
    free = LeastCoreValuer(utility=game, sampler="exact").fit()
    clipped = LeastCoreValuer(utility=game, sampler="exact", non_negative_subsidy=True).fit()
    assert free.subsidy_ < 0
    assert clipped.subsidy_ == pytest.approx(0.0, abs=1e-12)


def test_one_player_gets_the_grand_coalition():
    v = LeastCoreValuer(utility=TableGame([0.0, 3.0]), sampler="exact").fit()
    np.testing.assert_array_equal(v.values_, [3.0])
    assert v.subsidy_ == -np.inf
    v = LeastCoreValuer(utility=TableGame([0.0, 3.0]), random_state=0).fit()
    np.testing.assert_array_equal(v.values_, [3.0])


# ----------------------------------------------------------------------- Monte Carlo
def test_montecarlo_converges_to_the_exact_least_core(rng):
    game = _random_game(rng, 9)  # 510 constraints
    exact = np.asarray(LeastCoreValuer(utility=game, sampler="exact").fit().values_)
    errors = []
    for budget in (40, 300, 20_000):
        err = []
        for seed in range(3):
            v = LeastCoreValuer(utility=game, max_updates=budget, n_bootstrap=0,
                                random_state=seed).fit()
            state = v._states_[0]
            masks, u = state.masks[1:], state.utilities[1:]
            # every sampled constraint holds with the reported subsidy
            assert (masks @ np.asarray(v.values_) + v.subsidy_ - u).min() >= -2e-9
            assert v.n_utility_evaluations_ == state.masks.shape[0] <= budget + 1
            err.append(np.abs(np.asarray(v.values_) - exact).max())
        errors.append(np.mean(err))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-7  # 20,000 draws hold every one of the 510 coalitions


def test_montecarlo_draws_are_uniform_over_proper_coalitions():
    game = TableGame(np.arange(2**4, dtype=float))
    v = LeastCoreValuer(utility=game, max_updates=14_000, n_bootstrap=0, random_state=0).fit()
    state = v._states_[0]
    codes = (state.masks[state.draws].astype(int) << np.arange(4)).sum(1)
    counts = np.bincount(codes, minlength=16)
    assert counts[0] == counts[15] == 0
    assert counts[1:15].min() > 850 and counts[1:15].max() < 1150  # 1000 expected each


def test_bootstrap_standard_errors_shrink_with_the_budget(rng):
    game = _random_game(rng, 10)
    se = [np.mean(LeastCoreValuer(utility=game, max_updates=m, n_bootstrap=10,
                                  random_state=0).fit().stderr_) for m in (100, 3000)]
    assert np.all(np.isfinite(se)) and se[0] > se[1] > 0
    v = LeastCoreValuer(utility=game, max_updates=100, n_bootstrap=0, random_state=0).fit()
    assert np.isnan(v.stderr_).all()


def test_values_identical_for_any_n_jobs():
    X, y = make_classification(n_samples=40, n_features=4, random_state=0)
    params = dict(max_updates=300, n_bootstrap=4, cv=2, random_state=0)
    model = KNeighborsClassifier(n_neighbors=1)
    one = LeastCoreValuer(model, n_jobs=1, **params).fit(X, y)
    two = LeastCoreValuer(model, n_jobs=2, **params).fit(X, y)
    for attr in ("values_", "stderr_", "counts_", "subsidies_"):
        np.testing.assert_array_equal(getattr(one, attr), getattr(two, attr))
    assert one.n_utility_evaluations_ == two.n_utility_evaluations_
    assert one.subsidies_.shape == (2,)
    assert one.subsidy_ == pytest.approx(one.subsidies_.mean())


def test_one_seed_one_value_and_warm_start_draws_only_new_coalitions(rng):
    game = _random_game(rng, 9)
    kw = dict(utility=game, n_bootstrap=0, random_state=3)
    ref = LeastCoreValuer(max_updates=400, **kw).fit()
    again = LeastCoreValuer(max_updates=400, **kw).fit()
    np.testing.assert_array_equal(ref.values_, again.values_)
    other = LeastCoreValuer(max_updates=400, **{**kw, "random_state": 4}).fit()
    assert not np.array_equal(ref.values_, other.values_)
    warm = LeastCoreValuer(max_updates=100, warm_start=True, **kw).fit()
    first = warm.n_utility_evaluations_
    warm.set_params(max_updates=400).fit()
    np.testing.assert_array_equal(warm.values_, ref.values_)
    # the count is cumulative (as for the semivalue valuers): no coalition evaluated twice
    assert first < warm.n_utility_evaluations_ == ref.n_utility_evaluations_


def test_fits_data_with_cross_valuation_and_returns_pandas():
    pd = pytest.importorskip("pandas")
    X, y = make_classification(n_samples=30, n_features=4, random_state=1)
    X_df = pd.DataFrame(X, index=[f"r{i}" for i in range(30)])
    v = LeastCoreValuer(KNeighborsClassifier(n_neighbors=1), max_updates=200, n_bootstrap=3,
                        cv=3, random_state=0).fit(X_df, y)
    assert isinstance(v.values_, pd.Series) and v.values_.index.equals(X_df.index)
    assert np.isfinite(v.values_).all() and np.isfinite(v.stderr_).all()
    assert v.n_players_ == 30 and not v.converged_


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize("params, match", [
    (dict(sampler="permutation"), r"The 'sampler' parameter of LeastCoreValuer must be .* "
                                  r"Got 'permutation' instead"),
    (dict(max_updates=0), r"The 'max_updates' parameter of LeastCoreValuer must be .* "
                          r"Got 0 instead"),
    (dict(max_updates=None), r"The 'max_updates' parameter .* Got None instead"),
    (dict(n_bootstrap=-1), r"The 'n_bootstrap' parameter .* Got -1 instead"),
    (dict(n_bootstrap=1), r"'n_bootstrap' .* must be 0 .* or >= 2 .* Got 1 instead"),
    (dict(non_negative_subsidy="yes"), r"The 'non_negative_subsidy' parameter .* "
                                       r"Got 'yes' instead"),
    (dict(solver_options="fast"), r"The 'solver_options' parameter .* Got 'fast' instead"),
    (dict(solver_options={"tolerance_of_doom": 1}),
     r"'solver_options' .* HiGHS refused some: .*tolerance_of_doom"),
    (dict(solver_options={"method": "simplex"}),
     r"solver_options\['method'\] must be one of \['highs', 'highs-ds', 'highs-ipm'\] .* "
     r"Got 'simplex' instead"),
])
def test_bad_parameters_raise_naming_them(params, match):
    v = LeastCoreValuer(utility=MinerGame(4), random_state=0, **{"max_updates": 50, **params})
    with pytest.raises(ValueError, match=match):
        v.fit()


def test_exact_refuses_large_games_and_ExactSampler_insists():
    with pytest.raises(ValueError, match=r"n = 17 players is more than max_players = 16.*"
                                         r"ExactSampler\(max_players=17\)"):
        LeastCoreValuer(utility=SymmetricVotingGame(17), sampler="exact").fit()
    with pytest.raises(ValueError, match="n = 5 players is more than max_players = 4"):
        LeastCoreValuer(utility=MinerGame(5), sampler=ExactSampler(max_players=4)).fit()
    v = LeastCoreValuer(utility=MinerGame(5), sampler=ExactSampler(max_players=5)).fit()
    np.testing.assert_allclose(v.values_, 0.4)


def test_unbounded_sample_raises_with_the_solvers_message():
    # two coalitions of 6 players cannot bound the subsidy from below
    with pytest.raises(RuntimeError, match=r"linprog status 3\): .*[Uu]nbounded.*"
                                           r"raise max_updates.*non_negative_subsidy"):
        LeastCoreValuer(utility=MinerGame(6), max_updates=2, random_state=0).fit()
    with pytest.warns(UserWarning, match="rows got no sample"):  # in neither coalition
        v = LeastCoreValuer(utility=MinerGame(6), max_updates=2, non_negative_subsidy=True,
                            n_bootstrap=0, random_state=0).fit()
    assert v.subsidy_ >= 0


def test_failed_solve_raises_with_the_solvers_message():
    with pytest.raises(RuntimeError, match=r"linprog status 1\): .*[Ii]teration limit"):
        LeastCoreValuer(utility=MinerGame(6), sampler="exact",
                        solver_options={"maxiter": 0}).fit()


def test_infeasible_solve_raises_with_the_solvers_message(monkeypatch):
    import skdvl.valuation._least_core_lp as module

    def infeasible(*args, **kwargs):
        return scipy.optimize.OptimizeResult(status=2, x=None,
                                             message="The problem is infeasible. (HiGHS)")

    monkeypatch.setattr(module, "linprog", infeasible)
    with pytest.raises(RuntimeError, match=r"status 2\): The problem is infeasible\. "
                                           r"\(HiGHS\).*numerical failure"):
        LeastCoreValuer(utility=MinerGame(4), sampler="exact").fit()


def test_infeasible_tie_break_raises(monkeypatch):
    import skdvl.valuation._least_core_lp as module

    monkeypatch.setattr(module, "TIE_BREAK_SLACK", -1e-3)  # below the least subsidy
    with pytest.raises(RuntimeError, match="tie-break found no least-core vector"):
        LeastCoreValuer(utility=MinerGame(5), sampler="exact").fit()


def test_custom_utility_takes_no_data_and_needs_n_players():
    with pytest.raises(ValueError, match="fit\\(\\) takes no data"):
        LeastCoreValuer(utility=MinerGame(4)).fit(np.ones((4, 1)), np.arange(4))

    class NoPlayers:
        def __call__(self, subset):
            return 0.0

    with pytest.raises(ValueError, match="n_players >= 1. Got n_players=None"):
        LeastCoreValuer(utility=NoPlayers()).fit()


def test_reweight_refuses():
    from skdvl import ShapleyValuer

    v = LeastCoreValuer(utility=MinerGame(4), sampler="exact").fit()
    with pytest.raises(ValueError, match="cannot reweight"):
        v.reweight(ShapleyValuer())


def test_interrupted_evaluation_returns_nan_and_warm_start_continues(monkeypatch):
    import skdvl.valuation._least_core as module

    real = module.evaluate_coalitions
    calls = []

    def interrupted(utility, state, **kw):
        calls.append(1)
        if len(calls) == 1:
            state.interrupted = True
            return state  # nothing evaluated, as after an immediate Ctrl-C
        return real(utility, state, **kw)

    monkeypatch.setattr(module, "evaluate_coalitions", interrupted)
    v = LeastCoreValuer(utility=MinerGame(5), sampler="exact", warm_start=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v.fit()
    assert np.isnan(v.values_).all() and not v.converged_
    v.fit()
    np.testing.assert_allclose(v.values_, 0.4)
