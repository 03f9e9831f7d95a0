"""ClasswiseShapleyValuer: brute-force oracles of the definition, convergence, invariance, errors.

The oracle is the definition of Schoch, Xu & Ji (2022), written out here by
enumeration, independently of the implementation::

    v_i = 2^-|T_{-c}| sum_{R subset T_{-c}} sum_{S subset T_c - i}
          1 / (|T_c| C(|T_c| - 1, |S|)) * (u_c(S + i + R) - u_c(S + R))
    u_c(S) = a_S(D_c) * exp(a_S(D_{-c})),  a_S(D') = correct predictions on D' / |D|
"""

import itertools
import math
import warnings

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, make_scorer
from sklearn.neighbors import KNeighborsClassifier
from sklearn.tree import DecisionTreeClassifier

from skdvl import ShapleyValuer, UtilityFitWarning
from skdvl.sampling import FixedTruncation, PermutationSampler, RelativeTruncation
from skdvl.utility import ClasswiseModelUtility
from skdvl.utils.estimator_checks import (
    check_valuer_clone_and_refit,
    check_valuer_n_jobs_invariance,
    check_valuer_pandas_alignment,
    check_valuer_permutation_equivariance,
    check_valuer_seeding,
    check_valuer_shape,
)
from skdvl.valuation._classwise import (
    ClasswiseExactSampler,
    ClasswisePermutationSampler,
    ClasswiseShapleyValuer,
)


# --------------------------------------------------------------------------- oracles
def model_utility_oracle(model, X, y, X_val, y_val):
    """u(S, c) of the definition: a fresh fit per coalition, 0 for empty / one-class S."""
    n_val, fits = len(y_val), {}

    def u(S, c):
        if S not in fits:
            rows = sorted(S)
            if len(set(y[rows])) < 2:
                fits[S] = None
            else:
                fits[S] = clone(model).fit(X[rows], y[rows]).predict(X_val) == y_val
        correct = fits[S]
        if correct is None:
            return 0.0
        return correct[y_val == c].sum() / n_val * math.exp(correct[y_val != c].sum() / n_val)

    return u


def brute_force_classwise(u, labels):
    """The class-wise Shapley value of every player, by enumerating contexts and coalitions."""
    n = len(labels)
    values = np.zeros(n)
    for i in range(n):
        c = labels[i]
        same = [j for j in range(n) if labels[j] == c and j != i]
        other = [j for j in range(n) if labels[j] != c]
        n_c = len(same) + 1
        for r in range(len(other) + 1):
            for R in itertools.combinations(other, r):
                for s in range(len(same) + 1):
                    w = 1 / (n_c * math.comb(n_c - 1, s)) / 2 ** len(other)
                    for S in itertools.combinations(same, s):
                        values[i] += w * (u(frozenset(S + R + (i,)), c) - u(frozenset(S + R), c))
    return values


def normalized_oracle(values, labels, in_class_full):
    """Each class's values scaled to sum to the in-class score of all rows."""
    out = values.copy()
    for k, c in enumerate(np.unique(labels)):
        members = labels == c
        out[members] *= in_class_full[k] / values[members].sum()
    return out


class ToyClasswiseUtility:
    """A cheap, non-additive class-wise utility: tanh of the weights of a coalition.

    In-class score of class ``c``: ``tanh(sum of the weights of its rows of class c)``;
    out-of-class: half the tanh of the others'. Follows the custom-utility protocol.
    """

    def __init__(self, labels, weights):
        self.labels = np.asarray(labels)
        self.n_players = len(self.labels)
        self.weights = np.asarray(weights, dtype=float)
        self.classes = np.unique(self.labels)

    def __call__(self, subset):
        subset = np.asarray(subset, dtype=np.intp)
        w, lab = self.weights[subset], self.labels[subset]
        in_class = [np.tanh(w[lab == c].sum()) for c in self.classes]
        out = [0.5 * np.tanh(w[lab != c].sum()) for c in self.classes]
        return np.array([in_class, out])

    def u(self, S, c):
        k = int(np.searchsorted(self.classes, c))
        scores = self(sorted(S))
        return scores[0, k] * math.exp(scores[1, k])


@pytest.fixture(scope="module")
def small():
    """8 training rows (two classes, 4 each), 30 validation rows, some labels flipped."""
    X, y = make_classification(n_samples=38, n_features=4, n_informative=3, n_redundant=0,
                               flip_y=0.15, random_state=2)
    order = np.r_[np.flatnonzero(y == 0)[:4], np.flatnonzero(y == 1)[:4]]
    val = np.setdiff1d(np.arange(38), order)
    return X[order], y[order], X[val], y[val]


@pytest.fixture(scope="module")
def three_classes():
    X, y = make_classification(n_samples=47, n_features=4, n_informative=3, n_redundant=0,
                               n_classes=3, n_clusters_per_class=1, random_state=5)
    train = np.r_[[np.flatnonzero(y == k)[:3] for k in range(3)]].ravel()[:7]
    val = np.setdiff1d(np.arange(47), train)
    return X[train], y[train], X[val], y[val]


def _counting(est):
    class Counting(type(est)):
        n_fits = 0

        def fit(self, X, y):
            type(self).n_fits += 1
            return super().fit(X, y)

    Counting.__name__ = f"Counting{type(est).__name__}"
    return Counting(**est.get_params())


# --------------------------------------------------------------------------- exact values
@pytest.mark.parametrize("model", [KNeighborsClassifier(n_neighbors=1),
                                   LogisticRegression(max_iter=1000)],
                         ids=["knn", "logistic"])
def test_exact_values_equal_brute_force_enumeration_of_the_definition(small, model):
    X, y, Xv, yv = small
    expected = brute_force_classwise(model_utility_oracle(model, X, y, Xv, yv), y)
    v = ClasswiseShapleyValuer(model, sampler="exact", normalize=False, batch_fit=False)
    v.fit(X, y, X_val=Xv, y_val=yv)
    np.testing.assert_allclose(v.values_, expected, rtol=0, atol=1e-12)
    assert np.all(v.stderr_ == 0) and np.all(v.counts_ == 2**7) and v.converged_


def test_exact_normalised_values_equal_the_normalised_oracle(small):
    X, y, Xv, yv = small
    model = KNeighborsClassifier(n_neighbors=1)
    raw = brute_force_classwise(model_utility_oracle(model, X, y, Xv, yv), y)
    full = clone(model).fit(X, y).predict(Xv) == yv
    in_class = [full[yv == c].sum() / len(yv) for c in np.unique(y)]
    v = ClasswiseShapleyValuer(model, sampler="exact").fit(X, y, X_val=Xv, y_val=yv)
    np.testing.assert_allclose(v.values_, normalized_oracle(raw, y, in_class), atol=1e-12)
    for k, c in enumerate(np.unique(y)):  # each class sums to its in-class accuracy
        assert v.values_[y == c].sum() == pytest.approx(in_class[k], abs=1e-12)


def test_exact_values_of_three_classes_equal_the_oracle_with_one_fit_per_coalition(
        three_classes):
    X, y, Xv, yv = three_classes
    model = _counting(KNeighborsClassifier(n_neighbors=1))
    expected = brute_force_classwise(model_utility_oracle(model, X, y, Xv, yv), y)
    type(model).n_fits = 0
    v = ClasswiseShapleyValuer(model, sampler="exact", normalize=False).fit(
        X, y, X_val=Xv, y_val=yv)
    np.testing.assert_allclose(v.values_, expected, atol=1e-12)
    # 3 x 2^7 class-wise utilities from 2^7 coalitions: each fitted once for every class
    assert v.n_utility_evaluations_ == 2**7
    n_multi = sum(len(set(y[list(S)])) > 1 for r in range(8)
                  for S in itertools.combinations(range(7), r))
    assert type(model).n_fits == n_multi


def test_exact_values_of_a_custom_utility_equal_brute_force():
    toy = ToyClasswiseUtility([0, 1, 0, 1, 1, 0, 2, 1, 0], [0.3, -0.2, 0.5, 0.1, 0.4, 0.2,
                                                           0.6, -0.1, 0.05])
    v = ClasswiseShapleyValuer(utility=toy, sampler="exact", normalize=False).fit()
    np.testing.assert_allclose(v.values_, brute_force_classwise(toy.u, toy.labels),
                               atol=1e-12)
    assert v.n_utility_evaluations_ == 2**9 and v.fit_path_ == "custom utility"


# --------------------------------------------------------------------------- Monte Carlo
def test_monte_carlo_converges_to_the_exact_values():
    toy = ToyClasswiseUtility([0, 1, 0, 1, 1, 0, 1, 0, 0, 1],
                              [0.3, -0.2, 0.5, 0.1, 0.4, 0.2, 0.6, -0.1, 0.05, 0.25])
    exact = brute_force_classwise(toy.u, toy.labels)
    errors = []
    for budget in (50, 3000):
        v = ClasswiseShapleyValuer(utility=toy, max_updates=budget, normalize=False,
                                   random_state=1).fit()
        assert np.all(v.counts_ == budget)
        errors.append(np.abs(v.values_ - exact).max())
        # unbiased: the errors are those the standard errors announce
        assert np.all(np.abs(v.values_ - exact) <= 4.5 * v.stderr_ + 1e-12)
    assert errors[1] < 0.01 and errors[1] < errors[0] / 4


def test_monte_carlo_of_a_model_converges_to_the_exact_values(small):
    X, y, Xv, yv = small
    model = KNeighborsClassifier(n_neighbors=1)
    exact = ClasswiseShapleyValuer(model, sampler="exact").fit(X, y, X_val=Xv, y_val=yv)
    mc = ClasswiseShapleyValuer(model, max_updates=2000, random_state=0).fit(
        X, y, X_val=Xv, y_val=yv)
    np.testing.assert_allclose(mc.values_, exact.values_, atol=0.02)
    # the engine's cache: 2^8 coalitions at most, whatever the number of permutations
    assert mc.n_utility_evaluations_ <= 2**8


def test_truncation_saves_evaluations_and_changes_values_little():
    X, y = make_classification(n_samples=90, n_features=5, random_state=0)
    kw = dict(max_updates=20, random_state=0)
    full = ClasswiseShapleyValuer(LogisticRegression(), **kw).fit(
        X[:50], y[:50], X_val=X[50:], y_val=y[50:])
    cut = ClasswiseShapleyValuer(LogisticRegression(), truncation=0.05, **kw).fit(
        X[:50], y[:50], X_val=X[50:], y_val=y[50:])
    assert cut.n_utility_evaluations_ < 0.8 * full.n_utility_evaluations_
    assert np.corrcoef(cut.values_, full.values_)[0, 1] > 0.8
    fixed = ClasswiseShapleyValuer(
        LogisticRegression(), sampler=ClasswisePermutationSampler(FixedTruncation(0.5)),
        **kw).fit(X[:50], y[:50], X_val=X[50:], y_val=y[50:])
    assert fixed.n_utility_evaluations_ < 0.7 * full.n_utility_evaluations_


def test_a_permutation_starts_from_the_context_alone():
    """The first in-class marginal is u_c(i + R) - u_c(R): with u_c(R) > 0 for some R
    (three classes), a class whose rows add nothing has values 0 exactly."""

    class Flat(ToyClasswiseUtility):
        def __call__(self, subset):  # class 0's rows change nothing; the others do
            scores = super().__call__(subset)
            scores[0, 0] = 0.2 + 0.1 * np.isin(subset, np.flatnonzero(self.labels != 0)).sum()
            return scores

    toy = Flat([0, 1, 2, 0, 1, 2, 0], [0.3, 0.2, 0.5, 0.1, 0.4, 0.2, 0.6])
    v = ClasswiseShapleyValuer(utility=toy, max_updates=30, normalize=False,
                               random_state=0).fit()
    np.testing.assert_array_equal(v.values_[toy.labels == 0], 0.0)


# --------------------------------------------------------------------------- the utility
def test_one_fit_gives_in_and_out_of_class_scores_of_every_class(three_classes):
    X, y, Xv, yv = three_classes
    model = _counting(KNeighborsClassifier(n_neighbors=1))
    type(model).n_fits = 0
    u = ClasswiseModelUtility(model, X, y, Xv, yv)
    scores = u(np.arange(7))
    correct = clone(model).fit(X, y).predict(Xv) == yv
    assert scores.shape == (2, 3)
    np.testing.assert_allclose(scores[0], [correct[yv == c].sum() / len(yv) for c in range(3)])
    np.testing.assert_allclose(scores.sum(axis=0), correct.mean())  # in + out = accuracy
    u(np.arange(7)[::-1])
    assert type(model).n_fits == 2 and u.n_evaluations == 1  # one by the oracle, one here


def test_a_scorer_weighs_each_class_by_its_share_of_the_validation_rows(small):
    X, y, Xv, yv = small
    model = KNeighborsClassifier(n_neighbors=1)
    plain = ClasswiseModelUtility(model, X, y, Xv, yv)(np.arange(8))
    scored = ClasswiseModelUtility(model, X, y, Xv, yv,
                                   scoring=make_scorer(accuracy_score))(np.arange(8))
    np.testing.assert_allclose(scored, plain, atol=1e-15)


@pytest.mark.parametrize("make", [lambda: make_classification(
    n_samples=70, n_features=4, random_state=1), lambda: make_classification(
    n_samples=70, n_features=4, n_informative=3, n_redundant=0, n_classes=3,
    n_clusters_per_class=1, random_state=1)], ids=["binary", "three classes"])
def test_batched_fits_give_the_values_of_per_coalition_fits(make):
    X, y = make()
    kw = dict(max_updates=8, random_state=0)
    lr = LogisticRegression(max_iter=1000, tol=1e-10)
    batched = ClasswiseShapleyValuer(lr, **kw).fit(X[:30], y[:30], X_val=X[30:], y_val=y[30:])
    plain = ClasswiseShapleyValuer(lr, batch_fit=False, **kw).fit(
        X[:30], y[:30], X_val=X[30:], y_val=y[30:])
    assert batched.fit_path_ == "batched" and plain.fit_path_.startswith("per-coalition")
    # the same optimum to ~1e-6: at most a validation point near a boundary moves
    np.testing.assert_allclose(batched.values_, plain.values_, atol=0.03)
    assert np.corrcoef(batched.values_, plain.values_)[0, 1] > 0.98
    assert batched.n_utility_evaluations_ == plain.n_utility_evaluations_


def test_custom_model_utility_gives_the_values_of_the_data_mode(small):
    X, y, Xv, yv = small
    model = KNeighborsClassifier(n_neighbors=1)
    data = ClasswiseShapleyValuer(model, max_updates=6, random_state=3).fit(
        X, y, X_val=Xv, y_val=yv)
    custom = ClasswiseShapleyValuer(utility=ClasswiseModelUtility(model, X, y, Xv, yv),
                                    max_updates=6, random_state=3).fit()
    np.testing.assert_array_equal(custom.values_, data.values_)
    np.testing.assert_array_equal(custom.stderr_, data.stderr_)


# --------------------------------------------------------------------------- invariances
@pytest.mark.parametrize("valuer", [
    ClasswiseShapleyValuer(LogisticRegression(), max_updates=4, truncation=0.05,
                           random_state=0),
    ClasswiseShapleyValuer(KNeighborsClassifier(n_neighbors=1), max_updates=3, cv=2,
                           random_state=0),
], ids=["batched, truncated", "per-coalition, cross-valuation"])
def test_values_identical_for_any_n_jobs(valuer):
    check_valuer_n_jobs_invariance(valuer)


@pytest.mark.parametrize("check", [
    check_valuer_shape, check_valuer_permutation_equivariance, check_valuer_seeding,
    check_valuer_clone_and_refit, check_valuer_pandas_alignment,
], ids=lambda c: c.__name__)
def test_passes_the_valuer_checks(check):
    check(ClasswiseShapleyValuer(KNeighborsClassifier(n_neighbors=1), max_updates=2, cv=2,
                                 random_state=0))


def test_warm_start_continues_to_the_values_of_one_longer_fit(small):
    X, y, Xv, yv = small
    model = KNeighborsClassifier(n_neighbors=1)
    once = ClasswiseShapleyValuer(model, max_updates=10, random_state=0).fit(
        X, y, X_val=Xv, y_val=yv)
    v = ClasswiseShapleyValuer(model, max_updates=4, random_state=0, warm_start=True)
    v.fit(X, y, X_val=Xv, y_val=yv)
    v.set_params(max_updates=10).fit(X, y, X_val=Xv, y_val=yv)
    np.testing.assert_allclose(v.values_, once.values_, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(v.counts_, once.counts_)


def test_cross_valuation_normalises_each_game():
    X, y = make_classification(n_samples=40, n_features=4, random_state=0)
    v = ClasswiseShapleyValuer(KNeighborsClassifier(n_neighbors=1), max_updates=5, cv=2,
                               random_state=0).fit(X, y)
    assert v.values_.shape == (40,) and np.isfinite(v.values_).all()
    assert np.all(v.counts_ == 5)


def test_finds_flipped_labels():
    X, y = make_classification(n_samples=120, n_features=4, n_informative=2, n_redundant=0,
                               n_clusters_per_class=1, class_sep=2.0, random_state=0)
    y_noisy = y.copy()
    flipped = np.zeros(60, bool)
    flipped[::6] = True
    y_noisy[:60][flipped] = 1 - y[:60][flipped]
    v = ClasswiseShapleyValuer(LogisticRegression(), max_updates=30, random_state=0).fit(
        X[:60], y_noisy[:60], X_val=X[60:], y_val=y[60:])
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(flipped, -v.values_) > 0.8


# --------------------------------------------------------------------------- normalisation
def test_a_class_whose_values_sum_below_zero_is_not_normalised_and_warned():
    toy = ToyClasswiseUtility([0, 1, 0, 1], [-0.5, 0.3, -0.2, 0.4])  # class 0 hurts itself
    raw = ClasswiseShapleyValuer(utility=toy, sampler="exact", normalize=False).fit()
    with pytest.warns(UserWarning, match=r"values of class 0 \(sum -.*\) sum to less than "
                                         r"0, so they are not normalised"):
        v = ClasswiseShapleyValuer(utility=toy, sampler="exact").fit()
    np.testing.assert_array_equal(v.values_[[0, 2]], raw.values_[[0, 2]])
    full_in_class = toy(np.arange(4))[0, 1]
    assert v.values_[[1, 3]].sum() == pytest.approx(full_in_class)


def test_normalise_scales_standard_errors_with_the_values(small):
    X, y, Xv, yv = small
    kw = dict(max_updates=10, random_state=0)
    model = KNeighborsClassifier(n_neighbors=1)
    raw = ClasswiseShapleyValuer(model, normalize=False, **kw).fit(X, y, X_val=Xv, y_val=yv)
    v = ClasswiseShapleyValuer(model, **kw).fit(X, y, X_val=Xv, y_val=yv)
    for c in (0, 1):
        m = y == c
        scale = v.values_[m].sum() / raw.values_[m].sum()
        np.testing.assert_allclose(v.values_[m], raw.values_[m] * scale)
        np.testing.assert_allclose(v.stderr_[m], raw.stderr_[m] * abs(scale))


# --------------------------------------------------------------------------- errors
class _Failing(ClassifierMixin, BaseEstimator):
    def fit(self, X, y):
        if len(y) > 4:
            raise RuntimeError("too many rows for this model")
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[0])


def test_a_regressor_is_refused_naming_it(small):
    X, y, Xv, yv = small
    with pytest.raises(ValueError, match=r"needs a classifier: .* Got estimator=Ridge\(\), "
                                         r"which is not a classifier"):
        ClasswiseShapleyValuer(Ridge()).fit(X, y, X_val=Xv, y_val=yv)


@pytest.mark.parametrize("arg", ["y", "y_val"])
def test_a_continuous_target_is_refused(small, arg):
    X, y, Xv, yv = small
    data = {"y": y, "y_val": yv}
    data[arg] = data[arg] + 0.5 * np.linspace(0, 1, len(data[arg]))
    with pytest.raises(ValueError, match=rf"classification problem, but {arg} is continuous "
                                         r"\(e.g. "):
        ClasswiseShapleyValuer().fit(X, data["y"], X_val=Xv, y_val=data["y_val"])


def test_a_single_class_is_refused(small):
    X, y, Xv, yv = small
    with pytest.raises(ValueError, match="needs at least 2 classes in y"):
        ClasswiseShapleyValuer().fit(X, np.zeros(8, int), X_val=Xv, y_val=yv)


@pytest.mark.parametrize("params, match", [
    (dict(sampler="kernel"), r"must be one of \['exact', 'permutation'\] or a class-wise "
                             r"sampler instance. Got 'kernel' instead"),
    (dict(sampler=PermutationSampler()), r"must be 'permutation', 'exact', a "
                                         r"ClasswisePermutationSampler .* Got "
                                         r"PermutationSampler\(\) instead"),
    (dict(sampler="exact", truncation=0.1), r"truncation=0.1 applies to the permutation "
                                            "sampler only"),
    (dict(sampler=ClasswisePermutationSampler(), truncation=0.1),
     "Pass truncation to the sampler instance"),
    (dict(sampler=ClasswiseExactSampler(max_players=4)),
     r"n = 8 players is more than max_players = 4"),
    (dict(truncation=1.5), r"truncation must be a relative tolerance in \[0, 1\).* Got 1.5 "),
    (dict(batch_fit=True, estimator=KNeighborsClassifier()),
     "batch_fit=True, but the batched fit cannot be used: KNeighborsClassifier is not "
     "supported"),
    (dict(batch_fit=True, scoring="balanced_accuracy"),
     "scoring='balanced_accuracy' is applied by scikit-learn"),
    (dict(max_updates=None), "needs a budget"),
    (dict(scoring="nope"), "The 'scoring' parameter of check_scoring must be"),
])
def test_bad_parameters_are_refused_naming_them(small, params, match):
    X, y, Xv, yv = small
    with pytest.raises(ValueError, match=match):
        ClasswiseShapleyValuer(**params).fit(X, y, X_val=Xv, y_val=yv)


@pytest.mark.parametrize("params, match", [
    (dict(normalize="yes"), r"The 'normalize' parameter of ClasswiseShapleyValuer must be "
                            r"an instance of 'bool'"),
    (dict(truncation="a lot"), r"The 'truncation' parameter of ClasswiseShapleyValuer"),
    (dict(estimator="svm"), r"The 'estimator' parameter of ClasswiseShapleyValuer"),
    (dict(default_score=np.inf), r"The 'default_score' parameter"),
])
def test_parameter_types_are_validated(small, params, match):
    X, y, Xv, yv = small
    with pytest.raises(ValueError, match=match):  # InvalidParameterError
        ClasswiseShapleyValuer(**params).fit(X, y, X_val=Xv, y_val=yv)


def test_sampler_instances_validate_their_parameters():
    with pytest.raises(ValueError, match="truncation must be None, a relative tolerance"):
        ClasswisePermutationSampler(truncation="x")
    with pytest.raises(ValueError, match=r"max_players must be an integer in \[1, 62\]"):
        ClasswiseExactSampler(max_players=0)


def test_class_wise_samplers_refuse_a_utility_without_labels():
    from skdvl.games import SymmetricVotingGame

    with pytest.raises(ValueError, match="values class-wise utilities .* for "
                                         "ClasswiseShapleyValuer; it got SymmetricVotingGame, "
                                         "which has no 'labels'"):
        ShapleyValuer(utility=SymmetricVotingGame(4),
                      sampler=ClasswisePermutationSampler()).fit()


class _NoLabels:
    n_players = 4

    def __call__(self, subset):
        return np.zeros((2, 2))


class _WrongShape(ToyClasswiseUtility):
    def __call__(self, subset):
        return super().__call__(subset)[0]


@pytest.mark.parametrize("utility, match", [
    (_NoLabels(), r"must have 'labels', the class of each of its n_players=4 players "
                  r"\(an array of shape \(4,\)\). Got no labels instead"),
    (ToyClasswiseUtility.__new__(ToyClasswiseUtility), "must have an integer n_players"),
    (_WrongShape([0, 1, 0], [1.0, 2.0, 3.0]), r"must return an array of shape \(2, "
                                              r"n_classes\) = \(2, 2\).* Got shape \(2,\)"),
])
def test_malformed_custom_utilities_are_refused(utility, match):
    with pytest.raises(ValueError, match=match):
        ClasswiseShapleyValuer(utility=utility, max_updates=2, random_state=0).fit()


def test_labels_of_the_wrong_shape_are_refused():
    toy = ToyClasswiseUtility([0, 1, 0, 1], [1.0, 1.0, 1.0, 1.0])
    toy.labels = np.array([0, 1, 0])
    with pytest.raises(ValueError, match=r"an array of shape \(4,\)\). Got shape \(3,\)"):
        ClasswiseShapleyValuer(utility=toy).fit()


def test_a_custom_utility_takes_no_data(small):
    X, y, _, _ = small
    with pytest.raises(ValueError, match=r"fit\(\) takes no data"):
        ClasswiseShapleyValuer(utility=ToyClasswiseUtility(y, np.ones(8))).fit(X, y)
    with pytest.raises(ValueError, match="requires y to be passed"):
        ClasswiseShapleyValuer().fit(X)


def test_failed_fits_are_reported_once_or_raised(small):
    X, y, Xv, yv = small
    with pytest.warns(UtilityFitWarning, match="RuntimeError: too many rows"):
        v = ClasswiseShapleyValuer(_Failing(), max_updates=3, random_state=0).fit(
            X, y, X_val=Xv, y_val=yv)
    assert np.isfinite(v.values_).all()
    with pytest.raises(RuntimeError, match="too many rows"):
        ClasswiseShapleyValuer(_Failing(), max_updates=3, error_score="raise",
                               random_state=0).fit(X, y, X_val=Xv, y_val=yv)


def test_non_finite_custom_scores_count_as_failures():
    class Nan(ToyClasswiseUtility):
        def __call__(self, subset):
            out = super().__call__(subset)
            return out * np.nan if len(subset) == 2 else out

    toy = Nan([0, 1, 0, 1], [0.5, 0.3, 0.2, 0.4])
    with pytest.warns(UtilityFitWarning, match="utility returned"):
        ClasswiseShapleyValuer(utility=toy, sampler="exact").fit()
    with pytest.raises(ValueError, match=r"returned .* \(error_score='raise'\)"):
        ClasswiseShapleyValuer(utility=toy, sampler="exact", error_score="raise").fit()


def test_reweight_is_refused():
    v = ClasswiseShapleyValuer(utility=ToyClasswiseUtility([0, 1], [1.0, 1.0]),
                               sampler="exact").fit()
    with pytest.raises(ValueError, match="cannot reweight its samples"):
        v.reweight(ShapleyValuer())


def test_decision_tree_and_pandas_input_work(small):
    pd = pytest.importorskip("pandas")
    X, y, Xv, yv = small
    idx = [f"r{i}" for i in range(8)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        v = ClasswiseShapleyValuer(DecisionTreeClassifier(random_state=0), max_updates=3,
                                   random_state=0).fit(pd.DataFrame(X, index=idx),
                                                       pd.Series(y, index=idx),
                                                       X_val=Xv, y_val=yv)
    assert list(v.values_.index) == idx


def test_relative_truncation_instance_is_accepted(small):
    X, y, Xv, yv = small
    v = ClasswiseShapleyValuer(KNeighborsClassifier(n_neighbors=1),
                               sampler=ClasswisePermutationSampler(RelativeTruncation(0.1)),
                               max_updates=3, random_state=0).fit(X, y, X_val=Xv, y_val=yv)
    assert np.all(v.counts_ == 3)
