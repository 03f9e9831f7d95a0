"""No value, standard error or count that was not computed (issue 24, items 2, 3 and 8).

A one-sample standard error is unknown, not 0; a sampler that cannot cover its budget
says so; ``truncation`` is refused under its own name.
"""

import warnings

import numpy as np
import pytest

from skdvl import BanzhafValuer, ShapleyValuer
from skdvl.games import AirportGame, SymmetricVotingGame


def _fit(v):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return v.fit()


@pytest.mark.parametrize("sampler", ["permutation", "uniform", "owen", "stratified"])
def test_one_sample_gives_an_unknown_standard_error_not_zero(sampler):
    v = _fit(ShapleyValuer(utility=AirportGame([1.0, 2, 3, 4, 5]), sampler=sampler,
                           max_updates=1, random_state=0))
    assert np.all(v.counts_ == 1)
    assert np.isnan(v.stderr_).all()
    # two samples: a standard error is computed again, and it is the sample's spread
    v2 = _fit(ShapleyValuer(utility=AirportGame([1.0, 2, 3, 4, 5]), sampler=sampler,
                            max_updates=2, random_state=0))
    assert np.all(v2.counts_ == 2) and np.isfinite(v2.stderr_).all()


def test_msr_one_sample_on_a_side_gives_an_unknown_standard_error():
    from skdvl.sampling import MSRSampler
    from skdvl.stopping import MaxSamples

    v = _fit(BanzhafValuer(utility=SymmetricVotingGame(6), sampler=MSRSampler(batch_size=4),
                           stopping=MaxSamples(3), random_state=1))
    inside = v.result_  # 3 coalitions: some player is in (or out of) exactly one
    assert not np.any((inside.stderr == 0) & (inside.counts > 0))
    assert np.isnan(inside.stderr[np.isfinite(inside.values)]).any()


def test_cross_valuation_keeps_an_unknown_standard_error_unknown():
    from sklearn.datasets import make_classification
    from sklearn.tree import DecisionTreeClassifier

    X, y = make_classification(n_samples=18, n_features=3, n_informative=2,
                               n_redundant=0, random_state=0)
    v = ShapleyValuer(DecisionTreeClassifier(random_state=0), max_updates=1, cv=3,
                      random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v.fit(X, y)
    assert np.isnan(v.stderr_).all()


@pytest.mark.parametrize("bad", [1.0, 1.5, -0.1])
def test_truncation_out_of_range_is_refused_by_its_own_name(bad):
    with pytest.raises(ValueError, match=r"truncation must be a relative tolerance in "
                                         rf"\[0, 1\).*Got {bad!r} instead"):
        ShapleyValuer(utility=SymmetricVotingGame(4), truncation=bad, max_updates=2).fit()
