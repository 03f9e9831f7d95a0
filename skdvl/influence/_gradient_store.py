"""The gradient store: projected training gradients, chunked by rows, in memory or zarr.

:class:`~skdvl.influence._trak.ProjectedAttribution` projects the per-example gradients
of its training rows once, chunk by chunk, into a :class:`GradientStore`, and every later
query reads the store chunk by chunk. With a path (zarr >= 3), the layout is::

    <store>/               group; attrs["skdvl_gradients"] = the run record
    <store>/features       (n_models, n_train, proj_dim), chunks (1, chunk_size, proj_dim)
    <store>/q              (n_models, n_train) float64: TRAK's -dl/df (-1 for the others)
    <store>/done           (n_models, n_chunks) uint8, one zarr chunk per entry
    <store>/kernel_*       TRAK's kernels, once every chunk is done
    <store>/trained_models   uint8: the state dicts of the models trained for ``n_models``

A chunk's features and ``q`` are written first and its ``done`` entry second, so a fit
interrupted at any point leaves the chunks it finished marked, and the next ``fit`` with
the same parameters and data computes only the others (the chunks are functions of the
seeded projection and the rows alone, so the result is bitwise the same). The run record
holds two parts: ``config`` (the parameters that change the numbers, the projection
seeds, the hash of every model's parameters) is compared on every open; ``data`` (a hash
of the training rows, their number, shape, index and the resolved output function) is
compared when ``fit`` gets data and adopted when a fitted store is reopened without it.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import torch

from ._functional import iter_slices
from ._zarr_store import _import_zarr, record_differences

RECORD_KEY = "skdvl_gradients"
COMPLETE_KEY = "skdvl_gradients_complete"
MODELS_KEY = "trained_models"
_FORMAT = 1
_NUMPY = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}


def _is_gradient_store(path: Path) -> bool:
    try:
        meta = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return False
    attrs = meta.get("attributes", {})
    return isinstance(attrs, dict) and RECORD_KEY in attrs


def check_store_path(store) -> None:
    """Refuse a ``store`` path that is neither new, an empty directory nor a gradient store.

    Raises
    ------
    ValueError
        Naming ``store`` and what is there.
    """
    path = Path(store)
    if path.is_file():
        raise ValueError(f"The 'store' parameter {os.fspath(store)!r} is an existing file; "
                         "pass a new path or a gradient store written by skdvl.")
    if path.is_dir() and any(path.iterdir()) and not _is_gradient_store(path):
        raise ValueError(
            f"The 'store' parameter {os.fspath(store)!r} is a directory that is neither "
            "empty nor a gradient store written by skdvl (zarr); pass a new or empty path."
        )


def read_record(store) -> dict | None:
    """The run record of the gradient store at ``store``, or None when there is none."""
    if store is None or not _is_gradient_store(Path(store)):
        return None
    zarr = _import_zarr()
    group = zarr.open_group(store=os.fspath(store), mode="r")
    record = dict(group.attrs[RECORD_KEY])
    record["complete"] = bool(group.attrs.get(COMPLETE_KEY, False))
    return record


def load_models(store) -> list[dict] | None:
    """The state dicts saved by :func:`save_models` in the gradient store ``store``, or
    None (no store, or no models saved)."""
    if store is None or read_record(store) is None:
        return None
    zarr = _import_zarr()
    group = zarr.open_group(store=os.fspath(store), mode="r")
    if MODELS_KEY not in {name for name, _ in group.members()}:
        return None
    data = np.asarray(group[MODELS_KEY][...]).tobytes()
    return list(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))


def save_models(store, states: list[dict]) -> None:
    """Keep the state dicts of trained models in the store, as the bytes of
    ``torch.save`` in a uint8 array (``torch.load(weights_only=True)`` reads them)."""
    buffer = io.BytesIO()
    torch.save([{k: v.detach().cpu() for k, v in s.items()} for s in states], buffer)
    data = np.frombuffer(buffer.getvalue(), dtype=np.uint8)
    group = _import_zarr().open_group(store=os.fspath(store), mode="a")
    array = group.create_array(MODELS_KEY, shape=data.shape, dtype="uint8", fill_value=0,
                               overwrite=True)
    array[...] = data


class GradientStore:
    """Projected training gradients of ``n_models`` models, chunked by rows.

    Use :meth:`in_memory` or :meth:`open`; both give the same chunks, so results do not
    depend on where the features are kept.

    Attributes
    ----------
    features : torch.Tensor or zarr.Array of shape (n_models, n_rows, proj_dim)
    q : torch.Tensor or zarr.Array of shape (n_models, n_rows)
    bounds : list of slice
        The rows of each chunk.
    record : dict
        ``{"config": ..., "data": ..., "chunk_size": ...}``.
    """

    def __init__(self, features, q, done, record: dict, chunk_size: int, group=None):
        self.features, self.q, self.done = features, q, done
        self.record, self.group = record, group
        self.n_models, self.n_rows, self.proj_dim = (int(s) for s in features.shape)
        self.chunk_size = int(chunk_size)
        self.bounds = list(iter_slices(self.n_rows, self.chunk_size))

    # ------------------------------------------------------------- construction
    @classmethod
    def in_memory(cls, record: dict, shape, dtype: torch.dtype, chunk_size: int):
        """A store held in torch tensors (``fit`` without ``store``)."""
        M, n, k = shape
        features = torch.empty(M, n, k, dtype=dtype)
        n_chunks = len(list(iter_slices(n, chunk_size)))
        return cls(features, torch.zeros(M, n, dtype=torch.float64),
                   np.zeros((M, n_chunks), dtype=np.uint8), record, chunk_size)

    @classmethod
    def open(cls, path, record: dict, shape=None, dtype: torch.dtype | None = None):
        """Open the zarr store at ``path``, or create it when ``record["data"]`` is set.

        ``record["config"]`` must equal the stored one; ``record["data"]`` too, unless it
        is None (reopening a fitted store without the training data: its own data
        record, shape, dtype and chunk size are used).

        Raises
        ------
        ValueError
            When the store holds another run (listing what differs), or is absent or
            unfinished while ``record["data"]`` is None.
        """
        zarr = _import_zarr()
        check_store_path(path)
        stored = read_record(path)
        name = os.fspath(path)
        if stored is None:
            if record["data"] is None:
                raise ValueError(
                    f"The 'store' parameter {name!r} holds no gradient store; call "
                    "fit(X, y) with the training data to create it.")
            return cls._create(zarr, name, record, shape, dtype)
        diffs = record_differences(stored["config"], record["config"])
        if record["data"] is not None:
            diffs += record_differences(stored["data"], record["data"])
        if diffs:
            raise ValueError(
                f"The gradient store {name!r} was made with other parameters, model or data "
                "and cannot be reused; what differs: " + "; ".join(diffs) + ". Pass the "
                "same parameters, another 'store' path, or delete this one to start afresh."
            )
        if record["data"] is None and not stored["complete"]:
            raise ValueError(
                f"The gradient store {name!r} is unfinished (its fit was interrupted); call "
                "fit(X, y) with the training data to finish it.")
        full = {"config": stored["config"], "data": stored["data"],
                "chunk_size": stored["chunk_size"]}
        return cls._from_group(zarr.open_group(store=name, mode="a"), full)

    @classmethod
    def _create(cls, zarr, name, record, shape, dtype):
        group = zarr.open_group(store=name, mode="a")
        # the record first: a fit killed before the arrays exist leaves a store that the
        # next open completes, never a directory that looks foreign
        group.attrs[RECORD_KEY] = {**record, "shape": list(shape),
                                   "dtype": str(np.dtype(_NUMPY[dtype]))}
        return cls._from_group(group, record)

    @classmethod
    def _from_group(cls, group, record):
        """The store on ``group``, creating the arrays that are missing."""
        meta = dict(group.attrs[RECORD_KEY])
        (M, n, k), chunk_size = meta["shape"], int(meta["chunk_size"])
        n_chunks = len(list(iter_slices(n, chunk_size)))
        names = {name for name, _ in group.members()}
        specs = {"features": ((M, n, k), (1, chunk_size, k), meta["dtype"]),
                 "q": ((M, n), (1, chunk_size), "float64"),
                 "done": ((M, n_chunks), (1, 1), "uint8")}
        for key, (shape, chunks, dtype) in specs.items():
            if key not in names:
                group.create_array(key, shape=shape, chunks=chunks, dtype=dtype, fill_value=0)
        return cls(group["features"], group["q"], group["done"], record, chunk_size, group)

    # ------------------------------------------------------------------ chunks
    @property
    def complete(self) -> bool:
        """Whether every chunk and the kernels are written."""
        if self.group is None:
            return bool(np.all(np.asarray(self.done) == 1)) and hasattr(self, "_kernels")
        return bool(self.group.attrs.get(COMPLETE_KEY, False))

    def pending(self) -> list[tuple[int, int]]:
        """``(model, chunk)`` pairs not yet written, model by model."""
        marks = np.asarray(self.done[...])
        return [(int(m), int(c)) for m, c in zip(*np.nonzero(marks == 0))]

    def write(self, m: int, c: int, features: torch.Tensor, q: torch.Tensor) -> None:
        """Write chunk ``c`` of model ``m``, then mark it done."""
        sl = self.bounds[c]
        if self.group is None:
            self.features[m, sl] = features.to(self.features.device)
            self.q[m, sl] = q.to(torch.float64).cpu()
        else:
            self.features[m, sl.start:sl.stop] = features.detach().cpu().numpy()
            self.q[m, sl.start:sl.stop] = q.detach().to(torch.float64).cpu().numpy()
        self.done[m, c] = 1

    def chunk(self, m: int, c: int, device=None) -> torch.Tensor:
        """The features of chunk ``c`` of model ``m`` (storage dtype)."""
        sl = self.bounds[c]
        if self.group is None:
            return self.features[m, sl].to(device) if device is not None else self.features[m, sl]
        return torch.from_numpy(np.asarray(self.features[m, sl.start:sl.stop])).to(device)

    def chunks(self, m: int, device=None):
        """``(features, q)`` of model ``m``, chunk by chunk."""
        for c in range(len(self.bounds)):
            yield self.chunk(m, c, device), self.q_of(m)[self.bounds[c]]

    def q_of(self, m: int) -> torch.Tensor:
        """``q`` of model ``m`` (all rows, float64)."""
        if self.group is None:
            return self.q[m]
        return torch.from_numpy(np.asarray(self.q[m]))

    # ----------------------------------------------------------------- kernels
    def save_kernels(self, states: list[dict]) -> None:
        """Keep TRAK's kernels (see ``ProjectedKernel.state``) and mark the store complete."""
        self._kernels = states
        if self.group is None:
            return
        for key in ("inverse", "eigenvalues", "gcv"):
            if states and states[0][key] is not None:
                data = np.stack([s[key] for s in states])
                arr = self.group.create_array(f"kernel_{key}", shape=data.shape,
                                              dtype="float64", fill_value=0, overwrite=True)
                arr[...] = data
        self.group.attrs["skdvl_kernels"] = [
            {"rows": bool(s["rows"]), "regularization": float(s["regularization"])}
            for s in states]
        self.group.attrs[COMPLETE_KEY] = True

    def load_kernels(self) -> list[dict]:
        """The kernel states saved by :meth:`save_kernels`."""
        if self.group is None:
            return self._kernels
        scalars = self.group.attrs.get("skdvl_kernels", [])
        names = {name for name, _ in self.group.members()}
        states = []
        for m, s in enumerate(scalars):
            state = dict(s)
            for key in ("inverse", "eigenvalues", "gcv"):
                state[key] = (np.asarray(self.group[f"kernel_{key}"][m])
                              if f"kernel_{key}" in names else None)
            states.append(state)
        return states
