"""Tests of DataOOBValuer: a hand-written out-of-bag oracle, determinism, errors."""


import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import (
    BaggingClassifier,
    BaggingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression, Ridge

from skdvl.valuation._oob import DataOOBValuer, _oob_moments

# Few members leave some rows never out of bag; that warning has its own test.
pytestmark = pytest.mark.filterwarnings("ignore:.*never out of bag:UserWarning")


@pytest.fixture
def seed():
    return 0


@pytest.fixture
def clf_data(seed):
    X, y = make_classification(
        n_samples=60, n_features=6, n_informative=4, n_classes=3, random_state=seed
    )
    labels = np.array(["ant", "bee", "cat"])  # not 0..K-1: checks label decoding
    return X, labels[y]


@pytest.fixture
def reg_data(seed):
    return make_regression(n_samples=50, n_features=4, noise=5.0, random_state=seed)


def _hand_oob(ensemble, X, y, score):
    """Oracle: loop over members and rows; mean score where the row was not drawn."""
    n = X.shape[0]
    features = getattr(ensemble, "estimators_features_", None)
    totals, counts = np.zeros(n), np.zeros(n)
    for b, (member, drawn) in enumerate(zip(ensemble.estimators_, ensemble.estimators_samples_)):
        cols = np.arange(X.shape[1]) if features is None else features[b]
        for i in range(n):
            if i in set(drawn.tolist()):
                continue
            pred = member.predict(X[i : i + 1][:, cols])[0]
            if hasattr(ensemble, "classes_"):
                pred = ensemble.classes_[int(pred)]
            totals[i] += score(y[i], pred)
            counts[i] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return totals / counts, counts


def test_values_equal_hand_written_oob_loop_classification(clf_data, seed):
    X, y = clf_data
    v = DataOOBValuer(
        LogisticRegression(max_iter=500), n_estimators=7, max_samples=0.8,
        max_features=0.5, random_state=seed,
    ).fit(X, y)
    expected, counts = _hand_oob(v.estimator_, X, y, lambda a, b: float(a == b))
    np.testing.assert_array_equal(v.counts_, counts)
    np.testing.assert_allclose(v.values_, expected, equal_nan=True)


def test_values_equal_hand_written_oob_loop_regression(reg_data, seed):
    X, y = reg_data
    v = DataOOBValuer(Ridge(), n_estimators=6, max_features=3, random_state=seed).fit(X, y)
    assert isinstance(v.estimator_, BaggingRegressor)
    expected, _ = _hand_oob(v.estimator_, X, y, lambda a, b: -((a - b) ** 2))
    np.testing.assert_allclose(v.values_, expected, equal_nan=True)


@pytest.mark.parametrize("forest", [RandomForestClassifier, RandomForestRegressor])
def test_forest_ensemble_used_as_is(forest, clf_data, reg_data, seed):
    X, y = clf_data if forest is RandomForestClassifier else reg_data
    v = DataOOBValuer(forest(n_estimators=8, random_state=seed)).fit(X, y)
    assert isinstance(v.estimator_, forest) and len(v.estimator_.estimators_) == 8
    score = (lambda a, b: float(a == b)) if forest is RandomForestClassifier else (
        lambda a, b: -((a - b) ** 2)
    )
    expected, _ = _hand_oob(v.estimator_, X, y, score)
    np.testing.assert_allclose(v.values_, expected, equal_nan=True)


def test_frozen_fitted_ensemble_is_valued_without_refit(clf_data, seed):
    X, y = clf_data
    fitted = BaggingClassifier(n_estimators=5, random_state=seed).fit(X, y)
    members = list(fitted.estimators_)
    v = DataOOBValuer(FrozenEstimator(fitted)).fit(X, y)
    assert all(a is b for a, b in zip(v.estimator_.estimators_, members))
    expected, _ = _hand_oob(fitted, X, y, lambda a, b: float(a == b))
    np.testing.assert_allclose(v.values_, expected, equal_nan=True)


def test_frozen_ensemble_on_other_data_raises(clf_data, seed):
    X, y = clf_data
    fitted = BaggingClassifier(n_estimators=5, random_state=seed).fit(X, y)
    with pytest.raises(ValueError, match=r"fitted on data other than X \(n_samples=30"):
        DataOOBValuer(FrozenEstimator(fitted)).fit(X[:30], y[:30])


def test_never_out_of_bag_rows_get_nan_and_a_warning(clf_data, seed):
    X, y = clf_data
    with pytest.warns(UserWarning, match=r"rows were never out of bag in any of the 1 "):
        v = DataOOBValuer(n_estimators=1, random_state=seed).fit(X, y)
    never = v.counts_ == 0
    assert never.any() and np.isnan(v.values_[never]).all()
    assert np.isfinite(v.values_[~never]).all()
    assert np.isinf(v.stderr_[never]).all()


def test_noisy_labels_get_lower_values(seed):
    X, y = make_classification(n_samples=300, n_features=5, class_sep=2.0, random_state=seed)
    flipped = np.random.default_rng(seed).random(300) < 0.1
    y_noisy = np.where(flipped, 1 - y, y)
    v = DataOOBValuer(n_estimators=50, random_state=seed).fit(X, y_noisy)
    assert v.values_[flipped].mean() < v.values_[~flipped].mean() - 0.3


def test_stderr_is_sqrt_variance_over_count(clf_data, seed):
    X, y = clf_data
    v = DataOOBValuer(n_estimators=30, random_state=seed).fit(X, y)
    ok = v.counts_ > 0
    np.testing.assert_allclose(
        v.stderr_[ok], np.sqrt(v.result_.variances[ok] / v.counts_[ok])
    )


def test_oob_moments_two_members():
    mean, var, counts = _oob_moments(
        4, [np.array([0, 1]), np.array([1, 2])], [np.array([1.0, 0.0]), np.array([1.0, 3.0])]
    )
    np.testing.assert_allclose(mean, [1.0, 0.5, 3.0, np.nan])
    np.testing.assert_allclose(var, [np.nan, 0.5, np.nan, np.nan])  # one sample: unknown
    np.testing.assert_array_equal(counts, [1, 2, 1, 0])


def test_callable_scoring_receives_original_labels(clf_data, seed):
    X, y = clf_data
    seen = set()

    def score(y_true, y_pred):
        seen.update(np.unique(y_pred).tolist())
        return (y_true == y_pred).astype(float)

    v = DataOOBValuer(n_estimators=10, scoring=score, random_state=seed).fit(X, y)
    ref = DataOOBValuer(n_estimators=10, random_state=seed).fit(X, y)
    assert seen <= {"ant", "bee", "cat"}
    np.testing.assert_array_equal(v.values_, ref.values_)


def test_regression_default_uses_negative_squared_error(reg_data, seed):
    X, y = reg_data
    v = DataOOBValuer(n_estimators=10, random_state=seed).fit(X, y)
    assert isinstance(v.estimator_, BaggingRegressor)
    assert np.nanmax(v.values_) <= 0
    a = DataOOBValuer(n_estimators=10, scoring="neg_absolute_error", random_state=seed)
    assert np.nanmax(a.fit(X, y).values_) <= 0


def test_x_val_is_ignored_with_a_warning(clf_data, seed):
    X, y = clf_data
    with pytest.warns(UserWarning, match="does not use X_val/y_val"):
        DataOOBValuer(n_estimators=5, random_state=seed).fit(X, y, X_val=X, y_val=y)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"n_estimators": 0}, (r"'n_estimators' parameter of DataOOBValuer must be an "
                               r"int in the range \[1, inf\). Got 0 instead")),
        ({"max_samples": 1.5}, r"'max_samples' parameter of DataOOBValuer"),
        ({"scoring": "r2"}, r"'scoring' parameter of DataOOBValuer must be a str among"),
    ],
)
def test_bad_parameters_name_the_parameter(clf_data, params, match):
    X, y = clf_data
    with pytest.raises(ValueError, match=match):
        DataOOBValuer(**params).fit(X, y)


def test_accuracy_on_regression_raises(reg_data):
    X, y = reg_data
    with pytest.raises(ValueError, match="must not be 'accuracy' for a regressor"):
        DataOOBValuer(n_estimators=3, scoring="accuracy").fit(X, y)


def test_scoring_callable_with_wrong_shape_raises(clf_data):
    X, y = clf_data
    with pytest.raises(ValueError, match="must return one score per row"):
        DataOOBValuer(n_estimators=3, scoring=lambda t, p: np.zeros(1)).fit(X, y)


def test_non_predictor_estimator_raises(clf_data):
    from sklearn.cluster import KMeans

    X, y = clf_data
    with pytest.raises(ValueError, match="must be a classifier or a regressor. Got KMeans"):
        DataOOBValuer(KMeans(n_init=1)).fit(X, y)


def test_clone_and_pickle_round_trip(clf_data, seed):
    X, y = clf_data
    v = DataOOBValuer(n_estimators=5, random_state=seed).fit(X, y)
    again = pickle.loads(pickle.dumps(v))
    np.testing.assert_array_equal(again.values_, v.values_)
    np.testing.assert_array_equal(clone(v).fit(X, y).values_, v.values_)
