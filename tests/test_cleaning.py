"""Tests of DataCleaner and CleanedEstimator: caching, pipelines, pandas, errors."""


import numpy as np
import pandas as pd
import pytest
from imblearn.pipeline import Pipeline as ImbPipeline
from sklearn.base import BaseEstimator, is_classifier, is_regressor
from sklearn.datasets import make_classification, make_regression
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from skdvl.cleaning import CleanedEstimator, DataCleaner, _default_valuer, _rows_to_keep
from skdvl.valuation._oob import DataOOBValuer

pytestmark = pytest.mark.filterwarnings("ignore:.*never out of bag:UserWarning")

#: Number of FirstFeatureValuer.fit calls; reset by the ``calls`` fixture.
CALLS = [0]


class FirstFeatureValuer(BaseEstimator):
    """A tiny valuer for tests: a row's value is its first feature (times ``sign``)."""

    def __init__(self, sign=1.0):
        self.sign = sign

    def fit(self, X, y):
        CALLS[0] += 1
        self.values_ = self.sign * np.asarray(X, dtype=float)[:, 0]
        return self


@pytest.fixture
def calls():
    CALLS[0] = 0
    return CALLS


@pytest.fixture
def seed():
    return 0


@pytest.fixture
def noisy_data(seed):
    X, y = make_classification(
        n_samples=120, n_features=5, n_informative=3, class_sep=1.5, random_state=seed
    )
    flipped = np.random.default_rng(seed).random(len(y)) < 0.1
    return X, np.where(flipped, 1 - y, y), flipped


def _grid(cleaner, fractions, cv):
    pipe = ImbPipeline(
        [("scale", StandardScaler()), ("datacleaner", cleaner), ("clf", LogisticRegression())]
    )
    return GridSearchCV(pipe, {"datacleaner__fraction": fractions}, cv=cv)


def test_grid_search_over_fraction_values_each_fold_once(noisy_data, calls, tmp_path):
    X, y, _ = noisy_data
    cleaner = DataCleaner(FirstFeatureValuer(), memory=str(tmp_path))
    search = _grid(cleaner, [0.0, 0.05, 0.1, 0.2], KFold(3)).fit(X, y)
    assert search.best_params_["datacleaner__fraction"] in (0.0, 0.05, 0.1, 0.2)
    # 3 training folds + the refit on all rows; fraction=0 values nothing
    assert calls[0] == 3 + 1


def test_grid_search_without_memory_values_once_per_fraction_and_fold(noisy_data, calls):
    X, y, _ = noisy_data
    _grid(DataCleaner(FirstFeatureValuer()), [0.05, 0.1], KFold(3)).fit(X, y)
    assert calls[0] == 2 * 3 + 1


def test_grid_search_with_data_oob_picks_a_fraction(noisy_data, seed, tmp_path):
    X, y, _ = noisy_data
    cleaner = DataCleaner(DataOOBValuer(n_estimators=20, random_state=seed), memory=tmp_path)
    search = _grid(cleaner, [0.0, 0.1], 3).fit(X, y)
    assert search.best_params_["datacleaner__fraction"] in (0.0, 0.1)
    kept = search.best_estimator_["datacleaner"].sample_indices_
    assert kept.shape[0] == (120 if search.best_params_["datacleaner__fraction"] == 0 else 108)


def test_fit_resample_drops_the_lowest_fraction(calls):
    X = np.c_[np.arange(10.0)[::-1], np.ones(10)]  # values 9, 8, ..., 0
    y = np.arange(10) % 2
    X_kept, y_kept = DataCleaner(FirstFeatureValuer(), fraction=0.3).fit_resample(X, y)
    np.testing.assert_array_equal(X_kept[:, 0], np.arange(10.0)[::-1][:7])
    np.testing.assert_array_equal(y_kept, y[:7])


def test_threshold_drops_rows_below_it_and_ignores_fraction():
    X = np.c_[np.arange(10.0), np.ones(10)]
    y = np.arange(10) % 2
    cleaner = DataCleaner(FirstFeatureValuer(), fraction=0.5, threshold=2.5).fit(X, y)
    np.testing.assert_array_equal(cleaner.sample_indices_, np.arange(3, 10))


def test_threshold_dropping_everything_raises():
    X = np.c_[np.arange(10.0), np.ones(10)]
    with pytest.raises(ValueError, match="would drop all 10 rows"):
        DataCleaner(FirstFeatureValuer(), threshold=100.0).fit(X, np.arange(10) % 2)


def test_fraction_zero_skips_valuation(noisy_data, calls):
    X, y, _ = noisy_data
    X_kept, _ = DataCleaner(FirstFeatureValuer(), fraction=0.0).fit_resample(X, y)
    cleaner = DataCleaner(FirstFeatureValuer(), fraction=0.0).fit(X, y)
    assert calls[0] == 0 and cleaner.values_ is None
    np.testing.assert_array_equal(X_kept, X)


def test_rows_to_keep_never_drops_nan_and_breaks_ties_by_position():
    values = np.array([np.nan, 1.0, 0.0, 0.0, np.nan, 2.0])
    np.testing.assert_array_equal(_rows_to_keep(values, 0.2, None), [0, 1, 3, 4, 5])
    np.testing.assert_array_equal(_rows_to_keep(values, 0.0, 0.5), [0, 1, 4, 5])
    assert _rows_to_keep(np.zeros(100), 0.29, None).shape[0] == 71  # floor(29.0), not 28


def test_pandas_in_pandas_out(noisy_data, seed):
    X, y, _ = noisy_data
    index = pd.Index(np.arange(len(y)) * 10 + 7)
    df = pd.DataFrame(X, index=index, columns=list("abcde"))
    ys = pd.Series(y, index=index, name="target")
    cleaner = DataCleaner(DataOOBValuer(n_estimators=20, random_state=seed), fraction=0.1)
    X_kept, y_kept = cleaner.fit_resample(df, ys)
    assert isinstance(X_kept, pd.DataFrame) and list(X_kept.columns) == list("abcde")
    assert isinstance(y_kept, pd.Series) and y_kept.name == "target"
    assert X_kept.index.equals(index[cleaner.sample_indices_])
    assert isinstance(cleaner.values_, pd.Series) and cleaner.values_.index.equals(index)
    assert list(cleaner.feature_names_in_) == list("abcde")


def test_flipped_labels_are_dropped_first(noisy_data, seed):
    X, y, flipped = noisy_data
    cleaner = DataCleaner(DataOOBValuer(n_estimators=50, random_state=seed), fraction=0.1)
    cleaner.fit(X, y)
    dropped = np.setdiff1d(np.arange(len(y)), cleaner.sample_indices_)
    assert flipped[dropped].mean() > 0.5  # 10 % of rows are flipped


def test_regression_targets_are_cleaned(seed):
    X, y = make_regression(n_samples=150, n_features=4, noise=1.0, random_state=seed)
    corrupted = np.zeros(150, dtype=bool)
    corrupted[::10] = True
    y = np.where(corrupted, y + 8 * y.std(), y)
    cleaner = DataCleaner(DataOOBValuer(n_estimators=50, random_state=seed), fraction=0.1)
    X_kept, _ = cleaner.fit_resample(X, y)
    assert X_kept.shape == (135, 4)
    assert corrupted[cleaner.sample_indices_].sum() <= 3  # 15 corrupted, at most 3 kept
    model = CleanedEstimator(LinearRegression(), cleaner).fit(X, y)
    assert is_regressor(model)
    assert model.score(X[~corrupted], y[~corrupted]) > 0.95


def test_cleaned_estimator_keeps_the_same_rows_as_data_cleaner(noisy_data, seed):
    X, y, _ = noisy_data
    cleaner = DataCleaner(DataOOBValuer(n_estimators=20, random_state=seed), fraction=0.15)
    imb = ImbPipeline(
        [("scale", StandardScaler()), ("clean", cleaner), ("clf", LogisticRegression())]
    ).fit(X, y)
    plain = make_pipeline(StandardScaler(), CleanedEstimator(LogisticRegression(), cleaner))
    plain.fit(X, y)
    np.testing.assert_array_equal(plain[-1].sample_indices_, imb["clean"].sample_indices_)
    np.testing.assert_allclose(plain.predict_proba(X), imb.predict_proba(X))
    assert plain.score(X, y) == imb.score(X, y)


def test_cleaned_estimator_delegates_methods_and_classes(noisy_data):
    X, y, _ = noisy_data
    model = CleanedEstimator(LogisticRegression(), DataCleaner(FirstFeatureValuer()))
    assert is_classifier(model)
    model.fit(X, y)
    np.testing.assert_array_equal(model.classes_, [0, 1])
    np.testing.assert_array_equal(model.predict(X), model.estimator_.predict(X))
    np.testing.assert_allclose(model.decision_function(X), model.estimator_.decision_function(X))
    np.testing.assert_allclose(model.predict_proba(X), model.estimator_.predict_proba(X))
    svc = CleanedEstimator(LinearSVC(), DataCleaner(FirstFeatureValuer()))
    assert not hasattr(svc, "predict_proba") and hasattr(svc, "decision_function")


class _WeightRecorder(BaseEstimator):
    def fit(self, X, y, sample_weight=None):
        self.sample_weight_ = sample_weight
        self.n_rows_ = X.shape[0]
        return self

    def predict(self, X):
        return np.zeros(X.shape[0])


def test_cleaned_estimator_slices_sample_weight_to_kept_rows(noisy_data):
    X, y, _ = noisy_data
    weights = np.arange(len(y), dtype=float)
    model = CleanedEstimator(_WeightRecorder(), DataCleaner(FirstFeatureValuer(), fraction=0.2))
    model.fit(X, y, sample_weight=weights)
    kept = model.sample_indices_
    assert model.estimator_.n_rows_ == kept.shape[0] == 96
    np.testing.assert_array_equal(model.estimator_.sample_weight_, weights[kept])


def test_default_valuer_is_knn_shapley_or_data_oob():
    assert type(_default_valuer()).__name__ in {"KNNShapley", "DataOOBValuer"}


@pytest.mark.parametrize(
    "params, match",
    [
        ({"fraction": 1.5}, (r"The 'fraction' parameter of DataCleaner must be a float "
                             r"in the range \[0(\.0)?, 1(\.0)?\). Got 1.5 instead.")),
        ({"fraction": -0.1}, r"'fraction' parameter of DataCleaner .* Got -0.1 instead"),
        ({"threshold": "low"}, r"'threshold' parameter of DataCleaner"),
        ({"valuer": "knn"}, r"'valuer' parameter of DataCleaner"),
    ],
)
def test_bad_parameters_name_the_parameter(noisy_data, params, match):
    X, y, _ = noisy_data
    with pytest.raises(ValueError, match=match):
        DataCleaner(**params).fit_resample(X, y)


def test_cleaned_estimator_rejects_a_cleaner_without_fit_resample(noisy_data):
    X, y, _ = noisy_data
    with pytest.raises(ValueError, match="'cleaner' parameter of CleanedEstimator"):
        CleanedEstimator(LogisticRegression(), cleaner=StandardScaler()).fit(X, y)
