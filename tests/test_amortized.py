"""AmortizedValuer: amortized values against exact ones, new rows, determinism, the API.

The oracles are exact Shapley values (every coalition of a game of at most 14 rows,
``sampler="exact"``) of a LogisticRegression game on a subset of breast cancer with
flipped labels, and closed forms for the weights and diagnostics.
"""

import pickle
import warnings

import joblib
import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, make_regression
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils.estimator_checks import parametrize_with_checks

from skdvl import AmortizedValuer, CleanedEstimator, DataCleaner, KNNShapley, ShapleyValuer
from skdvl.cleaning import rows_to_keep
from skdvl.games import SymmetricVotingGame
from skdvl.utils.estimator_checks import parametrize_with_valuer_checks
from skdvl.valuation._amortized_math import diagnostics, noise_variances, row_weights, shrink

pytestmark = [pytest.mark.filterwarnings("ignore:.*predicts the values poorly:UserWarning")]


def _model():
    return LogisticRegression(max_iter=1000)


def _noisy(max_updates, seed=None):
    return ShapleyValuer(_model(), sampler="permutation", max_updates=max_updates,
                         random_state=seed)


@pytest.fixture(scope="module")
def breast_cancer():
    X, y = load_breast_cancer(return_X_y=True)
    return StandardScaler().fit_transform(X)[:, :8], y


def _game(data, n, n_flipped, rep):
    """Training rows (``n_flipped`` labels flipped), 100 validation rows, exact values."""
    X, y = data
    rng = np.random.default_rng(rep)
    idx = rng.permutation(y.shape[0])
    tr, va = idx[:n], idx[n:n + 100]
    X_tr, y_tr = X[tr], y[tr].copy()
    flip = rng.choice(n, n_flipped, replace=False)
    y_tr[flip] = 1 - y_tr[flip]
    exact = ShapleyValuer(_model(), sampler="exact").fit(
        X_tr, y_tr, X_val=X[va], y_val=y[va]).values_
    return X_tr, y_tr, X[va], y[va], exact


# ------------------------------------------------------------------------ oracles
def test_amortized_values_are_closer_to_exact_than_the_estimates_they_learn_from(
        breast_cancer):
    """Same budget (3 permutations of 12 rows): lower MSE against exact values."""
    plain, amortized = [], []
    for rep in range(3):
        X, y, X_val, y_val, exact = _game(breast_cancer, 12, 2, rep)
        for seed in range(2):
            a = AmortizedValuer(_noisy(3), random_state=seed).fit(X, y, X_val=X_val,
                                                                   y_val=y_val)
            plain.append(np.mean((a.valuer_.values_ - exact) ** 2))
            amortized.append(np.mean((a.values_ - exact) ** 2))
            assert a.n_utility_evaluations_ == a.valuer_.n_utility_evaluations_
    # measured: 0.53 of the plain MSE over 12 fits; a model that ignored the rows
    # (a shuffled prediction) or fitted the noise would not get below 0.8
    assert np.mean(amortized) < 0.8 * np.mean(plain), (np.mean(amortized), np.mean(plain))


def test_predict_on_held_out_rows_correlates_with_their_exact_values(breast_cancer):
    """Rows never seen by the amortizer, valued as members of the 14-row game."""
    corr = []
    for rep in range(3):
        X, y, X_val, y_val, exact = _game(breast_cancer, 14, 4, rep)
        predicted = np.empty(14)
        for f, (fit_rows, held_out) in enumerate(
                KFold(3, shuffle=True, random_state=rep).split(X)):
            a = AmortizedValuer(_noisy(5), random_state=f).fit(
                X[fit_rows], y[fit_rows], X_val=X_val, y_val=y_val)
            predicted[held_out] = a.predict(X[held_out], y[held_out])
        corr.append(pearsonr(predicted, exact)[0])
    # a constant (or a prediction unrelated to the rows) correlates 0 on average;
    # measured about 0.6
    assert np.mean(corr) > 0.3, corr


def test_noise_variances_unbias_and_shrink_the_per_sample_variances():
    stderr = np.array([0.0, 1.0, 2.0, np.nan])
    counts = np.array([2, 2, 5, 1])
    # skdvl's stderr^2 is the unbiased sample variance over c: per-sample c s^2
    pooled = (1 * 0 + 1 * 2 + 4 * 20) / 6  # per-sample variances 0, 2, 20, unknown
    shrunk = np.array([(0 + 10 * pooled) / 11, (2 + 10 * pooled) / 11,
                       (4 * 20 + 10 * pooled) / 14, pooled])
    expected = shrunk / np.maximum(counts, 1)
    np.testing.assert_allclose(noise_variances(stderr, counts), expected)
    weights = row_weights(noise_variances(stderr, counts))
    np.testing.assert_allclose(weights, (1 / expected) / np.mean(1 / expected))
    np.testing.assert_array_equal(row_weights(noise_variances(np.zeros(4), np.full(4, 3))),
                                  np.ones(4))
    assert np.isnan(noise_variances(np.full(3, np.nan), np.ones(3))).all()


def test_diagnostics_recover_the_correlation_with_the_noise_free_values(rng):
    v = rng.normal(size=20_000)
    t = v + rng.normal(scale=2.0, size=v.shape)  # noise variance 4
    pred = v + rng.normal(scale=0.5, size=v.shape)  # error variance 0.25
    report = diagnostics(t, pred, np.full(v.shape, 4.0), seed=0)
    assert report["reliability"] == pytest.approx(1 / 5, abs=0.02)
    assert report["score"] == pytest.approx(1 / np.sqrt(5 * 1.25), abs=0.02)
    truth = 1 / np.sqrt(1.25)  # corr(v, pred)
    assert report["disattenuated"] == pytest.approx(truth, abs=0.03)
    assert report["low"] < truth < report["high"] and report["high"] - report["low"] < 0.15
    _, _, tau2 = shrink(t, pred, np.full(v.shape, 4.0))
    assert tau2 == pytest.approx(0.25, abs=0.1)


# ------------------------------------------------------------------ determinism, API
@pytest.fixture(scope="module")
def rows():
    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)[:, :6]
    return X[:40], y[:40], X[300:380], y[300:380], X[100:120], y[100:120]


def _same_for_n_jobs(rows, backend):
    X, y, X_val, y_val, X_new, y_new = rows
    with joblib.parallel_config(backend=backend):
        fits = [AmortizedValuer(_noisy(2), n_jobs=n_jobs, random_state=0).fit(
            X, y, X_val=X_val, y_val=y_val) for n_jobs in (1, 2)]
    np.testing.assert_array_equal(fits[0].values_, fits[1].values_)
    np.testing.assert_array_equal(fits[0].stderr_, fits[1].stderr_)
    assert fits[0].disattenuated_interval_ == fits[1].disattenuated_interval_
    np.testing.assert_array_equal(fits[0].predict(X_new, y_new), fits[1].predict(X_new, y_new))


def test_values_identical_for_any_n_jobs(rows):
    _same_for_n_jobs(rows, "threading")  # the wrapped valuer's and the value model's jobs


@pytest.mark.slow
def test_values_identical_for_any_n_jobs_with_processes(rows):
    _same_for_n_jobs(rows, "loky")


def test_random_state_seeds_an_unseeded_valuer(rows):
    X, y, X_val, y_val, _, _ = rows
    a, b, c = (AmortizedValuer(_noisy(2), random_state=s).fit(X, y, X_val=X_val, y_val=y_val)
               for s in (0, 0, 1))
    np.testing.assert_array_equal(a.values_, b.values_)
    assert not np.array_equal(a.valuer_.values_, c.valuer_.values_)


def test_fitted_attributes_and_diagnostics(rows):
    X, y, X_val, y_val, _, _ = rows
    a = AmortizedValuer(_noisy(3), random_state=0).fit(X, y, X_val=X_val, y_val=y_val)
    assert a.values_.shape == a.stderr_.shape == a.counts_.shape == (40,)
    np.testing.assert_array_equal(a.counts_, a.valuer_.counts_)
    assert np.isfinite(a.values_).all() and (a.stderr_ > 0).all()
    assert -1 <= a.amortization_score_ <= 1 and a.reliability_ <= 1
    low, high = a.disattenuated_interval_
    assert -1 <= low <= high <= 1 and a.prediction_rmse_ > 0
    assert a.task_ == "classification" and a.n_features_in_ == 6
    assert a.result_.algorithm == "amortized"
    p = AmortizedValuer(_noisy(3), combine="prediction", random_state=0).fit(
        X, y, X_val=X_val, y_val=y_val)
    np.testing.assert_allclose(p.stderr_, p.prediction_rmse_)  # pooled, whatever the counts
    np.testing.assert_array_equal(p.predict(X, y), a.predict(X, y))  # same value model


def test_clone_pickle_and_grid_search(rows):
    X, y, X_val, y_val, X_new, y_new = rows
    a = AmortizedValuer(_noisy(2), weighting="uniform", random_state=0)
    assert clone(a).get_params()["weighting"] == "uniform"
    a.fit(X, y, X_val=X_val, y_val=y_val)
    back = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(back.predict(X_new, y_new), a.predict(X_new, y_new))
    cleaner = DataCleaner(AmortizedValuer(_noisy(2), Ridge(), n_splits=3, random_state=0))
    search = GridSearchCV(CleanedEstimator(_model(), cleaner),
                          {"cleaner__valuer__weighting": ["uniform", "inverse_variance"]},
                          cv=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search.fit(np.vstack([X, X_new]), np.concatenate([y, y_new]))
    assert search.best_params_["cleaner__valuer__weighting"] in ("uniform", "inverse_variance")


def test_pandas_in_pandas_out(rows):
    X, y, X_val, y_val, X_new, y_new = rows
    cols = [f"f{j}" for j in range(X.shape[1])]
    X_df = pd.DataFrame(X, columns=cols, index=[f"r{i}" for i in range(40)])
    a = AmortizedValuer(_noisy(2), random_state=0).fit(
        X_df, pd.Series(y, index=X_df.index), X_val=pd.DataFrame(X_val, columns=cols),
        y_val=y_val)
    ref = AmortizedValuer(_noisy(2), random_state=0).fit(X, y, X_val=X_val, y_val=y_val)
    assert isinstance(a.values_, pd.Series) and a.values_.index.equals(X_df.index)
    np.testing.assert_allclose(a.values_.to_numpy(), ref.values_)
    new = pd.DataFrame(X_new, columns=cols, index=[f"n{i}" for i in range(20)])
    got = a.predict(new, y_new)
    assert isinstance(got, pd.Series) and got.index.equals(new.index)
    np.testing.assert_allclose(got.to_numpy(), ref.predict(X_new, y_new))


def test_regression_and_cross_valuation():
    X, y = make_regression(n_samples=30, n_features=3, noise=5.0, random_state=0)
    a = AmortizedValuer(ShapleyValuer(LinearRegression(), sampler="permutation",
                                      max_updates=2, cv=3), random_state=0).fit(X, y)
    assert a.task_ == "regression" and np.isfinite(a.values_).all()
    assert np.isfinite(a.predict(X[:5] + 0.1, y[:5])).all()


def test_string_labels_and_a_classifier_without_probabilities(rows):
    X, y, X_val, y_val, X_new, y_new = rows
    names = np.array(["benign", "malignant"])
    valuer = ShapleyValuer(SVC(), sampler="permutation", max_updates=2)
    a = AmortizedValuer(valuer, Ridge(), random_state=0).fit(
        X, names[y], X_val=X_val, y_val=names[y_val])
    assert a.task_ == "classification" and np.isfinite(a.values_).all()
    assert np.isfinite(a.predict(X_new, names[y_new])).all()


@parametrize_with_checks(
    [AmortizedValuer(ShapleyValuer(_model(), sampler="permutation", max_updates=2, cv=2),
                     Ridge(), n_splits=2, random_state=0)],  # a cheap value model
    expected_failed_checks=lambda est: {
        name: "predict takes (X, y): a row is valued with its label"
        for name in ("check_methods_subset_invariance", "check_methods_sample_order_invariance",
                     "check_fit2d_predict1d", "check_dict_unchanged", "check_estimators_dtypes",
                     "check_fit_idempotent", "check_n_features_in_after_fitting",
                     "check_estimators_pickle", "check_dtype_object",
                     "check_dataframe_column_names_consistency", "check_estimators_nan_inf",
                     "check_f_contiguous_array_estimator", "check_estimator_sparse_array",
                     "check_estimator_sparse_matrix")})
def test_sklearn_compatible_estimator(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)


@parametrize_with_valuer_checks(
    [AmortizedValuer(_noisy(2), Ridge(), n_splits=3, random_state=0)])
def test_valuer_checks(valuer, check):
    check(valuer)


# ------------------------------------------------------------------------- errors
@pytest.mark.parametrize("params, match", [
    ({"valuer": _model()}, "The 'valuer' parameter of AmortizedValuer must be a skdvl valuer"),
    ({"valuer": AmortizedValuer()}, "other than AmortizedValuer. Got AmortizedValuer"),
    ({"valuer": ShapleyValuer(utility=SymmetricVotingGame(4))}, "not a custom utility. Got "
                                                                 "utility=SymmetricVotingGame"),
    ({"n_splits": 1}, "The 'n_splits' parameter of AmortizedValuer must be an int"),
    ({"n_splits": 50}, "n_splits=50 folds of cross-fitting need at least 50 rows; got "
                       "n_samples=40"),
    ({"weighting": "inverse"}, "The 'weighting' parameter of AmortizedValuer must be"),
    ({"features": "raw"}, "The 'features' parameter of AmortizedValuer must be"),
    ({"combine": "mean"}, "The 'combine' parameter of AmortizedValuer must be"),
])
def test_bad_parameters_are_refused_by_name(rows, params, match):
    X, y, X_val, y_val, _, _ = rows
    with pytest.raises(ValueError, match=match):
        AmortizedValuer(**{"valuer": _noisy(1), **params}).fit(X, y, X_val=X_val, y_val=y_val)


def test_predict_refuses_unseen_labels_other_widths_and_unfitted(rows):
    X, y, X_val, y_val, X_new, y_new = rows
    with pytest.raises(NotFittedError):
        AmortizedValuer().predict(X_new, y_new)
    a = AmortizedValuer(_noisy(2), random_state=0).fit(X, y, X_val=X_val, y_val=y_val)
    with pytest.raises(ValueError, match=r"y holds labels the valuer was not fitted on \(e.g"
                                         r"\. 7; fitted classes \[0, 1\]\)"):
        a.predict(X_new, np.full(20, 7))
    with pytest.raises(ValueError, match="features"):
        a.predict(X_new[:, :4], y_new)


# ------------------------------------------------------------------------ cleaning
def test_cleaner_with_prefit_drops_new_rows_by_predicted_values(rows, monkeypatch):
    X, y, X_val, y_val, X_new, y_new = rows
    a = AmortizedValuer(_noisy(2), random_state=0).fit(X, y, X_val=X_val, y_val=y_val)
    expected = rows_to_keep(a.predict(X_new, y_new), fraction=0.2)

    def no_fit(*args, **kwargs):
        raise AssertionError("the wrapped valuer was refitted")

    monkeypatch.setattr(ShapleyValuer, "fit", no_fit)
    monkeypatch.setattr(AmortizedValuer, "fit", no_fit)
    cleaner = clone(DataCleaner(FrozenEstimator(a), fraction=0.2, prefit=True))
    X_kept, y_kept = cleaner.fit_resample(X_new, y_new)
    np.testing.assert_array_equal(cleaner.sample_indices_, expected)
    np.testing.assert_array_equal(X_kept, X_new[expected])
    np.testing.assert_array_equal(cleaner.values_, a.predict(X_new, y_new))
    bare = DataCleaner(a, fraction=0.2, prefit=True).fit(X_new, y_new)  # unwrapped works
    np.testing.assert_array_equal(bare.sample_indices_, expected)


def test_cleaner_without_prefit_fits_the_amortizer(rows):
    X, y, X_val, y_val, _, _ = rows
    valuer = ShapleyValuer(_model(), sampler="permutation", max_updates=2, cv=3)
    cleaner = DataCleaner(AmortizedValuer(valuer, n_splits=3, random_state=0),
                          fraction=0.25).fit(X, y)
    direct = AmortizedValuer(valuer, n_splits=3, random_state=0).fit(X, y)
    np.testing.assert_array_equal(cleaner.values_, direct.values_)
    assert cleaner.sample_indices_.shape == (30,)


@pytest.mark.parametrize("valuer, match", [
    (AmortizedValuer(_noisy(1)), "needs a fitted valuer, and this AmortizedValuer is not"),
    (KNNShapley(), "values rows by a fitted valuer's predict\\(X, y\\).*Got KNNShapley"),
    (FrozenEstimator(_model()), "Got LogisticRegression instead"),
])
def test_cleaner_prefit_refuses_what_cannot_predict_values(rows, valuer, match):
    X, y, _, _, _, _ = rows
    with pytest.raises(ValueError, match=match):
        DataCleaner(valuer, prefit=True).fit(X, y)


def test_cleaner_prefit_refuses_groups(rows):
    X, y, X_val, y_val, _, _ = rows
    a = AmortizedValuer(_noisy(2), random_state=0).fit(X, y, X_val=X_val, y_val=y_val)
    with pytest.raises(ValueError, match=r"prefit=True\) values rows, not groups"):
        DataCleaner(a, prefit=True).fit(X, y, groups=np.arange(40) % 4)
