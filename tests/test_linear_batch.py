"""The batched linear fits of skdvl.utility._linear_batch, against scikit-learn itself."""

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer
from sklearn.decomposition import PCA
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.metrics import get_scorer
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.svm import SVC
from sklearn.utils.validation import check_is_fitted

import skdvl.utility._linear_batch as lb
import skdvl.utility._linear_solvers as ls
from skdvl.utility._linear_batch import BatchPlan, plan_batched


@pytest.fixture
def rng():
    return np.random.default_rng(20261202)


# --------------------------------------------------------------------------- helpers

def make_classification_data(rng, n=60, d=4, n_classes=2, scales=None, sep=1.5):
    X = rng.normal(size=(n, d))
    logits = X @ rng.normal(size=(d, n_classes)) * sep
    y = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)
    if scales is not None:
        X = X * scales
    return X, y


def random_masks(rng, n, b, low=2, high=None):
    high = n if high is None else high
    masks = np.zeros((b, n), bool)
    for i, m in enumerate(rng.integers(low, high + 1, size=b)):
        masks[i, rng.choice(n, size=m, replace=False)] = True
    return masks


def final_step(est):
    return est.steps[-1] if isinstance(est, Pipeline) else (None, est)


def tight(est):
    """The estimator with its solver run to (near) machine precision."""
    name, model = final_step(est)
    prefix = f"{name}__" if name else ""
    if isinstance(model, LogisticRegression):
        return clone(est).set_params(**{f"{prefix}solver": "newton-cholesky",
                                        f"{prefix}tol": 1e-13, f"{prefix}max_iter": 1000})
    return clone(est)


def sklearn_fit(est, X, y, mask, sample_weight=None):
    rows = np.flatnonzero(mask)
    kwargs = {}
    if sample_weight is not None:
        name, _ = final_step(est)
        kwargs = {f"{name}__sample_weight" if name else "sample_weight": sample_weight[rows]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return clone(est).fit(X[rows], y[rows], **kwargs)


def assert_same_model(ours, theirs, rtol=1e-6):
    """Coefficients and intercepts equal to ``rtol`` of the largest of them."""
    _, a = final_step(ours)
    _, b = final_step(theirs)
    if hasattr(b, "classes_"):
        np.testing.assert_array_equal(a.classes_, b.classes_)
    scale = max(np.abs(b.coef_).max(), np.abs(b.intercept_).max(), 1e-12)
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=rtol, atol=rtol * scale)
    np.testing.assert_allclose(a.intercept_, b.intercept_, rtol=rtol, atol=rtol * scale)
    assert np.shape(a.coef_) == np.shape(b.coef_)


def check_against_sklearn(est, X, y, masks, sample_weight=None, rtol=1e-6):
    plan = plan_batched(est)
    assert isinstance(plan, BatchPlan), plan
    fitted = plan.fit(X, y, masks, sample_weight=sample_weight)
    assert not fitted.failed.any()
    oracle = tight(est)
    for i in np.flatnonzero(~fitted.degenerate):
        theirs = sklearn_fit(oracle, X, y, masks[i], sample_weight)
        assert_same_model(plan.build_estimator(fitted, i), theirs, rtol)
    return plan, fitted


# --------------------------------------------------------------------------- plan

#: scikit-learn >= 1.8 chooses the penalty by l1_ratio; before, l1_ratio without
#: penalty="elasticnet" is ignored (an L2 fit, which the plan rightly accepts)
_L1_RATIO_CHOOSES = LogisticRegression().get_params()["penalty"] == "deprecated"


@pytest.mark.parametrize("estimator, reason", [
    *([(LogisticRegression(l1_ratio=1.0), "l1_ratio"),
       (LogisticRegression(l1_ratio=0.5), "l1_ratio")] if _L1_RATIO_CHOOSES else []),
    (LogisticRegression(penalty="l1"), "penalty='l1'"),
    (LogisticRegression(penalty="elasticnet"), "penalty='elasticnet'"),
    (LogisticRegression(penalty=None), "penalty=None"),
    (LogisticRegression(C=np.inf), "C=inf"),
    (LogisticRegression(solver="liblinear"), "liblinear"),
    (LogisticRegression(dual=True), "dual"),
    (LogisticRegression(warm_start=True), "warm_start"),
    (LogisticRegression(max_iter=5), "max_iter=5"),
    (LogisticRegression(tol=0.1), "tol=0.1"),
    (Ridge(positive=True), "positive"),
    (Ridge(alpha=0.0), "alpha=0.0"),
    (Ridge(alpha=np.array([1.0, 2.0])), "alpha"),
    (Ridge(solver="sag", tol=1e-2), "solver='sag'"),
    (LinearRegression(positive=True), "positive"),
    (SVC(), "SVC is not supported"),
    (make_pipeline(MinMaxScaler(), LogisticRegression()), "StandardScaler"),
    (make_pipeline(StandardScaler(), PCA(), LogisticRegression()), "StandardScaler"),
    (make_pipeline(StandardScaler(), LogisticRegression(solver="liblinear")), "liblinear"),
    (type("MyLogistic", (LogisticRegression,), {})(), "MyLogistic is not supported"),
])
def test_plan_gives_a_reason_for_each_unsupported_estimator(estimator, reason):
    out = plan_batched(estimator)
    assert isinstance(out, str)
    assert reason in out


@pytest.mark.parametrize("estimator", [
    LogisticRegression(), LogisticRegression(penalty="l2"), LogisticRegression(l1_ratio=None),
    LogisticRegression(solver="newton-cg", C=3.0, class_weight="balanced"),
    LogisticRegression(solver="saga", fit_intercept=False, class_weight={0: 2.0}),
    Ridge(alpha=0.1), Ridge(solver="svd", fit_intercept=False), LinearRegression(),
    make_pipeline(StandardScaler(with_mean=False), LogisticRegression()),
    Pipeline([("s", StandardScaler()), ("m", Ridge())]),
])
def test_plan_accepts_supported_estimators(estimator):
    plan = plan_batched(estimator, "accuracy" if hasattr(estimator, "predict_proba") else "r2")
    assert isinstance(plan, BatchPlan)
    assert plan.vectorised


def test_other_scorers_are_not_vectorised():
    assert not plan_batched(LogisticRegression(), "roc_auc").vectorised
    assert not plan_batched(Ridge(), "accuracy").vectorised
    with pytest.raises(ValueError):
        plan_batched(Ridge(), "not-a-scorer")


# --------------------------------------------------------------------------- logistic

@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n_classes=st.sampled_from([2, 3, 4]),
       fit_intercept=st.booleans(), C=st.sampled_from([0.01, 1.0, 100.0]),
       class_weight=st.sampled_from([None, "balanced", "dict"]),
       weighted=st.booleans(), scaled=st.booleans())
def test_logistic_matches_sklearn_optimum(seed, n_classes, fit_intercept, C, class_weight,
                                          weighted, scaled):
    rng = np.random.default_rng(seed)
    X, y = make_classification_data(rng, n=50, d=3, n_classes=n_classes)
    if class_weight == "dict":
        class_weight = {k: float(k + 1) for k in range(n_classes)}
    model = LogisticRegression(C=C, fit_intercept=fit_intercept, class_weight=class_weight)
    est = make_pipeline(StandardScaler(), model) if scaled else model
    sw = rng.uniform(0.2, 3.0, size=50) if weighted else None
    check_against_sklearn(est, X, y, random_masks(rng, 50, 6, low=2), sw)


def test_multinomial_newton_cg_on_more_features(rng):
    X, y = make_classification_data(rng, n=80, d=12, n_classes=5)
    sw = rng.uniform(0.5, 2.0, size=80)
    est = make_pipeline(StandardScaler(), LogisticRegression(C=2.0, class_weight="balanced"))
    masks = random_masks(rng, 80, 5, low=20)
    plan, fitted = check_against_sklearn(est, X, y, masks, sw)
    assert fitted.coef.shape == (5, 5, 12) and fitted.present.shape == (5, 5)
    np.testing.assert_array_equal(fitted.n_samples, masks.sum(axis=1))


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg", "sag"])
def test_logistic_solvers_share_one_optimum(rng, solver):
    X, y = make_classification_data(rng, n=40, d=3, n_classes=3)
    X[:, 0] += 5.0
    plan, fitted = check_against_sklearn(
        LogisticRegression(solver=solver), X, y, random_masks(rng, 40, 5, low=10))
    assert plan.kind == "logistic"


def test_logistic_feature_scales_and_tiny_coalitions(rng):
    scales = np.array([1e-3, 1.0, 1e3])
    X, y = make_classification_data(rng, n=40, d=3, scales=scales)
    masks = random_masks(rng, 40, 10, low=2, high=6)
    plan = plan_batched(LogisticRegression())
    fitted = plan.fit(X, y, masks)
    assert not fitted.failed.any()
    for i in np.flatnonzero(~fitted.degenerate):
        ours = plan.build_estimator(fitted, i)
        theirs = sklearn_fit(tight(LogisticRegression()), X, y, masks[i])
        # compare in the units of the features (coefficient times feature scale)
        ref = np.abs(theirs.coef_ * scales).max()
        np.testing.assert_allclose(ours.coef_ * scales, theirs.coef_ * scales,
                                   rtol=1e-6, atol=1e-6 * ref)
        np.testing.assert_allclose(ours.intercept_, theirs.intercept_, rtol=1e-6,
                                   atol=1e-6 * max(ref, 1.0))


def test_logistic_separable_coalitions_converge(rng):
    X = rng.normal(size=(30, 2))
    y = (X[:, 0] > 0).astype(int)  # separable: only the penalty keeps w finite
    for C in (1.0, 1e4):
        check_against_sklearn(LogisticRegression(C=C), X, y, random_masks(rng, 30, 6, low=4))


def test_multiclass_coalition_with_missing_classes(rng):
    X, y = make_classification_data(rng, n=60, d=3, n_classes=4)
    masks = np.zeros((3, 60), bool)
    masks[0, np.flatnonzero(y != 3)] = True  # three of four classes: multinomial
    masks[1, np.flatnonzero(y <= 1)] = True  # two classes: a binary fit, as sklearn's
    masks[2, np.flatnonzero(y == 2)[:5]] = True  # one class: degenerate
    plan, fitted = check_against_sklearn(LogisticRegression(), X, y, masks)
    np.testing.assert_array_equal(fitted.degenerate, [False, False, True])
    assert plan.build_estimator(fitted, 0).classes_.tolist() == [0, 1, 2]
    binary = plan.build_estimator(fitted, 1)
    assert binary.classes_.tolist() == [0, 1] and binary.coef_.shape == (1, 3)
    # predictions only among the present classes, scores as sklearn's scorers
    for scoring in ("accuracy", "balanced_accuracy"):
        plan = plan_batched(LogisticRegression(), scoring)
        scores = plan.score(fitted, X, y)
        expected = [get_scorer(scoring)(plan.build_estimator(fitted, i), X, y) for i in (0, 1)]
        np.testing.assert_allclose(scores[:2], expected, rtol=1e-12)
        assert np.isnan(scores[2])


def test_string_labels(rng):
    X, y = make_classification_data(rng, n=40, d=2, n_classes=3)
    labels = np.array(["cat", "dog", "emu"])[y]
    check_against_sklearn(LogisticRegression(), X, labels, random_masks(rng, 40, 4, low=10))


def test_class_weight_dict_that_sklearn_refuses_is_failed(rng):
    X, y = make_classification_data(rng, n=40, d=2, n_classes=3)
    est = LogisticRegression(class_weight={0: 1.0, 1: 2.0})
    mask = np.isin(y, [1, 2])[None]
    with pytest.raises(ValueError, match="not in class_weight"):
        clone(est).fit(X[mask[0]], y[mask[0]])
    assert plan_batched(est).fit(X, y, mask).failed[0]


def test_degenerate_and_zero_weight_coalitions_are_flagged(rng):
    X, y = make_classification_data(rng, n=20, d=2)
    masks = np.zeros((4, 20), bool)
    masks[1, np.flatnonzero(y == 1)] = True
    masks[2, :] = True
    masks[3, :] = True
    sw = np.ones(20)
    sw[:] = 1.0
    plan = plan_batched(LogisticRegression())
    fitted = plan.fit(X, y, masks, sample_weight=sw)
    np.testing.assert_array_equal(fitted.degenerate, [True, True, False, False])
    masks[3] = False
    masks[3, :2] = True
    sw[:2] = 0.0
    fitted = plan.fit(X, y, masks, sample_weight=sw)
    assert fitted.failed[3] == (np.unique(y[:2]).size == 2)
    scores = plan.score(fitted, X, y)
    assert np.isnan(scores[:2]).all() and np.isfinite(scores[2])
    reg = plan_batched(Ridge()).fit(X, y * 1.0, masks)
    np.testing.assert_array_equal(reg.degenerate, [True, False, False, False])


@pytest.mark.parametrize("n_classes, d", [(2, 3), (3, 3), (5, 12)])
def test_unconverged_coalitions_are_failed_not_returned(rng, monkeypatch, n_classes, d):
    X, y = make_classification_data(rng, n=60, d=d, n_classes=n_classes)
    monkeypatch.setattr(ls, "_MAX_NEWTON", 1)
    masks = random_masks(rng, 60, 5, low=30)
    fitted = plan_batched(LogisticRegression()).fit(X, y, masks)
    assert fitted.failed.all()
    assert np.isnan(plan_batched(LogisticRegression()).score(fitted, X, y)).all()


def test_result_does_not_depend_on_blocks(rng, monkeypatch):
    X, y = make_classification_data(rng, n=60, d=3, n_classes=3)
    masks = random_masks(rng, 60, 12, low=5)
    plan = plan_batched(make_pipeline(StandardScaler(), LogisticRegression()))
    whole = plan.fit(X, y, masks)
    monkeypatch.setattr(lb, "_BLOCK", 64)
    parts = plan.fit(X, y, masks)
    np.testing.assert_allclose(parts.coef, whole.coef, rtol=1e-8, atol=1e-10)
    one = plan.fit(X, y, masks[5:6])
    np.testing.assert_allclose(one.coef[0], whole.coef[5], rtol=1e-8, atol=1e-10)


def test_accuracy_utility_equals_sklearn_up_to_its_optimisation_error():
    """Batched accuracies against scikit-learn's fits on breast cancer.

    Against a fit run to machine precision the accuracies are equal unless a
    validation point lies within 1e-8 of the decision boundary. Against the
    default fit (lbfgs, tol=1e-4: coefficients typically 0.1-2 % from the
    optimum) a few coalitions differ; each difference is a validation point
    that the default fit's error moved across the boundary.
    """
    X, y = load_breast_cancer(return_X_y=True)
    rng = np.random.default_rng(0)
    perm = rng.permutation(y.size)
    train, val = perm[:300], perm[300:]
    est = make_pipeline(StandardScaler(), LogisticRegression())
    plan = plan_batched(est, "accuracy")
    masks = random_masks(rng, 300, 60, low=20, high=300)
    fitted = plan.fit(X[train], y[train], masks)
    scores = plan.score(fitted, X[val], y[val])
    differ = 0
    for i in range(masks.shape[0]):
        ours = plan.build_estimator(fitted, i).decision_function(X[val])
        exact = sklearn_fit(tight(est), X[train], y[train], masks[i])
        d_exact = exact.decision_function(X[val])
        flips = (d_exact > 0) != (ours > 0)
        assert np.all(np.abs(d_exact[flips]) < 1e-8)
        default = sklearn_fit(est, X[train], y[train], masks[i])
        if default.score(X[val], y[val]) != scores[i]:
            differ += 1
            d_default = default.decision_function(X[val])
            flips = (d_default > 0) != (ours > 0)
            assert flips.any()
            assert np.all(np.abs(ours[flips]) <= np.abs(d_default - ours)[flips])
    assert differ <= 0.1 * masks.shape[0]


# --------------------------------------------------------------------------- least squares

@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("weighted", [True, False])
def test_ridge_matches_sklearn(rng, fit_intercept, weighted):
    X = rng.normal(size=(40, 5)) * np.array([1e-2, 1.0, 1.0, 10.0, 1e2])
    y = X @ rng.normal(size=5) + rng.normal(size=40)
    sw = rng.uniform(0.1, 2.0, size=40) if weighted else None
    for est in (Ridge(alpha=0.5, fit_intercept=fit_intercept),
                make_pipeline(StandardScaler(), Ridge(fit_intercept=fit_intercept))):
        check_against_sklearn(est, X, y, random_masks(rng, 40, 6, low=2), sw, rtol=1e-8)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_linear_regression_min_norm_on_rank_deficient_coalitions(rng, fit_intercept):
    X = rng.normal(size=(30, 8))
    X[:, 7] = X[:, 0] + X[:, 1]  # collinear even on many rows
    y = X @ rng.normal(size=8) + 0.1 * rng.normal(size=30)
    masks = np.concatenate([random_masks(rng, 30, 6, low=2, high=7),  # fewer rows than features
                            random_masks(rng, 30, 4, low=12)])
    plan, fitted = check_against_sklearn(LinearRegression(fit_intercept=fit_intercept),
                                         X, y, masks, rtol=1e-6)
    for i in range(masks.shape[0]):
        theirs = sklearn_fit(LinearRegression(fit_intercept=fit_intercept), X, y, masks[i])
        assert plan.build_estimator(fitted, i).rank_ == theirs.rank_


def test_linear_regression_badly_scaled_features_use_exact_lstsq(rng):
    X = rng.normal(size=(25, 3)) * np.array([1e-4, 1.0, 1e4])
    y = X @ np.array([1e4, 1.0, 1e-4]) + rng.normal(size=25)
    w = rng.uniform(0.5, 2.0, size=25)
    check_against_sklearn(LinearRegression(), X, y, random_masks(rng, 25, 6, low=2), w)


@pytest.mark.parametrize("with_mean, with_std", [(True, True), (False, True), (True, False)])
def test_pipeline_scaler_per_coalition_with_constant_feature(rng, with_mean, with_std):
    X, y = make_classification_data(rng, n=40, d=3)
    X[:, 1] = 7.3  # constant: scale 1, as sklearn's near-constant test
    X[:5, 2] = 2.0  # constant within small coalitions
    masks = random_masks(rng, 40, 6, low=3)
    masks[0] = False
    masks[0, :5] = True
    masks[0, 20:23] = True
    for model in (LogisticRegression(), LinearRegression(), Ridge()):
        est = make_pipeline(StandardScaler(with_mean=with_mean, with_std=with_std), model)
        target = y if isinstance(model, LogisticRegression) else X[:, 0] + y
        plan, fitted = check_against_sklearn(est, X, target, masks)
        for i in np.flatnonzero(~fitted.degenerate):
            ours = plan.build_estimator(fitted, i)[0]
            theirs = sklearn_fit(est, X, target, masks[i])[0]
            np.testing.assert_allclose(ours.mean_, theirs.mean_, rtol=1e-12)
            if with_std:
                np.testing.assert_allclose(ours.var_, theirs.var_, rtol=1e-10, atol=1e-20)
                np.testing.assert_allclose(ours.scale_, theirs.scale_, rtol=1e-10)
            else:
                assert ours.scale_ is None


# --------------------------------------------------------------------------- scoring

@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("scoring", [None, "accuracy", "balanced_accuracy", "neg_log_loss"])
def test_vectorised_classifier_scores_equal_sklearn_scorers(rng, n_classes, scoring):
    X, y = make_classification_data(rng, n=60, d=3, n_classes=n_classes)
    X_val, y_val = make_classification_data(rng, n=30, d=3, n_classes=n_classes)
    est = make_pipeline(StandardScaler(), LogisticRegression(C=0.3))
    plan = plan_batched(est, scoring)
    masks = random_masks(rng, 60, 10, low=2, high=30)
    fitted = plan.fit(X, y, masks)
    scores = plan.score(fitted, X_val, y_val)
    scorer = get_scorer(scoring) if scoring else None
    for i in range(masks.shape[0]):
        if fitted.degenerate[i]:
            assert np.isnan(scores[i])
            continue
        model = plan.build_estimator(fitted, i)
        try:
            expected = scorer(model, X_val, y_val) if scorer else model.score(X_val, y_val)
        except ValueError:  # log loss of a fit that lacks a class of y_val
            assert np.isnan(scores[i])
            continue
        np.testing.assert_allclose(scores[i], expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("scoring", [None, "r2", "neg_mean_squared_error",
                                     "neg_mean_absolute_error"])
def test_vectorised_regressor_scores_equal_sklearn_scorers(rng, scoring):
    X = rng.normal(size=(40, 3))
    y = X @ rng.normal(size=3) + rng.normal(size=40)
    for est in (Ridge(), make_pipeline(StandardScaler(), LinearRegression())):
        plan = plan_batched(est, scoring)
        fitted = plan.fit(X, y, random_masks(rng, 40, 8, low=2))
        scores = plan.score(fitted, X[:15], y[:15])
        for i in range(8):
            model = plan.build_estimator(fitted, i)
            expected = get_scorer(scoring)(model, X[:15], y[:15]) if scoring else model.score(
                X[:15], y[:15])
            np.testing.assert_allclose(scores[i], expected, rtol=1e-12, atol=1e-14)
        constant = plan.score(fitted, X[:15], np.full(15, 2.0))
        if scoring in (None, "r2"):
            assert set(constant) <= {0.0, 1.0}


def test_any_scorer_through_genuine_estimators(rng):
    X, y = make_classification_data(rng, n=50, d=3)
    est = make_pipeline(StandardScaler(), LogisticRegression())

    def scorer(model, X_, y_):
        check_is_fitted(model)
        return float(model.predict_proba(X_)[:, 1].mean())

    masks = random_masks(rng, 50, 6, low=5)
    plan = plan_batched(est, scorer)
    assert not plan.vectorised
    fitted = plan.fit(X, y, masks)
    scores = plan.score(fitted, X, y)
    for i in range(6):
        exact = sklearn_fit(tight(est), X, y, masks[i])
        np.testing.assert_allclose(scores[i], scorer(exact, X, y), rtol=1e-7)
    auc = plan_batched(est, "roc_auc")
    np.testing.assert_allclose(
        auc.score(fitted, X, y),
        [get_scorer("roc_auc")(sklearn_fit(tight(est), X, y, m), X, y) for m in masks])


def test_genuine_estimator_from_dataframe(rng):
    pd = pytest.importorskip("pandas")
    X, y = make_classification_data(rng, n=30, d=2)
    frame = pd.DataFrame(X, columns=["a", "b"])
    plan = plan_batched(LogisticRegression())
    fitted = plan.fit(frame, y, np.ones((1, 30), bool))
    model = plan.build_estimator(fitted, 0)
    assert model.feature_names_in_.tolist() == ["a", "b"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.predict(frame)
    with pytest.raises(ValueError, match="degenerate or failed"):
        plan.build_estimator(plan.fit(frame, y, np.zeros((1, 30), bool)), 0)


def test_bad_inputs_raise_naming_the_problem(rng):
    X, y = make_classification_data(rng, n=10, d=2)
    plan = plan_batched(LogisticRegression())
    with pytest.raises(ValueError, match="masks must have shape"):
        plan.fit(X, y, np.ones((2, 9), bool))
    with pytest.raises(ValueError, match="sample_weight must be"):
        plan.fit(X, y, np.ones((2, 10), bool), sample_weight=-np.ones(10))
    with pytest.raises(ValueError, match="class labels"):
        plan.fit(X, y + 0.5, np.ones((2, 10), bool))


def test_labels_of_another_type_score_as_sklearn_fails(rng):
    X, y = make_classification_data(rng, n=30, d=2)
    plan = plan_batched(LogisticRegression(), "accuracy")
    fitted = plan.fit(X, y, np.ones((2, 30), bool))
    scores = plan.score(fitted, X, np.array(["a", "b"])[y])
    try:
        expected = get_scorer("accuracy")(plan.build_estimator(fitted, 0), X,
                                          np.array(["a", "b"])[y])
    except (TypeError, ValueError):
        expected = np.nan
    np.testing.assert_array_equal(scores, [expected, expected])
