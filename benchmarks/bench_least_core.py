"""Monte Carlo least core (issue 14): skdvl against pyDVL 0.10, side by side.

Run from the repository root with our venv::

    python benchmarks/bench_least_core.py            # full run, a few minutes on 2 cores
    python benchmarks/bench_least_core.py --quick    # tiny budgets, a smoke test

Both sides draw coalitions uniformly from the powerset and solve the least-core LP and
its egalitarian tie-break on the sampled constraints: pyDVL with
``MonteCarloLeastCoreValuation`` (cvxpy, SCS), skdvl with ``LeastCoreValuer`` (HiGHS with
constraint generation, LDP via NNLS). pyDVL runs first (in ``benchmarks/.pydvl-venv``,
through ``run_pydvl``), then skdvl in this process, on the same game or data and the same
budgets (``n_samples`` = ``max_updates``) and seeds; BLAS single-threaded, n_jobs=1.
skdvl runs twice per budget: ``n_bootstrap=0`` (no standard errors: what pyDVL computes)
and the default ``n_bootstrap``. Times are of ``fit`` alone.

Parts
-----
shoes          ``ShoesGame(15, 25)`` (40 players; pyDVL's ``ShoesGame(left=15, right=25)``
               is the same game): u(S) = min(#left, #right). Its least core is known
               (both libraries document it): 1 for the 15 scarce left shoes, 0 for the
               right ones, subsidy 0. Error: max |value - exact|.
breast_cancer  first 300 rows of breast cancer, stratified 50/50 split (seed 0),
               standardised; 150 training rows valued, LogisticRegression, accuracy on
               the 150 others. No exact least core: error is max |value - reference|,
               the reference being skdvl at ``reference_budget`` samples (its own
               bootstrap standard error is reported).

Results: a markdown table on stdout, ``benchmarks/results/least_core.json`` (and .md).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
from pydvl_env import run_pydvl

PYDVL_SCRIPT = BENCH_DIR / "pydvl_side" / "least_core.py"
FULL = {"left": 15, "right": 25, "shoes_budgets": [1000, 4000, 16000], "seeds": [0, 1],
        "bc_rows": 300, "bc_budgets": [1000, 3000], "bc_seeds": [0],
        "reference_budget": 30000, "lr_max_iter": 1000}
QUICK = {**FULL, "shoes_budgets": [200], "seeds": [0], "bc_rows": 60, "bc_budgets": [200],
         "reference_budget": 1000}


def _loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def breast_cancer(cfg: dict, path: str) -> dict:
    X, y = load_breast_cancer(return_X_y=True)
    X, y = X[:cfg["bc_rows"]], y[:cfg["bc_rows"]]
    X_tr, X_val, y_tr, y_val = train_test_split(X, y, test_size=0.5, stratify=y,
                                                random_state=0)
    scaler = StandardScaler().fit(X_tr)
    d = {"X_train": scaler.transform(X_tr), "y_train": y_tr,
         "X_val": scaler.transform(X_val), "y_val": y_val}
    np.savez(path, **d)
    return d


def skdvl_run(budget: int, seed: int, n_bootstrap: int | None, *, game=None,
              d: dict | None = None, cfg: dict | None = None) -> dict:
    from skdvl.valuation._least_core import LeastCoreValuer

    kw = {} if n_bootstrap is None else {"n_bootstrap": n_bootstrap}
    if game is not None:
        v = LeastCoreValuer(utility=game, max_updates=budget, random_state=seed, **kw)
        args: tuple = ()
        fit_kw: dict = {}
    else:
        assert d is not None and cfg is not None
        LogisticRegression(max_iter=cfg["lr_max_iter"]).fit(d["X_train"], d["y_train"])
        v = LeastCoreValuer(LogisticRegression(max_iter=cfg["lr_max_iter"]),
                            scoring="accuracy", max_updates=budget, random_state=seed, **kw)
        args, fit_kw = (d["X_train"], d["y_train"]), {"X_val": d["X_val"],
                                                      "y_val": d["y_val"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        v.fit(*args, **fit_kw)
        wall = time.perf_counter() - t0
    return {"n_samples": budget, "seed": seed, "wall_s": wall, "subsidy": v.subsidy_,
            "n_bootstrap": v.n_bootstrap, "n_utility_evaluations": v.n_utility_evaluations_,
            "mean_stderr": float(np.nanmean(v.stderr_)) if v.n_bootstrap else None,
            "values": np.asarray(v.values_, dtype=float)}


def _jsonable(obj):
    """numpy arrays and scalars as JSON."""
    return obj.tolist() if isinstance(obj, (np.ndarray, np.generic)) else str(obj)


def _error(values: np.ndarray, exact: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(values) - exact)))


def run_part(part: str, cfg: dict, tmp: str) -> dict:
    out: dict = {"loadavg_start": _loadavg()}
    if part == "shoes":
        from skdvl.games import ShoesGame

        game, d = ShoesGame(cfg["left"], cfg["right"]), None
        exact = np.r_[np.ones(cfg["left"]), np.zeros(cfg["right"])]
        budgets, seeds = cfg["shoes_budgets"], cfg["seeds"]
        args = {"part": "shoes", "left": cfg["left"], "right": cfg["right"]}
    else:
        path = os.path.join(tmp, "bc.npz")
        d, game = breast_cancer(cfg, path), None
        budgets, seeds = cfg["bc_budgets"], cfg["bc_seeds"]
        args = {"part": "breast_cancer", "data": path, "lr_max_iter": cfg["lr_max_iter"]}
    res = run_pydvl(PYDVL_SCRIPT, {**args, "budgets": budgets, "seeds": seeds},
                    timeout=1800)
    out["pydvl_version"] = res["result"]["pydvl_version"]
    out["pydvl"] = res["result"]["runs"]
    with threadpool_limits(1):
        if part == "breast_cancer":
            ref = skdvl_run(cfg["reference_budget"], 12345, None, d=d, cfg=cfg)
            out["reference"] = ref
            exact = ref["values"]
        out["skdvl"] = [skdvl_run(b, s, nb, game=game, d=d, cfg=cfg)
                        for b in budgets for s in seeds for nb in (0, None)]
    for r in out["pydvl"] + out["skdvl"]:
        r["error"] = _error(r["values"], exact)
        r["values"] = np.asarray(r["values"]).tolist()
    out["loadavg_end"] = _loadavg()
    return out


def table(out: dict) -> str:
    lines = []
    for part, res in out["results"].items():
        title = ("ShoesGame(15, 25), 40 players, error vs the exact least core"
                 if part == "shoes" else
                 "breast cancer, 150 training rows, LogisticRegression, error vs skdvl at "
                 f"{out['config']['reference_budget']} samples")
        lines += [f"\n### {title} (load {res['loadavg_start'][0]:.2f} -> "
                  f"{res['loadavg_end'][0]:.2f})\n",
                  "| n_samples | pyDVL s | pyDVL max err | skdvl s (no stderr) | skdvl max err "
                  "| pyDVL / skdvl | skdvl s (n_bootstrap default) | pyDVL / skdvl |",
                  "|---|---|---|---|---|---|---|---|"]
        for b in sorted({r["n_samples"] for r in res["pydvl"]}):
            p = [r for r in res["pydvl"] if r["n_samples"] == b]
            s0 = [r for r in res["skdvl"] if r["n_samples"] == b and r["n_bootstrap"] == 0]
            sd = [r for r in res["skdvl"] if r["n_samples"] == b and r["n_bootstrap"] != 0]
            tp, t0, td = (float(np.mean([r["wall_s"] for r in rs])) for rs in (p, s0, sd))
            ep, e0 = (float(np.mean([r["error"] for r in rs])) for rs in (p, s0))
            lines.append(f"| {b} | {tp:.2f} | {ep:.2e} | {t0:.2f} | {e0:.2e} | {tp / t0:.1f}x "
                         f"| {td:.2f} | {tp / td:.1f}x |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--parts", nargs="*", default=["shoes", "breast_cancer"])
    opts = ap.parse_args()
    cfg = QUICK if opts.quick else FULL
    start = _loadavg()
    t0 = time.perf_counter()
    out: dict = {"config": cfg, "parts": opts.parts, "loadavg_start": start,
                 "machine": platform.platform(), "cpus": os.cpu_count(),
                 "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                                          capture_output=True, text=True,
                                          cwd=BENCH_DIR).stdout.strip(),
                 "results": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for part in opts.parts:
            out["results"][part] = run_part(part, cfg, tmp)
            print(f"{part} done at {time.perf_counter() - t0:.0f} s", file=sys.stderr,
                  flush=True)
    out["loadavg_end"], out["total_s"] = _loadavg(), time.perf_counter() - t0
    md = table(out)
    print(md)
    name = "least_core_quick" if opts.quick else "least_core"
    (BENCH_DIR / "results" / f"{name}.json").write_text(
        json.dumps(out, indent=1, default=_jsonable))
    (BENCH_DIR / "results" / f"{name}.md").write_text(
        f"Load average {start} -> {out['loadavg_end']}, {out['total_s']:.0f} s total, "
        f"commit {out['commit']}\n{md}\n")


if __name__ == "__main__":
    main()
