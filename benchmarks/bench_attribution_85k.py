"""Projected influence against CG on the 85,000-parameter digits MLP (issue 28).

The issue's acceptance: "on the 85k-parameter MLP at least as good as CG at a tenth of
CG's time for 100 test rows". The task is ``bench_trak_lds.py``'s (digits shuffled with
seed 0, 600 training and 100 test rows, full-batch Adam 300 steps from a fixed
initialisation, LDS over ``--subsets`` half-size refits from that initialisation) with a
hidden layer of 1,133 units: Linear(64, 1133)-Tanh-Linear(1133, 10), 84,985 parameters.

Every method gets the regularization the scorer has (1e-3, ``InfluenceScorer``'s
default), so no lambda is chosen on the test rows. Time = ``fit`` + ``influences`` of the
100 test rows, one thread. Run::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_attribution_85k.py \
        --out benchmarks/results/attribution_85k.json
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

from skdvl.evaluation import linear_datamodeling_score  # noqa: E402
from skdvl.influence import TRAK, InfluenceScorer, ProjectedInfluence  # noqa: E402

torch.set_num_threads(1)
HIDDEN = 1133


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--subsets", type=int, default=40)
    parser.add_argument("--proj-dims", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    X, y, Xte, yte = data()
    net = DigitsMLP(hidden=HIDDEN).fit(X, y)
    module = net.module_
    n_params = sum(p.numel() for p in module.parameters())
    load0 = os.getloadavg()
    methods = {"cg": "cg"}
    for k in args.proj_dims:
        methods[f"projected_influence k={k}"] = ProjectedInfluence(proj_dim=k)
    methods["trak k=2048, 1 model"] = TRAK(proj_dim=2048)
    rows, scores = {}, {}
    for name, method in methods.items():
        t, c = time.perf_counter(), time.process_time()
        s = InfluenceScorer(module, loss=LOSS, method=method, regularization=1e-3,
                            compute_values=False, random_state=0).fit(X, y)
        scores[name] = s.influences(Xte, yte)
        rows[name] = {"wall_s": round(time.perf_counter() - t, 2),
                      "cpu_s": round(time.process_time() - c, 2)}
        print(name, rows[name], flush=True)
    t = time.perf_counter()
    ref = linear_datamodeling_score(scores["cg"], DigitsMLP(hidden=HIDDEN), X, y, Xte, yte,
                                    n_subsets=args.subsets, output="loss", random_state=0)
    refit_s = time.perf_counter() - t
    for name in methods:
        rows[name]["lds"] = round(float(lds(scores[name], ref.subsets, ref.actual)), 4)
    assert abs(rows["cg"]["lds"] - ref.score) < 1e-4
    out = {"command": " ".join(sys.argv), "n_params": n_params, "subsets": args.subsets,
           "refit_seconds": round(refit_s, 1), "load_start": load0,
           "load_end": os.getloadavg(), "methods": rows}
    print(json.dumps(out, indent=1))
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
