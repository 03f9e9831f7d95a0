"""TRAK with the projected Gauss-Newton kernel, against brute-force closed forms."""

import numpy as np
import pytest
import torch
from torch.func import functional_call, jacrev

from skdvl.influence import TRAK, InfluenceScorer
from skdvl.influence._trak import ProjectedAttribution


def _brute_force(module, loss, X, y, P=None):
    """Per row: the full Jacobian of the outputs (times ``P``), the output Hessian of the
    loss (``torch.autograd.functional.hessian`` row by row) and the loss gradient."""
    names = [k for k, _ in module.named_parameters()]
    params = tuple(p.detach() for p in module.parameters())

    def outputs(*ps):
        return functional_call(module, dict(zip(names, ps)), (X,))

    parts = jacrev(outputs, argnums=tuple(range(len(params))))(*params)
    J = torch.cat([j.reshape(len(X), -1, j[0, 0].numel()) for j in parts], dim=2)
    if P is not None:
        J = J @ P
    out = outputs(*params).detach()
    H = torch.stack([torch.autograd.functional.hessian(
        lambda o, i=i: loss(o.unsqueeze(0), y[i:i + 1]), out[i]) for i in range(len(X))])
    r = torch.stack([torch.autograd.grad(loss(o.unsqueeze(0), y[i:i + 1]), o)[0]
                     for i, o in enumerate(out.clone().requires_grad_(True))])
    g = torch.einsum("nck,nc->nk", J, r)
    G = torch.einsum("nck,ncd,ndl->kl", J, H, J)
    return G, g


def test_gauss_newton_trak_without_projection_is_the_gauss_newton_influence(problem):
    # one model, identity projection: -g_t^T (sum_i J_i^T H_i J_i + lambda I)^-1 g_i
    module, loss, X, y = problem
    est = ProjectedAttribution(module, loss=loss, proj_dim=None, kernel="gauss_newton",
                               regularization=0.2).fit(X, y)
    G, g = _brute_force(module, loss, X, y)
    expected = -(g[:6] @ torch.linalg.solve(G + 0.2 * torch.eye(len(G), dtype=G.dtype), g.T))
    np.testing.assert_allclose(est.influences(X[:6], y[:6]), expected.numpy(), rtol=1e-6,
                               atol=1e-12)


def test_projected_gauss_newton_is_the_gauss_newton_of_the_projected_jacobians(problem):
    module, loss, X, y = problem
    est = ProjectedAttribution(module, loss=loss, proj_dim=12, kernel="gauss_newton",
                               random_state=3).fit(X, y)
    P = est.projectors_[0].matrix()
    G, g = _brute_force(module, loss, X, y, P)
    lam = float(torch.trace(G)) / len(X)  # "auto": tr(G) / n
    np.testing.assert_allclose(est.regularization_, [lam], rtol=1e-8)
    expected = -(g[:5] @ torch.linalg.solve(G + lam * torch.eye(12, dtype=G.dtype), g.T))
    np.testing.assert_allclose(est.influences(X[:5], y[:5]), expected.numpy(), rtol=1e-6,
                               atol=1e-12)


def test_gauss_newton_kernel_stays_finite_with_more_dimensions_than_rows(problem):
    # 6 rows, 3 outputs: rank <= 18 < k = 64; lambda > 0 keeps the kernel invertible
    module, loss, X, y = problem
    est = ProjectedAttribution(module, loss=loss, proj_dim=64, kernel="gauss_newton",
                               random_state=0).fit(X[:6], y[:6])
    scores = est.influences(X[6:10], y[6:10])
    assert np.isfinite(scores).all() and est.regularization_[0] > 0
    assert np.abs(scores).max() > 0


def test_gauss_newton_store_reopens_to_the_same_scores(tmp_path, problem):
    module, loss, X, y = problem
    kw = dict(loss=loss, proj_dim=8, kernel="gauss_newton", models=None, chunk_size=7,
              random_state=0)
    memory = ProjectedAttribution(module, **kw).fit(X, y).influences(X[:4], y[:4])
    ProjectedAttribution(module, store=tmp_path / "g.zarr", **kw).fit(X, y)
    reopened = ProjectedAttribution(module, store=tmp_path / "g.zarr", **kw).fit()
    np.testing.assert_array_equal(reopened.influences(X[:4], y[:4]), memory)
    with pytest.raises(ValueError, match="parameter"):  # another kernel: another store
        ProjectedAttribution(module, store=tmp_path / "g.zarr",
                             **{**kw, "kernel": "outputs"}).fit(X, y)


def test_regularized_kernel_equals_a_fit_with_that_regularization(problem):
    module, loss, X, y = problem
    for kernel in ("outputs", "gauss_newton"):
        auto = ProjectedAttribution(module, loss=loss, proj_dim=10, kernel=kernel,
                                    random_state=1).fit(X, y)
        fixed = ProjectedAttribution(module, loss=loss, proj_dim=10, kernel=kernel,
                                     regularization=0.37, random_state=1).fit(X, y)
        np.testing.assert_allclose(auto.kernels_[0].regularized(0.37).inverse,
                                   fixed.kernels_[0].inverse, rtol=1e-9, atol=1e-12)


def test_trak_option_passes_the_kernel_and_gcv_is_refused(problem):
    module, loss, X, y = problem
    direct = ProjectedAttribution(module, loss=loss, proj_dim=8, kernel="gauss_newton",
                                  random_state=0).fit(X, y).influences(X[:3], y[:3])
    scorer = InfluenceScorer(module, loss=loss, method=TRAK(proj_dim=8, kernel="gauss_newton"),
                             compute_values=False, random_state=0).fit(X, y)
    np.testing.assert_array_equal(scorer.influences(X[:3], y[:3]), direct)
    with pytest.raises(ValueError, match="regularization='gcv' needs TRAK's own kernel"):
        ProjectedAttribution(module, loss=loss, proj_dim=8, kernel="gauss_newton",
                             regularization="gcv").fit(X, y)
