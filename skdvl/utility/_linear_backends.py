"""The array back ends of the batched linear solvers: numpy, or torch on one device.

:mod:`skdvl.utility._linear_solvers` writes its binary logistic solver once,
against the operations of a back end: :data:`NUMPY` (the default), or a
:class:`_TorchOps` made by :func:`backend` for ``device=`` (float64 tensors on
that device, a GPU included). torch is imported only when such a back end is made.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

__all__ = ["NUMPY", "backend"]


class _NumpyOps:
    """The array operations of the binomial solver, in numpy (the default back end)."""

    name = "numpy"
    float_ = np.float64
    int_ = np.intp
    bool_ = np.bool_

    def asarray(self, x, dtype=None):
        return np.asarray(x, dtype=dtype)

    def to_numpy(self, x):
        return np.asarray(x)

    def zeros(self, shape, dtype=np.float64):
        return np.zeros(shape, dtype)

    def ones(self, shape):
        return np.ones(shape)

    def full(self, shape, value):
        return np.full(shape, value)

    def arange(self, n):
        return np.arange(n)

    def flatnonzero(self, mask):
        return np.flatnonzero(mask)

    def amax(self, x, axis):
        return x.max(axis=axis)

    def transpose_copy(self, Z):
        return np.ascontiguousarray(np.swapaxes(Z, 1, 2))

    swapaxes = staticmethod(np.swapaxes)
    sqrt = staticmethod(np.sqrt)
    abs = staticmethod(np.abs)
    isfinite = staticmethod(np.isfinite)
    expit = staticmethod(expit)
    einsum = staticmethod(np.einsum)

    def logaddexp0(self, x):
        return np.logaddexp(0.0, x)

    def maximum(self, x, floor):
        return np.maximum(x, floor)

    def clip(self, x, lo, hi):
        return np.clip(x, lo, hi)

    def diagonal(self, H):
        return np.diagonal(H, axis1=1, axis2=2)

    def solve(self, A, b):
        """Batched solves, NaN rows where a matrix is singular."""
        try:
            return np.linalg.solve(A, b)
        except np.linalg.LinAlgError:
            x = np.full(b.shape, np.nan)
            for j in range(A.shape[0]):
                try:
                    x[j] = np.linalg.solve(A[j], b[j])
                except np.linalg.LinAlgError:
                    pass
            return x


class _TorchOps(_NumpyOps):
    """The same operations on torch tensors of one device (float64 by default).

    The optional back end of the batched fits (``device=``): the solver's
    arithmetic runs where the tensors live, a GPU included.
    """

    name = "torch"

    def __init__(self, device="cpu", dtype="float64"):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.float_ = getattr(torch, dtype)
        self.int_ = torch.int64
        self.bool_ = torch.bool

    def asarray(self, x, dtype=None):
        t = self.torch
        if isinstance(x, t.Tensor):
            return x.to(self.device, dtype=dtype or x.dtype)
        x = np.asarray(x)
        if dtype is None:
            dtype = self.bool_ if x.dtype == bool else (
                self.int_ if x.dtype.kind in "iu" else self.float_)
        return t.as_tensor(x, device=self.device).to(dtype)

    def to_numpy(self, x):
        out = x.detach().cpu().numpy()
        return out.astype(np.float64) if x.is_floating_point() else out

    def zeros(self, shape, dtype=None):
        if dtype is bool or dtype is np.bool_:
            dtype = self.bool_
        elif dtype is np.intp:
            dtype = self.int_
        return self.torch.zeros(shape, dtype=dtype or self.float_, device=self.device)

    def ones(self, shape):
        return self.torch.ones(shape, dtype=self.float_, device=self.device)

    def full(self, shape, value):
        return self.torch.full((shape,) if isinstance(shape, int) else shape, value,
                               dtype=self.float_, device=self.device)

    def arange(self, n):
        return self.torch.arange(n, device=self.device)

    def flatnonzero(self, mask):
        return self.torch.nonzero(mask).reshape(-1)

    def amax(self, x, axis):
        return self.torch.amax(x, dim=axis)

    def transpose_copy(self, Z):
        return self.torch.swapaxes(Z, 1, 2).contiguous()

    def swapaxes(self, x, a, b):
        return self.torch.swapaxes(x, a, b)

    def sqrt(self, x):
        return self.torch.sqrt(x)

    def abs(self, x):
        return self.torch.abs(x)

    def isfinite(self, x):
        return self.torch.isfinite(x)

    def expit(self, x):
        return self.torch.special.expit(x)

    def einsum(self, spec, *xs):
        return self.torch.einsum(spec, *xs)

    def logaddexp0(self, x):
        return self.torch.logaddexp(self.torch.zeros((), dtype=x.dtype, device=x.device), x)

    def maximum(self, x, floor):
        return self.torch.clamp(x, min=floor)

    def clip(self, x, lo, hi):
        return self.torch.clamp(x, min=lo, max=hi)

    def diagonal(self, H):
        return self.torch.diagonal(H, dim1=1, dim2=2)

    def solve(self, A, b):
        x, info = self.torch.linalg.solve_ex(A, b)
        x[info != 0] = float("nan")
        return x


NUMPY = _NumpyOps()


def backend(device):
    """The array operations for ``device``: numpy for None, else torch on that device."""
    return NUMPY if device is None else _TorchOps(device)
