import warnings

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from skdvl import LOOValuer, ModelUtility, UtilityFitWarning


class CountingLR(LogisticRegression):
    """LogisticRegression that logs the size of each fit (clone deep-copies params, so
    the log is a class attribute)."""

    log: list[int] = []

    def fit(self, X, y):
        type(self).log.append(len(y))
        return super().fit(X, y)


class FailsOnSmall(ClassifierMixin, BaseEstimator):
    def fit(self, X, y):
        if len(y) < 4:
            raise RuntimeError(f"too few rows: {len(y)}")
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[0])


@pytest.fixture
def data():
    X, y = make_classification(n_samples=60, n_features=4, random_state=0)
    return X[:30], y[:30], X[30:], y[30:]


def test_model_utility_is_the_validation_score_of_a_fit_on_the_rows(data):
    X, y, Xv, yv = data
    u = ModelUtility(LogisticRegression(), X, y, Xv, yv, scoring="accuracy")
    rows = [0, 3, 5, 7, 11, 12, 20]
    expected = LogisticRegression().fit(X[rows], y[rows]).score(Xv, yv)
    assert u(rows) == expected


def test_cache_is_keyed_by_the_set_not_the_order(data):
    X, y, Xv, yv = data
    log = CountingLR.log = []
    u = ModelUtility(CountingLR(), X, y, Xv, yv)
    a = u([1, 2, 3, 4, 5, 6])
    b = u(np.array([6, 5, 4, 3, 2, 1]))
    c = u([1, 2, 3, 4, 5])
    assert a == b
    assert len(log) == 2 and u.n_evaluations == 2
    assert c == LogisticRegression().fit(X[[1, 2, 3, 4, 5]], y[[1, 2, 3, 4, 5]]).score(Xv, yv)


def test_empty_and_single_class_coalitions_get_default_score(data):
    X, y, Xv, yv = data
    log = CountingLR.log = []
    u = ModelUtility(CountingLR(), X, y, Xv, yv, default_score=-1.5)
    one_class = np.flatnonzero(y == 1)[:3]
    assert u([]) == -1.5
    assert u(one_class) == -1.5
    assert log == []


def test_failed_fits_get_error_score_and_are_counted(data):
    X, y, Xv, yv = data
    u = ModelUtility(FailsOnSmall(), X, y, Xv, yv, error_score=-7.0)
    both = [int(np.flatnonzero(y == 0)[0]), int(np.flatnonzero(y == 1)[0])]
    assert u(both) == -7.0
    assert u.n_errors == 1 and "too few rows: 2" in u.first_error
    u_raise = ModelUtility(FailsOnSmall(), X, y, Xv, yv, error_score="raise")
    with pytest.raises(RuntimeError, match="too few rows"):
        u_raise(both)


def test_valuer_warns_once_with_the_count_and_first_error(data):
    X, y, Xv, yv = data
    X, y = X[:6], y[:6]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        LOOValuer(FailsOnSmall()).fit(X, y, X_val=Xv, y_val=yv)
    fit_warnings = [w for w in caught if issubclass(w.category, UtilityFitWarning)]
    assert len(fit_warnings) == 0  # every LOO coalition has 5 rows
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        LOOValuer(FailsOnSmall()).fit(X[:4], y[:4], X_val=Xv, y_val=yv)
    fit_warnings = [w for w in caught if issubclass(w.category, UtilityFitWarning)]
    assert len(fit_warnings) == 1
    assert "4 of 5 utility evaluations raised" in str(fit_warnings[0].message)
    assert "too few rows: 3" in str(fit_warnings[0].message)


def test_bad_error_score_is_named(data):
    X, y, Xv, yv = data
    with pytest.raises(ValueError, match="error_score must be 'raise', a number or None. "
                                         "Got 'ignore'"):
        ModelUtility(LogisticRegression(), X, y, Xv, yv, error_score="ignore")


def test_pickled_utility_starts_with_an_empty_cache(data):
    import pickle

    X, y, Xv, yv = data
    u = ModelUtility(LogisticRegression(), X, y, Xv, yv)
    u(list(range(10)))
    back = pickle.loads(pickle.dumps(u))
    assert back._cache == {} and back(list(range(10))) == u(list(range(10)))
