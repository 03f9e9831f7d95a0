"""Batched linear fits (``batch_fit``, issue 13): skdvl against pyDVL 0.10, side by side.

Run from the repository root with our venv::

    python benchmarks/bench_batch_fit.py                  # full run, ~10-15 min on 2 cores
    python benchmarks/bench_batch_fit.py --quick          # tiny budgets, a smoke test
    python benchmarks/bench_batch_fit.py --parts tmc msr  # some parts only

For each part, pyDVL (in ``benchmarks/.pydvl-venv``, through ``run_pydvl`` with
``benchmarks/pydvl_side/batch_fit.py``) runs first, then skdvl in this process, on the
same data and budget: load from other processes hits both halves of a part alike. BLAS
is single-threaded on both sides (``OMP_NUM_THREADS=1`` and ``threadpool_limits(1)``),
n_jobs=1, ``LogisticRegression(max_iter=1000)`` (scikit-learn's default ``tol=1e-4``),
scoring "accuracy". Times are of ``fit`` alone, measured inside each process, after one
untimed warm-up fit of the model on all rows. Results: a markdown table on stdout and
``benchmarks/results/batch_fit.json`` (``batch_fit_quick.json`` with ``--quick``).

Parts
-----
tmc      truncated Monte Carlo Shapley on breast cancer: first 300 rows, stratified
         50/50 split (seed 0), standardised, 10% of the 150 training labels flipped
         (seed 0); relative truncation 0.01, no burn-in, 100 permutations. skdvl three
         ways: ``batch_fit=False``, ``batch_fit="auto"``, and
         ``Pipeline(StandardScaler(), LogisticRegression())`` on the unscaled rows
         (auto). Wall time, ratio pyDVL / skdvl, model fits, utility evaluations,
         AUROC of -values at finding the flipped rows.
msr      MSR Banzhaf on the same data, 1,500 sampled subsets on both sides.
exact16  exact Shapley of the first 16 training rows (65,536 coalitions): skdvl
         auto and False; pyDVL's exact enumeration (n 2^(n-1) samples, 2 utility calls
         each) is timed on a sample of uniform draws and extrapolated when it would
         take more than 5 minutes (clearly labelled): 1,500 samples of
         ShapleyValuation + UniformSampler, whose subsets have the sizes of the
         enumeration's, times n 2^(n-1) samples.
digits   the tmc part on ``load_digits`` (first 300 rows, 10 classes, standardised,
         10% of the training labels moved to another class), 50 permutations (a
         multiclass fit costs ~15 ms: 100 would take the full run past 15 minutes);
         skdvl auto (which picks the per-coalition path for 650 parameters) and False.
A last table gives the cost per utility evaluation and per model fit of every run.

Every skdvl module is imported at start and its source fingerprinted (``skdvl_src_sha``
in the json). To measure one commit while others keep committing, run a snapshot::

    H=$(git rev-parse --short HEAD); mkdir -p /tmp/skdvl-$H
    git archive $H skdvl | tar -x -C /tmp/skdvl-$H
    PYTHONPATH=/tmp/skdvl-$H python benchmarks/bench_batch_fit.py --note "skdvl at $H"
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one BLAS thread per process, on both sides

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
from bench_semivalues import _jsonable
from pydvl_env import run_pydvl

PYDVL_SCRIPT = BENCH_DIR / "pydvl_side" / "batch_fit.py"
RESULTS = BENCH_DIR / "results" / "batch_fit.json"
PARTS = ["tmc", "msr", "exact16", "digits"]

FULL = {"n_rows": 300, "flip": 0.1, "lr_max_iter": 1000, "seed": 0,
        "tmc_permutations": 100, "rtol": 0.01, "msr_samples": 1500,
        "exact_n": 16, "exact_pydvl_samples": 1500, "exact_max_s": 300.0,
        "digits_rows": 300, "digits_permutations": 50, "auroc_seeds": 5, "device": None}
QUICK = {**FULL, "tmc_permutations": 3, "msr_samples": 64, "exact_n": 8,
         "exact_pydvl_samples": 40, "digits_rows": 200, "digits_permutations": 2,
         "auroc_seeds": 1}


# ---------------------------------------------------------------- data
def _split_flip(X, y, n_rows: int, flip: float, scale: bool = True) -> dict:
    """First ``n_rows`` rows, 50/50 stratified split (seed 0), ``flip`` of the training
    labels moved to another class (seed 0); standardised on the training rows, and the
    unscaled rows kept as ``X_train_raw`` / ``X_val_raw``."""
    X, y = X[:n_rows], y[:n_rows]
    X_tr, X_val, y_tr, y_val = train_test_split(X, y, test_size=0.5, stratify=y,
                                                random_state=0)
    scaler = StandardScaler().fit(X_tr)
    rng = np.random.default_rng(0)
    flipped = np.zeros(len(y_tr), dtype=bool)
    flipped[rng.choice(len(y_tr), size=round(flip * len(y_tr)), replace=False)] = True
    classes = np.unique(y_tr)
    y_noisy = y_tr.copy()
    for i in np.flatnonzero(flipped):  # binary: 1 - y; multiclass: a random other class
        y_noisy[i] = rng.choice(classes[classes != y_tr[i]])
    return {"X_train": scaler.transform(X_tr), "y_train": y_noisy,
            "X_val": scaler.transform(X_val), "y_val": y_val, "flipped": flipped,
            "X_train_raw": X_tr, "X_val_raw": X_val}


def make_data(part: str, cfg: dict, path: str) -> dict:
    if part == "digits":
        d = _split_flip(*load_digits(return_X_y=True), cfg["digits_rows"], cfg["flip"])
    else:
        d = _split_flip(*load_breast_cancer(return_X_y=True), cfg["n_rows"], cfg["flip"])
    np.savez(path, **{k: v for k, v in d.items() if not k.endswith("_raw")})
    return d


# ---------------------------------------------------------------- skdvl side
def _has_batch_fit() -> bool:
    from skdvl import ShapleyValuer

    return "batch_fit" in ShapleyValuer().get_params()


def _n_fits(valuer) -> int | None:
    """Model fits the utility reported (the per-coalition path counts each sklearn fit)."""
    try:
        return int(sum(s.report.n_fits for s in valuer._states_ if s is not None))
    except (AttributeError, TypeError):
        return None


def _run(name: str, valuer, d: dict, raw: bool = False, **extra) -> dict:
    """Fit ``valuer`` (timed) and describe the run; warnings are recorded, not shown."""
    sfx = "_raw" if raw else ""
    X, X_val = d["X_train" + sfx], d["X_val" + sfx]
    LogisticRegression(max_iter=1000).fit(d["X_train"], d["y_train"])  # untimed warm-up
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        valuer.fit(X, d["y_train"], X_val=X_val, y_val=d["y_val"])
        wall = time.perf_counter() - t0
    values = np.asarray(valuer.values_, dtype=float)
    n_eval = int(valuer.n_utility_evaluations_)
    row = {
        "name": name, "wall_s": wall, "fit_path": getattr(valuer, "fit_path_", None),
        "fits": _n_fits(valuer), "n_utility_evaluations": n_eval,
        "samples": int(np.max(valuer.counts_)) if "Shapley" in name else None,
        "warnings": sorted({f"{w.category.__name__}: {str(w.message)[:200]}"
                            for w in caught}),
        "values": values, **extra,
    }
    if "flipped" in d and len(values) == len(d["flipped"]):
        row["auroc"] = float(roc_auc_score(d["flipped"], -values))
    print(f"  {name}: {wall:.2f} s, path {row['fit_path']}, {n_eval} evaluations, "
          f"{row['fits']} fits", file=sys.stderr, flush=True)
    return row


def _paths(with_param: bool, device=None) -> list:
    """(label, kwargs) of the skdvl runs: False and auto (and auto on ``device``), or
    today's code once."""
    if not with_param:
        return [("batch_fit n/a (code before batch_fit)", {})]
    paths = [("batch_fit=False", {"batch_fit": False}),
             ("batch_fit='auto'", {"batch_fit": "auto"})]
    if device:
        paths.append((f"batch_fit='auto', device={device!r}",
                      {"batch_fit": "auto", "device": device}))
    return paths


def skdvl_tmc(cfg: dict, d: dict, permutations: int, pipeline: bool) -> list[dict]:
    from skdvl import ShapleyValuer

    def valuer(est, kw):
        return ShapleyValuer(est, scoring="accuracy", sampler="permutation",
                             truncation=cfg["rtol"], max_updates=permutations,
                             n_jobs=1, random_state=cfg["seed"], **kw)

    lr = LogisticRegression(max_iter=cfg["lr_max_iter"])
    with_param = _has_batch_fit()
    rows = [_run(f"skdvl ShapleyValuer(truncation={cfg['rtol']}), {label}",
                 valuer(lr, kw), d) for label, kw in _paths(with_param, cfg["device"])]
    if pipeline:
        kw = {"batch_fit": "auto"} if with_param else {}
        pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=cfg["lr_max_iter"]))
        rows.append(_run(f"skdvl ShapleyValuer(truncation={cfg['rtol']}), "
                         f"Pipeline(StandardScaler, LR), unscaled X, {_paths(with_param)[-1][0]}",
                         valuer(pipe, kw), d, raw=True))
    return rows


def skdvl_msr(cfg: dict, d: dict) -> list[dict]:
    from skdvl import BanzhafValuer
    from skdvl.stopping import MaxSamples

    lr = LogisticRegression(max_iter=cfg["lr_max_iter"])
    return [_run(f"skdvl BanzhafValuer(msr, MaxSamples({cfg['msr_samples']})), {label}",
                 BanzhafValuer(lr, scoring="accuracy", sampler="msr", max_updates=None,
                               stopping=MaxSamples(cfg["msr_samples"]), n_jobs=1,
                               random_state=cfg["seed"], **kw), d,
                 samples=cfg["msr_samples"])
            for label, kw in _paths(_has_batch_fit(), cfg["device"])]


def skdvl_exact(cfg: dict, d: dict) -> list[dict]:
    from skdvl import ShapleyValuer

    n = cfg["exact_n"]
    small = {**d, "X_train": d["X_train"][:n], "y_train": d["y_train"][:n]}
    small.pop("flipped")
    lr = LogisticRegression(max_iter=cfg["lr_max_iter"])
    return [_run(f"skdvl ShapleyValuer(exact), {label}",
                 ShapleyValuer(lr, scoring="accuracy", sampler="exact", n_jobs=1,
                               random_state=0, **kw), small, n_players=n)
            for label, kw in _paths(_has_batch_fit(), cfg["device"])]


def run_part(part: str, cfg: dict, tmp: str, pydvl: bool, sk: bool) -> dict:
    data_path = os.path.join(tmp, f"{part}.npz")
    d = make_data(part, cfg, data_path)
    out: dict = {"loadavg_start": os.getloadavg(), "n_train": len(d["y_train"]),
                 "n_features": d["X_train"].shape[1],
                 "n_classes": int(np.unique(d["y_train"]).size)}
    if pydvl:
        perms = cfg["digits_permutations"] if part == "digits" else cfg["tmc_permutations"]
        args = {**cfg, "part": part, "data": data_path, "permutations": perms,
                "exact_samples": cfg["exact_pydvl_samples"]}
        t0 = time.perf_counter()
        res = run_pydvl(PYDVL_SCRIPT, args, timeout=1800)
        rows = res["result"][part]
        out["pydvl"] = rows if isinstance(rows, list) else [rows]
        out["pydvl_version"] = res["result"]["pydvl_version"]
        # run_pydvl's peak RSS includes this process's RSS at fork (Linux keeps the
        # forked copy's high-water mark across exec): not the pyDVL process's own.
        out["pydvl_process"] = {"wall_s": res["wall_s"],
                                "peak_rss_mb_incl_parent_at_fork": res["peak_rss_mb"]}
        print(f"{part}: pyDVL half done in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr, flush=True)
    if sk:
        with threadpool_limits(1):
            if part in ("tmc", "digits"):
                perms = (cfg["digits_permutations"] if part == "digits"
                         else cfg["tmc_permutations"])
                out["skdvl"] = skdvl_tmc(cfg, d, perms, pipeline=part == "tmc")
            elif part == "msr":
                out["skdvl"] = skdvl_msr(cfg, d)
            else:
                out["skdvl"] = skdvl_exact(cfg, d)
    if part == "tmc" and cfg["auroc_seeds"] > 1:
        out["auroc_by_seed"] = _auroc_seeds(cfg, d, data_path, out, pydvl, sk)
    out["loadavg_end"] = os.getloadavg()
    _compare(out)
    return out


def _auroc_seeds(cfg: dict, d: dict, data_path: str, out: dict, pydvl: bool,
                 sk: bool) -> dict:
    """AUROC of TMC over ``auroc_seeds`` sampling seeds (the first is the main run's):
    pyDVL and skdvl's batched path, to compare AUROC beyond one seed's luck."""
    from skdvl import ShapleyValuer

    seeds = list(range(cfg["seed"], cfg["seed"] + cfg["auroc_seeds"]))
    res: dict = {"seeds": seeds, "pydvl": [], "skdvl": []}
    if pydvl:
        res["pydvl"] = [out["pydvl"][0]["auroc"]]
        for seed in seeds[1:]:
            args = {**cfg, "part": "tmc", "data": data_path,
                    "permutations": cfg["tmc_permutations"], "seed": seed,
                    "exact_samples": cfg["exact_pydvl_samples"]}
            rows = run_pydvl(PYDVL_SCRIPT, args, timeout=1800)["result"]["tmc"]
            res["pydvl"].append((rows if isinstance(rows, list) else [rows])[0]["auroc"])
    if sk:
        with threadpool_limits(1):
            for seed in seeds:
                v = ShapleyValuer(LogisticRegression(max_iter=cfg["lr_max_iter"]),
                                  scoring="accuracy", truncation=cfg["rtol"],
                                  max_updates=cfg["tmc_permutations"], n_jobs=1,
                                  random_state=seed)
                v.fit(d["X_train"], d["y_train"], X_val=d["X_val"], y_val=d["y_val"])
                res["skdvl"].append(float(roc_auc_score(d["flipped"],
                                                        -np.asarray(v.values_))))
    print(f"tmc: AUROC over seeds {seeds}: {res}", file=sys.stderr, flush=True)
    return res


def _compare(out: dict) -> None:
    """Ratios to pyDVL and agreement between skdvl's two paths, in place."""
    p, s = out.get("pydvl", []), out.get("skdvl", [])
    exact = [r for r in p if "exact)" in r["name"]]
    if exact:  # pyDVL's exact enumeration ran
        ref_s = exact[0]["wall_s"]
    elif p:
        ref_s = p[0].get("extrapolated_exact_s", p[0]["wall_s"])
    else:
        ref_s = None
    for r in s:
        r["pydvl_over_skdvl"] = None if ref_s is None else ref_s / r["wall_s"]
    plain = [r for r in s if "Pipeline" not in r["name"] and "device" not in r["name"]]
    if len(plain) == 2:
        a, b = (np.asarray(r["values"]) for r in plain)
        ok = np.isfinite(a) & np.isfinite(b)
        out["paths_max_abs_diff"] = float(np.max(np.abs(a[ok] - b[ok])))
        out["paths_spearman"] = float(spearmanr(a[ok], b[ok])[0])
    if exact and isinstance(exact[0].get("values"), np.ndarray):
        out["max_abs_diff_vs_pydvl_exact"] = [
            float(np.max(np.abs(np.asarray(r["values"]) - exact[0]["values"]))) for r in s]
    if p and s and isinstance(p[0].get("values"), np.ndarray):
        out["spearman_vs_pydvl"] = [float(spearmanr(p[0]["values"], r["values"])[0])
                                    for r in s]


# ---------------------------------------------------------------- report
def _fmt(x, spec=".3g"):
    return "-" if x is None else format(x, spec)


def report(out: dict) -> str:
    cfg = out["config"]
    lines: list[str] = []

    def row(*cols):
        lines.append("| " + " | ".join(str(c) for c in cols) + " |")

    titles = {
        "tmc": f"TMC Shapley, breast cancer ({cfg['n_rows']} rows, 50/50), "
               f"{int(cfg['flip'] * 100)}% flipped, rtol={cfg['rtol']}, "
               f"{cfg['tmc_permutations']} permutations",
        "msr": f"MSR Banzhaf, breast cancer, {cfg['msr_samples']} samples",
        "exact16": f"Exact Shapley, first {cfg['exact_n']} training rows of breast "
                   f"cancer ({2 ** cfg['exact_n']:,} coalitions)",
        "digits": f"TMC Shapley, digits ({cfg['digits_rows']} rows, 50/50, 10 classes), "
                  f"{int(cfg['flip'] * 100)}% flipped, rtol={cfg['rtol']}, "
                  f"{cfg['digits_permutations']} permutations",
    }
    for part in out["parts"]:
        res = out["results"][part]
        la = (f"load average {res['loadavg_start'][0]:.2f} -> {res['loadavg_end'][0]:.2f}")
        lines.append(f"\n### {titles[part]}; LogisticRegression(max_iter="
                     f"{cfg['lr_max_iter']}), n_jobs=1 ({la})\n")
        p, s = res.get("pydvl", []), res.get("skdvl", [])
        if part == "exact16":
            row("run", "fit path", "model fits", "utility evals", "wall s", "fits/s",
                "pyDVL / skdvl")
            row(*["---"] * 7)
            for r in p:
                row(r["name"], "-", _fmt(r["fits"], ","), _fmt(r["n_utility_evaluations"], ","),
                    _fmt(r["wall_s"]), _fmt(r["fits"] / r["wall_s"], ",.0f"), "-")
                if "extrapolated_exact_s" in r:
                    row(f"pyDVL exact enumeration, **extrapolated** ({r['exact_samples']:,} "
                        "samples)", "-", f"~{r['extrapolated_exact_fits']:,.0f}",
                        f"{2 * r['exact_samples']:,}", f"~{r['extrapolated_exact_s']:,.0f}",
                        "-", "-")
            for r in s:
                fps = None if r["fits"] is None else r["fits"] / r["wall_s"]
                row(r["name"], r["fit_path"], _fmt(r["fits"], ","),
                    _fmt(r["n_utility_evaluations"], ","), _fmt(r["wall_s"]), _fmt(fps, ",.0f"),
                    _fmt(r["pydvl_over_skdvl"], ",.1f") + "x")
        else:
            row("run", "fit path", "samples", "model fits", "utility evals", "wall s",
                "pyDVL / skdvl", "AUROC(-values)")
            row(*["---"] * 8)
            for r in p:
                row(r["name"], "-", _fmt(r.get("permutations", r.get("samples")), ","),
                    _fmt(r["fits"], ","), _fmt(r["n_utility_evaluations"], ","),
                    _fmt(r["wall_s"]), "1.0x", _fmt(r["auroc"], ".3f"))
            for r in s:
                row(r["name"], r["fit_path"], _fmt(r.get("samples"), ","),
                    _fmt(r["fits"], ","), _fmt(r["n_utility_evaluations"], ","),
                    _fmt(r["wall_s"]),
                    _fmt(r["pydvl_over_skdvl"], ".2f") + "x", _fmt(r.get("auroc"), ".3f"))
        if "paths_max_abs_diff" in res:
            lines.append(f"\nskdvl batch_fit=False vs auto: max |value difference| = "
                         f"{res['paths_max_abs_diff']:.3g}, Spearman = "
                         f"{res['paths_spearman']:.4f}")
        if "max_abs_diff_vs_pydvl_exact" in res:
            lines.append("max |value - pyDVL exact| of each skdvl run: " + ", ".join(
                f"{x:.2g}" for x in res["max_abs_diff_vs_pydvl_exact"]))
        if res.get("auroc_by_seed"):
            a = res["auroc_by_seed"]
            for who in ("pydvl", "skdvl"):
                x = np.asarray(a[who])
                if x.size:
                    lines.append(f"AUROC over seeds {a['seeds']}, {who}"
                                 f"{' batch_fit=auto' if who == 'skdvl' else ''}: mean "
                                 f"{x.mean():.3f}, sd {x.std(ddof=1) if x.size > 1 else 0:.3f},"
                                 f" range {x.min():.3f}-{x.max():.3f}")
        if "spearman_vs_pydvl" in res:
            lines.append("Spearman(values) of each skdvl run with pyDVL's: " + ", ".join(
                f"{x:.3f}" for x in res["spearman_vs_pydvl"]))
    lines.append("\n### Cost per utility evaluation and per model fit (ms)\n")
    row("part", "run", "fit path", "ms / utility eval", "ms / model fit")
    row(*["---"] * 5)
    for part in out["parts"]:
        res = out["results"][part]
        for r in res.get("pydvl", []) + res.get("skdvl", []):
            ev, fits = r["n_utility_evaluations"], r["fits"]
            row(part, r["name"], r.get("fit_path") or "-",
                _fmt(1e3 * r["wall_s"] / ev if ev else None, ".3f"),
                _fmt(1e3 * r["wall_s"] / fits if fits else None, ".3f"))
    return "\n".join(lines)


def _load_skdvl() -> dict:
    """Import every skdvl module a valuer can use *now*, and fingerprint their source.

    Modules imported lazily at the first fit would otherwise come from whatever is on
    disk by then (the source may change during a 15-minute run).
    """
    import hashlib
    import importlib
    import pkgutil

    import skdvl

    skip = ("skdvl.influence", "skdvl.plotting", "skdvl.cli", "skdvl.__main__")
    for m in pkgutil.walk_packages(skdvl.__path__, "skdvl."):
        if not m.name.startswith(skip):
            importlib.import_module(m.name)
    root = Path(skdvl.__file__).parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(f.relative_to(root).as_posix().encode() + f.read_bytes())
    return {"skdvl_path": str(root), "skdvl_src_sha": h.hexdigest()[:16],
            "skdvl_version": getattr(skdvl, "__version__", "?")}


def _git_head(where: str) -> str:
    """HEAD of the checkout skdvl was imported from, and whether its skdvl/ differs."""
    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=where,
                              check=False)

    try:
        head = git("log", "-1", "--format=%h %s")
        if head.returncode != 0:
            return "not a git checkout"
        dirty = git("diff", "--quiet", "HEAD", "--", ".").returncode != 0
        return head.stdout.strip()[:72] + (" (+ uncommitted changes)" if dirty else "")
    except OSError:
        return "?"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", nargs="+", default=PARTS, choices=PARTS)
    ap.add_argument("--quick", action="store_true", help="tiny budgets (smoke test)")
    ap.add_argument("--no-pydvl", action="store_true", help="skdvl half only")
    ap.add_argument("--no-skdvl", action="store_true", help="pyDVL half only")
    ap.add_argument("--seed", type=int, default=0,
                    help="sampling seed (data, split and flips stay fixed)")
    ap.add_argument("--auroc-seeds", type=int, default=None,
                    help="TMC seeds whose AUROC both sides report (default 5, 1 with "
                         "--quick)")
    ap.add_argument("--device", default=None,
                    help="also run skdvl's batched path with device=DEVICE (torch)")
    ap.add_argument("--out", default=None,
                    help=f"results json (default {RESULTS.name}, _quick with --quick)")
    ap.add_argument("--table-from", metavar="JSON", default=None,
                    help="print the table of an earlier results file (and store it there)")
    ap.add_argument("--note", default=None,
                    help="a line stored with the results and printed under the table "
                         "(e.g. which commit a source snapshot is)")
    ns = ap.parse_args(argv)
    if ns.table_from:
        return _retable(Path(ns.table_from), ns.note)
    cfg = dict(QUICK if ns.quick else FULL, seed=ns.seed, device=ns.device)
    if ns.auroc_seeds is not None:
        cfg["auroc_seeds"] = ns.auroc_seeds
    out_path = Path(ns.out) if ns.out else (
        RESULTS.with_name("batch_fit_quick.json") if ns.quick else RESULTS)
    import sklearn

    out: dict = {"config": cfg, "parts": ns.parts, "results": {}, "machine": {
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "platform": platform.platform(), "loadavg_start": os.getloadavg()},
        **_load_skdvl(),
        "sklearn_version": sklearn.__version__, "numpy_version": np.__version__,
        "skdvl_has_batch_fit": _has_batch_fit(), "note": ns.note}
    out["git_head"] = _git_head(out["skdvl_path"])
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-batch-fit-") as tmp:
        for part in ns.parts:
            out["results"][part] = run_part(part, cfg, tmp, not ns.no_pydvl,
                                            not ns.no_skdvl)
    out["machine"]["loadavg_end"] = os.getloadavg()
    out["total_wall_s"] = time.perf_counter() - t0
    out["skdvl_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["table"] = _table(out)
    print(out["table"])
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(_jsonable(out), indent=1) + "\n")
    return out


def _table(out: dict) -> str:
    la0, la1 = out["machine"]["loadavg_start"], out["machine"]["loadavg_end"]
    footer = (f"Load average (1, 5, 15 min): start {la0[0]:.2f} {la0[1]:.2f} {la0[2]:.2f}, "
              f"end {la1[0]:.2f} {la1[1]:.2f} {la1[2]:.2f}; total {out['total_wall_s']:.0f} s; "
              f"skdvl from {out['skdvl_path']} (source sha {out['skdvl_src_sha']}, "
              f"checkout HEAD: {out['git_head']})")
    if out.get("note"):
        footer += f"; {out['note']}"
    return report(out) + "\n\n" + footer


def _retable(path: Path, note: str | None) -> dict:
    out = json.loads(path.read_text())
    if note:
        out["note"] = note
    out["table"] = _table(out)
    print(out["table"])
    path.write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
