"""Ctrl-C inside a block keeps every finished evaluation (issue 24, item 1).

A KeyboardInterrupt raised inside the k-th utility call (the first, one in the middle of
a block, the last of a block) must leave a fitted valuer that

- counts exactly the evaluations that finished (``k - 1``),
- uses them: its values equal those of the same valuer stopped by ``MaxSamples(s)``
  without interruption, ``s`` being the samples the interrupted fit reports,
- throws none away: ``s`` is the most samples whose coalitions are all among the
  finished ones (``MaxSamples(s + 1)`` needs more than ``k - 1`` evaluations),
- and is not converged.
"""

import re
import warnings

import numpy as np
import pytest
from joblib import parallel_config

from skdvl import BanzhafValuer, GroupTestingShapleyValuer, LOOValuer, ShapleyValuer
from skdvl.stopping import MaxSamples

N = 7


class Game:
    """A non-additive game (so every sampler's estimate depends on every coalition)."""

    def __init__(self, n=N, interrupt_at=None, batched=False):
        self.n_players = n
        self.w = np.linspace(1.0, 2.0, n)
        self.calls = 0
        self.seen = set()  # the coalitions whose evaluation finished
        self.interrupt_at = interrupt_at
        if batched:
            self.evaluate = self._evaluate

    def _value(self, mask):
        s = float(self.w @ mask)
        return s - 0.05 * s**2

    def _tick(self):
        self.calls += 1
        if self.interrupt_at is not None and self.calls == self.interrupt_at:
            raise KeyboardInterrupt

    def __call__(self, subset):
        mask = np.zeros(self.n_players)
        mask[np.asarray(subset, dtype=int)] = 1
        self._tick()
        self.seen.add(mask.astype(bool).tobytes())
        return self._value(mask)

    def _evaluate(self, masks):
        self._tick()  # one call evaluates the whole batch
        self.seen.update(m.tobytes() for m in masks.astype(bool))
        return np.array([self._value(m) for m in masks.astype(float)])


VALUERS = {
    "permutation": lambda **kw: ShapleyValuer(sampler="permutation", **kw),
    "antithetic": lambda **kw: ShapleyValuer(sampler="antithetic", **kw),
    "uniform": lambda **kw: BanzhafValuer(sampler="uniform", **kw),
    "owen": lambda **kw: ShapleyValuer(sampler="owen", **kw),
    "stratified": lambda **kw: ShapleyValuer(sampler="stratified", **kw),
    "msr": lambda **kw: BanzhafValuer(sampler="msr", **kw),
    "kernel": lambda **kw: ShapleyValuer(sampler="kernel", **kw),
    "leverage": lambda **kw: ShapleyValuer(sampler="leverage", **kw),
    "svarm": lambda **kw: ShapleyValuer(sampler="svarm", **kw),
    "regression_msr": lambda **kw: ShapleyValuer(sampler="regression_msr", **kw),
    "group_testing": lambda **kw: GroupTestingShapleyValuer(**kw),
}


def _interrupted(make, k, batched=False, n_jobs=1):
    game = Game(interrupt_at=k, batched=batched)
    v = make(utility=game, max_updates=400, random_state=0, n_jobs=n_jobs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        v.fit()
    (message,) = [str(w.message) for w in caught if "Interrupted" in str(w.message)]
    samples = int(re.search(r"after (\d+) samples", message).group(1))
    evals = int(re.search(r"\((\d+) utility evaluations\)", message).group(1))
    return v, samples, evals, game


def _stopped(make, samples, batched=False):
    game = Game(batched=batched)
    v = make(utility=game, stopping=MaxSamples(samples), random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v.fit()
    return v, game


def _check(make, k, batched):
    v, s, evals, game = _interrupted(make, k, batched)
    finished = game.calls - 1  # the k-th call raised
    assert not v.converged_
    if not batched:
        assert v.n_utility_evaluations_ == evals == finished
    if s == 0:
        assert np.isnan(v.values_).all() or np.all(v.counts_ == 0)
    else:
        ref, ref_game = _stopped(make, s, batched)
        np.testing.assert_allclose(v.values_, ref.values_, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(v.counts_, ref.counts_)
        assert ref_game.calls <= finished
    # nothing finished was thrown away: one more sample needs a coalition that did not
    # finish (samples are kept in their order: a block is cut where the interrupt landed)
    _, more = _stopped(make, s + 1, batched)
    assert not more.seen <= game.seen


@pytest.mark.parametrize("name", sorted(VALUERS))
@pytest.mark.parametrize("k", [1, 30, 64])
def test_an_interrupt_inside_a_block_keeps_the_finished_coalitions(name, k):
    _check(VALUERS[name], k, batched=False)


@pytest.mark.parametrize("name", ["msr", "kernel", "svarm", "permutation", "owen"])
@pytest.mark.parametrize("k", [1, 3])
def test_on_a_batched_utility_the_finished_calls_are_kept(name, k):
    _check(VALUERS[name], k, batched=True)


@pytest.mark.parametrize("name", ["msr", "permutation", "kernel"])
def test_with_two_threads_what_is_counted_is_what_is_used(name):
    make = VALUERS[name]
    with parallel_config(backend="threading"):
        v, s, evals, game = _interrupted(make, 45, n_jobs=2)
    assert not v.converged_
    assert v.n_utility_evaluations_ == evals
    # the tasks in flight are counted too (the other thread may finish its own later)
    assert 44 - 2 * 64 <= evals <= game.calls - 1
    if s > 0:
        ref, ref_game = _stopped(make, s)
        np.testing.assert_allclose(v.values_, ref.values_, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(v.counts_, ref.counts_)


def test_an_interrupted_enumeration_keeps_the_coalitions_of_the_task_in_flight():
    game = Game(interrupt_at=40)
    v = ShapleyValuer(utility=game, sampler="exact", warm_start=True)
    with pytest.warns(RuntimeWarning, match="39 of 128 coalitions were evaluated"):
        v.fit()
    assert v.n_utility_evaluations_ == 39 and np.isnan(v.values_).all()
    game.interrupt_at = None
    v.fit()  # warm start: only the 89 coalitions left are evaluated
    assert game.calls == 40 + 89
    exact = ShapleyValuer(utility=Game(), sampler="exact").fit()
    np.testing.assert_allclose(v.values_, exact.values_, rtol=0, atol=1e-12)


def test_an_interrupted_leave_one_out_keeps_the_rows_evaluated():
    v = LOOValuer(utility=Game(interrupt_at=5))
    with pytest.warns(RuntimeWarning, match="4 of 8 coalitions"):
        v.fit()
    full = LOOValuer(utility=Game()).fit()
    np.testing.assert_array_equal(v.values_[:3], full.values_[:3])
    assert np.isnan(v.values_[3:]).all()


# ------------------------------------------------------------------ a model's k-th fit
class _InterruptedTree:
    """A decision tree whose ``interrupt_at``-th fit (counted over all clones) raises."""

    fits = 0
    interrupt_at = None

    def __new__(cls, *args, **kwargs):  # a scikit-learn estimator made on the fly
        from sklearn.tree import DecisionTreeClassifier

        class Tree(DecisionTreeClassifier):
            def fit(self, X, y, sample_weight=None, check_input=True):
                _InterruptedTree.fits += 1
                if _InterruptedTree.fits == _InterruptedTree.interrupt_at:
                    raise KeyboardInterrupt
                return super().fit(X, y, sample_weight=sample_weight)

        return Tree(max_depth=2, random_state=0)


def _tree_data():
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=40, n_features=4, n_informative=3, n_redundant=0,
                               random_state=0)
    return X[:24], y[:24], X[24:], y[24:]


@pytest.mark.parametrize("cls, sampler", [(BanzhafValuer, "msr"), (ShapleyValuer, "kernel"),
                                          (ShapleyValuer, "permutation")])
def test_an_interrupted_fit_of_a_model_is_not_counted_and_the_finished_ones_are_used(
        cls, sampler):
    X, y, Xv, yv = _tree_data()
    # past the kernel's border strata (2 n + 2 = 50 coalitions, all needed by its first
    # sample), in the middle of a block
    _InterruptedTree.fits, _InterruptedTree.interrupt_at = 0, 80
    v = cls(_InterruptedTree(), sampler=sampler, max_updates=300, random_state=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        v.fit(X, y, X_val=Xv, y_val=yv)
    (message,) = [str(w.message) for w in caught if "Interrupted" in str(w.message)]
    s = int(re.search(r"after (\d+) samples", message).group(1))
    assert not v.converged_
    # 79 fits finished; a coalition with one class is scored without a fit
    assert v.n_utility_evaluations_ >= 79 and s > 0
    _InterruptedTree.interrupt_at = None
    ref = cls(_InterruptedTree(), sampler=sampler, stopping=MaxSamples(s), random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref.fit(X, y, X_val=Xv, y_val=yv)
    np.testing.assert_allclose(v.values_, ref.values_, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(v.counts_, ref.counts_)
    assert ref.n_utility_evaluations_ <= v.n_utility_evaluations_
