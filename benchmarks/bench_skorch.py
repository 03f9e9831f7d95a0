"""skorch nets as the valued model (issue 15.3): refit overhead and fits per second.

Run from the repository root with our venv::

    python benchmarks/bench_skorch.py            # ~2 min on 2 busy cores
    python benchmarks/bench_skorch.py --quick    # a smoke test

Data: breast cancer, first 300 rows, stratified 50/50 split (seed 0), standardised on the
training rows, 10% of the 150 training labels flipped (``bench_batch_fit._split_flip``),
as float32. Net: ``NeuralNetClassifier`` of a 30-16-2 ReLU MLP with a softmax output
(skorch's default NLLLoss, SGD), ``lr=0.1``, ``max_epochs=10``, ``train_split=None``,
``verbose=0``.

1. **Refit overhead** (per fit, median of ``reps`` fits on the 150 training rows, torch
   seeded per fit and one thread unless said otherwise; the variants interleaved):
   skorch's ``clone(net).fit``; skdvl's fast refit (``skdvl.utility._torch_refit._fast_fit``,
   bitwise the same fitted net: checked here on every fit); a plain tensor loop of the
   same module, optimizer, loss and batches written without skorch (the floor); and
   skorch's fit with torch's default thread count (the thread-cap measurement). For
   ``batch_size`` 128 (two batches an epoch) and 16 (ten).
2. **Fits per second**: MSR Banzhaf with ``n_samples`` samples (one fit each), scoring
   accuracy on the 150 validation rows, n_jobs=1, one thread on both sides: skdvl
   (``BanzhafValuer(sampler="msr")``) with the fast refit, skdvl with skorch's fit (the
   fast refit disabled), and pyDVL 0.10 (``MSRBanzhafValuation`` with pyDVL's
   ``ModelUtility`` on the same net; ``benchmarks/pydvl_side/skorch_nets.py``, skorch
   linked into its venv). pyDVL neither seeds the net nor caches here. AUROC of -values at
   finding the flipped rows is informative only at this budget.

``cat /proc/loadavg`` is recorded at the start and the end. Results: a summary on stdout
and ``benchmarks/results/skorch.json`` (``skorch_quick.json`` with ``--quick``).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one BLAS thread per process, on both sides

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer
from sklearn.metrics import roc_auc_score

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
from bench_batch_fit import _git_head, _split_flip
from pydvl_env import run_pydvl

PYDVL_SCRIPT = BENCH_DIR / "pydvl_side" / "skorch_nets.py"


class MLP(torch.nn.Module):  # the module of pydvl_side/skorch_nets.py, line for line
    made = [0]  # modules built: one per fit (skorch's or the fast refit) in this process

    def __init__(self, d=30, hidden=16, k=2):
        super().__init__()
        MLP.made[0] += 1
        self.l1, self.l2 = torch.nn.Linear(d, hidden), torch.nn.Linear(hidden, k)

    def forward(self, X):
        return torch.softmax(self.l2(torch.relu(self.l1(X))), dim=-1)


def _loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


def _net(cfg: dict, batch_size: int):
    from skorch import NeuralNetClassifier

    return NeuralNetClassifier(MLP, module__d=30, module__hidden=cfg["hidden"],
                               max_epochs=cfg["max_epochs"], lr=cfg["lr"],
                               batch_size=batch_size, train_split=None, verbose=0)


def _plain_fit(cfg: dict, X: torch.Tensor, y: torch.Tensor, batch_size: int):
    """The same training without skorch: module, SGD, NLL of log(p + eps), same batches."""
    module = MLP(30, cfg["hidden"])
    opt = torch.optim.SGD(module.parameters(), lr=cfg["lr"])
    loss_fn, eps = torch.nn.NLLLoss(), torch.finfo(torch.float32).eps
    n = X.shape[0]
    module.train()
    for _ in range(cfg["max_epochs"]):
        torch.empty((), dtype=torch.int64).random_()  # the DataLoader's draw, as skorch
        for lo in range(0, n, batch_size):
            opt.zero_grad()
            loss = loss_fn(torch.log(module(X[lo:lo + batch_size]) + eps), y[lo:lo + batch_size])
            loss.backward()
            opt.step()
    return module


def bench_overhead(cfg: dict, d: dict) -> list[dict]:
    from skdvl.utility._torch_refit import _fast_fit, _same_fit, torch_fit_context

    X, y = d["X_train"], d["y_train"]
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    rows = []
    for batch_size in (128, 16):
        net = _net(cfg, batch_size)
        variants = {
            "skorch clone(net).fit": lambda net=net: clone(net).fit(X, y),
            "skdvl fast refit": lambda net=net: _fast_fit(clone(net), X, y),
            "plain tensor loop": lambda b=batch_size: _plain_fit(cfg, Xt, yt, b),
        }
        times: dict[str, list[float]] = {k: [] for k in [*variants, "skorch fit, default threads"]}
        all_equal = True
        for rep in range(cfg["reps"] + 2):
            for name, fit in variants.items():
                with torch_fit_context(rep):
                    t0 = time.perf_counter()
                    out = fit()
                    times[name].append(time.perf_counter() - t0)
                if name == "skorch clone(net).fit":
                    ref = out
                elif name == "skdvl fast refit":
                    all_equal &= _same_fit(out, ref)
            with torch.random.fork_rng(devices=[]):  # default threads: not capped
                torch.manual_seed(rep)
                torch.set_num_threads(cfg["default_threads"])
                t0 = time.perf_counter()
                clone(net).fit(X, y)
                times["skorch fit, default threads"].append(time.perf_counter() - t0)
                torch.set_num_threads(1)
        med = {k: 1e3 * float(np.median(v[2:])) for k, v in times.items()}  # 2 warm-ups
        rows.append({
            "batch_size": batch_size, "n_rows": int(X.shape[0]),
            "batches_per_epoch": -(-X.shape[0] // batch_size), "reps": cfg["reps"],
            "median_ms": med, "fast_refit_bitwise_equal_on_every_rep": bool(all_equal),
            "skorch_over_fast": med["skorch clone(net).fit"] / med["skdvl fast refit"],
            "fast_over_plain": med["skdvl fast refit"] / med["plain tensor loop"],
            "default_threads": cfg["default_threads"],
        })
    return rows


def _skdvl_msr(cfg: dict, d: dict, fast: bool) -> dict:
    import skdvl.utility._torch_refit as tf
    from skdvl import BanzhafValuer

    original = tf.fast_refit_reason
    if not fast:
        tf.fast_refit_reason = lambda estimator: "disabled by the benchmark"
    try:
        v = BanzhafValuer(_net(cfg, cfg["batch_size"]), sampler="msr", scoring="accuracy",
                          max_updates=cfg["n_samples"], random_state=cfg["seed"], n_jobs=1)
        made = MLP.made[0]
        t0 = time.perf_counter()
        v.fit(d["X_train"], d["y_train"], X_val=d["X_val"], y_val=d["y_val"])
        wall = time.perf_counter() - t0
    finally:
        tf.fast_refit_reason = original
    fits = MLP.made[0] - made  # fast runs: one more, the check against skorch's fit
    values = np.asarray(v.values_, dtype=float)
    ok = np.isfinite(values)
    return {"name": "skdvl BanzhafValuer(msr), " + ("fast refit" if fast else "skorch fit"),
            "wall_s": wall, "fits": fits, "fits_per_s": fits / wall,
            "n_utility_evaluations": int(v.n_utility_evaluations_), "fit_path": v.fit_path_,
            "auroc": float(roc_auc_score(d["flipped"][ok], -values[ok]))}


def _skorch_link_dir(tmp: str) -> str:
    """A directory linking skorch and tabulate (pure Python) for the pyDVL venv."""
    import skorch
    import tabulate

    for mod in (skorch, tabulate):
        src = Path(mod.__file__).parent
        os.symlink(src, Path(tmp) / src.name)
    return tmp


def bench_fits_per_second(cfg: dict, d: dict, data_path: str) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="skorch-link-") as links:
        res = run_pydvl(PYDVL_SCRIPT, {
            "data": data_path, "skorch_path": _skorch_link_dir(links),
            "n_samples": cfg["n_samples"], "hidden": cfg["hidden"],
            "max_epochs": cfg["max_epochs"], "lr": cfg["lr"],
            "batch_size": cfg["batch_size"], "seed": cfg["seed"]},
            timeout=1200, env={"OMP_NUM_THREADS": "1"})
    r = res["result"]
    r.pop("values", None)
    rows.append({"name": "pydvl 0.10 MSRBanzhafValuation", **r})
    rows.append(_skdvl_msr(cfg, d, fast=True))
    rows.append(_skdvl_msr(cfg, d, fast=False))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    quick = parser.parse_args().quick
    cfg = dict(hidden=16, max_epochs=10, lr=0.1, batch_size=128, seed=0,
               reps=5 if quick else 40, n_samples=40 if quick else 400,
               default_threads=os.cpu_count() or 1)  # torch's default: one per core
    load_start = _loadavg()
    raw = _split_flip(*load_breast_cancer(return_X_y=True), 300, 0.1)
    d = {k: (v.astype(np.float32) if k.startswith("X") else v) for k, v in raw.items()
         if not k.endswith("_raw")}
    d["y_train"], d["y_val"] = d["y_train"].astype(np.int64), d["y_val"].astype(np.int64)
    out: dict = {"config": cfg, "load_start": load_start,
                 "host": {"python": platform.python_version(), "torch": torch.__version__,
                          "cpus": os.cpu_count()},
                 "skdvl_head": _git_head(str(BENCH_DIR.parent))}
    with tempfile.TemporaryDirectory(prefix="bench-skorch-") as tmp:
        data_path = os.path.join(tmp, "data.npz")
        np.savez(data_path, **d)
        out["overhead"] = bench_overhead(cfg, d)
        out["fits_per_second"] = bench_fits_per_second(cfg, d, data_path)
    out["load_end"] = _loadavg()
    import skorch

    out["host"]["skorch"] = skorch.__version__
    name = "skorch_quick.json" if quick else "skorch.json"
    path = BENCH_DIR / "results" / name
    path.write_text(json.dumps(out, indent=1, default=float) + "\n")
    print(f"load at start: {load_start}; at end: {out['load_end']}")
    for row in out["overhead"]:
        ms = ", ".join(f"{k} {v:.2f} ms" for k, v in row["median_ms"].items())
        print(f"batch_size={row['batch_size']} ({row['batches_per_epoch']} batches/epoch): "
              f"{ms}; bitwise equal: {row['fast_refit_bitwise_equal_on_every_rep']}")
    for row in out["fits_per_second"]:
        print(f"{row['name']}: {row['fits']} fits in {row['wall_s']:.2f} s = "
              f"{row['fits_per_s']:.1f} fits/s (AUROC {row['auroc']:.3f})")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
