"""Learn the utility from a few real fits, then sample the learned one.

Data utility learning (Wang, Yang & Jia, 2022): value 12 training rows of
scikit-learn's breast cancer data for a LogisticRegression, spending the same
number of real model fits two ways:

1. truncation-free permutation Shapley on the real utility;
2. a ``LearnedUtility`` trained on that many real evaluations (a gradient boosting
   regressor on the rows' indicators), then 1,000 permutations of the learned
   utility, which cost predictions, not fits.

With 12 rows the exact values (4,096 coalitions) are cheap, so the script prints
each estimate's error against them.

Run: ``python examples/utility_learning.py``
"""

import math
import time

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from skdvl import ModelUtility, ShapleyValuer
from skdvl.utility_learning import LearnedUtility


def main(seed: int = 0) -> None:
    X, y = load_breast_cancer(return_X_y=True)
    X_train, X_val, y_train, y_val = train_test_split(
        X, y, train_size=12, test_size=100, stratify=y, random_state=seed)
    scaler = StandardScaler().fit(X_train)
    X_train, X_val = scaler.transform(X_train), scaler.transform(X_val)

    def real():  # the real utility: a batched LogisticRegression fit per coalition
        return ModelUtility(LogisticRegression(), X_train, y_train, X_val, y_val,
                            scoring="neg_log_loss", default_score=-math.log(2))

    exact = ShapleyValuer(utility=real(), sampler="exact").fit().values_

    t0 = time.perf_counter()
    sampled = ShapleyValuer(utility=real(), sampler="permutation", max_updates=10,
                            random_state=seed).fit()
    t_sampled = time.perf_counter() - t0
    budget = sampled.n_utility_evaluations_

    t0 = time.perf_counter()
    learned = LearnedUtility(real(), GradientBoostingRegressor(n_estimators=100),
                             training_budget=budget, random_state=seed).fit()
    surrogate = ShapleyValuer(utility=learned, sampler="permutation", max_updates=1000,
                              random_state=seed).fit()
    t_learned = time.perf_counter() - t0

    def rmse(values):
        return float(np.sqrt(np.mean((np.asarray(values) - exact) ** 2)))

    print(f"{len(y_train)} rows, exact Shapley values from all {2 ** len(y_train)} "
          "coalitions\n")
    print(f"{'':<36}{'real evals':>11}{'coalitions':>12}{'RMSE':>10}{'seconds':>9}")
    print(f"{'permutations of the real utility':<36}{budget:>11}{budget:>12}"
          f"{rmse(sampled.values_):>10.4f}{t_sampled:>9.2f}")
    print(f"{'permutations of the learned utility':<36}{len(learned.training_masks_):>11}"
          f"{surrogate.n_utility_evaluations_:>12}{rmse(surrogate.values_):>10.4f}"
          f"{t_learned:>9.2f}")
    print(f"\nthe learned values add up to u(N) - u(empty) of the real utility: "
          f"{surrogate.values_.sum():.6f} vs {exact.sum():.6f}")


if __name__ == "__main__":
    main()
