"""The pyDVL 0.10 half of ``benchmarks/bench_least_core.py``.

Runs inside ``benchmarks/.pydvl-venv`` (see ``benchmarks/pydvl_env.py``): reads a JSON
object on stdin, prints one JSON object as the last line of stdout. Only pyDVL's public
API is used: ``MonteCarloLeastCoreValuation`` (uniform powerset sampling, cvxpy with its
default solver SCS for the LP and the egalitarian QP), its ``ShoesGame`` and
``ModelUtility``.

Arguments::

    part        "shoes" or "breast_cancer"
    budgets     list of n_samples
    seeds       list of sampling seeds
    left, right (shoes) the ShoesGame
    data        (breast_cancer) path of the .npz written by bench_least_core.py
    lr_max_iter (breast_cancer) max_iter of the LogisticRegression
    out_dir     added by run_pydvl; value arrays are saved there as .npy
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
from pydvl.valuation.games import ShoesGame
from pydvl.valuation.methods.least_core import MonteCarloLeastCoreValuation
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits


def _fit(utility, data, n_samples: int, seed: int, out_dir: str, name: str) -> dict:
    valuation = MonteCarloLeastCoreValuation(utility, n_samples=n_samples, seed=seed,
                                             progress=False)
    with parallel_config(n_jobs=1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        valuation.fit(data)
        wall = time.perf_counter() - t0
    res = valuation.result
    values = np.empty(len(res.values))
    values[np.asarray(res.indices)] = np.asarray(res.values, dtype=float)
    path = os.path.join(out_dir, f"{name}_{n_samples}_{seed}.npy")
    np.save(path, values)
    return {"n_samples": n_samples, "seed": seed, "wall_s": wall,
            "subsidy": float(getattr(res, "subsidy", np.nan)),
            "status": str(res.status), "values": path}


def main() -> None:
    args = json.load(sys.stdin)
    out = {"pydvl_version": pydvl.__version__, "runs": []}
    if args["part"] == "shoes":
        game = ShoesGame(left=int(args["left"]), right=int(args["right"]))
        utility, data = game.u, game.data
    else:
        z = np.load(args["data"])
        val = Dataset(z["X_val"], z["y_val"])
        scorer = SupervisedScorer("accuracy", val, default=0.0, range=(0.0, 1.0))
        utility = ModelUtility(LogisticRegression(max_iter=int(args["lr_max_iter"])),
                               scorer, catch_errors=True, show_warnings=False)
        data = Dataset(z["X_train"], z["y_train"])
    with threadpool_limits(1):
        for n_samples in args["budgets"]:
            for seed in args["seeds"]:
                out["runs"].append(_fit(utility, data, int(n_samples), int(seed),
                                        args["out_dir"], args["part"]))
                print(f"pyDVL {args['part']} {n_samples} seed {seed}: "
                      f"{out['runs'][-1]['wall_s']:.2f} s", file=sys.stderr, flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
