"""Exact semivalues of tree models of a game (skdvl.sampling._tree_semivalues).

The oracle enumerates all 2^n coalitions of ``v(S) = model.predict(1_S)``; larger
games are checked against the Shapley and Banzhaf closed forms of product games,
computed from the tree's paths by a separate walk.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.dummy import DummyRegressor
from sklearn.ensemble import (
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestRegressor,
)
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor, ExtraTreeRegressor

from skdvl.sampling._tree_semivalues import tree_semivalues
from skdvl.valuation._semivalues import banzhaf_mass, beta_mass, shapley_mass

MODELS = {
    "tree": lambda: DecisionTreeRegressor(random_state=0),
    "tree_depth3": lambda: DecisionTreeRegressor(max_depth=3, random_state=0),
    "extra_tree": lambda: ExtraTreeRegressor(random_state=0),
    "forest": lambda: RandomForestRegressor(n_estimators=5, random_state=0),
    "extra_trees": lambda: ExtraTreesRegressor(n_estimators=5, random_state=0),
    "boosting": lambda: GradientBoostingRegressor(n_estimators=10, random_state=0),
    "boosting_huber": lambda: GradientBoostingRegressor(
        n_estimators=10, loss="huber", learning_rate=0.3, random_state=0),
}
MASSES = {
    "shapley": shapley_mass,
    "banzhaf": banzhaf_mass,
    "beta_16_1": lambda n: beta_mass(n, 16.0, 1.0),
}


def all_coalitions(n: int) -> np.ndarray:
    """The 2^n binary vectors; row ``c`` has bit ``i`` of ``c`` as column ``i``."""
    codes = np.arange(1 << n)
    return ((codes[:, None] >> np.arange(n)) & 1).astype(np.float64)


def enumerated_semivalues(v: np.ndarray, n: int, mass: np.ndarray) -> np.ndarray:
    """phi_i = sum_{T not containing i} m(|T|) / C(n-1, |T|) (v(T + i) - v(T))."""
    phi = np.zeros(n)
    for code in range(1 << n):
        size = bin(code).count("1")
        for i in range(n):
            if not code >> i & 1:
                weight = mass[size] / math.comb(n - 1, size)
                phi[i] += weight * (v[code | 1 << i] - v[code])
    return phi


def training_game(rng, n: int, game: str, n_samples: int = 40):
    """Random binary coalitions and their targets: random, or the max cost in S."""
    Z = rng.integers(0, 2, size=(n_samples, n)).astype(np.float64)
    if game == "random":
        return Z, rng.normal(size=n_samples)
    costs = rng.random(n)
    return Z, (Z * costs).max(axis=1)


def tree_paths(tree):
    """(value, present set, absent set) of every leaf, by a recursive walk."""
    out = []

    def walk(node, present, absent):
        if tree.children_left[node] < 0:
            out.append((tree.value[node, 0, 0], present, absent))
            return
        assert 0 < tree.threshold[node] < 1
        j = tree.feature[node]
        walk(tree.children_left[node], present, absent | {j})
        walk(tree.children_right[node], present | {j}, absent)

    walk(0, frozenset(), frozenset())
    return out


def closed_form(trees, n: int, kind: str) -> np.ndarray:
    """Shapley or Banzhaf values of an average of trees from the product-game forms."""
    phi = np.zeros(n)
    for tree in trees:
        for value, present, absent in tree_paths(tree):
            a, b = len(present), len(absent)
            if kind == "shapley":
                in_a = math.factorial(a - 1) * math.factorial(b) / math.factorial(a + b) \
                    if a else 0.0
                in_b = math.factorial(a) * math.factorial(b - 1) / math.factorial(a + b) \
                    if b else 0.0
            else:
                in_a = in_b = 0.5 ** (a + b - 1)
            phi[list(present)] += value * in_a / len(trees)
            phi[list(absent)] -= value * in_b / len(trees)
    return phi


@pytest.mark.parametrize("game", ["random", "max_cost"])
@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_values_match_enumeration(rng, n, model_name, game):
    Z, y = training_game(rng, n, game)
    model = MODELS[model_name]().fit(Z, y)
    v = model.predict(all_coalitions(n))
    for mass_name, make_mass in MASSES.items():
        mass = make_mass(n)
        np.testing.assert_allclose(tree_semivalues(model, mass),
                                   enumerated_semivalues(v, n, mass),
                                   rtol=0, atol=1e-10, err_msg=mass_name)


@pytest.mark.parametrize("model_name", ["forest", "boosting", "extra_trees"])
def test_shapley_values_are_efficient(rng, model_name):
    n = 30
    Z, y = training_game(rng, n, "max_cost", n_samples=300)
    model = MODELS[model_name]().fit(Z, y)
    phi = tree_semivalues(model, shapley_mass(n))
    grand, empty = model.predict(np.stack([np.ones(n), np.zeros(n)]))
    assert phi.sum() == pytest.approx(grand - empty, abs=1e-10)


@pytest.mark.parametrize("kind", ["shapley", "banzhaf"])
@pytest.mark.parametrize("n", [60, 2000])
def test_large_games_match_closed_forms(rng, n, kind):
    Z, y = training_game(rng, n, "random", n_samples=300)
    model = RandomForestRegressor(n_estimators=3, random_state=0).fit(Z, y)
    mass = shapley_mass(n) if kind == "shapley" else banzhaf_mass(n)
    phi = tree_semivalues(model, mass)
    expected = closed_form([est.tree_ for est in model.estimators_], n, kind)
    assert np.all(np.isfinite(phi))
    np.testing.assert_allclose(phi, expected, rtol=1e-9, atol=1e-14)


def test_beta_values_match_a_direct_weight_sum(rng):
    n = 60
    Z, y = training_game(rng, n, "max_cost", n_samples=200)
    model = DecisionTreeRegressor(random_state=0).fit(Z, y)
    mass = beta_mass(n, 16.0, 1.0)
    weight = [mass[s] / math.comb(n - 1, s) for s in range(n)]
    expected = np.zeros(n)
    for value, present, absent in tree_paths(model.tree_):
        a, b = len(present), len(absent)
        r = n - a - b
        expected[list(present)] += value * sum(
            math.comb(r, j) * weight[a - 1 + j] for j in range(r + 1)) if a else 0.0
        expected[list(absent)] -= value * sum(
            math.comb(r, j) * weight[a + j] for j in range(r + 1)) if b else 0.0
    phi = tree_semivalues(model, mass)
    assert np.all(np.isfinite(phi))
    np.testing.assert_allclose(phi, expected, rtol=1e-9, atol=1e-14)


def test_unreachable_branches_and_repeated_players_follow_predict(rng):
    n = 5
    Z, y = training_game(rng, n, "random", n_samples=60)
    model = DecisionTreeRegressor(max_depth=4, random_state=0).fit(Z, y)
    t = model.tree_
    left, right = t.children_left[0], t.children_right[0]
    # the children split again on the root's player: one grandchild each contradicts
    t.feature[left] = t.feature[right] = t.feature[0]
    # thresholds outside [0, 1) send every coalition one way
    grand_left, grand_right = t.children_left[left], t.children_right[right]
    assert min(t.children_left[grand_left], t.children_left[grand_right]) >= 0
    t.threshold[grand_left], t.threshold[grand_right] = 1.5, -0.5
    v = model.predict(all_coalitions(n))
    for make_mass in MASSES.values():
        mass = make_mass(n)
        np.testing.assert_allclose(tree_semivalues(model, mass),
                                   enumerated_semivalues(v, n, mass), rtol=0, atol=1e-12)


def test_constant_tree_has_zero_values(rng):
    Z = rng.integers(0, 2, size=(20, 4)).astype(float)
    model = DecisionTreeRegressor().fit(Z, np.full(20, 3.0))
    assert model.tree_.node_count == 1
    phi = tree_semivalues(model, shapley_mass(4))
    assert phi.dtype == np.float64
    np.testing.assert_array_equal(phi, np.zeros(4))


def test_wrong_mass_is_refused(rng):
    Z, y = training_game(rng, 5, "random")
    model = DecisionTreeRegressor().fit(Z, y)
    with pytest.raises(ValueError, match=r"n_features_in_=5.*Got shape \(4,\)"):
        tree_semivalues(model, shapley_mass(4))
    with pytest.raises(ValueError, match=r"mass must be finite and >= 0.*-0\.5"):
        tree_semivalues(model, np.array([1.5, -0.5, 0, 0, 0]))


@pytest.mark.parametrize("model", [
    LinearRegression(), DecisionTreeClassifier(), GradientBoostingClassifier()])
def test_unsupported_model_types_are_refused(rng, model):
    Z, y = training_game(rng, 3, "random")
    model.fit(Z, y > 0)
    with pytest.raises(TypeError, match=f"model must be a fitted.*{type(model).__name__}"):
        tree_semivalues(model, shapley_mass(3))


def test_multi_output_unfitted_and_non_constant_init_are_refused(rng):
    Z, y = training_game(rng, 3, "random")
    multi = RandomForestRegressor(n_estimators=2).fit(Z, np.stack([y, -y], axis=1))
    with pytest.raises(ValueError, match="single output.*n_outputs_=2"):
        tree_semivalues(multi, shapley_mass(3))
    with pytest.raises(NotFittedError):
        tree_semivalues(DecisionTreeRegressor(), shapley_mass(3))
    linear_init = GradientBoostingRegressor(n_estimators=3, init=LinearRegression())
    with pytest.raises(ValueError, match="'init'.*LinearRegression"):
        tree_semivalues(linear_init.fit(Z, y), shapley_mass(3))
    dummy_init = GradientBoostingRegressor(n_estimators=3, init=DummyRegressor()).fit(Z, y)
    assert tree_semivalues(dummy_init, shapley_mass(3)).shape == (3,)
