"""Turn numpy, pandas, torch tensors or a torch Dataset into tensors."""

from __future__ import annotations

import numpy as np
import torch


def _as_tensor(a, name: str) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.detach()
    if hasattr(a, "to_numpy"):  # pandas
        a = a.to_numpy()
    if hasattr(a, "toarray"):  # scipy sparse
        a = a.toarray()
    arr = np.asarray(a)
    if arr.dtype == object:
        raise ValueError(f"{name} must be numeric; got an array of dtype object.")
    arr = np.ascontiguousarray(arr)
    return torch.from_numpy(arr if arr.flags.writeable else arr.copy())


def _unpack_dataset(ds) -> tuple[torch.Tensor, torch.Tensor]:
    items = [ds[i] for i in range(len(ds))]
    if not items or not isinstance(items[0], (tuple, list)) or len(items[0]) != 2:
        raise ValueError("A torch Dataset passed as X must yield (x, y) pairs.")
    xs, ys = zip(*items)
    return torch.stack([_as_tensor(x, "X") for x in xs]), torch.stack(
        [_as_tensor(t, "y") for t in ys]
    )


def to_tensors(X, y, dtype: torch.dtype, device, name: str = "X"):
    """``(X, y)`` as tensors on ``device``; floating data cast to ``dtype``.

    Integer inputs are kept as int64 (e.g. embedding indices). ``X`` may be a
    ``torch.utils.data.Dataset`` of ``(x, y)`` pairs, in which case ``y`` must be None.
    """
    if isinstance(X, torch.utils.data.Dataset) and not isinstance(X, torch.Tensor):
        if y is not None:
            raise ValueError(f"y must be None when {name} is a torch Dataset.")
        Xt, yt = _unpack_dataset(X)
    else:
        if y is None:
            raise ValueError(f"y is required with {name} (the loss needs targets).")
        Xt, yt = _as_tensor(X, name), _as_tensor(y, "y")
    if len(Xt) != len(yt):
        raise ValueError(
            f"{name} and its targets must have the same number of rows; got "
            f"{len(Xt)} and {len(yt)}."
        )
    Xt = Xt.to(device=device, dtype=dtype if Xt.is_floating_point() else torch.long)
    yt = yt.to(device=device, dtype=dtype if yt.is_floating_point() else torch.long)
    return Xt, yt
