"""ProjectedAttribution: TRAK, TracIn and gradient similarity against closed forms."""

import pickle

import numpy as np
import pytest
import torch

from skdvl.influence import InfluenceScorer
from skdvl.influence._functional import FlatModel
from skdvl.influence._projection import BlockProjector
from skdvl.influence._trak import ProjectedAttribution

CE = torch.nn.CrossEntropyLoss()


def _seeded(module, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


@pytest.fixture
def softmax_data(seed):
    """Multinomial logistic regression (Linear(4, 3), float64) and 25 rows."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(25, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (25,), generator=g)
    module = _seeded(torch.nn.Linear(4, 3).double(), seed)
    return module, X, y


def _softmax_features(W, b, X, y):
    """Closed form, numpy: the margin gradient phi = [vec(a x^T), a], a = df/do, and p_y.

    f = o_y - logsumexp_{j != y} o_j, so df/do_j = 1 for j = y and -softmax_{-y}(o)_j else.
    """
    logits = X @ W.T + b
    P = np.exp(logits - logits.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    n, c = logits.shape
    A = np.zeros((n, c))
    for i in range(n):
        rest = np.delete(np.arange(c), y[i])
        e = np.exp(logits[i, rest] - logits[i, rest].max())
        A[i, rest] = -e / e.sum()
        A[i, y[i]] = 1.0
    Phi = np.concatenate([(A[:, :, None] * X[:, None, :]).reshape(n, -1), A], axis=1)
    return Phi, P[np.arange(n), y]


def _closed_form_trak(module, X, y, X_test, y_test, lam):
    """TRAK with one model and no projection: -(1 - p_t) phi_t^T (Phi^T Phi + lam)^-1 phi_i
    (1 - p_i), by numpy."""
    W, b = module.weight.detach().numpy(), module.bias.detach().numpy()
    Phi, p = _softmax_features(W, b, X.numpy(), y.numpy())
    Phi_t, p_t = _softmax_features(W, b, X_test.numpy(), y_test.numpy())
    K = Phi.T @ Phi + lam * np.eye(Phi.shape[1])
    return -(1 - p_t)[:, None] * (Phi_t @ np.linalg.solve(K, Phi.T)) * (1 - p)[None, :]


@pytest.mark.parametrize("n_rows", [25, 6])  # k = 15 < n (kernel space), k > n (Gram space)
def test_trak_without_projection_is_its_closed_form_for_softmax_regression(
        softmax_data, n_rows):
    module, X, y = softmax_data
    X, y = X[:n_rows], y[:n_rows]
    trak = ProjectedAttribution(module, loss=CE, proj_dim=None, regularization=0.3).fit(X, y)
    expected = _closed_form_trak(module, X, y, X[:5], y[:5], 0.3)
    np.testing.assert_allclose(trak.influences(X[:5], y[:5]), expected, rtol=1e-6,
                               atol=1e-12)
    assert trak.output_ == "margin"


def test_trak_auto_regularization_is_the_mean_squared_feature_norm(softmax_data):
    module, X, y = softmax_data
    for n_rows in (25, 6):
        trak = ProjectedAttribution(module, loss=CE, proj_dim=None).fit(X[:n_rows], y[:n_rows])
        W, b = module.weight.detach().numpy(), module.bias.detach().numpy()
        Phi, _ = _softmax_features(W, b, X[:n_rows].numpy(), y[:n_rows].numpy())
        lam = (Phi**2).sum(1).mean()
        np.testing.assert_allclose(trak.regularization_, [lam], rtol=1e-10)
        np.testing.assert_allclose(trak.influences(X[:3], y[:3]),
                                   _closed_form_trak(module, X[:n_rows], y[:n_rows], X[:3],
                                                     y[:3], lam), rtol=1e-6, atol=1e-12)


def test_trak_gcv_is_the_argmin_of_the_brute_force_gcv(softmax_data):
    # GCV(lam) = n ||(I - H) q||^2 / tr(I - H)^2 with the explicit hat matrix, on the grid
    module, X, y = softmax_data
    for n_rows in (25, 6):  # n > k and n < k (the interpolating regime stays finite)
        Xn, yn = X[:n_rows], y[:n_rows]
        trak = ProjectedAttribution(module, loss=CE, proj_dim=None,
                                    regularization="gcv").fit(Xn, yn)
        W, b = module.weight.detach().numpy(), module.bias.detach().numpy()
        Phi, p = _softmax_features(W, b, Xn.numpy(), yn.numpy())
        q = 1 - p
        grid = trak.kernels_[0].gcv_[:, 0].numpy()
        gcv = []
        for lam in grid:
            H = Phi @ np.linalg.solve(Phi.T @ Phi + lam * np.eye(Phi.shape[1]), Phi.T)
            r = q - H @ q
            gcv.append(n_rows * (r @ r) / np.trace(np.eye(n_rows) - H) ** 2)
        np.testing.assert_allclose(trak.kernels_[0].gcv_[:, 1].numpy(), gcv, rtol=1e-6)
        assert trak.regularization_[0] == grid[int(np.argmin(gcv))] > 0


def test_trak_with_one_model_is_the_gauss_newton_influence_of_linear_regression(linreg):
    # f = the prediction; l = (f - y)^2 (MSELoss), so g = 2 (f - y) phi and the
    # Gauss-Newton matrix of the mean loss is C = (2 / n) Phi^T Phi: with lambda_TRAK =
    # n lambda / 2, TRAK = (2 / n) * InfluenceScorer(direct, gauss_newton, lambda).
    module, X, y = linreg
    n, lam = len(X), 1e-2
    scorer = InfluenceScorer(module, loss=torch.nn.MSELoss(), method="direct",
                             regularization=lam, compute_values=False).fit(X, y)
    trak = ProjectedAttribution(module, loss=torch.nn.MSELoss(), proj_dim=None,
                                regularization=n * lam / 2).fit(X, y)
    assert trak.output_ == "prediction"
    expected = scorer.influences(X[:7], y[:7])
    np.testing.assert_allclose(trak.influences(X[:7], y[:7]) * n / 2, expected, rtol=1e-6,
                               atol=1e-12)


def test_trak_averages_q_and_the_kernel_scores_over_models(softmax_data, seed):
    module, X, y = softmax_data
    other = _seeded(torch.nn.Linear(4, 3).double(), seed + 1)
    states = [module.state_dict(), other.state_dict()]
    trak = ProjectedAttribution(module, loss=CE, proj_dim=None, models=states,
                                regularization=0.5).fit(X, y)
    parts = []
    for mod in (module, other):
        W, b = mod.weight.detach().numpy(), mod.bias.detach().numpy()
        Phi, p = _softmax_features(W, b, X.numpy(), y.numpy())
        Phi_t, p_t = _softmax_features(W, b, X[:4].numpy(), y[:4].numpy())
        S = Phi_t @ np.linalg.solve(Phi.T @ Phi + 0.5 * np.eye(15), Phi.T)
        parts.append((S, 1 - p, -(1 - p_t)))
    S = np.mean([s for s, _, _ in parts], axis=0)
    q = np.mean([q for _, q, _ in parts], axis=0)
    d = np.mean([d for _, _, d in parts], axis=0)
    np.testing.assert_allclose(trak.influences(X[:4], y[:4]), d[:, None] * S * q[None],
                               rtol=1e-6, atol=1e-12)


@pytest.fixture
def mlp_data(seed):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(30, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (30,), generator=g)
    module = _seeded(torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.Tanh(),
                                         torch.nn.Linear(6, 3)).double(), seed, 0.5)
    return module, X, y


@pytest.mark.parametrize("projection", ["rademacher", "sparse"])
def test_projected_features_are_the_gradients_times_the_seeded_matrix(mlp_data, projection):
    module, X, y = mlp_data
    est = ProjectedAttribution(module, loss=CE, method="grad_dot", proj_dim=16,
                               projection=projection, nnz=4, random_state=0).fit(X, y)
    G = FlatModel(module, CE).per_sample_grads(X, y)
    P = BlockProjector(G.shape[1], 16, kind=projection, seed=int(est.seeds_[0]),
                       nnz=4).matrix()
    torch.testing.assert_close(est.features_[0], G @ P)
    again = ProjectedAttribution(module, loss=CE, method="grad_dot", proj_dim=16,
                                 projection=projection, nnz=4, random_state=0).fit(X, y)
    np.testing.assert_array_equal(again.influences(X[:3], y[:3]), est.influences(X[:3], y[:3]))


@pytest.mark.parametrize("proj_dim", [None, 32])
def test_tracin_with_one_checkpoint_is_the_gradient_dot_product(mlp_data, proj_dim):
    module, X, y = mlp_data
    kw = dict(loss=CE, proj_dim=proj_dim, random_state=0)
    tracin = ProjectedAttribution(module, method="tracin", **kw).fit(X, y)
    dot = ProjectedAttribution(module, method="grad_dot", **kw).fit(X, y)
    np.testing.assert_allclose(tracin.influences(X[:4], y[:4]), dot.influences(X[:4], y[:4]),
                               rtol=1e-12)
    if proj_dim is None:
        G = FlatModel(module, CE).per_sample_grads(X, y).numpy()
        np.testing.assert_allclose(dot.influences(X[:4], y[:4]), -G[:4] @ G.T, rtol=1e-10)
        cos = ProjectedAttribution(module, method="grad_cos", **kw).fit(X, y)
        U = G / np.linalg.norm(G, axis=1, keepdims=True)
        np.testing.assert_allclose(cos.influences(X[:4], y[:4]), -U[:4] @ U.T, rtol=1e-10)


def test_tracin_sums_checkpoints_weighted_by_their_learning_rates(mlp_data, seed):
    module, X, y = mlp_data
    other = _seeded(torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.Tanh(),
                                        torch.nn.Linear(6, 3)).double(), seed + 1, 0.5)
    tracin = ProjectedAttribution(module, loss=CE, method="tracin", proj_dim=None,
                                  models=[module.state_dict(), other.state_dict()],
                                  learning_rates=[0.1, 0.02]).fit(X, y)
    expected = 0
    for mod, lr in ((module, 0.1), (other, 0.02)):
        G = FlatModel(mod, CE).per_sample_grads(X, y).numpy()
        expected = expected - lr * G[:5] @ G.T
    np.testing.assert_allclose(tracin.influences(X[:5], y[:5]), expected, rtol=1e-10)
    # the module itself is left as it was
    torch.testing.assert_close(module.state_dict(), mlp_data[0].state_dict())


def test_factored_trak_equals_trak_on_the_factored_features(mlp_data):
    module, X, y = mlp_data
    est = ProjectedAttribution(module, loss=CE, proj_dim=40, projection="factored",
                               regularization=0.1, random_state=0).fit(X, y)
    Phi, q = est.features_[0].double().numpy(), est.q_[0].numpy()
    phi_t, d_t = est._features(0, X[:3], y[:3])
    S = phi_t.double().numpy() @ np.linalg.solve(Phi.T @ Phi + 0.1 * np.eye(Phi.shape[1]),
                                                 Phi.T)
    np.testing.assert_allclose(est.influences(X[:3], y[:3]),
                               d_t.numpy()[:, None] * S * q[None], rtol=1e-6, atol=1e-12)
    assert est.proj_dim_ <= 40


def test_results_do_not_depend_on_the_batch_size(mlp_data):
    module, X, y = mlp_data
    for projection in ("rademacher", "factored"):
        kw = dict(loss=CE, proj_dim=24, projection=projection, random_state=3)
        a = ProjectedAttribution(module, batch_size=7, **kw).fit(X, y)
        b = ProjectedAttribution(module, batch_size=256, **kw).fit(X, y)
        np.testing.assert_allclose(a.influences(X[:9], y[:9]), b.influences(X[:9], y[:9]),
                                   rtol=1e-9, atol=1e-12)


def test_float16_storage_is_close_to_float32(mlp_data):
    module, X, y = mlp_data
    kw = dict(loss=CE, proj_dim=24, random_state=0)
    half = ProjectedAttribution(module, dtype="float16", **kw).fit(X, y)
    full = ProjectedAttribution(module, dtype="float32", **kw).fit(X, y)
    assert half.features_.dtype == torch.float16 and full.features_.dtype == torch.float32
    assert ProjectedAttribution(module, **kw).fit(X, y).features_.dtype == torch.float64
    a, b = half.influences(X[:5], y[:5]), full.influences(X[:5], y[:5])
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.999


def test_sklearn_protocol_clone_pickle_and_pandas(mlp_data):
    pd = pytest.importorskip("pandas")
    from sklearn.base import clone

    module, X, y = mlp_data
    est = ProjectedAttribution(module, loss=CE, proj_dim=16, random_state=0)
    assert clone(est).get_params()["proj_dim"] == 16
    est.fit(X, y)
    restored = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(restored.influences(X[:2], y[:2]), est.influences(X[:2], y[:2]))
    frame = pd.DataFrame(X.numpy(), index=[f"r{i}" for i in range(30)])
    scores = ProjectedAttribution(module, loss=CE, proj_dim=16, random_state=0).fit(
        frame, y.numpy()).influences(frame.iloc[:3], y[:3].numpy())
    assert list(scores.index) == ["r0", "r1", "r2"] and scores.shape == (3, 30)


def test_errors_name_the_argument_and_the_value(mlp_data, linreg):
    module, X, y = mlp_data
    with pytest.raises(ValueError, match=r"one entry per model \(1\). Got 2 instead"):
        ProjectedAttribution(module, loss=CE, learning_rates=[1, 2]).fit(X, y)
    with pytest.raises(ValueError, match="at least one state dict"):
        ProjectedAttribution(module, loss=CE, models=[]).fit(X, y)
    lin, Xr, yr = linreg
    with pytest.raises(ValueError, match="output='margin' needs logits of shape"):
        ProjectedAttribution(lin, loss=torch.nn.MSELoss(), output="margin").fit(Xr, yr)
    with pytest.raises(ValueError, match="output='prediction' needs one output per row"):
        ProjectedAttribution(module, loss=CE, output="prediction").fit(X, y)
    probs = torch.nn.Sequential(module, torch.nn.Softmax(dim=1))
    with pytest.raises(ValueError, match="assumes the cross-entropy loss of the logits"):
        ProjectedAttribution(probs, loss=torch.nn.NLLLoss(), output="margin").fit(X, y)
    conv = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.Flatten(),
                               torch.nn.Linear(6, 3)).double()
    with pytest.raises(ValueError, match="Linear layers only"):
        ProjectedAttribution(conv, loss=CE, projection="factored").fit(X.reshape(30, 1, 5), y)
    est = ProjectedAttribution(module, loss=CE, proj_dim=8).fit(X, y)
    with pytest.raises(ValueError, match=r"X_test has rows of shape \(4,\)"):
        est.influences(X[:2, :4], y[:2])
    from sklearn.utils._param_validation import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="'method' parameter"):
        ProjectedAttribution(module, loss=CE, method="trac").fit(X, y)
