"""Stratified SVARM: exact border strata, unbiased calibrated estimates, one sample for all."""

import pickle

import numpy as np
import pytest
from scipy.stats import binom
from sklearn.base import clone

from skdvl import BanzhafValuer, BetaShapleyValuer, ShapleyValuer
from skdvl.games import (
    AirportGame,
    AsymmetricVotingGame,
    MinerGame,
    ShoesGame,
    SymmetricVotingGame,
    UnanimityGame,
)
from skdvl.sampling._engine import CachedEvaluator
from skdvl.sampling._svarm import (
    SVARMSampler,
    _border_coalitions,
    _paper_size_distribution,
    _StrataMoments,
)
from skdvl.stopping import MaxSamples


class BorderOnly:
    """Arbitrary utilities on sizes 0, 1, n - 1 and n; the constant 3 on all other sizes.

    Only the exact border strata carry information, so SVARM must be exact.
    """

    def __init__(self, n):
        self.n_players = n
        self.a = np.linspace(-1.0, 2.0, n) ** 3

    def evaluate(self, masks):
        sizes = masks.sum(axis=1)
        border = (sizes <= 1) | (sizes >= self.n_players - 1)
        return np.where(border, (masks @ self.a) ** 2 + sizes, 3.0)

    def __call__(self, subset):
        mask = np.zeros((1, self.n_players), bool)
        mask[0, list(subset)] = True
        return float(self.evaluate(mask)[0])


def _exact(valuer_cls, game, **params):
    return valuer_cls(utility=game, sampler="exact", **params).fit().values_


def _warm_up_size(n):
    return 2 * sum(-(-n // s) for s in range(2, n - 1))


# --------------------------------------------------------------------------- size distribution
@pytest.mark.parametrize("n", [10, 11, 40])
def test_paper_size_distribution_is_the_papers_formula(n):
    q = _paper_size_distribution(n)
    s = np.arange(2, n - 1)
    assert q.sum() == pytest.approx(1.0) and np.all(q[[0, 1, n - 1, n]] == 0)
    np.testing.assert_allclose(q, q[::-1], rtol=1e-12)
    if n % 2:
        h = np.sum(1.0 / np.arange(1, (n - 1) // 2 + 1))
        np.testing.assert_allclose(q[s], 1 / (2 * np.minimum(s, n - s) * (h - 1)), rtol=1e-12)
    else:
        nlogn = n * np.log(n)
        h = np.sum(1.0 / np.arange(1, n // 2))
        side = s[s < n // 2]
        np.testing.assert_allclose(q[side], (nlogn - 1) / (2 * side * nlogn * (h - 1)),
                                   rtol=1e-12)
        assert q[n // 2] == pytest.approx(1 / nlogn, rel=1e-12)


def test_paper_size_distribution_for_four_players_is_all_on_size_two():
    np.testing.assert_array_equal(_paper_size_distribution(4), [0, 0, 1, 0, 0])


class Recorder:
    def __init__(self, n):
        self.n_players = n
        self.seen = []

    def evaluate(self, masks):
        self.seen.append(masks.copy())
        return masks.sum(axis=1).astype(float)


@pytest.mark.parametrize("strategy", ["paper", "uniform", np.r_[0, 0, 1, 0, 3, 0, 0, 0, 0]])
def test_sampled_sizes_follow_size_strategy(strategy, seed):
    n, blocks = 8, 150
    sampler = SVARMSampler(size_strategy=strategy)
    if isinstance(strategy, str):
        expected = _paper_size_distribution(n) if strategy == "paper" else np.r_[
            0, 0, np.full(n - 3, 1 / (n - 3)), 0, 0]
    else:
        expected = strategy / strategy.sum()
    utility, rng = Recorder(n), np.random.default_rng(seed)
    ev = CachedEvaluator(utility, cache=False)
    for b in range(1, blocks + 1):
        sampler.run_block(ev, rng, np.full(n, 1 / n), b)
    sizes = np.concatenate(utility.seen).sum(axis=1)
    freq = np.bincount(sizes, minlength=n + 1) / sizes.size
    sd = np.sqrt(expected * (1 - expected) / sizes.size)
    assert np.all(np.abs(freq - expected) <= 5 * sd + 1e-12)


def test_block_zero_evaluates_border_warm_up_and_samples_in_one_batch(seed):
    n, utility = 9, Recorder(9)
    SVARMSampler(batch_size=10).run_block(
        CachedEvaluator(utility, cache=False), np.random.default_rng(seed), np.full(n, 1 / n), 0)
    assert len(utility.seen) == 1
    batch = utility.seen[0]
    assert batch.shape == (2 * n + 2 + _warm_up_size(n) + 10, n)
    np.testing.assert_array_equal(batch[:2 * n + 2], _border_coalitions(n))
    assert set(batch[2 * n + 2:].sum(axis=1)) == set(range(2, n - 1))


def test_every_coalition_is_credited_to_every_player():
    n = 9
    v = ShapleyValuer(utility=AirportGame(np.arange(1.0, n + 1)), sampler="svarm",
                      stopping=MaxSamples(10), random_state=0).fit()
    assert v.n_utility_evaluations_ <= 2 * n + 2 + _warm_up_size(n) + 10
    # every coalition is a sample for every player: border, one warm-up sample per
    # sampled stratum (2 (n - 3) of them), then every sampled coalition
    np.testing.assert_array_equal(v.counts_, 2 * n + 2 + 2 * (n - 3) + 10)


# --------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("valuer", [
    ShapleyValuer(), BanzhafValuer(), BanzhafValuer(weight=0.3),
    BetaShapleyValuer(alpha=4, beta=2),
], ids=repr)
@pytest.mark.parametrize("n", [4, 5, 8])
def test_border_strata_are_exact(valuer, n):
    game = BorderOnly(n)
    v = clone(valuer).set_params(utility=game, sampler="svarm", stopping=MaxSamples(3),
                                 random_state=0).fit()
    exact = clone(valuer).set_params(utility=game, sampler="exact").fit().values_
    np.testing.assert_allclose(v.values_, exact, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(v.stderr_, 0.0)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_tiny_games_enumerate_every_coalition_once(n):
    game = UnanimityGame(n, [[0], list(range(n))], [1.0, 2.0])
    v = BanzhafValuer(utility=game, weight=0.3, sampler="svarm").fit()
    np.testing.assert_allclose(v.values_, _exact(BanzhafValuer, game, weight=0.3),
                               rtol=1e-12)
    np.testing.assert_array_equal(v.stderr_, 0.0)
    assert v.n_utility_evaluations_ == 2**n and v.converged_


# --------------------------------------------------------------------------- convergence
@pytest.mark.parametrize("game", [
    SymmetricVotingGame(21),
    AsymmetricVotingGame([1, 1, 2, 3, 5, 8, 1, 2, 4, 3, 2, 6], quota=20),
    ShoesGame(12, 15),
    AirportGame(np.linspace(1.0, 4.0, 40)),
    MinerGame(17),
    UnanimityGame(30, [[0, 1, 2]]),
], ids=repr)
def test_converges_to_exact_shapley_and_banzhaf_values(game):
    v = ShapleyValuer(utility=game, sampler="svarm", max_updates=300 * game.n_players,
                      random_state=1).fit()
    for fitted, exact in [(v, game.shapley_values()),
                          (v.reweight(BanzhafValuer()), game.banzhaf_values())]:
        err = np.abs(fitted.values_ - exact)
        assert np.all(err <= 5 * fitted.stderr_ + 1e-10)
        assert np.sqrt(np.mean(err**2)) <= 0.1 * np.abs(exact).max()


def test_error_falls_with_the_budget():
    game = AirportGame(np.linspace(1.0, 4.0, 15))
    rmse = []
    for budget in (100, 1000, 10_000):
        errs = [ShapleyValuer(utility=game, sampler="svarm", max_updates=budget * 15,
                              random_state=s).fit().values_ - game.shapley_values()
                for s in range(3)]
        rmse.append(np.sqrt(np.mean(np.square(errs))))
    assert rmse[0] > 2 * rmse[1] > 4 * rmse[2]


@pytest.mark.parametrize("valuer, params", [
    (BanzhafValuer, {"weight": 0.2}), (BanzhafValuer, {"weight": 0.8}),
    (BetaShapleyValuer, {"alpha": 16, "beta": 1}), (BetaShapleyValuer, {"alpha": 1, "beta": 4}),
], ids=str)
def test_converges_to_exact_semivalues(valuer, params):
    game = AsymmetricVotingGame([1, 1, 2, 3, 5, 8, 1, 2, 4, 3, 2], quota=16)
    v = valuer(utility=game, sampler="svarm", max_updates=3000, random_state=2, **params).fit()
    exact = _exact(valuer, game, **params)
    err = np.abs(v.values_ - exact)
    assert np.all(err <= 5 * v.stderr_ + 1e-10)
    assert err.max() <= 0.15 * np.abs(exact).max()


# --------------------------------------------------------------------------- statistics
@pytest.fixture(scope="module")
def repeated_fits():
    """Shapley and Banzhaf values of two games, 50 seeds each, 10 players."""
    games = [AirportGame([1.0, 1, 2, 3, 3, 4, 5, 6, 7, 9]),
             AsymmetricVotingGame([1, 1, 2, 3, 5, 8, 1, 2, 4, 3], quota=15)]
    out = []
    for game in games:
        fits = [ShapleyValuer(utility=game, sampler="svarm", max_updates=500,
                              random_state=seed).fit() for seed in range(50)]
        banzhaf = [f.reweight(BanzhafValuer()) for f in fits]
        for runs, exact in [(fits, game.shapley_values()), (banzhaf, game.banzhaf_values())]:
            out.append((np.array([r.values_ for r in runs]),
                        np.array([r.stderr_ for r in runs]), exact))
    return out


def test_unbiased_over_seeds(repeated_fits):
    ok = []
    for values, _, exact in repeated_fits:
        se_of_mean = values.std(axis=0, ddof=1) / np.sqrt(values.shape[0])
        ok.append(np.abs(values.mean(axis=0) - exact) <= 3 * se_of_mean + 1e-12)
    assert np.mean(ok) >= 0.95


def test_standard_errors_are_calibrated(repeated_fits):
    for values, stderr, exact in repeated_fits:
        covered = np.abs(values - exact) <= 1.96 * stderr + 1e-12
        assert 0.9 <= covered.mean() <= 0.99
        spread = values.std(axis=0, ddof=1)
        ratio = stderr.mean(axis=0)[spread > 0] / spread[spread > 0]
        assert 0.7 <= np.median(ratio) <= 1.4


def test_single_sample_strata_get_a_positive_conservative_variance():
    # right after the warm-up every sampled stratum holds one sample
    game = AirportGame(np.linspace(1.0, 4.0, 12))
    fits = [ShapleyValuer(utility=game, sampler="svarm", stopping=MaxSamples(1),
                          random_state=s).fit() for s in range(30)]
    values = np.array([f.values_ for f in fits])
    stderr = np.array([f.stderr_ for f in fits])
    assert np.all(stderr > 0)
    assert np.mean(np.abs(values - game.shapley_values()) <= 1.96 * stderr) >= 0.95


def test_unseen_strata_give_nan_with_count_zero_not_zero():
    game = AirportGame(np.linspace(1.0, 4.0, 12))
    with pytest.warns(UserWarning, match="got no sample"):
        v = ShapleyValuer(utility=game, sampler=SVARMSampler(warm_up=False),
                          stopping=MaxSamples(3), random_state=0).fit()
    assert np.all(np.isnan(v.values_)) and np.all(v.counts_ == 0)
    full = ShapleyValuer(utility=game, sampler=SVARMSampler(warm_up=False),
                         max_updates=2000, random_state=0).fit()
    assert np.all(np.isfinite(full.values_)) and np.all(full.counts_ > 0)


def test_statistics_merge_exactly_in_any_order_and_pickle(rng):
    n, m = 7, 90
    masks = rng.random((m, n)) < 0.5
    u = rng.normal(size=m)
    whole = _StrataMoments.of_coalitions(masks, u, masks, ~masks, None).strata()
    parts = [slice(0, 13), slice(13, 50), slice(50, m)]
    for order in ([0, 1, 2], [2, 0, 1]):
        merged = _StrataMoments.zeros(n)
        for k in order:
            p = parts[k]
            merged.merge(_StrataMoments.of_coalitions(masks[p], u[p], masks[p], ~masks[p], None))
        merged = pickle.loads(pickle.dumps(merged))
        for a, b in zip(merged.strata(), whole):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- determinism
def test_values_identical_for_any_n_jobs():
    game = ShoesGame(5, 6)
    kw = dict(utility=game, sampler=SVARMSampler(batch_size=16), max_updates=3000,
              random_state=5)
    one = ShapleyValuer(n_jobs=1, **kw).fit()
    two = ShapleyValuer(n_jobs=2, **kw).fit()
    np.testing.assert_array_equal(one.values_, two.values_)
    np.testing.assert_array_equal(one.stderr_, two.stderr_)
    np.testing.assert_array_equal(one.counts_, two.counts_)


def test_warm_start_after_a_split_block_continues_the_same_stream():
    game = AirportGame(np.linspace(1.0, 4.0, 11))
    kw = dict(utility=game, sampler=SVARMSampler(batch_size=16), random_state=4)
    once = ShapleyValuer(stopping=MaxSamples(100), **kw).fit()
    v = ShapleyValuer(stopping=MaxSamples(37), warm_start=True, **kw).fit()
    assert v.counts_[0] == 2 * 11 + 2 + 2 * 8 + 37
    v.set_params(stopping=MaxSamples(100)).fit()
    np.testing.assert_allclose(v.values_, once.values_, rtol=1e-12)
    np.testing.assert_allclose(v.stderr_, once.stderr_, rtol=1e-10)
    np.testing.assert_array_equal(v.counts_, once.counts_)
    # (evaluations may differ: the evaluator's cache of coalitions starts empty in each fit)
    other = ShapleyValuer(stopping=MaxSamples(100), **{**kw, "random_state": 5}).fit()
    assert not np.allclose(other.values_, once.values_)


# --------------------------------------------------------------------------- one sample for all
@pytest.mark.parametrize("target, params", [
    (BanzhafValuer, {"weight": 0.3}), (BanzhafValuer, {}),
    (BetaShapleyValuer, {"alpha": 16, "beta": 1}),
], ids=str)
def test_reweight_equals_a_direct_fit_and_converges(target, params):
    game = AsymmetricVotingGame([1, 1, 2, 3, 5, 8, 1, 2, 4, 3, 2], quota=16)
    sv = ShapleyValuer(utility=game, sampler="svarm", max_updates=3000, random_state=3).fit()
    reweighted = sv.reweight(target(**params))
    direct = target(utility=game, sampler="svarm", max_updates=3000, random_state=3,
                    **params).fit()
    assert type(reweighted) is target
    np.testing.assert_array_equal(reweighted.values_, direct.values_)
    np.testing.assert_array_equal(reweighted.stderr_, direct.stderr_)
    assert reweighted.n_utility_evaluations_ == sv.n_utility_evaluations_
    exact = _exact(target, game, **params)
    assert np.all(np.abs(reweighted.values_ - exact) <= 5 * reweighted.stderr_ + 1e-10)


def test_reweight_to_the_weighted_banzhaf_mass_by_hand():
    game = UnanimityGame(9, [[0, 1, 2], [3, 4]], [1.0, 2.0])
    sv = ShapleyValuer(utility=game, sampler="svarm", max_updates=20_000, random_state=0).fit()
    mass = binom.pmf(np.arange(9), 8, 0.7)
    res = sv._resolve_sampler().reweight(sv._states_[0], mass)
    np.testing.assert_allclose(res.values, _exact(BanzhafValuer, game, weight=0.7), atol=0.02)
    with pytest.raises(ValueError, match="9 finite non-negative weights"):
        sv._resolve_sampler().reweight(sv._states_[0], mass[:5])


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize("params, match", [
    ({"batch_size": 0}, r"batch_size must be an integer >= 1\. Got 0 instead"),
    ({"batch_size": 2.5}, r"batch_size must be an integer >= 1\. Got 2\.5 instead"),
    ({"size_strategy": "harmonic"}, r"'size_strategy' parameter .* Got 'harmonic' instead"),
    ({"size_strategy": [[0.5]]}, r"'size_strategy' parameter .* Got \[\[0\.5\]\] instead"),
    ({"size_strategy": [0, -1, 2]}, r"'size_strategy' parameter .* Got \[0, -1, 2\] instead"),
    ({"warm_up": "yes"}, r"'warm_up' parameter .* Got 'yes' instead"),
])
def test_bad_parameters_are_refused_at_construction_and_fit(params, match):
    with pytest.raises(ValueError, match=match):
        SVARMSampler(**params)
    sampler = SVARMSampler().set_params(**params)  # set_params bypasses __init__
    with pytest.raises(ValueError, match=match):
        ShapleyValuer(utility=ShoesGame(3, 4), sampler=sampler, max_updates=10).fit()


@pytest.mark.parametrize("strategy, match", [
    (np.ones(5), r"n \+ 1 = 11 probabilities.*shape \(5,\)"),
    (np.ones(11), r"sizes 2\.\.8.*mass 4 on those"),
    (np.zeros(11), r"sizes 2\.\.8.*mass 0 on those and 0 on the others"),
])
def test_size_strategy_array_must_fit_the_game(strategy, match):
    with pytest.raises(ValueError, match=match):
        ShapleyValuer(utility=ShoesGame(5, 5), sampler=SVARMSampler(size_strategy=strategy),
                      max_updates=10).fit()


def test_without_warm_up_a_size_never_drawn_is_refused():
    strategy = np.r_[0, 0, 1, 1, 0, 1, 0, 0]
    with pytest.raises(ValueError, match=r"never draws coalitions of sizes \[4\]"):
        ShapleyValuer(utility=ShoesGame(3, 4), max_updates=10,
                      sampler=SVARMSampler(size_strategy=strategy, warm_up=False)).fit()
    v = ShapleyValuer(utility=ShoesGame(3, 4), max_updates=100, random_state=0,
                      sampler=SVARMSampler(size_strategy=strategy)).fit()
    assert np.all(np.isfinite(v.values_))


def test_border_coalitions_are_distinct():
    for n in range(1, 8):
        codes = {tuple(row) for row in _border_coalitions(n)}
        assert len(codes) == _border_coalitions(n).shape[0] == (2 * n + 2 if n > 3 else 2**n)
