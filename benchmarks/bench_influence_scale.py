"""Influence at scale: a 20,000 x 2,000 influence matrix of an MLP written to zarr.

skdvl's chunked calculators (sequential, and dask on a ``LocalCluster`` of single-threaded
worker processes) side by side with pyDVL 0.10's ``DaskInfluenceCalculator`` +
``to_zarr`` on the same data, model, method, chunking and number of workers.

Data: ``make_classification`` (32 features, 10 classes, seed 0), n_train + n_test rows.
Model: MLP 32 -> hidden -> hidden/4 -> 10 (tanh); hidden=256 gives 25,546 parameters,
trained with full-batch Adam (100 steps), float32. Method: EK-FAC (regularization 1e-2) on
both sides: one pass over the data to fit, a cheap solve per test row, so the bench
measures the chunked machinery rather than the solver (``--method arnoldi`` is there too,
but its fit takes minutes at this size here, on both sides).

Runs: ``sequential`` (torch on 2 threads), ``dask`` (2 worker processes x 1 thread),
``pydvl`` (same cluster shape) and ``sequential-1thread`` (torch on 1 thread: the
baseline against which 2 single-threaded workers show their scaling). Each run is a fresh
process. Reported: fit time, cluster start time, time to compute and
write the matrix (the number that matters; worker start-up and imports are in "cluster
start", on both sides), and the peak of the summed resident memory of
the process and all its descendants (dask workers included), sampled every 50 ms. Results
of all runs are compared with skdvl's sequential one (max abs difference, Pearson).

Run::

    .venv/bin/python benchmarks/bench_influence_scale.py               # 20,000 x 2,000
    .venv/bin/python benchmarks/bench_influence_scale.py --quick       # 4,000 x 400
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
RESULTS = BENCH_DIR / "results"

from _shared import TreeRSS  # noqa: E402


def build_model(hidden: int, d: int, k: int):
    import torch

    return torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.Tanh(),
                               torch.nn.Linear(hidden, hidden // 4), torch.nn.Tanh(),
                               torch.nn.Linear(hidden // 4, k))


def prepare(path: Path, n_train: int, n_test: int, hidden: int, seed: int = 0) -> int:
    """Synthetic data and a trained MLP saved to ``path``; returns the parameter count."""
    import torch
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=n_train + n_test, n_features=32, n_informative=20,
                               n_classes=10, random_state=seed)
    X = ((X - X.mean(0)) / X.std(0)).astype(np.float32)
    y = y.astype(np.int64)
    g = torch.Generator().manual_seed(seed)
    model = build_model(hidden, X.shape[1], 10)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) / np.sqrt(p.shape[-1]))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    Xt, yt = torch.from_numpy(X[:n_train]), torch.from_numpy(y[:n_train])
    for _ in range(100):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(Xt), yt).backward()
        opt.step()
    params = {f"param:{k}": v.detach().numpy() for k, v in model.state_dict().items()}
    np.savez(path, X_train=X[:n_train], y_train=y[:n_train], X_test=X[n_train:],
             y_test=y[n_train:], **params)
    return sum(p.numel() for p in model.parameters())





def _warm_up() -> None:
    """Imports in a dask worker, counted as the cluster's start: skdvl's influence
    package and torch.func's lazy ones (its first ``grad`` imports ``torch._dynamo``, 1-2 s
    here), which the sequential run pays in its fit, before its clock."""
    import torch
    from torch.func import grad, vmap

    import skdvl.influence  # noqa: F401

    def loss(w, x, t):
        return torch.nn.functional.cross_entropy((x @ w)[None], t[None])

    vmap(grad(loss), in_dims=(None, 0, 0))(torch.zeros(3, 4), torch.zeros(2, 3),
                                           torch.zeros(2, dtype=torch.long))


def _skdvl_worker() -> None:
    """Child process: fit skdvl's scorer, write the matrix to zarr with one backend."""
    import torch

    from skdvl.influence import (
        Arnoldi,
        DaskInfluenceCalculator,
        InfluenceScorer,
        Nystroem,
        SequentialInfluenceCalculator,
    )

    a = json.load(sys.stdin)
    torch.set_num_threads(1 if a["backend"] == "sequential-1thread" else 2)
    data = np.load(a["data"])
    Xtr, ytr, Xte, yte = (data[k] for k in ("X_train", "y_train", "X_test", "y_test"))
    model = build_model(a["hidden"], Xtr.shape[1], int(ytr.max()) + 1)
    model.load_state_dict({k[6:]: torch.from_numpy(data[k]) for k in data.files
                           if k.startswith("param:")})
    ranked = {"arnoldi": Arnoldi(rank=a["rank"]), "nystroem": Nystroem(rank=a["rank"])}
    scorer = InfluenceScorer(model, loss=torch.nn.CrossEntropyLoss(),
                             method=ranked.get(a["method"], a["method"]),
                             regularization=a["regularization"], batch_size=a["batch_size"],
                             compute_values=False, random_state=0)
    result = {}
    with TreeRSS() as mem:
        t0 = time.perf_counter()
        scorer.fit(Xtr, ytr)
        result["fit_s"] = time.perf_counter() - t0
        peak_fit, mem.peak = mem.peak, 0  # from here on: the write only
        t0 = time.perf_counter()
        if a["backend"] == "dask":
            from distributed import Client, LocalCluster

            cluster = LocalCluster(n_workers=a["n_workers"], threads_per_worker=1,
                                   processes=True, dashboard_address=":0")
            client = Client(cluster)
            client.run(_warm_up)  # imports in the workers count as cluster start
            calc = DaskInfluenceCalculator(scorer, a["chunks"], client=client)
        else:
            calc = SequentialInfluenceCalculator(scorer, a["chunks"])
        result["cluster_start_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        calc.influences(Xte, yte, out=a["zarr"])
        result["write_s"] = time.perf_counter() - t0
        if a["backend"] == "dask":
            client.close()
            cluster.close()
    result["peak_tree_rss_mb"] = max(mem.peak, peak_fit) / 2**20
    result["peak_write_rss_mb"] = mem.peak / 2**20
    print(json.dumps(result))


def run_skdvl(args: dict, timeout: float) -> dict:
    """Run :func:`_skdvl_worker` in a fresh process; add its own peak RSS (wait4)."""
    env = {**os.environ, "PYTHONPATH": str(BENCH_DIR.parent)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--worker"], input=json.dumps(args),
                          capture_output=True, text=True, env=env, timeout=timeout,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - t0
    return result


def _compare(path: str, ref) -> dict:
    import zarr

    node = zarr.open(path, mode="r")
    arr = node["influences"] if hasattr(node, "members") else node
    diff, num, den_a, den_b, dot = 0.0, 0.0, 0.0, 0.0, 0.0
    for start in range(0, arr.shape[0], 256):  # bounded memory
        a, b = np.asarray(arr[start:start + 256], np.float64), np.asarray(
            ref[start:start + 256], np.float64)
        diff = max(diff, float(np.abs(a - b).max()))
        num += a.size
        den_a, den_b, dot = den_a + (a * a).sum(), den_b + (b * b).sum(), dot + (a * b).sum()
    return {"max_abs_diff": diff, "max_abs_ref": float(np.abs(ref[...]).max()),
            "cosine": float(dot / np.sqrt(den_a * den_b))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="4,000 x 400, hidden=128")
    parser.add_argument("--n-train", type=int, default=20_000)
    parser.add_argument("--n-test", type=int, default=2_000)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--chunks", type=int, nargs=2, default=[1000, 2000])
    parser.add_argument("--method", default="ekfac", choices=["ekfac", "arnoldi"])
    parser.add_argument("--runs", nargs="*",
                        default=["sequential", "dask", "pydvl", "sequential-1thread"])
    parser.add_argument("--out", default=str(RESULTS / "influence_scale.json"))
    opt = parser.parse_args()
    if opt.worker:
        return _skdvl_worker()
    if opt.quick:
        opt.n_train, opt.n_test, opt.hidden, opt.chunks = 4000, 400, 128, [200, 1000]
    tmp = tempfile.TemporaryDirectory(prefix="bench-influence-scale-")
    data = Path(tmp.name) / "data.npz"
    n_params = prepare(data, opt.n_train, opt.n_test, opt.hidden)
    common = {"data": str(data), "hidden": opt.hidden, "method": opt.method,
              "regularization": 1e-2, "rank": 50, "batch_size": 256, "chunks": opt.chunks,
              "n_workers": 2}
    config = {**common, "n_train": opt.n_train, "n_test": opt.n_test, "n_params": n_params,
              "output_mb": opt.n_train * opt.n_test * 4 / 2**20}
    config.pop("data")
    print(json.dumps(config), file=sys.stderr, flush=True)
    rows = []
    for run in opt.runs:
        path = str(Path(tmp.name) / f"{run}.zarr")
        row = {"run": run, "zarr": path}
        load0 = os.getloadavg()[0]
        try:
            if run == "pydvl":
                from pydvl_env import run_pydvl

                res = run_pydvl(BENCH_DIR / "pydvl_side" / "influence_scale.py",
                                {**common, "zarr": path}, timeout=3600,
                                env={"PYTHONWARNINGS": "ignore"})
                row.update(res["result"], wall_s=res["wall_s"],
                           peak_rss_main_mb=res["peak_rss_mb"])
            else:
                row.update(run_skdvl({**common, "backend": run, "zarr": path}, 3600))
        except Exception as exc:  # noqa: BLE001 - reported in the table
            row["error"] = f"{type(exc).__name__}: {str(exc)[-400:]}"
        row["load_avg_start"], row["load_avg_end"] = load0, os.getloadavg()[0]
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    _report(rows, config, opt)


def _report(rows, config, opt) -> None:
    import zarr

    ref_row = next((r for r in rows if r["run"] == "sequential" and "error" not in r), None)
    if ref_row is not None:
        ref = zarr.open_group(ref_row["zarr"], mode="r")["influences"]
        for r in rows:
            if "error" not in r:
                r.update(_compare(r["zarr"], ref))
    seq = ref_row["write_s"] if ref_row else float("nan")
    lines = [f"{config['n_test']} x {config['n_train']} influences ({config['output_mb']:.0f} "
             f"MB float32), MLP with {config['n_params']:,} parameters, method "
             f"{config['method']}, chunks {tuple(config['chunks'])}, 2 workers x 1 thread",
             "", "| run | fit (s) | cluster start (s) | compute + write (s) | speed-up vs "
             "sequential | peak RSS during write (MB) | peak RSS overall (MB) | max abs diff "
             "vs sequential | cosine |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['run']} | error: {r['error'][:120]} ||||||||")
            continue
        lines.append(
            f"| {r['run']} | {r['fit_s']:.1f} | {r['cluster_start_s']:.1f} | "
            f"{r['write_s']:.1f} | {seq / r['write_s']:.2f} | "
            f"{r.get('peak_write_rss_mb', float('nan')):.0f} | {r['peak_tree_rss_mb']:.0f} | "
            f"{r.get('max_abs_diff', float('nan')):.2e} | {r.get('cosine', float('nan')):.6f} |")
    table = "\n".join(lines)
    print(table)
    if opt.out:
        meta = {"config": config, "python": platform.python_version(),
                "cpus": os.cpu_count(), "command": " ".join(sys.argv)}
        clean = [{k: v for k, v in r.items() if k != "zarr"} for r in rows]
        Path(opt.out).write_text(json.dumps({**meta, "rows": clean}, indent=2))
        Path(opt.out).with_suffix(".md").write_text(table + "\n")


if __name__ == "__main__":
    main()
