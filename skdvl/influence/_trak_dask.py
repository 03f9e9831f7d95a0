"""Projecting the training chunks of a gradient store as dask tasks.

:meth:`ProjectedAttribution.fit <skdvl.influence.ProjectedAttribution.fit>` with
``backend="dask"`` computes each pending ``(model, chunk)`` of the store as one task: the
same :meth:`~skdvl.influence.ProjectedAttribution._features` call on the same rows, under
the same number of torch threads (``_torch_task``, one thread), as the sequential fit,
so the stored features are bitwise those of a sequential fit run on one torch thread.
Tasks run a window at a time (twice the workers), and this process writes each result
to the store in the sequential order, so memory holds one window of chunks and an
interrupted fit resumes as a sequential one does.
"""

from __future__ import annotations

import copy
import os
import uuid

from ._calculators import _check_client, _import_dask, _torch_task


def _chunk_task(attribution, m: int, X, y, n_threads: int):
    with _torch_task(n_threads):
        phi, d = attribution._features(m, X, y)
    return phi, d


def _window(client) -> int:
    workers = len(client.nthreads()) if client is not None else (os.cpu_count() or 1)
    return 2 * max(workers, 1)


def dask_chunks(attribution, pending, X, y, client=None, n_threads: int = 1):
    """Yield ``(m, c, features, dl/df)`` for each pending ``(m, c)``, computed by dask.

    Parameters
    ----------
    attribution : ProjectedAttribution
        Set up for fitting (module, models, projectors); a copy without its store
        travels to the tasks (scattered once to every worker with a ``client``).
    pending : list of (int, int)
    X, y : torch.Tensor
        The training rows (chunks are sliced here, so a task carries its rows only).
    client : distributed.Client, default=None
        Its workers must run one thread each; None: dask's current scheduler (tasks that
        share this process's module run one at a time).
    """
    dask, _ = _import_dask()
    _check_client(client)
    shipped = copy.copy(attribution)
    shipped.__dict__.pop("store_", None)
    shipped.client = None
    # named, and the tasks impure: dask never tokenizes (pickles) the model or the rows
    node = (dask.delayed(client.scatter(shipped, broadcast=True, hash=False))
            if client is not None
            else dask.delayed(shipped, name=f"attribution-{uuid.uuid4().hex}", traverse=False))
    bounds = attribution.store_.bounds
    size = _window(client)
    for start in range(0, len(pending), size):
        part = pending[start:start + size]
        tasks = [dask.delayed(_chunk_task, pure=False)(node, m, X[bounds[c]], y[bounds[c]],
                                                       n_threads)
                 for m, c in part]
        results = (client.gather(client.compute(tasks)) if client is not None
                   else dask.compute(*tasks))
        for (m, c), (phi, d) in zip(part, results):
            yield m, c, phi, d
