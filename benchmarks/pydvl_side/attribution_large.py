"""The pyDVL 0.10 half of ``benchmarks/bench_attribution_large.py``.

Runs inside ``benchmarks/.pydvl-venv`` (see ``benchmarks/pydvl_env.py``): reads a JSON object
on stdin, prints one JSON object as the last line of stdout.

Arguments::

    data            .npz written by bench_attribution_large.py: X_train, y_train, X_test,
                    y_test and the net's parameters (keys "param:<name>")
    widths          the MLP's widths, e.g. [256, 1024, 768, 10] (ReLU between layers)
    method          "ekfac" or "arnoldi"
    regularization, rank, hessian_rows (rows of the Arnoldi Hessian), train_chunk
    out_dir         added by run_pydvl; the (n_test, n_train) influences are saved there

pyDVL's ``influences(x_test, y_test, x, y)`` forms the training rows' per-example
gradients; they are passed ``train_chunk`` rows at a time to bound its memory.
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
from pydvl.influence.torch import ArnoldiInfluence, EkfacInfluence  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
from _shared import warm_up_torch_func  # noqa: E402


def build_model(data, widths):
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        if i:
            layers.append(torch.nn.ReLU())
        layers.append(torch.nn.Linear(a, b))
    model = torch.nn.Sequential(*layers)
    state = {k[len("param:"):]: torch.from_numpy(data[k]) for k in data.files
             if k.startswith("param:")}
    model.load_state_dict(state)
    return model.eval()


def main():
    a = json.load(sys.stdin)
    torch.set_num_threads(int(a.get("threads", 1)))
    data = np.load(a["data"])
    model = build_model(data, a["widths"])
    Xtr, ytr = torch.from_numpy(data["X_train"]), torch.from_numpy(data["y_train"])
    Xte, yte = torch.from_numpy(data["X_test"]), torch.from_numpy(data["y_test"])
    torch.manual_seed(0)  # pyDVL's random parts use the global generator
    warmup_s = warm_up_torch_func()
    loss = torch.nn.functional.cross_entropy
    t0 = time.perf_counter()
    if a["method"] == "ekfac":
        infl = EkfacInfluence(model, update_diagonal=True,
                              hessian_regularization=a["regularization"])
        loader = DataLoader(TensorDataset(Xtr, ytr), batch_size=256)
    else:
        infl = ArnoldiInfluence(model, loss, regularization=a["regularization"],
                                rank=a["rank"])
        n = a["hessian_rows"]
        loader = DataLoader(TensorDataset(Xtr[:n], ytr[:n]), batch_size=256)
    infl = infl.fit(loader)
    fit_s = time.perf_counter() - t0
    parts, step = [], a["train_chunk"]
    for start in range(0, len(Xtr), step):
        sl = slice(start, start + step)
        parts.append(infl.influences(Xte, yte, Xtr[sl], ytr[sl]).detach().cpu().numpy())
    total_s = time.perf_counter() - t0
    path = os.path.join(a["out_dir"], "influences.npy")
    np.save(path, np.concatenate(parts, axis=1))
    print(json.dumps({"fit_s": fit_s, "total_s": total_s, "warmup_s": warmup_s,
                      "influences": path}))


if __name__ == "__main__":
    main()
