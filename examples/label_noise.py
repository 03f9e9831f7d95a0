"""Find flipped labels with data values.

Values the training rows of scikit-learn's breast cancer data, 10 % of whose
labels were flipped, with truncated Monte Carlo Shapley and MSR Banzhaf, and
prints how well each ranks the flipped rows (AUROC) and the test accuracy after
dropping the 10 % lowest-valued rows.

Run: ``python examples/label_noise.py``
"""

import time

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skdvl import BanzhafValuer, ShapleyValuer


def main(seed: int = 0) -> None:
    X, y = load_breast_cancer(return_X_y=True)
    X_train, X_rest, y_train, y_rest = train_test_split(
        X, y, train_size=200, stratify=y, random_state=seed)
    X_val, X_test, y_val, y_test = train_test_split(
        X_rest, y_rest, train_size=150, stratify=y_rest, random_state=seed)
    scaler = StandardScaler().fit(X_train)
    X_train, X_val, X_test = (scaler.transform(a) for a in (X_train, X_val, X_test))
    rng = np.random.default_rng(seed)
    flipped = rng.choice(len(y_train), size=len(y_train) // 10, replace=False)
    y_noisy = y_train.copy()
    y_noisy[flipped] = 1 - y_noisy[flipped]
    is_flipped = np.isin(np.arange(len(y_train)), flipped)

    model = LogisticRegression(max_iter=1000)
    base = make_pipeline(model).fit(X_train, y_noisy).score(X_test, y_test)
    print(f"breast_cancer: {len(y_train)} training rows, {is_flipped.sum()} labels flipped")
    print(f"test accuracy with all rows: {base:.3f}\n")
    print(f"{'method':<28}{'seconds':>8}{'fits':>8}{'AUROC':>8}{'acc. after':>12}")
    valuers = {
        "TMC Shapley (rtol=0.05)": ShapleyValuer(
            model, scoring="accuracy", truncation=0.05, max_updates=30, n_jobs=2,
            random_state=seed),
        "MSR Banzhaf": BanzhafValuer(
            model, scoring="accuracy", sampler="msr", max_updates=1000, n_jobs=2,
            random_state=seed),
    }
    for name, valuer in valuers.items():
        t0 = time.perf_counter()
        valuer.fit(X_train, y_noisy, X_val=X_val, y_val=y_val)
        seconds = time.perf_counter() - t0
        auroc = roc_auc_score(is_flipped, -valuer.values_)
        keep = np.argsort(valuer.values_, kind="stable")[len(y_train) // 10:]
        acc = make_pipeline(model).fit(X_train[keep], y_noisy[keep]).score(X_test, y_test)
        print(f"{name:<28}{seconds:>8.1f}{valuer.n_utility_evaluations_:>8}"
              f"{auroc:>8.3f}{acc:>12.3f}")


if __name__ == "__main__":
    main()
