"""Helpers shared by the skdvl and pyDVL halves of the benchmarks.

Only numpy, scikit-learn and (for ``TreeRSS``) psutil: this module is imported from
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
