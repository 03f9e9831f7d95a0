"""Groups of rows as players: value data sources (a hospital, an annotator, a day of logs).

Every utility-based valuer takes ``fit(X, y, *, groups=...)``: one label per row,
and the players of the game are the distinct labels. A coalition of groups is
fitted on all the rows of its groups, so the cost grows with the number of
groups, not of rows, and ``values_`` is a Series indexed by the group labels.
The functions here make the labels: by a column of ``X``, by class label, or by
clustering the rows.
"""

from __future__ import annotations

from numbers import Number
from typing import Any

import numpy as np
import pandas as pd

from skdvl.utility._base import WrapperCopyMixin

__all__ = ["GroupedUtility", "check_groups", "groups_by_column", "groups_by_label",
           "groups_by_clusters"]


def check_groups(groups: Any, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct labels of ``groups`` and each row's position among them.

    Labels are kept as given, in the order of their first row (never sorted, so
    any mix of label types works), and when every row is its own group, in row
    order, group ``j`` is row ``j``. Labels of one kind come back in numpy's dtype
    for it (ints stay ints, strings become a string array); labels of mixed kinds
    (``1`` and ``"1"``) come back as an object array of the original values, so
    that different labels stay different groups.

    Parameters
    ----------
    groups : array-like of shape (n_samples,)
        One hashable label per row (numbers, strings, pandas categories...).
    n_samples : int
        Rows of ``X``.

    Returns
    -------
    labels : ndarray of shape (n_groups,)
        The distinct labels.
    codes : ndarray of int of shape (n_samples,)
        ``labels[codes[i]]`` is row ``i``'s label.

    Raises
    ------
    ValueError
        When ``groups`` does not have one label per row, holds a missing label
        (NaN or None), mixes booleans with numbers (``True == 1``, so they would
        merge), or has fewer than two distinct labels.

    Examples
    --------
    >>> from skdvl.groups import check_groups
    >>> labels, codes = check_groups([1, "1", 2, 2], 4)
    >>> labels.tolist(), codes.tolist()
    ([1, '1', 2], [0, 1, 2, 2])
    """
    if hasattr(groups, "shape") and len(groups.shape) != 1:
        raise ValueError(f"groups must be 1-D, one label per row; got an array of shape "
                         f"{groups.shape}.")
    try:
        size = len(groups)
    except TypeError as exc:
        raise ValueError(f"groups must be an array-like of one label per row; got "
                         f"{type(groups).__name__}.") from exc
    if size != n_samples:
        raise ValueError(f"groups must have one label per row of X ({n_samples}); got "
                         f"{size} labels.")
    values = groups.to_numpy() if isinstance(groups, (pd.Series, pd.Index)) else groups
    if isinstance(values, np.ndarray) and values.dtype != object:  # one type: keep its dtype
        codes, labels = pd.factorize(values.reshape(-1), sort=False)
    else:
        # one object per row: np.asarray would coerce [1, "1"] or split tuple labels
        codes, labels = _factorize_objects(np.fromiter(values, dtype=object, count=size))
    if (codes < 0).any():
        first = int(np.flatnonzero(codes < 0)[0])
        raise ValueError(f"groups must not hold missing labels (NaN or None); row {first} "
                         "has one.")
    if labels.shape[0] < 2:
        raise ValueError(
            f"groups must have at least two distinct labels to value; got "
            f"{labels.shape[0]} ({list(labels[:1])}).")
    return np.asarray(labels), codes.astype(np.intp)


def _kind(label: Any) -> str:
    """"missing", "bool", "number", "str", "bytes" or the type's name, for mixing rules."""
    missing = pd.isna(label)
    if isinstance(missing, (bool, np.bool_)) and missing:
        return "missing"  # refused by check_groups
    if isinstance(label, (bool, np.bool_)):
        return "bool"
    if isinstance(label, (Number, np.number)):
        return "number"
    if isinstance(label, str):
        return "str"
    if isinstance(label, bytes):
        return "bytes"
    return type(label).__name__


def _factorize_objects(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``pd.factorize`` of an object array of labels, in first-row order.

    Labels of one kind come back in numpy's dtype for it (ints stay ints);
    labels of mixed kinds stay an object array of the values as given, since
    numpy would turn ``[1, "1"]`` into ``["1", "1"]``: two groups, one label.
    """
    kinds = {_kind(v) for v in raw} - {"missing"}
    if {"bool", "number"} <= kinds:
        first = next(v for v in raw if _kind(v) == "bool")
        raise ValueError(
            f"groups must not mix booleans with numbers (e.g. {first!r}): True == 1 and "
            "False == 0 in Python, so such labels would merge two groups. Use one type "
            "of label.")
    codes, labels = pd.factorize(raw, sort=False)
    labels = np.asarray(labels)
    if len(kinds) != 1 or not kinds <= {"bool", "number", "str", "bytes", "datetime64"}:
        return codes, labels
    try:
        typed = np.asarray(list(labels))
    except (TypeError, ValueError):
        return codes, labels
    if typed.dtype.kind in "biufUSM" and typed.shape == labels.shape:
        return codes, typed
    return codes, labels


class GroupedUtility(WrapperCopyMixin):
    """A utility of rows seen as a utility of groups of rows.

    Player ``j`` is group ``j``; a coalition of groups is worth the inner
    utility of the union of their rows. Batched when the inner utility is
    (``evaluate(masks)`` maps each mask of groups to the mask of its rows), and
    the inner utility's counts and reports are its own.

    Parameters
    ----------
    utility : Utility
        A utility over ``len(codes)`` rows (:class:`~skdvl.ModelUtility`, or any
        object with ``n_players`` and ``__call__``).
    codes : array-like of int of shape (n_rows,)
        Row ``i`` belongs to group ``codes[i]``; groups are ``0 .. n_groups - 1``,
        each with at least one row.

    Examples
    --------
    >>> import numpy as np
    >>> from skdvl.groups import GroupedUtility
    >>> class Size:
    ...     n_players = 5
    ...     def __call__(self, rows):
    ...         return float(len(rows))
    >>> u = GroupedUtility(Size(), [0, 0, 1, 2, 2])
    >>> u.n_players, u([0]), u([0, 2])
    (3, 2.0, 4.0)
    """

    def __init__(self, utility: Any, codes: Any) -> None:
        codes = np.asarray(codes, dtype=np.intp).reshape(-1)
        if codes.shape[0] != int(utility.n_players):
            raise ValueError(f"codes must have one group per player of the utility "
                             f"({utility.n_players}); got {codes.shape[0]}.")
        n_groups = int(codes.max()) + 1 if codes.size else 0
        if codes.size == 0 or codes.min() < 0 or np.bincount(codes).min() == 0:
            raise ValueError("codes must number the groups 0 .. n_groups - 1, each with a row.")
        self.utility = utility
        self.codes = codes
        self.n_players = n_groups
        order = np.argsort(codes, kind="stable")
        self._members = np.split(order, np.cumsum(np.bincount(codes))[:-1])

    def __repr__(self) -> str:
        return f"GroupedUtility({self.utility!r}, n_groups={self.n_players})"

    def __call__(self, subset: Any) -> float:
        subset = np.asarray(subset, dtype=np.intp).reshape(-1)
        if subset.size == 0:
            return float(self.utility(np.empty(0, dtype=np.intp)))
        return float(self.utility(np.sort(np.concatenate([self._members[j] for j in subset]))))

    def rows(self, masks: Any) -> np.ndarray:
        """The row masks ``(m, n_rows)`` of the group masks ``(m, n_groups)``."""
        return np.asarray(masks, dtype=bool)[:, self.codes]

    @property
    def evaluate(self) -> Any:
        """``evaluate(masks)`` over groups when the inner utility is batched, else None."""
        inner = getattr(self.utility, "evaluate", None)
        if not callable(inner):
            return None
        return lambda masks: inner(self.rows(masks))

    # what the engine reads of a utility: the inner utility's
    @property
    def n_evaluations(self) -> int:
        return int(getattr(self.utility, "n_evaluations", 0))

    @property
    def report(self) -> Any:
        return getattr(self.utility, "report", None)

    @property
    def prefix_step(self) -> int:
        return int(getattr(self.utility, "prefix_step", 64))

    @property
    def fit_path(self) -> str:
        return str(getattr(self.utility, "fit_path", "custom utility"))


def groups_by_column(X: Any, column: Any) -> np.ndarray:
    """Each row's value in one column of ``X``: a group per distinct value.

    Parameters
    ----------
    X : DataFrame or array-like of shape (n_samples, n_features)
    column : str or int
        A column name of a DataFrame, or a position.

    Returns
    -------
    groups : ndarray of shape (n_samples,)

    Examples
    --------
    >>> import pandas as pd
    >>> from skdvl.groups import groups_by_column
    >>> X = pd.DataFrame({"site": ["a", "b", "a"], "x": [1.0, 2.0, 3.0]})
    >>> groups_by_column(X, "site")
    array(['a', 'b', 'a'], dtype=object)
    """
    if hasattr(X, "columns"):
        if column not in X.columns:
            if isinstance(column, (int, np.integer)) and 0 <= column < X.shape[1]:
                return X.iloc[:, int(column)].to_numpy()
            raise ValueError(f"column must be a column of X ({list(X.columns)[:8]}); got "
                             f"{column!r}.")
        return X[column].to_numpy()
    X = np.asarray(X)
    if X.ndim != 2 or not isinstance(column, (int, np.integer)) or not (
            -X.shape[1] <= column < X.shape[1]):
        raise ValueError(f"column must be a column position of the 2-D X (0 .. "
                         f"{X.shape[1] - 1 if X.ndim == 2 else '?'}); got {column!r}.")
    return X[:, int(column)]


def groups_by_label(y: Any) -> np.ndarray:
    """Each row's class label: one group per class (the value of each class's data).

    Examples
    --------
    >>> from skdvl.groups import groups_by_label
    >>> groups_by_label([1, 0, 1])
    array([1, 0, 1])
    """
    return np.asarray(y).reshape(-1).copy()


def groups_by_clusters(X: Any, n_groups: int, *, random_state: Any = None) -> np.ndarray:
    """Cluster the rows into ``n_groups`` groups with k-means (on the features as given).

    Standardise ``X`` first when its columns have different scales. Groups of
    similar rows are a cheap approximation: valuing 50 clusters costs the fits
    of a 50-player game whatever the number of rows.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    n_groups : int
        Clusters, ``2 <= n_groups <= n_samples``.
    random_state : int, RandomState instance or None, default=None
        Seeds k-means.

    Returns
    -------
    groups : ndarray of int of shape (n_samples,)
        The cluster of each row, 0 .. n_groups - 1.

    Examples
    --------
    >>> import numpy as np
    >>> from skdvl.groups import groups_by_clusters
    >>> X = np.array([[0.0], [0.1], [5.0], [5.1]])
    >>> g = groups_by_clusters(X, 2, random_state=0)
    >>> bool(g[0] == g[1] and g[2] == g[3] and g[0] != g[2])
    True
    """
    from sklearn.cluster import KMeans

    n = np.shape(X)[0]
    if isinstance(n_groups, bool) or not isinstance(n_groups, (int, np.integer)) or not (
            2 <= n_groups <= n):
        raise ValueError(f"n_groups must be an integer in [2, {n}] (the rows of X); got "
                         f"{n_groups!r}.")
    km = KMeans(n_clusters=int(n_groups), n_init=10, random_state=random_state)
    return km.fit_predict(X).astype(np.intp)
