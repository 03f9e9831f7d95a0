"""
Valuing data sources: groups of rows as players
===============================================

Rows often come in groups: the patients of a hospital, the labels of one annotator,
the logs of one day. ``fit(X, y, groups=labels)`` values the groups: the players are
the distinct labels, a coalition of groups is fitted on all of their rows, and
``values_`` is a Series indexed by the labels. The cost grows with the number of
groups, not of rows: eight sources are an *exact* game of 256 coalitions, whatever
their size.

Here eight "annotators" label 60 rows each of scikit-learn's breast cancer data; two of
them are careless and flip 40 % of their labels. :mod:`skdvl.groups` makes labels three
ways; the last part drops the lowest-valued annotator inside a cleaner.
"""

# %%
# Eight annotators, two of them careless
# --------------------------------------
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from skdvl import DataCleaner, ShapleyValuer
from skdvl.groups import groups_by_clusters, groups_by_label

SEED = 0
X, y = load_breast_cancer(return_X_y=True)
X_train, X_val, y_train, y_val = train_test_split(
    X, y, train_size=480, stratify=y, random_state=SEED)
scaler = StandardScaler().fit(X_train)
X_train, X_val = scaler.transform(X_train), scaler.transform(X_val)

rng = np.random.default_rng(SEED)
annotator = np.array([f"annotator {k}" for k in rng.permutation(np.arange(480) % 8)])
careless = np.isin(annotator, ["annotator 2", "annotator 5"])
flip = careless & (rng.random(480) < 0.4)
y_noisy = np.where(flip, 1 - y_train, y_train)
print(f"{flip.sum()} labels flipped, all by annotators 2 and 5")

# %%
# Exact Shapley values of the annotators
# --------------------------------------
# 2^8 = 256 coalitions of annotators, each a logistic regression on their rows (fitted
# in batches: see ``batch_fit``).
valuer = ShapleyValuer(LogisticRegression(), scoring="accuracy", sampler="exact")
valuer.fit(X_train, y_noisy, groups=annotator, X_val=X_val, y_val=y_val)
values = valuer.values_.sort_index()
print(values.round(4))
print(f"{valuer.n_utility_evaluations_} utility evaluations")

fig, ax = plt.subplots(figsize=(6.5, 3.2))
colors = ["tab:red" if a in ("annotator 2", "annotator 5") else "tab:blue"
          for a in values.index]
ax.bar(range(len(values)), values.to_numpy(), color=colors)
ax.set_xticks(range(len(values)), [a.split()[-1] for a in values.index])
ax.set_xlabel("annotator (red: careless)")
ax.set_ylabel("Shapley value (accuracy)")
ax.set_title("Exact Shapley values of eight data sources")
fig.tight_layout()

# %%
# Other ways to make groups
# -------------------------
# By class (the value of each class's data), or by k-means on the features (a cheap
# approximation of row values: 12 clusters cost a 12-player game).
by_class = ShapleyValuer(LogisticRegression(), scoring="accuracy", sampler="exact").fit(
    X_train, y_noisy, groups=groups_by_label(y_noisy), X_val=X_val, y_val=y_val)
print(by_class.values_.round(4))
clusters = groups_by_clusters(X_train, 12, random_state=SEED)
by_cluster = ShapleyValuer(LogisticRegression(), scoring="accuracy", truncation=0.01,
                           max_updates=50, random_state=SEED).fit(
    X_train, y_noisy, groups=clusters, X_val=X_val, y_val=y_val)
print(by_cluster.values_.round(4).sort_values().head())

# %%
# Dropping whole sources
# ----------------------
# ``DataCleaner.fit_resample(X, y, groups=...)`` drops the lowest-valued groups
# (``fraction`` is then a share of the groups): here one annotator in eight.
cleaner = DataCleaner(ShapleyValuer(LogisticRegression(), scoring="accuracy",
                                    sampler="exact", cv=4), fraction=0.125)
X_kept, y_kept = cleaner.fit_resample(X_train, y_noisy, groups=annotator)
dropped = sorted(str(a) for a in set(annotator) - set(annotator[cleaner.sample_indices_]))
print(f"dropped: {dropped}; kept {len(y_kept)} of {len(y_noisy)} rows")
