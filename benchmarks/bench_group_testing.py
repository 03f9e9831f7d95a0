"""Group testing Shapley values: skdvl against pyDVL 0.10, side by side, in one run.

Run from the repository root with our venv::

    python benchmarks/bench_group_testing.py            # full run, ~5 min on 2 cores
    python benchmarks/bench_group_testing.py --quick    # tiny budgets, a smoke test

Both sides run Jia et al. (2019)'s Algorithm 1 with the same budget of sampled
coalitions and the same feasibility tolerance: skdvl's ``epsilon / (2 sqrt(n))`` is
passed to pyDVL as its ``epsilon`` (pyDVL uses its ``epsilon`` as the bound on
``|s_i - s_j - dU_ij|`` itself). pyDVL (``benchmarks/.pydvl-venv``, through
``run_pydvl`` with ``benchmarks/pydvl_side/group_testing.py``) samples with
``batch_size=64`` and solves with cvxpy's default SCS; skdvl with
``GroupTestingShapleyValuer`` (blocks of 64, HiGHS), both n_jobs=1 and one BLAS
thread. skdvl runs twice: ``solution="lp"`` (the paper's point of the feasible set)
and ``solution="center"`` (its centre). Times are of ``fit`` alone, measured inside
each process.

Parts
-----
game           the airport game on 40 players, ``u(S) = max_{i in S} c_i`` with costs
               uniform in [0, 1] (seed 0, rounded to 4 digits), defined identically on
               both sides (skdvl.games.AirportGame; a pyDVL ``Game`` subclass). Budget:
               the (epsilon=1, delta=0.05) guarantee's number of coalitions
               (``group_testing_samples(40, 1.0, 0.05)``). Error: the Euclidean
               distance to the exact Shapley values (Littlechild-Owen formula).
breast_cancer  the first 300 rows of breast cancer, stratified 50/50 split (seed 0),
               standardised: 150 training rows valued on 150 validation rows,
               ``LogisticRegression(max_iter=1000)``, accuracy; 3,000 coalitions,
               epsilon=0.1. Error: Euclidean distance to a reference computed by
               skdvl's KernelSHAP (``ShapleyValuer(sampler="kernel")``, 100,000
               coalitions; its standard errors are reported).

``cat /proc/loadavg`` is recorded at the start and the end. Results: a markdown table
on stdout and ``benchmarks/results/group_testing.json`` (``_quick`` with ``--quick``).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import math
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
from pydvl_env import run_pydvl  # noqa: E402

PYDVL_SCRIPT = BENCH_DIR / "pydvl_side" / "group_testing.py"
FULL = {"game_n": 40, "game_epsilon": 1.0, "delta": 0.05, "bc_rows": 300,
        "bc_samples": 3000, "bc_epsilon": 0.1, "reference_samples": 100_000,
        "batch_size": 64, "seed": 0, "lr_max_iter": 1000}
QUICK = {**FULL, "game_samples": 2000, "bc_samples": 200, "reference_samples": 5000}


def _loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


def _skdvl_rows(make, cfg: dict, epsilon: float, n_samples: int, fit) -> list[dict]:
    from skdvl.valuation._group_testing import GroupTestingShapleyValuer

    rows = []
    for solution in ("lp", "center"):
        v = make(GroupTestingShapleyValuer, epsilon=epsilon, solution=solution,
                 max_updates=n_samples, batch_fit="auto", n_jobs=1,
                 random_state=cfg["seed"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            fit(v)
            wall = time.perf_counter() - t0
        rows.append({"name": f"skdvl GroupTestingShapleyValuer(solution={solution!r}, "
                             f"max_updates={n_samples}, HiGHS)",
                     "wall_s": wall, "n_utility_evaluations": int(v.n_utility_evaluations_),
                     "fit_path": v.fit_path_, "values": np.asarray(v.values_, float)})
    return rows


def part_game(cfg: dict) -> dict:
    from skdvl.games import AirportGame
    from skdvl.valuation._group_testing import group_testing_samples

    n, eps = cfg["game_n"], cfg["game_epsilon"]
    costs = np.round(np.random.default_rng(cfg["seed"]).uniform(0, 1, n), 4)
    game = AirportGame(costs)
    T = cfg.get("game_samples") or group_testing_samples(n, eps, cfg["delta"])
    tol = eps / (2 * math.sqrt(n))
    out = {"n_players": n, "n_samples": T, "epsilon": eps, "tolerance": tol,
           "loadavg_start": _loadavg()}
    res = run_pydvl(PYDVL_SCRIPT, {"part": "game", "costs": costs.tolist(), "n_samples": T,
                                   "tolerance": tol, "batch_size": cfg["batch_size"],
                                   "seed": cfg["seed"]}, timeout=900)
    rows = [res["result"]["row"]]
    out["pydvl_version"] = res["result"]["pydvl_version"]
    with threadpool_limits(1):
        rows += _skdvl_rows(lambda cls, **kw: cls(utility=game, **kw), cfg, eps, T,
                            lambda v: v.fit())
    exact = game.shapley_values()
    for r in rows:
        r["l2_error"] = float(np.linalg.norm(r["values"] - exact))
        r["max_abs_error"] = float(np.max(np.abs(r["values"] - exact)))
    out["rows"], out["loadavg_end"] = rows, _loadavg()
    return out


def part_breast_cancer(cfg: dict, tmp: str) -> dict:
    from skdvl import ShapleyValuer

    X, y = load_breast_cancer(return_X_y=True)
    X, y = X[:cfg["bc_rows"]], y[:cfg["bc_rows"]]
    Xt, Xv, yt, yv = train_test_split(X, y, test_size=0.5, stratify=y, random_state=0)
    scaler = StandardScaler().fit(Xt)
    Xt, Xv = scaler.transform(Xt), scaler.transform(Xv)
    path = os.path.join(tmp, "bc.npz")
    np.savez(path, X_train=Xt, y_train=yt, X_val=Xv, y_val=yv)
    n, T, eps = len(yt), cfg["bc_samples"], cfg["bc_epsilon"]
    tol = eps / (2 * math.sqrt(n))
    out = {"n_train": n, "n_samples": T, "epsilon": eps, "tolerance": tol,
           "loadavg_start": _loadavg()}
    res = run_pydvl(PYDVL_SCRIPT, {"part": "breast_cancer", "data": path, "n_samples": T,
                                   "tolerance": tol, "batch_size": cfg["batch_size"],
                                   "seed": cfg["seed"], "lr_max_iter": cfg["lr_max_iter"]},
                    timeout=900)
    rows = [res["result"]["row"]]
    lr = LogisticRegression(max_iter=cfg["lr_max_iter"])
    with threadpool_limits(1):
        rows += _skdvl_rows(lambda cls, **kw: cls(lr, scoring="accuracy", **kw), cfg, eps, T,
                            lambda v: v.fit(Xt, yt, X_val=Xv, y_val=yv))
        t0 = time.perf_counter()
        ref = ShapleyValuer(lr, scoring="accuracy", sampler="kernel",
                            max_updates=cfg["reference_samples"], random_state=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref.fit(Xt, yt, X_val=Xv, y_val=yv)
    out["reference"] = {"name": f"skdvl ShapleyValuer(sampler='kernel', "
                                f"max_updates={cfg['reference_samples']})",
                        "wall_s": time.perf_counter() - t0,
                        "max_stderr": float(np.max(ref.stderr_)),
                        "l2_stderr": float(np.linalg.norm(ref.stderr_))}
    for r in rows:
        r["l2_error"] = float(np.linalg.norm(r["values"] - ref.values_))
        r["max_abs_error"] = float(np.max(np.abs(r["values"] - ref.values_)))
    out["rows"], out["loadavg_end"] = rows, _loadavg()
    return out


def report(results: dict) -> str:
    lines = []
    for part, title in (("game", "Airport game, 40 players"),
                        ("breast_cancer", "breast cancer, 150 training rows, LR")):
        r = results[part]
        lines.append(f"\n### {title}: {r['n_samples']} coalitions, epsilon={r['epsilon']}, "
                     f"tolerance {r['tolerance']:.4g} (load {r['loadavg_start']} -> "
                     f"{r['loadavg_end']})\n")
        if "reference" in r:
            ref = r["reference"]
            lines.append(f"reference: {ref['name']}, {ref['wall_s']:.1f} s, l2 of its "
                         f"stderr {ref['l2_stderr']:.3g}\n")
        lines.append("| run | wall s | pyDVL / this | l2 error | max abs error |")
        lines.append("| --- | --- | --- | --- | --- |")
        p = r["rows"][0]["wall_s"]
        for row in r["rows"]:
            lines.append(f"| {row['name']} | {row['wall_s']:.2f} | {p / row['wall_s']:.1f}x | "
                         f"{row['l2_error']:.4f} | {row['max_abs_error']:.4f} |")
    return "\n".join(lines)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    cfg = QUICK if args.quick else FULL
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
    results = {"config": cfg, "commit": commit, "note": args.note,
               "python": platform.python_version(), "loadavg_start": _loadavg()}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        results["game"] = part_game(cfg)
        results["breast_cancer"] = part_breast_cancer(cfg, tmp)
    results["loadavg_end"], results["total_s"] = _loadavg(), time.perf_counter() - t0
    text = report(results)
    print(text)
    results["report"] = text
    name = "group_testing_quick.json" if args.quick else "group_testing.json"
    (BENCH_DIR / "results" / name).write_text(json.dumps(_jsonable(results), indent=1))


if __name__ == "__main__":
    main()
