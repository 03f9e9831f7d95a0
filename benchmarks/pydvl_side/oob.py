"""The pyDVL 0.10 half of ``benchmarks/bench_oob.py``.

Runs inside ``benchmarks/.pydvl-venv`` (see ``benchmarks/pydvl_env.py``): reads a JSON
object on stdin, prints one JSON object as the last line of stdout.

Arguments::

    data          path of an .npz with X, y (noisy labels) and flipped (bool)
    model         "bagging" (BaggingClassifier of decision trees) or "forest"
    n_estimators  members of the ensemble
    random_state  seed of the ensemble
    repeats       timed repetitions of the valuation (the minimum is reported)
    out_dir       added by run_pydvl; the values are saved there as .npy

The ensemble is fitted here with the same scikit-learn version, data and seed as the
skdvl half, so both value the same ensemble; ``samples_sha`` (a hash of every member's
drawn rows) and ``pred_sha`` (of every member's predictions on X) let the caller check.
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

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
from _shared import ensemble, sha  # noqa: E402
from pydvl.valuation import DataOOBValuation, Dataset
from sklearn.metrics import roc_auc_score


def main() -> None:
    args = json.load(sys.stdin)
    with np.load(args["data"]) as f:
        X, y, flipped = f["X"], f["y"], f["flipped"]
    model = ensemble(args["model"], args["n_estimators"], args["random_state"])
    t0 = time.perf_counter()
    model.fit(X, y)
    fit_s = time.perf_counter() - t0
    data = Dataset(X, y)
    times, values = [], None
    for _ in range(args.get("repeats", 3)):
        valuation = DataOOBValuation(model)
        t0 = time.perf_counter()
        valuation.fit(data)
        times.append(time.perf_counter() - t0)
        result = valuation.result
        order = np.argsort(result.indices)
        values = np.asarray(result.values)[order]
    path = os.path.join(args["out_dir"], "values.npy")
    np.save(path, values)
    finite = np.isfinite(values)
    print(json.dumps({
        "pydvl_version": pydvl.__version__,
        "fit_s": fit_s,
        "value_s": min(times),
        "auroc": float(roc_auc_score(flipped[finite], -values[finite])),
        "values": path,
        "samples_sha": sha(model.estimators_samples_),
        "pred_sha": sha([est.predict(X) for est in model.estimators_]),
    }))


if __name__ == "__main__":
    main()
