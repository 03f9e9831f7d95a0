import numpy as np
import pytest

from skdvl import ValuationResult
from skdvl.stopping import (
    AbsoluteStandardError,
    MaxSamples,
    MaxTime,
    MaxUpdates,
    MinUpdates,
    Progress,
    RankCorrelation,
    Status,
)


def progress(counts, values=None, variances=None, n_samples=0):
    counts = np.asarray(counts)
    values = np.zeros(len(counts)) if values is None else np.asarray(values, float)
    r = ValuationResult(values, variances=variances, counts=counts)
    return Progress(r, n_samples, 0)


def test_max_and_min_updates_differ_on_uneven_counts():
    p = progress([5, 10])
    assert MaxUpdates(10)(p) == Status.BUDGET
    assert MinUpdates(10)(p) == Status.PENDING
    assert MinUpdates(5)(p) == Status.BUDGET
    assert MaxUpdates(20).completion(p) == 0.5


def test_max_samples():
    assert MaxSamples(3)(progress([1], n_samples=2)) == Status.PENDING
    assert MaxSamples(3)(progress([1], n_samples=3)) == Status.BUDGET


def test_absolute_standard_error_needs_burn_in_and_fraction():
    p = progress([3, 100, 100, 100], variances=[0.0, 1.0, 1.0, 100.0])
    # stderr = [0, 0.1, 0.1, 1.0]; the first has too few updates
    assert AbsoluteStandardError(0.5, burn_in=4)(p) == Status.PENDING
    assert AbsoluteStandardError(0.5, fraction=0.5, burn_in=4)(p) == Status.CONVERGED
    assert AbsoluteStandardError(0.5, fraction=0.5, burn_in=4).completion(p) == 1.0


def test_composition_semantics():
    budget, pending = MaxUpdates(1), MaxUpdates(100)
    conv = AbsoluteStandardError(10.0, burn_in=1)
    p = progress([5, 5], variances=[1.0, 1.0])
    assert (budget | pending)(p) == Status.BUDGET
    assert (pending | budget)(p) == Status.BUDGET
    assert (budget & pending)(p) == Status.PENDING
    assert (budget & conv)(p) == Status.CONVERGED
    assert (pending | conv)(p) == Status.CONVERGED
    assert (~pending)(p) == Status.BUDGET
    assert (~budget)(p) == Status.PENDING
    assert repr(budget & ~pending) == "(MaxUpdates(1) & ~MaxUpdates(100))"


def test_plans_of_budgets_of_updates():
    """``samples_planned``: what each sample adding ``u`` updates to every value takes;
    no plan where a part cannot say (a standard error, a time, a negation)."""
    p = progress([5, 10], variances=[1.0, 1.0], n_samples=3)
    assert MaxUpdates(30).samples_planned(p, 1.0) == 20  # the most updated: 10 to 30
    assert MinUpdates(30).samples_planned(p, 1.0) == 25  # the least: 5 to 30
    assert MaxUpdates(30).samples_planned(p, 3.0) == 7  # ceil(20 / 3)
    assert MaxUpdates(8).samples_planned(p, 1.0) == 0
    assert MaxUpdates(30).samples_planned(p, 0.0) is None
    assert MaxSamples(10).samples_planned(p, 1.0) == 7  # its bound is its plan
    assert (MaxUpdates(30) & MinUpdates(30)).samples_planned(p, 1.0) == 25
    assert (MaxUpdates(30) | MinUpdates(30)).samples_planned(p, 1.0) == 20
    se = AbsoluteStandardError(0.1)
    assert se.samples_planned(p, 1.0) is None
    assert (se | MaxUpdates(30)).samples_planned(p, 1.0) is None
    assert (se & MaxUpdates(30)).samples_planned(p, 1.0) is None
    assert (~MaxUpdates(30)).samples_planned(p, 1.0) is None
    assert MaxTime(10).samples_planned(p, 1.0) is None


def test_max_time_counts_from_reset(monkeypatch):
    import skdvl.stopping as st

    now = [100.0]
    monkeypatch.setattr(st.time, "monotonic", lambda: now[0])
    c = MaxTime(5)
    c.reset()
    now[0] = 104.0
    assert c(progress([1])) == Status.PENDING
    now[0] = 105.5
    assert c(progress([1])) == Status.BUDGET


def test_rank_correlation_stops_when_ranking_settles():
    c = RankCorrelation(rtol=0.01, burn_in=2, interval=1)
    v = np.arange(10.0)
    assert c(progress(np.full(10, 2), v)) == Status.PENDING  # first checkpoint
    assert c(progress(np.full(10, 3), v[::-1])) == Status.PENDING  # reversed ranking
    assert c(progress(np.full(10, 4), v[::-1] + 0.01)) == Status.CONVERGED


@pytest.mark.parametrize("make, match", [
    (lambda: MaxUpdates(0), "n_updates must be an integer >= 1. Got 0"),
    (lambda: MaxSamples(1.5), "n_samples must be an integer >= 1. Got 1.5"),
    (lambda: MaxTime(-1), "seconds must be a number > 0. Got -1"),
    (lambda: AbsoluteStandardError(0), "threshold must be a number > 0. Got 0"),
    (lambda: AbsoluteStandardError(1, fraction=2), "fraction must be in \\(0, 1\\]. Got 2"),
    (lambda: RankCorrelation(rtol=1.5), "rtol must be in \\(0, 1\\). Got 1.5"),
])
def test_bad_arguments_are_named(make, match):
    with pytest.raises(ValueError, match=match):
        make()
