"""The dask influence calculator: factor and influence blocks as one dask graph.

Each test chunk's factors are one task, shared by the blocks of that chunk's row;
each block ``(test chunk, training chunk)`` is one task, computed or written to zarr
(see :mod:`skdvl.influence._calculators` for the chunking both calculators share).
"""

from __future__ import annotations

import uuid

import numpy as np

from ._calculators import (
    _by_test_chunk,
    _check_client,
    _import_dask,
    _Job,
    _torch_task,
)
from ._zarr_store import check_output_path

__all__ = ["DaskInfluenceCalculator"]

_LETTERS = "abcdefghlmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"  # not i, j, k


def _factors_block(x, y, scorer):
    with _torch_task(scorer):
        return scorer.influence_factors(x, y)


def _influence_block(factors, x, y, scorer, mode):
    with _torch_task(scorer):
        return scorer.influences_from_factors(factors, x, y, mode=mode)


def _write_block(factors, x, y, scorer, mode, writer, i, j):
    return writer.write(_influence_block(factors, x, y, scorer, mode), i, j)


class DaskInfluenceCalculator:
    """Influences of a fitted scorer as a dask array built blockwise over row chunks.

    The factors of each test chunk are one dask task, shared by all the blocks of that
    chunk's row; each block ``(test chunk, training chunk)`` is one task. Results equal
    :class:`SequentialInfluenceCalculator`'s.

    Parameters
    ----------
    scorer : InfluenceScorer
        A fitted scorer; it is shipped to the workers (pickled with cloudpickle).
    chunk_size : int or (int, int), default=1000
        Rows per chunk, for test and training rows alike or as ``(test, training)``.
    client : distributed.Client, default=None
        Computes the ``out=`` writes (None: dask's current scheduler). Its workers must
        run one thread each (``threads_per_worker=1``); others are refused, since the
        scorer cannot be shared by threads. Without a client, tasks that share a scorer
        in one process run one at a time (safe under the threaded scheduler).

    Attributes
    ----------
    n_blocks_written_, n_blocks_skipped_ : int
        As in :class:`SequentialInfluenceCalculator`, for the last ``out=`` write.

    Notes
    -----
    Unlike pyDVL 0.10's ``DaskInfluenceCalculator``, whose every block solves for the test
    factors again, the factors here are computed once per test chunk.
    """

    def __init__(self, scorer, chunk_size=1000, client=None):
        self.scorer = scorer
        self.chunk_size = chunk_size
        self.client = client

    def _scorer_node(self):
        dask, _ = _import_dask()
        return dask.delayed(self.scorer, name=f"influence-scorer-{uuid.uuid4().hex}")

    def _factors_array(self, job, scorer_node, dtype):
        _, da = _import_dask()
        Xt, yt = job.test.to_dask(job.chunks[0])
        ix, iy = _letters(Xt.ndim - 1, 0), _letters(yt.ndim - 1, Xt.ndim - 1)
        return da.blockwise(
            _factors_block, "ik", Xt, "i" + ix, yt, "i" + iy, scorer_node, None,
            new_axes={"k": int(self.scorer.n_params_)}, concatenate=True, dtype=dtype,
            meta=np.empty((0, 0), dtype=dtype),
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
        _check_client(self.client)
        job = _Job(self.scorer, self.chunk_size, X_test, y_test, None, None, None)
        dtype = self._dtype(job)
        return self._factors_array(job, self._scorer_node(), dtype)

    def _dtype(self, job) -> np.dtype:
        return np.asarray(self.scorer.influence_factors(*job.test.get(0, 1))).dtype

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
        _check_client(self.client)
        _, da = _import_dask()
        job = _Job(self.scorer, self.chunk_size, X_test, y_test, X, y, mode)
        node = self._scorer_node()
        if out is not None:
            return self._write(job, node, out)
        dtype = self._dtype(job)
        F = self._factors_array(job, node, dtype)
        Xs, ys = job.train.to_dask(job.chunks[1])
        ix, iy = _letters(Xs.ndim - 1, 0), _letters(ys.ndim - 1, Xs.ndim - 1)
        out_index = "ij" + (ix if job.mode == "perturbation" else "")
        return da.blockwise(
            _influence_block, out_index, F, "ik", Xs, "j" + ix, ys, "j" + iy, node, None,
            job.mode, None, concatenate=True, dtype=dtype,
            meta=np.empty((0,) * len(out_index), dtype=dtype),
        )

    def _write(self, job, node, out):
        dask, _ = _import_dask()
        writer = job.writer(self.scorer, out)
        pending = writer.pending()
        rows = _by_test_chunk(pending)
        Xt, yt = (a.to_delayed().ravel() for a in job.test.to_dask(job.chunks[0]))
        Xs, ys = (a.to_delayed().ravel() for a in job.train.to_dask(job.chunks[1]))
        tasks = []
        for i, js in rows.items():
            factors = dask.delayed(_factors_block)(Xt[i], yt[i], node)
            tasks += [dask.delayed(_write_block)(factors, Xs[j], ys[j], node, job.mode,
                                                 writer, i, j) for j in js]
        if tasks:
            scheduler = self.client.get if self.client is not None else None
            dask.compute(*tasks, scheduler=scheduler)
        self.n_blocks_written_ = len(pending)
        self.n_blocks_skipped_ = job.n_blocks[0] * job.n_blocks[1] - len(pending)
        return writer.array


def _letters(n: int, offset: int) -> str:
    """``n`` distinct blockwise index letters for trailing axes (never i, j or k)."""
    if offset + n > len(_LETTERS):
        raise ValueError(f"Inputs with {n} trailing axes are not supported.")
    return _LETTERS[offset : offset + n]
