"""Value training rows for a neural net (skorch), reproducibly, on any number of workers.

A skorch ``NeuralNetClassifier`` is the ``estimator`` of a :class:`skdvl.BanzhafValuer`:
every coalition of rows gets a fresh clone of the net, fitted with a torch seed hashed
from the coalition itself (and the valuer's ``random_state``), on one torch thread, and
the caller's torch random state is left alone. So the values are the same for
``n_jobs=1`` and ``n_jobs=2``. The net must have ``train_split=None``: skdvl scores each
fit on ``X_val``, and a net that held out part of each coalition would value rows by
whether they were held out. Rows of breast cancer data, 10 % of whose labels were
flipped, are valued; the flipped rows should get low values (AUROC of -values).

Needs torch and skorch. Run: ``python examples/skorch_valuation.py`` (about 20 s).
"""

import time

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from skorch import NeuralNetClassifier

from skdvl import BanzhafValuer


class MLP(torch.nn.Module):
    def __init__(self, d=30, hidden=16):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.ReLU(),
                                       torch.nn.Linear(hidden, 2))

    def forward(self, X):
        return torch.softmax(self.net(X), dim=-1)


def main(seed: int = 0, n_samples: int = 600) -> None:
    X, y = load_breast_cancer(return_X_y=True)
    X_tr, X_val, y_tr, y_val = train_test_split(X[:200], y[:200], test_size=0.5,
                                                stratify=y[:200], random_state=seed)
    scaler = StandardScaler().fit(X_tr)
    X_tr, X_val = (scaler.transform(a).astype(np.float32) for a in (X_tr, X_val))
    rng = np.random.default_rng(seed)
    flipped = np.zeros(len(y_tr), dtype=bool)
    flipped[rng.choice(len(y_tr), size=len(y_tr) // 10, replace=False)] = True
    y_noisy = np.where(flipped, 1 - y_tr, y_tr).astype(np.int64)

    net = NeuralNetClassifier(MLP, max_epochs=10, lr=0.1, train_split=None, verbose=0)
    values = {}
    for n_jobs in (2, 1):
        valuer = BanzhafValuer(net, sampler="msr", scoring="accuracy",
                               max_updates=n_samples, n_jobs=n_jobs, random_state=seed)
        t0 = time.perf_counter()
        valuer.fit(X_tr, y_noisy, X_val=X_val, y_val=y_val)
        wall = time.perf_counter() - t0
        values[n_jobs] = valuer.values_
        print(f"n_jobs={n_jobs}: {valuer.n_utility_evaluations_} fits in {wall:.1f} s; "
              f"AUROC of -values at finding the flipped rows: "
              f"{roc_auc_score(flipped, -valuer.values_):.3f}")
    print("fit path:", valuer.fit_path_)
    print("values identical for n_jobs=1 and 2:", np.array_equal(values[1], values[2]))


if __name__ == "__main__":
    main()
