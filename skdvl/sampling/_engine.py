"""The Monte Carlo semivalue engine: seeded blocks, joblib dispatch, running moments.

Sampling is organised in *blocks* of a fixed number of samples. Block ``b`` of
game ``g`` draws its randomness from ``SeedSequence(entropy, spawn_key=(g, b))``,
so the samples do not depend on which worker computes the block. Workers return
per-block moments (count, mean, sum of squared deviations) and the main process
merges them in block order, checking the stopping criterion after each block:
values are identical for any ``n_jobs`` and joblib backend. Blocks are shipped
in rounds of tasks of consecutive blocks that end where the criterion is
expected to stop (exactly, for a budget of samples), so that few tasks run past
it. A lockstep sampler's round is cut evenly into as many tasks as there are
workers (or a multiple), each walked in one group on a worker; other tasks are
sized to take about half a second. The utility travels with each task (a few
tasks a round; large arrays in it are memory-mapped by joblib rather than
copied); workers keep one evaluator (and its coalition cache) per utility for
the whole run.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from joblib import Parallel, delayed, effective_n_jobs
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from skdvl._coalitions import masks_from_codes
from skdvl._moments import Moments
from skdvl.result import ValuationResult
from skdvl.sampling._base import EngineState, TableState
from skdvl.sampling._engine_plan import (
    _LOCKSTEP_BLOCKS,
    _blocks_expected,
    _blocks_left,
)
from skdvl.sampling._evaluator import CachedEvaluator, cached_leading, cached_prefix
from skdvl.stopping import Progress, Status, StoppingCriterion
from skdvl.utility import FitReport

__all__ = ["CachedEvaluator", "value_game", "run_sampling", "evaluate_coalitions"]

_TARGET_TASK_SECONDS = 0.5
_WORKER_EVALUATORS: dict[tuple[str, int], CachedEvaluator] = {}

#: Most blocks of a lockstep sampler in one task on the workers, walked there in one
#: group: larger groups batch better (TMC on 150 rows without truncation costs 11%
#: less per permutation in groups of 48 than of 32), and where a round of tasks ends
#: is known, so that none runs far past the stop.
_TASK_BLOCKS = 2 * _LOCKSTEP_BLOCKS


# --------------------------------------------------------------------------- blocks
def _block_rng(entropy: int, game: int, block: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(game, block)))


def _run_block(
    sampler: Any, ev: CachedEvaluator, weights: np.ndarray | None, entropy: int, game: int,
    block: int, start: int = 0, stop: int | None = None,
) -> tuple[Moments, ...]:
    return sampler.run_block(ev, _block_rng(entropy, game, block), weights, block, start, stop)


def _worker_evaluator(token: str, utility: Any) -> CachedEvaluator:
    """One evaluator per utility and worker thread, kept for the whole fit."""
    key = (token, threading.get_ident())
    ev = _WORKER_EVALUATORS.get(key)
    if ev is None:
        if len(_WORKER_EVALUATORS) > 16:
            _WORKER_EVALUATORS.clear()
        ev = _WORKER_EVALUATORS[key] = CachedEvaluator(copy.copy(utility))
        ev.evaluations_at_start = ev.n_evaluations
    return ev


def _forget(token: str) -> None:
    """Drop this process's evaluators of a finished run (threading backend)."""
    for key in [k for k in list(_WORKER_EVALUATORS) if k[0] == token]:
        _WORKER_EVALUATORS.pop(key, None)


def _run_blocks(
    sampler: Any, ev: CachedEvaluator, weights: Any, entropy: int, game: int, blocks: range,
    group: int = _LOCKSTEP_BLOCKS,
) -> list[tuple[Moments, ...]]:
    """Whole blocks, in order: together (``run_blocks``, ``group`` blocks at a time) for a
    lockstep sampler. The values do not depend on how the blocks are grouped."""
    if sampler.lockstep and ev.batched:
        out: list[tuple[Moments, ...]] = []
        for lo in range(blocks.start, blocks.stop, group):
            part = range(lo, min(lo + group, blocks.stop))
            out.extend(sampler.run_blocks(
                ev, [(_block_rng(entropy, game, b), b) for b in part], weights))
        return out
    return [_run_block(sampler, ev, weights, entropy, game, b) for b in blocks]


def _run_task(
    token: str, utility: Any, sampler: Any, weights: Any, entropy: int, game: int,
    blocks: range,
) -> tuple[list[tuple[Moments, ...]], int, FitReport, float, int]:
    t0 = time.perf_counter()
    ev = _worker_evaluator(token, utility)
    evals0, report0 = ev.n_evaluations, ev.report()
    with threadpool_limits(1):
        out = _run_blocks(sampler, ev, weights, entropy, game, blocks, _TASK_BLOCKS)
    return (out, ev.n_evaluations - evals0, ev.report().since(report0),
            time.perf_counter() - t0, threading.get_ident())


# --------------------------------------------------------------------------- sampling loop
class _Loop:
    """Merges blocks in order and checks the criterion after each."""

    def __init__(self, state: EngineState, sampler: Any, stopping: StoppingCriterion,
                 pbar: Any) -> None:
        self.state, self.sampler, self.stopping, self.pbar = state, sampler, stopping, pbar
        self.spb = int(sampler.samples_per_block)
        self.completion = 0.0

    def _progress(self) -> Progress:
        st, sampler = self.state, self.sampler
        return Progress(lambda: sampler.result(st.moments), st.n_samples,
                        st.n_evaluations, counts=sampler.counts(st.moments))

    def check(self) -> bool:
        """Ask the criterion; True when sampling must stop."""
        progress = self._progress()
        self.state.status = self.stopping(progress)
        self.completion = self.stopping.completion(progress)
        if self.pbar is not None:
            self.pbar.n = round(100 * self.completion, 1)
            self.pbar.refresh()
        return self.state.status != Status.PENDING

    def room(self) -> int:
        """Samples of the next block that may be drawn without passing the budget."""
        left = self.stopping.samples_left(self._progress())
        room = self.spb - self.state.block_offset
        return room if left is None else max(1, min(room, int(left)))

    def take(self, block: tuple[Moments, ...], n_taken: int) -> bool:
        """Absorb ``n_taken`` samples of the next block; True when sampling must stop."""
        st = self.state
        st.absorb(block)
        st.n_samples += n_taken
        st.block_offset += n_taken
        if st.block_offset >= self.spb:
            st.next_block, st.block_offset = st.next_block + 1, 0
        return self.check()


def run_sampling(
    utility: Any, sampler: Any, weights: np.ndarray | None, stopping: StoppingCriterion, *,
    entropy: int, game: int = 0, state: EngineState | None = None, n_jobs: Any = None,
    verbose: int = 0, desc: str = "sampling",
) -> EngineState:
    """Sample until ``stopping`` says stop; return the (new or continued) state.

    The criterion is asked first, so a continued state whose budget is already
    spent samples nothing. With ``n_jobs > 1``, whole blocks go to the workers in
    rounds of tasks (:func:`_parallel`); a part of a block (where a budget of
    samples ends inside one) is drawn here. A KeyboardInterrupt stops sampling
    and returns the state of the blocks absorbed so far, with ``interrupted=True``.
    """
    n = int(utility.n_players)
    state = state if state is not None else EngineState.new(sampler, n)
    state.interrupted = False
    stopping.reset()
    pbar = tqdm(total=100, desc=desc, unit="%", leave=False) if verbose > 0 else None
    loop = _Loop(state, sampler, stopping, pbar)
    ev = CachedEvaluator(utility)
    pool = (_Pool(n_jobs, sampler.lockstep and ev.batched)
            if effective_n_jobs(n_jobs) > 1 else None)
    try:
        done = loop.check()
        with threadpool_limits(1):  # once: each call reads the process's memory map
            while not done:
                if pool is not None and _parallel_next(loop, pool):
                    done = _parallel(utility, sampler, weights, entropy, game, loop, pool)
                else:
                    done = _sequential_block(ev, sampler, weights, entropy, game, loop)
                    if pool is not None:
                        pool.probed = True
    except KeyboardInterrupt:
        state.interrupted = True
        warnings.warn(
            f"Interrupted: returning the partial result after {state.n_samples} samples "
            f"({state.n_evaluations} utility evaluations). Players no finished sample "
            "reached have the value NaN; fit again with warm_start=True to continue.",
            RuntimeWarning, stacklevel=2)
    finally:
        if pool is not None:
            _forget(pool.token)
        if pbar is not None:
            pbar.close()
    return state


def _sequential_block(ev, sampler, weights, entropy, game, loop) -> bool:  # type: ignore[no-untyped-def]
    """Draw the next block (or the part of it the budget allows) here; True to stop.

    A lockstep sampler on a batched utility gets several whole blocks at once
    (as many as the criterion is expected to take, at most ``_LOCKSTEP_BLOCKS``,
    see :func:`_blocks_expected`); they are
    taken in order, and those after the one that stops sampling are dropped, so
    the result is the same as block by block. A KeyboardInterrupt keeps the
    samples whose coalitions finished (:func:`_salvage`) before it goes on up.
    """
    state = loop.state
    start = state.block_offset
    room = loop.room()
    evals0, report0 = ev.n_evaluations, ev.report()
    lockstep = sampler.lockstep and ev.batched and start == 0 and room == loop.spb
    try:
        if lockstep:
            k = _blocks_expected(loop, ev)
            blocks = _run_blocks(sampler, ev, weights, entropy, game,
                                 range(state.next_block, state.next_block + k), k)
        else:
            block = _run_block(sampler, ev, weights, entropy, game, state.next_block,
                               start, start + room)
    except KeyboardInterrupt:
        _account(state, ev, evals0, report0)
        _salvage(ev, sampler, weights, entropy, game, loop)
        raise
    _account(state, ev, evals0, report0)
    if lockstep:
        return any(loop.take(block, loop.spb) for block in blocks)
    return loop.take(block, room)


def _account(state: EngineState, ev: CachedEvaluator, evals0: int, report0: FitReport) -> None:
    state.n_evaluations += ev.n_evaluations - evals0
    state.report.merge(ev.report().since(report0))


def _salvage(ev, sampler, weights, entropy, game, loop) -> None:  # type: ignore[no-untyped-def]
    """After an interrupt: absorb the blocks, and the part of a block, that finished.

    The interrupted call's finished coalitions are in ``ev``'s cache; each block
    from the next one on is run again on the cache alone (:func:`cached_prefix`),
    so only samples all of whose coalitions were evaluated are taken, exactly as
    they would have been, and nothing is evaluated again.
    """
    while True:
        state = loop.state
        block, start, room = state.next_block, state.block_offset, loop.room()

        def run(probe, k, block=block, start=start):  # type: ignore[no-untyped-def]
            return _run_block(sampler, probe, weights, entropy, game, block, start, start + k)

        k, stats = cached_prefix(ev, run, room)
        if k == 0 or loop.take(stats, k) or k < room:
            return


class _Pool:
    """The joblib workers of one sampling run, and how its blocks are cut into tasks.

    One ``token`` keys the workers' evaluators for the whole run, so that their
    caches outlive a round of tasks; ``absorbed`` counts the evaluations taken in
    from each worker thread (for :func:`_salvage_threads`).

    Parameters
    ----------
    n_jobs : int or None
        As joblib takes it.
    lockstep : bool
        Whether a task's blocks are run together (a lockstep sampler on a batched
        utility, :func:`_run_blocks`): a round of such tasks is cut by blocks
        (:meth:`task_size`), not by time.
    """

    def __init__(self, n_jobs: Any, lockstep: bool) -> None:
        self.n_jobs, self.n_workers, self.lockstep = n_jobs, effective_n_jobs(n_jobs), lockstep
        self.token = uuid.uuid4().hex
        self.absorbed: dict[int, int] = {}
        self.timed = 1  # blocks per task from the last task's time (:func:`_next_task_size`)
        # tasks cut by time start at one block, and learn where to end as results come
        # in; lockstep tasks are cut by where the round ends, so without a budget a first
        # block is drawn here (as with n_jobs=1), which lets the criterion say it
        self.probed = not lockstep

    def task_size(self, block: int, start: int, end: int | None) -> int:
        """Blocks of the task at ``block``, in a round from ``start`` to ``end``.

        With lockstep and a known end: the round is cut evenly into the fewest
        tasks of at most ``_TASK_BLOCKS`` blocks, a multiple of ``n_workers``
        of them, so that every task batches well (one group) and no worker waits
        long for another at the end. Else sized by time, not past ``end``.
        """
        if not (self.lockstep and end is not None):
            return self.timed if end is None else max(1, min(self.timed, end - block))
        total = end - start
        n_tasks = -(-total // _TASK_BLOCKS)
        n_tasks = max(1, -(-n_tasks // self.n_workers) * self.n_workers)
        bounds = start + np.arange(1, n_tasks + 1) * total // n_tasks
        return int(bounds[np.searchsorted(bounds, block, side="right")] - block)


def _parallel_next(loop: _Loop, pool: _Pool) -> bool:
    """Whether the workers draw what comes next: whole blocks, and, for lockstep tasks,
    where they end is known or a first block drawn here let the criterion say it (if
    it still says nothing, the workers go on without an end)."""
    return (loop.state.block_offset == 0 and loop.room() == loop.spb
            and (pool.probed or _blocks_left(loop) is not None))


def _horizon(loop: _Loop) -> int | None:
    """The block before which a round of tasks ends: where a budget of samples ends,
    else where the criterion's completion says; None when unknown.

    Tasks past the point where sampling stops are evaluated for nothing (they are
    drained, not aborted), so that a round does not go beyond it.
    """
    k = _blocks_left(loop)
    return None if k is None else loop.state.next_block + max(k, 1)


def _parallel(utility, sampler, weights, entropy, game, loop, pool) -> bool:  # type: ignore[no-untyped-def]
    """A round of tasks of whole blocks on the workers; merge results in block order.

    Returns True when the criterion stopped sampling, False when the round ended
    without: at its horizon (:func:`_horizon`, updated as results come in), or
    where the next block must be drawn in part (a budget of samples ends inside
    it). The task generator is consumed lazily by joblib (``pre_dispatch`` tasks
    ahead), so workers never wait for each other within a round.
    """
    stop = threading.Event()
    end = [_horizon(loop)]

    def tasks(start: int):  # type: ignore[no-untyped-def]
        # runs in a thread of joblib's as tasks finish, while this one moves ``end``:
        # read it once a task
        block = start
        while not stop.is_set():
            last = end[0]
            if last is not None and block >= last:
                return
            k = pool.task_size(block, start, last)
            yield delayed(_run_task)(pool.token, utility, sampler, weights, entropy, game,
                                     range(block, block + k))
            block += k

    outcome: bool | None = None  # True: the criterion stopped; False: a partial block is next
    # batch_size=1: the tasks are sized here; joblib's auto-batching would hand two of
    # them to one worker
    parallel = Parallel(n_jobs=pool.n_jobs, return_as="generator", pre_dispatch="2*n_jobs",
                        batch_size=1)
    try:
        for blocks, n_evals, report, seconds, ident in parallel(tasks(loop.state.next_block)):
            if outcome is not None:
                continue  # drain the tasks dispatched before the stop: aborting them
                # would make joblib restart the worker pool (seconds per fit)
            outcome = _merge(loop, pool, blocks, n_evals, report, ident)
            if outcome is not None:
                stop.set()
                continue
            pool.timed = _next_task_size(seconds / max(len(blocks), 1), loop, pool.n_workers)
            horizon = _horizon(loop)
            end[0] = end[0] if horizon is None else horizon
    except KeyboardInterrupt:
        stop.set()
        _salvage_threads(pool.token, utility, sampler, weights, entropy, game, loop,
                         pool.absorbed)
        raise
    finally:
        stop.set()
    return bool(outcome)


def _merge(loop: _Loop, pool: _Pool, blocks: list[tuple[Moments, ...]], n_evals: int,
           report: FitReport, ident: int) -> bool | None:
    """Absorb a task's blocks in order: True when the criterion stopped, False when the
    next block must be drawn in part, None when sampling goes on."""
    pool.absorbed[ident] = pool.absorbed.get(ident, 0) + n_evals
    loop.state.n_evaluations += n_evals
    loop.state.report.merge(report)
    for block in blocks:
        if loop.room() < loop.spb:
            return False
        if loop.take(block, loop.spb):
            return True
    return None


def _snapshot(cache: dict[bytes, float]) -> dict[bytes, float]:
    """A copy of a cache that a worker thread may still be filling."""
    for _ in range(100):
        try:
            return dict(cache)
        except RuntimeError:  # it changed size while being copied: again
            continue
    return {}


def _salvage_threads(token, utility, sampler, weights, entropy, game, loop, absorbed) -> None:  # type: ignore[no-untyped-def]
    """After an interrupt under a backend of threads: the work of the tasks in flight.

    Their evaluators live in this process: every evaluation they finished is
    counted, and the blocks (and the part of a block) that their caches complete
    are taken in order, as in :func:`_salvage`. Under a backend of processes the
    tasks in flight are lost (neither counted nor used).
    """
    evaluators = [(key[1], ev) for key, ev in list(_WORKER_EVALUATORS.items())
                  if key[0] == token]
    if not evaluators:
        return
    union = CachedEvaluator(utility)
    for ident, ev in evaluators:
        loop.state.n_evaluations += (ev.n_evaluations - ev.evaluations_at_start
                                     - absorbed.get(ident, 0))
        union._cache.update(_snapshot(ev._cache))
        union._empty = ev._empty if union._empty is None else union._empty
        union._full = ev._full if union._full is None else union._full
    _salvage(union, sampler, weights, entropy, game, loop)


def _next_task_size(seconds_per_block: float, loop: _Loop, n_workers: int) -> int:
    """Blocks per task: about _TARGET_TASK_SECONDS, at most the estimated blocks left."""
    k = int(_TARGET_TASK_SECONDS / max(seconds_per_block, 1e-6))
    done = loop.completion
    if done > 0:
        left = loop.state.next_block * (1 - done) / done
        k = min(k, int(np.ceil(left / (2 * n_workers))))
    return int(np.clip(k, 1, 1024))


# --------------------------------------------------------------------------- fixed coalitions
def _codes_task(token: str, utility: Any, lo: int, hi: int, masks: Any,
                limit_threads: bool = True) -> tuple[Any, ...]:
    ev = _worker_evaluator(token, utility)
    evals0, report0 = ev.n_evaluations, ev.report()
    if masks is None:
        masks = masks_from_codes(np.arange(lo, hi, dtype=np.int64), ev.n)
    if limit_threads:
        with threadpool_limits(1):
            u = ev.evaluate(masks)
    else:
        u = ev.evaluate(masks)
    return u, ev.n_evaluations - evals0, ev.report().since(report0)


def _finished_part(token: str, utility: Any, task: tuple[Any, ...]) -> np.ndarray:
    """The utilities of the leading coalitions of an interrupted task that finished.

    They are in the in-process evaluator's cache; the first one missing ends the part.
    """
    ev = _worker_evaluator(token, utility)
    _, _, lo, hi, masks = task
    if masks is None:
        masks = masks_from_codes(np.arange(lo, hi, dtype=np.int64), ev.n)
    return cached_leading(ev, masks)


def evaluate_coalitions(
    utility: Any, state: TableState, *, masks: np.ndarray | None = None,
    n_jobs: Any = None, verbose: int = 0, desc: str = "evaluating",
) -> TableState:
    """Evaluate fixed coalitions, each once, from ``state.done`` to ``state.total``.

    The coalitions are the bit codes ``0 .. total - 1`` or the rows of ``masks``.
    Work goes in up to 256 tasks (``32 * n_jobs`` in parallel). On a
    KeyboardInterrupt the state keeps the tasks that finished (a prefix, in
    order), is marked ``interrupted`` and a warning says how far it got;
    ``evaluate_coalitions`` on it again continues.
    """
    lo0, total = state.done, state.total
    n_workers = effective_n_jobs(n_jobs)
    n_tasks = max(1, min(total - lo0, 256 if n_workers == 1 else 32 * n_workers))
    bounds = np.linspace(lo0, total, n_tasks + 1).astype(np.int64)
    token = uuid.uuid4().hex
    args = [(token, utility, int(lo), int(hi), None if masks is None else masks[lo:hi])
            for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
    out = [state.utilities]
    pbar = tqdm(total=total, initial=lo0, desc=desc, leave=False) if verbose > 0 else None
    state.interrupted = False
    stack = contextlib.ExitStack()
    try:
        if n_workers == 1:
            stack.enter_context(threadpool_limits(1))  # once, not per task
            results: Any = (_codes_task(*a, limit_threads=False) for a in args)
        else:
            results = Parallel(n_jobs=n_jobs, return_as="generator")(
                delayed(_codes_task)(*a) for a in args)
        for u, n_evals, report in results:
            out.append(u)
            state.n_evaluations += n_evals
            state.report.merge(report)
            if pbar is not None:
                pbar.update(u.shape[0])
    except KeyboardInterrupt:
        state.interrupted = True
        if n_workers == 1 and len(out) - 1 < len(args):  # the task in flight: what finished
            part = _finished_part(token, utility, args[len(out) - 1])
            out.append(part)
            state.n_evaluations += part.shape[0]
        done = sum(part.shape[0] for part in out)
        warnings.warn(
            f"Interrupted: {done} of {total} coalitions were evaluated; values that need "
            "the others are NaN. Fit again with warm_start=True to continue.",
            RuntimeWarning, stacklevel=3)
    finally:
        stack.close()
        if pbar is not None:
            pbar.close()
        _forget(token)
    state.utilities = np.concatenate(out)
    if state.done == total:
        state.status = Status.CONVERGED
    return state


# --------------------------------------------------------------------------- one game
class _Run:
    """The :class:`~skdvl.sampling._base.Runner` of one game: its seed, criterion and jobs."""

    def __init__(self, entropy: int, game: int, stopping: Callable[[], StoppingCriterion],
                 n_jobs: Any, verbose: int, desc: str) -> None:
        self.entropy, self.game, self.stopping = entropy, game, stopping
        self.n_jobs, self.verbose, self.desc = n_jobs, verbose, desc

    def sample(self, utility: Any, sampler: Any, weights: Any,
               state: EngineState | None) -> EngineState:
        return run_sampling(utility, sampler, weights, self.stopping(), entropy=self.entropy,
                            game=self.game, state=state, n_jobs=self.n_jobs,
                            verbose=self.verbose, desc=self.desc)

    def table(self, utility: Any, state: TableState, *,
              masks: np.ndarray | None = None) -> TableState:
        return evaluate_coalitions(utility, state, masks=masks, n_jobs=self.n_jobs,
                                   verbose=self.verbose, desc=self.desc)

    def evaluator(self, utility: Any) -> CachedEvaluator:
        return CachedEvaluator(utility)

    def block_rng(self, block: int) -> np.random.Generator:
        return _block_rng(self.entropy, self.game, block)


def value_game(
    sampler: Any, utility: Any, mass: np.ndarray, *, state: Any, entropy: int, game: int,
    stopping: Callable[[], StoppingCriterion], n_jobs: Any = None, verbose: int = 0,
    desc: str = "sampling",
) -> tuple[ValuationResult, Any]:
    """Value one game with ``sampler``: the result and the state ``warm_start`` continues.

    ``stopping`` makes the criterion (a factory: samplers that do not sample never
    build it); ``state`` is what an earlier call returned, or None. The sampler
    gets a :class:`_Run` bound to the game's seed ``(entropy, game)``.
    """
    run = _Run(entropy, game, stopping, n_jobs, verbose, desc)
    return sampler.value_game(utility, mass, state=state, run=run)
