"""Data-OOB: skdvl's DataOOBValuer against pyDVL 0.10's DataOOBValuation.

Both value the *same* fitted ensemble: each side fits it from the same data, seed and
scikit-learn version (the check hashes every member's drawn rows and predictions), and
skdvl is given it as ``FrozenEstimator(ensemble)``, so only the valuation is timed.
Reported per dataset and ensemble: valuation seconds (min of ``repeats``), AUROC of
finding the flipped labels, and the largest difference between the two value vectors.

    python benchmarks/bench_oob.py            # writes benchmarks/results/oob.json
    python benchmarks/bench_oob.py --quick    # small run, no pyDVL unless available
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits, make_classification
from sklearn.frozen import FrozenEstimator

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _shared import ensemble, sha  # noqa: E402

from skdvl.datasets import flip_labels
from skdvl.evaluation import noisy_auroc
from skdvl.valuation._oob import DataOOBValuer


def _datasets(quick: bool) -> dict:
    out = {
        "breast_cancer": load_breast_cancer(return_X_y=True),
        "digits": load_digits(return_X_y=True),
    }
    if not quick:
        out["synthetic_20k"] = make_classification(
            n_samples=20_000, n_features=20, n_informative=10, random_state=0)
    return out


def skdvl_side(X, y, flipped, kind, n_estimators, seed, repeats) -> dict:
    model = ensemble(kind, n_estimators, seed)
    t0 = time.perf_counter()
    model.fit(X, y)
    fit_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        v = DataOOBValuer(FrozenEstimator(model)).fit(X, y)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()  # the one-liner users run: fit and value
    DataOOBValuer(ensemble(kind, n_estimators, seed)).fit(X, y)
    total_s = time.perf_counter() - t0
    values = np.asarray(v.values_)
    return {
        "fit_s": fit_s, "value_s": min(times), "fit_and_value_s": total_s,
        "auroc": noisy_auroc(values, flipped), "values": values,
        "samples_sha": sha(model.estimators_samples_),
        "pred_sha": sha([est.predict(X) for est in model.estimators_]),
    }


def pydvl_side(data_path, kind, n_estimators, seed, repeats) -> dict | None:
    try:
        from pydvl_env import run_pydvl
    except ImportError:
        return None
    res = run_pydvl(HERE / "pydvl_side" / "oob.py",
                    {"data": str(data_path), "model": kind, "n_estimators": n_estimators,
                     "random_state": seed, "repeats": repeats}, timeout=1800)
    out = res["result"]
    out["peak_rss_mb"] = res["peak_rss_mb"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-pydvl", action="store_true")
    parser.add_argument("--n-estimators", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(HERE / "results" / "oob.json"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (X, y) in _datasets(args.quick).items():
            y_noisy, flipped = flip_labels(y, 0.1, random_state=0)
            X = np.asarray(X, dtype=np.float64)
            data_path = Path(tmp) / f"{name}.npz"
            np.savez(data_path, X=X, y=y_noisy, flipped=flipped)
            for kind in ("bagging", "forest"):
                ours = skdvl_side(X, y_noisy, flipped, kind, args.n_estimators, 0,
                                  args.repeats)
                theirs = None if args.no_pydvl else pydvl_side(
                    data_path, kind, args.n_estimators, 0, args.repeats)
                rows.append(_row(name, X.shape, kind, args.n_estimators, ours, theirs))
                print(json.dumps(rows[-1]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows}, indent=2) + "\n")


def _row(name, shape, kind, n_estimators, ours, theirs) -> dict:
    row = {
        "dataset": name, "n_samples": shape[0], "n_features": shape[1], "model": kind,
        "n_estimators": n_estimators,
        "skdvl": {k: v for k, v in ours.items() if k not in ("values",)},
    }
    if theirs is not None:
        same = (theirs["samples_sha"] == ours["samples_sha"]
                and theirs["pred_sha"] == ours["pred_sha"])
        a, b = ours["values"], np.asarray(theirs["values"])
        both = np.isfinite(a) & np.isfinite(b)
        row["pydvl"] = {k: v for k, v in theirs.items() if k not in ("values",)}
        row["same_ensemble"] = bool(same)
        row["max_abs_value_diff"] = float(np.max(np.abs(a[both] - b[both])))
        row["rows_nan_in_skdvl_only"] = int(np.sum(np.isnan(a) & ~np.isnan(b)))
        row["speedup"] = theirs["value_s"] / ours["value_s"]
    return row


if __name__ == "__main__":
    main()
