"""n_jobs=1 against n_jobs=2 on the batched path, in one process (issue 25).

Fits at n_jobs 2, 1, 2 (the first starts the loky workers: compare the last two), with
truncation 0.01 and without, on the 150-row breast-cancer task of bench_batch_fit.py.

Run: ``OMP_NUM_THREADS=1 python benchmarks/njobs_pairs.py``
"""

import time
import warnings

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from skdvl import ShapleyValuer

X, y = load_breast_cancer(return_X_y=True)
X, y = X[:300], y[:300]
Xt, Xv, yt, yv = train_test_split(X, y, test_size=0.5, stratify=y, random_state=0)
scaler = StandardScaler().fit(Xt)
Xt, Xv = scaler.transform(Xt), scaler.transform(Xv)
warnings.simplefilter("ignore")
for truncation in (0.01, None):
    values = {}
    for n_jobs in (2, 1, 2):
        v = ShapleyValuer(LogisticRegression(max_iter=1000), scoring="accuracy",
                          truncation=truncation, max_updates=100, n_jobs=n_jobs,
                          random_state=0)
        t = time.perf_counter()
        v.fit(Xt, yt, X_val=Xv, y_val=yv)
        values[n_jobs] = v.values_
        print(f"truncation={truncation} n_jobs={n_jobs}: {time.perf_counter() - t:.2f} s")
    print("values bitwise equal:", np.array_equal(values[1], values[2]))
