"""Shapley and Banzhaf estimators: skdvl's samplers against shapiq 1.8's approximators.

Run from the repository root with our venv::

    python benchmarks/bench_estimators.py                 # full run (see README for time)
    python benchmarks/bench_estimators.py --quick         # n = 40 airport + bc16, 3 seeds
    python benchmarks/bench_estimators.py --games bc16 knn200 --seeds 5
    python benchmarks/bench_estimators.py --parts noisy   # the noisy-label task only

shapiq runs in its own venv (``benchmarks/shapiq_env.py``, Python >= 3.12) through
``run_shapiq`` with ``benchmarks/shapiq_side/estimators.py``; skdvl runs in this process
on the same games and budgets. Both halves evaluate the same games: the analytic games are
skdvl's (:mod:`skdvl.games`) here and the same formulas rewritten on the shapiq side, and
the worth of a few hundred random coalitions is compared between the two; the table and
KNN games are one numpy implementation (``shapiq_side/estimators.py``) used by both.

Games (exact values known)
--------------------------
airport40/100  AirportGame, costs uniform on [1, 10] (seed 0)
voting40/100   AsymmetricVotingGame, distinct integer weights, quota half the total + 1
shoes40        ShoesGame, 16 left and 24 right shoes: u(S) = min(left, right) in S
symvoting40    SymmetricVotingGame: u(S) = 1 if |S| > n / 2
miner40        MinerGame: u(S) = floor(|S| / 2)
bc16           LogisticRegression on 16 breast-cancer rows, u(S) = 1 - log-loss / log 2 on
               100 validation rows (0 for the empty and one-class coalitions: a coin flip),
               all 2^16 utilities precomputed once (cached in results/) and looked up
knn200/1000    KNN-classification utility of Jia et al. (2019), K = 5, make_classification;
               exact Shapley values from skdvl.KNNShapley (checked against enumeration at
               n = 10 before use); exact Banzhaf values are unknown, so Banzhaf is skipped

Budgets are utility calls (``10n ... 1000n``); each estimator's actual calls are recorded
(``n_utility_evaluations_`` for skdvl, rows passed to the game for shapiq) and are the
x-axis of the plot. Metrics per run: MSE against the exact values, Spearman correlation,
the share of the exact lowest 10% among the estimate's lowest 10%, and for skdvl the share
of rows whose exact value lies within 1.96 standard errors.

Results: a table on stdout, ``results/estimators.json`` (every run), and
``results/estimators.png`` (MSE vs utility calls, log-log). The noisy part writes
``results/estimators_noisy.json``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one BLAS thread per process, on both sides

import argparse
import hashlib
import json
import math
import platform
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR / "shapiq_side"))
from bench_semivalues import _jsonable
from estimators import APPROXIMATORS, KNNGame, TableGame  # numpy-only games, both halves
from shapiq_env import run_shapiq

SIDE_SCRIPT = BENCH_DIR / "shapiq_side" / "estimators.py"
RESULTS_DIR = BENCH_DIR / "results"

SKDVL_SHAPLEY = ["permutation", "antithetic", "owen", "kernel", "leverage", "svarm",
                 "regression_msr"]
SKDVL_BANZHAF = ["msr", "kernel", "regression_msr", "svarm"]
SHAPIQ_ALL = [name for name in APPROXIMATORS if name != "KernelSHAP(paired)"]

#: budget multiplier (of n) -> seeds, unless --seeds is given
SEEDS_FULL = {10: 20, 30: 20, 100: 10, 300: 5, 1000: 3}
SEEDS_QUICK = {10: 3, 30: 3, 100: 3, 300: 3, 1000: 3}
GAMES = {
    "airport40": {"kind": "airport", "n": 40, "mults": [10, 30, 100, 300, 1000]},
    "voting40": {"kind": "voting", "n": 40, "mults": [10, 30, 100, 300, 1000]},
    "shoes40": {"kind": "shoes", "n": 40, "mults": [10, 30, 100, 300, 1000]},
    "symvoting40": {"kind": "symvoting", "n": 40, "mults": [10, 30, 100, 300, 1000]},
    "miner40": {"kind": "miner", "n": 40, "mults": [10, 30, 100, 300, 1000]},
    "bc16": {"kind": "table", "n": 16, "mults": [10, 30, 100, 300, 1000]},
    "airport100": {"kind": "airport", "n": 100, "mults": [10, 30, 100, 300]},
    "voting100": {"kind": "voting", "n": 100, "mults": [10, 30, 100, 300]},
    "knn200": {"kind": "knn", "n": 200, "mults": [10, 30, 100]},
    "knn1000": {"kind": "knn", "n": 1000, "mults": [10, 30], "max_seeds": 5},
}
QUICK_GAMES = ["airport40", "bc16"]
KNN_K, KNN_VAL = 5, 100
BC_N, BC_VAL = 16, 100


# --------------------------------------------------------------------------- games
def _check_masks(n: int, rng: np.random.Generator, m: int = 300) -> np.ndarray:
    """``m`` coalitions of uniformly random sizes (the empty and full ones included)."""
    sizes = rng.integers(0, n + 1, m)
    sizes[:2] = 0, n
    masks = np.zeros((m, n), dtype=bool)
    for row, s in zip(masks, sizes):
        row[rng.permutation(n)[:s]] = True
    return masks


def _bc16_table() -> tuple[np.ndarray, str]:
    """All 2^16 utilities of the breast-cancer game, cached in results/ (minutes once)."""
    import sklearn
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    from skdvl.utility import ModelUtility

    spec = f"bc16 v1 n={BC_N} val={BC_VAL} seed=0 C=1 score=1-logloss/log2"
    tag = hashlib.sha256(spec.encode()).hexdigest()[:8]
    path = RESULTS_DIR / f"estimators_bc16_table_{tag}.npy"
    if path.exists():
        return np.load(path), str(path)
    X, y = load_breast_cancer(return_X_y=True)
    rest, X_val, y_rest, y_val = train_test_split(X, y, test_size=BC_VAL, stratify=y,
                                                  random_state=0)
    scaler = StandardScaler().fit(rest)
    X_tr, _, y_tr, _ = train_test_split(rest, y_rest, train_size=BC_N, stratify=y_rest,
                                        random_state=0)

    def gain(model, X, y):  # 1 - log-loss / log 2: 0 for a coin flip, 1 for certainty
        return 1.0 - log_loss(y, model.predict_proba(X), labels=[0, 1]) / math.log(2)

    u = ModelUtility(LogisticRegression(max_iter=1000), scaler.transform(X_tr), y_tr,
                     scaler.transform(X_val), y_val, scoring=gain, cache_size=0)
    print(f"computing the 2^{BC_N} utilities of bc16 (sklearn {sklearn.__version__}) ...",
          file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    codes = np.arange(1 << BC_N)
    table = np.array([u(np.flatnonzero((c >> np.arange(BC_N)) & 1)) for c in codes])
    print(f"  done in {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, table)
    return table, str(path)


def _knn_data(n: int, n_val: int, seed: int = 0):
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=n + n_val, n_features=10, n_informative=5,
                               n_redundant=2, flip_y=0.1, class_sep=0.8,
                               random_state=seed)
    return X[:n], y[:n], X[n:], y[n:]


def _knn_game(X, y, X_val, y_val, k: int) -> KNNGame:
    """The KNNGame of these data: rows ranked by squared Euclidean distance, ties by index."""
    d = ((X_val[:, None, :] - X[None, :, :]) ** 2).sum(axis=2)
    order = np.argsort(d, axis=1, kind="stable")
    match = (y[order] == y_val[:, None]).astype(np.float64)
    return KNNGame(order, match, k)


def _knn_shapley(X, y, X_val, y_val, k: int) -> np.ndarray:
    from skdvl import KNNShapley

    return np.asarray(KNNShapley(n_neighbors=k).fit(X, y, X_val=X_val, y_val=y_val).values_)


def verify_knn_game(n: int = 10, n_val: int = 7, k: int = KNN_K) -> float:
    """Max |KNNShapley - exact enumeration of KNNGame| at ``n`` players (raises if > 1e-12)."""
    from skdvl import ShapleyValuer

    X, y, X_val, y_val = _knn_data(n, n_val, seed=1)
    game = _knn_game(X, y, X_val, y_val, k)
    enum = ShapleyValuer(utility=game, sampler="exact").fit().values_
    closed = _knn_shapley(X, y, X_val, y_val, k)
    err = float(np.max(np.abs(enum - closed)))
    if err > 1e-12:
        raise AssertionError(f"KNNGame is not the game KNNShapley values: max diff {err:.3g}")
    return err


def build_game(name: str) -> dict:
    """The skdvl game, its parameters for the shapiq side, and exact values."""
    from skdvl import BanzhafValuer, ShapleyValuer
    from skdvl.games import AirportGame, AsymmetricVotingGame

    spec = GAMES[name]
    kind, n = spec["kind"], spec["n"]
    rng = np.random.default_rng(0)
    info: dict = {"name": name, "kind": kind, "n": n}
    if kind == "airport":
        costs = rng.uniform(1.0, 10.0, n)
        game, params = AirportGame(costs), {"costs": costs}
    elif kind == "voting":
        weights = rng.permutation(np.arange(1, 3 * n + 1))[:n]
        quota = int(weights.sum() // 2 + 1)
        game = AsymmetricVotingGame(weights, quota)
        params = {"weights": weights, "quota": np.array(quota)}
    elif kind == "shoes":
        from skdvl.games import ShoesGame

        game = ShoesGame(n // 2 - n // 10, n // 2 + n // 10)
        params = {"n_left": np.array(game.n_left), "n_right": np.array(game.n_right)}
    elif kind in ("symvoting", "miner"):
        from skdvl.games import MinerGame, SymmetricVotingGame

        game = (SymmetricVotingGame if kind == "symvoting" else MinerGame)(n)
        params = {"n_players": np.array(n)}
    elif kind == "table":
        table, path = _bc16_table()
        game, params = TableGame(table), {"table": table}
        info["table_path"] = str(Path(path).relative_to(BENCH_DIR.parent))
    elif kind == "knn":
        X, y, X_val, y_val = _knn_data(n, KNN_VAL)
        game = _knn_game(X, y, X_val, y_val, KNN_K)
        params = {"order": game.order, "match": game.match, "k": np.array(KNN_K)}
    else:
        raise ValueError(kind)
    if kind == "table":
        sv = ShapleyValuer(utility=game, sampler="exact").fit().values_
        bv = BanzhafValuer(utility=game, sampler="exact").fit().values_
    elif kind == "knn":
        sv, bv = _knn_shapley(X, y, X_val, y_val, KNN_K), None
        full = game.evaluate(np.ones((1, n), dtype=bool))[0]
        info["efficiency_gap"] = float(abs(sv.sum() - full))  # u(empty) = 0
        if info["efficiency_gap"] > 1e-9:
            raise AssertionError(f"{name}: KNNShapley values do not add up to u(N)")
    else:
        sv, bv = game.shapley_values(), game.banzhaf_values()
    params["check"] = _check_masks(n, np.random.default_rng(1))
    info.update(game=game, params=params, exact={"SV": np.asarray(sv, dtype=float)})
    if bv is not None:
        info["exact"]["BV"] = np.asarray(bv, dtype=float)
    info["utility_range"] = [float(np.min(game.evaluate(params["check"]))),
                             float(np.max(game.evaluate(params["check"])))]
    return info


# --------------------------------------------------------------------------- skdvl half
_CALLS_PER_SAMPLE: dict = {}


def _sampler(name: str):
    """A sampler name, or ``Class(key=value, ...)`` of skdvl.sampling with literal values
    (``"HybridMSRSampler(surrogate='linear', paired=True)"``)."""
    import ast

    import skdvl.sampling

    if "(" not in name:
        return name
    call = ast.parse(name, mode="eval").body
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
        raise ValueError(f"not a sampler call: {name!r}")
    kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
    return getattr(skdvl.sampling, call.func.id)(**kwargs)


def _calls_model(cls, sampler: str, game, probe=(10, 50), **params) -> tuple[float, float]:
    """Utility calls of ``k`` samples of ``sampler`` on ``game``, as ``a + b k``.

    Measured once per (valuer, sampler, n) from two short fits: a permutation costs
    about n calls, a toggle sample n + 1, a paired coalition 2, and some samplers first
    enumerate a border of small and large coalitions (the intercept ``a``).
    """
    from skdvl.stopping import MaxSamples

    key = (cls.__name__, sampler, game.n_players, tuple(sorted(params.items())))
    if key not in _CALLS_PER_SAMPLE:
        def calls(k: int) -> int:
            v = cls(utility=game, sampler=_sampler(sampler), stopping=MaxSamples(k),
                    max_updates=None,
                    random_state=0, **params)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                v.fit()
            return v.n_utility_evaluations_

        evals = [calls(k) for k in probe]
        while evals[1] == evals[0] and probe[1] < 10**6:  # a warm-up covers both probes
            probe = (probe[1], 10 * probe[1])
            evals = [evals[1], calls(probe[1])]
        slope = max((evals[1] - evals[0]) / (probe[1] - probe[0]), 1e-9)
        _CALLS_PER_SAMPLE[key] = (evals[0] - slope * probe[0], slope)
    return _CALLS_PER_SAMPLE[key]


def _samples_for(cls, sampler: str, game, budget: int, **params) -> int:
    """Samples of ``sampler`` that cost about ``budget`` utility calls on ``game``."""
    a, b = _calls_model(cls, sampler, game, **params)
    return max(1, int(round((budget - a) / b)))


def skdvl_available(names_by_index: dict) -> tuple[dict, list[str]]:
    """The samplers that this checkout has (others are skipped with a note)."""
    from skdvl import BanzhafValuer, ShapleyValuer
    from skdvl.games import AirportGame
    from skdvl.stopping import MaxSamples

    ok, notes = {}, []
    for index, names in names_by_index.items():
        cls = ShapleyValuer if index == "SV" else BanzhafValuer
        ok[index] = []
        for s in names:
            try:
                v = cls(utility=AirportGame([1.0, 2.0, 3.0, 4.0]), sampler=_sampler(s),
                        stopping=MaxSamples(8), max_updates=None, random_state=0)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    v.fit()
                ok[index].append(s)
            except Exception as exc:  # noqa: BLE001 - reported and skipped
                notes.append(f"skdvl {cls.__name__}(sampler={s!r}) skipped: "
                             f"{type(exc).__name__}: {str(exc)[:160]}")
    return ok, notes


class _Budget:
    """Time caps: a run slower than ``run_s`` ends its estimator's work on a game (the
    remaining seeds of that budget and the larger budgets); so does ``total_s`` spent."""

    def __init__(self, run_s: float, total_s: float) -> None:
        self.run_s, self.total_s, self.spent, self.why = run_s, total_s, 0.0, None

    def add(self, wall: float, budget: int) -> None:
        self.spent += wall
        if wall > self.run_s:
            self.why = f"a run at budget {budget} took {wall:.1f}s > {self.run_s}s"
        elif self.spent > self.total_s:
            self.why = f"{self.spent:.0f}s spent on this game > {self.total_s}s"


def skdvl_game(info: dict, samplers: dict, budgets: list[int], seeds_for, caps: tuple
               ) -> tuple[list[dict], list[np.ndarray], list[np.ndarray], list[dict]]:
    from skdvl import BanzhafValuer, ShapleyValuer
    from skdvl.stopping import MaxSamples

    game = info["game"]
    runs, ests, errs, skipped = [], [], [], []
    for index, names in samplers.items():
        if index not in info["exact"]:
            continue
        cls = ShapleyValuer if index == "SV" else BanzhafValuer
        for s in names:
            cap = _Budget(*caps)
            for budget in budgets:
                # "auto" gets the budget as users give it (max_updates * n calls), so that
                # its rule sees the budget; the others a number of samples of that cost
                by_updates = s == "auto" and budget % game.n_players == 0
                k = budget // game.n_players if by_updates else _samples_for(
                    cls, s, game, budget)
                done = 0
                for seed in seeds_for(budget):
                    if cap.why:
                        break
                    budget_kw = ({"max_updates": k} if by_updates else
                                 {"stopping": MaxSamples(k), "max_updates": None})
                    v = cls(utility=game, sampler=_sampler(s), random_state=seed,
                            **budget_kw)
                    t0 = time.perf_counter()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        v.fit()
                    wall = time.perf_counter() - t0
                    cap.add(wall, budget)
                    done += 1
                    ests.append(np.asarray(v.values_, dtype=float))
                    errs.append(np.asarray(v.stderr_, dtype=float))
                    runs.append({"library": "skdvl", "estimator": s, "index": index,
                                 "budget": budget, "seed": seed, "samples": k,
                                 "n_evals": int(v.n_utility_evaluations_), "wall_s": wall,
                                 "sampler": repr(v.sampler_)})
                if done < len(seeds_for(budget)):
                    skipped.append({"library": "skdvl", "estimator": s, "index": index,
                                    "budget": budget, "seeds_run": done, "why": cap.why})
                print(f"  skdvl {info['name']} {index} {s} budget={budget}: {done} seeds, "
                      f"{cap.spent:.1f}s so far", file=sys.stderr, flush=True)
    return runs, ests, errs, skipped


# --------------------------------------------------------------------------- metrics
def metrics(est: np.ndarray, exact: np.ndarray, stderr: np.ndarray | None = None) -> dict:
    n_nan = int(np.isnan(est).sum())
    est = np.nan_to_num(est, nan=0.0)  # a value never sampled counts as 0
    k = max(1, math.ceil(0.1 * len(exact)))
    low_exact = set(np.argsort(exact, kind="stable")[:k].tolist())
    low_est = set(np.argsort(est, kind="stable")[:k].tolist())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant estimate has no rank correlation
        rho = spearmanr(est, exact)[0]
    out = {"mse": float(np.mean((est - exact) ** 2)),
           "spearman": None if not np.isfinite(rho) else float(rho),
           "bottom10": len(low_exact & low_est) / k, "n_nan": n_nan}
    if stderr is not None:
        ok = np.isfinite(stderr)
        out["coverage"] = float(np.mean(ok & (np.abs(est - exact) <= 1.96 * np.where(
            ok, stderr, 0.0))))
    return out


def summarise(runs: list[dict]) -> list[dict]:
    """Means over seeds per (library, index, estimator, budget)."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["library"], r["index"], r["estimator"], r["budget"]), []).append(r)
    rows = []
    for (lib, index, name, budget), rs in groups.items():
        row = {"library": lib, "index": index, "estimator": name, "budget": budget,
               "seeds": len(rs)}
        for key in ("mse", "spearman", "bottom10", "coverage", "n_evals", "wall_s"):
            vals = [r[key] for r in rs if r.get(key) is not None]
            row[key] = float(np.mean(vals)) if vals else None
        row["mse_sem"] = float(np.std([r["mse"] for r in rs]) / math.sqrt(len(rs)))
        row["n_nan"] = int(sum(r["n_nan"] for r in rs))
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- report
def _g(x, spec=".2e"):
    return "-" if x is None else format(x, spec)


def _label(row: dict) -> str:
    return f"{row['library']}:{row['estimator']}"


def report_game(name: str, info: dict, rows: list[dict]) -> str:
    lines = [f"\n### {name} (n = {info['n']})\n"]
    for index in ("SV", "BV"):
        sub = [r for r in rows if r["index"] == index]
        if not sub:
            continue
        budgets = sorted({r["budget"] for r in sub})
        by = {(_label(r), r["budget"]): r for r in sub}
        labels = sorted({_label(r) for r in sub}, key=lambda s: (not s.startswith("skdvl"), s))
        title = "Shapley" if index == "SV" else "Banzhaf"
        lines.append(f"{title}: mean MSE over seeds at each budget (utility calls; "
                     "column = nominal budget, last column = actual calls / nominal, "
                     "mean over budgets)\n")
        lines.append("| estimator | " + " | ".join(f"{b:,}" for b in budgets)
                     + " | calls/budget | wall s (largest budget) |")
        lines.append("| --- " * (len(budgets) + 3) + "|")
        for lab in labels:
            cells = [by.get((lab, b)) for b in budgets]
            ratio = [c["n_evals"] / c["budget"] for c in cells if c]
            last = next((c for c in reversed(cells) if c), None)
            lines.append(f"| {lab} | " + " | ".join(_g(c["mse"]) if c else "skipped"
                                                    for c in cells)
                         + f" | {np.mean(ratio):.2f} | {_g(last and last['wall_s'], '.3f')} |")

        def best(lib, b, only=None, sub=sub):
            c = [r for r in sub if r["library"] == lib and r["budget"] == b
                 and (only is None or r["estimator"] == only)]
            return min(c, key=lambda r: r["mse"]) if c else None

        extra = []
        if index == "SV":
            extra.append(("permutation / best skdvl", lambda b: (
                best("skdvl", b, "permutation"), best("skdvl", b))))
        else:
            extra.append(("msr / best skdvl", lambda b: (
                best("skdvl", b, "msr"), best("skdvl", b))))
        extra.append(("best shapiq / best skdvl", lambda b: (
            best("shapiq", b), best("skdvl", b))))
        for text, fn in extra:
            cells = []
            for b in budgets:
                num, den = fn(b)
                cells.append("-" if not num or not den or den["mse"] == 0
                             else f"{num['mse'] / den['mse']:.3g}")
            lines.append(f"| *{text}* | " + " | ".join(cells) + " | | |")
        winners = []
        for b in budgets:
            bs, bq = best("skdvl", b), best("shapiq", b)
            winners.append(f"{b:,}: skdvl {bs['estimator'] if bs else '-'}, "
                           f"shapiq {bq['estimator'] if bq else '-'}")
        lines.append("\nBest at each budget: " + "; ".join(winners))
        mid = budgets[min(2, len(budgets) - 1)]
        lines.append(f"\nAt {mid:,} calls: Spearman / lowest-10% share / stderr coverage\n")
        lines.append("| estimator | Spearman | lowest 10% | coverage (1.96 se) |")
        lines.append("| --- | --- | --- | --- |")
        for lab in labels:
            c = by.get((lab, mid))
            if c:
                lines.append(f"| {lab} | {_g(c['spearman'], '.3f')} | "
                             f"{_g(c['bottom10'], '.2f')} | {_g(c['coverage'], '.2f')} |")
        lines.append("")
    return "\n".join(lines)


#: estimator -> family: one colour per family in the plot, solid for skdvl, dashed for shapiq
FAMILY = {
    "skdvl:permutation": "permutation", "shapiq:PermutationSamplingSV": "permutation",
    "skdvl:antithetic": "antithetic permutation", "skdvl:owen": "owen",
    "shapiq:OwenSamplingSV": "owen", "skdvl:kernel": "kernel", "shapiq:KernelSHAP": "kernel",
    "shapiq:RegressionFBII(BV)": "kernel", "shapiq:UnbiasedKernelSHAP": "unbiased kernel",
    "skdvl:leverage": "leverage", "shapiq:LeverageSHAP": "leverage",
    "skdvl:svarm": "svarm", "shapiq:SVARM": "svarm", "shapiq:SVARM(BV)": "svarm",
    "shapiq:StratifiedSamplingSV": "stratified", "skdvl:regression_msr": "regression msr",
    "shapiq:RegressionMSR(linear)": "regression msr",
    "shapiq:RegressionMSR(linear, BV)": "regression msr", "skdvl:msr": "msr",
}
_COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
           "tab:pink", "tab:gray", "tab:olive", "tab:cyan"] * 2


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    games = list(results["games"])
    fig, axes = plt.subplots(len(games), 2, figsize=(12, 3.6 * len(games)), squeeze=False)
    for ax_row, g in zip(axes, games):
        rows = results["games"][g]["summary"]
        for ax, index in zip(ax_row, ("SV", "BV")):
            sub = [r for r in rows if r["index"] == index]
            if not sub:
                ax.set_axis_off()
                ax.set_title(f"{g}: {index} (no exact values)" if index == "BV" else g)
                continue
            labels = sorted({_label(r) for r in sub}, key=lambda s: (FAMILY.get(s, s), s))
            for lab in labels:
                pts = sorted((r["n_evals"], r["mse"]) for r in sub if _label(r) == lab)
                pts = [(x, y) for x, y in pts if y > 0]
                if not pts:
                    continue
                family = FAMILY.get(lab, lab)
                color = _COLORS[sorted(set(FAMILY.values()) | {family}).index(family) % 20]
                ls = "-" if lab.startswith("skdvl") else "--"
                ax.plot(*zip(*pts), ls, marker="o" if ls == "-" else "s", ms=3, color=color,
                        label=lab)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("utility calls (actual)")
            ax.set_ylabel("MSE")
            ax.set_title(f"{g} (n = {results['games'][g]['n']}): "
                         f"{'Shapley' if index == 'SV' else 'Banzhaf'}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# --------------------------------------------------------------------------- the noisy task
NOISY = {"n_rows": 300, "flip": 0.1, "rtol": 0.01, "permutations": 100, "seeds": 5,
         "fractions": [5, 10, 20], "max_iter": 1000, "banzhaf_weights": [0.1, 0.2]}


def noisy_task(cfg: dict, available: dict) -> dict:
    """AUROC at finding flipped labels: 100 TMC permutations vs the new estimators."""
    from bench_semivalues import make_data
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from skdvl import BanzhafValuer, ShapleyValuer
    from skdvl.games import AirportGame
    from skdvl.stopping import MaxSamples

    with tempfile.TemporaryDirectory() as tmp:
        d = make_data({"n_rows": cfg["n_rows"], "flip": cfg["flip"]},
                      os.path.join(tmp, "d.npz"))
    data = (d["X_train"], d["y_train"])
    val = {"X_val": d["X_val"], "y_val": d["y_val"]}

    def run(cls, **kw):
        v = cls(LogisticRegression(max_iter=cfg["max_iter"]), scoring="accuracy", **kw)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            v.fit(*data, **val)
        values = np.nan_to_num(np.asarray(v.values_, dtype=float))
        return {"auroc": float(roc_auc_score(d["flipped"], -values)),
                "n_nan": int(np.isnan(np.asarray(v.values_, dtype=float)).sum()),
                "n_evals": int(v.n_utility_evaluations_),
                "wall_s": time.perf_counter() - t0}

    out = {"config": cfg, "n_train": len(d["y_train"]), "tmc": [], "estimators": []}
    for seed in range(cfg["seeds"]):
        r = run(ShapleyValuer, sampler="permutation", truncation=cfg["rtol"],
                max_updates=cfg["permutations"], random_state=seed)
        out["tmc"].append({"seed": seed, **r})
        print(f"  noisy TMC seed {seed}: AUROC {r['auroc']:.3f}, {r['n_evals']} calls, "
              f"{r['wall_s']:.1f}s", file=sys.stderr, flush=True)
    calls = int(np.mean([r["n_evals"] for r in out["tmc"]]))
    out["tmc_calls"] = calls
    dummy = AirportGame(np.random.default_rng(0).uniform(1, 10, out["n_train"]))
    # (index, sampler, weighted-Banzhaf weight): weight 0.5 is Banzhaf; smaller weights
    # put the coalitions near the empty one, where a flipped label changes the most
    new = [("SV", s, None) for s in available.get("SV", [])
           if s not in ("permutation", "antithetic", "owen")]
    new += [("BV", s, 0.5) for s in available.get("BV", [])]
    new += [("BV", s, w) for w in cfg["banzhaf_weights"] for s in ("msr", "svarm")
            if s in available.get("BV", [])]
    for index, s, w in new:
        cls = ShapleyValuer if index == "SV" else BanzhafValuer
        extra = {} if w is None else {"weight": w}
        for frac in cfg["fractions"]:
            budget = max(1, calls // frac)
            k = _samples_for(cls, s, dummy, budget, **extra)
            for seed in range(cfg["seeds"]):
                r = run(cls, sampler=s, stopping=MaxSamples(k), max_updates=None,
                        random_state=seed, **extra)
                out["estimators"].append({"index": index, "estimator": s, "weight": w,
                                          "fraction": frac, "budget": budget, "seed": seed,
                                          **r})
            last = [e for e in out["estimators"] if (e["index"], e["estimator"], e["weight"],
                                                     e["fraction"]) == (index, s, w, frac)]
            print(f"  noisy {index} {s} w={w} 1/{frac}: AUROC "
                  f"{np.mean([e['auroc'] for e in last]):.3f}", file=sys.stderr, flush=True)
    return out


def report_noisy(out: dict) -> str:
    c = out["config"]
    tmc = out["tmc"]
    lines = [f"\n### Noisy labels: LogisticRegression, breast cancer ({c['n_rows']} rows, "
             f"50/50, {out['n_train']} training rows), {int(c['flip'] * 100)}% flipped, "
             f"AUROC of -values at finding them, mean over {c['seeds']} seeds; columns: "
             "the share of TMC's utility calls given to the estimator (a sampler whose "
             "fixed first stage costs more spends that); NaN: no estimate, fewer samples "
             "than the regression needs\n",
             "| estimator | 1/1 | " + " | ".join(f"1/{f}" for f in c["fractions"]) + " |",
             "| --- " * (len(c["fractions"]) + 2) + "|",
             f"| TMC permutations ({c['permutations']}, rtol {c['rtol']}) | "
             f"{np.mean([r['auroc'] for r in tmc]):.3f} ({out['tmc_calls']:,} calls) | "
             + " | ".join("" for _ in c["fractions"]) + " |"]
    keys = sorted({(e["index"], e["estimator"], e["weight"]) for e in out["estimators"]},
                  key=lambda k: (k[0], k[1], -1 if k[2] is None else k[2]))
    for index, s, w in keys:
        cells = []
        for f in c["fractions"]:
            es = [e for e in out["estimators"] if (e["index"], e["estimator"], e["weight"],
                                                   e["fraction"]) == (index, s, w, f)]
            calls = f"{int(np.mean([e['n_evals'] for e in es])):,} calls"
            nan = np.mean([e["n_nan"] for e in es])
            if nan >= out["n_train"]:  # no estimate: fewer samples than the fit needs
                cells.append(f"NaN ({calls})")
            else:
                cells.append(f"{np.mean([e['auroc'] for e in es]):.3f} ({calls}"
                             + (f", {nan:.0f} rows NaN" if nan else "") + ")")
        if index == "SV":
            name = f"ShapleyValuer({s})"
        else:
            name = f"BanzhafValuer({s}" + ("" if w == 0.5 else f", weight={w}") + ")"
        lines.append(f"| {name} | | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main
def run_estimators(ns, game_names: list[str], notes: list[str]) -> dict:
    from threadpoolctl import threadpool_limits

    schedule = SEEDS_QUICK if ns.quick else SEEDS_FULL
    infos, plan, arrays = {}, [], {}
    for g in game_names:
        t0 = time.perf_counter()
        info = build_game(g)
        infos[g] = info
        n = info["n"]
        budgets = [m * n for m in (ns.mults or GAMES[g]["mults"])]
        cap = GAMES[g].get("max_seeds", 10**9)
        first = ns.seed_offset
        info["seeds"] = {b: list(range(first, first + min(ns.seeds or schedule.get(m, 10),
                                                          cap)))
                         for m, b in zip([b // n for b in budgets], budgets)}
        info["budgets"] = budgets
        print(f"game {g}: built in {time.perf_counter() - t0:.1f}s", file=sys.stderr,
              flush=True)
        for key, value in info["params"].items():
            arrays[f"{g}/{key}"] = value
        names = [a for a in ns.shapiq if APPROXIMATORS[a][0] in info["exact"]]
        plan.append({"game": g, "kind": info["kind"], "n": n, "budgets": budgets,
                     "seeds": {str(b): s for b, s in info["seeds"].items()},
                     "approximators": names})
    out = {"games": {}, "notes": notes}
    shapiq_res: dict = {}
    samplers = {"SV": [s for s in ns.skdvl_sv if s in ns.available["SV"]],
                "BV": [s for s in ns.skdvl_bv if s in ns.available["BV"]]}
    # the shapiq half runs in its subprocess while this process runs the skdvl half: one
    # core each (both single-threaded); the estimates do not depend on the timing
    tmp = tempfile.TemporaryDirectory(prefix="bench-estimators-")
    pool = ThreadPoolExecutor(1)
    future = None
    if not ns.no_shapiq:
        path = os.path.join(tmp.name, "games.npz")
        np.savez(path, **arrays)
        future = pool.submit(run_shapiq, SIDE_SCRIPT, {
            "games": path, "plan": plan, "max_run_s": ns.max_run_s,
            "max_estimator_s": ns.max_estimator_s}, timeout=7200)
    sk: dict = {}
    for g in game_names:
        t0 = time.perf_counter()
        sk[g] = ([], [], [], [])
        if not ns.no_skdvl:
            with threadpool_limits(1):
                sk[g] = skdvl_game(infos[g], samplers, infos[g]["budgets"],
                                   infos[g]["seeds"].__getitem__,
                                   (ns.max_run_s, ns.max_estimator_s))
        infos[g]["skdvl_wall_s"] = time.perf_counter() - t0
        print(f"skdvl half of {g} done in {infos[g]['skdvl_wall_s']:.1f}s", file=sys.stderr,
              flush=True)
    if future is not None:
        res = future.result()
        print(f"shapiq half done: {res['wall_s']:.1f}s (peak RSS "
              f"{res['peak_rss_mb']:.0f} MiB)", file=sys.stderr, flush=True)
        out["shapiq_version"] = res["result"]["version"]
        out["shapiq_process"] = {"wall_s": res["wall_s"], "peak_rss_mb": res["peak_rss_mb"]}
        for g, r in res["result"]["games"].items():
            mine = infos[g]["game"].evaluate(infos[g]["params"]["check"])
            if not np.allclose(r["check"], mine, rtol=1e-12, atol=1e-12):
                raise AssertionError(f"{g}: the shapiq side's game differs from skdvl's")
            r["check_ok"] = True
            shapiq_res[g] = r
    pool.shutdown()
    tmp.cleanup()
    for g in game_names:
        info = infos[g]
        runs, ests, errs, skipped = sk[g]
        sk_wall = info["skdvl_wall_s"]
        for r, e, s in zip(runs, ests, errs):
            r.update(metrics(e, info["exact"][r["index"]], s))
        q = shapiq_res.get(g, {"runs": [], "estimates": [], "skipped": []})
        for r, e in zip(q["runs"], q["estimates"]):
            r.update(metrics(np.asarray(e), info["exact"][r["index"]]))
        all_runs = runs + q["runs"]
        out["games"][g] = {
            "kind": info["kind"], "n": info["n"], "budgets": info["budgets"],
            "seeds": {str(b): len(s) for b, s in info["seeds"].items()},
            "utility_range": info["utility_range"],
            "exact": info["exact"], "table_path": info.get("table_path"),
            "efficiency_gap": info.get("efficiency_gap"),
            "check_ok": q.get("check_ok"), "skdvl_wall_s": sk_wall,
            "shapiq_wall_s": q.get("wall_s"),
            "skipped": skipped + q["skipped"], "runs": all_runs,
            "summary": summarise(all_runs),
        }
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", nargs="+", default=["estimators"],
                    choices=["estimators", "noisy"])
    ap.add_argument("--noisy", action="store_true", help="also run the noisy-label task")
    ap.add_argument("--quick", action="store_true",
                    help="airport40 and bc16 only, 3 seeds (a few minutes)")
    ap.add_argument("--games", nargs="+", choices=list(GAMES))
    ap.add_argument("--seeds", type=int, help="seeds at every budget (default: a schedule)")
    ap.add_argument("--seed-offset", type=int, default=0,
                    help="first seed (seeds are offset, offset + 1, ...): a fresh draw")
    ap.add_argument("--mults", nargs="+", type=int,
                    help="these budgets, in calls per player (default: the game's, of 10 30 100 "
                         "300 1000; any other, e.g. 20, runs too)")
    ap.add_argument("--skdvl-sv", nargs="+", default=SKDVL_SHAPLEY)
    ap.add_argument("--skdvl-bv", nargs="+", default=SKDVL_BANZHAF)
    ap.add_argument("--shapiq", nargs="+", default=SHAPIQ_ALL, choices=list(APPROXIMATORS))
    ap.add_argument("--no-shapiq", action="store_true")
    ap.add_argument("--no-skdvl", action="store_true")
    ap.add_argument("--max-run-s", type=float, default=5.0,
                    help="an estimator with a run slower than this stops on that game "
                         "(the rest of its seeds at that budget, and larger budgets)")
    ap.add_argument("--max-estimator-s", type=float, default=25.0,
                    help="an estimator that spent this long on a game stops there too")
    ap.add_argument("--out", default=str(RESULTS_DIR / "estimators.json"))
    ap.add_argument("--no-plot", action="store_true")
    ns = ap.parse_args(argv)
    parts = set(ns.parts) | ({"noisy"} if ns.noisy else set())
    games = ns.games or (QUICK_GAMES if ns.quick else list(GAMES))
    t_start = time.perf_counter()
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(),
               "loadavg_start": os.getloadavg()}
    ns.available, notes = skdvl_available({"SV": ns.skdvl_sv, "BV": ns.skdvl_bv})
    for note in notes:
        print("note:", note, file=sys.stderr, flush=True)
    text = []
    if "estimators" in parts:
        if any(GAMES[g]["kind"] == "knn" for g in games):
            err = verify_knn_game()
            print(f"KNN game = KNNShapley's game at n = 10: max |diff| = {err:.1e}",
                  file=sys.stderr, flush=True)
            notes.append(f"KNNGame checked against exact enumeration at n = 10: {err:.1e}")
        out = run_estimators(ns, games, notes)
        out["machine"] = machine
        out["machine"]["loadavg_end"] = os.getloadavg()
        out["wall_s"] = time.perf_counter() - t_start
        out["approximators"] = {k: list(v[:2]) + [repr(v[2])] for k, v in APPROXIMATORS.items()}
        for g, res in out["games"].items():
            text.append(report_game(g, res, res["summary"]))
        out["table"] = "\n".join(text)
        Path(ns.out).parent.mkdir(parents=True, exist_ok=True)
        Path(ns.out).write_text(json.dumps(_jsonable(out)) + "\n")
        if not ns.no_plot:
            plot(out, Path(ns.out).with_suffix(".png"))
    if "noisy" in parts:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            cfg = dict(NOISY, seeds=ns.seeds or NOISY["seeds"])
            if ns.quick:
                cfg.update(n_rows=200, permutations=20, seeds=2)
            noisy = noisy_task(cfg, ns.available)
        noisy["machine"] = {**machine, "loadavg_end": os.getloadavg()}
        text.append(report_noisy(noisy))
        noisy_path = Path(ns.out).with_name(Path(ns.out).stem + "_noisy.json")
        noisy_path.write_text(json.dumps(_jsonable(noisy), indent=1) + "\n")
    for note in notes:
        text.append(f"note: {note}")
    print("\n".join(text))
    print(f"\ntotal {time.perf_counter() - t_start:.0f}s; load average "
          f"{machine['loadavg_start']} -> {os.getloadavg()}", file=sys.stderr)
    return {"text": "\n".join(text)}


if __name__ == "__main__":
    main()
