"""The pyDVL 0.10 half of ``benchmarks/bench_prefix_fits.py``.

Runs inside ``benchmarks/.pydvl-venv`` (see ``benchmarks/pydvl_env.py``): reads a JSON
object on stdin, prints one JSON object as the last line of stdout. Only pyDVL's public
API is used (its valuation classes, samplers, truncation policies, stopping criteria,
``ModelUtility`` and ``Sample``). BLAS is limited to one thread; joblib runs n_jobs=1.

Arguments::

    part         "tmc"       TMCShapleyValuation, one run per seed
                 "beta"      BetaShapleyValuation + PermutationSampler, one run per seed
                 "big_fits"  the utility called directly on ``n_fits`` prefixes of one
                             random permutation, at evenly spaced lengths 1..n (their
                             mean cost times n estimates one untruncated permutation)
                 "big_perm"  one untruncated permutation: TMCShapleyValuation with
                             NoTruncation and MaxUpdates(1)
    data         path of the .npz written by bench_prefix_fits.py (X_train, y_train,
                 X_val, y_val, flipped)
    lr_max_iter  max_iter of the LogisticRegression (1000)
    seeds        sampling seeds (tmc, beta); seed (big_fits, big_perm)
    permutations (tmc, beta); rtol: a float or null for NoTruncation (tmc, beta)
    alpha, beta  (beta)
    n_fits       (big_fits)
    out_dir      added by run_pydvl; arrays are saved there as .npy
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
    BetaShapleyValuation,
    Dataset,
    MaxUpdates,
    ModelUtility,
    NoTruncation,
    PermutationSampler,
    RelativeTruncation,
    SupervisedScorer,
    TMCShapleyValuation,
)
from pydvl.valuation.types import Sample
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits


class CountingLR(LogisticRegression):
    """LogisticRegression counting its ``fit`` calls (n_jobs=1: one process sees all)."""

    n_fits = 0

    def fit(self, X, y, sample_weight=None):
        type(self).n_fits += 1
        return super().fit(X, y, sample_weight=sample_weight)


class CountedUtility(ModelUtility):
    """ModelUtility counting its calls; the counter list is shared by pyDVL's copies."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = [0]

    def __call__(self, sample):
        self.calls[0] += 1
        return super().__call__(sample)


def _data(path: str) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _make_utility(d: dict, max_iter: int) -> CountedUtility:
    scorer = SupervisedScorer("accuracy", Dataset(d["X_val"], d["y_val"]), default=0.0,
                              range=(0.0, 1.0))
    return CountedUtility(CountingLR(max_iter=max_iter), scorer, catch_errors=True,
                          show_warnings=False)


def _warm_up(d: dict, max_iter: int) -> None:
    LogisticRegression(max_iter=max_iter).fit(d["X_train"], d["y_train"])


def _fit_timed(valuation, train: Dataset) -> tuple[float, int]:
    CountingLR.n_fits = 0
    with parallel_config(n_jobs=1):
        t0 = time.perf_counter()
        valuation.fit(train)
        wall = time.perf_counter() - t0
    return wall, CountingLR.n_fits


def _ordered_values(valuation) -> np.ndarray:
    res = valuation.result
    out = np.full(len(res.values), np.nan)
    out[np.asarray(res.indices)] = np.asarray(res.values, dtype=float)
    return out


def _truncation(rtol):
    if rtol is None:
        return NoTruncation(), "NoTruncation()"
    return (RelativeTruncation(rtol=float(rtol), burn_in_fraction=0.0),
            f"RelativeTruncation({float(rtol)}, burn_in_fraction=0)")


def run_seeds(args: dict, d: dict) -> dict:
    """TMC or Beta Shapley once per seed; per-seed wall time, calls, fits and AUROC."""
    part, n_perm = args["part"], int(args["permutations"])
    max_iter = int(args["lr_max_iter"])
    train = Dataset(d["X_train"], d["y_train"])
    _warm_up(d, max_iter)
    runs, name = [], None
    for seed in args["seeds"]:
        u = _make_utility(d, max_iter)
        trunc, tname = _truncation(args.get("rtol"))
        if part == "tmc":
            valuation = TMCShapleyValuation(u, truncation=trunc, is_done=MaxUpdates(n_perm),
                                            seed=int(seed), progress=False)
            name = f"pyDVL TMCShapleyValuation({tname})"
        else:
            alpha, beta = float(args["alpha"]), float(args["beta"])
            sampler = PermutationSampler(truncation=trunc, seed=int(seed))
            valuation = BetaShapleyValuation(u, sampler, MaxUpdates(n_perm), alpha=alpha,
                                             beta=beta, progress=False)
            name = (f"pyDVL BetaShapleyValuation(alpha={alpha:g}, beta={beta:g}) + "
                    f"PermutationSampler({tname})")
        wall, fits = _fit_timed(valuation, train)
        values = _ordered_values(valuation)
        path = os.path.join(args["out_dir"], f"{part}_{seed}_values.npy")
        np.save(path, values)
        runs.append({"seed": int(seed), "wall_s": wall, "fits": fits,
                     "n_utility_evaluations": u.calls[0],
                     "permutations": int(np.max(valuation.result.counts)),
                     "auroc": float(roc_auc_score(d["flipped"], -values)),
                     "values": path})
        print(f"pyDVL {part} seed {seed}: {wall:.2f} s, {u.calls[0]} calls",
              file=sys.stderr, flush=True)
    return {"name": name, "runs": runs}


def big_fits(args: dict, d: dict) -> dict:
    """Time ``n_fits`` utility calls on prefixes of one permutation, lengths 1..n evenly.

    The cost of a prefix grows with its length; evenly spaced lengths make the mean
    cost a Riemann sum of the cost over all n prefixes, so mean * n estimates one
    untruncated permutation (pyDVL's engine adds little per call on top of its
    utility: one marginal and one result update).
    """
    max_iter, k = int(args["lr_max_iter"]), int(args["n_fits"])
    n = len(d["y_train"])
    u = _make_utility(d, max_iter).with_dataset(Dataset(d["X_train"], d["y_train"]))
    perm = np.random.default_rng(int(args["seed"])).permutation(n)
    lengths = np.unique(np.linspace(1, n, k).round().astype(int))
    _warm_up(d, max_iter)
    CountingLR.n_fits = 0
    per = []
    t0 = time.perf_counter()
    for L in lengths:
        t = time.perf_counter()
        u(Sample(None, perm[:L]))
        per.append(time.perf_counter() - t)
    wall = time.perf_counter() - t0
    return {"name": f"pyDVL ModelUtility on {len(lengths)} prefixes (lengths 1..{n} "
                    "evenly spaced)",
            "n_calls": int(len(lengths)), "fits": CountingLR.n_fits, "wall_s": wall,
            "mean_s_per_call": float(np.mean(per)),
            "est_one_permutation_s": float(np.mean(per)) * n,
            "lengths": lengths.tolist(), "per_call_s": per}


def big_perm(args: dict, d: dict) -> dict:
    """One untruncated permutation through TMCShapleyValuation (n utility calls)."""
    max_iter = int(args["lr_max_iter"])
    u = _make_utility(d, max_iter)
    valuation = TMCShapleyValuation(u, truncation=NoTruncation(), is_done=MaxUpdates(1),
                                    seed=int(args["seed"]), progress=False)
    _warm_up(d, max_iter)
    wall, fits = _fit_timed(valuation, Dataset(d["X_train"], d["y_train"]))
    return {"name": "pyDVL TMCShapleyValuation(NoTruncation()), MaxUpdates(1)",
            "wall_s": wall, "fits": fits, "n_utility_evaluations": u.calls[0],
            "permutations": int(np.max(valuation.result.counts))}


def main() -> None:
    args = json.load(sys.stdin)
    d = _data(args["data"])
    out = {"pydvl_version": pydvl.__version__, "numpy": np.__version__}
    with threadpool_limits(1):
        part = args["part"]
        if part in ("tmc", "beta"):
            out[part] = run_seeds(args, d)
        elif part == "big_fits":
            out[part] = big_fits(args, d)
        elif part == "big_perm":
            out[part] = big_perm(args, d)
        else:
            raise ValueError(f"unknown part {part!r}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
