"""Plots of data values and removal curves (needs the ``plot`` extra: matplotlib).

matplotlib is imported inside the functions, so ``import skdvl`` never imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_removal_curves", "plot_values"]


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "skdvl.plotting needs matplotlib: pip install 'skdvl[plot]'."
        ) from exc
    return plt


def _values_and_stderr(values: Any, stderr: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """Accept a fitted valuer, a ValuationResult or arrays."""
    if hasattr(values, "values_"):  # a fitted valuer
        stderr = getattr(values, "stderr_", None) if stderr is None else stderr
        values = values.values_
    elif hasattr(values, "variances") and hasattr(values, "stderr"):  # ValuationResult
        stderr = values.stderr if stderr is None else stderr
        values = values.values
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    se = None if stderr is None else np.asarray(stderr, dtype=np.float64).reshape(-1)
    return v, se


def plot_values(
    values: Any,
    stderr: ArrayLike | None = None,
    *,
    ax: Axes | None = None,
    sort: bool = True,
    highlight: ArrayLike | None = None,
    title: str | None = None,
) -> Axes:
    """Plot data values with one-standard-error bars.

    Parameters
    ----------
    values : fitted valuer, ValuationResult or array-like of shape (n,)
        What to plot; a valuer or result brings its own standard errors.
    stderr : array-like of shape (n,), default=None
        Standard errors, if ``values`` is an array. Infinite ones are not drawn.
    ax : matplotlib Axes, default=None
        Where to draw; a new figure if None.
    sort : bool, default=True
        Plot rows in increasing order of value.
    highlight : array-like of bool of shape (n,), default=None
        Rows to mark in red (e.g. known noisy rows).
    title : str, default=None

    Returns
    -------
    ax : matplotlib Axes

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from skdvl.plotting import plot_values
    >>> ax = plot_values([0.3, 0.1, 0.2], stderr=[0.01, 0.02, 0.01])
    >>> ax.get_xlabel()
    'rows, by increasing value'
    """
    plt = _pyplot()
    v, se = _values_and_stderr(values, stderr)
    order = np.argsort(np.where(np.isnan(v), np.inf, v), kind="stable") if sort else (
        np.arange(v.shape[0])
    )
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    x = np.arange(v.shape[0])
    if se is not None:
        err = np.where(np.isfinite(se[order]), se[order], np.nan)
        ax.fill_between(x, v[order] - err, v[order] + err, alpha=0.3, label="± 1 stderr")
    ax.plot(x, v[order], lw=1, label="value")
    if highlight is not None:
        mask = np.asarray(highlight, dtype=bool).reshape(-1)[order]
        ax.scatter(x[mask], v[order][mask], s=8, c="tab:red", zorder=3, label="highlighted")
    ax.set_xlabel("rows, by increasing value" if sort else "row")
    ax.set_ylabel("value")
    if title:
        ax.set_title(title)
    ax.legend(loc="best", fontsize="small")
    return ax


def plot_removal_curves(
    curve: Mapping[str, Any], *, ax: Axes | None = None, label: str | None = None,
    title: str | None = None,
    ylabel: str = "test score",
) -> Axes:
    """Plot a curve from :func:`skdvl.evaluation.removal_curve`.

    Lowest-first and highest-first removal are lines; random removal is its mean
    over repeats with a one-standard-deviation band.

    Parameters
    ----------
    curve : Bunch
        The result of :func:`~skdvl.evaluation.removal_curve`.
    ax : matplotlib Axes, default=None
        Where to draw; a new figure if None.
    label : str, default=None
        Prefix of the line labels (e.g. the valuation method).
    title : str, default=None
    ylabel : str, default="test score"

    Returns
    -------
    ax : matplotlib Axes

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from sklearn.utils import Bunch
    >>> from skdvl.plotting import plot_removal_curves
    >>> curve = Bunch(fractions=np.array([0.0, 0.1]), lowest=np.array([0.8, 0.9]),
    ...               random=np.array([[0.8, 0.79], [0.8, 0.81]]))
    >>> len(plot_removal_curves(curve, label="oob").get_lines())
    2
    """
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    x = 100 * np.asarray(curve["fractions"])
    prefix = f"{label}: " if label else ""
    styles = {"lowest": "-o", "highest": "-s"}
    for key, style in styles.items():
        if key in curve:
            ax.plot(x, curve[key], style, ms=3, label=f"{prefix}remove {key} first")
    if "random" in curve:
        rnd = np.asarray(curve["random"])
        mean, std = np.nanmean(rnd, axis=0), np.nanstd(rnd, axis=0)
        ax.plot(x, mean, "--", color="grey", label="remove at random")
        ax.fill_between(x, mean - std, mean + std, color="grey", alpha=0.2)
    ax.set_xlabel("% of training rows removed")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(loc="best", fontsize="small")
    return ax
