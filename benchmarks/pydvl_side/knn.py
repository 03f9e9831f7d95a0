"""The pyDVL 0.10 half of ``benchmarks/bench_knn.py``.

Runs inside ``benchmarks/.pydvl-venv`` (see ``benchmarks/pydvl_env.py``): reads a JSON
object on stdin, prints one JSON object as the last line of stdout.

Arguments::

    data        path of an .npz with x_train, y_train, x_val, y_val
    k           n_neighbors of the KNeighborsClassifier
    n_jobs      joblib n_jobs around ``fit`` (pyDVL reads it from parallel_config)
    repeats     number of timed fits (the values of the last one are returned)
    out_dir     added by run_pydvl; the values are saved there as .npy
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore")  # pyDeprecate FutureWarnings at import

import pydvl
from joblib import parallel_config
from pydvl.valuation import Dataset, KNNShapleyValuation
from sklearn.neighbors import KNeighborsClassifier


def main() -> None:
    args = json.load(sys.stdin)
    with np.load(args["data"]) as z:
        x_train, y_train, x_val, y_val = (z[k] for k in ("x_train", "y_train", "x_val", "y_val"))
    train, test = Dataset(x_train, y_train), Dataset(x_val, y_val)
    rss_before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = []
    for _ in range(int(args.get("repeats", 1))):
        valuation = KNNShapleyValuation(
            KNeighborsClassifier(n_neighbors=int(args["k"])), test_data=test, progress=False
        )
        t0 = time.perf_counter()
        with parallel_config(n_jobs=int(args.get("n_jobs", 1))):
            valuation.fit(train)
        times.append(time.perf_counter() - t0)
    result = valuation.result
    values = np.empty(len(train))
    values[np.asarray(result.indices)] = np.asarray(result.values)
    path = os.path.join(args["out_dir"], "values.npy")
    np.save(path, values)
    print(json.dumps({
        "fit_s": min(times), "fit_s_all": times, "values": path,
        "rss_before_fit_mb": rss_before_mb, "pydvl_version": pydvl.__version__,
    }))


if __name__ == "__main__":
    main()
