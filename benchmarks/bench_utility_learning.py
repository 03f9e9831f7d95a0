"""Data utility learning: Shapley value error at equal real fits, with and without learning.

Run from the repository root with our venv::

    python benchmarks/bench_utility_learning.py            # 4 budgets x 5 seeds (~5-10 min)
    python benchmarks/bench_utility_learning.py --quick    # 2 budgets x 2 seeds

The game: LogisticRegression(max_iter=1000) on 16 rows of ``load_breast_cancer``
(standardised), u(S) = the negative log-loss on 100 validation rows, and
``-log 2`` (a coin flip) for the empty and one-class coalitions; the split is that
of the ``bc16`` game of ``bench_estimators.py``. Real evaluations are
:class:`skdvl.ModelUtility`'s batched fits. The reference is
``ShapleyValuer(sampler="exact")`` on the same utility: all 65,536 coalitions.

For each sampler (permutation; kernel), budget ``B`` and seed:

- **without learning**: the sampler on the real utility, with a budget giving about
  ``B`` real evaluations (``B // 16`` permutations; ``B`` kernel coalitions, whose
  first block already takes ~280). ``R`` = the distinct coalitions it evaluated
  (``n_utility_evaluations_``, the empty one included);
- **with learning**: ``LearnedUtility(real, model, training_budget=R)`` (the same
  ``R`` coalitions evaluated for real, drawn from the sampler's own size
  distribution: "shapley" for permutations, "kernel" for kernel), then the same
  sampler on it with a large budget (1,000 permutations; 16,000 kernel
  coalitions), and ``sampler="exact"`` on it (the limit of sampling the learned
  game: its own exact values).

Utility models: ``LinearRegression`` on the indicator vector; a
``GradientBoostingRegressor`` (200 trees, depth 3) on it; the same boosting on the
indicators plus the coalition's count of each class (``featurize``: a set-level
feature, in the spirit of the deep sets of Wang, Yang & Jia, 2022).

Metrics: mean squared error against the exact values, Spearman correlation, wall
seconds (the learned side's include its real evaluations). n_jobs=1, BLAS
single-threaded. Output: a table on stdout and
``benchmarks/results/utility_learning.json`` (every run, the load average at start
and end).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import math
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import sklearn
from scipy.stats import spearmanr
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from skdvl import ModelUtility, ShapleyValuer
from skdvl.utility_learning import LearnedUtility

RESULTS = Path(__file__).resolve().parent / "results"
N, N_VAL = 16, 100
BUDGETS, QUICK_BUDGETS = [100, 300, 1000, 3000], [300, 1000]
SAMPLERS = {  # name: (real budget for B, training distribution, learned budget)
    "permutation": (lambda b: max(1, b // N), "shapley", 1000),
    "kernel": (lambda b: b, "kernel", 16000),
}


class ClassCounts:
    """Indicators plus the coalition's number of rows of each class (picklable)."""

    def __init__(self, y):
        self.onehot = (np.asarray(y)[:, None] == np.unique(y)[None, :]).astype(float)

    def __call__(self, masks):
        m = masks.astype(float)
        return np.hstack([m, m @ self.onehot])


def load_game():
    X, y = load_breast_cancer(return_X_y=True)
    rest, X_val, y_rest, y_val = train_test_split(X, y, test_size=N_VAL, stratify=y,
                                                  random_state=0)
    scaler = StandardScaler().fit(rest)
    X_tr, _, y_tr, _ = train_test_split(rest, y_rest, train_size=N, stratify=y_rest,
                                        random_state=0)
    data = scaler.transform(X_tr), y_tr, scaler.transform(X_val), y_val

    def real():  # a fresh utility: an empty cache, its own counts
        return ModelUtility(LogisticRegression(max_iter=1000), *data, scoring="neg_log_loss",
                            default_score=-math.log(2))

    return real, y_tr


def metrics(values, exact) -> dict:
    values = np.asarray(values, dtype=float)
    return {"mse": float(np.mean((values - exact) ** 2)),
            "max_abs": float(np.max(np.abs(values - exact))),
            "spearman": float(spearmanr(values, exact).statistic)}


def run_one(real, models, exact, sampler, budget, seed) -> list[dict]:
    real_budget, distribution, learned_budget = SAMPLERS[sampler]
    t0 = time.perf_counter()
    base = ShapleyValuer(utility=real(), sampler=sampler, max_updates=real_budget(budget),
                         random_state=seed).fit()
    wall = time.perf_counter() - t0
    R = int(base.n_utility_evaluations_)
    rows = [{"sampler": sampler, "B": budget, "seed": seed, "method": "real",
             "real_evaluations": R, "queries": R, "wall_s": wall,
             **metrics(base.values_, exact)}]
    for name, (model, featurize) in models.items():
        t0 = time.perf_counter()
        learned = LearnedUtility(real(), clone(model), training_budget=R,
                                 training_distribution=distribution, featurize=featurize,
                                 random_state=seed).fit()
        t_fit = time.perf_counter() - t0
        same = ShapleyValuer(utility=learned, sampler=sampler, max_updates=learned_budget,
                             random_state=seed).fit()
        t_same = time.perf_counter() - t0 - t_fit
        limit = ShapleyValuer(utility=learned, sampler="exact").fit()
        t_limit = time.perf_counter() - t0 - t_fit - t_same
        common = {"sampler": sampler, "B": budget, "seed": seed,
                  "real_evaluations": len(learned.training_masks_),
                  "model_utility_fits": learned.n_real_evaluations_, "fit_s": t_fit}
        rows.append({**common, "method": f"learned {name}", "queries": int(
            same.n_utility_evaluations_), "wall_s": t_fit + t_same,
            **metrics(same.values_, exact)})
        rows.append({**common, "method": f"learned {name}, exact", "queries": 1 << N,
                     "wall_s": t_fit + t_limit, **metrics(limit.values_, exact)})
    return rows


def summarise(runs: list[dict]) -> list[dict]:
    keys = list(dict.fromkeys((r["sampler"], r["B"], r["method"]) for r in runs))
    out = []
    for sampler, budget, method in keys:
        sub = [r for r in runs if (r["sampler"], r["B"], r["method"]) == (sampler, budget,
                                                                           method)]
        mse = np.array([r["mse"] for r in sub])
        out.append({"sampler": sampler, "B": budget, "method": method, "seeds": len(sub),
                    "real_evaluations": float(np.mean([r["real_evaluations"] for r in sub])),
                    "mse_mean": float(mse.mean()), "mse_sd": float(mse.std(ddof=1))
                    if len(sub) > 1 else 0.0,
                    "spearman_mean": float(np.mean([r["spearman"] for r in sub])),
                    "wall_s_mean": float(np.mean([r["wall_s"] for r in sub]))})
    return out


def table(summary: list[dict]) -> str:
    lines = [f"{'sampler':<12}{'B':>6}{'real ev.':>10}  {'method':<36}{'MSE (mean +- sd)':>22}"
             f"{'spearman':>10}{'wall s':>8}"]
    for s in summary:
        lines.append(
            f"{s['sampler']:<12}{s['B']:>6}{s['real_evaluations']:>10.0f}  {s['method']:<36}"
            f"{s['mse_mean']:>12.2e} +- {s['mse_sd']:.1e}{s['spearman_mean']:>10.3f}"
            f"{s['wall_s_mean']:>8.2f}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 budgets x 2 seeds")
    ap.add_argument("--budgets", type=int, nargs="+")
    ap.add_argument("--seeds", type=int)
    ap.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=list(SAMPLERS))
    ap.add_argument("--out", default=str(RESULTS / "utility_learning.json"))
    ns = ap.parse_args(argv)
    budgets = ns.budgets or (QUICK_BUDGETS if ns.quick else BUDGETS)
    seeds = range(ns.seeds or (2 if ns.quick else 5))
    out: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                             "sklearn": sklearn.__version__, "numpy": np.__version__,
                             "loadavg_start": os.getloadavg()},
                 "config": {"n": N, "n_val": N_VAL, "budgets": budgets, "seeds": len(seeds),
                            "samplers": {k: {"training_distribution": v[1],
                                             "learned_budget": v[2]}
                                         for k, v in SAMPLERS.items() if k in ns.samplers}}}
    t_start = time.perf_counter()
    real, y_tr = load_game()
    t0 = time.perf_counter()
    ref = ShapleyValuer(utility=real(), sampler="exact").fit()
    out["exact"] = {"values": ref.values_.tolist(), "wall_s": time.perf_counter() - t0,
                    "evaluations": int(ref.n_utility_evaluations_),
                    "fit_path": real().fit_path}
    print(f"exact: {out['exact']['evaluations']} coalitions in {out['exact']['wall_s']:.1f} s "
          f"({out['exact']['fit_path']}), load {out['machine']['loadavg_start']}", flush=True)
    exact = ref.values_
    models = {
        "linear": (LinearRegression(), None),
        "gbr": (GradientBoostingRegressor(n_estimators=200, max_depth=3), None),
        "gbr+class counts": (GradientBoostingRegressor(n_estimators=200, max_depth=3),
                             ClassCounts(y_tr)),
    }
    runs: list[dict] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning of a few one-row fits
        for sampler in ns.samplers:
            for budget in budgets:
                for seed in seeds:
                    runs.extend(run_one(real, models, exact, sampler, budget, seed))
                print(f"  {sampler} B={budget} done ({time.perf_counter() - t_start:.0f} s)",
                      flush=True)
    out["runs"] = runs
    out["summary"] = summarise(runs)
    out["table"] = table(out["summary"])
    out["machine"]["loadavg_end"] = os.getloadavg()
    out["wall_s"] = time.perf_counter() - t_start
    print(out["table"])
    print(f"load average {out['machine']['loadavg_start']} -> {out['machine']['loadavg_end']}, "
          f"{out['wall_s']:.0f} s")
    Path(ns.out).parent.mkdir(parents=True, exist_ok=True)
    Path(ns.out).write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
