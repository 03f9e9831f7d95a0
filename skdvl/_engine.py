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

from skdvl.result import ValuationResult, _merge_moments
from skdvl.sampling import masks_from_codes
from skdvl.stopping import Progress, Status, StoppingCriterion

__all__ = ["Evaluator", "EngineState", "run_sampling", "evaluate_coalitions"]

_TARGET_TASK_SECONDS = 0.5
_WORKER_EVALUATORS: dict[tuple[str, int], Evaluator] = {}


class Evaluator:
    """The engine's view of a utility: batched evaluation, counted.

    Uses the utility's vectorised ``evaluate(masks)`` when it has one, else
    calls it coalition by coalition. Caches u(empty) and u(N).
    """

    def __init__(self, utility: Any) -> None:
        self.utility = utility
        self.n = int(utility.n_players)
        self.batched = callable(getattr(utility, "evaluate", None))
        self.prefix_step = 64 if self.batched else 1
        self._calls = 0
        self._empty: float | None = None
        self._full: float | None = None

    @property
    def n_evaluations(self) -> int:
        """Evaluations done: the utility's own count if it keeps one (cache hits excluded)."""
        return int(getattr(self.utility, "n_evaluations", self._calls))

    def errors(self) -> tuple[int, str | None]:
        return int(getattr(self.utility, "n_errors", 0)), getattr(self.utility, "first_error", None)

    def empty(self) -> float:
        if self._empty is None:
            self._empty = self._call(np.empty(0, dtype=np.intp))
        return self._empty

    def full(self) -> float:
        if self._full is None:
            self._full = self._call(np.arange(self.n))
        return self._full

    def _call(self, subset: np.ndarray) -> float:
        self._calls += 1
        return float(self.utility(subset))

    def evaluate(self, masks: np.ndarray) -> np.ndarray:
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


# --------------------------------------------------------------------------- moments
@dataclass
class _Moments:
    """Running count, mean and sum of squared deviations per player."""

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def zeros(cls, n: int) -> _Moments:
        return cls(np.zeros(n, dtype=np.int64), np.zeros(n), np.zeros(n))

    @classmethod
    def of_samples(cls, players: np.ndarray, values: np.ndarray, n: int) -> _Moments:
        count = np.bincount(players, minlength=n)
        total = np.bincount(players, weights=values, minlength=n)
        mean = np.divide(total, count, out=np.zeros(n), where=count > 0)
        m2 = np.bincount(players, weights=(values - mean[players]) ** 2, minlength=n)
        return cls(count, mean, m2)

    @classmethod
    def of_masked(cls, masks: np.ndarray, u: np.ndarray) -> _Moments:
        """Moments of ``u`` over the samples where each player's mask is True."""
        center = u.mean() if u.size else 0.0
        v = u - center
        w = masks.astype(np.float64)
        count = masks.sum(axis=0).astype(np.int64)
        s1, s2 = w.T @ v, w.T @ (v * v)
        mean = np.divide(s1, count, out=np.zeros_like(s1), where=count > 0)
        m2 = np.maximum(s2 - count * mean**2, 0.0)
        return cls(count, mean + center * (count > 0), m2)

    def merge(self, other: _Moments) -> None:
        self.mean, self.m2, self.count = _merge_moments(
            self.mean, self.m2, self.count, other.mean, other.m2, other.count)

    def variance(self) -> np.ndarray:
        return np.divide(self.m2, self.count, out=np.zeros_like(self.m2), where=self.count > 0)


def _msr_result(inside: _Moments, outside: _Moments) -> ValuationResult:
    """Banzhaf from MSR moments: mean with minus mean without; variance of the difference."""
    both = (inside.count > 0) & (outside.count > 0)
    values = np.where(both, inside.mean - outside.mean, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        var_est = inside.variance() / inside.count + outside.variance() / outside.count
    counts = np.where(both, inside.count + outside.count, 0)
    variances = np.where(both, var_est * counts, 0.0)
    return ValuationResult(values, variances=variances, counts=counts)


# --------------------------------------------------------------------------- state
@dataclass
class EngineState:
    """Everything needed to continue sampling one game (``warm_start``)."""

    kind: str
    n: int
    moments: list[_Moments]
    next_block: int = 0
    n_samples: int = 0
    n_evaluations: int = 0
    n_errors: int = 0
    first_error: str | None = None
    status: Status = Status.PENDING
    interrupted: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def new(cls, kind: str, n: int) -> EngineState:
        parts = 2 if kind == "msr" else 1
        return cls(kind, n, [_Moments.zeros(n) for _ in range(parts)])

    def result(self, algorithm: str = "") -> ValuationResult:
        if self.kind == "msr":
            res = _msr_result(*self.moments)
        else:
            m = self.moments[0]
            res = ValuationResult(m.mean, variances=m.variance(), counts=m.count)
        res.algorithm = algorithm
        return res

    def counts(self) -> np.ndarray:
        """Updates per player so far (MSR: samples with and without the player)."""
        if self.kind == "msr":
            inside, outside = self.moments
            return np.where((inside.count > 0) & (outside.count > 0),
                            inside.count + outside.count, 0)
        return self.moments[0].count

    def absorb(self, block: tuple[Any, ...]) -> None:
        for mine, theirs in zip(self.moments, block):
            mine.merge(theirs)

    def add_errors(self, n_errors: int, first_error: str | None) -> None:
        self.n_errors += n_errors
        if self.first_error is None:
            self.first_error = first_error


def _block_rng(entropy: int, game: int, block: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(game, block)))


def _run_block(
    sampler: Any, ev: Evaluator, weights: np.ndarray | None, entropy: int, game: int,
    block: int,
) -> tuple[_Moments, ...]:
    rng = _block_rng(entropy, game, block)
    if sampler.kind == "msr":
        masks, u = sampler.run_block(ev, ev.n, rng)
        return _Moments.of_masked(masks, u), _Moments.of_masked(~masks, u)
    players, values = sampler.run_block(ev, ev.n, rng, weights, block)
    return (_Moments.of_samples(players, values, ev.n),)


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


def _run_task(
    token: str, utility: Any, sampler: Any, weights: Any, entropy: int, game: int,
    blocks: range,
) -> tuple[list[tuple[_Moments, ...]], int, int, str | None, float]:
    t0 = time.perf_counter()
    ev = _worker_evaluator(token, utility)
    evals0, err0 = ev.n_evaluations, ev.errors()[0]
    with threadpool_limits(1):
        out = [_run_block(sampler, ev, weights, entropy, game, b) for b in blocks]
    n_err, first = ev.errors()
    return out, ev.n_evaluations - evals0, n_err - err0, first, time.perf_counter() - t0


# --------------------------------------------------------------------------- sampling loop
class _Loop:
    """Merges blocks in order and checks the criterion after each."""

    def __init__(self, state: EngineState, stopping: StoppingCriterion, algorithm: str,
                 pbar: Any, samples_per_block: int) -> None:
        self.state, self.stopping, self.algorithm = state, stopping, algorithm
        self.pbar, self.spb = pbar, samples_per_block
        self.completion = 0.0

    def take(self, block: tuple[_Moments, ...]) -> bool:
        """Absorb one block; True when sampling must stop."""
        st = self.state
        st.absorb(block)
        st.next_block += 1
        st.n_samples += self.spb
        progress = Progress(lambda: st.result(self.algorithm), st.n_samples,
                            st.n_evaluations, counts=st.counts())
        st.status = self.stopping(progress)
        self.completion = self.stopping.completion(progress)
        if self.pbar is not None:
            self.pbar.n = round(100 * self.completion, 1)
            self.pbar.refresh()
        return st.status != Status.PENDING


def run_sampling(
    utility: Any, sampler: Any, weights: np.ndarray | None, stopping: StoppingCriterion, *,
    entropy: int, game: int = 0, state: EngineState | None = None, n_jobs: Any = None,
    verbose: int = 0, algorithm: str = "", desc: str = "sampling",
) -> EngineState:
    """Sample until ``stopping`` says stop; return the (new or continued) state.

    A KeyboardInterrupt stops sampling and returns the partial state with
    ``interrupted=True``.
    """
    n = int(utility.n_players)
    state = state if state is not None else EngineState.new(sampler.kind, n)
    stopping.reset()
    pbar = tqdm(total=100, desc=desc, unit="%", leave=False) if verbose > 0 else None
    loop = _Loop(state, stopping, algorithm, pbar, sampler.samples_per_block)
    try:
        if effective_n_jobs(n_jobs) == 1:
            _sequential(utility, sampler, weights, entropy, game, loop)
        else:
            _parallel(utility, sampler, weights, entropy, game, loop, n_jobs)
    except KeyboardInterrupt:
        state.interrupted = True
        warnings.warn(
            f"Interrupted: returning the partial result after {state.n_samples} samples "
            f"({state.n_evaluations} utility evaluations).", RuntimeWarning, stacklevel=2)
    finally:
        if pbar is not None:
            pbar.close()
    return state


def _sequential(utility, sampler, weights, entropy, game, loop) -> None:  # type: ignore[no-untyped-def]
    ev = Evaluator(utility)
    state = loop.state
    with threadpool_limits(1):
        while True:
            evals0, err0 = ev.n_evaluations, ev.errors()[0]
            block = _run_block(sampler, ev, weights, entropy, game, state.next_block)
            state.n_evaluations += ev.n_evaluations - evals0
            n_err, first = ev.errors()
            state.add_errors(n_err - err0, first)
            if loop.take(block):
                return


def _parallel(utility, sampler, weights, entropy, game, loop, n_jobs) -> None:  # type: ignore[no-untyped-def]
    """Stream tasks of consecutive blocks to the workers; merge results in block order.

    The task generator is consumed lazily by joblib (``pre_dispatch`` tasks ahead),
    so workers never wait for each other; the task size adapts to keep tasks near
    ``_TARGET_TASK_SECONDS`` without overshooting the remaining budget much.
    """
    token = uuid.uuid4().hex
    n_workers = effective_n_jobs(n_jobs)
    stop = threading.Event()
    size = [1]

    def tasks():  # type: ignore[no-untyped-def]
        block = loop.state.next_block
        while not stop.is_set():
            k = size[0]
            yield delayed(_run_task)(token, utility, sampler, weights, entropy, game,
                                     range(block, block + k))
            block += k

    with warnings.catch_warnings():
        # Stopping cancels the blocks in flight on purpose.
        warnings.filterwarnings("ignore", message=".*tasks which were still being processed")
        parallel = Parallel(n_jobs=n_jobs, return_as="generator", pre_dispatch="2*n_jobs")
        try:
            for blocks, n_evals, n_err, first, seconds in parallel(tasks()):
                loop.state.n_evaluations += n_evals
                loop.state.add_errors(n_err, first)
                for block in blocks:
                    if loop.take(block):
                        stop.set()
                        return
                size[0] = _next_task_size(seconds / max(len(blocks), 1), loop, n_workers)
        finally:
            stop.set()
            _forget(token)


def _next_task_size(seconds_per_block: float, loop: _Loop, n_workers: int) -> int:
    """Blocks per task: about _TARGET_TASK_SECONDS, at most the estimated blocks left."""
    k = int(_TARGET_TASK_SECONDS / max(seconds_per_block, 1e-6))
    done = loop.completion
    if done > 0:
        left = loop.state.next_block * (1 - done) / done
        k = min(k, int(np.ceil(left / (2 * n_workers))))
    return int(np.clip(k, 1, 1024))


# --------------------------------------------------------------------------- fixed coalitions
def _codes_task(token: str, utility: Any, lo: int, hi: int, masks: Any) -> tuple[Any, ...]:
    ev = _worker_evaluator(token, utility)
    evals0, err0 = ev.n_evaluations, ev.errors()[0]
    if masks is None:
        masks = masks_from_codes(np.arange(lo, hi, dtype=np.int64), ev.n)
    with threadpool_limits(1):
        u = ev.evaluate(masks)
    n_err, first = ev.errors()
    return u, ev.n_evaluations - evals0, n_err - err0, first


def evaluate_coalitions(
    utility: Any, *, n_codes: int | None = None, masks: np.ndarray | None = None,
    n_jobs: Any = None, verbose: int = 0, desc: str = "evaluating",
) -> tuple[np.ndarray, int, int, str | None]:
    """Evaluate fixed coalitions, each once: all ``n_codes`` bit codes, or ``masks``.

    Returns (utilities, n_evaluations, n_errors, first_error).
    """
    total = int(masks.shape[0] if masks is not None else (n_codes or 0))
    n_workers = effective_n_jobs(n_jobs)
    n_tasks = max(1, min(total, 8 * n_workers if n_workers > 1 else 1, 256))
    if verbose > 0:
        n_tasks = max(n_tasks, min(total, 100))
    bounds = np.linspace(0, total, n_tasks + 1).astype(np.int64)
    token = uuid.uuid4().hex
    args = [(token, utility, int(lo), int(hi), None if masks is None else masks[lo:hi])
            for lo, hi in zip(bounds[:-1], bounds[1:])]
    out, n_evals, n_err, first = [], 0, 0, None
    pbar = tqdm(total=total, desc=desc, leave=False) if verbose > 0 else None
    if n_workers == 1:
        results: Any = (_codes_task(*a) for a in args)
    else:
        results = Parallel(n_jobs=n_jobs, return_as="generator")(
            delayed(_codes_task)(*a) for a in args)
    for u, e, k, f in results:
        out.append(u)
        n_evals, n_err = n_evals + e, n_err + k
        first = first or f
        if pbar is not None:
            pbar.update(u.shape[0])
    if pbar is not None:
        pbar.close()
    _forget(token)
    return np.concatenate(out), n_evals, n_err, first
