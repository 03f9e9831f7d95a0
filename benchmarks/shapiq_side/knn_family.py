"""The shapiq half of ``benchmarks/bench_knn_family.py``: shapiq 1.8's nearest-neighbour
explainers (plain, weighted, threshold) on the data the skdvl half values.

Runs in the shapiq venv (``benchmarks/shapiq_env.py``). Reads one JSON object on stdin:
``data`` (an ``.npz`` with ``X``, ``y``, ``X_val``, ``y_val``), ``k``, ``radius``,
``n_bits``, ``variants`` (a subset of "plain", "weighted", "threshold"), ``max_rows`` (per
variant: explain at most this many validation rows, to bound the time) and ``out_dir``.
Each validation row ``x_j`` is explained for its own label (``class_index = y_j``), as in
the KNN-Shapley papers; the values of the training rows are the mean over the explained
validation rows. Prints one JSON line: per variant, the path of the values (``.npy``),
the rows explained and the seconds per validation row (the explainer's construction
included, once). For more than two classes shapiq's weighted explainer averages
one-vs-one binary games, which is not skdvl's game: compare its values on binary labels.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np


def _model(variant: str, k: int, radius: float, X, y):
    from sklearn.neighbors import KNeighborsClassifier, RadiusNeighborsClassifier

    if variant == "threshold":
        return RadiusNeighborsClassifier(radius=radius).fit(X, y)
    weights = "distance" if variant == "weighted" else "uniform"
    return KNeighborsClassifier(n_neighbors=k, weights=weights).fit(X, y)


def _explainer(variant: str, model, label: int, n_bits: int):
    from shapiq.explainer.nn import KNNExplainer, ThresholdNNExplainer, WeightedKNNExplainer

    if variant == "plain":
        return KNNExplainer(model, class_index=label)
    if variant == "weighted":
        return WeightedKNNExplainer(model, class_index=label, n_bits=n_bits)
    return ThresholdNNExplainer(model, class_index=label)


def main() -> None:
    import shapiq

    args = json.load(sys.stdin)
    with np.load(args["data"]) as z:
        X, y, X_val, y_val = z["X"], z["y"], z["X_val"], z["y_val"]
    out = {"version": shapiq.__version__, "variants": {}}
    for variant in args["variants"]:
        rows = min(len(X_val), int(args["max_rows"].get(variant, len(X_val))))
        t0 = time.perf_counter()
        model = _model(variant, int(args["k"]), float(args["radius"]), X, y)
        explainers = {}
        total = np.zeros(len(X))
        for j in range(rows):
            label = int(y_val[j])
            if label not in explainers:  # one explainer per class, as its API requires
                explainers[label] = _explainer(variant, model, label, int(args["n_bits"]))
            iv = explainers[label].explain_function(X_val[j])
            total += np.asarray(iv.get_n_order_values(1), dtype=float)
        seconds = time.perf_counter() - t0
        path = os.path.join(args["out_dir"], f"{variant}.npy")
        np.save(path, total / max(rows, 1))
        out["variants"][variant] = {"values": path, "rows": rows,
                                    "s_per_row": seconds / max(rows, 1)}
        print(f"shapiq {variant}: {rows} rows, {seconds / max(rows, 1) * 1e3:.2f} ms/row",
              file=sys.stderr, flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
