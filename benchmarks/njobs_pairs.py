"""n_jobs=1 against n_jobs=2 on the batched path, in one process: fits at n_jobs 2, 1, 2 (the
first starts the loky workers; compare the last two), truncated and not (issue 25).

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

X, y = load_breast_cancer(return_X_y=True); X, y = X[:300], y[:300]
Xt, Xv, yt, yv = train_test_split(X, y, test_size=0.5, stratify=y, random_state=0)
sc = StandardScaler().fit(Xt); Xt, Xv = sc.transform(Xt), sc.transform(Xv)
warnings.simplefilter("ignore")
for tr in (0.01, None):
    vals = {}
    for nj in (2, 1, 2):
        v = ShapleyValuer(LogisticRegression(max_iter=1000), scoring="accuracy", truncation=tr, max_updates=100, n_jobs=nj, random_state=0)
        t = time.perf_counter(); v.fit(Xt, yt, X_val=Xv, y_val=yv); dt = time.perf_counter() - t
        vals[nj] = v.values_; print(tr, nj, f"{dt:.2f}s")
    print("equal", np.array_equal(vals[1], vals[2]))
