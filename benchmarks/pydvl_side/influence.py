"""The pyDVL 0.10 half of ``benchmarks/bench_influence.py``.

Runs inside ``benchmarks/.pydvl-venv`` (see ``benchmarks/pydvl_env.py``): reads a JSON object
on stdin, prints one JSON object as the last line of stdout.

Arguments::

    data            path of the .npz written by bench_influence.py (data and weights)
    method          direct, cg, cg_nystroem (cg with a Nystroem preconditioner), lissa,
                    arnoldi, ekfac, nystroem or datainf
    regularization, rank, maxiter, rtol, batch_size, hidden, seed
    out_dir         added by run_pydvl; the influence matrix is saved there as .npy
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings

warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from pydvl.influence.torch import (  # noqa: E402
    ArnoldiInfluence,
    CgInfluence,
    DirectInfluence,
    EkfacInfluence,
    InverseHarmonicMeanInfluence,
    LissaInfluence,
    NystroemSketchInfluence,
)
from pydvl.influence.torch.preconditioner import NystroemPreconditioner  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
from _shared import warm_up_torch_func  # noqa: E402


def build_model(data, hidden):
    model = torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.Tanh(),
                                torch.nn.Linear(hidden, 10))
    state = {k[len("param:"):]: torch.from_numpy(data[k]) for k in data.files
             if k.startswith("param:")}
    model.load_state_dict(state)
    return model.eval()


def make(method, model, a):
    loss, reg = torch.nn.functional.cross_entropy, a["regularization"]
    if method == "direct":
        return DirectInfluence(model, loss, regularization=reg)
    if method == "cg":
        return CgInfluence(model, loss, regularization=reg, rtol=a["rtol"], maxiter=a["maxiter"],
                           solve_simultaneously=True, warn_on_max_iteration=False)
    if method == "cg_nystroem":
        return CgInfluence(model, loss, regularization=reg, rtol=a["rtol"], maxiter=a["maxiter"],
                           solve_simultaneously=True, warn_on_max_iteration=False,
                           preconditioner=NystroemPreconditioner(rank=a["rank"]))
    if method == "lissa":
        return LissaInfluence(model, loss, regularization=reg, maxiter=a["lissa_maxiter"],
                              scale=a["lissa_scale"], rtol=a["rtol"],
                              warn_on_max_iteration=False)
    if method == "arnoldi":
        return ArnoldiInfluence(model, loss, regularization=reg, rank=a["rank"])
    if method == "ekfac":
        return EkfacInfluence(model, update_diagonal=True, hessian_regularization=reg)
    if method == "nystroem":
        return NystroemSketchInfluence(model, loss, regularization=reg, rank=a["rank"])
    if method == "datainf":
        return InverseHarmonicMeanInfluence(model, loss, regularization=reg)
    raise ValueError(method)


def main():
    a = json.load(sys.stdin)
    data = np.load(a["data"])
    model = build_model(data, a["hidden"])
    Xtr, ytr = torch.from_numpy(data["X_train"]), torch.from_numpy(data["y_train"])
    Xte, yte = torch.from_numpy(data["X_test"]), torch.from_numpy(data["y_test"])
    loader = DataLoader(TensorDataset(Xtr, ytr), batch_size=a["batch_size"])
    torch.manual_seed(a.get("seed", 0))  # pyDVL's random parts use the global generator
    warmup_s = warm_up_torch_func()
    t0 = time.perf_counter()
    infl = make(a["method"], model, a).fit(loader)
    t_fit = time.perf_counter() - t0
    values = infl.influences(Xte, yte, Xtr, ytr).detach().cpu().numpy()
    t_total = time.perf_counter() - t0
    path = os.path.join(a["out_dir"], "influences.npy")
    np.save(path, values)
    print(json.dumps({"fit_s": t_fit, "total_s": t_total, "warmup_s": warmup_s,
                      "influences": path}))


if __name__ == "__main__":
    main()
