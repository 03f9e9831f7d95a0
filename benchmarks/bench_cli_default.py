"""Which method should ``skdvl value`` / ``skdvl clean`` use by default?

Each method of ``--method``, run by the command itself (``skdvl.cli.main``: its task
rule, its feature scaling, its :func:`~skdvl.cli.make_valuer` configuration and its
budgets; no validation file, so knn values leave-self-out and the model-based methods
use 5-fold cross-valuation), on real tasks with nothing downloaded:

    iris, wine, breast_cancer, digits 3 vs 8 (scikit-learn)     classification
    diabetes (scikit-learn), song popularity (pyDVL's CSV)       regression

For each task and each of ``--splits`` random 70/30 train/test splits (stratified for
classification): the command values the training rows (``--random-state`` = the
split's seed, ``--n-jobs 1``); the 10 % lowest-valued rows are dropped as ``skdvl clean
--fraction 0.1`` drops them (:func:`skdvl.cleaning.rows_to_keep`); two models are
refitted on the rest and scored on the test rows: the command's own model (logistic
regression / ridge after standardisation) and a gradient-boosting model (the issue's
song-popularity setting). The baseline is the same number of rows dropped at random
(mean of 5 draws per split). The improvement is, per split, lowest-drop minus
random-drop: test accuracy points for classification, percent of the full-data test
MAE for regression (positive = better).

Decision rule (fixed before running): per kind of task, the default is the method with
the largest mean improvement over that kind's tasks and both models.

``--flip 0.1`` replaces the labels of 10 % of the training rows of each classification
task by another class before valuing (:func:`skdvl.datasets.flip_labels`, seeded per
split; test labels stay clean): the harm the command is for. The first run (clean data)
found nothing to drop on the four curated classification tasks (every method's
cleaning lost to random dropping), so the classification default is chosen on this run.

The song data is ``/work/shared/data/top_hits_spotify_dataset.csv`` (pyDVL's
``top_hits_spotify_dataset.csv``) prepared as pyDVL's ``load_spotify_dataset`` does it
(genre as category codes; ``song`` and ``artist`` are not features, given to the
command with ``--drop``), keeping the songs of 2014 and later (612 rows; pyDVL's
``year > 2014`` keeps 508).

    python benchmarks/bench_cli_default.py                   # -> results/cli_default.{json,md}
    python benchmarks/bench_cli_default.py --flip 0.1 --tasks iris,wine,breast_cancer,digits_3v8 \
        --out benchmarks/results/cli_default_flipped.json
    python benchmarks/bench_cli_default.py --splits 2 --tasks iris,diabetes --out /tmp/x.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_iris, load_wine
from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor
from sklearn.metrics import accuracy_score, mean_absolute_error
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from skdvl.cleaning import rows_to_keep
from skdvl.cli import METHODS, main
from skdvl.cli._options import _model
from skdvl.datasets import flip_labels

HERE = Path(__file__).resolve().parent
SONGS = Path(os.environ.get("SKDVL_SONGS", "/work/shared/data/top_hits_spotify_dataset.csv"))
FRACTION = 0.1
RANDOM_DRAWS = 5


# ----------------------------------------------------------------------------- tasks
def _sklearn(loader, **kw):
    X, y = loader(return_X_y=True, as_frame=True, **kw)
    return X.assign(target=y), "target", []


def _digits_3_vs_8():
    frame, target, drop = _sklearn(load_digits)
    return frame[frame[target].isin([3, 8])].reset_index(drop=True), target, drop


def _songs():
    frame = pd.read_csv(SONGS)
    frame = frame[frame["year"] >= 2014].reset_index(drop=True)
    frame["genre"] = frame["genre"].astype("category").cat.codes
    return frame, "popularity", ["artist", "song"]


TASKS = {  # name -> (kind, loader of (frame, target column, columns that are not features))
    "iris": ("classification", lambda: _sklearn(load_iris)),
    "wine": ("classification", lambda: _sklearn(load_wine)),
    "breast_cancer": ("classification", lambda: _sklearn(load_breast_cancer)),
    "digits_3v8": ("classification", _digits_3_vs_8),
    "diabetes": ("regression", lambda: _sklearn(load_diabetes)),
    "songs": ("regression", _songs),
}


def _models(kind: str) -> dict:
    """The refitted models: the command's own (standardised) and gradient boosting."""
    boost = GradientBoostingRegressor if kind == "regression" else GradientBoostingClassifier
    return {"linear": make_pipeline(StandardScaler(), _model(kind)),
            "boosting": boost(random_state=0)}


# ----------------------------------------------------------------------------- one split
def _value(path: Path, target: str, drop: list, kind: str, method: str, seed: int,
           out: Path) -> tuple[np.ndarray, float, str]:
    """The command's values of the rows of ``path``: (values, seconds, its stderr)."""
    argv = ["value", str(path), "--target", target, "--task", kind, "--method", method,
            "--random-state", str(seed), "--n-jobs", "1", "--out", str(out), "--overwrite",
            "-q"]
    if drop:
        argv += ["--drop", ",".join(drop)]
    err = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(argv)
    seconds = time.perf_counter() - t0
    if rc != 0:
        return np.full(0, np.nan), seconds, err.getvalue()
    return pd.read_csv(out)["value"].to_numpy(dtype=np.float64), seconds, err.getvalue()


def _score(model, kind, X, y, X_test, y_test, rows) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = clone(model).fit(X[rows], y[rows])
    pred = fitted.predict(X_test)
    if kind == "regression":
        return float(mean_absolute_error(y_test, pred))
    return float(accuracy_score(y_test, pred))


def one_split(name: str, seed: int, methods: list[str], workdir: Path, flip: float) -> dict:
    kind, load = TASKS[name]
    frame, target, drop = load()
    y_all = frame[target].to_numpy()
    train, test = train_test_split(np.arange(len(frame)), test_size=0.3, random_state=seed,
                                   stratify=y_all if kind == "classification" else None)
    train_frame = frame.iloc[train].copy()
    if flip:
        train_frame[target], _ = flip_labels(train_frame[target].to_numpy(), flip,
                                             random_state=seed)
    path = workdir / f"{name}-{seed}.csv"
    train_frame.to_csv(path, index=False)
    features = [c for c in frame.columns if c != target and c not in drop]
    X = frame[features].to_numpy(dtype=np.float64)
    X_tr, X_te = X[train], X[test]
    y_tr, y_te = train_frame[target].to_numpy(), y_all[test]
    n, keep = len(train), len(train) - round(FRACTION * len(train))
    rng = np.random.default_rng(seed)
    draws = [np.sort(rng.choice(n, keep, replace=False)) for _ in range(RANDOM_DRAWS)]
    out: dict = {"n_train": n, "n_test": len(test), "models": {}, "methods": {}}
    for label, model in _models(kind).items():
        full = _score(model, kind, X_tr, y_tr, X_te, y_te, np.arange(n))
        rand = float(np.mean([_score(model, kind, X_tr, y_tr, X_te, y_te, d) for d in draws]))
        out["models"][label] = {"full": full, "random": rand}
    for method in methods:
        values, seconds, err = _value(path, target, drop, kind, method, seed,
                                      workdir / "values.csv")
        record: dict = {"seconds": seconds, "stderr": err.strip()[-500:]}
        if values.size == n:
            kept = rows_to_keep(values, fraction=FRACTION)
            for label, model in _models(kind).items():
                record[label] = _score(model, kind, X_tr, y_tr, X_te, y_te, kept)
        out["methods"][method] = record
    return out


# ----------------------------------------------------------------------------- summary
def improvement(kind: str, lowest: float, random: float, full: float) -> float:
    """Lowest-drop over random-drop: accuracy points, or percent of the full-data MAE."""
    if kind == "regression":
        return 100 * (random - lowest) / full
    return 100 * (lowest - random)


def summarise(runs: dict, methods: list[str]) -> dict:
    """Per task, model and method: mean and standard error of the improvement, seconds."""
    table: dict = {}
    for name, splits in runs.items():
        kind = TASKS[name][0]
        table[name] = {}
        for method in methods:
            row: dict = {"seconds": float(np.mean([s["methods"][method]["seconds"]
                                                   for s in splits]))}
            for label in ("linear", "boosting"):
                diffs = np.array([improvement(kind, s["methods"][method].get(label, np.nan),
                                              s["models"][label]["random"],
                                              s["models"][label]["full"]) for s in splits])
                row[label] = {"mean": float(diffs.mean()),
                              "se": float(diffs.std(ddof=1) / np.sqrt(len(diffs)))
                              if len(diffs) > 1 else float("nan")}
            table[name][method] = row
    return table


def choose(table: dict, methods: list[str]) -> dict:
    """The decision rule: per kind, the largest mean improvement over tasks and models."""
    choice = {}
    for kind in ("classification", "regression"):
        names = [n for n in table if TASKS[n][0] == kind]
        if not names:
            continue
        means = {m: float(np.mean([table[n][m][label]["mean"] for n in names
                                   for label in ("linear", "boosting")])) for m in methods}
        best = max(means, key=lambda m: -np.inf if np.isnan(means[m]) else means[m])
        choice[kind] = {"method": best, "mean_improvement": means, "tasks": names}
    return choice


def markdown(table: dict, choice: dict, methods: list[str], meta: dict) -> str:
    lines = [f"Command: `{meta['command']}`; {meta['splits']} splits; load before: "
             f"`{meta['uptime_before']}`, after: `{meta['uptime_after']}`; "
             f"{meta['total_seconds']:.0f} s in all.", "",
             "Improvement of dropping the 10 % lowest-valued training rows over dropping "
             "10 % at random (mean ± standard error over the splits; classification: test "
             "accuracy points, regression: % of the full-data test MAE; positive = better), "
             "for the command's model (logistic/ridge) and gradient boosting, and the "
             "seconds of `skdvl value`.", "",
             "| task | n train | method | linear | boosting | seconds |",
             "|---|---|---|---|---|---|"]
    for name, rows in table.items():
        for method in methods:
            r = rows[method]
            lines.append(f"| {name} | {meta['n_train'][name]} | {method} | "
                         f"{r['linear']['mean']:+.2f} ± {r['linear']['se']:.2f} | "
                         f"{r['boosting']['mean']:+.2f} ± {r['boosting']['se']:.2f} | "
                         f"{r['seconds']:.1f} |")
    lines += ["", "| kind | " + " | ".join(methods) + " | chosen |",
              "|---|" + "---|" * (len(methods) + 1)]
    for kind, c in choice.items():
        lines.append(f"| {kind} ({len(c['tasks'])} tasks) | " + " | ".join(
            f"{c['mean_improvement'][m]:+.2f}" for m in methods) + f" | {c['method']} |")
    return "\n".join(lines) + "\n"


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


def main_bench() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--splits", type=int, default=5)
    p.add_argument("--flip", type=float, default=0.0,
                   help="share of training labels flipped (classification tasks only)")
    p.add_argument("--out", default=str(HERE / "results" / "cli_default.json"))
    a = p.parse_args()
    tasks, methods = a.tasks.split(","), a.methods.split(",")
    if a.flip and any(TASKS[t][0] != "classification" for t in tasks):
        p.error("--flip applies to classification tasks only")
    seeds = [int(s) for s in np.random.SeedSequence(0).generate_state(a.splits) % 2**31]
    meta = {"command": "python benchmarks/bench_cli_default.py" + "".join(
        f" --{k} {v}" for k, v in [("flip", a.flip), ("tasks", a.tasks),
                                   ("methods", a.methods), ("splits", a.splits)]
        if str(v) != str(p.get_default(k))), "splits": a.splits, "seeds": seeds,
        "flip": a.flip,
        "uptime_before": _uptime(), "cpus": os.cpu_count(), "python": platform.python_version()}
    t0 = time.perf_counter()
    runs: dict = {}
    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(1):
        for name in tasks:
            runs[name] = []
            for k, seed in enumerate(seeds):
                runs[name].append(one_split(name, seed, methods, Path(tmp), a.flip))
                secs = {m: round(r["seconds"], 1) for m, r in runs[name][-1]["methods"].items()}
                print(f"{name} split {k + 1}/{a.splits}: {secs}", flush=True)
    meta.update(total_seconds=time.perf_counter() - t0, uptime_after=_uptime(),
                n_train={n: runs[n][0]["n_train"] for n in runs})
    table = summarise(runs, methods)
    choice = choose(table, methods)
    md = markdown(table, choice, methods, meta)
    print(md)
    out = Path(a.out)
    out.write_text(json.dumps({"meta": meta, "table": table, "choice": choice, "runs": runs},
                              indent=1))
    out.with_suffix(".md").write_text(md)


if __name__ == "__main__":
    main_bench()
