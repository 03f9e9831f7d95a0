"""Influence functions: skdvl.influence side by side with pyDVL 0.10.

Same MLP (64 -> hidden -> 10, tanh; 12,010 parameters with hidden=160) trained on sklearn's
digits, same 1,000 training and 100 test rows, same regularisation, float32. For each
method, each library runs in a fresh process (pyDVL inside ``benchmarks/.pydvl-venv``
through :func:`pydvl_env.run_pydvl`) that pays torch.func's one-time import costs
(``_shared.warm_up_torch_func``, about 1 s in both), then fits the method and computes the
100 x 1,000 influence matrix. Reported: the time to fit plus compute that matrix (measured
inside the process), the peak resident memory of the process, and the Pearson correlation
of the matrix with skdvl's ``direct`` matrix. The randomised methods (cg_nystroem, arnoldi,
nystroem) run with ``--repeats`` seeds. Both libraries run with ``--threads`` OpenMP/MKL
threads (default 1, which keeps timings stable on a shared machine). LiSSA: pyDVL gets
``scale=10`` (its default); skdvl estimates its scale. ``arnoldi_nocheck`` and
``nystroem_nocheck`` run skdvl's method with ``check_curvature=False`` (no Lanczos
certificate of positive definiteness, which pyDVL does not run either) against pyDVL's
same method.

Run::

    .venv/bin/python benchmarks/bench_influence.py --out benchmarks/results/influence.json
    .venv/bin/python benchmarks/bench_influence.py --quick   # hidden=80, fewer rows
    # EK-FAC on another trained model, pyDVL's direct left out (it agrees with skdvl's):
    .venv/bin/python benchmarks/bench_influence.py --methods direct ekfac --skip pydvl:direct \
        --model-seed 1 --out benchmarks/results/influence_ekfac_model1.json
    # The default InfluenceScorer(model, loss=...) against direct at its curvature:
    .venv/bin/python benchmarks/bench_influence.py --default-check
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
METHODS = ["direct", "cg", "cg_nystroem", "lissa", "arnoldi", "ekfac", "nystroem", "datainf"]
#: skdvl's low-rank methods without their Lanczos certificate of positive definiteness
#: (``check_curvature=False``), which pyDVL does not run; pyDVL runs its usual method.
NO_CHECK = {"arnoldi_nocheck": "arnoldi", "nystroem_nocheck": "nystroem"}
RANDOMISED = {"cg_nystroem", "arnoldi", "nystroem", *NO_CHECK}  # run with --repeats seeds


def _build_model(hidden, generator=None):
    import torch

    return torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.Tanh(),
                               torch.nn.Linear(hidden, 10))


def prepare(path: Path, hidden: int, n_train: int, n_test: int, seed: int = 0) -> None:
    """Train the MLP on digits (full-batch Adam) and save data and weights to ``path``."""
    import torch
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(X))
    X, y = (X[order] / 16.0).astype(np.float32), y[order].astype(np.int64)
    Xtr, ytr = X[:n_train], y[:n_train]
    Xte, yte = X[n_train : n_train + n_test], y[n_train : n_train + n_test]
    g = torch.Generator().manual_seed(seed)
    model = _build_model(hidden)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) / np.sqrt(p.shape[-1]))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-4)
    Xt, yt = torch.from_numpy(Xtr), torch.from_numpy(ytr)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(Xt), yt).backward()
        opt.step()
    params = {f"param:{k}": v.detach().numpy() for k, v in model.state_dict().items()}
    np.savez(path, X_train=Xtr, y_train=ytr, X_test=Xte, y_test=yte, **params)


def _skdvl_worker() -> None:
    """Child process: fit skdvl's InfluenceScorer and time the influence matrix."""
    import torch
    from _shared import warm_up_torch_func

    from skdvl.influence import CG, Arnoldi, InfluenceScorer, LiSSA, Nystroem

    a = json.load(sys.stdin)
    data = np.load(a["data"])
    model = _build_model(a["hidden"])
    model.load_state_dict({k[6:]: torch.from_numpy(data[k]) for k in data.files
                           if k.startswith("param:")})
    options = {
        "cg": CG(maxiter=a["maxiter"], rtol=a["rtol"]),
        "cg_nystroem": CG(maxiter=a["maxiter"], rtol=a["rtol"], preconditioner="nystroem",
                          rank=a["rank"]),
        "lissa": LiSSA(maxiter=a["lissa_maxiter"], rtol=a["rtol"]),
        "arnoldi": Arnoldi(rank=a["rank"]), "nystroem": Nystroem(rank=a["rank"]),
        "arnoldi_nocheck": Arnoldi(rank=a["rank"], check_curvature=False),
        "nystroem_nocheck": Nystroem(rank=a["rank"], check_curvature=False),
    }
    # The Hessian, as pyDVL uses (positive definite at this regularization on this model).
    scorer = InfluenceScorer(
        model, loss=torch.nn.CrossEntropyLoss(), method=options.get(a["method"], a["method"]),
        regularization=a["regularization"], second_order="hessian",
        batch_size=a["batch_size"], compute_values=False, random_state=a.get("seed", 0),
    )
    warmup_s = warm_up_torch_func()
    t0 = time.perf_counter()
    scorer.fit(data["X_train"], data["y_train"])
    t_fit = time.perf_counter() - t0
    values = scorer.influences(data["X_test"], data["y_test"])
    t_total = time.perf_counter() - t0
    np.save(a["out"], values)
    print(json.dumps({"fit_s": t_fit, "total_s": t_total, "warmup_s": warmup_s}))


def run_skdvl(args: dict, timeout: float) -> dict:
    """Run :func:`_skdvl_worker` in a fresh process; return its result and peak RSS (MB)."""
    with tempfile.TemporaryDirectory(prefix="skdvl-infl-") as tmp:
        args = {**args, "out": os.path.join(tmp, "influences.npy")}
        paths = [Path(tmp) / f for f in ("in.json", "stdout", "stderr")]
        paths[0].write_text(json.dumps(args))
        env = {**os.environ, "PYTHONPATH": str(BENCH_DIR.parent)}
        with open(paths[0]) as fin, open(paths[1], "w") as fout, open(paths[2], "w") as ferr:
            proc = subprocess.Popen([sys.executable, __file__, "--worker"], stdin=fin,
                                    stdout=fout, stderr=ferr, env=env)
            _, status, usage = os.wait4(proc.pid, 0)  # rusage of this child alone
            proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise RuntimeError(paths[2].read_text()[-3000:])
        result = json.loads(paths[1].read_text().strip().splitlines()[-1])
        result["influences"] = np.load(args["out"])
    result["peak_rss_mb"] = usage.ru_maxrss / 1024
    return result


def _trained_skorch_mlp(n_train: int, seed: int):
    """The skorch MLP of ``examples/influence_label_noise.py`` on clean digits labels.

    64-64-10 tanh, softmax output with NeuralNetClassifier's NLLLoss, Adam, 60 epochs;
    its Hessian is indefinite (smallest eigenvalue about -0.0016).
    """
    import torch
    from sklearn.datasets import load_digits
    from skorch import NeuralNetClassifier

    class MLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Tanh(),
                                           torch.nn.Linear(64, 10))

        def forward(self, X):
            return torch.softmax(self.net(X), dim=-1)

    X, y = load_digits(return_X_y=True)
    rows = np.random.default_rng(seed).permutation(len(X))[:n_train]
    X, y = (X[rows] / 16.0).astype(np.float32), y[rows].astype(np.int64)
    torch.manual_seed(seed)  # skorch initialises the module with torch's global generator
    net = NeuralNetClassifier(MLP, max_epochs=60, batch_size=64, train_split=None,
                              optimizer=torch.optim.Adam, optimizer__lr=3e-3, verbose=0)
    return net.fit(X, y), X, y


def default_check(n_train: int, n_test: int, seed: int) -> list[str]:
    """The default scorer against ``direct`` at the same curvature and regularization.

    On a trained skorch MLP whose Hessian is indefinite: the default (cg, Gauss-Newton,
    1e-3) must match ``direct`` with Gauss-Newton at 1e-3, and cg and direct on the
    Hessian at 1e-3 must raise NotPositiveDefiniteError.
    """
    import torch

    from skdvl.influence import InfluenceScorer, NotPositiveDefiniteError

    torch.set_num_threads(1)
    net, X, y = _trained_skorch_mlp(n_train, seed)
    lines, results = [], {}
    for name, kw in [("default", {}),
                     ("direct, gauss_newton, 1e-3", {"method": "direct"}),
                     ("cg, hessian, 1e-3", {"second_order": "hessian"}),
                     ("direct, hessian, 1e-3", {"method": "direct", "second_order": "hessian"})]:
        t0 = time.perf_counter()
        try:
            s = InfluenceScorer(net, compute_values=False, **kw).fit(X, y)
            results[name], outcome = s.influences(X[:n_test], y[:n_test]), "ok"
        except NotPositiveDefiniteError as exc:
            outcome = f"NotPositiveDefiniteError: {str(exc)[:150]}..."
        lines.append(f"| {name} | {time.perf_counter() - t0:.2f} | {outcome} |")
    r = _pearson(results["default"], results["direct, gauss_newton, 1e-3"])
    return ["| scorer | time (s) | outcome |", "|---|---|---|", *lines, "",
            f"Pearson(default, direct gauss_newton 1e-3) = {r:.6f}"]


def _pearson(a, b) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--default-check", action="store_true",
                        help="only compare the default scorer with direct (in-process)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--methods", nargs="*", default=METHODS)
    parser.add_argument("--libraries", nargs="*", default=["skdvl", "pydvl"])
    parser.add_argument("--regularization", type=float, default=1e-2)
    parser.add_argument("--out", default=None)
    parser.add_argument("--model-seed", type=int, default=0,
                        help="seed of the data split and of the MLP's training")
    parser.add_argument("--skip", nargs="*", default=[], metavar="LIBRARY:METHOD",
                        help="runs to leave out, e.g. pydvl:direct (Pearson is then taken "
                             "against skdvl's direct)")
    parser.add_argument("--repeats", type=int, default=10,
                        help="seeds of the randomised methods (cg_nystroem, arnoldi, nystroem)")
    parser.add_argument("--threads", type=int, default=1,
                        help="OMP/MKL threads of both libraries' processes (default 1)")
    opt = parser.parse_args()
    if opt.worker:
        return _skdvl_worker()
    hidden, n_train, n_test = (80, 300, 30) if opt.quick else (160, 1000, 100)
    if opt.default_check:
        print("\n".join(default_check(n_train, n_test, opt.model_seed)))
        return None
    tmp = tempfile.TemporaryDirectory(prefix="bench-influence-")
    data = Path(tmp.name) / "data.npz"
    prepare(data, hidden, n_train, n_test, seed=opt.model_seed)
    common = {"data": str(data), "hidden": hidden, "regularization": opt.regularization,
              "rank": 50, "maxiter": 100, "rtol": 1e-4, "lissa_maxiter": 1000,
              "lissa_scale": 10.0, "batch_size": 256}
    threads = {k: str(opt.threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    os.environ.update(threads)  # inherited by both libraries' child processes
    load_start = os.getloadavg()
    rows = []
    for method in opt.methods:
        seeds = range(opt.repeats) if method in RANDOMISED else [0]
        for lib, seed in ((lib, seed) for seed in seeds for lib in opt.libraries):
            if f"{lib}:{method}" in opt.skip:
                continue
            row = {"library": lib, "method": method, "seed": seed}
            try:
                row.update(_run_one(lib, {**common, "method": method, "seed": seed}))
            except Exception as exc:  # noqa: BLE001 - reported in the table
                row["error"] = f"{type(exc).__name__}: {str(exc)[-300:]}"
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "influences"}),
                  file=sys.stderr, flush=True)
    meta = {"command": " ".join([Path(sys.executable).name, *sys.argv]),
            "threads": opt.threads, "hidden": hidden, "n_train": n_train, "n_test": n_test,
            "n_params": 64 * hidden + hidden + hidden * 10 + 10, "repeats": opt.repeats,
            "model_seed": opt.model_seed,
            "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
            "config": {k: v for k, v in common.items() if k != "data"}}
    _report(rows, opt.out, meta)


def _run_one(lib: str, args: dict) -> dict:
    if lib == "skdvl":
        res = run_skdvl(args, timeout=1200)
        return {**{k: res[k] for k in ("fit_s", "total_s", "warmup_s", "peak_rss_mb")},
                "influences": res["influences"]}
    from pydvl_env import run_pydvl

    args = {**args, "method": NO_CHECK.get(args["method"], args["method"])}
    res = run_pydvl(BENCH_DIR / "pydvl_side" / "influence.py", args, timeout=1200,
                    env={"PYTHONWARNINGS": "ignore"})
    r = res["result"]
    return {"fit_s": r["fit_s"], "total_s": r["total_s"], "warmup_s": r["warmup_s"],
            "peak_rss_mb": res["peak_rss_mb"],
            "influences": r["influences"]}


def _report(rows: list[dict], out: str | None, meta: dict) -> None:
    """Print a side-by-side table (median time, worst peak memory, mean Pearson over seeds)."""
    ref = {r["library"]: r["influences"] for r in rows
           if r["method"] == "direct" and "influences" in r}
    for r in rows:
        if "influences" in r:
            for lib, mat in ref.items():
                r[f"pearson_vs_{lib}_direct"] = _pearson(r["influences"], mat)
    print(json.dumps(meta))
    # pyDVL drops the minus sign of Koh & Liang: its Pearson with skdvl's direct is negated.
    sign = {"skdvl": 1.0, "pydvl": -1.0}
    lines = ["| method | seeds | skdvl time (s) | pyDVL time (s) | speed-up | skdvl peak MB | "
             "pyDVL peak MB | skdvl Pearson vs direct | pyDVL Pearson vs direct |",
             "|---|---|---|---|---|---|---|---|---|"]
    for method in dict.fromkeys(r["method"] for r in rows):
        cells = {}
        for lib in ("skdvl", "pydvl"):
            mine = [r for r in rows if r["method"] == method and r["library"] == lib]
            ok = [r for r in mine if "error" not in r]
            if not ok:
                cells[lib] = ("error" if mine else "-",) * 3
                continue
            pear = [sign[lib] * r.get("pearson_vs_skdvl_direct", float("nan")) for r in ok]
            spread = f" ({min(pear):.4f}-{max(pear):.4f})" if len(pear) > 1 else ""
            cells[lib] = (float(np.median([r["total_s"] for r in ok])),
                          max(r["peak_rss_mb"] for r in ok), f"{np.mean(pear):.4f}{spread}")
        (ts, ms, ps), (tp, mp, pp) = cells["skdvl"], cells["pydvl"]
        n_seeds = len({r["seed"] for r in rows if r["method"] == method})
        ratio = f"{tp / ts:.2f}x" if isinstance(ts, float) and isinstance(tp, float) else "-"
        fmt = lambda v, f: format(v, f) if isinstance(v, float) else str(v)  # noqa: E731
        lines.append(f"| {method} | {n_seeds} | {fmt(ts, '.2f')} | {fmt(tp, '.2f')} | {ratio} | "
                     f"{fmt(ms, '.0f')} | {fmt(mp, '.0f')} | {ps} | {pp} |")
    print("\n".join(lines))
    if out:
        clean = [{k: v for k, v in r.items() if k != "influences"} for r in rows]
        Path(out).write_text(json.dumps({"meta": meta, "rows": clean}, indent=2))


if __name__ == "__main__":
    main()
