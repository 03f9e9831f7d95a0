"""DataOOBValuer never gives silently wrong values: targets, parameter domains,
interruption, warnings from the members' fits, progress."""

import warnings

import numpy as np
import pytest
import sklearn.ensemble._forest as forest_module
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import (
    BaggingClassifier,
    BaggingRegressor,
    RandomForestClassifier,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.tree import DecisionTreeClassifier

from skdvl.valuation._oob import DataOOBValuer

pytestmark = pytest.mark.filterwarnings("ignore:.*never out of bag:UserWarning")


@pytest.fixture
def seed():
    return 0


@pytest.fixture
def clf_data(seed):
    return make_classification(n_samples=60, n_features=6, n_informative=4,
                               random_state=seed)


def _oracle_values(ensemble, X, y, score):
    """Mean score of each row over the members of ``ensemble`` that did not draw it."""
    n = X.shape[0]
    totals, counts = np.zeros(n), np.zeros(n)
    features = ensemble.estimators_features_
    for b, (member, drawn) in enumerate(zip(ensemble.estimators_,
                                            ensemble.estimators_samples_)):
        out = np.setdiff1d(np.arange(n), drawn)
        pred = member.predict(X[out][:, features[b]])
        if hasattr(ensemble, "classes_"):
            pred = ensemble.classes_[pred.astype(int)]
        totals[out] += score(y[out], pred)
        counts[out] += 1
    with np.errstate(invalid="ignore"):
        return totals / counts


# --------------------------------------------------------------------------------------
# Targets.
# --------------------------------------------------------------------------------------


def test_integer_target_with_many_values_warns_naming_task(seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(120, 3))
    y = rng.integers(0, 100, 120)  # a 0-100 score, about 70 distinct values
    with pytest.warns(UserWarning, match=r"distinct integer values.*pass task='regression'"):
        v = DataOOBValuer(n_estimators=5, random_state=seed).fit(X, y)
    assert v.task_ == "classification" and isinstance(v.estimator_, BaggingClassifier)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*distinct integer values")
        for task, kind in (("regression", BaggingRegressor),
                           ("classification", BaggingClassifier)):
            v = DataOOBValuer(n_estimators=5, task=task, random_state=seed).fit(X, y)
            assert isinstance(v.estimator_, kind) and v.task_ == task


@pytest.mark.parametrize(
    "params, y, match",
    [
        ({"estimator": LogisticRegression()}, "continuous",
         r"valuing for classification, but y is continuous"),
        ({"task": "classification"}, "continuous",
         r"valuing for classification, but y is continuous"),
        ({}, "single", r"needs at least 2 classes in y.*got only 1"),
        ({"estimator": LogisticRegression()}, "single", r"needs at least 2 classes in y"),
        ({}, "mixed", r"y mixes label types \(int, str\)"),
        ({"task": "regression"}, "strings", r"task='regression' but y holds non-numeric"),
        ({"estimator": Ridge()}, "strings", r"task='regression' but y holds non-numeric"),
    ],
)
def test_targets_a_task_cannot_use_raise_naming_y(clf_data, params, y, match):
    X, labels = clf_data
    targets = {
        "continuous": np.linspace(0.1, 5.3, 60),
        "single": np.ones(60, dtype=int),
        "mixed": np.array([1 if c else "a" for c in labels], dtype=object),
        "strings": np.array(["ant", "bee"])[labels],
    }
    with pytest.raises(ValueError, match=match):
        DataOOBValuer(n_estimators=3, **params).fit(X, targets[y])


@pytest.mark.parametrize(
    "estimator, task, match",
    [
        (LogisticRegression(), "regression",
         r"'task' parameter of DataOOBValuer is 'regression', but the estimator "
         r"LogisticRegression does classification"),
        (Ridge(), "classification",
         r"'task' parameter of DataOOBValuer is 'classification', but the estimator "
         r"Ridge does regression"),
        (RandomForestClassifier(n_estimators=3), "regression",
         r"estimator RandomForestClassifier does classification"),
    ],
)
def test_task_contradicting_the_estimator_raises(clf_data, estimator, task, match):
    X, y = clf_data
    with pytest.raises(ValueError, match=match):
        DataOOBValuer(estimator, n_estimators=3, task=task).fit(X, y)


def test_explicit_estimator_decides_the_task(clf_data, seed):
    X, y = clf_data
    y_float = y.astype(float) * 2.5  # integral floats: labels for 'auto', fine for Ridge
    v = DataOOBValuer(Ridge(), n_estimators=4, random_state=seed).fit(X, y_float)
    assert v.task_ == "regression" and isinstance(v.estimator_, BaggingRegressor)
    v = DataOOBValuer(LogisticRegression(), n_estimators=4, task="classification",
                      random_state=seed).fit(X, y)
    assert v.task_ == "classification"


# --------------------------------------------------------------------------------------
# Parameter domains.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, match",
    [
        ({"max_samples": 1000}, r"'max_samples' parameter of DataOOBValuer must be <= "
                                r"n_samples=60.*Got 1000 instead"),
        ({"max_samples": 0.001}, r"'max_samples' .* at least one of the n_samples=60 rows"
                                 r".*Got 0.001 instead"),
        ({"max_features": 10}, r"'max_features' parameter of DataOOBValuer must be <= "
                               r"n_features=6\. Got 10 instead"),
        ({"max_features": 0.01}, r"'max_features' .* at least one of the n_features=6 "
                                 r"features.*Got 0.01 instead"),
        ({"max_samples": np.nan}, r"'max_samples' parameter of DataOOBValuer.*Got nan"),
        ({"n_jobs": 0}, r"'n_jobs' parameter of DataOOBValuer must be .*Got 0 instead"),
        ({"task": "ranking"}, r"'task' parameter of DataOOBValuer must be a str among"),
        ({"verbose": -1}, r"'verbose' parameter of DataOOBValuer.*Got -1 instead"),
        ({"n_estimators": 2.5}, r"'n_estimators' parameter of DataOOBValuer.*Got 2.5"),
    ],
)
def test_parameters_outside_their_domain_raise(clf_data, params, match):
    X, y = clf_data
    with pytest.raises(ValueError, match=match):
        DataOOBValuer(n_estimators=3, **params).fit(X, y) if "n_estimators" not in params \
            else DataOOBValuer(**params).fit(X, y)


# --------------------------------------------------------------------------------------
# Growing the ensemble by warm start, and interruption.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_grown_ensemble_equals_a_single_fit(clf_data, seed, n_jobs):
    X, y = clf_data
    v = DataOOBValuer(n_estimators=45, max_features=0.5, random_state=seed,
                      n_jobs=n_jobs).fit(X, y)
    one_shot = BaggingClassifier(DecisionTreeClassifier(), n_estimators=45,
                                 max_features=0.5, random_state=seed).fit(X, y)
    assert len(v.estimator_.estimators_) == 45
    for a, b in zip(v.estimator_.estimators_samples_, one_shot.estimators_samples_):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(v.estimator_.estimators_features_, one_shot.estimators_features_):
        np.testing.assert_array_equal(a, b)
    expected = _oracle_values(one_shot, X, y, lambda t, p: (t == p).astype(float))
    np.testing.assert_allclose(v.values_, expected, equal_nan=True)


class _InterruptingTree(DecisionTreeClassifier):
    """A tree whose fit raises KeyboardInterrupt at the STOP-th call (counted in CALLS)."""

    CALLS = [0]
    STOP = [0]

    def fit(self, X, y, sample_weight=None, check_input=True):
        type(self).CALLS[0] += 1
        if type(self).CALLS[0] == type(self).STOP[0]:
            raise KeyboardInterrupt
        return super().fit(X, y, sample_weight=sample_weight, check_input=check_input)


@pytest.mark.parametrize("stop, kept", [(7, 6), (2, 0), (40, 38)])
def test_interrupt_keeps_the_fitted_members(clf_data, seed, stop, kept):
    # 40 members are grown 2 at a time; the STOP-th fit raises, so the increments
    # before it are kept: 6 members for stop=7, none for stop=2 (a re-raise).
    X, y = clf_data
    _InterruptingTree.CALLS[0], _InterruptingTree.STOP[0] = 0, stop
    v = DataOOBValuer(_InterruptingTree(), n_estimators=40, random_state=seed)
    if stop <= 2:
        with pytest.raises(KeyboardInterrupt):
            v.fit(X, y)
        return
    with pytest.warns(RuntimeWarning, match=rf"^Interrupted: DataOOBValuer fitted {kept} "
                                            rf"of 40 ensemble members"):
        v.fit(X, y)
    budget = DataOOBValuer(DecisionTreeClassifier(), n_estimators=kept,
                           random_state=seed).fit(X, y)
    assert len(v.estimator_.estimators_) == len(v.estimator_.estimators_samples_) == kept
    np.testing.assert_array_equal(v.counts_, budget.counts_)
    np.testing.assert_array_equal(v.values_, budget.values_)
    expected = _oracle_values(budget.estimator_, X, y, lambda t, p: (t == p).astype(float))
    np.testing.assert_allclose(v.values_, expected, equal_nan=True)


def test_interrupt_of_a_forest_keeps_its_fitted_trees(clf_data, seed, monkeypatch):
    X, y = clf_data
    real = forest_module._parallel_build_trees
    calls = [0]

    def build(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 9:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(forest_module, "_parallel_build_trees", build)
    with pytest.warns(RuntimeWarning, match=r"^Interrupted: DataOOBValuer fitted 8 of 40"):
        v = DataOOBValuer(RandomForestClassifier(n_estimators=40, random_state=seed)).fit(X, y)
    monkeypatch.setattr(forest_module, "_parallel_build_trees", real)
    budget = DataOOBValuer(RandomForestClassifier(n_estimators=8, random_state=seed)).fit(X, y)
    np.testing.assert_array_equal(v.values_, budget.values_)
    np.testing.assert_array_equal(v.counts_, budget.counts_)


# --------------------------------------------------------------------------------------
# Warnings from the members' fits, and progress.
# --------------------------------------------------------------------------------------


def test_member_warnings_are_summarised_once_per_fit(seed):
    X, y = make_classification(n_samples=80, n_features=8, random_state=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        DataOOBValuer(LogisticRegression(max_iter=1), n_estimators=30,
                      random_state=seed).fit(X, y)
    convergence = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert len(convergence) == 1
    message = str(convergence[0].message)
    assert message.startswith("Fitting the ensemble of DataOOBValuer (30 members) raised "
                              "30 warnings (30 ConvergenceWarning). The first: "
                              "ConvergenceWarning: lbfgs failed to converge")


def test_member_warnings_respect_the_users_filters(seed):
    X, y = make_classification(n_samples=80, n_features=8, random_state=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        DataOOBValuer(LogisticRegression(max_iter=1), n_estimators=5,
                      random_state=seed).fit(X, y)
    assert not [w for w in caught if issubclass(w.category, ConvergenceWarning)]


def test_verbose_shows_a_progress_bar_and_keeps_values(clf_data, seed, capsys):
    X, y = clf_data
    quiet = DataOOBValuer(n_estimators=12, random_state=seed).fit(X, y)
    assert "DataOOBValuer members" not in capsys.readouterr().err
    loud = DataOOBValuer(n_estimators=12, random_state=seed, verbose=1).fit(X, y)
    assert "DataOOBValuer members" in capsys.readouterr().err
    np.testing.assert_array_equal(quiet.values_, loud.values_)


def test_regression_is_grown_and_valued_like_a_single_fit(seed):
    X, y = make_regression(n_samples=50, n_features=4, noise=5.0, random_state=seed)
    v = DataOOBValuer(Ridge(), n_estimators=33, random_state=seed).fit(X, y)
    one_shot = BaggingRegressor(Ridge(), n_estimators=33, random_state=seed).fit(X, y)
    expected = _oracle_values(one_shot, X, y, lambda t, p: -((t - p) ** 2))
    np.testing.assert_allclose(v.values_, expected, equal_nan=True)
