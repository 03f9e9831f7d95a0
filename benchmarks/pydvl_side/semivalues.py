"""The pyDVL 0.10 half of ``benchmarks/bench_semivalues.py``.

Runs inside ``benchmarks/.pydvl-venv`` (see ``benchmarks/pydvl_env.py``): reads a JSON
object on stdin, prints one JSON object as the last line of stdout.

Arguments (all optional except ``data`` for the ``tmc`` and ``exact`` parts)::

    parts           list among "overhead", "tmc", "exact"
    data            path of the .npz written by bench_semivalues.py
    n_players       players of the constant-time game (1000)
    n_permutations  permutations for the overhead benchmark
    n_msr_samples   MSR samples for the overhead benchmark
    tmc_permutations, tmc_rtol, tmc_burn_in, tmc_n_jobs, lr_max_iter, seed (TMC)
    exact_n_jobs
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
from pydvl.utils.caching import CachedFuncConfig, InMemoryCacheBackend
from pydvl.valuation import (
    Dataset,
    DeterministicUniformSampler,
    MaxSamples,
    MaxUpdates,
    ModelUtility,
    MSRBanzhafValuation,
    NoStopping,
    NoTruncation,
    PermutationSampler,
    RelativeTruncation,
    ShapleyValuation,
    SupervisedScorer,
    TMCShapleyValuation,
)
from pydvl.valuation.utility.base import UtilityBase
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

_FIT_LOG_ENV = "SKDVL_BENCH_FIT_LOG"


class CountingLogisticRegression(LogisticRegression):
    """LogisticRegression that appends one byte to a file per ``fit`` call.

    The file survives joblib worker processes, so its size is the number of fits done
    in all processes (failed fits, e.g. on a one-class subset, included).
    """

    def fit(self, X, y, sample_weight=None):
        path = os.environ.get(_FIT_LOG_ENV)
        if path:
            with open(path, "ab") as f:
                f.write(b".")
        return super().fit(X, y, sample_weight=sample_weight)


class MajorityGame(UtilityBase):
    """u(S) = 1 if |S| > n/2 else 0, in O(1): the cost ignores n and the members of S.

    ``calls`` is a one-element list shared by the shallow copies pyDVL makes
    (``with_dataset``), so it counts utility calls when running in one process.
    """

    def __init__(self, n_players: int):
        self.half = n_players / 2
        self.calls = [0]

    def __call__(self, sample) -> float:
        self.calls[0] += 1
        if sample is None:
            return 0.0
        return 1.0 if len(sample.subset) > self.half else 0.0


def _game_dataset(n: int) -> Dataset:
    return Dataset(np.zeros((n, 1)), np.zeros(n))


def bench_overhead(args: dict) -> list[dict]:
    """Engine overhead on a constant-time game, n_jobs=1."""
    n = int(args.get("n_players", 1000))
    n_perm = int(args.get("n_permutations", 20))
    n_msr = int(args.get("n_msr_samples", 100))
    data = _game_dataset(n)
    rows = []

    def perm_row(name, make):
        game = MajorityGame(n)
        valuation = make(game)
        with parallel_config(n_jobs=1):
            t0 = time.perf_counter()
            valuation.fit(data)
            wall = time.perf_counter() - t0
        res = valuation.result
        n_perms = int(np.max(res.counts))
        updates = int(np.sum(res.counts))  # one per player per permutation
        return {
            "name": name, "n_players": n, "wall_s": wall, "samples": n_perms,
            "updates": updates, "utility_calls": game.calls[0],
            "samples_per_s": n_perms / wall, "updates_per_s": updates / wall,
            "values_mean": float(np.mean(res.values)),
        }

    # The generic class with its sampler: importance weight computed per update.
    rows.append(perm_row(
        "pydvl ShapleyValuation+PermutationSampler",
        lambda g: ShapleyValuation(g, PermutationSampler(seed=0), MaxUpdates(n_perm),
                                   progress=False),
    ))
    # The convenience class: no importance weights (log_coefficient None).
    rows.append(perm_row(
        "pydvl TMCShapleyValuation(NoTruncation)",
        lambda g: TMCShapleyValuation(g, truncation=NoTruncation(),
                                      is_done=MaxUpdates(n_perm), seed=0,
                                      progress=False),
    ))

    game = MajorityGame(n)
    valuation = MSRBanzhafValuation(game, is_done=MaxUpdates(10**9), seed=0,
                                    progress=False)
    valuation.is_done = MaxSamples(valuation.sampler, n_msr)
    with parallel_config(n_jobs=1):
        t0 = time.perf_counter()
        valuation.fit(data)
        wall = time.perf_counter() - t0
    samples = game.calls[0]  # one utility call per MSR sample
    updates = samples * n  # pyDVL emits one MSRValueUpdate per player per sample
    rows.append({
        "name": "pydvl MSRBanzhafValuation", "n_players": n, "wall_s": wall,
        "samples": samples, "updates": updates, "utility_calls": samples,
        "samples_per_s": samples / wall, "updates_per_s": updates / wall,
        "pydvl_counts_max": int(np.max(valuation.result.counts)),
        "values_mean": float(np.nanmean(valuation.result.values)),
    })
    return rows


def _load(path: str):
    z = np.load(path)
    return {k: z[k] for k in z.files}


def _fit_log(out_dir: str, name: str) -> str:
    path = os.path.join(out_dir, f"fits-{name}.log")
    open(path, "wb").close()
    os.environ[_FIT_LOG_ENV] = path  # inherited by joblib workers started later
    return path


def _utility(d: dict, max_iter: int, cache=None) -> ModelUtility:
    val = Dataset(d["X_val"], d["y_val"])
    scorer = SupervisedScorer("accuracy", val, default=0.0, range=(0.0, 1.0))
    model = CountingLogisticRegression(max_iter=max_iter)
    # pyDVL caches only calls slower than time_threshold (0.3 s by default): 0 here.
    config = CachedFuncConfig(time_threshold=0.0) if cache is not None else None
    return ModelUtility(model, scorer, catch_errors=True, show_warnings=False,
                        cache_backend=cache, cached_func_options=config)


def bench_tmc(args: dict) -> dict:
    """TMC Shapley with LogisticRegression on breast cancer with flipped labels."""
    d = _load(args["data"])
    n_perm = int(args.get("tmc_permutations", 20))
    n_jobs = int(args.get("tmc_n_jobs", 2))
    rtol = float(args.get("tmc_rtol", 0.01))
    burn_in = float(args.get("tmc_burn_in", 0.0))
    log = _fit_log(args["out_dir"], "tmc")
    train = Dataset(d["X_train"], d["y_train"])
    valuation = TMCShapleyValuation(
        _utility(d, int(args.get("lr_max_iter", 1000))),
        truncation=RelativeTruncation(rtol=rtol, burn_in_fraction=burn_in),
        is_done=MaxUpdates(n_perm), seed=int(args.get("seed", 0)), progress=False,
    )
    with parallel_config(n_jobs=n_jobs):
        t0 = time.perf_counter()
        valuation.fit(train)
        wall = time.perf_counter() - t0
    res = valuation.result
    values = np.asarray(res.values, dtype=float)
    order = np.asarray(res.indices)
    full = np.empty_like(values)
    full[order] = values  # result is in index order already; be explicit
    fits = os.path.getsize(log)
    path = os.path.join(args["out_dir"], "tmc_values.npy")
    np.save(path, full)
    return {
        "name": "pydvl TMCShapleyValuation", "n_train": len(train), "n_jobs": n_jobs,
        "rtol": rtol, "burn_in_fraction": burn_in, "wall_s": wall,
        "permutations": int(np.max(res.counts)), "fits": fits,
        "auroc": float(roc_auc_score(d["flipped"], -full)), "values": path,
    }


def bench_exact(args: dict) -> list[dict]:
    """Exact Shapley at n=10: every subset of every complement, with and w/o cache."""
    d = _load(args["data"])
    n = int(args.get("exact_n", 10))
    train = Dataset(d["X_train"][:n], d["y_train"][:n])
    rows = []
    for cached in (False, True):
        log = _fit_log(args["out_dir"], f"exact-{cached}")
        cache = InMemoryCacheBackend() if cached else None
        sampler = DeterministicUniformSampler()
        valuation = ShapleyValuation(
            _utility(d, int(args.get("lr_max_iter", 1000)), cache), sampler,
            NoStopping(sampler), progress=False,
        )
        with parallel_config(n_jobs=int(args.get("exact_n_jobs", 1))):
            t0 = time.perf_counter()
            valuation.fit(train)
            wall = time.perf_counter() - t0
        path = os.path.join(args["out_dir"], f"exact_values_{int(cached)}.npy")
        np.save(path, np.asarray(valuation.result.values, dtype=float))
        rows.append({
            "name": "pydvl ShapleyValuation+DeterministicUniformSampler"
                    + (" +InMemoryCache" if cached else ""),
            "n_players": n, "wall_s": wall, "fits": os.path.getsize(log),
            "samples": int(np.sum(valuation.result.counts)),
            # two utility calls per (i, S) sample: u(S + i) and u(S)
            "n_utility_evaluations": 2 * int(np.sum(valuation.result.counts)),
            "values": path,
        })
    return rows


def main() -> None:
    args = json.load(sys.stdin)
    parts = args.get("parts", ["overhead", "tmc", "exact"])
    out = {"pydvl_version": pydvl.__version__, "numpy": np.__version__}
    with threadpool_limits(1):
        if "overhead" in parts:
            out["overhead"] = bench_overhead(args)
        if "tmc" in parts:
            out["tmc"] = bench_tmc(args)
        if "exact" in parts:
            out["exact"] = bench_exact(args)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
