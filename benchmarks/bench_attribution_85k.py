"""Projected influence against CG on the 85,000-parameter digits MLP (issue 28).

The issue's acceptance: "on the 85k-parameter MLP at least as good as CG at a tenth of
CG's time for 100 test rows". The task is ``bench_trak_lds.py``'s (digits shuffled with
seed 0, 600 training and 100 test rows, full-batch Adam 300 steps from a fixed
initialisation, LDS over ``--subsets`` half-size refits from that initialisation) with a
hidden layer of 1,133 units: Linear(64, 1133)-Tanh-Linear(1133, 10), 84,985 parameters.

Every method gets the regularization the scorer has (1e-3, ``InfluenceScorer``'s
default), so no lambda is chosen on the test rows; ``--holdout`` adds
``projection="factored_pca"`` at ``--holdout-dim`` with lambda chosen by
:func:`skdvl.evaluation.holdout_regularization` (100 held-out training rows, seed 1, 40
refits on halves of the other 500; grid ``HOLDOUT_GRID``). Time = ``fit`` +
``influences`` of the 100 test rows, one thread, all methods in one process (CG first,
so that imports and torch's first-call costs fall on it). Run::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_attribution_85k.py \
        --out benchmarks/results/attribution_85k.json

``--seed S`` (default 0) draws a fresh task: the digits shuffle, the network's
initialisation (``init_seed``, also of every refit) and the LDS refits' subsets all use
``S``, the holdout rule's split ``S + 1``; the scorers' own ``random_state`` stays 0. An
empty ``--proj-dims`` skips the slow dense Rademacher projection and ``--factored-dims``
(default: ``--proj-dims``) sets the random factored one's sizes, so a held-out check
of the fixed design on fresh draws runs in a few minutes::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_attribution_85k.py --seed 1 \
        --proj-dims --factored-dims 2048 --pca-dims 1024 2048 4096 \
        --out benchmarks/results/attribution_85k_seed1.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_trak_lds import LOSS, DigitsMLP, data, lds  # noqa: E402

from skdvl.evaluation import (  # noqa: E402
    holdout_regularization,
    linear_datamodeling_score,
)
from skdvl.influence import TRAK, InfluenceScorer, ProjectedInfluence  # noqa: E402

torch.set_num_threads(1)
HIDDEN = 1133
HOLDOUT_GRID = (1e-4, 1e-3, 1e-2, 1e-1)


def _fit_scores(module, method, X, y, Xte, yte, regularization=1e-3):
    s = InfluenceScorer(module, loss=LOSS, method=method, regularization=regularization,
                        compute_values=False, random_state=0).fit(X, y)
    return s, s.influences(Xte, yte)


def holdout(X, y, proj_dim, seed=0):
    """lambda for ``factored_pca`` at ``proj_dim`` from held-out training rows only."""
    def attribute(fitted, Xf, yf, Xh, yh, grid):
        method = ProjectedInfluence(proj_dim=proj_dim, projection="factored_pca")
        return [_fit_scores(fitted.module_, method, Xf, yf, Xh, yh, lam)[1] for lam in grid]

    t = time.perf_counter()
    res = holdout_regularization(attribute, DigitsMLP(hidden=HIDDEN, init_seed=seed), X, y,
                                 HOLDOUT_GRID, held_out=100, n_subsets=40,
                                 random_state=seed + 1)
    return {"grid": {f"{v:g}": round(float(sc), 4) for v, sc in zip(HOLDOUT_GRID, res.scores)},
            "chosen": res.regularization, "seconds": round(time.perf_counter() - t, 1)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--subsets", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0,
                        help="digits shuffle, network init and LDS refit seed")
    parser.add_argument("--proj-dims", type=int, nargs="*", default=[2048, 4096],
                        help="k of the dense Rademacher projection (empty: none)")
    parser.add_argument("--factored-dims", type=int, nargs="*", default=None,
                        help="k of the random factored projection (default: --proj-dims)")
    parser.add_argument("--pca-dims", type=int, nargs="*", default=[1024, 2048, 4096],
                        help="k of projection='factored_pca'")
    parser.add_argument("--holdout", action="store_true")
    parser.add_argument("--holdout-dim", type=int, default=2048)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    factored_dims = args.proj_dims if args.factored_dims is None else args.factored_dims
    X, y, Xte, yte = data(seed=args.seed)
    net = DigitsMLP(hidden=HIDDEN, init_seed=args.seed).fit(X, y)
    module = net.module_
    n_params = sum(p.numel() for p in module.parameters())
    load0 = os.getloadavg()
    methods = {"cg": ("cg", 1e-3)}
    for k in args.proj_dims:
        methods[f"projected_influence k={k}"] = (ProjectedInfluence(proj_dim=k), 1e-3)
    for k in factored_dims:
        methods[f"projected_influence factored k={k}"] = (
            ProjectedInfluence(proj_dim=k, projection="factored"), 1e-3)
    for k in args.pca_dims:
        methods[f"projected_influence factored_pca k={k}"] = (
            ProjectedInfluence(proj_dim=k, projection="factored_pca"), 1e-3)
    methods["trak k=2048, 1 model"] = (TRAK(proj_dim=2048), 1e-3)
    rows, scores = {}, {}

    def timed(name, method, lam):
        t, c = time.perf_counter(), time.process_time()
        s, scores[name] = _fit_scores(module, method, X, y, Xte, yte, lam)
        rows[name] = {"wall_s": round(time.perf_counter() - t, 2),
                      "cpu_s": round(time.process_time() - c, 2), "regularization": lam}
        if hasattr(s.solver_, "proj_dim_"):
            rows[name]["proj_dim"] = int(s.solver_.proj_dim_)
        print(name, rows[name], flush=True)

    for name, (method, lam) in methods.items():
        timed(name, method, lam)
    rule = None
    if args.holdout:  # after the timings, which it would warm up
        rule = holdout(X, y, args.holdout_dim, args.seed)
        print("holdout rule", rule, flush=True)
        timed(f"projected_influence factored_pca k={args.holdout_dim}, holdout lambda",
              ProjectedInfluence(proj_dim=args.holdout_dim, projection="factored_pca"),
              rule["chosen"])
    t = time.perf_counter()
    ref = linear_datamodeling_score(scores["cg"], DigitsMLP(hidden=HIDDEN, init_seed=args.seed),
                                    X, y, Xte, yte, n_subsets=args.subsets, output="loss",
                                    random_state=args.seed)
    refit_s = time.perf_counter() - t
    for name in rows:
        rows[name]["lds"] = round(float(lds(scores[name], ref.subsets, ref.actual)), 4)
    assert abs(rows["cg"]["lds"] - ref.score) < 1e-4
    out = {"command": " ".join(sys.argv), "seed": args.seed, "n_params": n_params,
           "subsets": args.subsets,
           "refit_seconds": round(refit_s, 1), "load_start": load0,
           "load_end": os.getloadavg(), "holdout_rule": rule, "methods": rows}
    print(json.dumps(out, indent=1))
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
