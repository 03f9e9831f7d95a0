"""Test accuracy without cleaning and after DataCleaner, for each available valuer.

breast_cancer and digits, 10 % of training labels flipped, 5 seeds. Per seed: a
stratified 75/25 train/test split, standardised on the training rows, flipped
training labels; a LogisticRegression is fitted on all noisy training rows
("none") and on the rows ``DataCleaner(valuer, fraction=0.1)`` keeps. Reported: the
mean and standard deviation over seeds of test accuracy, seconds of valuation, AUROC
of finding the flipped rows and the share of flipped rows among those dropped.

    python benchmarks/bench_cleaning.py                  # -> results/cleaning.json
    python benchmarks/bench_cleaning.py --methods knn,oob --seeds 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from skdvl.cleaning import DataCleaner
from skdvl.datasets import flip_labels
from skdvl.evaluation import noisy_auroc

HERE = Path(__file__).resolve().parent
DATASETS = {"breast_cancer": load_breast_cancer, "digits": load_digits}


def make_valuer(method: str, seed: int, max_updates: int):
    """The valuers compared; utility-based ones use 5-fold cross-valuation (no X_val)."""
    if method == "oob":
        from skdvl.valuation._oob import DataOOBValuer

        return DataOOBValuer(n_estimators=100, random_state=seed)
    if method == "knn":
        from skdvl.valuation._knn import KNNShapley

        return KNNShapley(n_neighbors=5)
    from skdvl.valuation import _semivalues as sv

    cls = {"shapley": sv.ShapleyValuer, "banzhaf": sv.BanzhafValuer}[method]
    extra = {"truncation": 0.01} if method == "shapley" else {}
    return cls(estimator=LogisticRegression(), scoring="accuracy", max_updates=max_updates,
               n_jobs=2, random_state=seed, **extra)


def one_seed(name: str, seed: int, methods: list[str], max_updates: int) -> dict:
    X, y = DATASETS[name](return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, stratify=y,
                                              random_state=seed)
    scaler = StandardScaler().fit(X_tr)
    X_tr, X_te = scaler.transform(X_tr), scaler.transform(X_te)
    y_noisy, flipped = flip_labels(y_tr, 0.1, random_state=seed)
    out = {"none": {"accuracy": LogisticRegression(max_iter=1000).fit(X_tr, y_noisy)
                    .score(X_te, y_te)}}
    for method in methods:
        cleaner = DataCleaner(make_valuer(method, seed, max_updates), fraction=0.1)
        t0 = time.perf_counter()
        X_kept, y_kept = cleaner.fit_resample(X_tr, y_noisy)
        seconds = time.perf_counter() - t0
        dropped = np.setdiff1d(np.arange(len(y_noisy)), cleaner.sample_indices_)
        out[method] = {
            "accuracy": LogisticRegression(max_iter=1000).fit(X_kept, y_kept)
            .score(X_te, y_te),
            "seconds": seconds,
            "auroc": noisy_auroc(cleaner.values_, flipped),
            "flipped_among_dropped": float(flipped[dropped].mean()),
        }
    return out


def summarise(per_seed: list[dict]) -> dict:
    summary = {}
    for method in per_seed[0]:
        summary[method] = {
            f"{key}_{stat}": float(fn([s[method][key] for s in per_seed]))
            for key in per_seed[0][method] for stat, fn in (("mean", np.mean), ("std", np.std))
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = "knn,oob,shapley"
    parser.add_argument("--methods", default=default)
    parser.add_argument("--datasets", default="breast_cancer,digits")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--max-updates", type=int, default=10,
                        help="Monte Carlo budget of shapley (default: 10)")
    parser.add_argument("--out", default=str(HERE / "results" / "cleaning.json"))
    args = parser.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    results = {"methods": methods, "seeds": args.seeds, "noise": 0.1, "fraction": 0.1,
               "max_updates": args.max_updates, "model": "LogisticRegression",
               "datasets": {}}
    for name in args.datasets.split(","):
        per_seed = []
        for seed in range(args.seeds):
            per_seed.append(one_seed(name, seed, methods, args.max_updates))
            print(name, seed, json.dumps(per_seed[-1]), flush=True)
        results["datasets"][name] = {"summary": summarise(per_seed), "per_seed": per_seed}
        print(name, json.dumps(results["datasets"][name]["summary"], indent=1), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
