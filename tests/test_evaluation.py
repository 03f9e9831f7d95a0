"""Tests of skdvl.evaluation (removal curves, detection metrics), plotting, datasets."""

import subprocess
import sys

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.naive_bayes import GaussianNB

from skdvl.datasets import flip_labels
from skdvl.evaluation import noisy_auroc, precision_at_k, removal_curve


@pytest.fixture
def seed():
    return 0


@pytest.fixture
def split(seed):
    X, y = make_classification(
        n_samples=300, n_features=5, n_informative=3, class_sep=1.5, random_state=seed
    )
    y_noisy, flipped = flip_labels(y[:200], 0.2, random_state=seed)
    return X[:200], y_noisy, flipped, X[200:], y[200:]


def test_noisy_auroc_matches_sklearn_roc_auc(seed):
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 5, size=50).astype(float)  # many ties
    noisy = rng.random(50) < 0.3
    assert noisy_auroc(values, noisy) == pytest.approx(roc_auc_score(noisy, -values))


def test_noisy_auroc_ranks_nan_as_the_highest():
    assert noisy_auroc([np.nan, 0.0, 1.0], [False, True, False]) == 1.0
    assert noisy_auroc([np.nan, 0.0, 1.0], [True, False, False]) == 0.0


def test_noisy_auroc_needs_both_kinds_of_rows():
    with pytest.raises(ValueError, match="at least one noisy and one clean row. Got 0 noisy"):
        noisy_auroc([0.1, 0.2], [False, False])


def test_precision_at_k_counts_noisy_among_lowest():
    values = [0.5, 0.1, 0.4, 0.2, 0.3]
    noisy = [False, True, False, False, True]
    assert precision_at_k(values, noisy) == 0.5  # k=2: rows 1 and 3
    assert precision_at_k(values, noisy, k=3) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match=r"k must be in \[1, n_samples=5\]. Got k=6"):
        precision_at_k(values, noisy, k=6)


def test_metrics_accept_a_fitted_valuer():
    class Fitted:
        values_ = np.array([0.0, 1.0, 2.0])

    assert noisy_auroc(Fitted(), [True, False, False]) == 1.0
    with pytest.raises(ValueError, match=r"one entry per value \(3\). Got 2"):
        noisy_auroc(Fitted(), [True, False])


def test_removal_curve_equals_refits_by_hand(split, seed):
    X, y, flipped, X_test, y_test = split
    values = np.where(flipped, 0.0, 1.0) + np.linspace(0, 0.1, len(y))
    curve = removal_curve(
        GaussianNB(), X, y, values, X_test=X_test, y_test=y_test,
        fractions=[0.0, 0.2, 0.5], n_repeats=3, random_state=seed,
    )
    np.testing.assert_array_equal(curve.n_removed, [0, 40, 100])
    order = np.argsort(values, kind="stable")
    for j, k in enumerate(curve.n_removed):
        kept = np.sort(order[k:])
        low = GaussianNB().fit(X[kept], y[kept]).score(X_test, y_test)
        kept_high = np.sort(order[::-1][k:])
        high = GaussianNB().fit(X[kept_high], y[kept_high]).score(X_test, y_test)
        assert curve.lowest[j] == low and curve.highest[j] == high
    assert curve.random.shape == (3, 3)
    # removing the flipped rows first helps; removing clean rows first hurts
    assert curve.lowest[1] >= curve.random[:, 1].mean() >= curve.highest[2]


def test_removal_curve_identical_for_any_n_jobs(split, seed):
    X, y, flipped, X_test, y_test = split
    kw = dict(X_test=X_test, y_test=y_test, fractions=[0.1, 0.3], n_repeats=2,
              random_state=seed)
    a = removal_curve(LogisticRegression(), X, y, -flipped.astype(float), n_jobs=1, **kw)
    b = removal_curve(LogisticRegression(), X, y, -flipped.astype(float), n_jobs=2, **kw)
    for key in ("lowest", "highest", "random"):
        np.testing.assert_array_equal(a[key], b[key])


def test_removal_curve_failed_fits_score_nan_with_one_warning(seed):
    X = np.arange(20.0).reshape(-1, 1)
    y = np.r_[np.zeros(10), np.ones(10)]
    values = np.arange(20.0)  # removing lowest first removes all of class 0 at 50 %
    with pytest.warns(UserWarning, match="fits failed and scored NaN; the first error"):
        curve = removal_curve(
            LogisticRegression(), X, y, values, X_test=X, y_test=y,
            fractions=[0.0, 0.5], strategies=["lowest"], random_state=seed,
        )
    assert np.isnan(curve.lowest[1]) and not np.isnan(curve.lowest[0])
    assert "highest" not in curve and "random" not in curve


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"fractions": [0.0, 1.0]}, (r"fractions must be a non-empty sequence of floats "
                                     r"in \[0, 1\). Got \[0.0, 1.0\]")),
        ({"strategies": ["best"]}, r"strategies must be a non-empty subset of"),
    ],
)
def test_removal_curve_bad_arguments(split, kwargs, match):
    X, y, _, X_test, y_test = split
    with pytest.raises(ValueError, match=match):
        removal_curve(GaussianNB(), X, y, np.zeros(len(y)), X_test=X_test, y_test=y_test,
                      **kwargs)


def test_removal_curve_values_length_must_match(split):
    X, y, _, X_test, y_test = split
    with pytest.raises(ValueError, match=r"one entry per row of X \(200\). Got 3"):
        removal_curve(GaussianNB(), X, y, [1.0, 2.0, 3.0], X_test=X_test, y_test=y_test)


def test_flip_labels_multiclass_changes_exactly_the_flipped_rows(seed):
    y = np.repeat(np.array(["a", "b", "c"]), 20)
    y_noisy, flipped = flip_labels(y, 0.25, random_state=seed)
    assert flipped.sum() == 15
    np.testing.assert_array_equal(y_noisy != y, flipped)
    assert set(np.unique(y_noisy)) <= {"a", "b", "c"}


def test_plots_draw_values_and_curves(split, seed):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    from skdvl.plotting import plot_removal_curves, plot_values
    from skdvl.valuation._oob import DataOOBValuer

    X, y, flipped, X_test, y_test = split
    v = DataOOBValuer(n_estimators=50, random_state=seed).fit(X, y)
    ax = plot_values(v, highlight=flipped, title="oob")
    assert ax.get_title() == "oob" and len(ax.collections) >= 2  # band + highlighted
    curve = removal_curve(GaussianNB(), X, y, v, X_test=X_test, y_test=y_test,
                          fractions=[0.0, 0.1], n_repeats=2, random_state=seed)
    ax = plot_removal_curves(curve, label="oob")
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["oob: remove lowest first", "oob: remove highest first",
                      "remove at random"]


def test_import_skdvl_does_not_import_matplotlib():
    code = (
        "import sys, skdvl, skdvl.plotting, skdvl.evaluation, skdvl.cleaning; "
        "print('matplotlib' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
