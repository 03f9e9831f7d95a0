"""The Monte Carlo semivalue engine: seeded blocks, joblib dispatch, running moments.

Sampling is organised in *blocks* of a fixed number of samples. Block ``b`` of
game ``g`` draws its randomness from ``SeedSequence(entropy, spawn_key=(g, b))``,
so the samples do not depend on which worker computes the block. Workers return
per-block moments (count, mean, sum of squared deviations) and the main process
merges them in block order, checking the stopping criterion after each block:
values are identical for any ``n_jobs`` and joblib backend. Blocks are shipped
in a stream of tasks of several consecutive blocks (sized to take about half a
second), so the utility travels with each task but large arrays in it are
memory-mapped by joblib rather than copied; workers keep one evaluator (and
its coalition cache) per utility for the whole fit.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from joblib import Parallel, delayed, effective_n_jobs
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from skdvl._moments import Moments
from skdvl.sampling import _masks_from_codes
from skdvl.stopping import Progress, Status, StoppingCriterion
from skdvl.utility import FitReport

__all__ = ["Evaluator", "EngineState", "TableState", "run_sampling", "evaluate_coalitions"]

_TARGET_TASK_SECONDS = 0.5
_WORKER_EVALUATORS: dict[tuple[str, int], Evaluator] = {}


#: Whole blocks a lockstep sampler (permutations) gets per call on a batched utility:
#: its permutations' prefixes are fitted together. More blocks make fuller batches
#: and fewer fits past truncation points; a criterion that is not a budget may stop
#: inside the group, and the blocks after it are evaluated for nothing.
_LOCKSTEP_BLOCKS = 32

#: Bytes of coalition keys an evaluator's cache may hold (about 40 MB with overhead).
_CACHE_BYTES = 16_000_000


class Evaluator:
    """The engine's view of a utility: batched evaluation, counted, never twice the same.

    Uses the utility's vectorised ``evaluate(masks)`` when it has one, else
    calls it coalition by coalition. A batch of masks is deduplicated and looked
    up in a cache of the coalitions this evaluator already evaluated (bit-packed
    keys; the oldest are dropped beyond ``_CACHE_BYTES``), so a coalition drawn
    twice costs one evaluation. Caches u(empty) and u(N).
    """

    def __init__(self, utility: Any, cache: bool = True) -> None:
        self.utility = utility
        self.n = int(utility.n_players)
        self.batched = callable(getattr(utility, "evaluate", None))
        # prefixes of a truncated permutation per batched call: a utility may say (a
        # costly one wants fewer evaluated past the truncation point)
        self.prefix_step = max(1, int(getattr(utility, "prefix_step", 64))) if self.batched else 1
        self._calls = 0
        self._empty: float | None = None
        self._full: float | None = None
        self._cache: dict[bytes, float] = {}
        self._cache_size = max(1024, _CACHE_BYTES // (self.n // 8 + 64)) if cache else 0

    @property
    def n_evaluations(self) -> int:
        """Evaluations done: the utility's own count if it keeps one (cache hits excluded)."""
        return int(getattr(self.utility, "n_evaluations", self._calls))

    def report(self) -> FitReport:
        """A copy of the utility's report of fits and failures (empty if it keeps none)."""
        report = getattr(self.utility, "report", None)
        return report.copy() if isinstance(report, FitReport) else FitReport()

    def empty(self) -> float:
        if self._empty is None:
            self._empty = self._one(np.zeros(self.n, dtype=bool))
        return self._empty

    def full(self) -> float:
        if self._full is None:
            self._full = self._one(np.ones(self.n, dtype=bool))
        return self._full

    def _one(self, mask: np.ndarray) -> float:
        """One coalition: through the batched, cached path when there is one, so that
        it is evaluated once whether asked for here or in a batch of masks."""
        if self.batched:
            return float(self.evaluate(mask[None, :])[0])
        return self._call(np.flatnonzero(mask))

    def _call(self, subset: np.ndarray) -> float:
        self._calls += 1
        return float(self.utility(subset))

    def evaluate(self, masks: np.ndarray) -> np.ndarray:
        """Utilities of the coalitions ``masks`` (bool, (m, n)), each evaluated at most once."""
        m = masks.shape[0]
        if m == 0:
            return np.empty(0)
        if self._cache_size == 0:
            return self._evaluate(masks)
        keys = np.packbits(masks, axis=1)
        row_keys = [k.tobytes() for k in keys]
        cache = self._cache
        out = np.empty(m)
        todo: dict[bytes, list[int]] = {}
        for i, key in enumerate(row_keys):
            hit = cache.get(key)
            if hit is None:
                todo.setdefault(key, []).append(i)
            else:
                out[i] = hit
        if todo:
            first = np.fromiter((rows[0] for rows in todo.values()), np.intp, len(todo))
            u = self._evaluate(masks[first])
            for (key, rows), value in zip(todo.items(), u):
                out[rows] = value
                cache[key] = float(value)
            while len(cache) > self._cache_size:
                del cache[next(iter(cache))]
        return out

    def _evaluate(self, masks: np.ndarray) -> np.ndarray:
        if self.batched:
            self._calls += masks.shape[0]
            return np.asarray(self.utility.evaluate(masks), dtype=np.float64).reshape(-1)
        call, m = self.utility, masks.shape[0]
        self._calls += m
        return np.fromiter([call(np.flatnonzero(row)) for row in masks], np.float64, m)

    def prefixes(self, perm: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """u(perm[:j]) for j in range(lo, hi)."""
        if self.batched:
            rank = np.empty(self.n, dtype=np.intp)
            rank[perm] = np.arange(self.n)
            return self.evaluate(np.arange(lo, hi)[:, None] > rank[None, :])
        call = self.utility
        self._calls += hi - lo
        return np.fromiter([call(perm[:j]) for j in range(lo, hi)], np.float64, hi - lo)


# --------------------------------------------------------------------------- state
@dataclass
class EngineState:
    """Everything needed to continue sampling one game (``warm_start``).

    ``next_block`` is the first block not fully absorbed and ``block_offset`` the
    samples of it already absorbed (a budget of samples may end inside a block).
    """

    n: int
    moments: tuple[Any, ...]  # the sampler's statistics (per-player Moments by default)
    next_block: int = 0
    block_offset: int = 0
    n_samples: int = 0
    n_evaluations: int = 0
    report: FitReport = field(default_factory=FitReport)
    status: Status = Status.PENDING
    interrupted: bool = False

    @classmethod
    def new(cls, sampler: Any, n: int) -> EngineState:
        return cls(n, tuple(sampler.zeros(n)))

    def absorb(self, block: tuple[Moments, ...]) -> None:
        for mine, theirs in zip(self.moments, block):
            mine.merge(theirs)


@dataclass
class TableState:
    """The utilities of a fixed list of coalitions evaluated so far (exact, LOO)."""

    n: int
    total: int
    utilities: np.ndarray
    n_evaluations: int = 0
    report: FitReport = field(default_factory=FitReport)
    status: Status = Status.PENDING
    interrupted: bool = False

    @property
    def done(self) -> int:
        return int(self.utilities.shape[0])


def _block_rng(entropy: int, game: int, block: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(game, block)))


def _run_block(
    sampler: Any, ev: Evaluator, weights: np.ndarray | None, entropy: int, game: int,
    block: int, start: int = 0, stop: int | None = None,
) -> tuple[Moments, ...]:
    return sampler.run_block(ev, _block_rng(entropy, game, block), weights, block, start, stop)


def _worker_evaluator(token: str, utility: Any) -> Evaluator:
    """One evaluator per utility and worker thread, kept for the whole fit."""
    key = (token, threading.get_ident())
    ev = _WORKER_EVALUATORS.get(key)
    if ev is None:
        if len(_WORKER_EVALUATORS) > 16:
            _WORKER_EVALUATORS.clear()
        ev = _WORKER_EVALUATORS[key] = Evaluator(copy.copy(utility))
    return ev


def _forget(token: str) -> None:
    """Drop this process's evaluators of a finished run (threading backend)."""
    for key in [k for k in list(_WORKER_EVALUATORS) if k[0] == token]:
        _WORKER_EVALUATORS.pop(key, None)


def _run_blocks(
    sampler: Any, ev: Evaluator, weights: Any, entropy: int, game: int, blocks: range,
) -> list[tuple[Moments, ...]]:
    """Whole blocks, in order: together (``run_blocks``) for a lockstep sampler."""
    if sampler.lockstep and ev.batched:
        out: list[tuple[Moments, ...]] = []
        for lo in range(blocks.start, blocks.stop, _LOCKSTEP_BLOCKS):
            part = range(lo, min(lo + _LOCKSTEP_BLOCKS, blocks.stop))
            out.extend(sampler.run_blocks(
                ev, [(_block_rng(entropy, game, b), b) for b in part], weights))
        return out
    return [_run_block(sampler, ev, weights, entropy, game, b) for b in blocks]


def _run_task(
    token: str, utility: Any, sampler: Any, weights: Any, entropy: int, game: int,
    blocks: range,
) -> tuple[list[tuple[Moments, ...]], int, FitReport, float]:
    t0 = time.perf_counter()
    ev = _worker_evaluator(token, utility)
    evals0, report0 = ev.n_evaluations, ev.report()
    with threadpool_limits(1):
        out = _run_blocks(sampler, ev, weights, entropy, game, blocks)
    return (out, ev.n_evaluations - evals0, ev.report().since(report0),
            time.perf_counter() - t0)


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
    spent samples nothing. A KeyboardInterrupt stops sampling and returns the
    state of the blocks absorbed so far, with ``interrupted=True``.
    """
    n = int(utility.n_players)
    state = state if state is not None else EngineState.new(sampler, n)
    state.interrupted = False
    stopping.reset()
    pbar = tqdm(total=100, desc=desc, unit="%", leave=False) if verbose > 0 else None
    loop = _Loop(state, sampler, stopping, pbar)
    ev = Evaluator(utility)
    parallel = effective_n_jobs(n_jobs) > 1
    try:
        done = loop.check()
        with threadpool_limits(1):  # once: each call reads the process's memory map
            while not done:
                if parallel and state.block_offset == 0 and loop.room() == loop.spb:
                    done = _parallel(utility, sampler, weights, entropy, game, loop, n_jobs)
                if not done:
                    done = _sequential_block(ev, sampler, weights, entropy, game, loop)
    except KeyboardInterrupt:
        state.interrupted = True
        warnings.warn(
            f"Interrupted: returning the partial result after {state.n_samples} samples "
            f"({state.n_evaluations} utility evaluations). Players no finished sample "
            "reached have the value NaN; fit again with warm_start=True to continue.",
            RuntimeWarning, stacklevel=2)
    finally:
        if pbar is not None:
            pbar.close()
    return state


def _sequential_block(ev, sampler, weights, entropy, game, loop) -> bool:  # type: ignore[no-untyped-def]
    """Draw the next block (or the part of it the budget allows) here; True to stop.

    A lockstep sampler on a batched utility gets several whole blocks at once
    (as many as the criterion is expected to take, at most ``_LOCKSTEP_BLOCKS``,
    see :func:`_blocks_expected`); they are
    taken in order, and those after the one that stops sampling are dropped, so
    the result is the same as block by block.
    """
    state = loop.state
    start = state.block_offset
    room = loop.room()
    evals0, report0 = ev.n_evaluations, ev.report()
    if sampler.lockstep and ev.batched and start == 0 and room == loop.spb:
        k = _blocks_expected(loop)
        blocks = _run_blocks(sampler, ev, weights, entropy, game,
                             range(state.next_block, state.next_block + k))
        state.n_evaluations += ev.n_evaluations - evals0
        state.report.merge(ev.report().since(report0))
        return any(loop.take(block, loop.spb) for block in blocks)
    stop = start + room
    block = _run_block(sampler, ev, weights, entropy, game, state.next_block, start, stop)
    state.n_evaluations += ev.n_evaluations - evals0
    state.report.merge(ev.report().since(report0))
    return loop.take(block, stop - start)


def _blocks_expected(loop: _Loop) -> int:
    """Whole blocks to draw next: those left of a budget of samples, else as many as the
    criterion's completion so far says are left (one before any), in [1, _LOCKSTEP_BLOCKS]."""
    left = loop.stopping.samples_left(loop._progress())
    if left is not None:
        k = int(left) // loop.spb
    else:
        done = loop.completion
        # less a hair: 1/3 done after one block is 2.0000000000000004 blocks left, not 3
        k = int(np.ceil(loop.state.next_block * (1 - done) / done - 1e-9)) if done > 0 else 1
    return int(np.clip(k, 1, _LOCKSTEP_BLOCKS))


def _parallel(utility, sampler, weights, entropy, game, loop, n_jobs) -> bool:  # type: ignore[no-untyped-def]
    """Stream tasks of whole blocks to the workers; merge results in block order.

    Returns True when the criterion stopped sampling, False when the next block
    must be drawn in part (a budget of samples ends inside it). The task
    generator is consumed lazily by joblib (``pre_dispatch`` tasks ahead), so
    workers never wait for each other; the task size adapts to keep tasks near
    ``_TARGET_TASK_SECONDS`` without overshooting the remaining budget much.
    """
    token = uuid.uuid4().hex
    n_workers = effective_n_jobs(n_jobs)
    stop = threading.Event()
    size = [1]
    left = loop.stopping.samples_left(loop._progress())
    end = None if left is None else loop.state.next_block + int(left) // loop.spb

    def tasks():  # type: ignore[no-untyped-def]
        block = loop.state.next_block
        while not stop.is_set() and (end is None or block < end):
            k = size[0] if end is None else min(size[0], end - block)
            yield delayed(_run_task)(token, utility, sampler, weights, entropy, game,
                                     range(block, block + k))
            block += k

    outcome: bool | None = None  # True: the criterion stopped; False: a partial block is next
    parallel = Parallel(n_jobs=n_jobs, return_as="generator", pre_dispatch="2*n_jobs")
    try:
        for blocks, n_evals, report, seconds in parallel(tasks()):
            if outcome is not None:
                continue  # drain the tasks dispatched before the stop: aborting them
                # would make joblib restart the worker pool (seconds per fit)
            loop.state.n_evaluations += n_evals
            loop.state.report.merge(report)
            for block in blocks:
                if loop.room() < loop.spb:
                    outcome = False
                elif loop.take(block, loop.spb):
                    outcome = True
                if outcome is not None:
                    stop.set()
                    break
            size[0] = _next_task_size(seconds / max(len(blocks), 1), loop, n_workers)
    finally:
        stop.set()
        _forget(token)
    return bool(outcome)


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
        masks = _masks_from_codes(np.arange(lo, hi, dtype=np.int64), ev.n)
    if limit_threads:
        with threadpool_limits(1):
            u = ev.evaluate(masks)
    else:
        u = ev.evaluate(masks)
    return u, ev.n_evaluations - evals0, ev.report().since(report0)


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
