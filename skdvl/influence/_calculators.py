"""Influence matrices at scale: chunk by chunk, sequentially or as a dask graph.

Both calculators take a fitted :class:`~skdvl.influence.InfluenceScorer` and split the
test rows into chunks of ``chunk_size[0]`` rows and the training rows into chunks of
``chunk_size[1]`` rows. The influence factors ``(C + lambda I)^-1 grad L(z_test)`` of a
test chunk are computed once and reused against every training chunk; the training
gradients of a chunk are recomputed for each test chunk, so memory stays bounded by one
factor block ``(chunk_size[0], n_params)`` and one output block per task. Larger test
chunks therefore mean fewer gradient recomputations.

With ``out=`` the result goes to a zarr group block by block (see ``_zarr_store``), and an
interrupted run started again with the same arguments skips the blocks already written.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from contextlib import contextmanager
from numbers import Integral
from typing import Any

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from ._checks import is_positive_int
from ._functional import iter_slices
from ._zarr_store import (
    BlockWriter,
    check_output_path,
    hash_array,
    hash_state_dict,
    make_record,
    open_output,
    probe_signature,
)

__all__ = [
    "SequentialInfluenceCalculator",
    "dataset_to_dask_arrays",
    "to_dask_array",
]

#: Scorer parameters left out of the run record (they do not change the numbers).
_UNRECORDED = {"model", "loss", "device", "verbose", "backend", "chunk_size", "client",
               "compute_values"}

_TORCH_LOCK = threading.RLock()


def _import_dask():
    try:
        import dask
        import dask.array as da
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("DaskInfluenceCalculator needs dask[array]; install skdvl[dask].") \
            from exc
    return dask, da


# ----------------------------------------------------------------- thread safety
@contextmanager
def _torch_task(n_threads: int = 1):
    """Run a block's torch work alone in this process, on ``n_threads`` torch threads.

    Two reasons make the work exclusive (one process-wide lock; re-entrant):

    - The scorer evaluates its module with ``torch.func.functional_call``, which swaps the
      module's parameters in place, so two threads must never use one scorer at once
      (this keeps dask's threaded scheduler correct).
    - Every block must be computed with the same number of torch intra-op threads,
      whichever calculator, process and thread computes it, because the bits of a float
      matrix product depend on it: on a digits MLP, MKL's ``(50, 2410) @ (2410, 250)``
      float32 product on 2 threads differs from the 1-thread product in the last bits
      (relative 4e-7), and the factors of a solve differ the same way. Part of torch's
      thread setting is shared by the threads of a process (set in one thread, it
      changed the products of another in our tests), so tasks of one process that ran at
      once could change each other's count.

    The count is set in the calling thread and restored when the task ends. Threads of
    one process therefore compute blocks one at a time; scale with worker processes.
    """
    with _TORCH_LOCK:
        previous = torch.get_num_threads()
        torch.set_num_threads(n_threads)
        try:
            yield
        finally:
            if previous != n_threads:
                torch.set_num_threads(previous)


def _factors(scorer, rows, n_threads: int) -> np.ndarray:
    """The influence factors of ``rows = (X, y)``, computed as a task."""
    with _torch_task(n_threads):
        return scorer.influence_factors(*rows)


def _check_n_threads(n_threads, owner: str) -> int:
    if not is_positive_int(n_threads):
        raise ValueError(f"The 'n_threads' parameter of {owner} must be an int >= 1. Got "
                         f"{n_threads!r} instead.")
    return int(n_threads)


def _check_client(client) -> None:
    if client is None:
        return
    from distributed import Client

    if not isinstance(client, Client):
        raise TypeError("The 'client' parameter of DaskInfluenceCalculator must be a "
                        f"distributed.Client or None. Got {type(client).__name__} instead.")
    threads = client.nthreads()
    if not threads:
        raise ValueError("The dask client has no workers; start a cluster with at least one.")
    multi = {addr: n for addr, n in threads.items() if n != 1}
    if multi:
        raise ValueError(
            "DaskInfluenceCalculator needs dask workers with one thread each: the fitted "
            "InfluenceScorer is not safe to call from several threads at once (torch.func "
            "swaps the module's parameters in place), so extra threads per worker would "
            f"only wait on each other. Workers with more than one thread: {multi}. Start "
            "them with threads_per_worker=1, e.g. Client(n_workers=2, threads_per_worker=1),"
            " and scale with workers, not threads."
        )


# ---------------------------------------------------------------------- inputs
def _is_dataset(X) -> bool:
    return isinstance(X, torch.utils.data.Dataset) and not isinstance(X, torch.Tensor)


def _is_dask(X) -> bool:
    return hasattr(X, "dask") and hasattr(X, "chunks") and hasattr(X, "compute")


def _as_numpy(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    if hasattr(a, "to_numpy"):  # pandas
        return a.to_numpy()
    return np.asarray(a)


def _load_rows(dataset, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    items = [dataset[k] for k in range(start, stop)]
    return (np.stack([_as_numpy(x) for x, _ in items]),
            np.stack([_as_numpy(t) for _, t in items]))


def _check_chunk(chunk_size, name="chunk_size") -> int:
    if not is_positive_int(chunk_size):
        raise ValueError(f"The '{name}' parameter must be an int >= 1. Got {chunk_size!r} "
                         "instead.")
    return int(chunk_size)


def to_dask_array(X, chunk_size: int = 1000):
    """A numpy array, pandas frame or series, torch tensor or dask array as a dask array.

    Chunked by rows only (``chunk_size`` rows per chunk; the other axes are one chunk),
    as the calculators need.

    Parameters
    ----------
    X : array-like, pandas.DataFrame, pandas.Series, torch.Tensor or dask.array.Array
    chunk_size : int, default=1000

    Returns
    -------
    dask.array.Array
    """
    _, da = _import_dask()
    chunk_size = _check_chunk(chunk_size)
    if _is_dask(X):
        return X.rechunk({0: chunk_size, **{ax: -1 for ax in range(1, X.ndim)}})
    arr = _as_numpy(X)
    if arr.dtype == object:
        raise ValueError("X must be numeric; got an array of dtype object.")
    return da.from_array(arr, chunks=(chunk_size, *arr.shape[1:]))


def dataset_to_dask_arrays(dataset, chunk_size: int = 1000):
    """A torch ``Dataset`` of ``(x, y)`` pairs as two row-chunked dask arrays ``(X, y)``.

    Each chunk is loaded lazily, once, by one task (``dataset[k]`` for its rows), so the
    dataset is never held in memory whole; it must be picklable to reach dask workers.

    Parameters
    ----------
    dataset : torch.utils.data.Dataset
        Indexable by position, ``dataset[k] -> (x, y)``, with a length.
    chunk_size : int, default=1000
        Rows per chunk.

    Returns
    -------
    X, y : dask.array.Array
        Inputs and targets, chunked by ``chunk_size`` rows.
    """
    dask, da = _import_dask()
    chunk_size = _check_chunk(chunk_size)
    n = len(dataset)
    if n == 0:
        raise ValueError("The dataset is empty.")
    x0, y0 = _load_rows(dataset, 0, 1)
    token = dask.base.tokenize(_dataset_token(dataset), chunk_size)
    source = dask.delayed(dataset, pure=True, name=f"torch-dataset-{token}")
    xs, ys = [], []
    for start, stop in _bounds(n, chunk_size):
        part = dask.delayed(_load_rows, pure=True)(source, start, stop)
        xs.append(da.from_delayed(part[0], shape=(stop - start, *x0.shape[1:]),
                                  dtype=x0.dtype))
        ys.append(da.from_delayed(part[1], shape=(stop - start, *y0.shape[1:]),
                                  dtype=y0.dtype))
    return da.concatenate(xs), da.concatenate(ys)


def _dataset_token(dataset) -> str:
    """Identifies a Dataset by its type, length and first and last items."""
    n = len(dataset)
    first, last = _load_rows(dataset, 0, 1), _load_rows(dataset, n - 1, n)
    parts = [type(dataset).__qualname__, str(n)]
    parts += [hash_array(a) for a in (*first, *last)]
    return "|".join(parts)


def _bounds(n: int, size: int) -> list[tuple[int, int]]:
    """(start, stop) of the chunks of ``size`` rows of ``range(n)``."""
    return [(b.start, b.stop) for b in iter_slices(n, size)]


class _Rows:
    """Rows ``(X, y)`` of any supported kind, sliced by row ranges or turned into dask."""

    X: Any
    y: Any

    def __init__(self, X, y, name: str):
        if _is_dataset(X):
            if y is not None:
                raise ValueError(f"y must be None when {name} is a torch Dataset.")
            self.dataset, self.X, self.y = X, None, None
            self.n = len(X)
            first = _load_rows(X, 0, 1) if self.n else (np.empty((1,)), None)
            self.x_shape = first[0].shape[1:]
        else:
            if y is None:
                raise ValueError(f"y is required with {name} (the loss needs targets).")
            self.dataset = None
            self.X = X if _is_dask(X) or isinstance(X, torch.Tensor) else _as_numpy(X)
            self.y = y if _is_dask(y) or isinstance(y, torch.Tensor) else _as_numpy(y)
            self.n = len(self.X)
            self.x_shape = tuple(self.X.shape[1:])
            if len(self.y) != self.n:
                raise ValueError(f"{name} and its targets must have the same number of "
                                 f"rows; got {self.n} and {len(self.y)}.")
        if self.n == 0:
            raise ValueError(f"{name} has no rows.")
        self.name = name

    def get(self, start: int, stop: int):
        if self.dataset is not None:
            return _load_rows(self.dataset, start, stop)
        x, y = self.X[start:stop], self.y[start:stop]
        return (x.compute() if _is_dask(x) else x), (y.compute() if _is_dask(y) else y)

    def fingerprint(self) -> dict:
        if self.dataset is not None:
            return {"dataset": _dataset_token(self.dataset)}
        return {"X": self._one(self.X), "y": self._one(self.y)}

    @staticmethod
    def _one(a) -> str:
        if _is_dask(a):
            dask, _ = _import_dask()
            return "dask:" + dask.base.tokenize(a)
        return hash_array(a)

    def to_dask(self, chunk_size: int):
        if self.dataset is not None:
            return dataset_to_dask_arrays(self.dataset, chunk_size)
        return to_dask_array(self.X, chunk_size), to_dask_array(self.y, chunk_size)


# ------------------------------------------------------------------- the plan
class _Job:
    """One influence computation: rows, chunk bounds, mode and output shape."""

    def __init__(self, scorer, chunk_size, X_test, y_test, X, y, mode):
        check_is_fitted(scorer, "solver_")
        sizes = (chunk_size, chunk_size) if isinstance(chunk_size, Integral) else chunk_size
        if not isinstance(sizes, (tuple, list)) or len(sizes) != 2:
            raise ValueError("The 'chunk_size' parameter must be an int or a pair of ints "
                             f"(test rows, training rows). Got {chunk_size!r} instead.")
        self.chunks = tuple(_check_chunk(s) for s in sizes)
        self.mode = scorer.mode if mode is None else mode
        if self.mode not in ("up", "perturbation"):
            raise ValueError("The 'mode' argument must be 'up' or 'perturbation'. Got "
                             f"{self.mode!r} instead.")
        self.test = _Rows(X_test, y_test, "X_test")
        if X is None:
            if y is not None:
                raise ValueError("y was given without X; pass both, or neither to score "
                                 "the rows given to fit.")
            self.train = _Rows(scorer.X_fit_.cpu(), scorer.y_fit_.cpu(), "X")
        else:
            self.train = _Rows(X, y, "X")
        self.test_bounds = _bounds(self.test.n, self.chunks[0])
        self.train_bounds = _bounds(self.train.n, self.chunks[1])
        tail = self.train.x_shape if self.mode == "perturbation" else ()
        self.shape = (self.test.n, self.train.n, *tail)
        self.block_chunks = (*self.chunks, *tail)
        self.n_blocks = (len(self.test_bounds), len(self.train_bounds))

    def record(self, scorer, probe: np.ndarray) -> dict:
        params = {k: v for k, v in scorer.get_params(deep=False).items()
                  if k not in _UNRECORDED}
        # The method as its name and options: "cg" and CG() are the same run.
        params["method"] = {"name": scorer.method_.name, **scorer.method_.get_params()}
        return make_record(
            params, mode=self.mode, chunks=self.chunks, shape=self.shape,
            dtype=str(probe.dtype), n_params=int(scorer.n_params_),
            model=hash_state_dict(scorer.flat_.module), test=self.test.fingerprint(),
            train=self.train.fingerprint(), probe=probe_signature(probe[0]),
        )

    def writer(self, scorer, out, n_threads: int) -> BlockWriter:
        probe = np.asarray(_factors(scorer, self.test.get(0, 1), n_threads))
        array, done = open_output(out, record=self.record(scorer, probe), shape=self.shape,
                                  chunks=self.block_chunks, dtype=probe.dtype,
                                  n_blocks=self.n_blocks)
        return BlockWriter(array, done, self.test_bounds, self.train_bounds)


class _NumpySink:
    """In-memory stand-in for :class:`BlockWriter` (allocated on the first block)."""

    def __init__(self, job: _Job):
        self.job = job
        self.array: np.ndarray | None = None

    def pending(self) -> list[tuple[int, int]]:
        return [(i, j) for i in range(self.job.n_blocks[0]) for j in range(self.job.n_blocks[1])]

    def write(self, block: np.ndarray, i: int, j: int) -> int:
        if self.array is None:
            self.array = np.empty(self.job.shape, dtype=block.dtype)
        (t0, t1), (s0, s1) = self.job.test_bounds[i], self.job.train_bounds[j]
        self.array[t0:t1, s0:s1] = block  # type: ignore[index]
        return 1


def _by_test_chunk(pending):
    rows = defaultdict(list)
    for i, j in pending:
        rows[i].append(j)
    return dict(sorted(rows.items()))


# --------------------------------------------------------------- calculators
class SequentialInfluenceCalculator:
    """Influences of a fitted scorer computed chunk by chunk in this process.

    Parameters
    ----------
    scorer : InfluenceScorer
        A fitted scorer.
    chunk_size : int or (int, int), default=1000
        Rows per chunk, for test and training rows alike or as ``(test, training)``.
    n_threads : int, default=1
        Torch intra-op threads for each block (set for the call, then restored). The
        result is bitwise equal to :class:`DaskInfluenceCalculator`'s with the same
        ``chunk_size`` and ``n_threads``; see Notes.
    verbose : int, default=0
        A progress bar over blocks when > 0.

    Attributes
    ----------
    n_blocks_written_ : int
        Blocks computed by the last call of :meth:`influences`.
    n_blocks_skipped_ : int
        Blocks found already written in ``out`` by the last call.

    Notes
    -----
    The default of one thread matches the dask workers, which run one thread each, so
    that both calculators give the same bits: float matrix products (MKL, OpenBLAS) and
    the solves built on them round differently with another number of threads. On a
    machine with several cores, ``n_threads`` > 1 is faster for large models (an MLP
    with 25,546 parameters on 2 cores: 1.8x), at the price of last-bit differences from
    a dask run on single-threaded workers (relative 1e-7 in float32).

    Examples
    --------
    >>> import torch
    >>> from skdvl.influence import InfluenceScorer
    >>> from skdvl.influence._calculators import SequentialInfluenceCalculator
    >>> X, y = torch.randn(20, 3, dtype=torch.float64), torch.randn(20, 1, dtype=torch.float64)
    >>> s = InfluenceScorer(torch.nn.Linear(3, 1).double(), loss=torch.nn.MSELoss(),
    ...                     method="direct").fit(X, y)
    >>> SequentialInfluenceCalculator(s, chunk_size=(2, 8)).influences(X[:5], y[:5]).shape
    (5, 20)
    """

    def __init__(self, scorer, chunk_size=1000, *, n_threads=1, verbose=0):
        self.scorer = scorer
        self.chunk_size = chunk_size
        self.n_threads = n_threads
        self.verbose = verbose

    def influence_factors(self, X_test, y_test=None) -> np.ndarray:
        """``(C + lambda I)^-1 grad L(z_test)``, shape ``(n_test, n_params)``, by chunks.

        Parameters
        ----------
        X_test : array-like, DataFrame, torch.Tensor, dask array or torch Dataset
            Test inputs, or a Dataset of ``(x, y)`` pairs with ``y_test=None``.
        y_test : array-like, torch.Tensor or dask array, default=None
            Test targets.

        Returns
        -------
        ndarray of shape (n_test, n_params)
        """
        n_threads = _check_n_threads(self.n_threads, type(self).__name__)
        job = _Job(self.scorer, self.chunk_size, X_test, y_test, None, None, None)
        return np.concatenate([_factors(self.scorer, job.test.get(a, b), n_threads)
                               for a, b in job.test_bounds])

    def influences(self, X_test, y_test=None, X=None, y=None, mode=None, out=None):
        """Influence of each training row on each test row, chunk by chunk.

        Parameters
        ----------
        X_test, y_test : test rows (arrays, frames, tensors, dask arrays) or a torch
            Dataset of ``(x, y)`` pairs as ``X_test`` with ``y_test=None``.
        X, y : training rows to score, same kinds; None means the rows given to fit.
        mode : {"up", "perturbation"}, default=None
            None uses the scorer's ``mode``.
        out : str, path, zarr store or zarr.Group, default=None
            Where to write the result block by block. A run interrupted and started again
            with the same arguments skips the blocks already written; a run with other
            arguments, data or model is refused.

        Returns
        -------
        ndarray of shape (n_test, n_train[, *input_shape]), or the ``zarr.Array`` written
        under ``out`` (``<out>/influences``).
        """
        scorer = self.scorer
        n_threads = _check_n_threads(self.n_threads, type(self).__name__)
        if out is not None:
            check_output_path(out)
        job = _Job(scorer, self.chunk_size, X_test, y_test, X, y, mode)
        sink = _NumpySink(job) if out is None else job.writer(scorer, out, n_threads)
        pending = sink.pending()
        bar = self._progress(len(pending))
        for i, js in _by_test_chunk(pending).items():
            factors = _factors(scorer, job.test.get(*job.test_bounds[i]), n_threads)
            for j in js:
                x, t = job.train.get(*job.train_bounds[j])  # data loads outside the lock
                with _torch_task(n_threads):
                    block = scorer.influences_from_factors(factors, x, t, mode=job.mode)
                sink.write(block, i, j)
                if bar is not None:
                    bar.update()
        if bar is not None:
            bar.close()
        self.n_blocks_written_ = len(pending)
        self.n_blocks_skipped_ = job.n_blocks[0] * job.n_blocks[1] - len(pending)
        return sink.array

    def _progress(self, total):
        if self.verbose > 0:
            from tqdm.auto import tqdm

            return tqdm(total=total, desc="influence blocks")
        return None
