"""Groups of rows as players (issue 15): oracles, labels, cleaning and errors."""

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler

from skdvl import (
    BanzhafValuer,
    BetaShapleyValuer,
    DataCleaner,
    KNNShapley,
    LOOValuer,
    ModelUtility,
    ShapleyValuer,
)
from skdvl.groups import (
    GroupedUtility,
    check_groups,
    groups_by_clusters,
    groups_by_column,
    groups_by_label,
)


@pytest.fixture(scope="module")
def data():
    X, y = load_breast_cancer(return_X_y=True)
    idx = np.random.default_rng(0).permutation(len(y))
    X, y = StandardScaler().fit_transform(X[idx]), y[idx]
    return X[:36], y[:36], X[100:300], y[100:300]


def _model():
    return LogisticRegression()


class MergedGame:
    """The oracle's merged game, built independently: player j is the rows labelled j."""

    def __init__(self, X, y, X_val, y_val, members):
        self.members = members
        self.n_players = len(members)
        self.inner = ModelUtility(_model(), X, y, X_val, y_val, scoring="accuracy",
                                  batch_fit=False)

    def __call__(self, subset):
        rows = [r for j in subset for r in self.members[j]]
        return self.inner(np.array(sorted(rows), dtype=np.intp))


def _brute_shapley(game):
    n = game.n_players
    phi = np.zeros(n)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for k in range(n):
            w = math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n)
            for T in itertools.combinations(others, k):
                phi[i] += w * (game(list(T) + [i]) - game(list(T)))
    return phi


@pytest.mark.parametrize("valuer", [
    ShapleyValuer(_model(), sampler="permutation", max_updates=4, random_state=0),
    ShapleyValuer(_model(), sampler="regression_msr_tree", max_updates=4, random_state=0),
    ShapleyValuer(_model(), truncation=0.05, max_updates=4, random_state=0),
    BanzhafValuer(_model(), sampler="msr", max_updates=30, random_state=0),
    ShapleyValuer(_model(), sampler="kernel", max_updates=200, random_state=0),
    LOOValuer(_model()),
])
def test_one_row_per_group_gives_the_ungrouped_values(valuer, data):
    X, y, X_val, y_val = data
    plain = valuer.fit(X, y, X_val=X_val, y_val=y_val)
    values = np.asarray(plain.values_).copy()
    grouped = valuer.fit(X, y, groups=np.arange(len(y)), X_val=X_val, y_val=y_val)
    assert isinstance(grouped.values_, pd.Series)
    assert grouped.values_.index.tolist() == list(range(len(y)))
    np.testing.assert_array_equal(grouped.values_.to_numpy(), values)


@pytest.mark.parametrize("batch_fit", ["auto", False])
def test_grouped_exact_values_are_those_of_the_merged_game(batch_fit, data):
    """Six groups of uneven sizes and string labels: exact Shapley of the merged game."""
    X, y, X_val, y_val = data
    X, y = X[:18], y[:18]
    rng = np.random.default_rng(3)
    names = np.array(["north", "south", "east", "west", "up", "down"])
    groups = names[rng.permutation(np.arange(18) % 6)]
    labels = list(dict.fromkeys(groups))  # order of first appearance
    members = [np.flatnonzero(groups == lab) for lab in labels]
    oracle = _brute_shapley(MergedGame(X, y, X_val, y_val, members))
    v = ShapleyValuer(_model(), scoring="accuracy", sampler="exact", batch_fit=batch_fit)
    v.fit(X, y, groups=groups, X_val=X_val, y_val=y_val)
    assert v.values_.index.tolist() == labels and v.values_.index.name == "group"
    np.testing.assert_allclose(v.values_.to_numpy(), oracle, rtol=0, atol=2e-3 if
                               batch_fit == "auto" else 1e-12)
    assert v.n_utility_evaluations_ <= 2 ** 6
    # Banzhaf of the same merged game, by its definition
    b = BanzhafValuer(_model(), scoring="accuracy", sampler="exact", batch_fit=False)
    b.fit(X, y, groups=groups, X_val=X_val, y_val=y_val)
    game = MergedGame(X, y, X_val, y_val, members)
    for i, value in enumerate(b.values_.to_numpy()):
        others = [j for j in range(6) if j != i]
        marg = [game(list(T) + [i]) - game(list(T))
                for k in range(6) for T in itertools.combinations(others, k)]
        assert value == pytest.approx(np.mean(marg), abs=1e-12)


def test_cross_valuation_splits_by_group_and_averages_the_folds(data):
    X, y, _, _ = data
    groups = np.arange(len(y)) // 6  # 6 groups of 6 rows
    v = ShapleyValuer(KNeighborsClassifier(1), sampler="exact", cv=3).fit(X, y, groups=groups)
    expected, seen = np.zeros(6), np.zeros(6)
    for train, test in GroupKFold(n_splits=3).split(X, y, groups):
        present = np.unique(groups[train])
        members = [np.flatnonzero(groups[train] == g) for g in present]
        game = MergedGame.__new__(MergedGame)
        game.members, game.n_players = members, len(members)
        game.inner = ModelUtility(KNeighborsClassifier(1), X[train], y[train], X[test],
                                  y[test])
        expected[present] += _brute_shapley(game)
        seen[present] += 1
    np.testing.assert_allclose(v.values_.to_numpy(), expected / seen, atol=1e-12)


def test_pandas_labels_survive_and_values_do_not_depend_on_n_jobs(data):
    X, y, X_val, y_val = data
    frame = pd.DataFrame(X, index=[f"r{i}" for i in range(len(y))])
    groups = pd.Series(np.repeat(["a", "b", "c", "d"], 9), index=frame.index)
    kw = dict(truncation=0.05, max_updates=6, random_state=1)
    one = ShapleyValuer(_model(), n_jobs=1, **kw).fit(frame, y, groups=groups, X_val=X_val,
                                                      y_val=y_val)
    two = ShapleyValuer(_model(), n_jobs=2, **kw).fit(frame, y, groups=groups, X_val=X_val,
                                                      y_val=y_val)
    assert one.values_.index.tolist() == ["a", "b", "c", "d"]
    pd.testing.assert_series_equal(one.values_, two.values_)
    assert one.result_.names.tolist() == ["a", "b", "c", "d"]


def test_beta_shapley_and_integer_labels_keep_their_type(data):
    X, y, X_val, y_val = data
    groups = (np.arange(len(y)) % 4) * 10
    v = BetaShapleyValuer(estimator=_model(), max_updates=3, random_state=0).fit(
        X, y, groups=groups, X_val=X_val, y_val=y_val)
    assert v.values_.index.tolist() == [0, 10, 20, 30]
    assert v.values_.index.dtype.kind == "i"


@pytest.mark.parametrize("groups, match", [
    (np.arange(5), "groups must have one label per row of X \\(36\\); got 5 labels"),
    (np.zeros(36), "groups must have at least two distinct labels to value; got 1"),
    (np.r_[np.zeros(35), np.nan], "groups must not hold missing labels \\(NaN or None\\); "
                                  "row 35 has one"),
    (np.array([None] + ["a"] * 35, dtype=object), "row 0 has one"),
    (np.zeros((36, 2)), "groups must be 1-D, one label per row"),
])
def test_bad_groups_are_refused(groups, match, data):
    X, y, X_val, y_val = data
    with pytest.raises(ValueError, match=match):
        ShapleyValuer(_model(), max_updates=2).fit(X, y, groups=groups, X_val=X_val,
                                                   y_val=y_val)


def test_groups_need_data_and_enough_groups_for_the_folds(data):
    from skdvl.games import SymmetricVotingGame

    X, y, _, _ = data
    with pytest.raises(ValueError, match="groups apply to data: with a custom utility"):
        ShapleyValuer(utility=SymmetricVotingGame(4)).fit(groups=[0, 0, 1, 1])
    with pytest.raises(ValueError, match="cv=5 folds need at least 5 groups; got 3"):
        ShapleyValuer(_model(), max_updates=2).fit(X, y, groups=np.arange(36) % 3)


def test_cleaner_drops_whole_groups_and_grid_search_slices_them(data):
    from imblearn.pipeline import make_pipeline

    X, y, X_val, y_val = data
    groups = np.arange(len(y)) // 4  # 9 groups
    valuer = BanzhafValuer(KNeighborsClassifier(1), max_updates=30, random_state=0, cv=3)
    cleaner = DataCleaner(valuer, fraction=0.25)
    X_kept, _ = cleaner.fit_resample(X, y, groups=groups)
    assert cleaner.values_.shape == (9,) and cleaner.values_.index.name == "group"
    dropped = cleaner.values_.sort_values(kind="stable").index[:2].tolist()  # floor(0.25 * 9)
    kept_groups = set(groups[cleaner.sample_indices_])
    assert kept_groups == set(range(9)) - set(dropped)
    assert X_kept.shape[0] == 4 * 7
    pipe = make_pipeline(DataCleaner(valuer), KNeighborsClassifier(1))
    search = GridSearchCV(pipe, {"datacleaner__fraction": [0.0, 0.2]}, cv=2)
    search.fit(X, y, datacleaner__groups=groups)
    assert search.best_params_["datacleaner__fraction"] in (0.0, 0.2)


def test_a_cleaner_whose_valuer_cannot_value_groups_says_so(data):
    X, y, _, _ = data
    with pytest.raises(ValueError, match="its valuer KNNShapley does not value groups"):
        DataCleaner(KNNShapley()).fit_resample(X, y, groups=np.arange(36) % 4)


def test_grouped_utility_batches_and_calls_agree(data):
    X, y, X_val, y_val = data
    codes = np.arange(len(y)) % 5
    grouped = GroupedUtility(ModelUtility(_model(), X, y, X_val, y_val), codes)
    masks = np.random.default_rng(0).random((12, 5)) < 0.5
    batched = grouped.evaluate(masks)
    single = [GroupedUtility(ModelUtility(_model(), X, y, X_val, y_val), codes)(
        np.flatnonzero(m)) for m in masks]
    np.testing.assert_allclose(batched, single, atol=1e-12)
    assert grouped.n_evaluations == int(masks.any(axis=1).sum())  # the empty one is free
    with pytest.raises(ValueError, match="codes must have one group per player"):
        GroupedUtility(ModelUtility(_model(), X, y, X_val, y_val), codes[:4])


def test_group_helpers():
    frame = pd.DataFrame({"site": ["a", "b", "a", "c"], "x": [0.0, 1.0, 2.0, 3.0]})
    assert groups_by_column(frame, "site").tolist() == ["a", "b", "a", "c"]
    assert groups_by_column(frame.to_numpy(), 0).tolist() == ["a", "b", "a", "c"]
    with pytest.raises(ValueError, match="column must be a column of X"):
        groups_by_column(frame, "hospital")
    with pytest.raises(ValueError, match="column must be a column position"):
        groups_by_column(frame.to_numpy(), 7)
    assert groups_by_label(np.array([2, 1, 2])).tolist() == [2, 1, 2]
    X = np.r_[np.zeros((5, 2)), np.ones((5, 2)) * 10] + np.arange(10)[:, None] * 0.01
    g = groups_by_clusters(X, 2, random_state=0)
    assert len(set(g[:5])) == 1 and len(set(g[5:])) == 1 and g[0] != g[5]
    np.testing.assert_array_equal(g, groups_by_clusters(X, 2, random_state=0))
    with pytest.raises(ValueError, match=r"n_groups must be an integer in \[2, 10\]"):
        groups_by_clusters(X, 11)
    labels, codes = check_groups(["b", "a", "b"], 3)
    assert labels.tolist() == ["b", "a"] and codes.tolist() == [0, 1, 0]
