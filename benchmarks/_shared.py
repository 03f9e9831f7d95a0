"""Helpers shared by the skdvl and pyDVL halves of the benchmarks.

Only numpy, scikit-learn, psutil (``TreeRSS``) and torch (imported inside
``warm_up_torch_func``): this module is imported from
both virtualenvs, ours and ``benchmarks/.pydvl-venv``.
"""

from __future__ import annotations

import hashlib
import threading

import numpy as np


def ensemble(kind: str, n_estimators: int, seed: int):
    """The bagging ensemble both halves of the Data-OOB benchmark value."""
    from sklearn.ensemble import BaggingClassifier, RandomForestClassifier
    from sklearn.tree import DecisionTreeClassifier

    if kind == "forest":
        return RandomForestClassifier(n_estimators=n_estimators, random_state=seed)
    return BaggingClassifier(DecisionTreeClassifier(), n_estimators=n_estimators,
                             random_state=seed)


def sha(arrays) -> str:
    """Short hash of a sequence of arrays (to check both halves saw the same thing)."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


class TreeRSS:
    """Samples the summed RSS of this process and its descendants every 50 ms."""

    def __init__(self):
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def warm_up_torch_func() -> float:
    """Pay torch.func's one-time costs before a timed region; return their seconds.

    The first ``torch.func.grad`` imports ``torch._dynamo`` and the first vmapped
    cross-entropy imports sympy: about 1 s that any library built on torch.func pays once
    per process, whatever the method. Both halves of the influence benchmark call this
    before starting their clocks, so that the timings compare the methods.
    """
    import time

    import torch
    from torch.func import grad, vmap

    t0 = time.perf_counter()

    def loss(w, x, t):
        return torch.nn.functional.cross_entropy((x @ w)[None], t[None])

    vmap(grad(loss), in_dims=(None, 0, 0))(torch.zeros(3, 4), torch.zeros(2, 3),
                                           torch.zeros(2, dtype=torch.long))
    return time.perf_counter() - t0
