"""The pyDVL 0.10 half of ``benchmarks/bench_influence_scale.py``.

Runs inside ``benchmarks/.pydvl-venv``: fits ``ArnoldiInfluence`` (or ``EkfacInfluence``)
on the saved MLP, wraps the data in dask arrays chunked like skdvl's run, builds
``DaskInfluenceCalculator(...).influences`` on a ``LocalCluster`` of single-threaded worker
processes and writes it with ``to_zarr``. Prints one JSON object as its last stdout line.

Arguments (JSON on stdin)::

    data, hidden, method, regularization, rank, batch_size, chunks ([test, train]),
    n_workers, zarr (output path), out_dir (added by run_pydvl)
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings

warnings.filterwarnings("ignore")

import dask.array as da  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402
from pydvl.influence import DaskInfluenceCalculator  # noqa: E402
from pydvl.influence.torch import ArnoldiInfluence, EkfacInfluence  # noqa: E402
from pydvl.influence.torch.util import TorchNumpyConverter  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
from _shared import TreeRSS  # noqa: E402


def _warm_up():
    import pydvl.influence.torch  # noqa: F401


def build_model(data, hidden, d, k):
    model = torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.Tanh(),
                                torch.nn.Linear(hidden, hidden // 4), torch.nn.Tanh(),
                                torch.nn.Linear(hidden // 4, k))
    model.load_state_dict({k_[6:]: torch.from_numpy(data[k_]) for k_ in data.files
                           if k_.startswith("param:")})
    return model.eval()


def main():
    a = json.load(sys.stdin)
    torch.set_num_threads(2)
    data = np.load(a["data"])
    Xtr, ytr, Xte, yte = (data[k] for k in ("X_train", "y_train", "X_test", "y_test"))
    model = build_model(data, a["hidden"], Xtr.shape[1], int(ytr.max()) + 1)
    loss = torch.nn.functional.cross_entropy
    if a["method"] == "arnoldi":
        infl = ArnoldiInfluence(model, loss, regularization=a["regularization"],
                                rank=a["rank"])
    else:
        infl = EkfacInfluence(model, update_diagonal=True,
                              hessian_regularization=a["regularization"])
    loader = DataLoader(TensorDataset(torch.from_numpy(Xtr), torch.from_numpy(ytr)),
                        batch_size=a["batch_size"])
    with TreeRSS() as mem:
        t0 = time.perf_counter()
        infl = infl.fit(loader)
        fit_s = time.perf_counter() - t0
        peak_fit, mem.peak = mem.peak, 0  # from here on: the write only
        t0 = time.perf_counter()
        cluster = LocalCluster(n_workers=a["n_workers"], threads_per_worker=1,
                               processes=True, dashboard_address=":0")
        client = Client(cluster)
        client.run(_warm_up)  # imports in the workers count as cluster start
        start_s = time.perf_counter() - t0
        tc, sc = a["chunks"]
        t0 = time.perf_counter()
        calc = DaskInfluenceCalculator(infl, TorchNumpyConverter(), client)
        values = calc.influences(da.from_array(Xte, chunks=(tc, -1)),
                                 da.from_array(yte, chunks=(tc,)),
                                 da.from_array(Xtr, chunks=(sc, -1)),
                                 da.from_array(ytr, chunks=(sc,)))
        values.to_zarr(a["zarr"])
        write_s = time.perf_counter() - t0
        client.close()
        cluster.close()
    print(json.dumps({"fit_s": fit_s, "cluster_start_s": start_s, "write_s": write_s,
                      "peak_tree_rss_mb": max(mem.peak, peak_fit) / 2**20,
                      "peak_write_rss_mb": mem.peak / 2**20, "pid": os.getpid()}))


if __name__ == "__main__":
    main()
