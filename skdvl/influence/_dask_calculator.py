"""The dask influence calculator: factor and influence blocks as one dask graph.

Each test chunk's factors are one task, shared by the blocks of that chunk's row;
each block ``(test chunk, training chunk)`` is one task, computed or written to zarr
(see :mod:`skdvl.influence._calculators` for the chunking both calculators share).
Every task runs the same code on the same row ranges with the same number of torch
threads as the sequential calculator, so the two give the same bits.
"""

from __future__ import annotations

import threading
import uuid
import weakref

import numpy as np
import torch

from ._calculators import (
    _by_test_chunk,
    _check_client,
    _check_n_threads,
    _import_dask,
    _Job,
    _torch_task,
)
from ._zarr_store import check_output_path

__all__ = ["DaskInfluenceCalculator"]

_LETTERS = "abcdefghlmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"  # not i, j, k
#: Parameters that the tasks never read (a change of them needs no new copy on workers).
_UNSHIPPED = ("model", "client", "verbose", "backend", "chunk_size")

# scorer -> {id(client): (state token, future of the scorer on every worker)}
_SHIPPED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_SHIPPED_GUARD = threading.Lock()


def _factors_block(x, y, scorer, n_threads):
    with _torch_task(n_threads):
        return scorer.influence_factors(x, y)


def _influence_block(factors, x, y, scorer, mode, n_threads):
    with _torch_task(n_threads):
        return scorer.influences_from_factors(factors, x, y, mode=mode)


def _write_block(factors, x, y, scorer, mode, n_threads, writer, i, j):
    return writer.write(_influence_block(factors, x, y, scorer, mode, n_threads), i, j)


class DaskInfluenceCalculator:
    """Influences of a fitted scorer as a dask array built blockwise over row chunks.

    The factors of each test chunk are one dask task, shared by all the blocks of that
    chunk's row; each block ``(test chunk, training chunk)`` is one task. Results are
    bitwise equal to :class:`SequentialInfluenceCalculator`'s with the same
    ``chunk_size`` and ``n_threads``.

    Parameters
    ----------
    scorer : InfluenceScorer
        A fitted scorer. With a ``client``, it is sent once to every worker
        (``client.scatter``) and kept there for later calls while it lives and is not
        refitted; without, it travels in the graph (pickled with cloudpickle).
    chunk_size : int or (int, int), default=1000
        Rows per chunk, for test and training rows alike or as ``(test, training)``.
    client : distributed.Client, default=None
        Computes the ``out=`` writes (None: dask's current scheduler). Its workers must
        run one thread each (``threads_per_worker=1``); others are refused, since the
        scorer cannot be shared by threads. Without a client, tasks that share a scorer
        in one process run one at a time (safe under the threaded scheduler).
    n_threads : int, default=1
        Torch intra-op threads in each task (set for the task, then restored), as in
        :class:`SequentialInfluenceCalculator`. Scale with workers, not with this:
        ``n_workers * n_threads`` should not exceed the cores.

    Attributes
    ----------
    n_blocks_written_, n_blocks_skipped_ : int
        As in :class:`SequentialInfluenceCalculator`, for the last ``out=`` write.

    Notes
    -----
    Unlike pyDVL 0.10's ``DaskInfluenceCalculator``, whose every block solves for the test
    factors again, the factors here are computed once per test chunk.

    A fresh worker process pays torch's lazy imports on its first task (``torch.func``
    imports ``torch._dynamo``: 1-2 s on the 2-core machine of the benchmarks), once per
    worker lifetime. A scorer kept on the workers holds their memory (one copy per
    worker; for ``method="direct"`` the ``(n_params, n_params)`` factor) until it is
    garbage-collected here or refitted.
    """

    def __init__(self, scorer, chunk_size=1000, client=None, *, n_threads=1):
        self.scorer = scorer
        self.chunk_size = chunk_size
        self.client = client
        self.n_threads = n_threads

    def _scorer_node(self, lazy: bool):
        """The scorer as a graph node: a future on the workers, or a literal.

        A lazy array keeps the literal unless ``client`` is the default client, so that
        any scheduler can compute it, as before the future was introduced.
        """
        dask, _ = _import_dask()
        if self.client is not None and (not lazy or _is_default(self.client)):
            return dask.delayed(_shipped_scorer(self.scorer, self.client))
        return dask.delayed(self.scorer, name=f"influence-scorer-{uuid.uuid4().hex}")

    def _check(self) -> int:
        n_threads = _check_n_threads(self.n_threads, type(self).__name__)
        _check_client(self.client)
        return n_threads

    def _factors_array(self, job, scorer_node, n_threads):
        _, da = _import_dask()
        Xt, yt = job.test.to_dask(job.chunks[0])
        ix, iy = _letters(Xt.ndim - 1, 0), _letters(yt.ndim - 1, Xt.ndim - 1)
        dtype = _factor_dtype(self.scorer)
        return da.blockwise(
            _factors_block, "ik", Xt, "i" + ix, yt, "i" + iy, scorer_node, None,
            n_threads, None, new_axes={"k": int(self.scorer.n_params_)}, concatenate=True,
            dtype=dtype, meta=np.empty((0, 0), dtype=dtype),
        )

    def influence_factors(self, X_test, y_test=None):
        """Factors of the test rows as a dask array ``(n_test, n_params)``, by test chunk.

        Parameters
        ----------
        X_test : array-like, DataFrame, torch.Tensor, dask array or torch Dataset
            Test inputs, or a Dataset of ``(x, y)`` pairs with ``y_test=None``.
        y_test : array-like, torch.Tensor or dask array, default=None
            Test targets.

        Returns
        -------
        dask.array.Array of shape (n_test, n_params)
        """
        n_threads = self._check()
        job = _Job(self.scorer, self.chunk_size, X_test, y_test, None, None, None)
        return self._factors_array(job, self._scorer_node(lazy=True), n_threads)

    def influences(self, X_test, y_test=None, X=None, y=None, mode=None, out=None):
        """Influence of each training row on each test row (see the sequential calculator).

        Parameters
        ----------
        X_test, y_test : test rows (arrays, frames, tensors, dask arrays) or a torch
            Dataset of ``(x, y)`` pairs as ``X_test`` with ``y_test=None``.
        X, y : training rows to score, same kinds; None means the rows given to fit.
        mode : {"up", "perturbation"}, default=None
            None uses the scorer's ``mode``.
        out : str, path, zarr store or zarr.Group, default=None
            Where to write the result block by block, as in
            :meth:`SequentialInfluenceCalculator.influences`.

        Returns
        -------
        dask.array.Array of shape (n_test, n_train[, *input_shape]) chunked by
        ``chunk_size``, or, with ``out``, the ``zarr.Array`` written (computed with
        ``client`` if given).
        """
        if out is not None:
            check_output_path(out)
        n_threads = self._check()
        _, da = _import_dask()
        job = _Job(self.scorer, self.chunk_size, X_test, y_test, X, y, mode)
        if out is not None:
            return self._write(job, out, n_threads)
        node = self._scorer_node(lazy=True)
        F = self._factors_array(job, node, n_threads)
        Xs, ys = job.train.to_dask(job.chunks[1])
        ix, iy = _letters(Xs.ndim - 1, 0), _letters(ys.ndim - 1, Xs.ndim - 1)
        out_index = "ij" + (ix if job.mode == "perturbation" else "")
        dtype = F.dtype
        return da.blockwise(
            _influence_block, out_index, F, "ik", Xs, "j" + ix, ys, "j" + iy, node, None,
            job.mode, None, n_threads, None, concatenate=True, dtype=dtype,
            meta=np.empty((0,) * len(out_index), dtype=dtype),
        )

    def _write(self, job, out, n_threads):
        dask, _ = _import_dask()
        writer = job.writer(self.scorer, out, n_threads)
        pending = writer.pending()
        tasks = []
        if pending:
            node = self._scorer_node(lazy=False)
            Xt, yt = (a.to_delayed().ravel() for a in job.test.to_dask(job.chunks[0]))
            Xs, ys = (a.to_delayed().ravel() for a in job.train.to_dask(job.chunks[1]))
            for i, js in _by_test_chunk(pending).items():
                factors = dask.delayed(_factors_block)(Xt[i], yt[i], node, n_threads)
                tasks += [dask.delayed(_write_block)(factors, Xs[j], ys[j], node, job.mode,
                                                     n_threads, writer, i, j) for j in js]
            scheduler = self.client.get if self.client is not None else None
            dask.compute(*tasks, scheduler=scheduler)
        self.n_blocks_written_ = len(pending)
        self.n_blocks_skipped_ = job.n_blocks[0] * job.n_blocks[1] - len(pending)
        return writer.array


def _factor_dtype(scorer) -> np.dtype:
    """The numpy dtype of the scorer's factors and influences (its parameters')."""
    return torch.empty(0, dtype=scorer.flat_.theta.dtype).numpy().dtype


def _is_default(client) -> bool:
    from distributed import default_client

    try:
        return default_client() is client
    except ValueError:  # no default client
        return False


def _state_token(scorer) -> tuple:
    """What the tasks read of a fitted scorer: its fitted state and parameters."""
    params = {k: v for k, v in scorer.get_params(deep=False).items() if k not in _UNSHIPPED}
    return id(scorer.solver_), id(scorer.flat_), repr(sorted(params.items()))


def _shipped_scorer(scorer, client):
    """A future of ``scorer`` on every worker of ``client``, scattered once per state.

    Later calls with the same client and an unchanged scorer reuse it, so a scorer
    (``method="direct"``: a 22 MB factor for a digits MLP) crosses the network once, not
    once per call. A refit (new ``solver_``) or a changed parameter scatters it again.
    The entry lives as long as the scorer (weak key), and holds the solver so that its
    ``id`` cannot be reused by another one.
    """
    token = _state_token(scorer)
    with _SHIPPED_GUARD:
        entry = _SHIPPED.setdefault(scorer, {}).get(id(client))
    if entry is not None:
        old_token, _, future = entry
        if old_token == token and future.client is client and future.status == "finished":
            return future
    future = client.scatter(scorer, broadcast=True, hash=False)
    with _SHIPPED_GUARD:
        _SHIPPED[scorer][id(client)] = (token, (scorer.solver_, scorer.flat_), future)
    return future


def _letters(n: int, offset: int) -> str:
    """``n`` distinct blockwise index letters for trailing axes (never i, j or k)."""
    if offset + n > len(_LETTERS):
        raise ValueError(f"Inputs with {n} trailing axes are not supported.")
    return _LETTERS[offset : offset + n]
