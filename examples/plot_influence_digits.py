"""
Finding mislabelled digits with influence functions
===================================================

Influence functions estimate how the loss on a row changes when a training row is
up-weighted, from the gradients and the curvature of a trained model: no retraining.
:class:`skdvl.influence.InfluenceScorer` computes them for a torch module or a skorch
net; without validation data, ``values_`` is the negated *self-influence* of each
training row, which is low for rows the model finds hard to fit (often mislabelled).

Here a small MLP (a skorch ``NeuralNetClassifier``) is trained on scikit-learn's
digits with 10 % of the training labels changed to another digit. Two inverse-curvature
approximations are compared with the simplest baseline, the training loss of each row.
Needs the ``torch`` extra.
"""

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from skorch import NeuralNetClassifier

from skdvl.datasets import flip_labels
from skdvl.evaluation import noisy_auroc, precision_at_k
from skdvl.influence import EKFAC, Arnoldi, InfluenceScorer

SEED, N_TRAIN = 0, 800
torch.set_num_threads(1)

X, y = load_digits(return_X_y=True)
rng = np.random.default_rng(SEED)
rows = rng.permutation(len(X))[:N_TRAIN]
images = X[rows].reshape(-1, 8, 8)
X, y = (X[rows] / 16.0).astype(np.float32), y[rows].astype(np.int64)
y_noisy, flipped = flip_labels(y, 0.1, random_state=SEED)
y_noisy = y_noisy.astype(np.int64)


class MLP(torch.nn.Module):
    def __init__(self, hidden=32):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.Tanh(),
                                       torch.nn.Linear(hidden, 10))

    def forward(self, X):
        return torch.softmax(self.net(X), dim=-1)


torch.manual_seed(SEED)  # skorch initialises the module with torch's global generator
net = NeuralNetClassifier(MLP, max_epochs=40, batch_size=64, train_split=None,
                          optimizer=torch.optim.Adam, lr=3e-3, verbose=0)
net.fit(X, y_noisy)
print(f"{N_TRAIN} training rows, {flipped.sum()} labels changed; accuracy on the noisy "
      f"labels {net.score(X, y_noisy):.3f}")

# %%
# Self-influence with two approximations
# --------------------------------------
# The curvature is the Gauss-Newton matrix (the default; positive semi-definite, unlike
# the Hessian of a trained net). EK-FAC approximates it layer by layer with Kronecker
# factors; Arnoldi keeps its top 30 eigenpairs.
proba = net.predict_proba(X)
scores = {"-training loss (baseline)": np.log(proba[np.arange(N_TRAIN), y_noisy] + 1e-12)}
for method in [EKFAC(), Arnoldi(rank=30)]:
    scorer = InfluenceScorer(net, method=method, regularization=1e-2, random_state=SEED)
    start = time.perf_counter()
    scorer.fit(X, y_noisy)
    print(f"InfluenceScorer({method.name}): {time.perf_counter() - start:.1f} s")
    scores[f"self-influence, {method.name}"] = scorer.values_

for name, values in scores.items():
    print(f"{name:>28}: AUROC {noisy_auroc(values, flipped):.3f}, changed among the "
          f"{flipped.sum()} lowest {precision_at_k(values, flipped):.1%}")

# %%
# The lowest-valued digits
# ------------------------
# The 16 training rows with the lowest EK-FAC value, with the label the net was given
# and (in brackets, red when it differs) the true one.
values = scores["self-influence, ekfac"]
lowest = np.argsort(values)[:16]
fig, axes = plt.subplots(2, 8, figsize=(8, 2.6))
for ax, i in zip(axes.ravel(), lowest):
    ax.imshow(images[i], cmap="gray_r")
    ax.set_title(f"{y_noisy[i]} ({y[i]})", fontsize=9,
                 color="tab:red" if flipped[i] else "black")
    ax.axis("off")
fig.suptitle("given label (true label) of the 16 lowest-valued rows")
fig.tight_layout()

# %%
# AUROC at finding the changed labels
# -----------------------------------
fig, ax = plt.subplots(figsize=(6, 2.8))
names = list(scores)
ax.barh(names, [noisy_auroc(scores[n], flipped) for n in names], color="tab:blue")
ax.set_xlim(0.5, 1.0)
ax.set_xlabel("AUROC at finding the changed labels (1 = perfect, 0.5 = chance)")
fig.tight_layout()
plt.show()

# %%
# On this easy problem the net cannot fit the changed labels, so the per-row training
# loss already finds them and self-influence matches it rather than beating it. The
# influence of training rows on *test* rows (``scorer.influences(X_test, y_test)``) is
# what the loss cannot give: which training rows made a given prediction.
