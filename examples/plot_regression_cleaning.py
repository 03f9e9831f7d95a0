"""
Cleaning a regression dataset: song popularity
==============================================

Valuers are not only for labels: with a regressor and a regression score they value
the rows of a regression problem. This example generates a data set that looks like a
music-streaming table (danceability, energy, loudness, tempo... and a popularity score
from 0 to 100), corrupts the target of 10 % of the rows (replaced by a random
popularity, as a broken join or a scraping error would), and asks two questions:

1. are the corrupted rows among the lowest-valued ones?
2. does a gradient boosting regressor predict better after dropping the lowest-valued
   10, 15 or 20 % of the rows, than after dropping as many rows at random?

Two valuers: :class:`~skdvl.KNNShapley` (exact, regression game: a KNN regressor's
negative squared error on validation rows) and :class:`~skdvl.DataOOBValuer` bagging
the gradient boosting regressor itself (each row scored by the absolute error of the
bagged models that did not see it; no validation data needed). Everything is generated
here: no download.
"""

# %%
# The data
# --------
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.metrics import mean_absolute_error
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from skdvl import DataOOBValuer, KNNShapley

SEED = 0
N = 3_000
rng = np.random.default_rng(SEED)
songs = pd.DataFrame({
    "danceability": rng.beta(5, 3, N),
    "energy": rng.beta(4, 3, N),
    "loudness": -rng.gamma(3, 2.5, N),              # dB, mostly -20..0
    "tempo": rng.normal(120, 25, N).clip(50, 220),  # BPM
    "acousticness": rng.beta(1.2, 3, N),
    "valence": rng.beta(3, 3, N),
    "speechiness": rng.beta(1, 12, N),
    "duration_min": rng.gamma(9, 0.4, N).clip(1, 12),
})
signal = (45 + 30 * songs.danceability * songs.energy + 1.2 * songs.loudness
          - 12 * songs.acousticness + 10 * np.sin(np.pi * songs.valence)
          - 0.08 * np.abs(songs.tempo - 118) - 2.5 * np.abs(songs.duration_min - 3.5)
          + 25 * songs.speechiness)
songs["popularity"] = (signal + rng.normal(0, 4, N)).clip(0, 100).round()

train, rest = train_test_split(songs, train_size=1_500, random_state=SEED)
val, test = train_test_split(rest, train_size=500, random_state=SEED)
features = [c for c in songs.columns if c != "popularity"]
scaler = StandardScaler().fit(train[features])
X_train, X_val, X_test = (scaler.transform(d[features]) for d in (train, val, test))
y_train = train.popularity.to_numpy(dtype=float)
y_val, y_test = val.popularity.to_numpy(float), test.popularity.to_numpy(float)

# Corrupt 10 % of the training targets: a random popularity instead of the true one.
corrupted = np.zeros(len(y_train), dtype=bool)
corrupted[rng.choice(len(y_train), size=len(y_train) // 10, replace=False)] = True
y_noisy = y_train.copy()
y_noisy[corrupted] = rng.uniform(0, 100, corrupted.sum()).round()
print(f"{len(y_train)} training rows, {corrupted.sum()} targets corrupted; "
      f"{len(y_val)} validation and {len(y_test)} test rows (clean)")

# %%
# Valuation
# ---------
model = GradientBoostingRegressor(n_estimators=100, max_depth=3, random_state=SEED)
valuers = {
    "KNNShapley": KNNShapley(n_neighbors=10, task="regression"),
    "DataOOB(GBR)": DataOOBValuer(
        GradientBoostingRegressor(n_estimators=40, max_depth=3, random_state=SEED),
        n_estimators=40, scoring="neg_absolute_error", n_jobs=2, random_state=SEED),
}
values = {}
for name, valuer in valuers.items():
    start = time.perf_counter()
    if name == "KNNShapley":
        valuer.fit(X_train, y_noisy, X_val=X_val, y_val=y_val)
    else:
        valuer.fit(X_train, y_noisy)
    values[name] = valuer.values_
    print(f"{name:>13}: {time.perf_counter() - start:.1f} s")

# %%
# Dropping the lowest-valued rows
# -------------------------------
# The gradient boosting regressor is refitted without the lowest-valued 10, 15 and 20 %
# of the rows; the baseline drops as many rows at random (mean of 5 draws). MAE is on
# the clean test targets. "found" is the share of the corrupted rows that are among the
# dropped ones; "precision" the share of the dropped rows that are corrupted.
def test_mae(keep):
    return mean_absolute_error(y_test, model.fit(X_train[keep], y_noisy[keep])
                               .predict(X_test))


n = len(y_train)
mae_all = test_mae(np.arange(n))
mae_clean = mean_absolute_error(y_test, model.fit(X_train, y_train).predict(X_test))
fractions = [0.10, 0.15, 0.20]
rows = []
for fraction in fractions:
    k = int(fraction * n)
    random_mae = np.mean([test_mae(np.random.default_rng(s).permutation(n)[k:])
                          for s in range(5)])
    rows.append({"dropped": f"{fraction:.0%}", "method": "random", "MAE": random_mae,
                 "found": fraction, "precision": 0.1})
    for name, v in values.items():
        order = np.argsort(v, kind="stable")
        low = order[:k]
        rows.append({"dropped": f"{fraction:.0%}", "method": name,
                     "MAE": test_mae(order[k:]),
                     "found": corrupted[low].sum() / corrupted.sum(),
                     "precision": corrupted[low].mean()})
table = pd.DataFrame(rows)
print(f"test MAE with every row: {mae_all:.2f}; with the true targets: {mae_clean:.2f}")
print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))

# %%
# Plots
# -----
fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.8))
methods = ["random", *values]
width = 0.8 / len(methods)
for j, method in enumerate(methods):
    sub = table[table.method == method]
    x = np.arange(len(fractions)) + (j - 1) * width
    axes[0].bar(x, sub.MAE, width, label=method)
    axes[1].bar(x, sub.found, width, label=method)
for ax in axes:
    ax.set_xticks(np.arange(len(fractions)), [f"{f:.0%}" for f in fractions])
    ax.set_xlabel("lowest-valued rows dropped")
axes[0].axhline(mae_all, color="black", ls="--", lw=1, label="no row dropped")
axes[0].axhline(mae_clean, color="grey", ls=":", lw=1, label="clean targets")
axes[0].set_ylim(min(mae_clean, table.MAE.min()) * 0.95, None)
axes[0].set_ylabel("test MAE (popularity points)")
axes[0].legend(fontsize="small")
axes[1].set_ylabel("share of the corrupted rows found")
axes[1].set_ylim(0, 1)
fig.suptitle("Gradient boosting on generated song data, 10 % of targets corrupted")
fig.tight_layout()
plt.show()

# %%
# Reading it
# ----------
# Data-OOB, which scores each row by how far the bagged gradient boosting models that
# did not train on it miss its target, puts most corrupted rows at the bottom, and
# dropping them brings the MAE most of the way to that of the clean targets. Dropping
# random rows changes nothing. KNN-Shapley finds about half of the corrupted rows in its
# lowest 10 % but dropping its lowest-valued rows makes the MAE *worse*: in a regression
# game a row is also worth little when its neighbours' targets are far from the
# validation targets, which is true of genuine songs in sparse regions (extreme
# popularities) too, and the boosted trees need those. The valuer should match the
# model: check the removal curve before cleaning with a proxy.
