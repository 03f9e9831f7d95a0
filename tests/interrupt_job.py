"""A valuation run that a test interrupts with SIGINT (see test_interruption.py).

Usage: python interrupt_job.py MODE N_JOBS OUT.npz, MODE one of "mc" (permutation
Shapley of a slow custom game), "msr" (Banzhaf by MSR), "cv" (Shapley of a
KNN classifier by cross-valuation), "loo", "exact". Prints "fitting" when the fit
starts and "tick" once some evaluations are done (from the process that did them),
then writes what the interrupted fit returned to OUT.npz.
"""

import sys
import time
import warnings

import numpy as np
from sklearn.datasets import make_classification
from sklearn.neighbors import KNeighborsClassifier

from skdvl import BanzhafValuer, LOOValuer, ShapleyValuer
from skdvl.games import AirportGame

N_PLAYERS = 12


class SlowGame:
    """An airport game that takes a few milliseconds per coalition."""

    def __init__(self, n_players: int = N_PLAYERS, delay: float = 0.003) -> None:
        self.game = AirportGame(np.arange(1.0, n_players + 1))
        self.n_players = n_players
        self.delay = delay
        self.calls = 0

    def __call__(self, subset):
        time.sleep(self.delay)
        self.calls += 1
        if self.calls == 30:  # in whichever process evaluates
            print("tick", flush=True)
        return self.game(subset)


class SlowKNN(KNeighborsClassifier):
    """A 1-NN classifier whose fit takes a few milliseconds."""

    def __init__(self, n_neighbors=1):
        super().__init__(n_neighbors=n_neighbors)

    calls = 0

    def fit(self, X, y):
        time.sleep(0.002)
        type(self).calls += 1
        if type(self).calls == 60:
            print("tick", flush=True)
        return super().fit(X, y)


def data():
    return make_classification(n_samples=30, n_features=4, random_state=0)


def valuer(mode: str, n_jobs: int, **budget):
    budget = budget or {"max_updates": 10**6}
    if mode == "mc":
        return ShapleyValuer(utility=SlowGame(), sampler="permutation", n_jobs=n_jobs,
                             random_state=0, **budget)
    if mode == "msr":
        return BanzhafValuer(utility=SlowGame(), sampler="msr", n_jobs=n_jobs, random_state=0,
                             **budget)
    if mode == "cv":
        return ShapleyValuer(SlowKNN(), cv=3, sampler="permutation", n_jobs=n_jobs,
                             random_state=0, **budget)
    if mode == "loo":
        return LOOValuer(utility=SlowGame(400, delay=0.02), n_jobs=n_jobs)
    return ShapleyValuer(utility=SlowGame(16, delay=0.001), sampler="exact", n_jobs=n_jobs)



def main() -> None:
    mode, n_jobs, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    v = valuer(mode, n_jobs)
    print("fitting", flush=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        v.fit(*data()) if mode == "cv" else v.fit()
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    samples = [getattr(s, "n_samples", getattr(s, "done", 0)) if s is not None else -1
               for s in v._states_]
    np.savez(out, values=v.values_, counts=v.counts_, samples=np.array(samples),
             converged=v.converged_, messages=np.array(messages, dtype=str))


if __name__ == "__main__":
    main()
