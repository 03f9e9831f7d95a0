"""The pyDVL 0.10 half of ``benchmarks/bench_batch_fit.py``.

Runs inside ``benchmarks/.pydvl-venv`` (see ``benchmarks/pydvl_env.py``): reads a JSON
object on stdin, prints one JSON object as the last line of stdout. Only pyDVL's public
API is used (its valuation classes, samplers, stopping criteria and ``ModelUtility``).

Arguments::

    part            one of "tmc", "msr", "exact16", "digits"
    data            path of the .npz written by bench_batch_fit.py (X_train, y_train,
                    X_val, y_val, flipped)
    lr_max_iter     max_iter of the LogisticRegression (1000)
    seed            sampling seed
    permutations, rtol          (tmc, digits)
    msr_samples                 (msr)
    exact_n, exact_samples, exact_max_s   (exact16: pyDVL's exact Shapley is run only
                    when its time, extrapolated from ``exact_samples`` uniform samples,
                    is below ``exact_max_s``)
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
    Dataset,
    DeterministicUniformSampler,
    MaxSamples,
    MaxUpdates,
    ModelUtility,
    MSRBanzhafValuation,
    NoStopping,
    RelativeTruncation,
    ShapleyValuation,
    SupervisedScorer,
    TMCShapleyValuation,
    UniformSampler,
)
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits


class CountingLogisticRegression(LogisticRegression):
    """LogisticRegression counting its ``fit`` calls (failed ones, one-class, included).

    n_jobs=1 throughout, so an in-process class counter sees every fit.
    """

    n_fits = 0

    def fit(self, X, y, sample_weight=None):
        type(self).n_fits += 1
        return super().fit(X, y, sample_weight=sample_weight)


class CountingModelUtility(ModelUtility):
    """pyDVL's ModelUtility counting its calls (the list is shared by pyDVL's copies)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = [0]

    def __call__(self, sample):
        self.calls[0] += 1
        return super().__call__(sample)


def _load(path: str) -> dict:
    z = np.load(path)
    return {k: z[k] for k in z.files}


def _utility(d: dict, max_iter: int) -> CountingModelUtility:
    val = Dataset(d["X_val"], d["y_val"])
    scorer = SupervisedScorer("accuracy", val, default=0.0, range=(0.0, 1.0))
    return CountingModelUtility(CountingLogisticRegression(max_iter=max_iter), scorer,
                                catch_errors=True, show_warnings=False)


def _timed(valuation, train: Dataset) -> tuple[float, int]:
    CountingLogisticRegression.n_fits = 0
    with parallel_config(n_jobs=1):
        t0 = time.perf_counter()
        valuation.fit(train)
        wall = time.perf_counter() - t0
    return wall, CountingLogisticRegression.n_fits


def _values(valuation, out_dir: str, name: str) -> tuple[np.ndarray, str]:
    res = valuation.result
    values = np.empty(len(res.values))
    values[np.asarray(res.indices)] = np.asarray(res.values, dtype=float)
    path = os.path.join(out_dir, f"{name}_values.npy")
    np.save(path, values)
    return values, path


def bench_tmc(args: dict, d: dict) -> dict:
    """TMC Shapley, RelativeTruncation(rtol), MaxUpdates(permutations)."""
    rtol, n_perm = float(args["rtol"]), int(args["permutations"])
    u = _utility(d, int(args["lr_max_iter"]))
    valuation = TMCShapleyValuation(
        u, truncation=RelativeTruncation(rtol=rtol, burn_in_fraction=0.0),
        is_done=MaxUpdates(n_perm), seed=int(args["seed"]), progress=False)
    wall, fits = _timed(valuation, Dataset(d["X_train"], d["y_train"]))
    values, path = _values(valuation, args["out_dir"], args["part"])
    return {
        "name": f"pyDVL TMCShapleyValuation(RelativeTruncation({rtol}))",
        "wall_s": wall, "fits": fits, "n_utility_evaluations": u.calls[0],
        "permutations": int(np.max(valuation.result.counts)),
        "auroc": float(roc_auc_score(d["flipped"], -values)), "values": path,
    }


def bench_msr(args: dict, d: dict) -> dict:
    """MSR Banzhaf, exactly ``msr_samples`` sampled subsets (one utility call each)."""
    n_samples = int(args["msr_samples"])
    u = _utility(d, int(args["lr_max_iter"]))
    valuation = MSRBanzhafValuation(u, is_done=MaxUpdates(10**9), seed=int(args["seed"]),
                                    progress=False)
    valuation.is_done = MaxSamples(valuation.sampler, n_samples)
    wall, fits = _timed(valuation, Dataset(d["X_train"], d["y_train"]))
    values, path = _values(valuation, args["out_dir"], "msr")
    return {
        "name": f"pyDVL MSRBanzhafValuation + MaxSamples({n_samples})",
        "wall_s": wall, "fits": fits, "n_utility_evaluations": u.calls[0],
        "samples": n_samples,
        "auroc": float(roc_auc_score(d["flipped"], -values)), "values": path,
    }


def bench_exact16(args: dict, d: dict) -> list[dict]:
    """pyDVL's exact Shapley of the first ``exact_n`` rows, or its extrapolated time.

    ShapleyValuation + DeterministicUniformSampler enumerates, for each player i, every
    subset S of the others and calls u(S + i) and u(S): n 2^(n-1) samples. A
    UniformSampler draws S uniformly from the subsets of the others, so its samples
    have the sizes of the exact enumeration; the cost per sample measured on
    ``exact_samples`` of them (same valuation class, same utility) times n 2^(n-1) is
    the time exact enumeration would take.
    """
    n = int(args["exact_n"])
    train = Dataset(d["X_train"][:n], d["y_train"][:n])
    k = int(args["exact_samples"])
    u = _utility(d, int(args["lr_max_iter"]))
    sampler = UniformSampler(seed=int(args["seed"]))
    valuation = ShapleyValuation(u, sampler, MaxSamples(sampler, k), progress=False)
    wall, fits = _timed(valuation, train)
    n_exact = n * 2 ** (n - 1)
    per_sample = wall / k
    rows = [{
        "name": f"pyDVL ShapleyValuation + UniformSampler, {k} samples (sample of the "
                "exact enumeration's cost)",
        "n_players": n, "wall_s": wall, "fits": fits, "samples": k,
        "n_utility_evaluations": u.calls[0],
        "extrapolated_exact_s": per_sample * n_exact, "exact_samples": n_exact,
        "extrapolated_exact_fits": fits / k * n_exact,
    }]
    if per_sample * n_exact <= float(args["exact_max_s"]):
        u = _utility(d, int(args["lr_max_iter"]))
        sampler = DeterministicUniformSampler()
        valuation = ShapleyValuation(u, sampler, NoStopping(sampler), progress=False)
        wall, fits = _timed(valuation, train)
        _, path = _values(valuation, args["out_dir"], "exact")
        rows.append({
            "name": "pyDVL ShapleyValuation + DeterministicUniformSampler (exact)",
            "n_players": n, "wall_s": wall, "fits": fits,
            "n_utility_evaluations": u.calls[0], "values": path,
        })
    return rows


def main() -> None:
    args = json.load(sys.stdin)
    d = _load(args["data"])
    part = args["part"]
    out = {"pydvl_version": pydvl.__version__, "numpy": np.__version__}
    with threadpool_limits(1):
        if part in ("tmc", "digits"):
            out[part] = bench_tmc(args, d)
        elif part == "msr":
            out[part] = bench_msr(args, d)
        elif part == "exact16":
            out[part] = bench_exact16(args, d)
        else:
            raise ValueError(f"unknown part {part!r}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
