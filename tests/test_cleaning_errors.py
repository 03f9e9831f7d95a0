"""DataCleaner and CleanedEstimator never drop rows on wrong values: non-valuers,
NaN values, failed fits, parameter domains, plain scikit-learn pipelines."""

import warnings

import numpy as np
import pytest
from imblearn.pipeline import Pipeline as ImbPipeline
from sklearn.base import BaseEstimator
from sklearn.cluster import KMeans
from sklearn.compose import make_column_transformer
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import FeatureUnion, Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from skdvl import CleanedEstimator, DataCleaner, UtilityFitWarning
from skdvl.valuation._oob import DataOOBValuer


@pytest.fixture
def seed():
    return 0


@pytest.fixture
def data(seed):
    return make_classification(n_samples=40, n_features=4, random_state=seed)


class _FixedValuer(BaseEstimator):
    """Values given in advance (to put NaN where a test needs it); counts its fits."""

    def __init__(self, values=None, warn=False, fail=False):
        self.values = values
        self.warn = warn
        self.fail = fail

    def fit(self, X, y):
        if self.fail:
            raise ValueError("All the 40 fits failed.")
        if self.warn:
            warnings.warn("3 of 40 utility evaluations raised", UtilityFitWarning)
        self.values_ = np.asarray(self.values, dtype=float)
        return self


class _NoValues(BaseEstimator):
    def fit(self, X, y):
        return self


# --------------------------------------------------------------------------------------
# The valuer is checked before any work.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "valuer, match",
    [
        (LogisticRegression(), r"must be a valuer.*Got LogisticRegression instead "
                               r"\(it has predict\(\)\)"),
        (KMeans(n_init=1), r"Got KMeans instead \(it has predict\(\)\)"),
        (StandardScaler(), r"Got StandardScaler instead \(it has transform\(\)\)"),
        (NearestNeighbors(), r"Got NearestNeighbors instead \(it has kneighbors\(\)\)"),
        (DataCleaner(), r"Got DataCleaner instead \(it has fit_resample\(\)\)"),
    ],
)
@pytest.mark.parametrize("method", ["fit", "fit_resample"])
def test_a_model_as_valuer_is_refused_before_any_work(data, valuer, match, method):
    X, y = data
    # fraction=0 values nothing: the check comes first, not after a fit
    with pytest.raises(ValueError, match=r"The 'valuer' parameter of DataCleaner .*" + match):
        getattr(DataCleaner(valuer, fraction=0.0), method)(X, y)


def test_the_refusal_suggests_a_valuer_for_a_model(data):
    X, y = data
    with pytest.raises(ValueError, match=r"which is not a valuer; to value rows with this "
                                         r"model, pass e\.g\. DataOOBValuer\(LogisticRegr"):
        DataCleaner(LogisticRegression()).fit(X, y)


def test_a_valuer_that_sets_no_values_is_named(data):
    X, y = data
    with pytest.raises(ValueError, match=r"'valuer' parameter of DataCleaner must set "
                                         r"values_ in fit\. Got _NoValues instead"):
        DataCleaner(_NoValues()).fit(X, y)
    with pytest.raises(ValueError, match=r"must give one value per row: _FixedValuer gave "
                                         r"values_ of shape \(3,\) for 40 rows"):
        DataCleaner(_FixedValuer([1.0, 2.0, 3.0])).fit(X, y)


# --------------------------------------------------------------------------------------
# NaN values and failed fits.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("params", [{"fraction": 0.25}, {"threshold": 15.0},
                                    {"fraction": 0.9}])
def test_rows_valued_nan_are_kept_with_a_warning(data, params):
    X, y = data
    values = np.arange(40.0)
    values[[0, 5, 30]] = np.nan  # the lowest value and two others
    with pytest.warns(UserWarning, match=r"DataCleaner: 3 of 40 rows have no value \(NaN: "
                                         r"the valuer _FixedValuer could not value them"):
        cleaner = DataCleaner(_FixedValuer(values), **params).fit(X, y)
    kept = cleaner.sample_indices_
    assert {0, 5, 30} <= set(kept.tolist())
    # the oracle: drop by the valued rows only
    valued = np.setdiff1d(np.arange(40), [0, 5, 30])
    if "threshold" in params:
        dropped = valued[values[valued] < params["threshold"]]
    else:
        dropped = valued[np.argsort(values[valued])][: int(params["fraction"] * 40)]
    np.testing.assert_array_equal(kept, np.setdiff1d(np.arange(40), dropped))


@pytest.mark.parametrize("params", [{"fraction": 0.1}, {"threshold": 0.0}])
def test_all_nan_values_raise(data, params):
    X, y = data
    with pytest.raises(ValueError, match=r"gave no value \(NaN\) to any of the 40 rows"):
        DataCleaner(_FixedValuer(np.full(40, np.nan)), **params).fit_resample(X, y)


def test_failed_fit_warnings_and_errors_of_the_valuer_pass_through(data):
    X, y = data
    with pytest.warns(UtilityFitWarning, match="3 of 40 utility evaluations raised"):
        DataCleaner(_FixedValuer(np.arange(40.0), warn=True)).fit(X, y)
    with pytest.raises(ValueError, match="All the 40 fits failed"):
        DataCleaner(_FixedValuer(fail=True)).fit_resample(X, y)
    with pytest.raises(ValueError, match="All the 40 fits failed"):
        CleanedEstimator(LogisticRegression(), DataCleaner(_FixedValuer(fail=True))).fit(X, y)


# --------------------------------------------------------------------------------------
# Parameter domains.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, match",
    [
        ({"threshold": np.nan}, r"'threshold' parameter of DataCleaner must be a float in "
                                r"the range \(-inf, inf\) or None\. Got nan instead"),
        ({"threshold": np.inf}, r"'threshold' parameter of DataCleaner .*Got inf instead"),
        ({"threshold": -np.inf}, r"'threshold' parameter of DataCleaner .*Got -inf"),
        ({"fraction": np.nan}, r"'fraction' parameter of DataCleaner .*Got nan instead"),
        ({"fraction": 1.0}, r"'fraction' parameter of DataCleaner .*Got 1.0 instead"),
    ],
)
def test_parameters_outside_their_domain_raise(data, params, match):
    X, y = data
    with pytest.raises(ValueError, match=match):
        DataCleaner(_FixedValuer(np.arange(40.0)), **params).fit(X, y)


# --------------------------------------------------------------------------------------
# Pipelines.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda c: make_pipeline(StandardScaler(), c, LogisticRegression()),
        lambda c: Pipeline([("clean", c), ("clf", LogisticRegression())]),
        lambda c: make_column_transformer((c, [0, 1])),
        lambda c: FeatureUnion([("clean", c), ("scale", StandardScaler())]),
    ],
)
def test_data_cleaner_in_a_plain_sklearn_pipeline_points_to_cleaned_estimator(data, make):
    X, y = data
    with pytest.raises(TypeError, match=r"DataCleaner drops rows, so it cannot be an "
                                        r"intermediate step.*Use CleanedEstimator\(estimator"
                                        r".*or an imblearn\.pipeline\.Pipeline"):
        make(DataCleaner(_FixedValuer(np.arange(40.0)))).fit(X, y)


def test_data_cleaner_still_works_in_imblearn_pipelines(data):
    X, y = data
    cleaner = DataCleaner(_FixedValuer(np.arange(40.0)), fraction=0.25)
    pipe = ImbPipeline([("scale", StandardScaler()), ("clean", cleaner),
                        ("clf", LogisticRegression())]).fit(X, y)
    np.testing.assert_array_equal(pipe["clean"].sample_indices_, np.arange(10, 40))
    direct = LogisticRegression().fit(StandardScaler().fit_transform(X)[10:], y[10:])
    np.testing.assert_allclose(pipe["clf"].coef_, direct.coef_)
    assert not hasattr(cleaner, "transform") and not hasattr(cleaner, "fit_transform")
    with pytest.raises(AttributeError, match="does not transform"):
        cleaner.transform(X)


def test_cleaned_estimator_with_data_oob_refuses_a_continuous_target(data, seed):
    X, _ = data
    y = np.linspace(0.0, 1.0, 40) + 0.013
    model = CleanedEstimator(
        LogisticRegression(), DataCleaner(DataOOBValuer(LogisticRegression(),
                                                        n_estimators=3)))
    with pytest.raises(ValueError, match="y is continuous"):
        model.fit(X, y)
