"""
KNN-Shapley on a large dataset
==============================

:class:`~skdvl.KNNShapley` computes the *exact* Shapley values of the training rows
for a K-nearest-neighbour model in closed form (Jia et al., 2019): for each validation
row it sorts the training rows by distance and walks them once, so it costs
``O(n_val * n log n)`` and never fits a model. That makes it the valuer for data sets
far beyond the reach of Monte Carlo methods, and a fast first look at any data set
(cleaning with a KNN proxy works for other models too when the features make sense for
distances).

Here: 100,000 generated training rows with 20 features, 10 % of their labels flipped,
valued on 1,000 validation rows.
"""

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from skdvl import KNNShapley
from skdvl.datasets import flip_labels
from skdvl.evaluation import noisy_auroc, precision_at_k, removal_curve
from skdvl.plotting import plot_removal_curves

SEED = 0
N_TRAIN, N_VAL, N_TEST = 100_000, 1_000, 5_000

X, y = make_classification(n_samples=N_TRAIN + N_VAL + N_TEST, n_features=20,
                           n_informative=10, n_redundant=4, class_sep=1.0,
                           random_state=SEED)
X_train, X_rest, y_train, y_rest = train_test_split(X, y, train_size=N_TRAIN,
                                                    random_state=SEED)
X_val, X_test, y_val, y_test = train_test_split(X_rest, y_rest, train_size=N_VAL,
                                                random_state=SEED)
y_noisy, flipped = flip_labels(y_train, 0.1, random_state=SEED)

# %%
# Valuation
# ---------
valuer = KNNShapley(n_neighbors=5, n_jobs=2)
start = time.perf_counter()
valuer.fit(X_train, y_noisy, X_val=X_val, y_val=y_val)
seconds = time.perf_counter() - start
values = valuer.values_
print(f"{N_TRAIN:,} training x {N_VAL:,} validation rows: {seconds:.1f} s")
print(f"AUROC at finding the flipped rows: {noisy_auroc(values, flipped):.3f}")
print(f"flipped among the 10 % lowest-valued rows: "
      f"{precision_at_k(values, flipped, k=N_TRAIN // 10):.1%} (chance: 10 %)")

# %%
# Values of flipped and clean rows
# --------------------------------
# Exact values carry no standard error; ``values_`` sums to the KNN model's
# validation accuracy minus that of the empty set (efficiency).
fig, ax = plt.subplots(figsize=(6, 3.6))
bins = np.linspace(np.percentile(values, 0.5), np.percentile(values, 99.5), 80)
ax.hist(values[~flipped], bins=bins, alpha=0.6, density=True, label="clean rows")
ax.hist(values[flipped], bins=bins, alpha=0.6, density=True, label="flipped rows")
ax.set_xlabel("KNN-Shapley value")
ax.set_ylabel("density")
ax.set_title(f"{N_TRAIN:,} rows valued in {seconds:.1f} s")
ax.legend()
fig.tight_layout()

# %%
# Removing the lowest-valued rows first
# -------------------------------------
# A logistic regression retrained on 30,000 of the rows (a random subsample keeps this
# example fast) after removing the lowest-valued, the highest-valued, or random rows.
rng = np.random.default_rng(SEED)
sub = rng.choice(N_TRAIN, size=30_000, replace=False)
curve = removal_curve(LogisticRegression(max_iter=300), X_train[sub], y_noisy[sub],
                      values[sub], X_test=X_test, y_test=y_test,
                      fractions=(0.0, 0.05, 0.1, 0.15, 0.2, 0.3),
                      n_repeats=2, random_state=SEED, n_jobs=2)
ax = plot_removal_curves(curve, label="KNN-Shapley", ylabel="test accuracy",
                         title="Retrained logistic regression")
ax.figure.set_size_inches(6, 3.6)
ax.figure.tight_layout()
plt.show()
