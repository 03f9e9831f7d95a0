"""How the engine cuts sampling into parallel tasks (issue 25, item 3).

With ``n_jobs > 1`` a lockstep sampler on a batched utility gets tasks that are each one
lockstep group, a round (ending where the criterion is expected to stop) cut evenly
among the workers: never the one-block tasks that batch poorly. The values, and where
a budget ends, are those of ``n_jobs=1`` bitwise, under loky and under threads.
"""

import numpy as np
import pytest
from joblib import parallel_config
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

import skdvl.sampling._engine as engine
import skdvl.sampling._engine_plan as engine_plan
from skdvl import ShapleyValuer
from skdvl.sampling._permutation import PermutationSampler
from skdvl.stopping import AbsoluteStandardError, MaxSamples, MaxUpdates


@pytest.fixture(scope="module")
def noisy_cancer():
    X, y = load_breast_cancer(return_X_y=True)
    idx = np.random.default_rng(0).permutation(len(y))[:100]
    X, y = StandardScaler().fit_transform(X[idx]), y[idx].copy()
    y[:5] = 1 - y[:5]
    return X[:40], y[:40], X[40:], y[40:]


def _tmc(data, seed, **kw):
    X, y, X_val, y_val = data
    params = {"sampler": "permutation", "truncation": 0.01, "random_state": seed, **kw}
    if "stopping" not in params:
        params.setdefault("max_updates", 40)
    v = ShapleyValuer(LogisticRegression(), scoring="accuracy", **params)
    return v.fit(X, y, X_val=X_val, y_val=y_val)


def _groups(monkeypatch):
    """Record the blocks of each lockstep call (in this process: threading backend)."""
    sizes = []
    original = PermutationSampler.run_blocks

    def run_blocks(self, ev, items, weights):
        sizes.append(len(items))
        return original(self, ev, items, weights)

    monkeypatch.setattr(PermutationSampler, "run_blocks", run_blocks)
    return sizes


@pytest.mark.parametrize("start, end", [(0, 100), (2, 100), (0, 2), (0, 3), (5, 1005),
                                        (7, 8), (0, 65)])
@pytest.mark.parametrize("n_workers", [2, 3])
def test_a_round_is_cut_into_even_whole_groups(start, end, n_workers):
    pool = engine._Pool(n_workers, lockstep=True)
    pool.n_workers = n_workers
    sizes, block = [], start
    while block < end:
        sizes.append(pool.task_size(block, start, end))
        block += sizes[-1]
    assert block == end and min(sizes) >= 1
    assert max(sizes) <= engine._TASK_BLOCKS
    assert max(sizes) - min(sizes) <= 1  # no short task at the end keeps a worker waiting
    if end - start >= n_workers:
        assert len(sizes) % n_workers == 0


def test_a_task_of_a_round_whose_end_moved_ends_on_the_new_cut():
    pool = engine._Pool(2, lockstep=True)
    pool.n_workers = 2
    assert pool.task_size(10, 0, 30) == 5  # the cuts of 0..30 are 15 and 30
    assert pool.task_size(0, 0, 200) == 50  # 4 tasks: 200 blocks need more than 2
    assert pool.task_size(0, 0, None) == pool.timed  # no end known: sized by time


def test_tasks_of_a_budget_are_whole_groups_shared_by_the_workers(noisy_cancer, seed,
                                                                  monkeypatch):
    sizes = _groups(monkeypatch)
    with parallel_config(backend="threading"):
        v = _tmc(noisy_cancer, seed, stopping=MaxSamples(100), n_jobs=2)
    assert np.all(v.counts_ == 100)
    assert sorted(sizes) == [50, 50]  # each task is one lockstep group


def test_a_budget_of_updates_plans_whole_groups_from_the_first_block(noisy_cancer, seed,
                                                                     monkeypatch):
    """``max_updates`` tells no samples left, but a permutation adds one update to every
    value: its plan (100 permutations) cuts the work into whole groups from the start,
    with no first block drawn alone."""
    sizes = _groups(monkeypatch)
    with parallel_config(backend="threading"):
        v = _tmc(noisy_cancer, seed, max_updates=100, n_jobs=2)
    assert np.all(v.counts_ == 100)
    assert sorted(sizes) == [50, 50]


def test_without_a_plan_the_first_block_is_drawn_alone_then_whole_groups(
        noisy_cancer, seed, monkeypatch):
    """A standard-error criterion cannot plan: its completion after the first block
    (drawn here, as with ``n_jobs=1``) says how many are left, and the rest comes in
    whole groups."""
    sizes = _groups(monkeypatch)
    stopping = AbsoluteStandardError(1e-9, fraction=1.0) | MaxUpdates(100)
    with parallel_config(backend="threading"):
        v = _tmc(noisy_cancer, seed, stopping=stopping, n_jobs=2)
    assert np.all(v.counts_ == 100)
    assert sizes[0] == 1
    assert sorted(sizes[1:]) == [49, 50]


@pytest.mark.parametrize("budget, expected", [(100, [100]), (300, [100, 100, 100]),
                                              (129, [65, 64])])
def test_here_a_planned_budget_comes_in_as_few_even_groups_as_hold_it(
        noisy_cancer, seed, monkeypatch, budget, expected):
    """With ``n_jobs=1`` the blocks of a budget of updates are walked in even groups of
    at most ``_GROUP_BLOCKS`` (a group of a few walks costs nearly the Newton rounds of
    a full one): never the first block alone nor a short group at the end."""
    sizes = _groups(monkeypatch)
    v = _tmc(noisy_cancer, seed, max_updates=budget, truncation=None)
    assert np.all(v.counts_ == budget)
    assert sizes == expected


def test_groups_are_bounded_by_what_the_walks_hold(noisy_cancer, seed, monkeypatch):
    """``_GROUP_BYTES`` over the utility's ``walk_bytes`` bounds a group, but never
    below ``_LOCKSTEP_BLOCKS`` blocks."""
    sizes = _groups(monkeypatch)
    monkeypatch.setattr(engine_plan, "_GROUP_BYTES", 1)
    v = _tmc(noisy_cancer, seed, max_updates=100, truncation=None)
    assert np.all(v.counts_ == 100)
    assert sizes == [25, 25, 25, 25]  # 4 even groups of at most 32


@pytest.mark.parametrize("kw", [{"max_updates": 100, "truncation": None},
                                {"max_updates": 70},
                                {"sampler": "antithetic", "max_updates": 45},
                                {"stopping": MaxUpdates(60) & MaxSamples(50)}])
def test_the_plan_changes_no_value(noisy_cancer, seed, monkeypatch, kw):
    """Planned groups against the first block alone and groups of 32 (the engine
    before plans): the same values, counts and standard errors, bitwise."""
    planned = _tmc(noisy_cancer, seed, **kw)
    monkeypatch.setattr(engine_plan, "_blocks_planned", lambda loop: None)
    monkeypatch.setattr(engine_plan, "_GROUP_BLOCKS", engine_plan._LOCKSTEP_BLOCKS)
    old = _tmc(noisy_cancer, seed, **kw)
    assert np.array_equal(planned.values_, old.values_)
    assert np.array_equal(planned.counts_, old.counts_)
    assert np.array_equal(planned.stderr_, old.stderr_, equal_nan=True)


CRITERIA = {
    "max_updates": {"max_updates": 70},
    "samples": {"stopping": MaxSamples(45)},
    "stderr": {"stopping": AbsoluteStandardError(0.02, fraction=0.5) | MaxUpdates(300)},
}


@pytest.mark.parametrize("criterion", sorted(CRITERIA))
@pytest.mark.parametrize("truncation", [0.01, None])
def test_values_are_identical_for_any_n_jobs_and_backend(noisy_cancer, seed, criterion,
                                                         truncation):
    kw = {**CRITERIA[criterion], "truncation": truncation}
    one = _tmc(noisy_cancer, seed, n_jobs=1, **kw)
    two = _tmc(noisy_cancer, seed, n_jobs=2, **kw)
    with parallel_config(backend="threading"):
        threads = _tmc(noisy_cancer, seed, n_jobs=2, **kw)
    for other in (two, threads):
        assert np.array_equal(other.values_, one.values_)
        assert np.array_equal(other.counts_, one.counts_)
        assert np.array_equal(other.stderr_, one.stderr_, equal_nan=True)
        assert other.converged_ == one.converged_


@pytest.mark.parametrize("backend", ["loky", "threading"])
def test_a_budget_inside_a_block_ends_exactly_where_it_does_alone(noisy_cancer, seed,
                                                                  backend):
    """Antithetic blocks hold 2 permutations: 45 ends inside the 23rd."""
    kw = {"sampler": "antithetic", "stopping": MaxSamples(45)}
    one = _tmc(noisy_cancer, seed, n_jobs=1, **kw)
    with parallel_config(backend=backend):
        two = _tmc(noisy_cancer, seed, n_jobs=2, **kw)
    assert np.all(two.counts_ == 45)
    assert np.array_equal(two.values_, one.values_)


def test_a_continued_fit_with_two_jobs_continues_where_it_stopped(noisy_cancer, seed):
    one = _tmc(noisy_cancer, seed, n_jobs=1, max_updates=60)
    v = _tmc(noisy_cancer, seed, n_jobs=2, max_updates=25, warm_start=True)
    v.set_params(max_updates=60)
    X, y, X_val, y_val = noisy_cancer
    v.fit(X, y, X_val=X_val, y_val=y_val)
    assert np.all(v.counts_ == 60)
    assert np.array_equal(v.values_, one.values_)


def test_the_workers_evaluators_are_forgotten_after_the_run(noisy_cancer, seed):
    before = set(engine._WORKER_EVALUATORS)
    with parallel_config(backend="threading"):
        _tmc(noisy_cancer, seed, n_jobs=2)
    assert set(engine._WORKER_EVALUATORS) == before


class _Game:
    """A non-additive game evaluated coalition by coalition: tasks are cut by time."""

    n_players = 9

    def __call__(self, subset):
        s = float(np.sum(np.linspace(1.0, 2.0, self.n_players)[np.asarray(subset, int)]))
        return s - 0.05 * s**2


@pytest.mark.filterwarnings("ignore:max_updates=150 coalitions per game was exceeded")
@pytest.mark.parametrize("sampler", ["permutation", "msr"])
@pytest.mark.parametrize("backend", ["loky", "threading"])
def test_values_of_tasks_cut_by_time_are_identical_for_any_n_jobs(seed, sampler, backend):
    from skdvl import BanzhafValuer

    cls = BanzhafValuer if sampler == "msr" else ShapleyValuer
    one = cls(utility=_Game(), sampler=sampler, max_updates=150, random_state=seed).fit()
    with parallel_config(backend=backend):
        two = cls(utility=_Game(), sampler=sampler, max_updates=150, random_state=seed,
                  n_jobs=2).fit()
    assert np.array_equal(two.values_, one.values_)
    assert np.array_equal(two.counts_, one.counts_)
