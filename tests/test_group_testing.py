"""Group testing Shapley values: the size distribution, unbiased differences, the guarantee."""

import math

import numpy as np
import pytest
from joblib import parallel_config
from scipy.optimize import OptimizeResult
from scipy.special import comb
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from skdvl import BanzhafValuer, GroupTestingShapleyValuer, ShapleyValuer
from skdvl.games import (
    AirportGame,
    AsymmetricVotingGame,
    ShoesGame,
    SymmetricVotingGame,
    UnanimityGame,
)
from skdvl.sampling import _group_testing
from skdvl.sampling._engine import CachedEvaluator
from skdvl.sampling._group_testing import (
    GroupTestingSampler,
    _difference_samples,
    _GroupTestingStats,
    _normaliser,
    _size_distribution,
    group_testing_samples,
)


def _all_coalitions(n):
    """Every coalition of sizes 1..n-1 (bool rows) and its probability under the sampler."""
    masks = np.array([[(c >> i) & 1 for i in range(n)] for c in range(1, (1 << n) - 1)],
                     dtype=bool)
    sizes = masks.sum(axis=1)
    return masks, _size_distribution(n)[sizes] / comb(n, sizes)


# --------------------------------------------------------------------------- the math
@pytest.mark.parametrize("n", [2, 3, 7, 40])
def test_size_distribution_is_the_papers(n):
    q = _size_distribution(n)
    k = np.arange(1, n)
    expected = 1 / k + 1 / (n - k)
    np.testing.assert_allclose(q[k], expected / expected.sum(), rtol=1e-12)
    assert q[0] == q[n] == 0.0
    assert math.isclose(q.sum(), 1.0, rel_tol=1e-12)
    assert math.isclose(_normaliser(n), 2 * sum(1 / j for j in range(1, n)), rel_tol=1e-12)


def test_sampled_coalition_sizes_follow_q(rng):
    """Sizes drawn by the sampler's blocks match q(k) (multinomial, 5 sigma per size)."""
    n, blocks = 9, 200
    sampler = GroupTestingSampler(batch_size=64)
    sizes = []

    class Record:
        n_players = n

        def evaluate(self, masks):
            sizes.extend(masks.sum(axis=1).tolist())
            return np.zeros(masks.shape[0])

    ev = CachedEvaluator(Record(), cache=False)
    for b in range(1, blocks + 1):
        sampler.run_block(ev, np.random.default_rng([7, b]), None, b)
    counts = np.bincount(sizes, minlength=n + 1)
    m = counts.sum()
    q = _size_distribution(n)
    assert m == 64 * blocks and counts[0] == counts[n] == 0
    sigma = np.sqrt(m * q * (1 - q))
    assert np.all(np.abs(counts - m * q) <= 5 * sigma + 1e-9)


@pytest.mark.parametrize("game", [
    AirportGame([1.0, 1.0, 2.5, 3.0, 4.0, 7.5]),
    UnanimityGame(6, carriers=[[0, 1], [2, 3, 4], [1, 5]], weights=[1.0, 2.0, -0.5]),
    ShoesGame(2, 4),
], ids=lambda g: type(g).__name__)
@pytest.mark.parametrize("center", [0.0, 0.7])
def test_difference_estimator_is_unbiased_by_enumeration(game, center):
    """E[Z u(S) (beta_i - beta_j)] = s_i - s_j exactly, over every coalition and its q-weight."""
    n = game.n_players
    masks, prob = _all_coalitions(n)
    u = game.evaluate(masks)
    x = _difference_samples(masks, u, center)
    expected = prob @ x  # E[X_i]
    s = game.shapley_values()
    np.testing.assert_allclose(expected[:, None] - expected[None, :], s[:, None] - s[None, :],
                               atol=1e-12)
    # the paper's own form, Z u(S) (beta_i - beta_j), with no centring
    a = _normaliser(n) * (prob * u) @ masks
    np.testing.assert_allclose(a[:, None] - a[None, :], s[:, None] - s[None, :], atol=1e-12)
    # the centre of the feasible set is unbiased for the values themselves
    total = game.evaluate(np.ones((1, n), bool))[0] - game.evaluate(np.zeros((1, n), bool))[0]
    np.testing.assert_allclose(expected + total / n, s, atol=1e-12)
    np.testing.assert_allclose(x.sum(axis=1), 0.0, atol=1e-9)


def test_statistics_give_the_sample_moments(rng):
    n, m = 6, 500
    masks = rng.random((m, n)) < 0.4
    u = rng.normal(size=m)
    stats = _GroupTestingStats.of_samples(masks[:200], u[:200])
    stats.merge(_GroupTestingStats.of_samples(masks[200:], u[200:]))
    stats.full, stats.empty = 1.5, -0.3
    mean, var = stats.moments()
    x = _difference_samples(masks, u, 0.6)
    np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(var, x.var(axis=0, ddof=1), rtol=1e-8, atol=1e-12)
    assert stats.count == m


def test_bound_is_the_corrected_formula():
    """Bennett + union bound: log(n(n-1)/delta) / ((1 - q) h(eps / (2 Z r sqrt(n) (1 - q))))."""
    n, eps, delta, r = 12, 0.3, 0.1, 2.0
    z = 2 * sum(1 / k for k in range(1, n))
    q_tot = sum((1 / k + 1 / (n - k)) / z * (1 + 2 * k * (k - n) / (n * (n - 1)))
                for k in range(1, n))
    assert math.isclose(1 - q_tot, 2 / z, rel_tol=1e-12)
    x = eps / (2 * z * r * math.sqrt(n) * (1 - q_tot))
    h = (1 + x) * math.log(1 + x) - x
    expected = math.ceil(math.log(n * (n - 1) / delta) / ((1 - q_tot) * h))
    assert group_testing_samples(n, eps, delta, r) == expected
    assert group_testing_samples(n, eps / 2, delta, r) > 3.9 * expected  # ~ 1 / eps^2


# --------------------------------------------------------------------------- the guarantee
GUARANTEE_GAMES = [
    (SymmetricVotingGame(6), 0.5, 1.0),
    (ShoesGame(2, 3), 0.5, 1.0),  # u in [0, 2], centred at 1
    (AsymmetricVotingGame([1, 1, 2, 3, 5], quota=7), 0.5, 1.0),
    (AirportGame([1.0, 2.0, 2.0, 4.0]), 1.0, 2.0),  # u in [0, 4], centred at 2
]


@pytest.mark.parametrize("game, epsilon, r", GUARANTEE_GAMES, ids=lambda p: repr(p)[:24])
@pytest.mark.parametrize("solution", ["lp", "center"])
def test_values_within_epsilon_with_probability_one_minus_delta(game, epsilon, r, solution):
    """30 seeds with the default budget: at most delta of them may miss epsilon (l2)."""
    delta, seeds = 0.1, 30
    exact = game.shapley_values()
    errors = []
    for seed in range(seeds):
        v = GroupTestingShapleyValuer(utility=game, epsilon=epsilon, delta=delta,
                                      utility_range=r, solution=solution,
                                      random_state=seed).fit()
        assert v.converged_ and v.counts_[0] == v.n_samples_bound_
        errors.append(np.linalg.norm(v.values_ - exact))
    misses = np.count_nonzero(np.array(errors) > epsilon)
    assert misses <= delta * seeds, (misses, max(errors))


def test_a_hundredth_of_the_budget_misses_epsilon():
    """The tolerance is tight enough for the guarantee test to fail with too few samples."""
    game, epsilon = SymmetricVotingGame(6), 0.5
    bound = group_testing_samples(6, epsilon, 0.1)
    errors = [np.linalg.norm(
        GroupTestingShapleyValuer(utility=game, epsilon=epsilon, solution="center",
                                  max_updates=bound // 400, random_state=s).fit().values_
        - game.shapley_values()) for s in range(10)]
    assert np.count_nonzero(np.array(errors) > epsilon) >= 2


@pytest.mark.parametrize("solution", ["lp", "center"])
def test_solution_is_a_point_of_the_feasible_set(solution):
    game, epsilon = UnanimityGame(7, carriers=[[0, 1], [2, 3, 4], [5]]), 0.4
    v = GroupTestingShapleyValuer(utility=game, epsilon=epsilon, max_updates=3000,
                                  solution=solution, random_state=1).fit()
    stats = v._states_[0].moments[0]
    mean, _ = stats.moments()
    n, s = 7, v.values_
    tol = epsilon / (2 * math.sqrt(n))
    diff = (s[:, None] - s[None, :]) - (mean[:, None] - mean[None, :])
    assert np.abs(diff).max() <= tol * (1 + 1e-6) + 1e-9
    assert math.isclose(s.sum(), game(list(range(n))) - game([]), abs_tol=1e-9)
    np.testing.assert_allclose(s, mean + s.sum() / n, atol=2 * tol)
    np.testing.assert_allclose(v.stderr_, np.sqrt(stats.moments()[1] / 3000))


def test_values_identical_for_any_n_jobs():
    game = AsymmetricVotingGame([1, 1, 2, 3, 5, 8, 1, 2], quota=12)
    kw = dict(utility=game, epsilon=0.5, max_updates=2000, random_state=3)
    ref = GroupTestingShapleyValuer(n_jobs=1, **kw).fit()
    two = GroupTestingShapleyValuer(n_jobs=2, **kw).fit()
    with parallel_config(backend="threading", n_jobs=2):
        threads = GroupTestingShapleyValuer(**kw).fit()
    for other in (two, threads):
        np.testing.assert_array_equal(other.values_, ref.values_)
        np.testing.assert_array_equal(other.stderr_, ref.stderr_)
        np.testing.assert_array_equal(other.counts_, ref.counts_)


def test_max_updates_counts_coalitions_exactly():
    v = GroupTestingShapleyValuer(utility=SymmetricVotingGame(10), max_updates=100,
                                  random_state=0).fit()
    assert v.counts_.tolist() == [100] * 10 and not v.converged_
    assert v.n_utility_evaluations_ <= 102  # u(N) and u(empty) too; repeats are cached


def test_warm_start_continues_the_same_samples():
    kw = dict(utility=UnanimityGame(6, carriers=[[0, 1], [2, 3]]), epsilon=0.5,
              solution="center", random_state=5)
    once = GroupTestingShapleyValuer(max_updates=300, **kw).fit()
    warm = GroupTestingShapleyValuer(max_updates=100, warm_start=True, **kw).fit()
    warm.set_params(max_updates=300).fit()
    np.testing.assert_allclose(warm.values_, once.values_, rtol=1e-12, atol=1e-12)
    assert warm.counts_.tolist() == once.counts_.tolist()


def test_the_sampler_serves_shapley_valuer_through_the_one_protocol():
    game = SymmetricVotingGame(7)
    sampler = GroupTestingSampler(epsilon=0.5, solution="center")
    a = ShapleyValuer(utility=game, sampler=sampler, max_updates=640, random_state=2).fit()
    b = GroupTestingShapleyValuer(utility=game, epsilon=0.5, solution="center",
                                  max_updates=640, random_state=2).fit()
    np.testing.assert_array_equal(a.values_, b.values_)


def test_single_player_is_exact():
    v = GroupTestingShapleyValuer(utility=AirportGame([2.5]), random_state=0).fit()
    assert v.values_.tolist() == [2.5] and v.converged_ and v.n_utility_evaluations_ == 2


def test_data_values_are_efficient():
    X, y = make_classification(n_samples=40, n_features=4, random_state=0)
    v = GroupTestingShapleyValuer(LogisticRegression(), epsilon=1.0, max_updates=200,
                                  random_state=0)
    v.fit(X[:20], y[:20], X_val=X[20:], y_val=y[20:])
    full = LogisticRegression().fit(X[:20], y[:20]).score(X[20:], y[20:])
    assert v.values_.shape == (20,) and np.isfinite(v.values_).all()
    assert math.isclose(v.values_.sum(), full - 0.0, abs_tol=1e-7)


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize("params, match", [
    ({"epsilon": 0.0}, r"'epsilon' parameter of GroupTestingShapleyValuer must be a float "
                       r"in the range \(0.0, inf\)\. Got 0.0"),
    ({"delta": 1.0}, r"'delta' parameter of GroupTestingShapleyValuer must be a float in "
                     r"the range \(0.0, 1.0\)\. Got 1.0"),
    ({"utility_range": -1}, r"'utility_range' parameter .* Got -1 instead"),
    ({"solution": "vertex"}, r"'solution' parameter .* Got 'vertex' instead"),
    ({"max_updates": 0}, r"'max_updates' parameter .* Got 0 instead"),
])
def test_bad_valuer_parameters_are_refused(params, match):
    from sklearn.utils._param_validation import InvalidParameterError

    with pytest.raises(InvalidParameterError, match=match):
        GroupTestingShapleyValuer(utility=SymmetricVotingGame(4), **params).fit()


def test_no_budget_is_refused():
    with pytest.raises(ValueError, match="needs a budget.*Got max_updates=None"):
        GroupTestingShapleyValuer(utility=SymmetricVotingGame(4), max_updates=None).fit()


@pytest.mark.parametrize("params, match", [
    ({"epsilon": -0.1}, r"'epsilon' parameter of GroupTestingSampler must be a finite "
                        r"number > 0\. Got -0.1 instead"),
    ({"epsilon": math.inf}, r"Got inf instead"),
    ({"batch_size": 0}, r"batch_size must be an integer >= 1\. Got 0 instead"),
    ({"solution": None}, r"'solution' parameter of GroupTestingSampler must be 'lp' or "
                         r"'center'\. Got None instead"),
])
def test_bad_sampler_parameters_are_refused(params, match):
    with pytest.raises(ValueError, match=match):
        GroupTestingSampler(**params)


@pytest.mark.parametrize("args, match", [
    ((1, 0.1, 0.1), r"n_players must be an integer >= 2\. Got 1 instead"),
    ((5, 0.0, 0.1), r"epsilon must be a number finite and > 0\. Got 0.0 instead"),
    ((5, 0.1, 1.5), r"delta must be a number in \(0, 1\)\. Got 1.5 instead"),
    ((5, 0.1, 0.1, 0), r"utility_range must be a number finite and > 0\. Got 0 instead"),
])
def test_bad_bound_arguments_are_refused(args, match):
    with pytest.raises(ValueError, match=match):
        group_testing_samples(*args)


def test_other_semivalues_are_refused():
    with pytest.raises(ValueError, match="Group testing estimates Shapley values only"):
        BanzhafValuer(utility=SymmetricVotingGame(4), sampler=GroupTestingSampler(),
                      max_updates=10).fit()


def test_failed_solve_raises_with_highs_message_and_advice(monkeypatch):
    def failed(*args, **kwargs):
        return OptimizeResult(status=2, x=None, message="The problem is infeasible. (HiGHS "
                              "Status 8: model_status is Infeasible)")

    monkeypatch.setattr(_group_testing, "linprog", failed)
    v = GroupTestingShapleyValuer(utility=SymmetricVotingGame(4), epsilon=0.01,
                                  max_updates=64, random_state=0)
    with pytest.raises(RuntimeError, match=r"(?s)tolerance epsilon / \(2 sqrt\(n\)\) = 0\.0025"
                       r".*The problem is infeasible.*status 2.*raise epsilon \(got 0\.01\)"):
        v.fit()


def test_enumeration_helper_covers_every_coalition():
    masks, prob = _all_coalitions(5)
    assert masks.shape == (30, 5) and math.isclose(prob.sum(), 1.0)
    assert len({tuple(m) for m in masks}) == 30
    assert all(1 <= m.sum() <= 4 for m in masks)


def test_a_guarantee_needing_a_huge_budget_warns_with_the_count_and_the_way_out():
    v = GroupTestingShapleyValuer(utility=SymmetricVotingGame(4), epsilon=0.1, random_state=0)
    with pytest.warns(UserWarning, match=r"max_updates='auto' draws the 129,148 coalitions "
                                         r"\(utility evaluations\) that the guarantee needs "
                                         r"for epsilon=0.1, delta=0.05 and 4 players"):
        v.set_params(max_time=None).fit()
    assert v.n_samples_bound_ == 129_148
