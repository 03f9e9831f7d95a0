"""No silent wrong values, part 3: NaN out-of-bag scores, mixed group labels, pandas
alignment of ``y`` to ``X``, and string columns refused before any fit."""

import re
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.compose import make_column_transformer
from sklearn.ensemble import BaggingRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from skdvl import DataOOBValuer, KNNShapley, LOOValuer, UtilityFitWarning
from skdvl.groups import check_groups

# ----------------------------------------------------------------- 6. NaN out-of-bag scores


class NaNRegressor(RegressorMixin, BaseEstimator):
    """Predicts NaN for every row."""

    def fit(self, X, y):
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X):
        return np.full(X.shape[0], np.nan)


class NaNWhenTrainedOnMax(RegressorMixin, BaseEstimator):
    """Predicts the mean of its training targets, or NaN when they include
    ``threshold`` (so only the members that drew the row of the largest target)."""

    def __init__(self, threshold=np.inf):
        self.threshold = threshold

    def fit(self, X, y):
        self.n_features_in_ = X.shape[1]
        self.mean_ = np.nan if np.max(y) >= self.threshold else float(np.mean(y))
        return self

    def predict(self, X):
        return np.full(X.shape[0], self.mean_)


@pytest.fixture
def reg_data(rng):
    X = rng.normal(size=(40, 3))
    y = X[:, 0] + rng.normal(size=40)
    return X, y


def test_oob_all_scores_nan_is_an_error_naming_the_estimator(reg_data):
    X, y = reg_data
    valuer = DataOOBValuer(NaNRegressor(), n_estimators=10, random_state=0)
    with pytest.raises(ValueError, match=r"All the \d+ out-of-bag scores of DataOOBValuer "
                                         r"\(estimator NaNRegressor, 10 members\) are NaN"):
        valuer.fit(X, y)


def _oracle_finite_oob(y, samples, threshold):
    """By hand: each member predicts the mean of the targets it drew, or NaN when it
    drew ``threshold``; each row's value is the mean of its finite out-of-bag scores
    ``-(y_i - prediction)^2``."""
    n = y.shape[0]
    total, count, n_bad, n_scores = np.zeros(n), np.zeros(n), 0, 0
    for drawn in samples:
        oob = np.setdiff1d(np.arange(n), drawn)
        n_scores += oob.size
        if y[drawn].max() >= threshold:
            n_bad += oob.size
            continue
        total[oob] += -((y[oob] - y[drawn].mean()) ** 2)
        count[oob] += 1
    with np.errstate(invalid="ignore"):
        return total / np.where(count > 0, count, np.nan), count, n_bad, n_scores


def test_oob_some_nan_members_warn_with_count_and_values_use_finite_scores(reg_data):
    X, y = reg_data
    ensemble = BaggingRegressor(NaNWhenTrainedOnMax(threshold=y.max()), n_estimators=12,
                                random_state=0)
    with pytest.warns(UtilityFitWarning) as record:
        valuer = DataOOBValuer(ensemble).fit(X, y)
    samples = valuer.estimator_.estimators_samples_
    expected, count, n_bad, n_scores = _oracle_finite_oob(y, samples, y.max())
    assert 0 < n_bad < n_scores  # some members, not all, predict NaN
    messages = [str(w.message) for w in record if w.category is UtilityFitWarning]
    assert len(messages) == 1
    assert re.search(rf"^{n_bad} of {n_scores} out-of-bag scores of DataOOBValuer", messages[0])
    unscored = int(np.count_nonzero(np.isnan(expected)))
    assert f"{unscored} rows have no finite score left" in messages[0]
    np.testing.assert_allclose(valuer.values_, expected, rtol=1e-12)
    np.testing.assert_array_equal(valuer.counts_, count)


def test_oob_finite_scores_raise_no_warning(reg_data):
    X, y = reg_data
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DataOOBValuer(n_estimators=30, random_state=0).fit(X, y)


# ------------------------------------------------------------------ 7. mixed group labels


@pytest.fixture
def clf_data(rng):
    X = rng.normal(size=(36, 3))
    y = (X[:, 0] + 0.5 * rng.normal(size=36) > 0).astype(int)
    return X, y


def test_mixed_type_group_labels_stay_distinct_and_match_integer_groups(clf_data, rng):
    X, y = clf_data
    codes = np.r_[0, 1, 2, rng.integers(0, 3, size=X.shape[0] - 3)]
    mixed = np.array([1, "1", 2], dtype=object)[codes].tolist()
    got = LOOValuer(LogisticRegression(), cv=3).fit(X, y, groups=mixed).values_
    expected = LOOValuer(LogisticRegression(), cv=3).fit(X, y, groups=codes).values_
    labels = list(got.index)
    assert labels == [1, "1", 2]
    assert [type(v) for v in labels] == [int, str, int]
    assert got.index.is_unique
    assert list(expected.index) == [0, 1, 2]
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=1e-12)


def test_check_groups_keeps_mixed_labels_in_first_row_order():
    labels, codes = check_groups(["b", 2, "a", 2, 1.5, "b"], 6)
    assert labels.tolist() == ["b", 2, "a", 1.5]
    assert codes.tolist() == [0, 1, 2, 1, 3, 0]


def test_check_groups_of_one_type_keeps_the_dtype():
    labels, _ = check_groups([3, 1, 3], 3)
    assert labels.dtype.kind == "i" and labels.tolist() == [3, 1]
    labels, _ = check_groups(pd.Series(["x", "y", "x"]), 3)
    assert labels.tolist() == ["x", "y"]


def test_check_groups_refuses_booleans_mixed_with_numbers():
    with pytest.raises(ValueError, match=r"groups must not mix booleans with numbers "
                                         r"\(e.g. True\)"):
        check_groups([1, True, 0, False], 4)


def test_check_groups_tuple_labels_are_one_label_per_row():
    labels, codes = check_groups([(1, 2), (3, 4), (1, 2)], 3)
    assert labels.tolist() == [(1, 2), (3, 4)]
    assert codes.tolist() == [0, 1, 0]


# ------------------------------------------------------------- 8a. y aligned to X by label


@pytest.fixture
def frames(clf_data, rng):
    X, y = clf_data
    index = pd.Index([f"r{i}" for i in range(X.shape[0])], name="row")
    X_df = pd.DataFrame(X, index=index, columns=["a", "b", "c"])
    y_s = pd.Series(y, index=index, name="target")
    return X_df, y_s, rng.permutation(X.shape[0])


def test_permuted_y_series_is_aligned_to_x_with_a_warning(frames):
    X, y, perm = frames
    y_permuted = y.iloc[perm]
    assert not (y_permuted.to_numpy() == y.to_numpy()).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        expected = KNNShapley(n_neighbors=3).fit(X, y_permuted.loc[X.index]).values_
    with pytest.warns(UserWarning, match=r"KNNShapley: the index of y holds the labels of "
                                         r"the index of X in a different order.*y is "
                                         r"aligned to the index of X"):
        got = KNNShapley(n_neighbors=3).fit(X, y_permuted).values_
    pd.testing.assert_series_equal(got, expected)
    by_position = KNNShapley(n_neighbors=3).fit(X, y_permuted.to_numpy()).values_
    assert not np.allclose(by_position.to_numpy(), expected.to_numpy())


def test_permuted_y_val_series_is_aligned_to_x_val(frames):
    X, y, perm = frames
    X_tr, y_tr, X_val, y_val = X.iloc[:24], y.iloc[:24], X.iloc[24:], y.iloc[24:]
    y_val_permuted = y_val.iloc[perm[perm >= 24] - 24]
    expected = LOOValuer(LogisticRegression()).fit(X_tr, y_tr, X_val=X_val,
                                                   y_val=y_val).values_
    with pytest.warns(UserWarning, match=r"the index of y_val holds the labels of the "
                                         r"index of X_val in a different order"):
        got = LOOValuer(LogisticRegression()).fit(X_tr, y_tr, X_val=X_val,
                                                  y_val=y_val_permuted).values_
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=1e-12)


def test_y_with_other_index_labels_is_refused(frames):
    X, y, _ = frames
    with pytest.raises(ValueError, match=r"the index of y does not hold the labels of the "
                                         r"index of X \(36 of 36 labels of X are not in y, "
                                         r"e.g. 'r0'\).*y.set_axis\(X.index\)"):
        KNNShapley(n_neighbors=3).fit(X, y.reset_index(drop=True))


def test_y_with_repeated_index_labels_in_another_order_is_refused(frames):
    X, y, _ = frames
    X = X.set_axis(["a"] * 18 + ["b"] * 18)
    with pytest.raises(ValueError, match="repeated labels cannot be aligned"):
        KNNShapley(n_neighbors=3).fit(X, y.set_axis(["b"] * 18 + ["a"] * 18))


# ------------------------------------------------------- 8b. string columns, before any fit


class CountingClassifier(ClassifierMixin, BaseEstimator):
    """A logistic regression that counts its fits (in the class: the valuers clone it)."""

    n_fits = 0

    def fit(self, X, y):
        type(self).n_fits += 1
        self.model_ = LogisticRegression().fit(X, y)
        self.classes_ = self.model_.classes_
        return self

    def predict(self, X):
        return self.model_.predict(X)


@pytest.fixture
def frame_with_text(clf_data, rng):
    X, y = clf_data
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    frame.insert(1, "color", rng.choice(["red", "blue"], size=X.shape[0]))
    return frame, y


@pytest.mark.parametrize("dtype", ["object", "category"])
def test_string_column_is_refused_by_name_before_any_fit(frame_with_text, dtype):
    X, y = frame_with_text
    X = X.astype({"color": dtype})
    CountingClassifier.n_fits = 0
    with pytest.raises(ValueError, match=r"LOOValuer: X has 1 non-numeric column\(s\) that "
                                         r"CountingClassifier cannot fit: 'color'"):
        LOOValuer(CountingClassifier()).fit(X, y)
    assert CountingClassifier.n_fits == 0


@pytest.mark.parametrize("valuer", [KNNShapley(), DataOOBValuer(n_estimators=5)],
                         ids=["KNNShapley", "DataOOBValuer"])
def test_string_column_is_refused_by_every_valuer(frame_with_text, valuer):
    X, y = frame_with_text
    with pytest.raises(ValueError, match=r"X has 1 non-numeric column\(s\).*'color'.*"
                                         r"OneHotEncoder\(\), \[1\]"):
        valuer.fit(X, y)


def test_category_column_with_an_encoding_pipeline_is_accepted(frame_with_text):
    X, y = frame_with_text
    X = X.astype({"color": "category"})
    pipe = make_pipeline(
        make_column_transformer((OneHotEncoder(), [1]), remainder="passthrough"),
        LogisticRegression())
    values = LOOValuer(pipe).fit(X, y).values_
    assert np.isfinite(values.to_numpy()).all()


def test_numeric_strings_are_not_refused(clf_data):
    X, y = clf_data
    frame = pd.DataFrame(X, columns=["a", "b", "c"]).astype({"b": str})
    values = KNNShapley(n_neighbors=3).fit(frame, y).values_
    expected = KNNShapley(n_neighbors=3).fit(frame.astype(float), y).values_
    np.testing.assert_allclose(values.to_numpy(), expected.to_numpy(), rtol=1e-12)
