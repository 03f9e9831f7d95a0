"""LDS of TRAK, TracIn, gradient dot/cosine and CG influence on a digits MLP.

sklearn's digits (shuffled with seed 0, scaled to [0, 1]): 600 training and 100 test
rows. MLP Linear(64, 32)-Tanh-Linear(32, 10), 2,410 parameters, full-batch Adam (lr 1e-2,
weight decay 1e-4, 300 steps) from a fixed initialisation. The linear datamodeling score
(:func:`skdvl.evaluation.linear_datamodeling_score`) refits the MLP from the same
initialisation on ``--subsets`` random halves of the training rows; every method is
scored on the same refits (``actual`` of the first call is reused) against the test
loss (for a classifier the margin gives the same LDS: both are monotone in ``p_y``).

Run::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_trak_lds.py \
        --out benchmarks/results/trak_lds.json

The run ends with TRAK's two kernels (``kernel="outputs"`` and ``"gauss_newton"``, k = 2,048
and unprojected, 1 to ``--many`` models) at the "auto" lambda and at the lambda chosen by
:func:`holdout_rule` on the training rows alone (results of 2026-12-07:
``benchmarks/results/trak_lds_1207b.json``).

``--store`` runs the gradient-store benchmark instead (:func:`store_benchmark`): an MLP
Linear(64, hidden)-Tanh-Linear(hidden, 10) on ``--rows`` rows generated from the digits
(each a digit plus Gaussian noise of scale 0.1), TRAK's projected gradients written to a
zarr store (float16, chunks of 1,000 rows), the store reopened without the training data,
and ``--queries`` test rows scored from it; wall time and peak resident memory of each
step::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_trak_lds.py --store \
        --out benchmarks/results/trak_store.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import load_digits

from skdvl._datamodels import columnwise_correlation, mean_finite
from skdvl.evaluation import linear_datamodeling_score
from skdvl.influence import InfluenceScorer
from skdvl.influence._trak import ProjectedAttribution

torch.set_num_threads(1)
LOSS = torch.nn.CrossEntropyLoss()


def build(hidden: int, init_seed: int) -> torch.nn.Module:
    module = torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.Tanh(),
                                 torch.nn.Linear(hidden, 10))
    g = torch.Generator().manual_seed(init_seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) / np.sqrt(p.shape[-1]))
    return module


class DigitsMLP(ClassifierMixin, BaseEstimator):
    """The MLP as a scikit-learn classifier, trained from the same init on any rows."""

    def __init__(self, hidden=32, epochs=300, lr=1e-2, weight_decay=1e-4, init_seed=0,
                 checkpoint_every=None):
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.init_seed = init_seed
        self.checkpoint_every = checkpoint_every

    def fit(self, X, y):
        self.classes_ = np.arange(10)
        self.module_ = build(self.hidden, self.init_seed)
        opt = torch.optim.Adam(self.module_.parameters(), lr=self.lr,
                               weight_decay=self.weight_decay)
        Xt = torch.as_tensor(np.asarray(X), dtype=torch.float32)
        yt = torch.as_tensor(np.asarray(y), dtype=torch.long)
        self.checkpoints_ = []
        for epoch in range(self.epochs):
            opt.zero_grad()
            LOSS(self.module_(Xt), yt).backward()
            opt.step()
            if self.checkpoint_every and (epoch + 1) % self.checkpoint_every == 0:
                self.checkpoints_.append({k: v.clone() for k, v in
                                          self.module_.state_dict().items()})
        return self

    def predict_proba(self, X):
        with torch.no_grad():
            out = self.module_(torch.as_tensor(np.asarray(X), dtype=torch.float32))
        return out.softmax(1).numpy().astype(np.float64)

    def predict(self, X):
        return self.predict_proba(X).argmax(1)


def data(n_train=600, n_test=100, seed=0):
    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(X))
    X, y = (X[order] / 16.0).astype(np.float32), y[order].astype(np.int64)
    return X[:n_train], y[:n_train], X[n_train:n_train + n_test], y[n_train:n_train + n_test]


def lds(scores, subsets, actual):
    """The LDS of ``scores`` on refits already made (same formula as the public one)."""
    mask = np.zeros((len(subsets), scores.shape[1]))
    mask[np.arange(len(subsets))[:, None], subsets] = 1.0
    per_row = columnwise_correlation(mask @ scores.T, actual, "spearman")
    return mean_finite(per_row)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--subsets", type=int, default=40)
    parser.add_argument("--models", type=int, default=5)
    parser.add_argument("--many", type=int, default=20, help="models of the largest ensemble")
    parser.add_argument("--lds-seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--store", action="store_true", help="the gradient-store benchmark")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--proj-dim", type=int, default=2048)
    args = parser.parse_args()
    if args.store:
        results = store_benchmark(args.rows, args.queries, args.hidden, args.proj_dim)
        if args.out is not None:
            args.out.write_text(json.dumps(results, indent=2))
        return
    X, y, Xte, yte = data()
    t0 = time.perf_counter()
    nets = [DigitsMLP(init_seed=s, checkpoint_every=30 if s == 0 else None).fit(X, y)
            for s in range(max(args.models, args.many))]
    print(f"trained {len(nets)} models in {time.perf_counter() - t0:.1f} s; test accuracy "
          f"{np.mean([(n.predict(Xte) == yte).mean() for n in nets]):.3f} (mean)")
    module = nets[0].module_
    states = [n.module_.state_dict() for n in nets]
    M, ckpts = args.models, nets[0].checkpoints_
    lrs = [1e-2] * len(ckpts)
    specs = {}
    for k in (512, 2048):
        for m in (1, M):
            specs[f"trak k={k} M={m}"] = dict(proj_dim=k, models=states[:m])
    specs[f"trak k=2048 M={args.many}"] = dict(proj_dim=2048, models=states[:args.many])
    specs["trak k=2048 M=1 gcv"] = dict(proj_dim=2048, models=states[:1], regularization="gcv")
    for m in (1, M):
        specs[f"trak factored k=2048 M={m}"] = dict(proj_dim=2048, projection="factored",
                                                    models=states[:m])
        specs[f"trak sparse k=2048 M={m}"] = dict(proj_dim=2048, projection="sparse",
                                                  models=states[:m])
        specs[f"trak unprojected M={m}"] = dict(proj_dim=None, models=states[:m])
    specs["trak k=2048 M=1 float16"] = dict(proj_dim=2048, models=states[:1], dtype="float16")
    specs[f"tracin unprojected ({len(ckpts)} ckpts)"] = dict(
        method="tracin", proj_dim=None, models=ckpts, learning_rates=lrs)
    specs[f"tracin k=2048 ({len(ckpts)} ckpts)"] = dict(
        method="tracin", proj_dim=2048, models=ckpts, learning_rates=lrs)
    specs["grad_dot unprojected"] = dict(method="grad_dot", proj_dim=None, models=states[:1])
    specs["grad_dot k=2048"] = dict(method="grad_dot", proj_dim=2048, models=states[:1])
    specs["grad_cos unprojected"] = dict(method="grad_cos", proj_dim=None, models=states[:1])

    t = time.perf_counter()
    cg = _cg(module, X, y, Xte, yte)
    cg_seconds = time.perf_counter() - t
    t = time.perf_counter()
    ref = linear_datamodeling_score(cg, DigitsMLP(), X, y, Xte, yte, n_subsets=args.subsets,
                                    output="loss", random_state=args.lds_seed)
    refit_seconds = time.perf_counter() - t
    subsets, actual = ref.subsets, ref.actual
    assert abs(lds(cg, subsets, actual) - ref.score) < 1e-12
    results = {"cg influence (reg 1e-3)": {"lds": round(ref.score, 4),
                                            "seconds": round(cg_seconds, 2)}}
    print(f"{'cg influence (reg 1e-3)':34s} LDS {ref.score:.3f} {cg_seconds:6.1f} s")
    for name, spec in specs.items():
        t = time.perf_counter()
        est = ProjectedAttribution(module, loss=LOSS, random_state=0, **spec).fit(X, y)
        scores = est.influences(Xte, yte)
        seconds = time.perf_counter() - t
        row = {"lds": round(lds(scores, subsets, actual), 4), "seconds": round(seconds, 2),
               "proj_dim": est.proj_dim_}
        if hasattr(est, "regularization_"):
            row["lambda"] = [float(f"{v:.3g}") for v in est.regularization_]
        results[name] = row
        lam = f"lambda {row['lambda'][:3]}" if "lambda" in row else ""
        print(f"{name:34s} LDS {row['lds']:.3f} {seconds:6.1f} s  {lam}")
    print(f"LDS refits: {args.subsets} subsets, {refit_seconds:.1f} s")
    sweep = {m: _lambda_sweep(module, X, y, Xte, yte, states[:m], subsets, actual)
             for m in (1, M)}
    print("lambda sweep, trak k=2048 (multiple of the 'auto' lambda -> LDS):", sweep)
    t = time.perf_counter()
    rule = holdout_rule(X, y, args.subsets, args.models)
    rule_seconds = time.perf_counter() - t
    print(f"holdout rule ({rule_seconds:.0f} s):", json.dumps(rule))
    kernels = {}
    for kernel in ("outputs", "gauss_newton"):
        for k in (2048, None):
            kernels[f"trak {kernel} k={k}"] = _ensembles(
                module, X, y, Xte, yte, states[:args.many], kernel, k,
                {"auto": 1.0, "holdout": rule[kernel]["chosen"]},
                sorted({1, M, 10, args.many}), subsets, actual)
            print(f"trak {kernel} k={k}:", json.dumps(kernels[f"trak {kernel} k={k}"]))
    if args.out is not None:
        args.out.write_text(json.dumps({
            "methods": results, "lambda_sweep": sweep, "holdout_rule": rule,
            "holdout_rule_seconds": round(rule_seconds, 1), "kernels": kernels,
            "subsets": args.subsets, "lds_seed": args.lds_seed,
            "load_average": [round(v, 2) for v in os.getloadavg()],
            "refit_seconds": round(refit_seconds, 1)}, indent=2))


#: Multiples of the "auto" lambda searched by the holdout rule.
RULE_GRID = (0.03, 0.1, 0.3, 1.0, 3.0)


def holdout_rule(X, y, n_subsets, n_models, n_held=100, seed=1):
    """TRAK's lambda chosen on the training rows alone (no test row is read).

    The rule: hold out ``n_held`` random training rows (seed ``seed``), train
    ``n_models`` models on the others, retrain on ``n_subsets`` random halves of them and
    record the loss of the held-out rows (:func:`linear_datamodeling_score`); the LDS of
    the attributions of the held-out rows at ``c`` times the mean "auto" lambda, for
    ``c`` in ``RULE_GRID``, picks ``c``. The full-data attribution then uses ``c`` times
    its own "auto" lambda. Returns ``{kernel: {"grid": {c: LDS}, "chosen": c}}``.
    """
    order = np.random.default_rng(seed).permutation(len(X))
    fit, held = order[n_held:], order[:n_held]
    Xf, yf, Xh, yh = X[fit], y[fit], X[held], y[held]
    nets = [DigitsMLP(init_seed=s).fit(Xf, yf) for s in range(n_models)]
    zero = np.zeros((n_held, len(Xf)))
    ref = linear_datamodeling_score(zero, DigitsMLP(), Xf, yf, Xh, yh, n_subsets=n_subsets,
                                    output="loss", random_state=seed)
    states = [n.module_.state_dict() for n in nets]
    out = {}
    for kernel in ("outputs", "gauss_newton"):
        grid = _ensembles(nets[0].module_, Xf, yf, Xh, yh, states, kernel, 2048,
                          {f"{c:g}": c for c in RULE_GRID}, [n_models], ref.subsets,
                          ref.actual)
        scores = {c: grid[f"{c:g}"][str(n_models)]["lds"] for c in RULE_GRID}
        out[kernel] = {"grid": {f"{c:g}": v for c, v in scores.items()},
                       "chosen": max(RULE_GRID, key=lambda c: scores[c])}
    return out


def _ensembles(module, X, y, Xte, yte, states, kernel, proj_dim, multiples, sizes,
               subsets, actual):
    """LDS of TRAK with ``kernel`` over the first ``M`` models for each ``M`` in ``sizes``
    and each multiple of the mean "auto" lambda, from one fit on all the models.

    Sub-ensembles reuse the fitted kernels of their models (the projection seeds of the
    first ``M`` of the models are those of a fit on ``M`` models: ``SeedSequence.spawn``
    keys children by position), with the kernels re-regularized from their
    eigendecompositions (:meth:`ProjectedKernel.regularized`).
    """
    t = time.perf_counter()
    est = ProjectedAttribution(module, loss=LOSS, proj_dim=proj_dim, models=states,
                               kernel=kernel, random_state=0).fit(X, y)
    fit_seconds = time.perf_counter() - t
    out = {}
    for label, mult in multiples.items():
        row = {}
        for M in sizes:
            lam = float(np.mean(est.regularization_[:M])) * mult
            sub = copy.copy(est)
            sub.n_models_, sub.states_ = M, est.states_[:M]
            sub.projectors_, sub.q_ = est.projectors_[:M], est.q_[:M]
            sub.qbar_ = est.q_[:M].to(torch.float64).mean(0)
            sub.kernels_ = (est.kernels_[:M] if label == "auto" else
                            [kern.regularized(lam) for kern in est.kernels_[:M]])
            t = time.perf_counter()
            scores = sub.influences(Xte, yte)
            row[str(M)] = {"lds": round(lds(scores, subsets, actual), 4),
                           "lambda": (float(f"{lam:.3g}") if label != "auto" else
                                      "per model"),
                           "query_seconds": round(time.perf_counter() - t, 2)}
        out[label] = row
    out["fit_seconds_all_models"] = round(fit_seconds, 1)
    return out


def _cg(module, X, y, Xte, yte):
    s = InfluenceScorer(module, loss=LOSS, method="cg", compute_values=False,
                        random_state=0).fit(X, y)
    return s.influences(Xte, yte)


def _lambda_sweep(module, X, y, Xte, yte, states, subsets, actual):
    """LDS at multiples of the mean over the models of the 'auto' lambda."""
    base = ProjectedAttribution(module, loss=LOSS, proj_dim=2048, models=states,
                                random_state=0).fit(X, y)
    lam = float(np.mean(base.regularization_))
    out = {}
    for mult in (0.03, 0.1, 0.3, 1.0, 3.0, 10.0):
        est = ProjectedAttribution(module, loss=LOSS, proj_dim=2048, models=states,
                                   regularization=lam * mult, random_state=0).fit(X, y)
        out[f"{mult:g}"] = round(lds(est.influences(Xte, yte), subsets, actual), 4)
    return out


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generated_digits(n: int, seed: int):
    """``n`` rows: random digits plus Gaussian noise (scale 0.1), clipped to [0, 1]."""
    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(X), n)
    noisy = np.clip(X[rows] / 16.0 + 0.1 * rng.standard_normal((n, 64)), 0, 1)
    return noisy.astype(np.float32), y[rows].astype(np.int64)


def store_benchmark(n_rows: int, n_queries: int, hidden: int, proj_dim: int) -> dict:
    """Featurise ``n_rows`` into a zarr store, reopen it, answer ``n_queries`` queries."""
    X, y = generated_digits(n_rows, 0)
    Xq, yq = generated_digits(n_queries, 1)
    t = time.perf_counter()
    net = DigitsMLP(hidden=hidden, epochs=30).fit(X, y)
    res = {"rows": n_rows, "queries": n_queries, "n_params": 75 * hidden + 10,
           "load_average": round(os.getloadavg()[0], 2),
           "proj_dim": proj_dim, "train_seconds": round(time.perf_counter() - t, 1),
           "peak_rss_mb_before": round(_peak_mb())}
    folder = Path(tempfile.mkdtemp())
    kw = dict(loss=LOSS, proj_dim=proj_dim, dtype="float16", chunk_size=1000,
              batch_size=250, random_state=0, store=folder / "g.zarr")
    t, cpu = time.perf_counter(), time.process_time()
    ProjectedAttribution(net.module_, **kw).fit(X, y)
    res["fit_seconds"] = round(time.perf_counter() - t, 1)
    res["fit_cpu_seconds"] = round(time.process_time() - cpu, 1)
    res["peak_rss_mb_after_fit"] = round(_peak_mb())
    res["store_mb"] = round(sum(f.stat().st_size for f in (folder / "g.zarr").rglob("*")
                                if f.is_file()) / 1e6, 1)
    del X, y
    t = time.perf_counter()
    reopened = ProjectedAttribution(net.module_, **kw).fit()
    res["reopen_seconds"] = round(time.perf_counter() - t, 2)
    t, cpu = time.perf_counter(), time.process_time()
    scores = reopened.influences(Xq, yq)
    res["query_seconds"] = round(time.perf_counter() - t, 2)
    res["query_cpu_seconds"] = round(time.process_time() - cpu, 2)
    res["peak_rss_mb_after_queries"] = round(_peak_mb())
    res["scores_finite"] = bool(np.isfinite(scores).all())
    shutil.rmtree(folder)
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
