"""The KNN-Shapley family: skdvl against shapiq 1.8's nearest-neighbour explainers.

Parts (``--parts``, default all):

* ``shapiq``: values and time per validation row of the plain (Jia et al., 2019),
  weighted (Wang, Mittal & Jia, 2024) and threshold (Wang et al., 2023) variants, skdvl in
  this process and shapiq in its venv (``benchmarks/shapiq_env.py``) on the same data
  (``make_classification``, 10 features, ``--n-train`` rows, K = 5). shapiq explains one
  validation row at a time for its own label; its weighted explainer takes seconds per row,
  so it explains only ``--weighted-rows`` of them, and skdvl values the same rows for the
  comparison. Agreement = the largest |difference| of the mean values.
* ``auroc``: AUROC of finding flipped labels (10% of the training labels, a clean
  validation set of 500 rows) for each variant, at 1,000 and 20,000 training rows.
* ``scale``: the plain and threshold variants on ``--scale-train`` x ``--scale-val`` rows
  (32 features), ``n_jobs=2``: wall time and peak memory of ``fit`` in a fresh process,
  and the *sort bound* of the plain variant: the time of computing the same distances
  and a bare ``argsort`` (numpy's default introsort, not stable) of each validation row's
  distances, in blocks of ``--scale-block`` rows over the same 2 jobs.

    python benchmarks/bench_knn_family.py --out benchmarks/results/knn_family.json
    python benchmarks/bench_knn_family.py --parts shapiq auroc --quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

K = 5


def _data(n_train: int, n_val: int, n_features: int = 10, seed: int = 0):
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=n_train + n_val, n_features=n_features,
                               n_informative=min(n_features, 8), random_state=seed)
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:]


def _radius(X, X_val, neighbours: float = 20.0) -> float:
    """A radius that holds about ``neighbours`` training rows of a validation row."""
    from sklearn.metrics import pairwise_distances

    d = pairwise_distances(X_val[:200], X)
    return float(np.quantile(d, neighbours / len(X)))


def _weighted_valuer(n_bits: int = 3, **kw):
    """skdvl's weighted variant in the game of shapiq's ``WeightedKNNExplainer(n_bits)``.

    shapiq's weights are sklearn's ``1/d`` divided by their largest, rounded to
    ``round(w * 2**n_bits)``, and a vote whose signed sum is ``>= 0`` is right: on binary
    labels that is ``n_bins = 2**n_bits + 1`` levels and ``tied_vote="correct"``. (With
    more classes shapiq averages one-vs-one binary games, a different game.)
    """
    from skdvl import KNNShapley

    return KNNShapley(n_neighbors=K, weights="distance", knn_utility="hard_label",
                      n_bins=2**n_bits + 1, tied_vote="correct", **kw)


def _skdvl_valuer(variant: str, radius: float, **kw):
    from skdvl import KNNShapley, ThresholdKNNShapley

    if variant == "plain":
        return KNNShapley(n_neighbors=K, **kw)
    if variant == "soft_label":
        return KNNShapley(n_neighbors=K, knn_utility="soft_label", **kw)
    if variant == "threshold":
        return ThresholdKNNShapley(radius=radius, **kw)
    return _weighted_valuer(**kw)


def _time_fit(valuer, X, y, X_val, y_val, repeats: int = 3) -> tuple[np.ndarray, float]:
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        valuer.fit(X, y, X_val=X_val, y_val=y_val)
        best = min(best, time.perf_counter() - t0)
    return np.asarray(valuer.values_, dtype=float), best


def part_shapiq(ns) -> dict:
    from shapiq_env import run_shapiq

    X, y, Xv, yv = _data(ns.n_train, ns.n_val)
    if np.unique(y).shape[0] != 2:  # the weighted games agree on binary labels only
        raise ValueError(f"the shapiq part needs binary labels; got {np.unique(y)}")
    radius = _radius(X, Xv)
    variants = ["plain", "threshold", "weighted"]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "d.npz")
        np.savez(path, X=X, y=y, X_val=Xv, y_val=yv)
        res = run_shapiq(HERE / "shapiq_side" / "knn_family.py", {
            "data": path, "k": K, "radius": radius, "n_bits": ns.n_bits,
            "variants": variants, "max_rows": {"weighted": ns.weighted_rows}},
            timeout=7200, env={"OMP_NUM_THREADS": "1"})
    out = {"n_train": ns.n_train, "n_val": ns.n_val, "radius": radius, "k": K,
           "shapiq_version": res["result"]["version"], "rows": []}
    for variant, q in res["result"]["variants"].items():
        rows = int(q["rows"])
        extra = {"n_bits": ns.n_bits} if variant == "weighted" else {}
        mine, seconds = _time_fit(_skdvl_valuer(variant, radius, **extra), X, y, Xv[:rows],
                                  yv[:rows])
        diff = float(np.max(np.abs(mine - np.asarray(q["values"]))))
        row = {"variant": variant, "rows": rows, "skdvl_s_per_row": seconds / rows,
               "shapiq_s_per_row": q["s_per_row"], "max_abs_diff": diff,
               "speedup": q["s_per_row"] / (seconds / rows)}
        out["rows"].append(row)
        print(f"{variant}: {rows} rows, skdvl {seconds / rows * 1e3:.3f} ms/row, shapiq "
              f"{q['s_per_row'] * 1e3:.3f} ms/row ({row['speedup']:.0f}x), max |diff| "
              f"{diff:.1e}", file=sys.stderr, flush=True)
    return out


def part_auroc(ns) -> dict:
    from sklearn.metrics import roc_auc_score

    out = {"rows": []}
    for n_train in ns.auroc_sizes:
        X, y, Xv, yv = _data(n_train, 500, seed=1)
        rng = np.random.default_rng(0)
        flipped = rng.random(n_train) < 0.1
        y_noisy = np.where(flipped, 1 - y, y)
        radius = _radius(X, Xv)
        wide = _radius(X, Xv, neighbours=100.0)  # the radius matters: a second one
        for variant in ("plain", "soft_label", "threshold", "threshold_100", "weighted"):
            if ns.auroc_variants and variant not in ns.auroc_variants:
                continue
            extra = {"n_bits": ns.n_bits} if variant == "weighted" else {}
            if variant == "threshold_100":
                valuer = _skdvl_valuer("threshold", wide)
            else:
                valuer = _skdvl_valuer(variant, radius, **extra)
            if valuer is None:
                continue
            t0 = time.perf_counter()
            valuer.fit(X, y_noisy, X_val=Xv, y_val=yv)
            seconds = time.perf_counter() - t0
            auroc = float(roc_auc_score(flipped, -np.asarray(valuer.values_, dtype=float)))
            out["rows"].append({"n_train": n_train, "variant": variant, "auroc": auroc,
                                "seconds": seconds})
            print(f"AUROC n={n_train} {variant}: {auroc:.3f} ({seconds:.1f}s)",
                  file=sys.stderr, flush=True)
    return out


# --------------------------------------------------------------------------- scale
def _scale_worker(a: dict) -> dict:
    """In a fresh process: one fit (or the sort bound) on the generated scale data."""
    from joblib import Parallel, delayed
    from sklearn.metrics import pairwise_distances
    from threadpoolctl import threadpool_limits

    X, y, Xv, yv = _data(a["n_train"], a["n_val"], 32, seed=2)
    X, Xv = X.astype(np.float64), Xv.astype(np.float64)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    if a["what"] == "sort_bound":
        block = a["block"]

        def sort_block(lo):
            with threadpool_limits(1):
                d = pairwise_distances(Xv[lo:lo + block], X)
                return int(np.argsort(d, axis=1)[:, 0].sum())  # introsort: the fastest full sort

        Parallel(n_jobs=a["n_jobs"])(delayed(sort_block)(lo)
                                     for lo in range(0, len(Xv), block))
        values = None
    else:
        valuer = _skdvl_valuer(a["what"], a["radius"], n_jobs=a["n_jobs"])
        valuer.fit(X, y, X_val=Xv, y_val=yv)
        values = np.asarray(valuer.values_)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"what": a["what"], "seconds": seconds, "peak_rss_mb": peak,
            "peak_rss_children_mb": children, "rss_before_mb": base,
            "finite": None if values is None else bool(np.isfinite(values).all())}


def part_scale(ns) -> dict:
    X, _, Xv, _ = _data(20_000, 200, 32, seed=2)
    radius = _radius(X, Xv, neighbours=20.0 * 20_000 / ns.scale_train)  # same density
    out = {"n_train": ns.scale_train, "n_val": ns.scale_val, "n_jobs": 2, "runs": []}
    for what in ns.scale_parts:
        args = {"what": what, "n_train": ns.scale_train, "n_val": ns.scale_val,
                "n_jobs": 2, "radius": radius, "block": ns.scale_block}
        proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(args)],
                              capture_output=True, text=True, timeout=7200,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        out["runs"].append(r)
        print(f"scale {what}: {r['seconds']:.1f}s, peak RSS {r['peak_rss_mb']:.0f} MB "
              f"(workers {r['peak_rss_children_mb']:.0f} MB)", file=sys.stderr, flush=True)
    by = {r["what"]: r["seconds"] for r in out["runs"]}
    if "plain" in by and "sort_bound" in by:
        out["plain_over_sort_bound"] = by["plain"] / by["sort_bound"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--parts", nargs="+", default=["shapiq", "auroc", "scale"],
                    choices=["shapiq", "auroc", "scale"])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n-train", type=int, default=300)
    ap.add_argument("--n-val", type=int, default=200)
    ap.add_argument("--weighted-rows", type=int, default=5)
    ap.add_argument("--n-bits", type=int, default=3)
    ap.add_argument("--auroc-sizes", type=int, nargs="+", default=[1000, 20000])
    ap.add_argument("--auroc-variants", nargs="+", default=None,
                    help="only these variants in the auroc part (default: all)")
    ap.add_argument("--scale-train", type=int, default=1_000_000)
    ap.add_argument("--scale-val", type=int, default=10_000)
    ap.add_argument("--scale-block", type=int, default=64)
    ap.add_argument("--scale-parts", nargs="+", default=["plain", "threshold", "sort_bound"])
    ap.add_argument("--out", default=str(HERE / "results" / "knn_family.json"))
    ns = ap.parse_args()
    if ns.worker:
        print(json.dumps(_scale_worker(json.loads(ns.worker))))
        return
    if ns.quick:
        ns.auroc_sizes, ns.weighted_rows = [1000], 2
        ns.scale_train, ns.scale_val = 100_000, 500
    report = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "loadavg_start": os.getloadavg()}, "command": sys.argv}
    for part in ns.parts:
        report[part] = {"shapiq": part_shapiq, "auroc": part_auroc, "scale": part_scale}[
            part](ns)
    report["machine"]["loadavg_end"] = os.getloadavg()
    Path(ns.out).parent.mkdir(parents=True, exist_ok=True)
    Path(ns.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "machine"}, indent=1))


if __name__ == "__main__":
    main()
