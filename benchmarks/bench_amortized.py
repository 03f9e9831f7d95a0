"""Amortized valuation (issue 30): plain Monte Carlo Shapley against AmortizedValuer.

Breast cancer, 300 training rows with 10 % of their labels flipped, 100 validation
rows, LogisticRegression (batched fits, permutation prefixes fitted incrementally),
accuracy. The reference is 2,000 permutations of the same game (cached in
``results/amortized_reference.npz``). For each seed and budget ``B`` (permutations,
``300 B`` utility calls) the plain permutation estimate and the amortized one
(``AmortizedValuer`` on that estimate, default value model: the combined values and
the value model's cross-fitted predictions alone) are compared with the reference
(Spearman) and at finding the flipped rows (AUROC). Then the time to value
500 new rows: ``predict`` of the fitted amortizer against refitting the plain valuer
on the 800 rows at the same per-row budget.

    OMP_NUM_THREADS=1 python benchmarks/bench_amortized.py      # -> results/amortized.json
    OMP_NUM_THREADS=1 python benchmarks/bench_amortized.py --seeds 1 --budgets 2,10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from skdvl import AmortizedValuer, ShapleyValuer
from skdvl.datasets import flip_labels
from skdvl.evaluation import noisy_auroc
from skdvl.valuation._amortized import _folds
from skdvl.valuation._amortized_features import RowFeatures

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "results" / "amortized_reference.npz"
N_TRAIN, N_VAL, N_NEW, REF_PERMUTATIONS = 300, 100, 500, 2000


def task():
    """Training rows (flipped labels), validation rows, the unused rows, the flip mask."""
    X, y = load_breast_cancer(return_X_y=True)
    X_tr, X_rest, y_tr, y_rest = train_test_split(
        X, y, train_size=N_TRAIN, stratify=y, random_state=0)
    X_val, X_new, y_val, y_new = train_test_split(
        X_rest, y_rest, train_size=N_VAL, stratify=y_rest, random_state=0)
    scaler = StandardScaler().fit(X_tr)
    y_noisy, flipped = flip_labels(y_tr, 0.1, random_state=0)
    return (scaler.transform(X_tr), y_noisy, scaler.transform(X_val), y_val,
            scaler.transform(X_new), y_new, flipped)


def plain(max_updates: int, seed: int) -> ShapleyValuer:
    return ShapleyValuer(LogisticRegression(max_iter=1000), scoring="accuracy",
                         sampler="permutation", max_updates=max_updates, random_state=seed)


def reference(X, y, X_val, y_val) -> np.ndarray:
    if REFERENCE.exists():
        return np.load(REFERENCE)["values"]
    t0 = time.perf_counter()
    v = plain(REF_PERMUTATIONS, 12345).fit(X, y, X_val=X_val, y_val=y_val)
    np.savez(REFERENCE, values=np.asarray(v.values_), stderr=np.asarray(v.stderr_),
             seconds=time.perf_counter() - t0)
    return np.asarray(v.values_)


def score(values, ref, flipped) -> dict:
    return {"spearman": float(spearmanr(values, ref)[0]),
            "auroc": float(noisy_auroc(values, flipped))}


def accuracy_curves(X, y, X_val, y_val, flipped, ref, seeds, plain_budgets, amortized_budgets):
    """Spearman and AUROC against utility calls, plain and amortized, per seed.

    One fit per seed and budget gives the plain estimate (``valuer_.values_``), the
    default combined values (``values_``, ``combine="shrinkage"``) and the value
    model's cross-fitted predictions (``predictions_``, ``combine="prediction"``).
    """
    rows = []
    for seed in seeds:
        for B in sorted(set(plain_budgets) | set(amortized_budgets)):
            t0 = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    amortized = AmortizedValuer(plain(B, seed), random_state=seed).fit(
                        X, y, X_val=X_val, y_val=y_val)
                except ValueError as exc:  # one sample per row: refused
                    rows.append({"method": "amortized", "seed": seed, "permutations": B,
                                 "refused": str(exc)[:120]})
                    print(seed, B, "refused", flush=True)
                    continue
            seconds = time.perf_counter() - t0
            calls = amortized.n_utility_evaluations_
            if B in plain_budgets:
                rows.append({"method": "plain", "seed": seed, "permutations": B,
                             "utility_calls": calls,
                             **score(amortized.valuer_.values_, ref, flipped)})
            if B in amortized_budgets:
                low, high = amortized.disattenuated_interval_
                common = {"seed": seed, "permutations": B, "utility_calls": calls}
                rows.append({"method": "prediction", **common,
                             **score(amortized.predictions_, ref, flipped)})
                rows.append({"method": "amortized", **common, "seconds": seconds,
                             "amortization_score": amortized.amortization_score_,
                             "reliability": amortized.reliability_,
                             "disattenuated": amortized.disattenuated_score_,
                             "interval": [low, high],
                             "warned_poorly": any("poorly" in str(w.message) for w in caught),
                             "rmse_vs_reference": float(np.sqrt(np.mean(
                                 (amortized.values_ - ref) ** 2))),
                             "mean_stderr": float(np.sqrt(np.mean(amortized.stderr_ ** 2))),
                             **score(amortized.values_, ref, flipped)})
            print(seed, B, f"{seconds:.1f}s", rows[-1], flush=True)
    return rows


def signal_baselines(X, y, X_val, y_val, flipped, ref):
    """The value model's row signals on their own (no utility call): how much of the
    amortized accuracy they carry before any Shapley estimate is seen."""
    folds = _folds(N_TRAIN, y, 5, True, 0)
    features = RowFeatures(LogisticRegression(max_iter=1000), True, 5, raw=False)
    F = features.fit_transform(X, y, X_val, y_val, folds)  # standardized: ranks unchanged
    names = {2: "loss (out of fold), negated", 3: "margin (out of fold)",
             4: "KNN label agreement, training rows",
             5: "KNN label agreement, validation rows"}
    return {name: score(-F[:, j] if j == 2 else F[:, j], ref, flipped)
            for j, name in names.items()}


def summary(rows):
    out = {}
    for r in rows:
        if "refused" in r:
            out.setdefault(f"{r['method']} B={r['permutations']}", {"refused": r["refused"]})
            continue
        key = f"{r['method']} B={r['permutations']}"
        out.setdefault(key, {"utility_calls": r["utility_calls"], "spearman": [],
                             "auroc": []})
        out[key]["spearman"].append(r["spearman"])
        out[key]["auroc"].append(r["auroc"])
    for v in out.values():
        if "refused" in v:
            continue
        for m in ("spearman", "auroc"):
            v[f"{m}_mean"] = float(np.mean(v[m]))
            v[f"{m}_sd"] = float(np.std(v[m]))
    return out


def new_rows_timing(X, y, X_val, y_val, X_new, y_new, B_amortized, B_plain):
    """Seconds to value 500 new rows: predict, against refitting on the 800 rows."""
    rng = np.random.default_rng(0)
    pick = rng.integers(0, X_new.shape[0], N_NEW)  # 169 unused rows, drawn with
    Xn = X_new[pick] + rng.normal(0, 0.05, (N_NEW, X.shape[1]))  # replacement, jittered
    yn = y_new[pick]
    X_all, y_all = np.vstack([X, Xn]), np.concatenate([y, yn])
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        amortized = AmortizedValuer(plain(B_amortized, 0), random_state=0).fit(
            X, y, X_val=X_val, y_val=y_val)
        t0 = time.perf_counter()
        amortized.predict(Xn, yn)
        out["predict_500_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        AmortizedValuer(plain(B_amortized, 0), random_state=0).fit(
            X_all, y_all, X_val=X_val, y_val=y_val)
        out[f"refit_amortized_B{B_amortized}_800_rows_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        refit = plain(B_plain, 0).fit(X_all, y_all, X_val=X_val, y_val=y_val)
        out[f"refit_plain_B{B_plain}_800_rows_s"] = time.perf_counter() - t0
        out[f"refit_plain_B{B_plain}_800_rows_calls"] = refit.n_utility_evaluations_
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--plain", default="2,4,10,20,50,100")
    parser.add_argument("--amortized", default="1,2,4,10,20,50,100")
    parser.add_argument("--out", default=str(HERE / "results" / "amortized.json"))
    args = parser.parse_args()
    plain_budgets = [int(b) for b in args.plain.split(",")]
    amortized_budgets = [int(b) for b in args.amortized.split(",")]
    X, y, X_val, y_val, X_new, y_new, flipped = task()
    load_before = os.getloadavg()
    ref = reference(X, y, X_val, y_val)
    rows = accuracy_curves(X, y, X_val, y_val, flipped, ref, range(args.seeds),
                           plain_budgets, amortized_budgets)
    baselines = signal_baselines(X, y, X_val, y_val, flipped, ref)
    print(baselines)
    timing = new_rows_timing(X, y, X_val, y_val, X_new, y_new, 4, 20)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=HERE).stdout.strip()
    result = {
        "command": "OMP_NUM_THREADS=1 python benchmarks/bench_amortized.py "
                   f"--seeds {args.seeds} --plain {args.plain} --amortized {args.amortized}",
        "commit": commit + " (plus uncommitted issue-30 work)", "machine": platform.node(),
        "cores": os.cpu_count(), "load_before": load_before, "load_after": os.getloadavg(),
        "task": {"train": N_TRAIN, "val": N_VAL, "flipped": int(np.sum(flipped)),
                 "model": "LogisticRegression(max_iter=1000)", "scoring": "accuracy",
                 "reference_permutations": REF_PERMUTATIONS,
                 "reference_seconds": float(np.load(REFERENCE)["seconds"]),
                 "reference_auroc": float(noisy_auroc(ref, flipped))},
        "summary": summary(rows), "signals_alone": baselines, "rows": rows,
        "new_rows": timing,
    }
    Path(args.out).write_text(json.dumps(result, indent=1))
    for k, v in result["summary"].items():
        if "refused" in v:
            print(f"{k:18s} refused: {v['refused']}")
            continue
        print(f"{k:18s} calls {v['utility_calls']:6d}  spearman {v['spearman_mean']:.3f} "
              f"± {v['spearman_sd']:.3f}  auroc {v['auroc_mean']:.3f} ± {v['auroc_sd']:.3f}")
    print(timing)


if __name__ == "__main__":
    main()
