"""
Attributing a net's test losses to its training rows with TRAK and a gradient store
===================================================================================

Influence functions need the curvature of the whole net, and every query recomputes the
training gradients. Attribution methods for large nets work differently: the per-example
gradients are *projected* to a few hundred or thousand dimensions once, *stored*, and
reused by every query. Here :class:`~skdvl.influence.InfluenceScorer` with
``method=TRAK(...)`` (Park et al., 2023) writes the projected training gradients of a
small digits MLP to a zarr store in ``fit``; a second scorer reopens the store and
answers queries without the training data. TRAK is then compared with the plain
gradient dot product on the *linear datamodeling score* (LDS): models refitted on random
halves of the training rows, and the rank correlation between the summed attributions
of each half and the refitted model's test loss. Needs the ``torch`` extra and zarr.
"""

# %%
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import load_digits

from skdvl.evaluation import linear_datamodeling_score
from skdvl.influence import TRAK, GradientSimilarity, InfluenceScorer

N_TRAIN, N_TEST, N_MODELS, N_SUBSETS, PROJ_DIM = 400, 50, 3, 16, 512
torch.set_num_threads(1)
LOSS = torch.nn.CrossEntropyLoss()

X, y = load_digits(return_X_y=True)
order = np.random.default_rng(0).permutation(len(X))
X, y = (X[order] / 16.0).astype(np.float32), y[order].astype(np.int64)
X, y, X_test, y_test = (X[:N_TRAIN], y[:N_TRAIN], X[N_TRAIN:N_TRAIN + N_TEST],
                        y[N_TRAIN:N_TRAIN + N_TEST])


class DigitsMLP(ClassifierMixin, BaseEstimator):
    """A small MLP trained full-batch from a seeded initialisation (so refits agree)."""

    def __init__(self, hidden=32, steps=200, init_seed=0):
        self.hidden = hidden
        self.steps = steps
        self.init_seed = init_seed

    def fit(self, X, y):
        self.classes_ = np.arange(10)
        g = torch.Generator().manual_seed(self.init_seed)
        self.module_ = torch.nn.Sequential(torch.nn.Linear(64, self.hidden), torch.nn.Tanh(),
                                           torch.nn.Linear(self.hidden, 10))
        with torch.no_grad():
            for p in self.module_.parameters():
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) / np.sqrt(p.shape[-1]))
        opt = torch.optim.Adam(self.module_.parameters(), lr=1e-2, weight_decay=1e-4)
        Xt, yt = torch.as_tensor(np.asarray(X)), torch.as_tensor(np.asarray(y))
        for _ in range(self.steps):
            opt.zero_grad()
            LOSS(self.module_(Xt), yt).backward()
            opt.step()
        return self

    def predict_proba(self, X):
        with torch.no_grad():
            logits = self.module_(torch.as_tensor(np.asarray(X), dtype=torch.float32))
        return logits.softmax(1).numpy().astype(np.float64)

    def predict(self, X):
        return self.predict_proba(X).argmax(1)


# TRAK averages over independently trained models: the same net from other seeds
nets = [DigitsMLP(init_seed=s).fit(X, y) for s in range(N_MODELS)]
states = [net.module_.state_dict() for net in nets]
model = nets[0].module_
print(f"{N_MODELS} MLPs, test accuracy {np.mean([n.score(X_test, y_test) for n in nets]):.3f}")

# %%
# Project the training gradients once, into a store
# -------------------------------------------------
# ``fit`` computes the projected gradients chunk by chunk (``chunk_size`` rows), writes
# each chunk to the zarr store and marks it done: a fit that is interrupted resumes
# where it stopped, and a store made with other parameters, seeds or model is refused.
# ``dtype="float16"`` halves the store.
store = Path(tempfile.mkdtemp()) / "digits_trak.zarr"
trak = TRAK(proj_dim=PROJ_DIM, models=states, dtype="float16", store=store)
t0 = time.perf_counter()
scorer = InfluenceScorer(model, loss=LOSS, method=trak, chunk_size=100,
                         random_state=0).fit(X, y)
print(f"projected {N_TRAIN} rows x {N_MODELS} models to {PROJ_DIM} dims in "
      f"{time.perf_counter() - t0:.1f} s; store of "
      f"{sum(f.stat().st_size for f in store.rglob('*') if f.is_file()) / 1e6:.1f} MB")

# %%
# Reopen the store: queries need only the test rows
# -------------------------------------------------
# A new scorer with the same parameters and ``fit()`` without data reads the store;
# ``influences`` projects the test rows' gradients and multiplies them with the stored
# training side chunk by chunk.
reopened = InfluenceScorer(model, loss=LOSS, method=trak, chunk_size=100,
                           random_state=0).fit()
t0 = time.perf_counter()
trak_scores = reopened.influences(X_test, y_test)
print(f"{N_TEST} test rows scored from the store in {time.perf_counter() - t0:.2f} s; "
      f"same as the first scorer: "
      f"{np.array_equal(trak_scores, scorer.influences(X_test, y_test))}")
dot_scores = InfluenceScorer(model, loss=LOSS, method=GradientSimilarity(proj_dim=PROJ_DIM),
                             random_state=0).fit(X, y).influences(X_test, y_test)

# %%
# Linear datamodeling score
# -------------------------
# ``N_SUBSETS`` refits on random halves (the same halves for both methods). Positive
# scores mean "raises the test loss", so the LDS is computed against the loss.
lds = linear_datamodeling_score(trak_scores, DigitsMLP(), X, y, X_test, y_test,
                                n_subsets=N_SUBSETS, random_state=0)
mask = np.zeros((N_SUBSETS, N_TRAIN))
mask[np.arange(N_SUBSETS)[:, None], lds.subsets] = 1.0
dot_predicted = mask @ dot_scores.T
dot_per_row = np.array([spearmanr(dot_predicted[:, t], lds.actual[:, t])[0]
                        for t in range(N_TEST)])
print(f"LDS over {N_SUBSETS} refits: TRAK {lds.score:.2f}, gradient dot product "
      f"{np.nanmean(dot_per_row):.2f}")

fig, ax = plt.subplots(figsize=(5, 3.5))
ax.scatter(dot_per_row, lds.per_row, s=12)
ax.plot([-1, 1], [-1, 1], color="grey", lw=0.8)
ax.set(xlabel="gradient dot product: LDS per test row", ylabel="TRAK: LDS per test row",
       title=f"{N_TEST} test digits, {N_SUBSETS} refits on half the rows")
fig.tight_layout()
plt.show()
