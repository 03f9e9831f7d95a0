"""Permutation walks of prefix fits (TMC, Beta Shapley, big n): skdvl against pyDVL 0.10.

A permutation sampler evaluates u(perm[:1]), u(perm[:2]), ...: n prefix fits per
untruncated permutation. This benchmark measures what those walks cost with whatever
skdvl code is on disk when it runs (it only calls skdvl's public valuers and records
their ``fit_path_``), next to pyDVL 0.10 on the same data and budget.

Run from the repository root with our venv::

    python benchmarks/bench_prefix_fits.py --quick             # smoke test, every part
    python benchmarks/bench_prefix_fits.py --parts tmc tmc_full beta njobs
    python benchmarks/bench_prefix_fits.py --parts big10k big100k flops --big-timeout 1800
    python benchmarks/bench_prefix_fits.py --parts tmc --seeds 0 1 2 --no-pydvl

pyDVL runs in ``benchmarks/.pydvl-venv`` (``benchmarks/pydvl_env.py`` builds it on first
use) through ``run_pydvl`` with ``benchmarks/pydvl_side/prefix_fits.py``; skdvl runs in
this process, or in a child process of this venv where a part needs a time limit or
its own peak memory (digits, big10k, big100k). BLAS is single-threaded everywhere
(``OMP_NUM_THREADS=1`` and ``threadpool_limits(1)``); ``LogisticRegression(max_iter=1000)``,
scoring "accuracy", n_jobs=1 unless said. Only ``fit`` is timed, after one untimed
warm-up fit of the model on all training rows. For the pyDVL half of a part, then the
skdvl half, the load average (``os.getloadavg``) is recorded at the start and end of
the part.

Parts
-----
tmc       the task of bench_batch_fit.py's tmc part: breast cancer, first 300 rows,
          stratified 50/50 split (seed 0), standardised, 10% of the 150 training labels
          flipped (seed 0); truncated Monte Carlo Shapley with relative truncation
          rtol = 0.01, no burn-in, 100 permutations. pyDVL
          ``TMCShapleyValuation(RelativeTruncation(0.01, burn_in_fraction=0))`` and skdvl
          ``ShapleyValuer(sampler="permutation", truncation=0.01, max_updates=100)``,
          each over 5 sampling seeds (``--seeds``): wall time per seed, mean +- standard
          error, ratio pyDVL / skdvl of the mean walls, utility evaluations, AUROC of
          -values at finding the flipped rows (mean +- standard error).
tmc_full  the same without truncation (pyDVL ``NoTruncation()``, skdvl
          ``truncation=None``): 100 x 150 prefix fits per seed.
beta      Beta Shapley (alpha = 16, beta = 1: skdvl's defaults, the paper's choice;
          pyDVL's ``BetaShapleyValuation`` has no defaults and gets the same) on the
          same data, 100 untruncated permutations on both sides: skdvl's
          ``BetaShapleyValuer`` samples permutations (its default sampler) and
          importance-weights each marginal by its coalition size's Beta mass, pyDVL's
          ``BetaShapleyValuation`` gets a ``PermutationSampler(NoTruncation())`` and
          ``MaxUpdates(100)`` (100 permutations) and weights them by its coefficient.
njobs     skdvl only: tmc and tmc_full with n_jobs=1 and n_jobs=2 (after an untimed
          warm-up fit with n_jobs=2, the same budget and another seed, so that the
          loky workers exist), seed = first of ``--seeds``: wall times, their ratio,
          and whether the values are bitwise identical (``np.array_equal``).
digits    ``load_digits``, first 300 rows, 10 classes, standardised, 10% of the training
          labels moved to another class; TMC rtol 0.01, 50 permutations, one seed. pyDVL
          against skdvl ``batch_fit="auto"`` and ``batch_fit=True`` (each in a child
          process with a time limit, ``--digits-timeout``; a raise or a time-out is
          recorded as such).
big10k    ``make_classification`` (30 features: 10 informative, 5 redundant, 15 noise;
          random_state 0), 11,000 rows split stratified into 10,000 training and 1,000
          validation rows, standardised, 10% of the training labels flipped; no
          truncation, 100 permutations (``--big10k-permutations``), n_jobs=1: 10^6
          prefix fits. skdvl runs in a child process (time limit ``--big-timeout``):
          wall time, peak RSS (the child's own: ``/usr/bin/time``'s maximum resident
          set and the child's ``VmHWM``), prefix fits per second (utility evaluations /
          wall). pyDVL: ``--pydvl-big-fits`` utility calls on prefixes of one random
          permutation at evenly spaced lengths estimate one permutation's cost; when
          that estimate is under ``--pydvl-perm-max-s`` (600 s) one whole untruncated
          permutation (10,000 fits) is run and timed. Either is **extrapolated** to the
          skdvl run's number of permutations and labelled so.
big100k   the same generator with 100,000 training rows (and 1,000 validation rows),
          truncation 0.01, 10 permutations (``--big100k-permutations``), skdvl only,
          child process: wall time, peak RSS, utility evaluations.
flops     the cost per prefix fit against an O(d^2 + n_val d) count: seconds per
          utility evaluation of the tmc, tmc_full, beta, big10k and big100k runs of this
          run (or of ``--out``'s earlier file when they were not run now), and the
          flop rate they imply for F = 2 (d+1)^2 + 2 n_val (d+1) flops per prefix (a
          rank-one update of the (d+1) x (d+1) normal matrix, plus the predictions on
          the n_val validation rows; multiply-adds count 2). For reference: this
          machine's single-thread dgemm rate (1000 x 1000 numpy matmul under
          ``threadpool_limits(1)``, best of 5).

Output: a markdown table per part on stdout and in ``benchmarks/results/prefix_fits.md``,
every number in ``benchmarks/results/prefix_fits.json`` (``prefix_fits_quick.*`` with
``--quick``; ``--out`` names the json, the .md goes next to it), with the git commit,
the skdvl source fingerprint (``skdvl_src_sha``, as bench_batch_fit.py computes it,
also recomputed in every child process) and the load averages. To measure one commit
while others keep committing, run a snapshot (children inherit ``PYTHONPATH``)::

    H=$(git rev-parse --short HEAD); mkdir -p /tmp/skdvl-$H
    git archive $H skdvl | tar -x -C /tmp/skdvl-$H
    PYTHONPATH=/tmp/skdvl-$H python benchmarks/bench_prefix_fits.py --note "skdvl at $H"
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one BLAS thread per process, on both sides

import argparse
import json
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

PYDVL_SCRIPT = BENCH_DIR / "pydvl_side" / "prefix_fits.py"
RESULTS = BENCH_DIR / "results" / "prefix_fits.json"
PARTS = ["tmc", "tmc_full", "beta", "njobs", "digits", "big10k", "big100k", "flops"]

FULL = {
    "n_rows": 300, "flip": 0.1, "lr_max_iter": 1000, "rtol": 0.01,
    "tmc_permutations": 100, "beta_permutations": 100, "alpha": 16.0, "beta": 1.0,
    "seeds": [0, 1, 2, 3, 4], "njobs_permutations": 100,
    "digits_rows": 300, "digits_permutations": 50, "digits_timeout": 600.0,
    "big_n_val": 1000, "big_features": 30, "big_informative": 10, "big_redundant": 5,
    "big10k_n_train": 10_000, "big10k_permutations": 100,
    "big100k_n_train": 100_000, "big100k_permutations": 10, "big_timeout": 900.0,
    "pydvl_big_fits": 100, "pydvl_perm_max_s": 600.0, "pydvl_timeout": 3600.0,
    "dgemm_n": 1000, "dgemm_repeats": 5,
}
QUICK = {
    **FULL, "tmc_permutations": 3, "beta_permutations": 3, "seeds": [0, 1],
    "njobs_permutations": 3, "digits_rows": 200, "digits_permutations": 2,
    "digits_timeout": 300.0, "big10k_permutations": 2, "big100k_permutations": 2,
    "big_timeout": 600.0, "pydvl_big_fits": 10, "pydvl_perm_max_s": 0.0,
}


# ---------------------------------------------------------------- small helpers
def _jsonable(obj):
    """``obj`` with numpy arrays and scalars turned into lists and Python numbers."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _proc_status_mb(key: str) -> float | None:
    """``VmHWM`` / ``VmRSS`` of this process in MiB (Linux), else None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _mean_se(x) -> tuple[float | None, float | None]:
    x = np.asarray([v for v in x if v is not None], dtype=float)
    if not x.size:
        return None, None
    return float(x.mean()), float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else 0.0


def _git_short() -> str:
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                       text=True, cwd=REPO, check=False)
    return r.stdout.strip() if r.returncode == 0 else "?"


def _load_skdvl() -> dict:
    """Import every skdvl module now and fingerprint its source (bench_batch_fit's way)."""
    from bench_batch_fit import _load_skdvl as load

    return load()


def _src_sha() -> tuple[str, str]:
    """skdvl's source fingerprint (bench_batch_fit's hash) without importing skdvl."""
    import hashlib
    import importlib.util

    root = Path(importlib.util.find_spec("skdvl").origin).parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(f.relative_to(root).as_posix().encode() + f.read_bytes())
    return h.hexdigest()[:16], str(root)


def _auroc(flipped, values) -> float | None:
    from sklearn.metrics import roc_auc_score

    values = np.asarray(values, dtype=float)
    if len(values) != len(flipped) or not np.all(np.isfinite(values)):
        ok = np.isfinite(values)
        if len(values) != len(flipped) or ok.sum() < 2:
            return None
        return float(roc_auc_score(np.asarray(flipped)[ok], -values[ok]))
    return float(roc_auc_score(flipped, -values))


# ---------------------------------------------------------------- data
def make_small(kind: str, cfg: dict, path: str) -> dict:
    """bench_batch_fit.py's breast-cancer (or digits) task, saved as .npz for pyDVL."""
    from bench_batch_fit import _split_flip
    from sklearn.datasets import load_breast_cancer, load_digits

    if kind == "digits":
        d = _split_flip(*load_digits(return_X_y=True), cfg["digits_rows"], cfg["flip"])
    else:
        d = _split_flip(*load_breast_cancer(return_X_y=True), cfg["n_rows"], cfg["flip"])
    d = {k: v for k, v in d.items() if not k.endswith("_raw")}
    np.savez(path, **d)
    return d


def make_big(n_train: int, cfg: dict, path: str) -> dict:
    """make_classification: n_train + n_val rows, stratified split (seed 0),
    standardised on the training rows, ``flip`` of the training labels flipped (seed 0)."""
    from sklearn.datasets import make_classification
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    n_val = cfg["big_n_val"]
    X, y = make_classification(
        n_samples=n_train + n_val, n_features=cfg["big_features"],
        n_informative=cfg["big_informative"], n_redundant=cfg["big_redundant"],
        n_repeated=0, n_classes=2, n_clusters_per_class=2, class_sep=1.0, flip_y=0.0,
        random_state=0)
    X_tr, X_val, y_tr, y_val = train_test_split(X, y, test_size=n_val, stratify=y,
                                                random_state=0)
    scaler = StandardScaler().fit(X_tr)
    rng = np.random.default_rng(0)
    flipped = np.zeros(n_train, dtype=bool)
    flipped[rng.choice(n_train, size=round(cfg["flip"] * n_train), replace=False)] = True
    y_noisy = np.where(flipped, 1 - y_tr, y_tr)
    d = {"X_train": scaler.transform(X_tr), "y_train": y_noisy,
         "X_val": scaler.transform(X_val), "y_val": y_val, "flipped": flipped}
    np.savez(path, **d)
    return d


def _shape(d: dict) -> dict:
    return {"n_train": int(len(d["y_train"])), "n_val": int(len(d["y_val"])),
            "n_features": int(d["X_train"].shape[1]),
            "n_classes": int(np.unique(d["y_train"]).size),
            "n_flipped": int(np.sum(d["flipped"]))}


# ---------------------------------------------------------------- skdvl, in process
def _valuer(kind: str, cfg: dict, *, truncation, permutations: int, seed: int,
            n_jobs: int = 1, **kw):
    from sklearn.linear_model import LogisticRegression

    from skdvl import BetaShapleyValuer, ShapleyValuer

    lr = LogisticRegression(max_iter=cfg["lr_max_iter"])
    if kind == "beta":
        return BetaShapleyValuer(alpha=cfg["alpha"], beta=cfg["beta"], estimator=lr,
                                 scoring="accuracy", sampler="permutation",
                                 truncation=truncation, max_updates=permutations,
                                 n_jobs=n_jobs, random_state=seed, **kw)
    return ShapleyValuer(lr, scoring="accuracy", sampler="permutation",
                         truncation=truncation, max_updates=permutations, n_jobs=n_jobs,
                         random_state=seed, **kw)


def _valuer_name(kind: str, cfg: dict, truncation, permutations: int, **kw) -> str:
    extra = "".join(f", {k}={v!r}" for k, v in kw.items())
    if kind == "beta":
        return (f"skdvl BetaShapleyValuer(alpha={cfg['alpha']:g}, beta={cfg['beta']:g}, "
                f"sampler='permutation', truncation={truncation}, "
                f"max_updates={permutations}{extra})")
    return (f"skdvl ShapleyValuer(sampler='permutation', truncation={truncation}, "
            f"max_updates={permutations}{extra})")


def _fit_skdvl(valuer, d: dict) -> dict:
    """Warm-up fit of the model (untimed), then ``valuer.fit`` timed; warnings recorded."""
    from sklearn.linear_model import LogisticRegression

    LogisticRegression(max_iter=1000).fit(d["X_train"], d["y_train"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        valuer.fit(d["X_train"], d["y_train"], X_val=d["X_val"], y_val=d["y_val"])
        wall = time.perf_counter() - t0
    values = np.asarray(valuer.values_, dtype=float)
    return {"wall_s": wall, "n_utility_evaluations": int(valuer.n_utility_evaluations_),
            "fit_path": getattr(valuer, "fit_path_", None),
            "permutations": int(np.max(valuer.counts_)),
            "converged": bool(getattr(valuer, "converged_", False)),
            "auroc": _auroc(d["flipped"], values), "values": values,
            "warnings": sorted({f"{w.category.__name__}: {str(w.message)[:200]}"
                                for w in caught})}


# ---------------------------------------------------------------- skdvl, in a child
def child_main() -> None:
    """``--child``: one skdvl valuer fit described by a JSON spec on stdin; prints JSON.

    A thread writes this process's VmHWM to ``spec["hwm_file"]`` every 0.5 s, so a
    parent that kills the child on a time-out still knows its peak memory so far.
    """
    spec = json.load(sys.stdin)
    t_start = time.perf_counter()
    stop = threading.Event()

    def monitor():
        while not stop.is_set():
            try:
                Path(spec["hwm_file"]).write_text(json.dumps(
                    {"vm_hwm_mb": _proc_status_mb("VmHWM"),
                     "elapsed_s": time.perf_counter() - t_start}))
            except OSError:
                pass
            stop.wait(0.5)

    threading.Thread(target=monitor, daemon=True).start()
    from threadpoolctl import threadpool_limits

    sha, root = _src_sha()  # not _load_skdvl: importing every module inflates the RSS
    with np.load(spec["data"]) as z:
        d = {k: z[k] for k in z.files}
    cfg = spec["cfg"]
    valuer = _valuer(spec["kind"], cfg, truncation=spec["truncation"],
                     permutations=spec["permutations"], seed=spec["seed"],
                     **spec.get("kwargs", {}))
    out = {"skdvl_src_sha": sha, "skdvl_path": root,
           "rss_before_fit_mb": _proc_status_mb("VmRSS")}
    try:
        with threadpool_limits(1):
            res = _fit_skdvl(valuer, d)
        res.pop("values")
        out.update(res, status="ok")
    except Exception as exc:  # recorded: a valuer that raises is a result here
        out.update(status=f"raised {type(exc).__name__}: {str(exc)[:300]}")
    stop.set()
    out["skdvl_src_sha_end"] = _src_sha()[0]  # differs if skdvl changed during the fit
    out["vm_hwm_mb"] = _proc_status_mb("VmHWM")
    out["ru_maxrss_self_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(_jsonable(out)))


def run_child(name: str, spec: dict, timeout: float, tmp: str) -> dict:
    """Run ``child_main`` in a fresh process of this venv, killed after ``timeout`` s.

    Peak RSS: ``/usr/bin/time``'s maximum resident set of the child (``time_maxrss_mb``)
    when /usr/bin/time exists, and the child's own ``VmHWM``. (``wait4``'s ru_maxrss of a
    child spawned from here would include this process's RSS at the spawn, so it is not
    used.) On a time-out the last VmHWM the child wrote is reported.
    """
    from pydvl_env import _wait

    base = Path(tmp) / f"child_{name}"
    spec = {**spec, "hwm_file": str(base) + ".hwm"}
    Path(str(base) + ".in").write_text(json.dumps(_jsonable(spec)))
    time_out = str(base) + ".time"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child"]
    gnu_time = shutil.which("time") or ("/usr/bin/time" if os.path.exists("/usr/bin/time")
                                         else None)
    if gnu_time:
        cmd = [gnu_time, "-f", "%M", "-o", time_out, *cmd]
    print(f"  child {name}: timeout {timeout:.0f} s ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    with open(str(base) + ".in") as fin, open(str(base) + ".out", "w") as fout, \
            open(str(base) + ".err", "w") as ferr:
        proc = subprocess.Popen(cmd, stdin=fin, stdout=fout, stderr=ferr,
                                start_new_session=True, cwd=REPO)
        rc, _usage, timed_out = _wait(proc.pid, timeout)
        proc.returncode = rc
    wall = time.perf_counter() - t0
    res: dict = {"process_wall_s": wall}
    stdout = Path(str(base) + ".out").read_text()
    stderr = Path(str(base) + ".err").read_text()
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    if timed_out:
        res["status"] = f"timed out after {timeout:.0f} s"
    elif rc != 0 or not lines:
        res["status"] = f"failed (exit {rc})"
        res["stderr_tail"] = stderr[-2000:]
    else:
        try:
            res.update(json.loads(lines[-1]))
        except json.JSONDecodeError:
            res["status"] = "failed (no JSON result)"
            res["stderr_tail"] = stderr[-2000:]
    if gnu_time and os.path.exists(time_out) and not timed_out:
        try:
            last = Path(time_out).read_text().strip().splitlines()[-1]
            res["time_maxrss_mb"] = int(last) / 1024
        except (ValueError, IndexError):
            pass
    hwm = Path(spec["hwm_file"])
    if "vm_hwm_mb" not in res and hwm.exists():
        try:
            last = json.loads(hwm.read_text())
            res["vm_hwm_mb"] = last["vm_hwm_mb"]
            res["vm_hwm_at_s"] = last["elapsed_s"]
        except (json.JSONDecodeError, KeyError):
            pass
    if "n_utility_evaluations" in res and res.get("wall_s"):
        res["evals_per_s"] = res["n_utility_evaluations"] / res["wall_s"]
    print(f"  child {name}: {res.get('status')}, wall {res.get('wall_s')}, "
          f"path {res.get('fit_path')}", file=sys.stderr, flush=True)
    return res


# ---------------------------------------------------------------- pyDVL
def _pydvl(args: dict, timeout: float) -> dict:
    """run_pydvl, with a failure or time-out recorded instead of raised."""
    from pydvl_env import run_pydvl

    t0 = time.perf_counter()
    try:
        res = run_pydvl(PYDVL_SCRIPT, args, timeout=timeout)
    except TimeoutError:
        return {"error": f"timed out after {timeout:.0f} s"}
    except RuntimeError as exc:
        return {"error": str(exc)[-1500:]}
    out = dict(res["result"][args["part"]])
    out["pydvl_version"] = res["result"]["pydvl_version"]
    out["process_wall_s"] = res["wall_s"]
    print(f"  pyDVL {args['part']}: done in {time.perf_counter() - t0:.1f} s",
          file=sys.stderr, flush=True)
    return out


# ---------------------------------------------------------------- parts
def _summarise(runs: list[dict]) -> dict:
    walls = [r["wall_s"] for r in runs]
    w, w_se = _mean_se(walls)
    a, a_se = _mean_se([r.get("auroc") for r in runs])
    e, _ = _mean_se([r.get("n_utility_evaluations") for r in runs])
    return {"wall_mean_s": w, "wall_se_s": w_se, "auroc_mean": a, "auroc_se": a_se,
            "evals_mean": e, "walls_s": walls, "aurocs": [r.get("auroc") for r in runs]}


def part_seeds(part: str, cfg: dict, tmp: str, pydvl: bool) -> dict:
    """tmc, tmc_full, beta: both libraries over the seeds."""
    from scipy.stats import spearmanr
    from threadpoolctl import threadpool_limits

    path = os.path.join(tmp, "bc.npz")
    d = make_small("bc", cfg, path)
    rtol = cfg["rtol"] if part == "tmc" else None
    perms = cfg["beta_permutations"] if part == "beta" else cfg["tmc_permutations"]
    kind = "beta" if part == "beta" else "shapley"
    out: dict = {**_shape(d), "permutations": perms, "truncation": rtol,
                 "seeds": cfg["seeds"], "loadavg_start": os.getloadavg()}
    if pydvl:
        out["pydvl"] = _pydvl({"part": "beta" if part == "beta" else "tmc", "data": path,
                               "lr_max_iter": cfg["lr_max_iter"], "seeds": cfg["seeds"],
                               "permutations": perms, "rtol": rtol, "alpha": cfg["alpha"],
                               "beta": cfg["beta"]}, cfg["pydvl_timeout"])
        if "runs" in out["pydvl"]:
            out["pydvl"]["summary"] = _summarise(out["pydvl"]["runs"])
        out["loadavg_after_pydvl"] = os.getloadavg()
    runs = []
    with threadpool_limits(1):
        for seed in cfg["seeds"]:
            v = _valuer(kind, cfg, truncation=rtol, permutations=perms, seed=seed)
            r = {"seed": seed, **_fit_skdvl(v, d)}
            runs.append(r)
            print(f"  skdvl {part} seed {seed}: {r['wall_s']:.2f} s, "
                  f"{r['n_utility_evaluations']} evaluations, {r['fit_path']}",
                  file=sys.stderr, flush=True)
    out["skdvl"] = {"name": _valuer_name(kind, cfg, rtol, perms), "runs": runs,
                    "summary": _summarise(runs)}
    p = out.get("pydvl", {})
    if "summary" in p:
        out["ratio_pydvl_over_skdvl"] = (p["summary"]["wall_mean_s"]
                                         / out["skdvl"]["summary"]["wall_mean_s"])
        pv = np.nanmean([np.asarray(r["values"], dtype=float) for r in p["runs"]], axis=0)
        sv = np.nanmean([r["values"] for r in runs], axis=0)
        out["spearman_seed_mean_values"] = float(spearmanr(pv, sv)[0])
    out["loadavg_end"] = os.getloadavg()
    return out


def part_njobs(cfg: dict, tmp: str) -> dict:
    from threadpoolctl import threadpool_limits

    d = make_small("bc", cfg, os.path.join(tmp, "bc.npz"))
    seed, perms = cfg["seeds"][0], cfg["njobs_permutations"]
    out: dict = {**_shape(d), "permutations": perms, "seed": seed,
                 "loadavg_start": os.getloadavg(), "tasks": []}
    with threadpool_limits(1):
        for task, rtol in (("tmc", cfg["rtol"]), ("tmc_full", None)):
            # untimed warm-up with n_jobs=2 and the timed run's budget (a budget of a
            # couple of permutations is one task, run in this process: no worker would
            # start), so that the loky workers exist before the timing
            _valuer("shapley", cfg, truncation=rtol, permutations=perms, seed=seed + 1,
                    n_jobs=2).fit(d["X_train"], d["y_train"], X_val=d["X_val"],
                                  y_val=d["y_val"])
            rows = {}
            for nj in (1, 2):
                rows[nj] = _fit_skdvl(_valuer("shapley", cfg, truncation=rtol,
                                              permutations=perms, seed=seed, n_jobs=nj), d)
                print(f"  skdvl njobs {task} n_jobs={nj}: {rows[nj]['wall_s']:.2f} s",
                      file=sys.stderr, flush=True)
            a, b = rows[1]["values"], rows[2]["values"]
            ok = np.isfinite(a) & np.isfinite(b)
            out["tasks"].append({
                "task": task, "truncation": rtol,
                "name": _valuer_name("shapley", cfg, rtol, perms),
                "n_jobs_1": rows[1], "n_jobs_2": rows[2],
                "ratio_1_over_2": rows[1]["wall_s"] / rows[2]["wall_s"],
                "bitwise_equal": bool(np.array_equal(a, b)),
                "max_abs_diff": float(np.max(np.abs(a[ok] - b[ok]))) if ok.any() else None})
    out["loadavg_end"] = os.getloadavg()
    return out


def part_digits(cfg: dict, tmp: str, pydvl: bool) -> dict:
    path = os.path.join(tmp, "digits.npz")
    d = make_small("digits", cfg, path)
    perms, seed = cfg["digits_permutations"], cfg["seeds"][0]
    out: dict = {**_shape(d), "permutations": perms, "seed": seed,
                 "loadavg_start": os.getloadavg(), "skdvl": []}
    if pydvl:
        out["pydvl"] = _pydvl({"part": "tmc", "data": path, "lr_max_iter": cfg["lr_max_iter"],
                               "seeds": [seed], "permutations": perms, "rtol": cfg["rtol"]},
                              cfg["pydvl_timeout"])
        out["loadavg_after_pydvl"] = os.getloadavg()
    for label, bf in (("auto", "auto"), ("True", True)):
        spec = {"kind": "shapley", "cfg": cfg, "data": path, "truncation": cfg["rtol"],
                "permutations": perms, "seed": seed, "kwargs": {"batch_fit": bf}}
        r = run_child(f"digits_{label}", spec, cfg["digits_timeout"], tmp)
        r["name"] = _valuer_name("shapley", cfg, cfg["rtol"], perms, batch_fit=bf)
        out["skdvl"].append(r)
    p = out.get("pydvl", {})
    if "runs" in p:
        for r in out["skdvl"]:
            if r.get("wall_s"):
                r["ratio_pydvl_over_skdvl"] = p["runs"][0]["wall_s"] / r["wall_s"]
    out["loadavg_end"] = os.getloadavg()
    return out


def part_big(part: str, cfg: dict, tmp: str, pydvl: bool) -> dict:
    n_train = cfg[f"{part}_n_train"]
    perms = cfg[f"{part}_permutations"]
    rtol = None if part == "big10k" else cfg["rtol"]
    path = os.path.join(tmp, f"{part}.npz")
    d = make_big(n_train, cfg, path)
    out: dict = {**_shape(d), "permutations": perms, "truncation": rtol,
                 "seed": cfg["seeds"][0], "loadavg_start": os.getloadavg()}
    del d
    spec = {"kind": "shapley", "cfg": cfg, "data": path, "truncation": rtol,
            "permutations": perms, "seed": cfg["seeds"][0]}
    n_jobs = int(cfg.get("big_n_jobs", 1))
    if n_jobs != 1:  # the child's peak memory is then its own, not its workers'
        spec["kwargs"] = {"n_jobs": n_jobs}
        out["n_jobs"] = n_jobs
    sk = run_child(part, spec, cfg["big_timeout"], tmp)
    sk["name"] = _valuer_name("shapley", cfg, rtol, perms,
                              **({"n_jobs": n_jobs} if n_jobs != 1 else {}))
    out["skdvl"] = sk
    out["loadavg_after_skdvl"] = os.getloadavg()
    if pydvl and part == "big10k":
        args = {"data": path, "lr_max_iter": cfg["lr_max_iter"], "seed": cfg["seeds"][0]}
        fits = _pydvl({**args, "part": "big_fits", "n_fits": cfg["pydvl_big_fits"]},
                      cfg["big_timeout"])
        out["pydvl_fits"] = fits
        one_perm_s, basis = None, None
        if "est_one_permutation_s" in fits:
            one_perm_s = fits["est_one_permutation_s"]
            basis = f"{fits['n_calls']} timed prefix fits (evenly spaced lengths)"
            if one_perm_s <= cfg["pydvl_perm_max_s"]:
                perm = _pydvl({**args, "part": "big_perm"},
                              max(cfg["big_timeout"], 2 * one_perm_s + 120))
                out["pydvl_perm"] = perm
                if "wall_s" in perm:
                    one_perm_s, basis = perm["wall_s"], "1 measured untruncated permutation"
        if one_perm_s is not None:
            out["pydvl_extrapolated"] = {
                "permutations": perms, "wall_s": one_perm_s * perms, "basis": basis,
                "utility_evaluations": n_train * perms,
                "evals_per_s": n_train / one_perm_s}
            if sk.get("wall_s") and sk.get("status") == "ok":
                out["ratio_pydvl_extrapolated_over_skdvl"] = one_perm_s * perms / sk["wall_s"]
        out["loadavg_after_pydvl"] = os.getloadavg()
    out["loadavg_end"] = os.getloadavg()
    return out


def flops_count(d: int, n_val: int) -> int:
    """Flops of one incremental prefix step: a rank-one update of the (d+1)-square
    normal matrix and the n_val validation predictions (a multiply-add is 2 flops)."""
    return 2 * (d + 1) ** 2 + 2 * n_val * (d + 1)


def part_flops(cfg: dict, results: dict, earlier: Path) -> dict:
    from threadpoolctl import threadpool_limits

    out: dict = {"loadavg_start": os.getloadavg(),
                 "count": "F = 2 (d+1)^2 + 2 n_val (d+1) flops per prefix fit"}
    n = cfg["dgemm_n"]
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((n, n)), rng.standard_normal((n, n))
    with threadpool_limits(1):
        A @ B
        times = []
        for _ in range(cfg["dgemm_repeats"]):
            t0 = time.perf_counter()
            A @ B
            times.append(time.perf_counter() - t0)
    out["dgemm"] = {"n": n, "best_s": min(times), "times_s": times,
                    "gflops": 2 * n ** 3 / min(times) / 1e9}
    source = {k: "this run" for k in results}
    pool = dict(results)
    if earlier.exists():
        try:
            old = json.loads(earlier.read_text())
            for k, v in old.get("results", {}).items():
                if k not in pool and k in ("tmc", "tmc_full", "beta", "big10k", "big100k"):
                    pool[k] = v
                    source[k] = (f"{earlier.name} of {old.get('git_commit', '?')} "
                                 f"({old.get('finished', '?')})")
        except (json.JSONDecodeError, OSError):
            pass
    rows = []

    def add(part, who, name, wall, evals, dd, n_val):
        if not wall or not evals:
            return
        s = wall / evals
        F = flops_count(dd, n_val)
        rows.append({"part": part, "source": source[part], "who": who, "name": name,
                     "d": dd, "n_val": n_val, "evaluations": evals, "wall_s": wall,
                     "s_per_prefix": s, "flops_per_prefix": F, "gflops": F / s / 1e9,
                     "fraction_of_dgemm": F / s / 1e9 / out["dgemm"]["gflops"]})

    for part in ("tmc", "tmc_full", "beta"):
        r = pool.get(part)
        if not r:
            continue
        dd, nv = r["n_features"], r["n_val"]
        for who in ("pydvl", "skdvl"):
            s = (r.get(who) or {}).get("summary")
            if s:
                add(part, who, r[who]["name"], s["wall_mean_s"], s["evals_mean"], dd, nv)
    for part in ("big10k", "big100k"):
        r = pool.get(part)
        if not r:
            continue
        dd, nv = r["n_features"], r["n_val"]
        sk = r.get("skdvl", {})
        if sk.get("status") == "ok":
            add(part, "skdvl", sk["name"], sk["wall_s"], sk["n_utility_evaluations"], dd, nv)
        pe = r.get("pydvl_extrapolated")
        if pe:
            add(part, "pydvl", f"pyDVL, from {pe['basis']}", pe["wall_s"],
                pe["utility_evaluations"], dd, nv)
    out["rows"] = rows
    out["loadavg_end"] = os.getloadavg()
    return out


# ---------------------------------------------------------------- report
def _f(x, spec=".3g", dash="-"):
    return dash if x is None else format(x, spec)


def _pm(m, se, spec=".3g"):
    return "-" if m is None else f"{format(m, spec)} ± {format(se or 0, spec)}"


def _la(res: dict) -> str:
    a, b = res.get("loadavg_start"), res.get("loadavg_end")
    return f"load average {a[0]:.2f} -> {b[0]:.2f}" if a and b else ""


def report(out: dict) -> str:
    cfg = out["config"]
    L: list[str] = []

    def row(*cols):
        L.append("| " + " | ".join(str(c) for c in cols) + " |")

    bc = (f"breast cancer ({cfg['n_rows']} rows, 50/50), {int(cfg['flip'] * 100)}% of "
          "training labels flipped, LogisticRegression(max_iter="
          f"{cfg['lr_max_iter']}), accuracy, n_jobs=1")
    for part in out["parts"]:
        res = out["results"].get(part)
        if res is None:
            continue
        if part in ("tmc", "tmc_full", "beta"):
            what = {"tmc": f"TMC Shapley, rtol={cfg['rtol']}, no burn-in",
                    "tmc_full": "Permutation Shapley, no truncation",
                    "beta": f"Beta Shapley ({cfg['alpha']:g}, {cfg['beta']:g}), "
                            "permutations, no truncation"}[part]
            L.append(f"\n### {part}: {what}, {res['permutations']} permutations; {bc}; "
                     f"seeds {res['seeds']} ({_la(res)})\n")
            row("run", "fit path", "utility evals (mean)", "wall s (mean ± se)",
                "wall s per seed", "pyDVL / skdvl", "AUROC(-values) mean ± se",
                "AUROC per seed")
            row(*["---"] * 8)
            p = res.get("pydvl")
            if p and "summary" in p:
                s = p["summary"]
                row(p["name"], "-", _f(s["evals_mean"], ",.0f"),
                    _pm(s["wall_mean_s"], s["wall_se_s"]),
                    ", ".join(f"{w:.3g}" for w in s["walls_s"]), "1.0x",
                    _pm(s["auroc_mean"], s["auroc_se"], ".3f"),
                    ", ".join(_f(a, ".3f") for a in s["aurocs"]))
            elif p:
                row("pyDVL", "-", "-", p.get("error", "?")[:200], "-", "-", "-", "-")
            s = res["skdvl"]["summary"]
            paths = sorted({r["fit_path"] for r in res["skdvl"]["runs"]})
            row(res["skdvl"]["name"], "; ".join(str(x) for x in paths),
                _f(s["evals_mean"], ",.0f"), _pm(s["wall_mean_s"], s["wall_se_s"]),
                ", ".join(f"{w:.3g}" for w in s["walls_s"]),
                _f(res.get("ratio_pydvl_over_skdvl"), ".1f") + "x",
                _pm(s["auroc_mean"], s["auroc_se"], ".3f"),
                ", ".join(_f(a, ".3f") for a in s["aurocs"]))
            if "spearman_seed_mean_values" in res:
                L.append(f"\nSpearman of the seed-averaged values, pyDVL vs skdvl: "
                         f"{res['spearman_seed_mean_values']:.3f}")
            warns = sorted({w for r in res["skdvl"]["runs"] for w in r["warnings"]})
            if warns:
                L.append("skdvl warnings: " + "; ".join(w[:160] for w in warns))
        elif part == "njobs":
            L.append(f"\n### njobs: skdvl only, n_jobs=1 vs 2 (after a warm-up fit with "
                     f"n_jobs=2), {res['permutations']} permutations, seed {res['seed']}; "
                     f"{bc.replace(', n_jobs=1', '')} ({_la(res)})\n")
            row("task", "run", "fit path", "utility evals", "wall s, n_jobs=1",
                "wall s, n_jobs=2", "n_jobs=1 / n_jobs=2", "values bitwise equal",
                "max abs diff")
            row(*["---"] * 9)
            for t in res["tasks"]:
                a, b = t["n_jobs_1"], t["n_jobs_2"]
                row(t["task"], t["name"], a["fit_path"],
                    f"{a['n_utility_evaluations']:,} / {b['n_utility_evaluations']:,}",
                    _f(a["wall_s"]), _f(b["wall_s"]), _f(t["ratio_1_over_2"], ".2f") + "x",
                    "yes" if t["bitwise_equal"] else "**no**", _f(t["max_abs_diff"], ".2g"))
        elif part == "digits":
            L.append(f"\n### digits: TMC Shapley, rtol={cfg['rtol']}, "
                     f"{res['permutations']} permutations, seed {res['seed']}; digits "
                     f"({cfg['digits_rows']} rows, 50/50, {res['n_classes']} classes, "
                     f"{res['n_features']} features), {int(cfg['flip'] * 100)}% of "
                     f"labels moved, LogisticRegression, accuracy, n_jobs=1 ({_la(res)})\n")
            row("run", "status", "fit path", "utility evals", "wall s", "pyDVL / skdvl",
                "AUROC(-values)", "peak RSS MB")
            row(*["---"] * 8)
            p = res.get("pydvl")
            if p and "runs" in p:
                r = p["runs"][0]
                row(p["name"], "ok", "-", f"{r['n_utility_evaluations']:,}",
                    _f(r["wall_s"]), "1.0x", _f(r["auroc"], ".3f"), "-")
            elif p:
                row("pyDVL", p.get("error", "?")[:200], "-", "-", "-", "-", "-", "-")
            for r in res["skdvl"]:
                row(r["name"], r.get("status"), r.get("fit_path") or "-",
                    _f(r.get("n_utility_evaluations"), ","), _f(r.get("wall_s")),
                    _f(r.get("ratio_pydvl_over_skdvl"), ".2f") + "x"
                    if r.get("ratio_pydvl_over_skdvl") else "-",
                    _f(r.get("auroc"), ".3f"), _f(r.get("time_maxrss_mb") or
                                                  r.get("vm_hwm_mb"), ",.0f"))
        elif part in ("big10k", "big100k"):
            trunc = "no truncation" if res["truncation"] is None else \
                f"truncation {res['truncation']}"
            L.append(f"\n### {part}: make_classification, {res['n_train']:,} training x "
                     f"{res['n_features']} features, {res['n_val']:,} validation rows, "
                     f"{res['n_flipped']:,} flipped labels; Shapley, {trunc}, "
                     f"{res['permutations']} permutations, n_jobs={res.get('n_jobs', 1)}, "
                     f"seed {res['seed']} "
                     f"({_la(res)})\n")
            row("run", "status", "fit path", "permutations", "utility evals", "wall s",
                "prefix fits / s", "peak RSS MB (/usr/bin/time)", "VmHWM MB",
                "RSS before fit MB", "AUROC(-values)")
            row(*["---"] * 11)
            sk = res["skdvl"]
            row(sk["name"], sk.get("status"), sk.get("fit_path") or "-",
                _f(sk.get("permutations"), ","), _f(sk.get("n_utility_evaluations"), ","),
                _f(sk.get("wall_s")), _f(sk.get("evals_per_s"), ",.0f"),
                _f(sk.get("time_maxrss_mb"), ",.0f"),
                _f(sk.get("vm_hwm_mb"), ",.0f") + (
                    f" (at {sk['vm_hwm_at_s']:.0f} s)" if "vm_hwm_at_s" in sk else ""),
                _f(sk.get("rss_before_fit_mb"), ",.0f"), _f(sk.get("auroc"), ".3f"))
            pf, pp = res.get("pydvl_fits"), res.get("pydvl_perm")
            if pf and "wall_s" in pf:
                row(f"{pf['name']}: measured", "ok", "-", "-", f"{pf['n_calls']:,}",
                    _f(pf["wall_s"]), _f(pf["n_calls"] / pf["wall_s"], ",.1f"),
                    "-", "-", "-", "-")
            elif pf:
                row("pyDVL sampled prefix fits", pf.get("error", "?")[:200],
                    *["-"] * 9)
            if pp and "wall_s" in pp:
                row(f"{pp['name']}: measured", "ok", "-", _f(pp["permutations"]),
                    f"{pp['n_utility_evaluations']:,}", _f(pp["wall_s"]),
                    _f(pp["n_utility_evaluations"] / pp["wall_s"], ",.1f"),
                    "-", "-", "-", "-")
            elif pp:
                row("pyDVL one permutation", pp.get("error", "?")[:200], *["-"] * 9)
            pe = res.get("pydvl_extrapolated")
            if pe:
                row(f"pyDVL TMCShapleyValuation(NoTruncation()), **extrapolated** from "
                    f"{pe['basis']}", "extrapolated", "-", f"{pe['permutations']:,}",
                    f"~{pe['utility_evaluations']:,}", f"~{pe['wall_s']:,.0f}",
                    _f(pe["evals_per_s"], ",.1f"), "-", "-", "-", "-")
            if "ratio_pydvl_extrapolated_over_skdvl" in res:
                L.append(f"\npyDVL (extrapolated) / skdvl: "
                         f"~{res['ratio_pydvl_extrapolated_over_skdvl']:.1f}x")
            if sk.get("status") != "ok" and sk.get("stderr_tail"):
                L.append("\nskdvl child stderr (end): `" +
                         sk["stderr_tail"].strip().splitlines()[-1][:300] + "`")
        elif part == "flops":
            g = res["dgemm"]
            L.append(f"\n### flops: cost per prefix fit against {res['count']} "
                     f"({_la(res)})\n")
            L.append(f"Single-thread dgemm ({g['n']} x {g['n']} numpy matmul, "
                     f"threadpool_limits(1), best of {len(g['times_s'])}): "
                     f"{g['best_s'] * 1e3:.1f} ms, **{g['gflops']:.1f} GFLOP/s**.\n")
            row("part", "source", "run", "d", "n_val", "prefix fits", "wall s",
                "µs per prefix", "F flops per prefix", "implied GFLOP/s",
                "share of dgemm rate")
            row(*["---"] * 11)
            for r in res["rows"]:
                row(r["part"], r["source"], r["name"], r["d"], f"{r['n_val']:,}",
                    f"{r['evaluations']:,.0f}", _f(r["wall_s"]),
                    _f(r["s_per_prefix"] * 1e6, ",.1f"), f"{r['flops_per_prefix']:,}",
                    _f(r["gflops"], ".3g"), _f(100 * r["fraction_of_dgemm"], ".2g") + "%")
    return "\n".join(L)


def _table(out: dict) -> str:
    la0, la1 = out["machine"]["loadavg_start"], out["machine"]["loadavg_end"]
    head = (f"## bench_prefix_fits ({'quick' if out['quick'] else 'full'}): "
            f"`{out['command']}`\n\nskdvl {out['skdvl_version']} from {out['skdvl_path']} "
            f"(source sha {out['skdvl_src_sha']}), git commit {out['git_commit']} "
            f"({out['git_head']}); pyDVL {out.get('pydvl_version') or '-'}; "
            f"numpy {out['numpy_version']}, scikit-learn {out['sklearn_version']}; "
            f"{out['machine']['cpus']} CPUs, Python {out['machine']['python']}; "
            f"finished {out['finished']}")
    foot = (f"Load average (1, 5, 15 min): start {la0[0]:.2f} {la0[1]:.2f} {la0[2]:.2f}, "
            f"end {la1[0]:.2f} {la1[1]:.2f} {la1[2]:.2f}; total {out['total_wall_s']:.0f} s")
    if out.get("child_src_mismatch"):
        foot += ("; **a child process saw another skdvl source than this process** ("
                 f"{', '.join(out['child_src_mismatch'])}): skdvl changed during the run")
    if out.get("note"):
        foot += f"; {out['note']}"
    return head + "\n" + report(out) + "\n\n" + foot + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", nargs="+", default=PARTS, choices=PARTS)
    ap.add_argument("--quick", action="store_true", help="tiny budgets (smoke test)")
    ap.add_argument("--no-pydvl", action="store_true", help="skdvl half only")
    ap.add_argument("--seeds", nargs="+", type=int, default=None,
                    help="sampling seeds (default 0-4, 0 1 with --quick); digits, njobs "
                         "and big parts use the first")
    ap.add_argument("--out", default=None,
                    help=f"results json (default {RESULTS.name}, _quick with --quick); "
                         "the .md goes next to it")
    ap.add_argument("--big-timeout", type=float, default=None,
                    help="wall-clock limit of each big10k/big100k child, s (default 900; "
                         "600 with --quick)")
    ap.add_argument("--big10k-permutations", type=int, default=None)
    ap.add_argument("--big-n-jobs", type=int, default=None,
                    help="n_jobs of the big10k/big100k runs (default 1; with more, the "
                         "peak memory recorded is the parent process's only)")
    ap.add_argument("--big100k-permutations", type=int, default=None)
    ap.add_argument("--big100k-rows", type=int, default=None,
                    help="training rows of big100k (default 100,000)")
    ap.add_argument("--digits-timeout", type=float, default=None)
    ap.add_argument("--pydvl-perm-max-s", type=float, default=None,
                    help="run pyDVL's whole big10k permutation only when its estimate is "
                         "below this (default 600 s; never with --quick)")
    ap.add_argument("--note", default=None, help="a line stored with the results")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ns = ap.parse_args(argv)
    if ns.child:
        child_main()
        return {}
    cfg = dict(QUICK if ns.quick else FULL)
    for key, val in (("seeds", ns.seeds), ("big_timeout", ns.big_timeout),
                     ("big10k_permutations", ns.big10k_permutations),
                     ("big100k_permutations", ns.big100k_permutations),
                     ("big_n_jobs", ns.big_n_jobs),
                     ("big100k_n_train", ns.big100k_rows),
                     ("digits_timeout", ns.digits_timeout),
                     ("pydvl_perm_max_s", ns.pydvl_perm_max_s)):
        if val is not None:
            cfg[key] = val
    out_path = Path(ns.out) if ns.out else (
        RESULTS.with_name("prefix_fits_quick.json") if ns.quick else RESULTS)
    import sklearn
    from bench_batch_fit import _git_head

    info = _load_skdvl()
    out: dict = {
        "command": " ".join(["python", "benchmarks/bench_prefix_fits.py",
                             *(argv if argv is not None else sys.argv[1:])]),
        "quick": ns.quick, "config": cfg, "parts": ns.parts, "results": {},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "loadavg_start": os.getloadavg()},
        **info, "git_commit": _git_short(), "git_head": _git_head(info["skdvl_path"]),
        "sklearn_version": sklearn.__version__, "numpy_version": np.__version__,
        "note": ns.note}
    t0 = time.perf_counter()
    pydvl = not ns.no_pydvl
    with tempfile.TemporaryDirectory(prefix="bench-prefix-fits-") as tmp:
        for part in ns.parts:
            print(f"{part} ...", file=sys.stderr, flush=True)
            tp = time.perf_counter()
            if part in ("tmc", "tmc_full", "beta"):
                res = part_seeds(part, cfg, tmp, pydvl)
            elif part == "njobs":
                res = part_njobs(cfg, tmp)
            elif part == "digits":
                res = part_digits(cfg, tmp, pydvl)
            elif part in ("big10k", "big100k"):
                res = part_big(part, cfg, tmp, pydvl)
            else:
                res = part_flops(cfg, out["results"], out_path)
            res["part_wall_s"] = time.perf_counter() - tp
            out["results"][part] = res
            print(f"{part} done in {res['part_wall_s']:.0f} s", file=sys.stderr, flush=True)
    versions = {r.get("pydvl", {}).get("pydvl_version") for r in out["results"].values()
                if isinstance(r.get("pydvl"), dict)}
    versions |= {r.get("pydvl_fits", {}).get("pydvl_version")
                 for r in out["results"].values()}
    versions.discard(None)
    out["pydvl_version"] = ", ".join(sorted(versions)) or None
    mismatch = []
    for part, r in out["results"].items():
        sk = r.get("skdvl")
        children = [sk] if isinstance(sk, dict) and "status" in sk else (
            sk if isinstance(sk, list) else [])
        for c in children:
            for key in ("skdvl_src_sha", "skdvl_src_sha_end"):
                if c.get(key) and c[key] != out["skdvl_src_sha"]:
                    mismatch.append(f"{part}: {c[key]}")
    out["child_src_mismatch"] = sorted(set(mismatch))
    out["machine"]["loadavg_end"] = os.getloadavg()
    out["total_wall_s"] = time.perf_counter() - t0
    out["finished"] = time.strftime("%Y-%m-%d %H:%M")
    out["parent_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["table"] = _table(out)
    print(out["table"])
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(_jsonable(out), indent=1) + "\n")
    out_path.with_suffix(".md").write_text(out["table"])
    return out


if __name__ == "__main__":
    main()
