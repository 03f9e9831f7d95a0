"""Turn numpy, pandas, torch tensors or a torch Dataset into checked tensors.

Every check names the argument (``X``, ``y``, ``X_test``, ...) and what it received, and
runs before torch sees the data.
"""

from __future__ import annotations

import numpy as np
import torch


def is_pandas(a) -> bool:
    """Whether ``a`` is a pandas DataFrame or Series (duck-typed: no pandas import)."""
    return hasattr(a, "iloc") and hasattr(a, "index")


def _as_tensor(a, name: str) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        t = a.detach()
        if t.is_complex():
            raise ValueError(f"{name} must be real-valued; got a tensor of dtype {t.dtype}.")
        return t
    if is_pandas(a):
        a = a.to_numpy()
    if hasattr(a, "toarray"):  # scipy sparse
        a = a.toarray()
    arr = np.asarray(a)
    if arr.dtype.kind not in "biuf":
        raise ValueError(
            f"{name} must be numeric (bool, integer or float); got an array of dtype "
            f"{arr.dtype} (e.g. {arr.ravel()[:1].tolist()}). Encode labels as integers "
            "first (e.g. sklearn.preprocessing.LabelEncoder)."
        )
    arr = np.ascontiguousarray(arr)
    return torch.from_numpy(arr if arr.flags.writeable else arr.copy())


def _unpack_dataset(ds, name: str, y_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    items = [ds[i] for i in range(len(ds))]
    if not items:
        raise ValueError(f"{name} is an empty torch Dataset; need at least one row.")
    if not isinstance(items[0], (tuple, list)) or len(items[0]) != 2:
        raise ValueError(f"A torch Dataset passed as {name} must yield (x, y) pairs.")
    xs, ys = zip(*items)
    return torch.stack([_as_tensor(x, name) for x in xs]), torch.stack(
        [_as_tensor(t, y_name) for t in ys]
    )


def _check_finite(t: torch.Tensor, name: str) -> None:
    if not t.is_floating_point():
        return
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        row = int(torch.nonzero(bad.reshape(len(t), -1).any(1))[0])
        raise ValueError(
            f"{name} contains NaN or infinity ({int(bad.sum())} entries; the first in row "
            f"{row}). Impute or drop those rows first."
        )


def _check_not_one_row(Xt: torch.Tensor, row_shape, name: str) -> None:
    """Refuse a 1-D ``X`` when the model was fitted on rows of shape ``(d,)``.

    A 1-D array is a column of rows, as in scikit-learn, which refuses it ("Expected
    2D array, got 1D array instead"): ``X[0]`` of ``d`` features would read as ``d``
    rows of one value each.
    """
    if row_shape is None or Xt.dim() != 1 or len(row_shape) != 1:
        return
    d = row_shape[0]
    one_row = f"; one row of {d} features" if len(Xt) == d else ""
    raise ValueError(
        f"{name} is 1-D (shape {tuple(Xt.shape)}{one_row}), but the scorer was fitted on "
        f"rows of shape {tuple(row_shape)}: a 1-D array reads as rows of one value each. "
        f"Pass a 2-D array, e.g. X[[0]] or X[None, :] (X.iloc[[0]] for a DataFrame) for "
        "one row, and its target as a 1-D array, e.g. y[[0]]."
    )


def to_tensors(X, y, dtype: torch.dtype, device, name: str = "X", y_name: str = "y",
               row_shape=None):
    """``(X, y)`` as checked tensors on ``device``; floating data cast to ``dtype``.

    Integer inputs are kept as int64 (e.g. embedding indices). ``X`` may be a
    ``torch.utils.data.Dataset`` of ``(x, y)`` pairs, in which case ``y`` must be None.
    ``row_shape`` is the shape of the rows the scorer was fitted on, if any: a 1-D
    ``X`` is then refused when those rows are 1-D (``X[0]`` is not one row).

    Raises
    ------
    ValueError
        Naming ``name`` or ``y_name``: non-numeric data, zero rows, a 1-D ``X`` for a
        model of rows of features, a different number of rows in ``X`` and ``y``, NaN
        or infinity.
    """
    if isinstance(X, torch.utils.data.Dataset) and not isinstance(X, torch.Tensor):
        if y is not None:
            raise ValueError(f"{y_name} must be None when {name} is a torch Dataset.")
        Xt, yt = _unpack_dataset(X, name, y_name)
    else:
        if y is None:
            raise ValueError(f"{y_name} is required with {name} (the loss needs targets).")
        Xt, yt = _as_tensor(X, name), _as_tensor(y, y_name)
    if Xt.dim() == 0 or len(Xt) == 0:
        raise ValueError(f"{name} has 0 rows (shape {tuple(Xt.shape)}); need at least one.")
    _check_not_one_row(Xt, row_shape, name)
    if yt.dim() == 0 or len(Xt) != len(yt):
        raise ValueError(
            f"{name} and its targets {y_name} must have the same number of rows; got "
            f"{len(Xt)} and {len(yt) if yt.dim() else 'a scalar'}."
        )
    _check_finite(Xt, name)
    _check_finite(yt, y_name)
    Xt = Xt.to(device=device, dtype=dtype if Xt.is_floating_point() else torch.long)
    yt = yt.to(device=device, dtype=dtype if yt.is_floating_point() else torch.long)
    return Xt, yt
