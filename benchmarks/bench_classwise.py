"""Class-wise Shapley (CS-Shapley, issue 14): skdvl against pyDVL 0.10, side by side.

Run from the repository root with our venv::

    python benchmarks/bench_classwise.py            # full run, ~8 min on 2 busy cores
    python benchmarks/bench_classwise.py --quick    # tiny budgets, a smoke test

Data: breast cancer, first 300 rows, stratified 50/50 split (seed 0), standardised on
the training rows, 10% of the 150 training labels flipped (seed 0): the data of
``bench_batch_fit.py``. Both sides value the training rows against the validation rows
with ``LogisticRegression(max_iter=1000)`` (scikit-learn's default tol), inner score
accuracy, ``u_c(S) = a_S(D_c) exp(a_S(D_-c))``, one in-class permutation per random
out-of-class context, ``permutations`` permutations per class, values normalised,
n_jobs=1, one BLAS thread (``OMP_NUM_THREADS=1`` and ``threadpool_limits(1)``), no
truncation: pyDVL 0.10's ``RelativeTruncation`` fails inside its class-wise sampler
(``'Sample' object has no attribute 'label'``; the run records the error). With two
classes both sides estimate the same values (pyDVL starts a permutation from the
default score, skdvl from the context alone: a one-class coalition, the default score).

pyDVL (``benchmarks/.pydvl-venv``, via ``run_pydvl`` and ``pydvl_side/classwise.py``)
runs each seed first, then skdvl in this process on the same seed: ``batch_fit="auto"``
(batched Newton solves of many coalitions), ``batch_fit=False`` (scikit-learn fits, on
the first seed only) and, skdvl only, truncation ``rtol=0.01``. Times are of ``fit``
alone, after an untimed warm-up fit. AUROC of -values at finding the flipped rows, per
seed and averaged.
Results: a markdown table on stdout and ``benchmarks/results/classwise.json``
(``classwise_quick.json`` with ``--quick``).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one BLAS thread per process, on both sides

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
from bench_batch_fit import _git_head, _load_skdvl, _split_flip
from bench_semivalues import _jsonable
from pydvl_env import run_pydvl

PYDVL_SCRIPT = BENCH_DIR / "pydvl_side" / "classwise.py"
RESULTS = BENCH_DIR / "results" / "classwise.json"

FULL = {"n_rows": 300, "flip": 0.1, "lr_max_iter": 1000, "permutations": 100,
        "pydvl_seeds": [0, 1], "skdvl_seeds": [0, 1, 2], "rtol": 0.01}
QUICK = {**FULL, "permutations": 3, "pydvl_seeds": [0], "skdvl_seeds": [0]}


def _valuer_class():
    try:
        from skdvl import ClasswiseShapleyValuer
    except ImportError:  # before the integration into skdvl's namespace
        from skdvl.valuation._classwise import ClasswiseShapleyValuer
    return ClasswiseShapleyValuer


def skdvl_run(name: str, d: dict, cfg: dict, seed: int, **params) -> dict:
    valuer = _valuer_class()(LogisticRegression(max_iter=cfg["lr_max_iter"]),
                             max_updates=cfg["permutations"], n_jobs=1, random_state=seed,
                             **params)
    LogisticRegression(max_iter=cfg["lr_max_iter"]).fit(d["X_train"], d["y_train"])  # warm-up
    with warnings.catch_warnings(record=True) as caught, threadpool_limits(1):
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        valuer.fit(d["X_train"], d["y_train"], X_val=d["X_val"], y_val=d["y_val"])
        wall = time.perf_counter() - t0
    values = np.asarray(valuer.values_, dtype=float)
    fits = int(sum(s.report.n_fits for s in valuer._states_ if s is not None))
    row = {"name": name, "seed": seed, "wall_s": wall, "fit_path": valuer.fit_path_,
           "fits": fits, "n_utility_evaluations": int(valuer.n_utility_evaluations_),
           "permutations_min": int(np.min(valuer.counts_)),
           "auroc": float(roc_auc_score(d["flipped"], -values)), "values": values,
           "warnings": sorted({f"{w.category.__name__}: {str(w.message)[:160]}"
                               for w in caught})}
    print(f"  {name} seed {seed}: {wall:.2f} s, {fits} fits, AUROC {row['auroc']:.3f}",
          file=sys.stderr, flush=True)
    return row


def pydvl_run(data_path: str, cfg: dict, seed: int, rtol=None) -> dict:
    args = {"data": data_path, "lr_max_iter": cfg["lr_max_iter"], "seed": seed,
            "permutations": cfg["permutations"], "rtol": rtol}
    try:
        res = run_pydvl(PYDVL_SCRIPT, args, timeout=1200)
    except RuntimeError as exc:
        return {"name": f"pyDVL, RelativeTruncation({rtol})", "seed": seed,
                "error": str(exc).strip().splitlines()[-1][:300]}
    row = dict(res["result"], seed=seed)
    print(f"  {row['name']} seed {seed}: {row['wall_s']:.2f} s, {row['fits']} fits, "
          f"AUROC {row['auroc']:.3f}", file=sys.stderr, flush=True)
    return row


def run(cfg: dict, tmp: str, pydvl: bool, sk: bool) -> dict:
    d = _split_flip(*load_breast_cancer(return_X_y=True), cfg["n_rows"], cfg["flip"])
    path = os.path.join(tmp, "data.npz")
    np.savez(path, **{k: v for k, v in d.items() if not k.endswith("_raw")})
    out: dict = {"n_train": len(d["y_train"]), "n_val": len(d["y_val"]),
                 "n_flipped": int(d["flipped"].sum()), "pydvl": [], "skdvl": []}
    for seed in sorted(set(cfg["pydvl_seeds"]) | set(cfg["skdvl_seeds"])):
        if pydvl and seed in cfg["pydvl_seeds"]:
            out["pydvl"].append(pydvl_run(path, cfg, seed))
        if sk and seed in cfg["skdvl_seeds"]:
            out["skdvl"].append(skdvl_run("skdvl batch_fit='auto'", d, cfg, seed))
            if seed == cfg["pydvl_seeds"][0]:  # ~1.5 min: one seed
                out["skdvl"].append(skdvl_run("skdvl batch_fit=False", d, cfg, seed,
                                              batch_fit=False))
            out["skdvl"].append(skdvl_run(f"skdvl batch_fit='auto', truncation={cfg['rtol']}",
                                          d, cfg, seed, truncation=cfg["rtol"]))
    if pydvl:
        out["pydvl_truncated"] = pydvl_run(path, {**cfg, "permutations": 2}, 0,
                                           rtol=cfg["rtol"])
    _compare(out)
    return out


def _compare(out: dict) -> None:
    """Mean time and AUROC per run name; speed-ups over pyDVL; agreement of the values."""
    rows = [r for r in out["pydvl"] + out["skdvl"] if "wall_s" in r]
    names = list(dict.fromkeys(r["name"] for r in rows))
    summary = {}
    for name in names:
        rs = [r for r in rows if r["name"] == name]
        summary[name] = {"seeds": [r["seed"] for r in rs],
                         "wall_s": float(np.mean([r["wall_s"] for r in rs])),
                         "fits": float(np.mean([r["fits"] for r in rs])),
                         "auroc_mean": float(np.mean([r["auroc"] for r in rs])),
                         "auroc_each": [r["auroc"] for r in rs]}
    ref = [v for k, v in summary.items() if k.startswith("pyDVL")]
    for s in summary.values():
        s["pydvl_over_skdvl"] = ref[0]["wall_s"] / s["wall_s"] if ref else None
    out["summary"] = summary
    # the same seed is not the same random stream; agreement of the estimates instead
    p = [r for r in out["pydvl"] if "values" in r]
    for r in out["skdvl"]:
        if p:
            r["spearman_vs_pydvl_seed0"] = float(spearmanr(p[0]["values"], r["values"])[0])
    if len(p) >= 2:
        out["spearman_pydvl_seed0_vs_seed1"] = float(spearmanr(p[0]["values"],
                                                             p[1]["values"])[0])


def report(out: dict) -> str:
    cfg, res = out["config"], out["results"]
    lines = [f"### Class-wise Shapley, breast cancer ({cfg['n_rows']} rows, 50/50: "
             f"{res['n_train']} training rows, {res['n_flipped']} labels flipped), "
             f"LogisticRegression(max_iter={cfg['lr_max_iter']}), {cfg['permutations']} "
             "permutations per class, no truncation unless said, n_jobs=1\n",
             "| run | fit path | seeds | model fits | wall s (mean) | pyDVL / skdvl | "
             "AUROC mean | AUROC per seed |", "| --- " * 8 + "|"]
    paths = {r["name"]: r.get("fit_path", "-") for r in res["skdvl"]}
    for name, s in res["summary"].items():
        ratio = "-" if s["pydvl_over_skdvl"] is None else f"{s['pydvl_over_skdvl']:.1f}x"
        lines.append(f"| {name} | {paths.get(name, '-')} | {s['seeds']} | {s['fits']:,.0f} "
                     f"| {s['wall_s']:.2f} | {ratio} | {s['auroc_mean']:.3f} | "
                     + ", ".join(f"{a:.3f}" for a in s["auroc_each"]) + " |")
    sp = [f"{r['name']} (seed {r['seed']}): {r['spearman_vs_pydvl_seed0']:.3f}"
          for r in res["skdvl"] if "spearman_vs_pydvl_seed0" in r]
    if sp:
        lines.append("\nSpearman of each skdvl run's values with pyDVL's (seed 0): "
                     + "; ".join(sp))
    if "spearman_pydvl_seed0_vs_seed1" in res:
        lines.append(f"pyDVL seed 0 vs seed 1: {res['spearman_pydvl_seed0_vs_seed1']:.3f}")
    trunc = res.get("pydvl_truncated")
    if trunc and "error" in trunc:
        lines.append(f"\npyDVL with RelativeTruncation({cfg['rtol']}): fails: {trunc['error']}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny budgets (smoke test)")
    ap.add_argument("--no-pydvl", action="store_true", help="skdvl half only")
    ap.add_argument("--no-skdvl", action="store_true", help="pyDVL half only")
    ap.add_argument("--out", default=None, help="results json")
    ns = ap.parse_args(argv)
    cfg = dict(QUICK if ns.quick else FULL)
    out_path = Path(ns.out) if ns.out else (
        RESULTS.with_name("classwise_quick.json") if ns.quick else RESULTS)
    import sklearn

    out: dict = {"config": cfg, "machine": {
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "platform": platform.platform(), "loadavg_start": os.getloadavg(),
        "proc_loadavg_start": Path("/proc/loadavg").read_text().strip()},
        **_load_skdvl(), "sklearn_version": sklearn.__version__,
        "numpy_version": np.__version__}
    out["git_head"] = _git_head(out["skdvl_path"])
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-classwise-") as tmp:
        out["results"] = run(cfg, tmp, not ns.no_pydvl, not ns.no_skdvl)
    out["machine"]["loadavg_end"] = os.getloadavg()
    out["machine"]["proc_loadavg_end"] = Path("/proc/loadavg").read_text().strip()
    out["total_wall_s"] = time.perf_counter() - t0
    out["skdvl_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    m = out["machine"]
    out["table"] = report(out) + (
        f"\n\n/proc/loadavg: start {m['proc_loadavg_start']}, end {m['proc_loadavg_end']}; "
        f"total {out['total_wall_s']:.0f} s; skdvl from {out['skdvl_path']} (source sha "
        f"{out['skdvl_src_sha']}, checkout HEAD: {out['git_head']})")
    print(out["table"])
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(_jsonable(out), indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
