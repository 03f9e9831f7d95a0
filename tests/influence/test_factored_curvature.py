"""The factored Gauss-Newton route, LoGra's PCA projection and the Cholesky kernel (oracles)."""

import numpy as np
import pytest
import torch

from skdvl.influence import InfluenceScorer, NotPositiveDefiniteError, ProjectedInfluence
from skdvl.influence._functional import FlatModel
from skdvl.influence._projection import FactoredProjector, pca_sizes
from skdvl.influence._trak import ProjectedAttribution
from skdvl.influence._trak_features import factored_gauss_newton, gauss_newton_gram
from skdvl.influence._trak_math import ProjectedKernel, output_hessian_factors

CE = torch.nn.CrossEntropyLoss()


def _mlp(seed, positions=False):
    if positions:  # the first Linear applied at 3 positions per example
        module = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(),
                                     torch.nn.Flatten(), torch.nn.Linear(18, 3))
    else:  # three layers: blocks between every pair of layers
        module = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(),
                                     torch.nn.Linear(6, 5), torch.nn.Tanh(),
                                     torch.nn.Linear(5, 3))
    module = module.double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    return module.eval()


def _data(seed, n=12, positions=False):
    g = torch.Generator().manual_seed(seed + 1)
    X = torch.randn(n, *((3, 4) if positions else (4,)), generator=g, dtype=torch.float64)
    return X, torch.randint(0, 3, (n,), generator=g)


def _kronecker_matrix(module, proj):
    """The explicit (d, k) matrix ``P_out kron P_in`` per layer, in FlatModel's order."""
    flat = FlatModel(module, lambda o, t: o.sum())
    blocks = []
    for name, (p_out, p_in) in zip(proj.layers, proj.sides):
        lin = module.get_submodule(name)
        out, inp = lin.out_features, lin.in_features
        p_out = torch.eye(out, dtype=torch.float64) if p_out is None else p_out
        p_in = torch.eye(inp + 1, dtype=torch.float64) if p_in is None else p_in
        kron = torch.kron(p_out, p_in)  # rows: entry (o, i) of the (out, in + 1) gradient
        rows = torch.arange(out * (inp + 1)).reshape(out, inp + 1)
        block = torch.zeros(flat.n_params, kron.shape[1], dtype=torch.float64)
        block[flat.param_slices[flat.names.index(f"{name}.weight")]] = kron[rows[:, :inp]
                                                                           .reshape(-1)]
        block[flat.param_slices[flat.names.index(f"{name}.bias")]] = kron[rows[:, inp]]
        blocks.append(block)
    return torch.cat(blocks, dim=1)


def _brute_gauss_newton(module, X, y, P):
    """``sum_i P^T J_i^T H_i J_i P`` from full Jacobians and the softmax Hessians."""
    with torch.no_grad():
        p = module(X).softmax(-1)
    H = torch.diag_embed(p) - p.unsqueeze(2) * p.unsqueeze(1)
    J = torch.stack([FlatModel(module, lambda o, t, c=c: o[:, c].sum()).per_sample_grads(X, y)
                     for c in range(p.shape[1])], dim=1)  # (n, c, d)
    JP = J @ P
    return torch.einsum("nak,nab,nbl->kl", JP, H, JP)


def _row_loss(out, y):
    return torch.nn.functional.cross_entropy(out, y, reduction="none")


@pytest.mark.parametrize("pca", [False, True])
@pytest.mark.parametrize("proj_dim", [20, 1000])  # sides projected / layers whole
def test_factored_gauss_newton_is_the_kronecker_projection_of_the_full_matrix(
        pca, proj_dim, seed):
    module = _mlp(seed)
    X, y = _data(seed, n=40)
    proj = (FactoredProjector.pca(module, proj_dim, X, y, _row_loss, 16) if pca
            else FactoredProjector(module, proj_dim, seed=seed))
    expected = _brute_gauss_newton(module, X, y, _kronecker_matrix(module, proj))
    got = gauss_newton_gram(module, CE, proj, X, y, batch_size=7, chunk_size=15)
    assert got.shape == (proj.proj_dim, proj.proj_dim)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-10)


def test_several_positions_take_the_general_route_and_agree(seed):
    module = _mlp(seed, positions=True)
    X, y = _data(seed, positions=True)
    proj = FactoredProjector(module, 24, seed=seed)
    flat = FlatModel(module, CE)
    A = output_hessian_factors(flat.output_hessians(module(X).detach(), y))
    assert factored_gauss_newton(module, proj, X, y, A, 5) is None
    expected = _brute_gauss_newton(module, X, y, _kronecker_matrix(module, proj))
    got = gauss_newton_gram(module, CE, proj, X, y, batch_size=5, chunk_size=100)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-10)


def test_pca_sides_are_the_leading_eigenvectors_of_the_brute_force_moments(seed):
    module = _mlp(seed)
    X, y = _data(seed, n=40)
    proj = FactoredProjector.pca(module, 20, X, y, _row_loss, 16)
    # brute force: per-row output gradients of each layer by autograd on its output
    outs, ins = {}, {}

    def keep(name):
        def hook(_, args, out):
            ins[name], outs[name] = args[0], out
        return hook

    hooks = [module.get_submodule(n).register_forward_hook(keep(n)) for n in proj.layers]
    with torch.enable_grad():
        loss = _row_loss(module(X), y).sum()
        grads = torch.autograd.grad(loss, [outs[n] for n in proj.layers])
    for h in hooks:
        h.remove()
    for name, g, (k_out, k_in), (p_out, p_in) in zip(proj.layers, grads, proj.sizes,
                                                     proj.sides):
        a = torch.cat([ins[name], torch.ones(len(X), 1, dtype=torch.float64)], 1)
        for M, k, side in ((g.T @ g, k_out, p_out), (a.T @ a, k_in, p_in)):
            if side is None:
                assert k == len(M)
                continue
            evals, evecs = torch.linalg.eigh(M)
            top = evecs[:, -k:]
            # the same subspace (eigenvectors up to sign; distinct eigenvalues here)
            torch.testing.assert_close(side @ side.T, top @ top.T, rtol=0, atol=1e-8)
            torch.testing.assert_close(side.T @ side, torch.eye(k, dtype=torch.float64),
                                       rtol=0, atol=1e-10)
    # the projection is the full gradient times the Kronecker matrix of the sides
    G = FlatModel(module, CE).per_sample_grads(X, y)
    torch.testing.assert_close(proj.project(module, X, y, _row_loss),
                               G @ _kronecker_matrix(module, proj), rtol=1e-9, atol=1e-10)


def test_pca_sizes_drop_directions_without_energy_and_keep_small_layers_whole():
    # output side: 3 directions, one without energy; input side: a flat spectrum of 5
    spectra = [(torch.tensor([2.0, 1.0, 0.0]), torch.ones(5)),
               (torch.tensor([4.0, 1.0, 1e-9]), torch.tensor([10.0] + [1e-3] * 99))]
    sizes = pca_sizes(spectra, 1000)
    assert sizes[0] == (2, 5)  # all the energy in 2 x 5 of the 3 x 5
    assert sizes[1][0] * sizes[1][1] <= 1000 - 10
    small = pca_sizes(spectra, 40)
    assert small[0][0] * small[0][1] <= 20 and sum(a * b for a, b in small) <= 40
    # a flat input spectrum is worth more than the third output direction of layer 1
    assert small[0][1] >= small[0][0]


def test_pca_influence_with_every_direction_equals_the_unprojected_influence(seed):
    # with room for every layer, only directions without training energy are dropped
    # (the constant direction of the softmax output gradients, which H_i annihilates),
    # so the projected Gauss-Newton influence is the exact one
    module = _mlp(seed)
    X, y = _data(seed, n=40)
    kw = dict(loss=CE, regularization=1e-2, random_state=seed, compute_values=False)
    exact = InfluenceScorer(module, method=ProjectedInfluence(proj_dim=None), **kw).fit(X, y)
    pca = InfluenceScorer(module, method=ProjectedInfluence(proj_dim=10**4,
                                                            projection="factored_pca"),
                          **kw).fit(X, y)
    assert pca.solver_.proj_dim_ < exact.solver_.proj_dim_  # something was dropped
    np.testing.assert_allclose(pca.influences(X[:6], y[:6]), exact.influences(X[:6], y[:6]),
                               rtol=1e-6, atol=1e-9)


def test_pca_projection_is_deterministic_and_refuses_a_store(seed, tmp_path):
    module = _mlp(seed)
    X, y = _data(seed, n=30)
    states = [module.state_dict(), _mlp(seed + 5).state_dict()]
    kw = dict(loss=CE, method="influence", kernel="gauss_newton", proj_dim=30,
              projection="factored_pca", models=states, regularization=0.1)
    a = ProjectedAttribution(module, **kw, random_state=0).fit(X, y)
    b = ProjectedAttribution(module, **kw, random_state=1).fit(X, y)
    assert a.projectors_[0].sizes == a.projectors_[1].sizes  # one dimension for all
    np.testing.assert_array_equal(a.influences(X[:4], y[:4]), b.influences(X[:4], y[:4]))
    with pytest.raises(ValueError, match="factored_pca"):
        ProjectedAttribution(module, **kw, store=tmp_path / "s.zarr").fit(X, y)


def _psd(seed, k=30, rank=20):
    g = torch.Generator().manual_seed(seed)
    B = torch.randn(rank, k, generator=g, dtype=torch.float64)
    return B.T @ B  # singular: rank 20 of 30


@pytest.mark.parametrize("regularization", [0.3, 1e-3, "auto"])
def test_cholesky_kernel_equals_the_eigendecomposition(regularization, seed):
    G = _psd(seed)
    chol = ProjectedKernel.from_gram(G, 50, regularization)
    eig = ProjectedKernel.from_gram(G, 50, regularization, solver="eigh")
    assert chol.eigenvalues_ is None and eig.eigenvalues_ is not None  # the route taken
    assert chol.regularization_ == pytest.approx(eig.regularization_, rel=1e-14)
    lam = eig.regularization_
    brute = torch.linalg.inv(G + lam * torch.eye(len(G), dtype=torch.float64))
    torch.testing.assert_close(chol.inverse, brute, rtol=1e-9, atol=1e-9 * float(brute.abs().max()))
    torch.testing.assert_close(chol.inverse, eig.inverse, rtol=1e-9,
                               atol=1e-9 * float(brute.abs().max()))
    # the store's round trip
    again = ProjectedKernel.from_state(chol.state())
    assert again.eigenvalues_ is None
    torch.testing.assert_close(again.inverse, chol.inverse, rtol=0, atol=0)
    # re-regularized: decomposed on demand, equal to a fresh kernel at that lambda
    torch.testing.assert_close(chol.regularized(0.7).inverse,
                               ProjectedKernel.from_gram(G, 50, 0.7, solver="eigh").inverse,
                               rtol=1e-10, atol=1e-12)


def test_cholesky_leaves_singular_cases_to_the_eigendecomposition(seed):
    G = _psd(seed)
    with pytest.raises(NotPositiveDefiniteError, match="regularization"):
        ProjectedKernel.from_gram(G, 50, 0.0)
    with pytest.raises(NotPositiveDefiniteError):  # below 1e-12 tr(G): as the eigh route
        ProjectedKernel.from_gram(G, 50, 1e-14 * float(torch.trace(G)))
    with pytest.raises(ValueError, match="all zero"):
        ProjectedKernel.from_gram(torch.zeros(4, 4, dtype=torch.float64), 5, 0.1)


def test_pca_projection_with_the_dask_backend_equals_a_sequential_fit(seed):
    pytest.importorskip("dask")
    module = _mlp(seed)
    X, y = _data(seed, n=30)
    kw = dict(loss=CE, method="influence", kernel="gauss_newton", proj_dim=30,
              projection="factored_pca", regularization=0.1, chunk_size=10, random_state=0)
    seq = ProjectedAttribution(module, **kw).fit(X, y)
    par = ProjectedAttribution(module, **kw, backend="dask").fit(X, y)
    np.testing.assert_allclose(par.influences(X[:4], y[:4]), seq.influences(X[:4], y[:4]),
                               rtol=1e-12, atol=1e-14)
