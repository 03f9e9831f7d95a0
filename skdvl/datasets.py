"""Helpers to make benchmark data: label noise on scikit-learn's bundled datasets."""

from __future__ import annotations

from numbers import Real

import numpy as np
from numpy.typing import ArrayLike
from sklearn.utils import check_random_state

from skdvl._sklearn_compat import Interval, validate_params

__all__ = ["flip_labels"]


@validate_params(
    {"y": ["array-like"], "fraction": [Interval(Real, 0, 1, closed="both")],
     "random_state": ["random_state"]},
    prefer_skip_nested_validation=True,
)
def flip_labels(
    y: ArrayLike, fraction: float = 0.1, *,
    random_state: int | np.random.RandomState | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Replace the labels of a random ``fraction`` of rows by another class.

    Exactly ``round(fraction * n)`` rows are chosen without replacement; each gets a
    label drawn uniformly from the *other* classes present in ``y``. This is the
    noisy-label setting of Ghorbani & Zou (2019) and Kwon & Zou (2023).

    Parameters
    ----------
    y : array-like of shape (n,)
        Class labels (at least two classes).
    fraction : float in [0, 1], default=0.1
        Share of rows to flip.
    random_state : int, RandomState instance or None, default=None
        Seeds the choice of rows and of their new labels.

    Returns
    -------
    y_noisy : ndarray of shape (n,)
        The labels, flipped rows changed.
    flipped : ndarray of bool of shape (n,)
        Which rows were flipped.

    Examples
    --------
    >>> from skdvl.datasets import flip_labels
    >>> y_noisy, flipped = flip_labels([0, 1, 0, 1, 0, 1, 0, 1, 0, 1], 0.2, random_state=0)
    >>> int(flipped.sum())
    2
    >>> bool(((y_noisy != [0, 1] * 5) == flipped).all())
    True
    """
    y = np.asarray(y).reshape(-1)
    classes = np.unique(y)
    if classes.shape[0] < 2:
        raise ValueError(f"y must have at least two classes to flip. Got {classes.tolist()}.")
    rng = check_random_state(random_state)
    n = y.shape[0]
    rows = rng.choice(n, size=round(fraction * n), replace=False)
    # shift each label's class position by 1..K-1: a uniform draw among the others
    pos = np.searchsorted(classes, y[rows])
    shift = rng.randint(1, classes.shape[0], size=rows.shape[0])
    y_noisy = y.copy()
    y_noisy[rows] = classes[(pos + shift) % classes.shape[0]]
    flipped = np.zeros(n, dtype=bool)
    flipped[rows] = True
    return y_noisy, flipped
