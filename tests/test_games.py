"""Tests of skdvl.games against an independent brute-force oracle."""

import itertools
import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skdvl.games import (
    AirportGame,
    AsymmetricVotingGame,
    MinerGame,
    ShoesGame,
    SymmetricVotingGame,
    UnanimityGame,
)


@pytest.fixture
def rng():
    return np.random.default_rng(20240501)


def brute_force_values(game):
    """Exact Shapley and Banzhaf values by enumerating all 2^n coalitions.

    Only ``game.__call__`` is used, so this oracle shares no code with the formulas.
    """
    n = game.n_players
    assert n <= 12, "the oracle enumerates 2^n coalitions"
    worth = {}
    for size in range(n + 1):
        for coalition in itertools.combinations(range(n), size):
            worth[frozenset(coalition)] = game(list(coalition))
    shapley = np.zeros(n)
    banzhaf = np.zeros(n)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for size in range(n):
            weight = (
                math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            )
            for coalition in itertools.combinations(others, size):
                s = frozenset(coalition)
                marginal = worth[s | {i}] - worth[s]
                shapley[i] += weight * marginal
                banzhaf[i] += marginal / 2 ** (n - 1)
    return shapley, banzhaf, worth


GAMES = [
    SymmetricVotingGame(1),
    SymmetricVotingGame(2),
    SymmetricVotingGame(7),
    SymmetricVotingGame(10),
    MinerGame(1),
    MinerGame(2),
    MinerGame(7),
    MinerGame(10),
    AsymmetricVotingGame([3, 2, 1, 1], quota=4),
    AsymmetricVotingGame([5, 5, 5, 2, 2, 1, 0, 7], quota=13),  # ties, zero weight
    AsymmetricVotingGame([4, 6, 2, 8, 10, 2], quota=15),  # common divisor 2, odd quota
    AsymmetricVotingGame([1, 1, 1, 1, 1, 1], quota=3),  # symmetric, not a majority
    AsymmetricVotingGame([50, 1, 1, 1, 1], quota=50),  # dictator
    AsymmetricVotingGame([0, 0, 0], quota=0),  # constant 1, even u(empty) = 1
    AsymmetricVotingGame([2, 3, 4], quota=0),
    AsymmetricVotingGame([2, 3, 4], quota=9),  # only the grand coalition wins
    AsymmetricVotingGame([2, 3, 4], quota=10),  # nobody wins
    AsymmetricVotingGame([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], quota=40),
    AsymmetricVotingGame([9, 9, 7, 3, 1, 1], quota=1),
    ShoesGame(1, 0),
    ShoesGame(0, 3),
    ShoesGame(1, 2),
    ShoesGame(3, 3),
    ShoesGame(2, 5),
    ShoesGame(6, 4),
    AirportGame([1.0]),
    AirportGame([1.0, 2.0, 4.0]),
    AirportGame([3.0, 1.0, 3.0, 0.0, 2.5, 1.0, 7.0]),  # ties, a zero, unsorted
    AirportGame([2.0, 2.0, 2.0, 2.0]),
    AirportGame(np.linspace(0.5, 6.0, 12)[::-1]),
    UnanimityGame(1, carriers=[[0]]),
    UnanimityGame(5, carriers=[[0, 1, 2]]),
    UnanimityGame(
        6, carriers=[[0, 1], [1, 2, 3], [5], [0, 1]], weights=[2.0, -1.5, 0.5, 1]
    ),
    UnanimityGame(8, carriers=[list(range(8)), [7, 3]], weights=[4.0, 3.0]),
    UnanimityGame(  # more than 16 carriers: the matmul path of evaluate
        7,
        carriers=list(itertools.combinations(range(7), 2)),
        weights=np.linspace(-1.0, 2.0, 21),
    ),
]


def definition(game, subset):
    """The worth of ``subset`` written from each game's definition, for reference."""
    s = set(subset)
    if isinstance(game, SymmetricVotingGame):
        return float(len(s) > game.n_players / 2)
    if isinstance(game, MinerGame):
        return float(len(s) // 2)
    if isinstance(game, AsymmetricVotingGame):
        return float(sum(game.weights[i] for i in s) >= game.quota)
    if isinstance(game, ShoesGame):
        left = sum(1 for i in s if i < game.n_left)
        return float(min(left, len(s) - left))
    if isinstance(game, AirportGame):
        return max((game.costs[i] for i in s), default=0.0)
    if isinstance(game, UnanimityGame):
        return sum(w for t, w in zip(game.carriers, game.weights) if set(t) <= s)
    raise AssertionError(type(game))


@pytest.mark.parametrize("game", GAMES, ids=repr)
def test_call_matches_the_definition_of_the_game(game, rng):
    n = game.n_players
    for _ in range(30):
        subset = rng.permutation(n)[: rng.integers(0, n + 1)]
        assert game(subset) == pytest.approx(definition(game, subset), abs=1e-12)


@pytest.mark.parametrize("game", GAMES, ids=repr)
def test_values_match_brute_force_enumeration(game):
    shapley, banzhaf, _ = brute_force_values(game)
    np.testing.assert_allclose(game.shapley_values(), shapley, rtol=0, atol=1e-10)
    np.testing.assert_allclose(game.banzhaf_values(), banzhaf, rtol=0, atol=1e-10)


@pytest.mark.parametrize("game", GAMES, ids=repr)
def test_shapley_values_are_efficient(game):
    n = game.n_players
    grand, empty = game(np.arange(n)), game([])
    assert game.shapley_values().shape == (n,)
    assert game.banzhaf_values().shape == (n,)
    assert game.shapley_values().sum() == pytest.approx(grand - empty, abs=1e-10)


@pytest.mark.parametrize("game", GAMES, ids=repr)
def test_evaluate_matches_call_row_by_row(game, rng):
    n = game.n_players
    masks = rng.random((40, n)) < rng.random((40, 1))
    masks[0] = False
    masks[1] = True
    values = game.evaluate(masks)
    assert values.dtype == np.float64
    assert values.shape == (40,)
    expected = [game(np.flatnonzero(row)) for row in masks]
    np.testing.assert_array_equal(values, expected)
    assert game.evaluate(np.zeros((0, n), dtype=bool)).shape == (0,)


@pytest.mark.parametrize("game", [g for g in GAMES if g.n_players <= 7], ids=repr)
def test_evaluate_matches_every_enumerated_coalition(game):
    _, _, worth = brute_force_values(game)
    n = game.n_players
    coalitions = list(worth)
    masks = np.zeros((len(coalitions), n), dtype=bool)
    for k, s in enumerate(coalitions):
        masks[k, list(s)] = True
    np.testing.assert_array_equal(game.evaluate(masks), [worth[s] for s in coalitions])


def test_call_ignores_order_and_accepts_sets_and_int_masks():
    game = AirportGame([1.0, 5.0, 3.0])
    assert game([2, 0]) == game([0, 2]) == game({0, 2}) == game(np.array([2, 0])) == 3.0
    assert game([]) == 0.0 and game(np.array([], dtype=int)) == 0.0
    np.testing.assert_array_equal(
        game.evaluate(np.array([[1, 0, 1], [0, 0, 0]])), [3.0, 0.0]
    )


@pytest.mark.parametrize("game", GAMES[:: len(GAMES) // 6], ids=repr)
def test_pickle_round_trip(game, rng):
    clone = pickle.loads(pickle.dumps(game))
    assert type(clone) is type(game) and repr(clone) == repr(game)
    masks = rng.random((20, game.n_players)) < 0.5
    np.testing.assert_array_equal(clone.evaluate(masks), game.evaluate(masks))
    np.testing.assert_array_equal(clone.shapley_values(), game.shapley_values())


def test_repr_names_class_and_parameters():
    assert repr(AsymmetricVotingGame([3, 2], quota=3)) == (
        "AsymmetricVotingGame(weights=[3, 2], quota=3)"
    )
    assert repr(ShoesGame(2, 3)) == "ShoesGame(n_left=2, n_right=3)"
    assert repr(MinerGame(4)) == "MinerGame(n_players=4)"
    assert "carriers=((0, 1),)" in repr(UnanimityGame(3, [[1, 0]]))


@pytest.mark.parametrize(
    "factory, attribute",
    [
        (lambda a: AsymmetricVotingGame(a.astype(np.int64), quota=3), "weights"),
        (lambda a: AirportGame(a), "costs"),
        (lambda a: UnanimityGame(3, [[0], [1], [2]], weights=a), "weights"),
    ],
)
def test_games_copy_their_array_parameters(factory, attribute):
    given = np.array([1.0, 2.0, 3.0])
    game = factory(given)
    before = [game([0]), game([0, 2])]
    given[0] = 100.0
    assert [game([0]), game([0, 2])] == before
    assert given.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        getattr(game, attribute)[0] = 5


def test_shapley_and_banzhaf_differ_for_unanimity_game():
    game = UnanimityGame(4, carriers=[[0, 1, 2]])
    np.testing.assert_allclose(game.shapley_values(), [1 / 3, 1 / 3, 1 / 3, 0])
    np.testing.assert_allclose(game.banzhaf_values(), [1 / 4, 1 / 4, 1 / 4, 0])


def test_unanimity_values_are_linear_in_the_game():
    a = UnanimityGame(5, [[0, 1], [2, 3, 4]], weights=[2.0, 1.0])
    b = UnanimityGame(5, [[1, 2, 3]], weights=[-3.0])
    both = UnanimityGame(5, [[0, 1], [2, 3, 4], [1, 2, 3]], weights=[2.0, 1.0, -3.0])
    for method in ("shapley_values", "banzhaf_values"):
        np.testing.assert_allclose(
            getattr(both, method)(), getattr(a, method)() + getattr(b, method)()
        )


def test_weighted_voting_reproduces_the_1958_eec_council_indices():
    # Council of Ministers of the EEC, 1958: France, Germany, Italy, Belgium,
    # Netherlands, Luxembourg with quota 12; Luxembourg is a null player.
    game = AsymmetricVotingGame([4, 4, 4, 2, 2, 1], quota=12)
    np.testing.assert_allclose(
        game.shapley_values(), np.array([14, 14, 14, 9, 9, 0]) / 60, atol=1e-12
    )
    np.testing.assert_allclose(
        game.banzhaf_values(), np.array([10, 10, 10, 6, 6, 0]) / 32, atol=1e-12
    )


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    weights=st.lists(st.integers(0, 9), min_size=1, max_size=7),
    quota_fraction=st.floats(0.0, 1.1),
)
def test_weighted_voting_matches_brute_force_for_random_weights(
    weights, quota_fraction
):
    game = AsymmetricVotingGame(weights, quota=int(quota_fraction * sum(weights)))
    shapley, banzhaf, _ = brute_force_values(game)
    np.testing.assert_allclose(game.shapley_values(), shapley, rtol=0, atol=1e-10)
    np.testing.assert_allclose(game.banzhaf_values(), banzhaf, rtol=0, atol=1e-10)


def test_large_games_are_fast_and_consistent(rng):
    n = 1000
    masks = rng.random((n, n)) < 0.5
    weights = rng.integers(0, 10, size=n)
    voting_weights = weights[:150]
    games = [
        SymmetricVotingGame(n),
        MinerGame(n),
        AsymmetricVotingGame(weights, quota=int(weights.sum() // 2)),
        AsymmetricVotingGame(voting_weights, quota=int(voting_weights.sum() * 0.6)),
        ShoesGame(400, 600),
        AirportGame(rng.random(n)),
        UnanimityGame(n, [list(range(10)), [5, 999]]),
    ]
    for game in games:
        game_masks = masks[:, : game.n_players]
        values = game.evaluate(game_masks)
        assert values.shape == (n,)
        assert game(np.flatnonzero(game_masks[3])) == values[3]
        if game.n_players == n and isinstance(game, AsymmetricVotingGame):
            continue  # the DP costs O(n^2 quota); checked on 150 players
        shapley = game.shapley_values()
        grand = game(np.arange(game.n_players)) - game([])
        assert shapley.sum() == pytest.approx(grand, rel=1e-9, abs=1e-9)
        banzhaf = game.banzhaf_values()
        assert np.isfinite(banzhaf).all() and (banzhaf >= -1e-12).all()


def test_weighted_voting_players_with_equal_weight_get_equal_values():
    game = AsymmetricVotingGame([4, 1, 4, 2, 1, 4], quota=9)
    for values in (game.shapley_values(), game.banzhaf_values()):
        assert values[0] == values[2] == values[5]
        assert values[1] == values[4]


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "factory, match",
    [
        (
            lambda: SymmetricVotingGame(0),
            r"'n_players' .* SymmetricVotingGame .*>= 1. Got 0",
        ),
        (
            lambda: SymmetricVotingGame(2.5),
            r"'n_players' .* integer >= 1. Got 2.5 instead",
        ),
        (lambda: SymmetricVotingGame(True), r"'n_players' .* Got True instead"),
        (lambda: MinerGame(-3), r"'n_players' .* MinerGame .* Got -3 instead"),
        (lambda: ShoesGame(-1, 2), r"'n_left' .* integer >= 0. Got -1 instead"),
        (lambda: ShoesGame(1, "2"), r"'n_right' .* Got '2' instead"),
        (
            lambda: ShoesGame(0, 0),
            r"n_left \+ n_right must be >= 1. Got n_left=0, n_right=0",
        ),
        (
            lambda: AsymmetricVotingGame([1, -2], 1),
            r"'weights' .* non-negative integers. Got \[1, -2\]",
        ),
        (
            lambda: AsymmetricVotingGame([1.5, 2], 1),
            r"'weights' .* Got \[1.5, 2\] instead",
        ),
        (
            lambda: AsymmetricVotingGame([], 1),
            r"'weights' .* non-empty .* Got \[\] instead",
        ),
        (
            lambda: AsymmetricVotingGame([[1, 2]], 1),
            r"'weights' .* 1-D .* Got \[\[1, 2\]\]",
        ),
        (
            lambda: AsymmetricVotingGame([1, 2], -1),
            r"'quota' .* integer >= 0. Got -1 instead",
        ),
        (lambda: AsymmetricVotingGame([1, 2], 1.5), r"'quota' .* Got 1.5 instead"),
        (
            lambda: AirportGame([1.0, -1.0]),
            r"'costs' .* non-negative .* Got \[1.0, -1.0\]",
        ),
        (lambda: AirportGame([1.0, np.nan]), r"'costs' .* finite, .* Got \[1.0, nan\]"),
        (lambda: AirportGame([]), r"'costs' .* non-empty .* Got \[\] instead"),
        (lambda: AirportGame(["a"]), r"'costs' .* Got \['a'\] instead"),
        (
            lambda: UnanimityGame(0, [[0]]),
            r"'n_players' .* UnanimityGame .* Got 0 instead",
        ),
        (lambda: UnanimityGame(3, []), r"'carriers' .* at least one carrier. Got \[\]"),
        (lambda: UnanimityGame(3, 5), r"'carriers' .* sequence of sequences .* Got 5"),
        (lambda: UnanimityGame(3, [[0], []]), r"carriers\[1\] .* non-empty. Got \[\]"),
        (
            lambda: UnanimityGame(3, [[0, 3]]),
            r"carriers\[0\] contains player index 3, out of",
        ),
        (
            lambda: UnanimityGame(3, [[1, 1]]),
            r"carriers\[0\] contains player 1 more than once",
        ),
        (
            lambda: UnanimityGame(3, [[0]], [1.0, 2.0]),
            r"'weights' .* 1 finite numbers.*Got \[1.0, 2.0\]",
        ),
        (
            lambda: UnanimityGame(3, [[0]], [np.inf]),
            r"'weights' .* finite .* Got \[inf\]",
        ),
        (
            lambda: UnanimityGame(3, [[0]], ["a"]),
            r"'weights' .* numbers, one per carrier. Got \['a'\] instead",
        ),
    ],
)
def test_bad_parameters_raise_value_error_naming_them(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


@pytest.mark.parametrize(
    "subset, match",
    [
        (
            [0, 4],
            r"subset contains player index 4, out of range .* n_players=4; .*\[0, 4\)",
        ),
        ([-1], r"subset contains player index -1, out of range"),
        ([2, 0, 2], r"subset contains player 2 more than once"),
        ([0.0, 1.0], r"subset must contain integer player indices. Got dtype float64"),
        ([True, False], r"subset must contain integer player indices. Got dtype bool"),
        ([[0, 1]], r"subset must be a 1-D .* Got an array of shape \(1, 2\)"),
    ],
)
def test_bad_subset_raises_value_error_naming_the_value(subset, match):
    with pytest.raises(ValueError, match=match):
        MinerGame(4)(subset)


@pytest.mark.parametrize(
    "masks, match",
    [
        (
            np.zeros((2, 3), dtype=bool),
            r"shape \(n_coalitions, n_players=4\). Got shape \(2, 3\)",
        ),
        (np.zeros(4, dtype=bool), r"Got shape \(4,\) instead"),
        (np.full((2, 4), 0.5), r"masks must be boolean .* Got dtype float64"),
        (np.full((2, 4), 2), r"masks must be boolean .* Got dtype int64"),
    ],
)
def test_bad_masks_raise_value_error(masks, match):
    with pytest.raises(ValueError, match=match):
        MinerGame(4).evaluate(masks)


def test_banzhaf_not_implemented_message_names_the_game():
    from skdvl.games import _Game

    class Dummy(_Game):
        n_players = 1

    with pytest.raises(
        NotImplementedError, match="Dummy has no known closed-form Banzhaf"
    ):
        Dummy().banzhaf_values()
