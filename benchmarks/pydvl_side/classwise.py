"""The pyDVL 0.10 half of ``benchmarks/bench_classwise.py``.

Runs inside ``benchmarks/.pydvl-venv`` (see ``benchmarks/pydvl_env.py``): reads a JSON
object on stdin, prints one JSON object as the last line of stdout. Only pyDVL's public
API is used: ``ClasswiseShapleyValuation`` with a ``ClasswiseModelUtility`` and its
``ClasswiseSupervisedScorer("accuracy")``, and a ``ClasswiseSampler`` of one in-class
``PermutationSampler`` permutation per out-of-class ``UniformSampler`` subset (the
paper's scheme), values normalised (pyDVL's default).

Arguments::

    data            path of the .npz written by bench_classwise.py (X_train, y_train,
                    X_val, y_val, flipped)
    lr_max_iter     max_iter of the LogisticRegression
    seed            sampling seed
    permutations    permutations per class (MinUpdates: every row gets this many updates)
    rtol            None, or the rtol of a RelativeTruncation of each permutation
    out_dir         added by run_pydvl; arrays are saved there as .npy
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
from pydvl.valuation import (
    ClasswiseModelUtility,
    ClasswiseSampler,
    ClasswiseShapleyValuation,
    ClasswiseSupervisedScorer,
    Dataset,
    MinUpdates,
    NoIndexIteration,
    NoTruncation,
    PermutationSampler,
    RelativeTruncation,
    UniformSampler,
)
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits


class CountingLogisticRegression(LogisticRegression):
    """LogisticRegression counting its ``fit`` calls (n_jobs=1: an in-process counter)."""

    n_fits = 0

    def fit(self, X, y, sample_weight=None):
        type(self).n_fits += 1
        return super().fit(X, y, sample_weight=sample_weight)


class CountingClasswiseUtility(ClasswiseModelUtility):
    """pyDVL's class-wise utility counting its calls (shared by pyDVL's copies)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = [0]

    def __call__(self, sample):
        self.calls[0] += 1
        return super().__call__(sample)


def main() -> None:
    args = json.load(sys.stdin)
    z = np.load(args["data"])
    d = {k: z[k] for k in z.files}
    seed, n_perm, rtol = int(args["seed"]), int(args["permutations"]), args.get("rtol")
    scorer = ClasswiseSupervisedScorer("accuracy", Dataset(d["X_val"], d["y_val"]))
    utility = CountingClasswiseUtility(
        CountingLogisticRegression(max_iter=int(args["lr_max_iter"])), scorer,
        catch_errors=True, show_warnings=False)
    truncation = NoTruncation() if rtol is None else RelativeTruncation(
        rtol=float(rtol), burn_in_fraction=0.0)
    sampler = ClasswiseSampler(
        in_class=PermutationSampler(truncation=truncation, seed=seed),
        out_of_class=UniformSampler(index_iteration=NoIndexIteration, seed=seed + 1),
        max_in_class_samples=1)
    valuation = ClasswiseShapleyValuation(utility, sampler, is_done=MinUpdates(n_perm),
                                          normalize_values=True)
    train = Dataset(d["X_train"], d["y_train"])
    CountingLogisticRegression.n_fits = 0
    LogisticRegression(max_iter=int(args["lr_max_iter"])).fit(d["X_train"], d["y_train"])
    with threadpool_limits(1), parallel_config(n_jobs=1):
        t0 = time.perf_counter()
        valuation.fit(train)
        wall = time.perf_counter() - t0
    res = valuation.result
    values = np.empty(len(res.values))
    values[np.asarray(res.indices)] = np.asarray(res.values, dtype=float)
    counts = np.empty(len(res.values), dtype=np.int64)
    counts[np.asarray(res.indices)] = np.asarray(res.counts)
    path = os.path.join(args["out_dir"], "values.npy")
    np.save(path, values)
    name = "pyDVL ClasswiseShapleyValuation" + (
        "" if rtol is None else f"(RelativeTruncation({rtol}))")
    print(json.dumps({
        "pydvl_version": pydvl.__version__,
        "name": name, "wall_s": wall, "fits": CountingLogisticRegression.n_fits,
        "n_utility_evaluations": utility.calls[0],
        "permutations_min": int(counts.min()), "permutations_max": int(counts.max()),
        "auroc": float(roc_auc_score(d["flipped"], -values)), "values": path,
    }))


if __name__ == "__main__":
    main()
