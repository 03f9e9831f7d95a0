"""Find flipped labels with influence functions on a skorch net.

Trains a small MLP (skorch ``NeuralNetClassifier``) on scikit-learn's digits, 10 % of whose
training labels were flipped, then scores every training row with
:class:`skdvl.influence.InfluenceScorer`: without validation data, ``values_`` is the
negated self-influence, so mislabelled rows get low values. Prints, for several
inverse-Hessian approximations, the time taken and how well the values rank the flipped
rows (AUROC), next to the training loss of each row as a baseline.

Needs the ``torch`` extra. Run: ``python examples/influence_label_noise.py``
"""

import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score
from skorch import NeuralNetClassifier

from skdvl.influence import EKFAC, Arnoldi, DataInf, InfluenceScorer, Nystroem


class MLP(torch.nn.Module):
    def __init__(self, hidden=64):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.Tanh(),
                                       torch.nn.Linear(hidden, 10))

    def forward(self, X):
        return torch.softmax(self.net(X), dim=-1)


def main(seed: int = 0, n_train: int = 1000, noise: float = 0.1) -> None:
    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    rows = rng.permutation(len(X))[:n_train]
    X, y = (X[rows] / 16.0).astype(np.float32), y[rows].astype(np.int64)
    flipped = rng.random(n_train) < noise
    y_noisy = y.copy()
    y_noisy[flipped] = (y[flipped] + rng.integers(1, 10, flipped.sum())) % 10

    torch.manual_seed(seed)  # skorch initialises the module with torch's global generator
    net = NeuralNetClassifier(MLP, max_epochs=60, lr=0.05, batch_size=64, train_split=None,
                              optimizer=torch.optim.Adam, optimizer__lr=3e-3, verbose=0)
    net.fit(X, y_noisy)
    print(f"{n_train} training rows, {flipped.sum()} flipped; train accuracy on the noisy "
          f"labels {net.score(X, y_noisy):.3f}")

    with torch.no_grad():
        proba = net.predict_proba(X)
    loss = -np.log(proba[np.arange(n_train), y_noisy] + 1e-12)
    print(f"{'baseline: training loss':>24}  AUROC {roc_auc_score(flipped, loss):.3f}")
    for method in [EKFAC(), DataInf(), Arnoldi(rank=50), Nystroem(rank=50)]:
        # Gauss-Newton curvature (the default): positive semi-definite, unlike the Hessian
        # of a trained net, which is usually indefinite.
        scorer = InfluenceScorer(net, method=method, regularization=1e-2, random_state=seed)
        start = time.perf_counter()
        values = scorer.fit(X, y_noisy).values_
        took = time.perf_counter() - start
        # Low value = harmful: rank flipped rows by -value.
        print(f"{'InfluenceScorer(' + method.name + ')':>24}  AUROC "
              f"{roc_auc_score(flipped, -values):.3f}  ({took:.1f} s)")


if __name__ == "__main__":
    main()
