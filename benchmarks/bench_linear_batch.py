"""Per-coalition cost of the batched linear fits against scikit-learn's.

For a batch of coalitions of 20-300 rows, times ``plan.fit + plan.score``
(skdvl.utility._linear_batch) and ``clone(estimator).fit + scorer`` (scikit-learn) on
the same coalitions, single-threaded, and reports the cost per coalition and
the ratio. Times are CPU times of this process (steadier than wall time on a
shared machine); they alternate between the two, best of ``--repeats``, so that
load from other processes hits both alike.

Run: ``python benchmarks/bench_linear_batch.py [--batch 256] [--repeats 3]``
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_digits, load_wine  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import check_scoring  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from skdvl.utility._linear_batch import plan_batched  # noqa: E402


def coalition_masks(n, batch, low, high, rng):
    masks = np.zeros((batch, n), bool)
    for i, m in enumerate(rng.integers(low, high + 1, size=batch)):
        masks[i, rng.choice(n, size=min(m, n), replace=False)] = True
    return masks


def time_sklearn(est, scorer, X, y, X_val, y_val, masks):
    start = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for mask in masks:
            rows = np.flatnonzero(mask)
            scorer(clone(est).fit(X[rows], y[rows]), X_val, y_val)
    return (time.process_time() - start) / masks.shape[0]


def time_batched(plan, X, y, X_val, y_val, masks):
    start = time.process_time()
    plan.score(plan.fit(X, y, masks), X_val, y_val)
    return (time.process_time() - start) / masks.shape[0]


def bench(name, X, y, batch, repeats, n_sklearn, rng):
    X, X_val, y, y_val = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    est = make_pipeline(StandardScaler(), LogisticRegression())
    plan = plan_batched(est, "accuracy")
    scorer = check_scoring(est, "accuracy")
    masks = coalition_masks(X.shape[0], batch, 20, 300, rng)
    ours, theirs = [], []
    for _ in range(repeats):
        ours.append(time_batched(plan, X, y, X_val, y_val, masks))
        theirs.append(time_sklearn(est, scorer, X, y, X_val, y_val, masks[:n_sklearn]))
    fitted = plan.fit(X, y, masks)
    a, b = min(ours), min(theirs)
    print(f"{name:<14} n={X.shape[0]} d={X.shape[1]} classes={np.unique(y).size} "
          f"batch={batch}: batched {a * 1e3:.3f} ms/coalition, scikit-learn "
          f"{b * 1e3:.3f} ms/coalition -> {b / a:.1f}x faster; "
          f"failed {int(fitted.failed.sum())}, Newton iterations "
          f"mean {fitted.n_iter.mean():.1f} max {fitted.n_iter.max()}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-sklearn", type=int, default=64,
                        help="coalitions timed with scikit-learn (per repeat)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    bench("breast_cancer", *load_breast_cancer(return_X_y=True), args.batch, args.repeats,
          args.n_sklearn, rng)
    bench("wine", *load_wine(return_X_y=True), args.batch, args.repeats,
          args.n_sklearn, rng)
    bench("digits", *load_digits(return_X_y=True), args.batch, args.repeats,
          args.n_sklearn, rng)


if __name__ == "__main__":
    main()
