"""
Cleaning a noisy dataset inside ``GridSearchCV``
================================================

:class:`~skdvl.DataCleaner` drops the lowest-valued training rows inside an
imbalanced-learn :class:`~imblearn.pipeline.Pipeline`, so how many rows to drop
(``fraction``) is a hyper-parameter like any other: a grid search chooses it by
cross-validation, and the cleaning is refitted on each training fold only, never on the
rows that score the fold.

Here 20 % of the labels of scikit-learn's breast cancer data are flipped. The rows are
valued by :class:`~skdvl.KNNShapley` (exact KNN-Shapley, leave-self-out when no
validation data is given: a few milliseconds), and a logistic regression is fitted on
the rows that remain. ``memory=`` caches the values, so the five fractions of the grid
cost one valuation per fold.
"""

# %%
# Data: 20 % of the training labels flipped
# -----------------------------------------
import tempfile
import time

import matplotlib.pyplot as plt
import numpy as np
from imblearn.pipeline import make_pipeline
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.preprocessing import StandardScaler

from skdvl import DataCleaner, KNNShapley
from skdvl.datasets import flip_labels

SEED = 0
NOISE = 0.2

X, y = load_breast_cancer(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.4, stratify=y, random_state=SEED)
y_noisy, flipped = flip_labels(y_train, NOISE, random_state=SEED)
print(f"{len(y_train)} training rows, {flipped.sum()} labels flipped; "
      f"{len(y_test)} clean test rows")

# %%
# The pipeline and the grid
# -------------------------
# The scaler comes first, so that the KNN distances (and the logistic regression) see
# standardised features; the cleaner's values are cached in a temporary directory.
cache = tempfile.mkdtemp(prefix="skdvl-gallery-")
pipe = make_pipeline(StandardScaler(),
                     DataCleaner(KNNShapley(n_neighbors=5), memory=cache),
                     LogisticRegression(max_iter=1000))
fractions = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]
search = GridSearchCV(pipe, {"datacleaner__fraction": fractions}, cv=5, n_jobs=1)
start = time.perf_counter()
search.fit(X_train, y_noisy)
print(f"grid search: {time.perf_counter() - start:.1f} s; "
      f"best fraction {search.best_params_['datacleaner__fraction']}")

# %%
# The folds' scores are accuracies on *noisy* labels: with labels flipped at random,
# a better model still scores better on them (the expected noisy accuracy is
# ``(1 - 2 * 0.2) * accuracy + 0.2``), so the search can choose on noisy data. The test
# accuracy below is on the clean test labels.
cv_mean = search.cv_results_["mean_test_score"]
cv_std = search.cv_results_["std_test_score"]
test_acc = []
for fraction in fractions:
    model = pipe.set_params(datacleaner__fraction=fraction).fit(X_train, y_noisy)
    test_acc.append(model.score(X_test, y_test))
print(f"{'fraction':>8} {'CV (noisy)':>11} {'test (clean)':>13}")
for f, m, a in zip(fractions, cv_mean, test_acc):
    print(f"{f:>8.2f} {m:>11.3f} {a:>13.3f}")

cleaner = search.best_estimator_.named_steps["datacleaner"]
dropped = ~np.isin(np.arange(len(y_noisy)), cleaner.sample_indices_)
print(f"the chosen cleaner dropped {dropped.sum()} rows, "
      f"{(dropped & flipped).sum()} of them flipped")

# %%
# Plot: cross-validated and test accuracy against the share of rows dropped
fig, ax = plt.subplots(figsize=(6, 3.8))
ax.errorbar(fractions, cv_mean, yerr=cv_std, marker="o", capsize=3,
            label="5-fold CV, noisy labels")
ax.plot(fractions, test_acc, marker="s", label="test, clean labels")
ax.axvline(search.best_params_["datacleaner__fraction"], color="grey", ls=":",
           label="chosen by the search")
ax.set_xlabel("share of training rows dropped (lowest KNN-Shapley value first)")
ax.set_ylabel("accuracy")
ax.set_title(f"Breast cancer, {NOISE:.0%} of labels flipped")
ax.legend(loc="lower right")
fig.tight_layout()
plt.show()
