"""KNN-Shapley: skdvl's KNNShapley against pyDVL 0.10's KNNShapleyValuation.

One run, both libraries, the same data (``make_classification``, 20 features, K=5):

* agreement: the largest |difference| of the two value vectors (5,000 and 20,000
  training rows, 1,000 validation rows);
* time of ``fit`` (skdvl: min of ``--repeats``; pyDVL: one fit unless ``--pydvl-repeats``)
  and the speed ratio;
* peak resident memory of each side, each run in its own fresh process (skdvl: a
  subprocess of this script, in this venv; pyDVL: ``run_pydvl`` in its venv), with
  the resident memory just before ``fit`` (imports and data) for reference;
* the scale run: skdvl alone on 200,000 training x 10,000 validation rows, 32 features
  (pyDVL's per-point Python loop would need hours), with its time and peak memory.

    python benchmarks/bench_knn.py              # writes benchmarks/results/knn.json
    python benchmarks/bench_knn.py --quick      # small sizes, for a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SCALE_LIMIT_MB = 2048


def _make_data(n_train: int, n_val: int, n_features: int, seed: int = 0):
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=n_train + n_val, n_features=n_features,
        n_informative=min(n_features, 10), random_state=seed,
    )
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:]


# --------------------------------------------------------------------------------------
# The skdvl side: this script re-run as a worker, so that its peak RSS is its own.
# --------------------------------------------------------------------------------------


def _worker(args: dict) -> None:
    import resource

    from skdvl.valuation._knn import KNNShapley

    if "data" in args:
        with np.load(args["data"]) as z:
            x_train, y_train, x_val, y_val = (
                z[k] for k in ("x_train", "y_train", "x_val", "y_val")
            )
    else:
        x_train, y_train, x_val, y_val = _make_data(
            args["n_train"], args["n_val"], args["n_features"]
        )
    import sklearn

    if args.get("working_memory"):
        sklearn.set_config(working_memory=args["working_memory"])
    rss_before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = []
    for _ in range(int(args.get("repeats", 1))):
        valuer = KNNShapley(n_neighbors=args["k"], n_jobs=args["n_jobs"])
        t0 = time.perf_counter()
        valuer.fit(x_train, y_train, X_val=x_val, y_val=y_val)
        times.append(time.perf_counter() - t0)
    out = {"fit_s": min(times), "fit_s_all": times, "rss_before_fit_mb": rss_before_mb}
    if args.get("out_dir"):
        out["values"] = os.path.join(args["out_dir"], "values.npy")
        np.save(out["values"], valuer.values_)
    print(json.dumps(out))


def run_skdvl(args: dict) -> dict:
    """Run ``_worker(args)`` in a fresh process; its result, wall time and peak RSS."""
    with tempfile.TemporaryDirectory(prefix="skdvl-knn-") as tmp:
        args = {**args, "out_dir": tmp}
        out_path, err_path = Path(tmp) / "out", Path(tmp) / "err"
        with open(out_path, "w") as fout, open(err_path, "w") as ferr:
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                [sys.executable, __file__, "--worker", json.dumps(args)],
                stdout=fout, stderr=ferr,
            )
            # wait4 reaps the child and returns its own rusage: its peak RSS (threads
            # included; n_jobs runs in threads, so there are no worker processes).
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"skdvl worker failed:\n{err_path.read_text()[-4000:]}")
        lines = [ln for ln in out_path.read_text().splitlines() if ln.strip()]
        result = json.loads(lines[-1])
        if "values" in result:
            result["values"] = np.load(result["values"])
    return {"result": result, "wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024}


# --------------------------------------------------------------------------------------
# The comparison.
# --------------------------------------------------------------------------------------


def compare(n_train: int, n_val: int, k: int, n_jobs: int, repeats: int,
            pydvl_repeats: int, tmp: str) -> dict:
    from pydvl_env import run_pydvl

    x_train, y_train, x_val, y_val = _make_data(n_train, n_val, 20)
    data = os.path.join(tmp, f"knn_{n_train}.npz")
    np.savez(data, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val)
    common = {"data": data, "k": k, "n_jobs": n_jobs}
    ours = run_skdvl({**common, "repeats": repeats})
    theirs = run_pydvl(
        HERE / "pydvl_side" / "knn.py", {**common, "repeats": pydvl_repeats}, timeout=3600
    )
    a, b = ours["result"]["values"], theirs["result"]["values"]
    return {
        "n_train": n_train, "n_val": n_val, "n_features": 20, "k": k, "n_jobs": n_jobs,
        "max_abs_diff": float(np.max(np.abs(a - b))),
        "max_abs_value": float(np.max(np.abs(b))),
        "skdvl_fit_s": ours["result"]["fit_s"],
        "skdvl_fit_s_all": ours["result"]["fit_s_all"],
        "pydvl_fit_s": theirs["result"]["fit_s"],
        "pydvl_fit_s_all": theirs["result"]["fit_s_all"],
        "speedup": theirs["result"]["fit_s"] / ours["result"]["fit_s"],
        "skdvl_peak_rss_mb": ours["peak_rss_mb"],
        "skdvl_rss_before_fit_mb": ours["result"]["rss_before_fit_mb"],
        "pydvl_peak_rss_mb": theirs["peak_rss_mb"],
        "pydvl_rss_before_fit_mb": theirs["result"]["rss_before_fit_mb"],
        "pydvl_version": theirs["result"]["pydvl_version"],
    }


def scale(n_train: int, n_val: int, n_features: int, k: int, n_jobs: int,
          working_memory: int) -> dict:
    ours = run_skdvl({
        "n_train": n_train, "n_val": n_val, "n_features": n_features, "k": k,
        "n_jobs": n_jobs, "repeats": 1, "working_memory": working_memory,
    })
    return {
        "n_train": n_train, "n_val": n_val, "n_features": n_features, "k": k,
        "n_jobs": n_jobs, "working_memory_mib": working_memory,
        "skdvl_fit_s": ours["result"]["fit_s"],
        "skdvl_peak_rss_mb": ours["peak_rss_mb"],
        "skdvl_rss_before_fit_mb": ours["result"]["rss_before_fit_mb"],
        "under_limit": ours["peak_rss_mb"] < SCALE_LIMIT_MB,
    }


def _table(report: dict) -> str:
    lines = [
        "| n_train | n_val | K | n_jobs | skdvl s | pyDVL s | speed-up | max abs diff "
        "| skdvl peak MB | pyDVL peak MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["comparisons"]:
        lines.append(
            f"| {r['n_train']:,} | {r['n_val']:,} | {r['k']} | {r['n_jobs']} "
            f"| {r['skdvl_fit_s']:.2f} | {r['pydvl_fit_s']:.2f} | {r['speedup']:.0f}x "
            f"| {r['max_abs_diff']:.1e} | {r['skdvl_peak_rss_mb']:.0f} "
            f"| {r['pydvl_peak_rss_mb']:.0f} |"
        )
    for r in report["scale"]:
        lines.append(
            f"| {r['n_train']:,} | {r['n_val']:,} | {r['k']} | {r['n_jobs']} "
            f"| {r['skdvl_fit_s']:.1f} | (not run) | | | {r['skdvl_peak_rss_mb']:.0f} | |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="small sizes, no scale run")
    parser.add_argument("--n-jobs", type=int, default=1, help="n_jobs of both sides")
    parser.add_argument("--scale-n-jobs", type=int, default=2)
    parser.add_argument("--scale-working-memory", type=int, default=512,
                        help="sklearn working_memory (MiB, per job) of the scale run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pydvl-repeats", type=int, default=1)
    parser.add_argument("--no-scale", action="store_true")
    parser.add_argument("--out", default=str(HERE / "results" / "knn.json"))
    opts = parser.parse_args()
    if opts.worker:
        _worker(json.loads(opts.worker))
        return
    sizes = [(500, 100), (2000, 100)] if opts.quick else [(5000, 1000), (20000, 1000)]
    scales = [] if opts.quick or opts.no_scale else [(200_000, 10_000, 32)]
    report: dict = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "comparisons": [], "scale": [],
    }
    with tempfile.TemporaryDirectory(prefix="bench-knn-") as tmp:
        for n_train, n_val in sizes:
            row = compare(n_train, n_val, 5, opts.n_jobs, opts.repeats, opts.pydvl_repeats, tmp)
            report["comparisons"].append(row)
            print(json.dumps({k: v for k, v in row.items() if not k.endswith("_all")}),
                  file=sys.stderr, flush=True)
    for n_train, n_val, n_features in scales:
        report["scale"].append(scale(
            n_train, n_val, n_features, 5, opts.scale_n_jobs, opts.scale_working_memory
        ))
    Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
    Path(opts.out).write_text(json.dumps(report, indent=2) + "\n")
    print(_table(report))


if __name__ == "__main__":
    main()
