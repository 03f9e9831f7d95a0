"""The Shapley axioms as property tests over random games (hypothesis)."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from skdvl import BanzhafValuer, BetaShapleyValuer, ShapleyValuer
from skdvl.sampling import PermutationSampler
from skdvl.sampling._engine import CachedEvaluator


class TableGame:
    """An arbitrary game given by the utility of each bit-coded coalition."""

    def __init__(self, table):
        self.table = np.asarray(table, dtype=float)
        self.n_players = int(np.log2(self.table.size))

    def evaluate(self, masks):
        codes = masks.astype(np.int64) @ (1 << np.arange(self.n_players, dtype=np.int64))
        return self.table[codes]

    def __call__(self, subset):
        return float(self.table[int(sum(1 << int(i) for i in subset))])


def tables(n_min=2, n_max=6):
    return st.integers(n_min, n_max).flatmap(
        lambda n: arrays(np.float64, 1 << n, elements=st.floats(-10, 10, width=32)))


VALUERS = [
    lambda g: ShapleyValuer(utility=g, sampler="exact"),
    lambda g: BanzhafValuer(utility=g, sampler="exact"),
    lambda g: BetaShapleyValuer(4, 2, utility=g, sampler="exact"),
]


@settings(max_examples=40, deadline=None)
@given(tables(), st.integers(0, 2**32 - 1))
def test_efficiency_each_permutation_sums_to_u_n_minus_u_empty(table, seed):
    game = TableGame(table)
    n = game.n_players
    ev = CachedEvaluator(game)
    players, marg = PermutationSampler().marginals(ev, np.random.default_rng(seed),
                                                   np.ones(n), 0)
    assert np.isclose(marg.sum(), table[-1] - table[0], atol=1e-9)
    exact = ShapleyValuer(utility=game, sampler="exact").fit().values_
    assert np.isclose(exact.sum(), table[-1] - table[0], atol=1e-9)


def _swap01(code):
    b0, b1 = code & 1, (code >> 1) & 1
    return (code & ~3) | (b0 << 1) | b1


@settings(max_examples=30, deadline=None)
@given(tables(n_min=3))
def test_symmetry_interchangeable_players_get_equal_values(table):
    codes = np.arange(table.size)
    sym = (table + table[[_swap01(int(c)) for c in codes]]) / 2  # symmetric in players 0, 1
    game = TableGame(sym)
    for make in VALUERS:
        v = make(game).fit().values_
        assert np.isclose(v[0], v[1], atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(tables(n_min=3), st.integers(0, 2**32 - 1))
def test_null_player_gets_zero(table, seed):
    codes = np.arange(table.size)
    null = table[codes & ~1]  # player 0 never changes the utility
    game = TableGame(null)
    for make in VALUERS:
        assert abs(make(game).fit().values_[0]) < 1e-9
    mc = ShapleyValuer(utility=game, sampler="owen", max_updates=3, random_state=seed).fit()
    assert mc.values_[0] == 0.0


@settings(max_examples=30, deadline=None)
@given(tables(n_min=2, n_max=5), st.floats(-3, 3), st.integers(0, 2**32 - 1))
def test_linearity_in_the_utility(table, c, seed):
    other = np.cos(np.arange(table.size) * 1.7) * 5
    a, b, ab = TableGame(table), TableGame(other), TableGame(table + c * other)
    for make in VALUERS:
        va, vb, vab = (make(g).fit().values_ for g in (a, b, ab))
        np.testing.assert_allclose(vab, va + c * vb, atol=1e-8)
    # Monte Carlo estimates are linear too for a fixed seed: the samples are the same
    mc = [ShapleyValuer(utility=g, sampler="permutation", max_updates=4,
                        random_state=seed).fit().values_
          for g in (a, b, ab)]
    np.testing.assert_allclose(mc[2], mc[0] + c * mc[1], atol=1e-8)
