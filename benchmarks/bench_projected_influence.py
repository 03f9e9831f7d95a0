"""LDS and time of influence with projected curvature on the digits MLP of bench_trak_lds.

The setting of ``bench_trak_lds.py`` (600 training / 100 test digits, MLP 64-32-10 with
2,410 parameters, 40 half-size refits from the same initialisation, CG influence as the
reference), for ``InfluenceScorer(method=ProjectedInfluence(...))`` (``ProjectedAttribution
(method="influence")``): ``-mean_m g_t^T P (P^T C P + lambda I)^-1 P^T g_i`` with ``C`` the
Gauss-Newton matrix (or the Hessian) of the mean training loss, solved densely in ``k``
dimensions, next to TRAK with its Gauss-Newton kernel, at k = 2,048 and 4,096.

lambda is chosen without test rows by :func:`skdvl.evaluation.holdout_regularization`:
100 training rows held out (seed 1), ``--rule-models`` models trained on the other 500,
40 refits on halves of them, the multiple ``c`` of the per-model ``"auto"`` lambda in
``GRID`` with the best held-out LDS; the full attribution then uses ``c`` times its own
``"auto"``. Also reported: ``"auto"`` itself and the scorer's default ``1e-3`` (CG's).

Run (results of 2026-12-07 in ``benchmarks/results/projected_influence*.json``)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_projected_influence.py \\
        --hessian-check --out benchmarks/results/projected_influence.json
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_projected_influence.py \\
        --dims 2048 --variants "influence Hessian" \\
        --out benchmarks/results/projected_influence_hessian.json
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_projected_influence.py \\
        --dims 2048 --variants "influence GN factored_pca" \\
        --out benchmarks/results/projected_influence_pca.json

``"influence GN factored_pca"`` is ``projection="factored_pca"`` (per-layer PCA of the
training gradients, LoGra-style; its actual ``k`` is ``actual_proj_dim`` in the output,
a little under the requested one); the other variants use the default Rademacher
projection.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from bench_trak_lds import LOSS, DigitsMLP, _cg, data, lds

from skdvl.evaluation import holdout_regularization, linear_datamodeling_score
from skdvl.influence import NotPositiveDefiniteError
from skdvl.influence._trak import ProjectedAttribution

torch.set_num_threads(1)
GRID = (0.03, 0.1, 0.3, 1.0, 3.0)
#: (label, method, kernel, projection) of the attributions compared.
VARIANTS = (("influence GN", "influence", "gauss_newton", "rademacher"),
            ("TRAK GN", "trak", "gauss_newton", "rademacher"),
            ("influence Hessian", "influence", "hessian", "rademacher"),
            ("influence GN factored_pca", "influence", "gauss_newton", "factored_pca"))


def fit_all(module, X, y, states, method, kernel, proj_dim, projection="rademacher"):
    t = time.perf_counter()
    est = ProjectedAttribution(module, loss=LOSS, method=method, kernel=kernel,
                               proj_dim=proj_dim, projection=projection, models=states,
                               regularization="auto", random_state=0).fit(X, y)
    return est, time.perf_counter() - t


def sub_ensemble(est, M, lam):
    """The first ``M`` models of a fitted ``est``, kernels re-regularized: ``lam`` is
    ``("mult", c)`` (``c`` times each model's "auto") or ``("abs", value)``."""
    sub = copy.copy(est)
    sub.n_models_, sub.states_ = M, est.states_[:M]
    sub.projectors_, sub.q_ = est.projectors_[:M], est.q_[:M]
    sub.qbar_ = est.q_[:M].to(torch.float64).mean(0)
    kind, value = lam
    sub.kernels_ = [k.regularized(value * k.regularization_ if kind == "mult" else value)
                    for k in est.kernels_[:M]]
    return sub


def _scores_or_zeros(est, M, c, X, y):
    """The scores at ``c`` times "auto"; zeros (a NaN held-out LDS: never chosen) where
    the projected Hessian plus that lambda is indefinite."""
    try:
        return sub_ensemble(est, M, ("mult", c)).influences(X, y)
    except NotPositiveDefiniteError:
        return np.zeros((len(X), est.store_.n_rows))


def rule(X, y, method, kernel, proj_dim, n_models, n_subsets, projection="rademacher"):
    """``holdout_regularization`` over ``GRID`` (multiples of "auto"), and its seconds."""
    def attribute(fitted, Xf, yf, Xh, yh, grid):
        nets = [fitted] + [DigitsMLP(init_seed=s).fit(Xf, yf) for s in range(1, n_models)]
        est, _ = fit_all(fitted.module_, Xf, yf, [n.module_.state_dict() for n in nets],
                         method, kernel, proj_dim, projection)
        return [_scores_or_zeros(est, n_models, c, Xh, yh) for c in grid]

    t = time.perf_counter()
    res = holdout_regularization(attribute, DigitsMLP(), X, y, list(GRID), held_out=100,
                                 n_subsets=n_subsets, random_state=1)
    return {"grid": {f"{c:g}": round(float(v), 4) for c, v in zip(GRID, res.scores)},
            "chosen": res.regularization, "seconds": round(time.perf_counter() - t, 1)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--subsets", type=int, default=40)
    parser.add_argument("--many", type=int, default=20)
    parser.add_argument("--rule-models", type=int, default=5)
    parser.add_argument("--dims", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument("--trak-dims", type=int, nargs="*", default=[4096],
                        help="k of TRAK's Gauss-Newton kernel (2,048: bench_trak_lds.py)")
    parser.add_argument("--variants", nargs="+", default=["influence GN", "TRAK GN"],
                        help=f"of {[v[0] for v in VARIANTS]}")
    parser.add_argument("--hessian-check", action="store_true",
                        help="the Hessian at k=2,048, 1 and 5 models, at the GN rule's lambda")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    load = [round(os.getloadavg()[0], 2)]
    X, y, Xte, yte = data()
    nets = [DigitsMLP(init_seed=s).fit(X, y) for s in range(args.many)]
    module, states = nets[0].module_, [n.module_.state_dict() for n in nets]
    t = time.perf_counter()
    cg = _cg(module, X, y, Xte, yte)
    out = {"cg": {"seconds": round(time.perf_counter() - t, 2)}}
    ref = linear_datamodeling_score(cg, DigitsMLP(), X, y, Xte, yte, n_subsets=args.subsets,
                                    output="loss", random_state=0)
    subsets, actual = ref.subsets, ref.actual
    out["cg"]["lds"] = round(ref.score, 4)
    print("cg", out["cg"], flush=True)
    sizes = sorted(m for m in {1, 5, 10, args.many} if m <= args.many)
    for k in args.dims:
        for label, method, kernel, projection in VARIANTS:
            if label not in args.variants or (method == "trak" and k not in args.trak_dims):
                continue
            name = f"{label} k={k}"
            r = rule(X, y, method, kernel, k, args.rule_models, args.subsets, projection)
            print(name, "rule", r, flush=True)
            est, seconds = fit_all(module, X, y, states, method, kernel, k, projection)
            row = {"rule": r, "fit_seconds_all_models": round(seconds, 1)}
            if projection != "rademacher":
                row["actual_proj_dim"] = int(est.projectors_[0].proj_dim)
            lams = {"auto": ("mult", 1.0), f"holdout ({r['chosen']:g}x auto)":
                    ("mult", r["chosen"])}
            if method == "influence" and kernel == "gauss_newton":
                lams["1e-3 (scorer default)"] = ("abs", 1e-3)
            for lab, lam in lams.items():
                row[lab] = {}
                for M in sizes:
                    t = time.perf_counter()
                    try:
                        scores = sub_ensemble(est, M, lam).influences(Xte, yte)
                    except NotPositiveDefiniteError as exc:
                        row[lab][str(M)] = str(exc)[:120]
                        continue
                    row[lab][str(M)] = {"lds": round(lds(scores, subsets, actual), 4),
                                        "query_seconds": round(time.perf_counter() - t, 2)}
            out[name] = row
            load.append(round(os.getloadavg()[0], 2))
            print(name, json.dumps(row), flush=True)
            if args.out is not None:
                args.out.write_text(json.dumps({**out, "load_average": load}, indent=2))
    # the Hessian, one model and five, k = 2,048: "auto" and the GN rule's multiple
    for M in (m for m in (1, 5) if m <= args.many and args.hessian_check):
        t = time.perf_counter()
        est = ProjectedAttribution(module, loss=LOSS, method="influence", kernel="hessian",
                                   proj_dim=2048, models=states[:M], regularization="auto",
                                   random_state=0).fit(X, y)
        scores = est.influences(Xte, yte)
        out[f"influence Hessian k=2048 M={M}"] = {
            "auto": round(lds(scores, subsets, actual), 4),
            "seconds": round(time.perf_counter() - t, 1)}
        c = out.get("influence GN k=2048", {}).get("rule", {}).get("chosen")
        if c is not None:
            try:
                s2 = sub_ensemble(est, M, ("mult", c)).influences(Xte, yte)
                out[f"influence Hessian k=2048 M={M}"][f"{c:g}x auto"] = round(
                    lds(s2, subsets, actual), 4)
            except ValueError as exc:  # indefinite at the smaller lambda
                out[f"influence Hessian k=2048 M={M}"][f"{c:g}x auto"] = str(exc)[:120]
        print(f"influence Hessian k=2048 M={M}", out[f"influence Hessian k=2048 M={M}"],
              flush=True)
    load.append(round(os.getloadavg()[0], 2))
    if args.out is not None:
        args.out.write_text(json.dumps({**out, "load_average": load}, indent=2))


if __name__ == "__main__":
    main()
