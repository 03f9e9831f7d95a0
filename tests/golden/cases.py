"""The golden cases: every valuer and sampler on fixed small data and seeds.

``python -m tests.golden.cases --write`` saves their values (``values_``, ``stderr_``,
``counts_`` and the utility evaluations) to ``golden.npz`` beside this file;
``tests/test_golden.py`` recomputes them and asserts they are bitwise equal. The file was
written once from the code before the modules moved into packages (issue 23), so a
layout change that alters a single bit of any value fails. Rewrite it only for a change
that is meant to change values, and say so in the commit.
"""

from __future__ import annotations

import argparse
import pathlib
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.datasets import make_classification, make_regression
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.tree import DecisionTreeClassifier

PATH = pathlib.Path(__file__).with_name("golden.npz")


def _data(n: int, seed: int) -> tuple[np.ndarray, ...]:
    X, y = make_classification(n_samples=n + 12, n_features=4, n_informative=3,
                               n_redundant=0, random_state=seed)
    return X[:n], y[:n], X[n:], y[n:]


def _reg(n: int, seed: int) -> tuple[np.ndarray, ...]:
    X, y = make_regression(n_samples=n + 12, n_features=3, noise=5.0, random_state=seed)
    return X[:n], y[:n], X[n:], y[n:]


def _fitted(v: Any) -> dict[str, np.ndarray]:
    out = {"values": np.asarray(v.values_, dtype=np.float64)}
    for name in ("stderr_", "counts_"):
        if hasattr(v, name):
            out[name.rstrip("_")] = np.asarray(getattr(v, name), dtype=np.float64)
    if hasattr(v, "n_utility_evaluations_"):
        out["evals"] = np.asarray([v.n_utility_evaluations_], dtype=np.float64)
    for name in ("subsidy_",):
        if hasattr(v, name):
            out[name.rstrip("_")] = np.asarray([getattr(v, name)], dtype=np.float64)
    return out


def _valuer_cases() -> dict[str, Callable[[], Any]]:
    from skdvl import (
        BanzhafValuer,
        BetaShapleyValuer,
        ClasswiseShapleyValuer,
        DataOOBValuer,
        DeltaShapleyValuer,
        GroupTestingShapleyValuer,
        KNNShapley,
        LeastCoreValuer,
        LOOValuer,
        ShapleyValuer,
    )
    from skdvl.games import AirportGame, MinerGame, SymmetricVotingGame

    X, y, Xv, yv = _data(16, 0)
    Xs, ys, Xsv, ysv = _data(8, 1)
    Xr, yr, Xrv, yrv = _reg(14, 2)
    lr = LogisticRegression(max_iter=200)
    tree = DecisionTreeClassifier(max_depth=2, random_state=0)
    cases: dict[str, Callable[[], Any]] = {}

    def on(v: Any, data: tuple[np.ndarray, ...] = (X, y, Xv, yv), **fit: Any) -> Any:
        return lambda: v.fit(data[0], data[1], X_val=data[2], y_val=data[3], **fit)

    for sampler in ("permutation", "antithetic", "uniform", "owen", "antithetic_owen",
                    "stratified", "kernel", "leverage", "regression_msr", "svarm"):
        cases[f"shapley_{sampler}_tree"] = on(ShapleyValuer(
            tree, sampler=sampler, max_updates=40 if sampler in (
                "kernel", "leverage", "regression_msr", "svarm") else 6, random_state=3))
        cases[f"shapley_{sampler}_batched"] = on(ShapleyValuer(
            lr, sampler=sampler, max_updates=60 if sampler in (
                "kernel", "leverage", "regression_msr", "svarm") else 5, random_state=4))
    cases["shapley_tmc_batched"] = on(ShapleyValuer(
        lr, truncation=0.05, max_updates=12, random_state=5))
    cases["shapley_tmc_tree"] = on(ShapleyValuer(
        tree, truncation=0.05, max_updates=8, random_state=5))
    cases["shapley_exact_batched"] = on(ShapleyValuer(lr, sampler="exact"), (Xs, ys, Xsv, ysv))
    cases["shapley_exact_tree"] = on(ShapleyValuer(tree, sampler="exact"), (Xs, ys, Xsv, ysv))
    cases["shapley_cv_tree"] = lambda: ShapleyValuer(
        tree, sampler="permutation", max_updates=4, cv=3, random_state=6).fit(X, y)
    cases["shapley_threads_n_jobs2"] = on(ShapleyValuer(
        tree, sampler="permutation", max_updates=8, n_jobs=2, random_state=7))
    for sampler in ("msr", "kernel", "svarm", "regression_msr", "uniform", "antithetic"):
        cases[f"banzhaf_{sampler}_batched"] = on(BanzhafValuer(
            lr, sampler=sampler, max_updates=80 if sampler != "uniform" and
            sampler != "antithetic" else 6, random_state=8))
    cases["banzhaf_weighted_msr_tree"] = on(BanzhafValuer(
        tree, sampler="msr", weight=0.3, max_updates=100, random_state=9))
    cases["banzhaf_exact_tree"] = on(BanzhafValuer(tree, sampler="exact"), (Xs, ys, Xsv, ysv))
    cases["beta_owen_tree"] = on(BetaShapleyValuer(
        estimator=tree, sampler="owen", max_updates=6, random_state=10))
    cases["beta_permutation_batched"] = on(BetaShapleyValuer(
        estimator=lr, sampler="permutation", max_updates=6, random_state=10))
    cases["delta_stratified_tree"] = on(DeltaShapleyValuer(
        tree, lower_bound=2, upper_bound=10, max_updates=8, random_state=11))
    cases["delta_exact_batched"] = on(DeltaShapleyValuer(
        lr, lower_bound=1, upper_bound=5, sampler="exact"), (Xs, ys, Xsv, ysv))
    cases["loo_tree"] = on(LOOValuer(tree))
    cases["loo_batched_regression"] = on(LOOValuer(Ridge()), (Xr, yr, Xrv, yrv))
    cases["shapley_permutation_regression_batched"] = on(ShapleyValuer(
        Ridge(), sampler="permutation", max_updates=5, random_state=12), (Xr, yr, Xrv, yrv))
    groups = np.arange(16) // 3
    cases["shapley_groups_tree"] = on(ShapleyValuer(
        tree, sampler="permutation", max_updates=8, random_state=13), groups=groups)
    cases["banzhaf_groups_msr_batched"] = on(BanzhafValuer(
        lr, sampler="msr", max_updates=60, random_state=13), groups=groups)
    cases["shapley_exact_groups_batched"] = on(ShapleyValuer(lr, sampler="exact"),
                                               groups=groups)
    cases["classwise_permutation_batched"] = on(ClasswiseShapleyValuer(
        lr, max_updates=6, random_state=14))
    cases["classwise_permutation_tree_truncated"] = on(ClasswiseShapleyValuer(
        tree, truncation=0.05, max_updates=6, random_state=14))
    cases["classwise_exact_tree"] = on(ClasswiseShapleyValuer(tree, sampler="exact"),
                                       (Xs, ys, Xsv, ysv))
    cases["least_core_exact_tree"] = on(LeastCoreValuer(tree, sampler="exact"),
                                        (Xs, ys, Xsv, ysv))
    cases["least_core_montecarlo_batched"] = on(LeastCoreValuer(
        lr, max_updates=120, n_bootstrap=3, random_state=15))
    cases["least_core_miner"] = lambda: LeastCoreValuer(
        utility=MinerGame(5), sampler="exact").fit()
    cases["group_testing_tree"] = on(GroupTestingShapleyValuer(
        tree, epsilon=0.5, max_updates=200, random_state=16))
    cases["group_testing_center_batched"] = on(GroupTestingShapleyValuer(
        lr, solution="center", max_updates=200, random_state=16))
    cases["knn_classifier"] = on(KNNShapley(n_neighbors=3))
    cases["knn_leave_self_out"] = lambda: KNNShapley(n_neighbors=3).fit(X, y)
    cases["knn_regressor"] = on(KNNShapley(n_neighbors=3), (Xr, yr, Xrv, yrv))
    cases["oob_tree"] = lambda: DataOOBValuer(tree, n_estimators=20, random_state=17).fit(X, y)
    cases["oob_regression"] = lambda: DataOOBValuer(
        n_estimators=15, random_state=17).fit(Xr, yr)
    cases["game_voting_permutation"] = lambda: ShapleyValuer(
        utility=SymmetricVotingGame(7), sampler="permutation", max_updates=20,
        random_state=18).fit()
    cases["game_airport_kernel"] = lambda: ShapleyValuer(
        utility=AirportGame([1.0, 2.0, 2.0, 3.0, 5.0, 8.0]), sampler="kernel", max_updates=50,
        random_state=19).fit()
    cases["game_voting_svarm_banzhaf"] = lambda: BanzhafValuer(
        utility=SymmetricVotingGame(6), sampler="svarm", max_updates=64,
        random_state=20).fit()
    cases["learned_utility_permutation"] = on(ShapleyValuer(
        tree, sampler="permutation", utility_model=LinearRegression(), training_budget=30,
        max_updates=6,
        random_state=21))
    cases["learned_utility_msr"] = on(BanzhafValuer(
        lr, sampler="msr", utility_model=LinearRegression(), training_budget=25,
        max_updates=50, random_state=22))
    return cases


def _influence_cases() -> dict[str, Callable[[], dict[str, np.ndarray]]]:
    import torch

    from skdvl.influence import InfluenceScorer

    g = torch.Generator().manual_seed(23)
    X = torch.randn(24, 3, generator=g, dtype=torch.float64).numpy()
    y = torch.randint(0, 2, (24,), generator=g).numpy()

    def net() -> Any:
        gen = torch.Generator().manual_seed(24)
        module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(),
                                     torch.nn.Linear(4, 2)).to(torch.float64)
        with torch.no_grad():
            for p in module.parameters():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.5)
        return module

    def case(method: str, **kw: Any) -> Callable[[], dict[str, np.ndarray]]:
        def run() -> dict[str, np.ndarray]:
            # One torch thread, whoever calls: the matrix products' sums are split by
            # thread, and tests/influence/conftest.py pins one thread for the whole run
            # when it is collected (the default run), two cores give two otherwise.
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                s = InfluenceScorer(net(), loss=torch.nn.CrossEntropyLoss(), method=method,
                                    regularization=0.1, random_state=25, **kw).fit(X, y)
                return {"values": np.asarray(s.values_, dtype=np.float64),
                        "influences": np.asarray(s.influences(X[:5], y[:5]),
                                                 dtype=np.float64)}
            finally:
                torch.set_num_threads(threads)
        return run

    return {f"influence_{m}": case(m) for m in (
        "direct", "cg", "lissa", "arnoldi", "nystroem", "ekfac", "datainf")} | {
        "influence_direct_perturbation": case("direct", mode="perturbation")}


def compute() -> dict[str, np.ndarray]:
    """Every case's arrays, keyed ``case/array``."""
    out: dict[str, np.ndarray] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, make in _valuer_cases().items():
            for key, arr in _fitted(make()).items():
                if key == "evals" and "n_jobs" in name:
                    continue  # tasks in flight when sampling stops are also counted
                out[f"{name}/{key}"] = arr
        for name, run in _influence_cases().items():
            for key, arr in run().items():
                out[f"{name}/{key}"] = arr
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="(re)write golden.npz")
    args = parser.parse_args()
    arrays = compute()
    if args.write:
        np.savez_compressed(PATH, **arrays)
        print(f"wrote {len(arrays)} arrays to {PATH}")
    else:
        print(f"{len(arrays)} arrays; --write saves them")
