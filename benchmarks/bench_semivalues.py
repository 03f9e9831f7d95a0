"""Semivalue benchmarks, skdvl against pyDVL 0.10, side by side in one run.

Run from the repository root with our venv::

    python benchmarks/bench_semivalues.py            # full run, a few minutes on 2 cores
    python benchmarks/bench_semivalues.py --quick    # small budgets, a smoke test
    python benchmarks/bench_semivalues.py --parts overhead tmc --no-skdvl

pyDVL runs in its own venv (``benchmarks/pydvl_env.py``) through ``run_pydvl`` with
``benchmarks/pydvl_side/semivalues.py``; skdvl runs in this process on the same data
and budgets. Results: a table on stdout and ``benchmarks/results/semivalues.json``.

Benchmarks
----------
overhead  constant-time majority game u(S) = [|S| > n/2], n = 1000 players, n_jobs=1:
          marginal updates per second of permutation Shapley (n updates per
          permutation) and of MSR Banzhaf (n updates per sample, pyDVL's convention:
          one value update per player per sampled subset).
tmc       truncated Monte Carlo Shapley, LogisticRegression on breast cancer with 10%
          of the training labels flipped, n_jobs=2: wall time, model fits, AUROC of
          -values at finding the flipped rows.
exact     exact Shapley of 10 training rows: wall time, model fits.
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
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
from pydvl_env import run_pydvl

PYDVL_SCRIPT = BENCH_DIR / "pydvl_side" / "semivalues.py"
RESULTS = BENCH_DIR / "results" / "semivalues.json"
_FIT_LOG_ENV = "SKDVL_BENCH_FIT_LOG"

FULL = {"n_players": 1000, "n_permutations": 200, "n_msr_samples": 20, "msr_big": 2000,
        "tmc_permutations": 50, "tmc_rtol": 0.01, "tmc_burn_in": 0.0, "tmc_n_jobs": 2,
        "lr_max_iter": 1000, "seed": 0, "exact_n": 10, "exact_n_jobs": 1, "n_rows": 400,
        "flip": 0.1}
QUICK = {**FULL, "n_permutations": 10, "n_msr_samples": 4, "msr_big": 40,
         "tmc_permutations": 4, "n_rows": 200}


class CountingLogisticRegression(LogisticRegression):
    """LogisticRegression that appends one byte to a file per ``fit`` (all processes)."""

    def fit(self, X, y, sample_weight=None):
        path = os.environ.get(_FIT_LOG_ENV)
        if path:
            with open(path, "ab") as f:
                f.write(b".")
        return super().fit(X, y, sample_weight=sample_weight)


def _fit_log(tmp: str, name: str) -> str:
    path = os.path.join(tmp, f"skdvl-fits-{name}.log")
    open(path, "wb").close()
    os.environ[_FIT_LOG_ENV] = path
    return path


class MajorityGame:
    """u(S) = 1 if |S| > n/2 else 0, constant time in n: only ``__call__``."""

    def __init__(self, n_players: int):
        self.n_players = n_players
        self.calls = 0

    def __call__(self, subset) -> float:
        self.calls += 1
        return 1.0 if len(subset) > self.n_players / 2 else 0.0


class VectorisedMajorityGame(MajorityGame):
    """The same game with a batched ``evaluate(masks)``."""

    def evaluate(self, masks):
        self.calls += len(masks)
        return (np.count_nonzero(masks, axis=1) > self.n_players / 2).astype(float)


def make_data(cfg: dict, path: str) -> dict:
    """Breast cancer, first ``n_rows`` rows, 50/50 stratified split, standardised,
    ``flip`` of the training labels flipped (seed 0)."""
    X, y = load_breast_cancer(return_X_y=True)
    X, y = X[: cfg["n_rows"]], y[: cfg["n_rows"]]
    X_tr, X_val, y_tr, y_val = train_test_split(X, y, test_size=0.5, stratify=y,
                                                random_state=0)
    scaler = StandardScaler().fit(X_tr)
    X_tr, X_val = scaler.transform(X_tr), scaler.transform(X_val)
    rng = np.random.default_rng(0)
    flip_idx = rng.choice(len(y_tr), size=round(cfg["flip"] * len(y_tr)),
                          replace=False)
    flipped = np.zeros(len(y_tr), dtype=bool)
    flipped[flip_idx] = True
    y_noisy = np.where(flipped, 1 - y_tr, y_tr)
    d = {"X_train": X_tr, "y_train": y_noisy, "X_val": X_val, "y_val": y_val,
         "flipped": flipped}
    np.savez(path, **d)
    return d


# ---------------------------------------------------------------- skdvl side
def _timed_fit(valuer, *args, **kwargs):
    t0 = time.perf_counter()
    valuer.fit(*args, **kwargs)
    return time.perf_counter() - t0


def skdvl_overhead(cfg: dict) -> list[dict]:
    from skdvl import BanzhafValuer, ShapleyValuer

    n = cfg["n_players"]
    rows = []
    for game_cls, label in ((MajorityGame, "__call__"),
                            (VectorisedMajorityGame, "evaluate")):
        game = game_cls(n)
        v = ShapleyValuer(utility=game, sampler="permutation",
                          max_updates=cfg["n_permutations"], random_state=0, n_jobs=1)
        wall = _timed_fit(v)
        counts = np.asarray(v.counts_)
        n_perm = int(counts.max())
        rows.append({
            "name": f"skdvl ShapleyValuer(permutation) [{label}]", "n_players": n,
            "wall_s": wall, "samples": n_perm, "updates": int(counts.sum()),
            "utility_calls": game.calls,
            "n_utility_evaluations": int(v.n_utility_evaluations_),
            "samples_per_s": n_perm / wall, "updates_per_s": counts.sum() / wall,
            "values_mean": float(np.mean(v.values_)),
        })
    for game_cls, label in ((MajorityGame, "__call__"),
                            (VectorisedMajorityGame, "evaluate")):
        for budget in (cfg["n_msr_samples"], cfg["msr_big"]):
            game = game_cls(n)
            b = BanzhafValuer(utility=game, sampler="msr", max_updates=budget,
                              random_state=0, n_jobs=1)
            wall = _timed_fit(b)
            samples = game.calls  # one utility evaluation per MSR sample
            rows.append({
                "name": f"skdvl BanzhafValuer(msr) [{label}] max_updates={budget}",
                "n_players": n, "wall_s": wall, "samples": samples,
                "updates": samples * n, "utility_calls": samples,
                "n_utility_evaluations": int(b.n_utility_evaluations_),
                "counts_max": int(np.max(b.counts_)),
                "samples_per_s": samples / wall, "updates_per_s": samples * n / wall,
                "values_mean": float(np.nanmean(b.values_)),
            })
    return rows


def skdvl_tmc(cfg: dict, d: dict, tmp: str) -> dict:
    from skdvl import ShapleyValuer

    log = _fit_log(tmp, "tmc")
    v = ShapleyValuer(CountingLogisticRegression(max_iter=cfg["lr_max_iter"]),
                      scoring="accuracy", sampler="permutation",
                      truncation=cfg["tmc_rtol"], max_updates=cfg["tmc_permutations"],
                      n_jobs=cfg["tmc_n_jobs"], random_state=cfg["seed"])
    wall = _timed_fit(v, d["X_train"], d["y_train"], X_val=d["X_val"], y_val=d["y_val"])
    values = np.asarray(v.values_, dtype=float)
    return {
        "name": "skdvl ShapleyValuer(permutation, truncation)",
        "n_train": len(values), "n_jobs": cfg["tmc_n_jobs"], "wall_s": wall,
        "permutations": int(np.max(v.counts_)), "fits": os.path.getsize(log),
        "n_utility_evaluations": int(v.n_utility_evaluations_),
        "auroc": float(roc_auc_score(d["flipped"], -values)), "values": values,
    }


def skdvl_exact(cfg: dict, d: dict, tmp: str) -> list[dict]:
    from skdvl import ShapleyValuer

    n = cfg["exact_n"]
    log = _fit_log(tmp, "exact")
    e = ShapleyValuer(CountingLogisticRegression(max_iter=cfg["lr_max_iter"]),
                      scoring="accuracy", sampler="exact",
                      n_jobs=cfg["exact_n_jobs"], random_state=0)
    wall = _timed_fit(e, d["X_train"][:n], d["y_train"][:n], X_val=d["X_val"],
                      y_val=d["y_val"])
    return [{
        "name": "skdvl ShapleyValuer(exact)", "n_players": n, "wall_s": wall,
        "fits": os.path.getsize(log),
        "n_utility_evaluations": int(e.n_utility_evaluations_),
        "values": np.asarray(e.values_, dtype=float),
    }]


# ---------------------------------------------------------------- report
def _fmt(x, spec=".3g"):
    return "-" if x is None else format(x, spec)


def _ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def report(out: dict) -> str:
    p, s = out.get("pydvl", {}), out.get("skdvl", {})
    lines = []

    def row(*cols):
        lines.append("| " + " | ".join(str(c) for c in cols) + " |")

    if "overhead" in p or "overhead" in s:
        lines.append(f"\n### Engine overhead, majority game, n = "
                     f"{out['config']['n_players']}, n_jobs=1\n")
        row("run", "samples", "updates", "wall s", "samples/s", "updates/s",
            "vs best pyDVL")
        row(*["---"] * 7)
        pv = p.get("overhead", [])
        best_perm = max((r["updates_per_s"] for r in pv if "MSR" not in r["name"]),
                        default=None)
        best_msr = max((r["updates_per_s"] for r in pv if "MSR" in r["name"]),
                       default=None)
        for r in pv + s.get("overhead", []):
            ref = best_msr if ("MSR" in r["name"] or "msr" in r["name"]) else best_perm
            ratio = _ratio(r["updates_per_s"], ref)
            row(r["name"], r["samples"], r["updates"], _fmt(r["wall_s"]),
                _fmt(r["samples_per_s"], ",.0f"), _fmt(r["updates_per_s"], ",.0f"),
                "-" if ratio is None else f"{ratio:.1f}x")
    if "tmc" in p or "tmc" in s:
        c = out["config"]
        lines.append(f"\n### TMC Shapley, LogisticRegression, breast cancer "
                     f"({c['n_rows']} rows, 50/50), {int(c['flip'] * 100)}% flipped, "
                     f"rtol={c['tmc_rtol']}, {c['tmc_permutations']} permutations, "
                     f"n_jobs={c['tmc_n_jobs']}\n")
        row("run", "permutations", "model fits", "utility evals", "wall s", "fits/s",
            "AUROC(-values)")
        row(*["---"] * 7)
        for r in [x for x in (p.get("tmc"), s.get("tmc")) if x]:
            row(r["name"], r["permutations"], r["fits"],
                r.get("n_utility_evaluations", "-"), _fmt(r["wall_s"]),
                _fmt(r["fits"] / r["wall_s"], ".0f"), _fmt(r["auroc"], ".3f"))
        if p.get("tmc") and s.get("tmc"):
            lines.append(f"\nspeed ratio (pyDVL wall / skdvl wall): "
                         f"{_ratio(p['tmc']['wall_s'], s['tmc']['wall_s']):.2f}x; "
                         f"Spearman(values) = {out.get('tmc_spearman', float('nan')):.3f}")
    if "exact" in p or "exact" in s:
        lines.append(f"\n### Exact Shapley, n = {out['config']['exact_n']} rows, "
                     f"LogisticRegression, n_jobs={out['config']['exact_n_jobs']}\n")
        row("run", "model fits", "utility evals", "wall s", "max |value - pyDVL exact|")
        row(*["---"] * 5)
        ref = p.get("exact", [{}])[0].get("values")
        for r in p.get("exact", []) + s.get("exact", []):
            diff = (None if ref is None or r.get("values") is None
                    else float(np.max(np.abs(np.asarray(r["values"]) - ref))))
            row(r["name"], r["fits"], r.get("n_utility_evaluations", "-"),
                _fmt(r["wall_s"]), _fmt(diff, ".2g"))
    return "\n".join(lines)


def _jsonable(obj):
    """``obj`` with numpy arrays and scalars turned into lists and Python numbers."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", nargs="+", default=["overhead", "tmc", "exact"],
                    choices=["overhead", "tmc", "exact"])
    ap.add_argument("--quick", action="store_true", help="small budgets (smoke test)")
    ap.add_argument("--no-skdvl", action="store_true", help="pyDVL half only")
    ap.add_argument("--no-pydvl", action="store_true", help="skdvl half only")
    ap.add_argument("--seed", type=int, default=0,
                    help="sampling seed of the TMC runs (data and split stay fixed)")
    ap.add_argument("--out", default=str(RESULTS))
    ns = ap.parse_args(argv)
    cfg = dict(QUICK if ns.quick else FULL, seed=ns.seed)
    out = {"config": cfg, "parts": ns.parts, "machine": {
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "platform": platform.platform(), "loadavg_start": os.getloadavg()}}
    with tempfile.TemporaryDirectory(prefix="bench-semivalues-") as tmp:
        data_path = os.path.join(tmp, "data.npz")
        d = make_data(cfg, data_path)
        if not ns.no_pydvl:
            t0 = time.perf_counter()
            res = run_pydvl(PYDVL_SCRIPT, {**cfg, "parts": ns.parts, "data": data_path},
                            timeout=1200)
            out["pydvl"] = res["result"]
            out["pydvl_process"] = {"wall_s": res["wall_s"],
                                    "peak_rss_mb": res["peak_rss_mb"]}
            print(f"pyDVL half done in {time.perf_counter() - t0:.1f}s "
                  f"(peak RSS {res['peak_rss_mb']:.0f} MiB)", file=sys.stderr)
        if not ns.no_skdvl:
            import skdvl

            t0 = time.perf_counter()
            sk = {"version": getattr(skdvl, "__version__", "?")}
            with threadpool_limits(1):
                if "overhead" in ns.parts:
                    sk["overhead"] = skdvl_overhead(cfg)
                if "tmc" in ns.parts:
                    sk["tmc"] = skdvl_tmc(cfg, d, tmp)
                if "exact" in ns.parts:
                    sk["exact"] = skdvl_exact(cfg, d, tmp)
            out["skdvl"] = sk
            out["skdvl_process"] = {
                "wall_s": time.perf_counter() - t0,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
            print(f"skdvl half done in {out['skdvl_process']['wall_s']:.1f}s",
                  file=sys.stderr)
    out["machine"]["loadavg_end"] = os.getloadavg()
    if out.get("pydvl", {}).get("tmc") and out.get("skdvl", {}).get("tmc"):
        from scipy.stats import spearmanr

        out["tmc_spearman"] = float(spearmanr(out["pydvl"]["tmc"]["values"],
                                              out["skdvl"]["tmc"]["values"])[0])
    table = report(out)
    out["table"] = table
    print(table)
    Path(ns.out).parent.mkdir(parents=True, exist_ok=True)
    Path(ns.out).write_text(json.dumps(_jsonable(out), indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
