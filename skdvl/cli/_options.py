"""The ``skdvl`` command's methods and options: names, defaults, help, and the valuers.

What ``--method`` can name, the options each method reads and their defaults, the
help texts, the argparse declarations shared by the sub-commands, and
:func:`make_valuer`, which turns a method and the parsed options into a configured
valuer. Used by the ``value``/``clean`` commands and by ``demo`` alike.
"""

from __future__ import annotations

import argparse
from typing import Any

from skdvl.cli._io import _columns, _n_jobs, _positive_int, _seed

METHODS = ("knn", "oob", "shapley", "banzhaf", "beta", "loo")
TASKS = ("auto", "classification", "regression")
#: what ``--method auto`` (the default) values with, per task, chosen by measurement:
#: the largest mean gain of ``skdvl clean --fraction 0.1`` over dropping as many rows at
#: random (``benchmarks/bench_cli_default.py``; the table is in doc/cli.md)
DEFAULT_METHODS = {"classification": "knn", "regression": "oob"}
_DEFAULT_WHY = {
    "classification": "4 benchmark tasks with 10% flipped labels",
    "regression": "2 benchmark tasks",
}
# option -> (default, methods that use it); None in args means "not given"
_METHOD_OPTIONS = {
    "n_neighbors": (5, ("knn",)),
    "n_estimators": (100, ("oob",)),
    "max_updates": (50, ("shapley", "banzhaf", "beta")),
}

_METHOD_HELP = f"""valuation method. auto (the default):
{DEFAULT_METHODS["classification"]} for classification, {DEFAULT_METHODS["regression"]} for
regression, the methods whose cleaning beat random dropping by the most in a benchmark
on real tasks (see the documentation); knn (exact KNN-Shapley, fast), oob (Data-OOB:
out-of-bag scores of bagged trees), shapley (truncated Monte Carlo Shapley of a
logistic/ridge model, slow), banzhaf (MSR Banzhaf), beta (Beta(16,1)-Shapley), loo
(leave-one-out)"""

_TASK_HELP = """what the target is: classification (labels) or regression (a
quantity). It chooses every model and score: logistic regression scored by accuracy
or ridge scored by R^2 (shapley/banzhaf/beta/loo), knn's classification or
regression game, classification trees scored by accuracy or regression trees scored
by -(squared error) (oob). auto (the default):
a target whose values are not all integers is a regression target, anything else
(strings, booleans, integers) is class labels; an integer target with more than 20
distinct values (a 0-100 score) is still taken as labels, with a warning: pass
--task regression for a quantity, --task classification to confirm"""

_SCALE_HELP = """use the features as they are. By default every feature is
standardised (zero mean, unit variance, fitted on DATA's rows and applied to VAL)
for knn, whose distances would otherwise be ruled by the feature with the largest
unit (a duration in ms), and for shapley/banzhaf/beta/loo, whose logistic/ridge model
would otherwise penalise features by their unit and often fail to converge; oob's
trees do not depend on scale and get the features as they are"""

_OVERWRITE_HELP = "replace output files that already exist (refused by default)"


# ----------------------------------------------------------------------------- parser
def _add_data_args(p: argparse.ArgumentParser, out_help: str) -> None:
    p.add_argument("data", metavar="DATA.csv", help="CSV with a header row; every "
                   "column but the target (and those of --drop) is a numeric feature")
    p.add_argument("--target", required=True, metavar="COL", help="name of the target column")
    p.add_argument("--out", required=True, metavar="PATH", help=out_help)
    p.add_argument("--overwrite", action="store_true", help=_OVERWRITE_HELP)
    p.add_argument("--method", choices=("auto", *METHODS), default="auto", help=_METHOD_HELP)
    p.add_argument("--task", choices=TASKS, default="auto", help=_TASK_HELP)
    p.add_argument("--drop", type=_columns, action="extend", default=[],
                   metavar="COL[,COL...]", help="columns that are not features (names, "
                   "ids, free text; may repeat): kept in the output of clean, not used "
                   "for valuing")
    p.add_argument("--no-scale", action="store_true", help=_SCALE_HELP)
    p.add_argument("--val", metavar="VAL.csv", help="validation rows, same columns as "
                   "DATA (knn/shapley/banzhaf/beta/loo; default: leave-self-out for knn, "
                   "5-fold cross-valuation for the others, oob needs none)")
    _add_common(p)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-neighbors", type=_positive_int, default=None, metavar="K",
                   help="neighbours for knn, >= 1 (default: 5)")
    p.add_argument("--n-estimators", type=_positive_int, default=None, metavar="B",
                   help="bagged trees for oob, >= 1 (default: 100)")
    p.add_argument("--max-updates", type=_positive_int, default=None, metavar="N",
                   help="Monte Carlo budget for shapley/banzhaf/beta, >= 1 (default: 50)")
    p.add_argument("--n-jobs", type=_n_jobs, default=None, metavar="J",
                   help="parallel jobs, non-zero (default: 1; -1 for all cores)")
    p.add_argument("--random-state", type=_seed, default=0, metavar="SEED",
                   help="seed in [0, 2**32 - 1]; same seed, same values (default: 0)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bars or notes on stderr")


# ----------------------------------------------------------------------------- valuers
def _model(task: str) -> Any:
    """The model of the utility-based methods, for features already standardised."""
    from sklearn.linear_model import LogisticRegression, Ridge

    return Ridge() if task == "regression" else LogisticRegression()


def _set_if_known(valuer: Any, **params: Any) -> Any:
    """Set the parameters ``valuer`` has (``task``, ``verbose`` are not on every valuer)."""
    known = valuer.get_params(deep=False)
    return valuer.set_params(**{k: v for k, v in params.items() if k in known})


def resolve_method(method: str, task: str) -> tuple[str, str]:
    """The method ``--method`` means for ``task``, and why (for the command's note).

    ``auto`` is ``DEFAULT_METHODS[task]``; any other name is itself.
    """
    if method != "auto":
        return method, "given with --method"
    return DEFAULT_METHODS[task], (f"the default for {task}: the largest mean gain over "
                                   f"random dropping on {_DEFAULT_WHY[task]}, see doc/cli.md")


def _option(args: Any, name: str) -> Any:
    value = getattr(args, name)
    return _METHOD_OPTIONS[name][0] if value is None else value


def make_valuer(method: str, *, task: str, args: Any, estimator: Any = None) -> Any:
    """The valuer for ``method`` with the command's settings.

    ``task`` is "classification" or "regression" and chooses every model and score
    explicitly. ``estimator`` is the model of utility-based methods; None means a
    logistic regression (ridge for regression).
    """
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    from skdvl import (
        BanzhafValuer,
        BetaShapleyValuer,
        DataOOBValuer,
        KNNShapley,
        LOOValuer,
        ShapleyValuer,
    )

    regression = task == "regression"
    optional = dict(task=task, verbose=0 if args.quiet else 1)
    if method == "oob":
        tree = DecisionTreeRegressor() if regression else DecisionTreeClassifier()
        valuer = DataOOBValuer(tree, n_estimators=_option(args, "n_estimators"),
                               n_jobs=args.n_jobs, random_state=args.random_state)
        return _set_if_known(valuer, **optional)
    if method == "knn":
        valuer = KNNShapley(n_neighbors=_option(args, "n_neighbors"), n_jobs=args.n_jobs)
        return _set_if_known(valuer, **optional)
    model = _model(task) if estimator is None else estimator
    common: dict[str, Any] = dict(estimator=model, scoring="r2" if regression else "accuracy",
                                  n_jobs=args.n_jobs)
    if method == "loo":
        return _set_if_known(LOOValuer(**common), **optional)
    budget = dict(max_updates=_option(args, "max_updates"), random_state=args.random_state)
    if method == "shapley":
        return _set_if_known(ShapleyValuer(**common, **budget, truncation=0.01), **optional)
    # the samplers the CLI's help names (its max_updates counts their samples)
    cls, sampler = {"banzhaf": (BanzhafValuer, "msr"),
                    "beta": (BetaShapleyValuer, "permutation")}[method]
    return _set_if_known(cls(**common, **budget, sampler=sampler), **optional)
