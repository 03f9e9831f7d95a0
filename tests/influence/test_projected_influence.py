"""ProjectedInfluence: influence with the curvature projected, against brute force."""

import numpy as np
import pytest
import torch
from torch.func import functional_call, jacrev

from skdvl.influence import (
    TRAK,
    InfluenceScorer,
    NotPositiveDefiniteError,
    ProjectedInfluence,
)
from skdvl.influence._trak import ProjectedAttribution

from .oracles import CE, indefinite_mlp
from .oracles import tanh_net as _net


def _flat_loss(module, loss, X, y):
    """The mean loss as a function of the flat parameter vector, and that vector."""
    names = [k for k, _ in module.named_parameters()]
    shapes = [p.shape for p in module.parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in module.parameters()])

    def f(t):
        parts, start = {}, 0
        for name, shape in zip(names, shapes):
            parts[name] = t[start:start + shape.numel()].reshape(shape)
            start += shape.numel()
        return loss(functional_call(module, parts, (X,)), y)

    return f, theta


def _gradients(module, loss, X, y):
    """Per-row loss gradients by autograd, one row at a time, ``(n, d)``."""
    rows = []
    for i in range(len(X)):
        f, theta = _flat_loss(module, loss, X[i:i + 1], y[i:i + 1])
        rows.append(torch.autograd.grad(f(theta.requires_grad_(True)), theta)[0])
    return torch.stack(rows)


def _hessian(module, loss, X, y):
    f, theta = _flat_loss(module, loss, X, y)
    return torch.autograd.functional.hessian(f, theta)


def _gauss_newton(module, loss, X, y):
    """``mean_i J_i^T H_i J_i`` from the full Jacobians (jacrev) and output Hessians."""
    f, theta = _flat_loss(module, loss, X, y)
    names = [k for k, _ in module.named_parameters()]
    params = tuple(p.detach() for p in module.parameters())
    parts = jacrev(lambda *ps: functional_call(module, dict(zip(names, ps)), (X,)),
                   argnums=tuple(range(len(params))))(*params)
    J = torch.cat([j.reshape(len(X), -1, j[0, 0].numel()) for j in parts], dim=2)
    out = module(X).detach()
    H = torch.stack([torch.autograd.functional.hessian(
        lambda o, i=i: loss(o.unsqueeze(0), y[i:i + 1]), out[i]) for i in range(len(X))])
    return torch.einsum("nck,ncd,ndl->kl", J, H, J) / len(X)


def _influence(C, g_test, g_train, lam, P=None):
    """``-g_t^T P (P^T C P + lam I)^-1 P^T g_i`` by a dense solve."""
    if P is not None:
        C, g_test, g_train = P.T @ C @ P, g_test @ P, g_train @ P
    K = C + lam * torch.eye(len(C), dtype=C.dtype)
    return -(g_test @ torch.linalg.solve(K, g_train.T))


def test_identity_projection_is_direct_influence(problem):
    # proj_dim=None: the classic direct influence of the same curvature, to 1e-6
    module, loss, X, y = problem
    kw = dict(loss=loss, regularization=0.05, compute_values=False)
    direct = InfluenceScorer(module, method="direct", **kw).fit(X, y)
    proj = InfluenceScorer(module, method=ProjectedInfluence(proj_dim=None), **kw).fit(X, y)
    expected = direct.influences(X[:6], y[:6])
    np.testing.assert_allclose(proj.influences(X[:6], y[:6]), expected, rtol=1e-6,
                               atol=1e-9 * np.abs(expected).max())


def test_identity_projection_is_direct_influence_with_the_hessian():
    module, X, y = indefinite_mlp()
    kw = dict(loss=CE, regularization=0.05, second_order="hessian", compute_values=False)
    direct = InfluenceScorer(module, method="direct", **kw).fit(X, y)
    proj = InfluenceScorer(module, method=ProjectedInfluence(proj_dim=None), **kw).fit(X, y)
    expected = direct.influences(X[:5], y[:5])
    np.testing.assert_allclose(proj.influences(X[:5], y[:5]), expected, rtol=1e-6,
                               atol=1e-9 * np.abs(expected).max())


@pytest.mark.parametrize("second_order", ["gauss_newton", "hessian"])
def test_random_projection_is_the_brute_force_projected_curvature(problem, second_order):
    module, loss, X, y = problem
    lam = 0.3 if second_order == "gauss_newton" else 4.0  # the random net's H is indefinite
    s = InfluenceScorer(module, loss=loss, second_order=second_order, regularization=lam,
                        method=ProjectedInfluence(proj_dim=12), random_state=4).fit(X, y)
    P = s.solver_.projectors_[0].matrix()
    C = (_gauss_newton if second_order == "gauss_newton" else _hessian)(module, loss, X, y)
    G = _gradients(module, loss, X, y)
    expected = _influence(C, G[:5], G, lam, P)
    np.testing.assert_allclose(s.influences(X[:5], y[:5]), expected.numpy(), rtol=1e-6,
                               atol=1e-10 * float(expected.abs().max()))
    # values_ without X_val: minus the self-influences, the diagonal of the same formula
    np.testing.assert_allclose(s.values_, -np.diag(_influence(C, G, G, lam, P).numpy()),
                               rtol=1e-6)


def test_several_models_average_their_influences(problem):
    module, loss, X, y = problem
    states = [_net(s, module[-1].out_features).state_dict() for s in (1, 2)]
    s = InfluenceScorer(module, loss=loss, regularization=0.2, random_state=0,
                        method=ProjectedInfluence(proj_dim=10, models=states)).fit(X, y)
    parts = []
    for state, proj in zip(states, s.solver_.projectors_):
        m = _net(0, module[-1].out_features)
        m.load_state_dict(state)
        G = _gradients(m, loss, X, y)
        parts.append(_influence(_gauss_newton(m, loss, X, y), G[:4], G, 0.2, proj.matrix()))
    np.testing.assert_allclose(s.influences(X[:4], y[:4]), (sum(parts) / 2).numpy(),
                               rtol=1e-6, atol=1e-12)


def test_one_model_is_n_times_gauss_newton_trak(seed):
    # TRAK's Gauss-Newton kernel sums over the n rows, ProjectedInfluence averages: the
    # scores differ by the factor n at the same "auto" rule (tr(G) / n on either scale)
    module, X, y = indefinite_mlp()
    kw = dict(loss=CE, random_state=seed, compute_values=False)
    trak = InfluenceScorer(module, method=TRAK(proj_dim=16, kernel="gauss_newton"),
                           **kw).fit(X, y)
    proj = InfluenceScorer(module, method=ProjectedInfluence(proj_dim=16,
                                                             regularization="auto"),
                           **kw).fit(X, y)
    np.testing.assert_allclose(proj.solver_.regularization_ * len(X),
                               trak.solver_.regularization_, rtol=1e-10)
    np.testing.assert_allclose(proj.influences(X[:5], y[:5]),
                               len(X) * trak.influences(X[:5], y[:5]), rtol=1e-8)


def test_reopened_store_gives_the_same_influences(problem, tmp_path):
    module, loss, X, y = problem
    method = ProjectedInfluence(proj_dim=8, store=tmp_path / "g.zarr")
    kw = dict(loss=loss, regularization=0.1, random_state=0, compute_values=False)
    fitted = InfluenceScorer(module, method=method, **kw).fit(X, y)
    reopened = InfluenceScorer(module, method=method, **kw).fit()
    np.testing.assert_array_equal(reopened.influences(X[:3], y[:3]),
                                  fitted.influences(X[:3], y[:3]))
    other = InfluenceScorer(module, method=method, **{**kw, "regularization": 0.2})
    with pytest.raises(ValueError, match="regularization"):
        other.fit(X, y)


def test_indefinite_projected_hessian_raises_with_the_regularization_needed():
    module, X, y = indefinite_mlp()
    s = InfluenceScorer(module, loss=CE, second_order="hessian", regularization=1e-6,
                        method=ProjectedInfluence(proj_dim=None))
    with pytest.raises(NotPositiveDefiniteError, match="Increase 'regularization' above"):
        s.fit(X, y)


def test_bad_kernels_and_projections_are_refused(problem):
    module, loss, X, y = problem
    with pytest.raises(ValueError, match="'kernel' parameter .* method='influence'"):
        ProjectedAttribution(module, loss=loss, method="influence").fit(X, y)
    with pytest.raises(ValueError, match="'kernel' parameter .* method='trak'"):
        ProjectedAttribution(module, loss=loss, kernel="hessian").fit(X, y)
    s = InfluenceScorer(module, loss=loss, second_order="hessian",
                        method=ProjectedInfluence(proj_dim=8, projection="factored"))
    with pytest.raises(ValueError, match="projection='factored'"):
        s.fit(X, y)
    with pytest.raises(ValueError, match="regularization"):
        InfluenceScorer(module, loss=loss,
                        method=ProjectedInfluence(regularization="gcv")).fit(X, y)
