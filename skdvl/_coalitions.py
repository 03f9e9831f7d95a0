"""Coalitions as boolean masks and bit codes, uniform coalitions, binomial weights, checks.

A leaf: it imports nothing of skdvl. The samplers, the engine, the class-wise and
learned utilities and the least-core valuer share these; each is a small vectorised
function on arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import gammaln
from scipy.stats import binom

__all__ = ["check_int", "log_binom", "banzhaf_weight", "uniform_coalitions",
           "masks_from_codes"]


def check_int(value: Any, name: str, low: int, high: int | None = None) -> None:
    """Refuse a non-integer (or bool) ``value`` outside ``[low, high]``, naming it."""
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool) and (
        value >= low and (high is None or value <= high))
    if not ok:
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        extra = " (coalitions are coded in 64-bit integers)" if high == 62 else ""
        raise ValueError(f"{name} must be an integer {bounds}{extra}. Got {value!r} instead.")


def log_binom(n: int, k: np.ndarray) -> np.ndarray:
    """log C(n, k), vectorised over ``k``."""
    k = np.asarray(k, dtype=np.float64)
    return gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)


def banzhaf_weight(mass: np.ndarray, n: int) -> float | None:
    """``w`` if ``mass`` is the weighted Banzhaf mass binomial(n - 1, w), else None."""
    if n == 1:
        return 0.5
    w = round(float(np.dot(np.arange(n), mass) / (n - 1)), 12)  # 0.5 stays 0.5 exactly
    if not 0 < w < 1:
        return None
    ok = np.allclose(mass, binom.pmf(np.arange(n), n - 1, w), rtol=1e-9, atol=1e-12)
    return w if ok else None


def uniform_coalitions(rng: np.random.Generator, sizes: np.ndarray, n: int) -> np.ndarray:
    """Boolean (len(sizes), n): row ``k`` uniform among the coalitions of size ``sizes[k]``."""
    order = np.argsort(rng.random((sizes.shape[0], n)), axis=1)
    masks = np.zeros((sizes.shape[0], n), dtype=bool)
    np.put_along_axis(masks, order, np.arange(n)[None, :] < sizes[:, None], axis=1)
    return masks


def masks_from_codes(codes: np.ndarray, n: int) -> np.ndarray:
    """Boolean (len(codes), n) coalitions whose bit ``i`` of the code is player ``i``."""
    return ((codes[:, None] >> np.arange(n, dtype=np.int64)) & 1).astype(bool)
