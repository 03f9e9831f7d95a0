"""Resumable, chunk-by-chunk output of influence matrices to zarr (zarr >= 3).

Layout of an output group::

    <out>/                 group; attrs["skdvl_influences"] = the run record
    <out>/influences       (n_test, n_train[, *input_shape]), chunked like the blocks
    <out>/done             (n_test_chunks, n_train_chunks) uint8, one zarr chunk per entry

A block is written first and its ``done`` entry second, so a run killed while writing a
block leaves that entry at 0 and a restart recomputes the block. Each ``done`` entry is
its own zarr chunk: workers that write different blocks never touch the same object.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

RECORD_KEY = "skdvl_influences"
_FORMAT = 1
#: Probe-factor projections must agree within this relative tolerance on resume.
_PROBE_RTOL = 1e-3


def _import_zarr():
    try:
        import zarr
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Writing influences to zarr needs the 'zarr' package (zarr >= 3); install "
            "skdvl[dask]."
        ) from exc
    return zarr


# ------------------------------------------------------------------ fingerprints
def hash_array(a) -> str:
    """Content hash (blake2b, 16 hex digits) of an array-like, with its shape and dtype."""
    if hasattr(a, "detach"):  # torch tensor
        a = a.detach().cpu().numpy()
    if hasattr(a, "to_numpy"):  # pandas
        a = a.to_numpy()
    arr = np.ascontiguousarray(np.asarray(a))
    h = hashlib.blake2b(digest_size=8)
    h.update(f"{arr.shape}|{arr.dtype.str}|".encode())
    h.update(arr.tobytes() if arr.size < 2**20 else memoryview(arr).cast("B"))  # type: ignore[arg-type]
    return h.hexdigest()


def hash_state_dict(module) -> str:
    """Content hash of a torch module's parameters and buffers."""
    h = hashlib.blake2b(digest_size=8)
    for name, value in module.state_dict().items():
        h.update(name.encode())
        h.update(hash_array(value).encode())
    return h.hexdigest()


def probe_signature(factor: np.ndarray, n: int = 4) -> list[float]:
    """``n`` fixed random projections of one influence factor, and its norm.

    Identifies the fitted inverse-curvature operator up to floating-point noise: a refit
    with another seed, another regularisation or another model changes these numbers.
    """
    f = np.asarray(factor, dtype=np.float64).ravel()
    directions = np.random.default_rng(0).standard_normal((n, f.size)) / np.sqrt(f.size)
    return [float(v) for v in directions @ f] + [float(np.linalg.norm(f))]


def _probe_differs(stored: list[float], now: list[float]) -> bool:
    if len(stored) != len(now):
        return True
    scale = max(abs(now[-1]), abs(stored[-1]), 1e-30)
    return any(abs(a - b) > _PROBE_RTOL * scale for a, b in zip(stored, now))


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return repr(value)


def make_record(params: dict, **entries) -> dict:
    """The run record stored with the output: parameters, shapes and data fingerprints."""
    record = {"format": _FORMAT, "params": {k: _jsonable(v) for k, v in params.items()}}
    record.update({k: _jsonable(list(v) if isinstance(v, tuple) else v)
                   for k, v in entries.items()})
    return record


def record_differences(stored: dict, now: dict) -> list[str]:
    """Human-readable list of the entries in which two run records differ."""
    diffs = []
    keys = sorted(set(stored) | set(now))
    for key in keys:
        a, b = stored.get(key), now.get(key)
        if key == "probe":
            if a is None or b is None or _probe_differs(a, b):
                diffs.append("the fitted solver (influence factor of the first test row "
                             "differs: another fit, seed or model)")
        elif key == "params" and isinstance(a, dict) and isinstance(b, dict):
            diffs += [f"{k}: stored {a.get(k)!r}, now {b.get(k)!r}"
                      for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            diffs.append(f"{key}: stored {a!r}, now {b!r}")
    return diffs


# ------------------------------------------------------------------------ store
def _is_our_store(path: Path) -> bool:
    """Whether the directory ``path`` is a zarr group holding an skdvl run record."""
    for name, key in (("zarr.json", "attributes"), (".zattrs", None)):  # zarr v3, v2
        try:
            meta = json.loads((path / name).read_text())
        except (OSError, ValueError):
            continue
        attrs = meta.get(key, {}) if key else meta
        if isinstance(attrs, dict) and RECORD_KEY in attrs:
            return True
    return False


def check_output_path(out) -> None:
    """Refuse an ``out`` path that cannot receive influences, before any work is done.

    A path (str or ``os.PathLike``) must be new under a writable directory, an empty
    directory, or a zarr store that skdvl wrote (which is then resumed). Stores and
    groups passed as objects are checked when opened.

    Raises
    ------
    ValueError
        Naming ``out`` and what is there.
    """
    if not isinstance(out, (str, os.PathLike)):
        return
    path = Path(out)
    if path.is_file():
        raise ValueError(f"The 'out' argument {os.fspath(out)!r} is an existing file; pass a "
                         "new path or a directory (a zarr store).")
    if path.is_dir():
        if any(path.iterdir()) and not _is_our_store(path):
            raise ValueError(
                f"The 'out' argument {os.fspath(out)!r} is a directory that is not empty "
                "and not a zarr store written by skdvl; pass a new or empty path (an "
                "existing store of influences is resumed)."
            )
        parent = path
    else:
        parent = path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise ValueError(f"The 'out' argument {os.fspath(out)!r} cannot be created: "
                             f"{os.fspath(parent)!r} is not a directory.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"The 'out' argument {os.fspath(out)!r} is not writable: no write "
                         f"permission on {os.fspath(parent)!r}.")


def _open_group(out):
    zarr = _import_zarr()
    if isinstance(out, zarr.Group):
        return out
    if isinstance(out, (str, os.PathLike)):
        return zarr.open_group(store=os.fspath(out), mode="a")
    return zarr.open_group(store=out, mode="a")


def open_output(out, *, record: dict, shape, chunks, dtype, n_blocks):
    """Open (or create) the output group; return ``(influences, done)`` zarr arrays.

    Raises
    ------
    ValueError
        When ``out`` holds a run with a different record (listing what differs), or holds
        zarr nodes that skdvl did not write.
    """
    group = _open_group(out)
    stored = group.attrs.get(RECORD_KEY)
    if stored is None:
        existing = sorted(name for name, _ in group.members())
        if existing:
            raise ValueError(
                f"The output {out!r} already holds {existing} and no skdvl influence "
                "record; pass an empty or new path."
            )
        group.attrs[RECORD_KEY] = record
    else:
        diffs = record_differences(dict(stored), record)
        if diffs:
            raise ValueError(
                f"The output {out!r} holds influences of another run, so it cannot be "
                "resumed with these arguments; what differs: " + "; ".join(diffs)
                + ". Pass another output path, or delete this one to start afresh."
            )
    names = {name for name, _ in group.members()}
    if "influences" not in names:
        fill = np.nan if np.dtype(dtype).kind == "f" else 0
        group.create_array("influences", shape=tuple(shape), chunks=tuple(chunks),
                           dtype=dtype, fill_value=fill)
    if "done" not in names:
        group.create_array("done", shape=tuple(n_blocks), chunks=(1, 1), dtype="uint8",
                           fill_value=0)
    return group["influences"], group["done"]


class BlockWriter:
    """Writes block ``(i, j)`` of the influence matrix, then marks it done.

    Picklable (zarr arrays on a shared store pickle by reference), so dask workers can
    write their own blocks.
    """

    def __init__(self, array, done, test_bounds, train_bounds):
        self.array = array
        self.done = done
        self.test_bounds = test_bounds
        self.train_bounds = train_bounds

    def pending(self) -> list[tuple[int, int]]:
        """Blocks not yet marked done, in row-major order."""
        marks = np.asarray(self.done[...])
        return [(int(i), int(j)) for i, j in zip(*np.nonzero(marks == 0))]

    def write(self, block: np.ndarray, i: int, j: int) -> int:
        (t0, t1), (s0, s1) = self.test_bounds[i], self.train_bounds[j]
        expected = (t1 - t0, s1 - s0, *self.array.shape[2:])
        if block.shape != expected:
            raise RuntimeError(f"Block ({i}, {j}) has shape {block.shape}; expected "
                               f"{expected}.")
        self.array[t0:t1, s0:s1] = block
        self.done[i, j] = 1
        return 1
