"""No silent wrong values from the semivalue valuers: targets, failures, domains,
warm starts and budgets. Each test pins the message a user sees."""

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, make_classification, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from skdvl import BanzhafValuer, BetaShapleyValuer, LOOValuer, ShapleyValuer, UtilityFitWarning
from skdvl.games import AirportGame, SymmetricVotingGame
from skdvl.sampling import ExactSampler, RelativeTruncation
from skdvl.stopping import MaxSamples, MaxTime
from skdvl.utility import ModelUtility

VALUERS = [ShapleyValuer, BanzhafValuer, BetaShapleyValuer, LOOValuer]


@pytest.fixture
def clf_data():
    X, y = make_classification(n_samples=24, n_features=4, random_state=0)
    return X[:12], y[:12], X[12:], y[12:]


# --------------------------------------------------------------------------- 1. targets
@pytest.mark.parametrize("cls", VALUERS)
def test_integer_target_with_many_values_warns_naming_task(cls):
    X, y = make_regression(n_samples=40, n_features=3, random_state=0)
    y = np.round(50 + 10 * y / y.std()).astype(int)  # a 0-100 "popularity" score
    assert np.unique(y).shape[0] > 20
    with pytest.warns(UserWarning, match=r"distinct integer values, so task='auto' treats it "
                                         r"as classification .* pass task='regression'"):
        cls(max_updates=1, cv=2).fit(X, y) if cls is not LOOValuer else cls(cv=2).fit(X, y)


@pytest.mark.parametrize("cls", VALUERS)
def test_task_regression_values_with_a_regressor(cls):
    X, y = make_regression(n_samples=16, n_features=3, random_state=0)
    y = np.round(y).astype(int)
    kwargs = {} if cls is LOOValuer else {"max_updates": 2}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "looks like a regression" warning
        warnings.filterwarnings("ignore", message=r"max_updates=\d+ .*coalitions per game\)? was")
        v = cls(task="regression", **kwargs).fit(X[:8], y[:8], X_val=X[8:], y_val=y[8:])
    assert v.task_ == "regression"
    # the default regressor's utility: r2 of LinearRegression on the validation rows
    full = LinearRegression().fit(X[:8], y[:8]).score(X[8:], y[8:])
    u = ModelUtility(LinearRegression(), X[:8], y[:8], X[8:], y[8:])
    assert u(np.arange(8)) == pytest.approx(full)
    if cls is LOOValuer:
        loo = [full - u(np.delete(np.arange(8), i)) for i in range(8)]
        np.testing.assert_allclose(v.values_, loo, rtol=1e-12)


@pytest.mark.parametrize("y, y_val, match", [
    (np.linspace(0, 1, 12), None, r"valuing for classification, but y is continuous"),
    (np.zeros(12, int), None, r"needs at least 2 classes in y"),
    (np.array([0, 1] * 6), np.array(["a", "b"] * 6), r"y and y_val hold labels of different "
                                                        r"kinds"),
    (np.array([0.0, 1.0] * 6), np.array(["a", "b"] * 6), r"different kinds"),
    (np.array(["a", 1] * 6, dtype=object), None, r"y mixes label types \(int, str\)"),
    (np.array([0, 1] * 6), np.linspace(0, 1, 12), r"y_val is continuous"),
])
def test_classification_refuses_targets_it_cannot_use(clf_data, y, y_val, match):
    X, _, X_val, _ = clf_data
    kwargs = {"X_val": X_val, "y_val": y_val} if y_val is not None else {"cv": 2}
    with pytest.raises(ValueError, match=match):
        ShapleyValuer(LogisticRegression(), max_updates=1, **{
            k: v for k, v in kwargs.items() if k == "cv"}).fit(
            X, y, **{k: v for k, v in kwargs.items() if k != "cv"})


def test_task_contradicting_the_estimator_is_refused(clf_data):
    X, y, Xv, yv = clf_data
    with pytest.raises(ValueError, match=r"'task' parameter of ShapleyValuer is 'regression' "
                                         r"but estimator LogisticRegression is a classifier"):
        ShapleyValuer(LogisticRegression(), task="regression").fit(X, y, X_val=Xv, y_val=yv)
    with pytest.raises(ValueError, match=r"task='regression' but y holds non-numeric labels"):
        ShapleyValuer(task="regression").fit(X, y.astype(str), X_val=Xv, y_val=yv.astype(str))


# --------------------------------------------------------------------------- 2. failures
class HoleyGame:
    """An airport game that returns NaN (or raises) on coalitions of size 3."""

    def __init__(self, n=6, how="nan"):
        self.game, self.n_players, self.how = AirportGame(np.arange(1.0, n + 1)), n, how

    def __call__(self, subset):
        if len(subset) == 3:
            if self.how == "nan":
                return np.nan
            raise RuntimeError("no value for three")
        return self.game(subset)


@pytest.mark.parametrize("how, message", [("nan", "returned nan"),
                                          ("raise", "RuntimeError: no value for three")])
def test_failed_utilities_are_scored_default_score_and_warned_once(how, message):
    n, game = 6, HoleyGame(how=how)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        v = ShapleyValuer(utility=game, sampler="exact", default_score=-1.0).fit()
    fit_warnings = [w for w in caught if w.category is UtilityFitWarning]
    assert len(fit_warnings) == 1
    assert f"20 of {2 ** n} utility evaluations raised or scored NaN/inf" in str(
        fit_warnings[0].message) and message in str(fit_warnings[0].message)

    class Oracle:  # the same game with those coalitions worth default_score
        n_players = n

        def __call__(self, subset):
            return -1.0 if len(subset) == 3 else game.game(subset)
    ref = ShapleyValuer(utility=Oracle(), sampler="exact").fit()
    np.testing.assert_allclose(v.values_, ref.values_, atol=1e-12)


def test_every_evaluation_failing_raises_instead_of_zeros():
    class Broken:
        n_players = 5

        def __call__(self, subset):
            return float("inf")
    with pytest.raises(ValueError, match=r"All the 32 utility evaluations of ShapleyValuer "
                                         r"failed, so no value was computed"):
        ShapleyValuer(utility=Broken(), sampler="exact").fit()


def test_every_fit_failing_raises(clf_data):
    X, y, Xv, yv = clf_data

    def nan_scorer(estimator, X, y):
        return float("nan")
    for valuer in (ShapleyValuer(LogisticRegression(), scoring=nan_scorer, max_updates=2),
                   LOOValuer(LogisticRegression(), scoring=nan_scorer)):
        with pytest.raises(ValueError, match=r"All the \d+ utility evaluations of "
                                             r"\w+Valuer failed.*score of a fit on \d+ rows "
                                             r"was nan"):
            valuer.fit(X, y, X_val=Xv, y_val=yv)


def test_warnings_inside_fits_are_summarised_once_with_their_count():
    X, y = load_breast_cancer(return_X_y=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        v = LOOValuer(LogisticRegression(max_iter=2)).fit(X[:30], y[:30], X_val=X[100:150],
                                                         y_val=y[100:150])
    conv = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert len(conv) == 1
    assert f"31 of {v.n_utility_evaluations_} utility fits raised ConvergenceWarning (shown " \
        "once" in str(conv[0].message)
    assert "The first: lbfgs failed to converge" in str(conv[0].message)


# --------------------------------------------------------------------------- 3. domains
@pytest.mark.parametrize("params, match", [
    ({"default_score": np.inf}, r"'default_score' parameter of ShapleyValuer must be a float "
                                r"in the range \(-inf, inf\). Got inf"),
    ({"default_score": np.nan}, r"'default_score' parameter .* Got nan"),
    ({"error_score": np.nan}, r"'error_score' parameter of ShapleyValuer must be .* Got nan"),
    ({"truncation": 1.5}, r"truncation must be a relative tolerance in \[0, 1\).* Got 1.5"),
    ({"truncation": -0.1}, r"truncation must be a relative tolerance in \[0, 1\).* Got -0.1"),
    ({"truncation": np.nan}, r"truncation must be a relative tolerance in \[0, 1\).* Got nan"),
    ({"task": "ranking"}, r"'task' parameter of ShapleyValuer must be a str among"),
    ({"max_updates": "all"}, r"'max_updates' parameter of ShapleyValuer must be"),
])
def test_out_of_domain_parameters_are_refused(params, match):
    with pytest.raises(ValueError, match=match):
        ShapleyValuer(utility=SymmetricVotingGame(4), **params).fit()


@pytest.mark.parametrize("n_players", [0, 2.5, True, None, "4"])
def test_custom_utility_needs_an_integer_number_of_players(n_players):
    class Game:
        def __call__(self, subset):
            return 0.0
    game = Game()
    game.n_players = n_players
    with pytest.raises(ValueError, match=r"'utility' of ShapleyValuer must have an integer "
                                         rf"n_players >= 1. Got n_players={n_players!r}"):
        ShapleyValuer(utility=game).fit()


@pytest.mark.parametrize("make, match", [
    (lambda: ExactSampler(2.5), r"max_players must be an integer in \[1, 62\].*Got 2.5"),
    (lambda: ExactSampler(100), r"max_players must be .* Got 100"),
    (lambda: RelativeTruncation(rtol=2.0), r"rtol must be < 1"),
    (lambda: MaxTime(np.inf), r"seconds must be finite. Got inf"),
    (lambda: MaxTime(True), r"seconds must be a number > 0. Got True"),
])
def test_sampler_and_stopping_domains(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# --------------------------------------------------------------------------- 4. warm_start
def test_warm_start_refuses_other_data_estimator_or_seed(clf_data):
    X, y, Xv, yv = clf_data
    v = ShapleyValuer(LogisticRegression(), max_updates=2, random_state=0, warm_start=True)
    v.fit(X, y, X_val=Xv, y_val=yv)
    with pytest.raises(ValueError, match=r"only valid with the same data.*Changed since then: "
                                         r"data \(X, y, X_val, y_val\)\. Set warm_start=False"):
        v.fit(X[::-1], y[::-1], X_val=Xv, y_val=yv)
    v.set_params(estimator=LogisticRegression(C=0.1))
    with pytest.raises(ValueError, match=r"Changed since then: estimator\."):
        v.fit(X, y, X_val=Xv, y_val=yv)
    v.set_params(estimator=LogisticRegression(), random_state=1, scoring="accuracy")
    with pytest.raises(ValueError, match=r"Changed since then: random_state, scoring\."):
        v.fit(X, y, X_val=Xv, y_val=yv)
    v.set_params(random_state=0, scoring=None, max_updates=4, n_jobs=1)  # budgets may change
    v.fit(X, y, X_val=Xv, y_val=yv)
    ref = ShapleyValuer(LogisticRegression(), max_updates=4, random_state=0).fit(
        X, y, X_val=Xv, y_val=yv)
    np.testing.assert_array_equal(v.values_, ref.values_)


def test_warm_start_with_a_spent_budget_samples_nothing():
    v = ShapleyValuer(utility=AirportGame(np.arange(1.0, 7)), sampler="permutation",
                      max_updates=10, random_state=0, warm_start=True).fit()
    values, evals = v.values_.copy(), v.n_utility_evaluations_
    v.set_params(max_updates=4).fit()
    np.testing.assert_array_equal(v.values_, values)
    assert v.n_utility_evaluations_ == evals and (v.counts_ == 10).all()


def test_warm_start_refuses_another_utility_object():
    v = ShapleyValuer(utility=AirportGame(np.arange(1.0, 7)), max_updates=3, warm_start=True)
    v.fit()
    v.set_params(utility=AirportGame(np.arange(1.0, 7)))
    with pytest.raises(ValueError, match=r"Changed since then: utility\."):
        v.fit()


# --------------------------------------------------------------------------- 6. budgets
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_explicit_stopping_replaces_the_default_budget_and_is_met_exactly(n_jobs):
    game = AirportGame(np.arange(1.0, 31))  # 2^30 coalitions: no sample drawn twice
    v = BanzhafValuer(utility=game, sampler="msr", stopping=MaxSamples(1500), random_state=0,
                      n_jobs=n_jobs).fit()
    assert v.n_utility_evaluations_ == 1500  # MSR: one evaluation per sample
    assert (v.counts_ == 1500).all()
    ref = BanzhafValuer(utility=game, sampler="msr", stopping=MaxSamples(1500),
                        random_state=0).fit()
    np.testing.assert_array_equal(v.values_, ref.values_)
    np.testing.assert_allclose(v.values_, game.banzhaf_values(), atol=0.3)


def test_max_samples_is_exact_inside_a_block_and_continues_the_same_draws():
    game = AirportGame(np.arange(1.0, 9))
    three = ShapleyValuer(utility=game, sampler="antithetic", stopping=MaxSamples(3),
                          random_state=0, warm_start=True).fit()
    assert (three.counts_ == 3).all()  # a pair and a half, not two pairs
    three.set_params(stopping=MaxSamples(8)).fit()
    eight = ShapleyValuer(utility=game, sampler="antithetic", stopping=MaxSamples(8),
                          random_state=0).fit()
    np.testing.assert_allclose(three.values_, eight.values_, atol=1e-12)
    np.testing.assert_array_equal(three.counts_, eight.counts_)


def test_max_time_replaces_the_default_budget():
    v = ShapleyValuer(utility=AirportGame(np.arange(1.0, 5)), sampler="permutation",
                      max_time=0.3, random_state=0)
    v.fit()
    assert v.counts_.min() > 100  # the default of 100 updates did not stop it


def test_rows_without_a_sample_are_nan_not_zero():
    game = AirportGame(np.arange(1.0, 41))
    with pytest.warns(UserWarning, match=r"rows got no sample within the budget; their values "
                                         r"are NaN"):
        v = BanzhafValuer(utility=game, stopping=MaxSamples(2), random_state=0).fit()
    unreached = v.counts_ == 0
    assert unreached.any() and np.isnan(v.values_[unreached]).all()
    assert np.isfinite(v.values_[~unreached]).all()


def test_knn_single_class_coalitions_in_cross_valuation_are_not_failures(clf_data):
    X, y, _, _ = clf_data  # degenerate coalitions get default_score by design, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", UtilityFitWarning)
        ShapleyValuer(KNeighborsClassifier(1), max_updates=2, cv=2, random_state=0).fit(X, y)
