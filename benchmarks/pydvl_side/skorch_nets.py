"""The pyDVL 0.10 half of ``benchmarks/bench_skorch.py``: MSR Banzhaf on a skorch MLP.

Runs inside ``benchmarks/.pydvl-venv`` (see ``benchmarks/pydvl_env.py``), which has torch
but not skorch: ``skorch_path`` is a directory holding links to the pure-Python
``skorch`` and ``tabulate`` packages of skdvl's venv, put first on ``sys.path`` (the
file is not named ``skorch.py``: it would shadow the package). Reads a JSON object on
stdin, prints one JSON object as the last line of stdout.

Arguments: ``data`` (the .npz of bench_skorch.py), ``skorch_path``, ``n_samples`` (MSR
samples: one fit each), ``hidden``, ``max_epochs``, ``lr``, ``batch_size``, ``seed``,
``out_dir`` (added by run_pydvl).
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings

warnings.filterwarnings("ignore")  # pyDeprecate FutureWarnings at import

import numpy as np


def main() -> None:
    args = json.load(sys.stdin)
    sys.path.insert(0, args["skorch_path"])
    import pydvl
    import skorch
    import torch
    from joblib import parallel_config
    from pydvl.valuation import (
        Dataset,
        MaxSamples,
        MaxUpdates,
        ModelUtility,
        MSRBanzhafValuation,
        SupervisedScorer,
    )
    from sklearn.metrics import roc_auc_score
    from threadpoolctl import threadpool_limits

    class MLP(torch.nn.Module):  # the module of bench_skorch.py, line for line
        def __init__(self, d=30, hidden=16, k=2):
            super().__init__()
            self.l1, self.l2 = torch.nn.Linear(d, hidden), torch.nn.Linear(hidden, k)

        def forward(self, X):
            return torch.softmax(self.l2(torch.relu(self.l1(X))), dim=-1)

    fits = [0]

    class CountingNet(skorch.NeuralNetClassifier):
        def fit(self, X, y, **fit_params):
            fits[0] += 1
            return super().fit(X, y, **fit_params)

    z = np.load(args["data"])
    X, y, Xv, yv = z["X_train"], z["y_train"], z["X_val"], z["y_val"]
    net = CountingNet(MLP, module__d=X.shape[1], module__hidden=int(args["hidden"]),
                      max_epochs=int(args["max_epochs"]), lr=float(args["lr"]),
                      batch_size=int(args["batch_size"]), train_split=None, verbose=0)
    scorer = SupervisedScorer("accuracy", Dataset(Xv, yv), default=0.0, range=(0.0, 1.0))
    utility = ModelUtility(net, scorer, catch_errors=True, show_warnings=False)
    n = int(args["n_samples"])
    valuation = MSRBanzhafValuation(utility, is_done=MaxUpdates(10**9),
                                    seed=int(args["seed"]), progress=False)
    valuation.is_done = MaxSamples(valuation.sampler, n)
    torch.set_num_threads(1)
    with threadpool_limits(1), parallel_config(n_jobs=1):
        t0 = time.perf_counter()
        valuation.fit(Dataset(X, y))
        wall = time.perf_counter() - t0
    values = np.asarray(valuation.result.values, dtype=float)
    path = os.path.join(args["out_dir"], "values.npy")
    np.save(path, values)
    ok = np.isfinite(values)
    print(json.dumps({
        "pydvl_version": pydvl.__version__, "torch": torch.__version__,
        "skorch": skorch.__version__, "numpy": np.__version__, "wall_s": wall,
        "fits": fits[0], "fits_per_s": fits[0] / wall, "values": path,
        "auroc": float(roc_auc_score(z["flipped"][ok], -values[ok])),
    }))


if __name__ == "__main__":
    main()
