"""The pyDVL 0.10 half of ``benchmarks/bench_group_testing.py``.

Runs inside ``benchmarks/.pydvl-venv`` (see ``benchmarks/pydvl_env.py``): reads a JSON
object on stdin, prints one JSON object as the last line of stdout. Only pyDVL's public
API is used (``GroupTestingShapleyValuation``, ``ModelUtility``, ``SupervisedScorer``,
``Dataset`` and the ``Game`` base class of ``pydvl.valuation.games``).

Arguments::

    part        "game" or "breast_cancer"
    costs       (game) the 40 runway costs of the airport game, u(S) = max cost in S
    data        (breast_cancer) path of the .npz written by bench_group_testing.py
    n_samples   coalitions to sample
    tolerance   the feasibility tolerance: pyDVL's ``epsilon`` is the bound on
                |s_i - s_j - dU_ij| itself (skdvl's epsilon / (2 sqrt(n)))
    batch_size  pyDVL's sampler batch size
    seed, lr_max_iter, out_dir
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore")  # pyDeprecate FutureWarnings at import

import pydvl
from joblib import parallel_config
from pydvl.valuation import Dataset, ModelUtility, SupervisedScorer
from pydvl.valuation.games import Game
from pydvl.valuation.methods.gt_shapley import GroupTestingShapleyValuation
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits


class Airport(Game):
    """u(S) = the largest cost in S (0 for the empty set): skdvl.games.AirportGame."""

    def __init__(self, costs):
        self.costs = np.asarray(costs, dtype=float)
        super().__init__(len(self.costs), score_range=(0.0, float(self.costs.max())))

    def _score(self, X):
        return float(self.costs[X[:, 0].astype(int)].max()) if len(X) else 0.0


def _values(valuation, n: int, out_dir: str, name: str) -> str:
    res = valuation.result
    values = np.empty(n)
    values[np.asarray(res.indices)] = np.asarray(res.values, dtype=float)
    path = os.path.join(out_dir, f"{name}_values.npy")
    np.save(path, values)
    return path


def _fit(utility, data, args) -> tuple[GroupTestingShapleyValuation, float]:
    valuation = GroupTestingShapleyValuation(
        utility, n_samples=int(args["n_samples"]), epsilon=float(args["tolerance"]),
        progress=False, seed=int(args["seed"]), batch_size=int(args["batch_size"]))
    with parallel_config(n_jobs=1):
        t0 = time.perf_counter()
        valuation.fit(data)
        wall = time.perf_counter() - t0
    return valuation, wall


def main() -> None:
    args = json.load(sys.stdin)
    out = {"pydvl_version": pydvl.__version__, "numpy": np.__version__}
    with threadpool_limits(1):
        if args["part"] == "game":
            game = Airport(args["costs"])
            valuation, wall = _fit(game.u, game.data, args)
            n = game.n_players
        else:
            z = np.load(args["data"])
            val = Dataset(z["X_val"], z["y_val"])
            scorer = SupervisedScorer("accuracy", val, default=0.0, range=(0.0, 1.0))
            utility = ModelUtility(LogisticRegression(max_iter=int(args["lr_max_iter"])),
                                   scorer, catch_errors=True, show_warnings=False)
            valuation, wall = _fit(utility, Dataset(z["X_train"], z["y_train"]), args)
            n = len(z["y_train"])
    out["row"] = {
        "name": f"pyDVL GroupTestingShapleyValuation(n_samples={args['n_samples']}, "
                f"epsilon={args['tolerance']:.4g}, cvxpy SCS)",
        "wall_s": wall, "status": str(valuation.result.status),
        "values": _values(valuation, n, args["out_dir"], args["part"]),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
