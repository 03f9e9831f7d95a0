"""Oracles shared by the influence tests: an explicit-matrix curvature operator, and a
trained MLP whose Hessian is indefinite."""

import numpy as np
import torch

DT = torch.float64


class DenseOperator:
    """A curvature operator given by an explicit symmetric matrix (an oracle); counts the
    vectors it was applied to (``n_products``)."""

    psd = False

    def __init__(self, C):
        self.C = C
        self.n_products = 0

    dim = property(lambda self: self.C.shape[0])
    dtype = property(lambda self: self.C.dtype)
    device = property(lambda self: self.C.device)

    def matmat(self, V, batch=None):
        self.n_products += len(V)
        return V @ self.C


def indefinite_mlp():
    """A tanh MLP trained (Adam, 300 steps) on 3 blobs, and its data: its Hessian is
    indefinite (``tests/influence/test_definiteness.py`` checks that)."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 4))
    y = rng.integers(0, 3, 120)
    X = torch.from_numpy(centers[y] + rng.normal(size=(120, 4)))
    y = torch.from_numpy(y)
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(),
                              torch.nn.Linear(8, 3)).to(DT)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=DT) * 0.5)
    opt = torch.optim.Adam(net.parameters(), lr=0.03)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(X), y).backward()
        opt.step()
    return net, X, y


# a small tanh net of either kind, with its loss and data (the projected-curvature tests)
CE = torch.nn.CrossEntropyLoss()
MSE = torch.nn.MSELoss()


def tanh_net(seed, n_out):
    g = torch.Generator().manual_seed(seed)
    module = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(),
                                 torch.nn.Linear(5, n_out)).double()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.7 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module

