"""The shapiq 1.8 half of ``benchmarks/bench_estimators.py``, and the games both halves play.

Run by ``run_shapiq`` inside ``benchmarks/.shapiq-venv`` (see ``benchmarks/shapiq_env.py``):
reads a JSON object on stdin, prints one JSON object as the last line of stdout.

Arguments::

    games        path of the .npz written by bench_estimators.py: for game ``g``, arrays
                 ``g/<param>`` (its definition) and ``g/check`` (boolean masks whose worth
                 is returned, for the caller to compare with skdvl's game)
    plan         list of {"game", "kind", "n", "budgets", "seeds", "approximators"}: kind
                 is "airport", "voting", "shoes", "table" or "knn"; seeds maps each budget
                 (as a string) to its list of seeds; approximators are names among
                 APPROXIMATORS (default: all)
    max_run_s, max_estimator_s  time caps (see run_game)
    out_dir      added by run_shapiq

Result: ``{"version", "games": {g: {"check": .npy, "runs": [...], "estimates": .npy,
"skipped": [...]}}}``; ``runs[j]`` describes row ``j`` of ``estimates``.

The module is importable without shapiq: :class:`TableGame` and :class:`KNNGame` (numpy
only) are the games of the table and KNN benchmarks on *both* sides, so that both libraries
evaluate the same code.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import warnings

import numpy as np


# --------------------------------------------------------------------------- the games
class _BatchGame:
    """``n_players``, ``evaluate(masks) -> (m,)`` and ``__call__(subset) -> float``."""

    n_players: int

    def evaluate(self, masks: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, subset) -> float:
        mask = np.zeros((1, self.n_players), dtype=bool)
        mask[0, np.asarray(subset, dtype=np.intp)] = True
        return float(self.evaluate(mask)[0])


class TableGame(_BatchGame):
    """A game given by the worth of every coalition, ``table[code]``, bit i = player i."""

    def __init__(self, table: np.ndarray) -> None:
        self.table = np.asarray(table, dtype=np.float64)
        self.n_players = int(self.table.size).bit_length() - 1
        if self.table.size != 1 << self.n_players:
            raise ValueError(f"a table of {self.table.size} entries is no power of two")
        self._bits = np.int64(1) << np.arange(self.n_players, dtype=np.int64)

    def evaluate(self, masks: np.ndarray) -> np.ndarray:
        return self.table[np.asarray(masks, dtype=bool) @ self._bits]


class KNNGame(_BatchGame):
    """The KNN-classification utility that ``skdvl.KNNShapley`` values exactly.

    ``order[t]`` lists the training rows from nearest to farthest from validation row
    ``t`` and ``match[t, r]`` is 1.0 when the row ranked ``r`` has the label of that
    validation row. Then ``u_t(S) = (1/K) * sum of match over the min(K, |S|) members of
    S ranked nearest`` (a coalition smaller than K still divides by K, as
    ``skdvl.valuation._knn_math._knn_classification_shapley`` states), ``u(empty) = 0``
    and ``u(S)`` is the mean of ``u_t(S)`` over the validation rows.

    ``evaluate`` takes a coalition of at most ``n / 16`` members by its members: their
    ranks, the K smallest by partition. A larger one is found by scanning each validation
    row's ranking in chunks of doubling width, stopping once it has met min(K, |S|) of its
    members: a coalition of size s meets them after about ``K n / s`` ranks.
    """

    def __init__(self, order: np.ndarray, match: np.ndarray, k: int) -> None:
        self.order = np.asarray(order, dtype=np.intp)
        self.match = np.asarray(match, dtype=np.float64)
        self.k = int(k)
        n_val, self.n_players = self.order.shape
        self.rank = np.empty_like(self.order)
        np.put_along_axis(self.rank, self.order, np.arange(self.n_players)[None, :], axis=1)
        # match by rank, one row per validation row, a 0.0 column for "no member"
        self._flat_match = np.hstack([self.match, np.zeros((n_val, 1))]).ravel()

    def evaluate(self, masks: np.ndarray) -> np.ndarray:
        masks = np.asarray(masks, dtype=bool)
        m, n = masks.shape
        size = masks.sum(axis=1)
        total = np.zeros(m)
        small = np.flatnonzero(size <= max(self.k, n // 16))
        small = small[np.argsort(size[small], kind="stable")]
        for start in range(0, small.size, 512):
            rows = small[start:start + 512]
            total[rows] = self._by_members(masks[rows], int(size[rows[-1]]))
        large = np.flatnonzero(size > max(self.k, n // 16))
        if large.size:
            total[large] = self._by_scan(masks[large], np.minimum(size[large], self.k))
        return total / (self.k * len(self.order))

    def _by_members(self, masks: np.ndarray, s_max: int) -> np.ndarray:
        """Sum over validation rows of the matches of the K nearest members (small S)."""
        n_val, n = self.order.shape
        if s_max == 0:
            return np.zeros(len(masks))
        cols = np.argsort(~masks, axis=1, kind="stable")[:, :s_max]  # members first
        present = np.take_along_axis(masks, cols, axis=1)
        ranks = np.where(present[None], self.rank[:, cols], n)  # (n_val, rows, s_max)
        if s_max > self.k:
            ranks = np.partition(ranks, self.k - 1, axis=2)[:, :, : self.k]
        ranks += (np.arange(n_val) * (n + 1))[:, None, None]
        return self._flat_match[ranks].sum(axis=(0, 2))

    def _by_scan(self, masks: np.ndarray, need: np.ndarray) -> np.ndarray:
        """The same sum for larger coalitions, scanning each ranking from the nearest row."""
        m, n = masks.shape
        total = np.zeros(m)
        first = min(n, max(16, 2 * self.k))
        for order, match in zip(self.order, self.match):
            rows = np.arange(m)
            found = np.zeros(m, dtype=np.int64)
            start, width = 0, first
            while rows.size:
                cols = order[start:start + width]
                sub = masks[rows[:, None], cols]
                seen = np.cumsum(sub, axis=1)
                seen += found[rows, None]
                take = sub & (seen <= need[rows, None])
                total[rows] += take @ match[start:start + width]
                found[rows] = seen[:, -1]
                rows = rows[found[rows] < need[rows]]
                start += width
                width *= 2
        return total


class _AirportGame(_BatchGame):
    """u(S) = max cost in S, 0 for the empty coalition (skdvl.games.AirportGame)."""

    def __init__(self, costs: np.ndarray) -> None:
        self.costs = np.asarray(costs, dtype=np.float64)
        self.n_players = len(self.costs)

    def evaluate(self, masks):  # type: ignore[no-untyped-def]
        return np.where(masks, self.costs, 0.0).max(axis=1)


class _VotingGame(_BatchGame):
    """u(S) = 1 if the weights in S reach the quota (skdvl.games.AsymmetricVotingGame)."""

    def __init__(self, weights: np.ndarray, quota) -> None:  # type: ignore[no-untyped-def]
        self.weights = np.asarray(weights, dtype=np.int64)
        self.quota = int(quota)
        self.n_players = len(self.weights)

    def evaluate(self, masks):  # type: ignore[no-untyped-def]
        return (np.asarray(masks, dtype=np.int64) @ self.weights >= self.quota).astype(float)


class _ShoesGame(_BatchGame):
    """u(S) = min(left shoes in S, right shoes in S); players 0..n_left-1 are left
    (skdvl.games.ShoesGame)."""

    def __init__(self, n_left, n_right) -> None:  # type: ignore[no-untyped-def]
        self.n_left, self.n_players = int(n_left), int(n_left) + int(n_right)

    def evaluate(self, masks):  # type: ignore[no-untyped-def]
        masks = np.asarray(masks, dtype=bool)
        left = masks[:, : self.n_left].sum(axis=1)
        return np.minimum(left, masks[:, self.n_left:].sum(axis=1)).astype(float)


class _SizeGame(_BatchGame):
    """A symmetric game, u(S) a function of |S|: majority voting, u = 1 if 2|S| > n
    (skdvl.games.SymmetricVotingGame), or miners, u = floor(|S| / 2)
    (skdvl.games.MinerGame)."""

    def __init__(self, kind: str, n_players) -> None:  # type: ignore[no-untyped-def]
        self.kind, self.n_players = kind, int(n_players)

    def evaluate(self, masks):  # type: ignore[no-untyped-def]
        size = np.asarray(masks, dtype=bool).sum(axis=1)
        if self.kind == "symvoting":
            return (2 * size > self.n_players).astype(float)
        return (size // 2).astype(float)


def make_game(kind: str, params: dict) -> _BatchGame:
    """The game of ``kind`` from its arrays (the keys of ``params``)."""
    if kind == "airport":
        return _AirportGame(params["costs"])
    if kind == "voting":
        return _VotingGame(params["weights"], params["quota"])
    if kind == "shoes":
        return _ShoesGame(params["n_left"], params["n_right"])
    if kind in ("symvoting", "miner"):
        return _SizeGame(kind, params["n_players"])
    if kind == "table":
        return TableGame(params["table"])
    if kind == "knn":
        return KNNGame(params["order"], params["match"], params["k"])
    raise ValueError(f"unknown game kind {kind!r}")


class _Counted:
    """The game as shapiq calls it, ``f(coalitions (m, n) bool) -> (m,)``, counting rows."""

    def __init__(self, game: _BatchGame) -> None:
        self.game, self.calls, self.batches = game, 0, 0

    def __call__(self, coalitions: np.ndarray) -> np.ndarray:
        coalitions = np.atleast_2d(np.asarray(coalitions, dtype=bool))
        self.calls += coalitions.shape[0]
        self.batches += 1
        return self.game.evaluate(coalitions)


# --------------------------------------------------------------------------- shapiq
#: name -> (index, class name in shapiq.approximator, constructor kwargs)
APPROXIMATORS = {
    "PermutationSamplingSV": ("SV", "PermutationSamplingSV", {}),
    "KernelSHAP": ("SV", "KernelSHAP", {}),
    "KernelSHAP(paired)": ("SV", "KernelSHAP", {"pairing_trick": True}),
    "UnbiasedKernelSHAP": ("SV", "UnbiasedKernelSHAP", {}),
    "LeverageSHAP": ("SV", "LeverageSHAP", {}),
    "SVARM": ("SV", "SVARM", {}),
    "StratifiedSamplingSV": ("SV", "StratifiedSamplingSV", {}),
    "OwenSamplingSV": ("SV", "OwenSamplingSV", {}),
    "RegressionMSR(linear)": ("SV", "RegressionMSR", {"index": "SV", "proxy_model": "linear"}),
    "RegressionMSR(xgboost)": ("SV", "RegressionMSR", {"index": "SV"}),
    "RegressionMSR(tree)": ("SV", "RegressionMSR", {"index": "SV", "proxy_model": "tree"}),
    "OddSHAP": ("SV", "OddSHAP", {}),
    "SVARM(BV)": ("BV", "SVARM", {"index": "BV"}),
    "RegressionMSR(xgboost, BV)": ("BV", "RegressionMSR", {"index": "BV"}),
    "RegressionFBII(BV)": ("BV", "RegressionFBII", {"max_order": 1}),
    "RegressionMSR(linear, BV)": ("BV", "RegressionMSR",
                                  {"index": "BV", "proxy_model": "linear"}),
}


def _first_order(iv, n: int) -> np.ndarray:
    return np.asarray(iv.get_n_order_values(1), dtype=np.float64).reshape(n)


class _RunTimeout(Exception):
    pass


def _alarm(signum, frame):  # noqa: ARG001 - signal handler signature
    raise _RunTimeout


def run_game(spec: dict, params: dict, names: list[str], run_s: float, total_s: float
             ) -> dict:
    """Every approximator at every budget and seed; time caps as in bench_estimators.py.

    A run slower than ``run_s`` ends the approximator's work on this game (the rest of
    its seeds at that budget and the larger budgets), and so does ``total_s`` spent.
    """
    import shapiq.approximator as sa

    signal.signal(signal.SIGALRM, _alarm)  # SVARM at n = 1000 ran for hours otherwise
    game = make_game(spec["kind"], params)
    n = game.n_players
    runs, estimates, skipped = [], [], []
    for name in names:
        index, cls_name, kwargs = APPROXIMATORS[name]
        cls = getattr(sa, cls_name)
        spent, why = 0.0, None
        for budget in spec["budgets"]:
            seeds = spec["seeds"][str(budget)]
            done = 0
            for seed in seeds:
                if why:
                    break
                counted = _Counted(game)
                approx = cls(n=n, random_state=seed, **kwargs)
                t0 = time.perf_counter()
                signal.setitimer(signal.ITIMER_REAL, 6 * run_s)  # a hard stop, see _alarm
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        iv = approx.approximate(budget=int(budget), game=counted)
                except _RunTimeout:
                    why = f"a run at budget {budget} was stopped after {6 * run_s:.0f}s"
                    break
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                wall = time.perf_counter() - t0
                spent += wall
                done += 1
                if wall > run_s:
                    why = f"a run at budget {budget} took {wall:.1f}s > {run_s}s"
                elif spent > total_s:
                    why = f"{spent:.0f}s spent on this game > {total_s}s"
                estimates.append(_first_order(iv, n))
                runs.append({"library": "shapiq", "estimator": name, "index": index,
                             "budget": int(budget), "seed": int(seed),
                             "n_evals": int(counted.calls), "n_batches": counted.batches,
                             "wall_s": wall})
            if done < len(seeds):
                skipped.append({"library": "shapiq", "estimator": name, "index": index,
                                "budget": int(budget), "seeds_run": done, "why": why})
            print(f"  shapiq {spec['game']} {name} budget={budget}: {done} seeds, "
                  f"{spent:.1f}s so far", file=sys.stderr, flush=True)
    return {"runs": runs, "estimates": np.array(estimates).reshape(len(runs), n),
            "skipped": skipped}


def main() -> None:
    import shapiq

    args = json.load(sys.stdin)
    out_dir = args["out_dir"]
    result = {"version": shapiq.__version__, "games": {}}
    with np.load(args["games"], allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    for spec in args["plan"]:
        g = spec["game"]
        params = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(g + "/")}
        game = make_game(spec["kind"], params)
        check = game.evaluate(params["check"])
        t0 = time.perf_counter()
        names = spec.get("approximators") or list(APPROXIMATORS)
        res = run_game(spec, params, names, float(args.get("max_run_s", 5.0)),
                       float(args.get("max_estimator_s", 60.0)))
        paths = {}
        for key in ("check", "estimates"):
            paths[key] = os.path.join(out_dir, f"{g}-{key}.npy")
            np.save(paths[key], check if key == "check" else res["estimates"])
        result["games"][g] = {"check": paths["check"], "estimates": paths["estimates"],
                              "runs": res["runs"], "skipped": res["skipped"],
                              "wall_s": time.perf_counter() - t0}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
