"""Projected-gradient attribution as methods of InfluenceScorer: TRAK, TracIn,
GradientSimilarity give ProjectedAttribution's matrices, and TRAK without projection is
the closed-form Gauss-Newton influence of linear regression."""

import numpy as np
import pytest
import torch
from sklearn.base import clone

from skdvl.influence import TRAK, GradientSimilarity, InfluenceScorer, TracIn
from skdvl.influence._trak import ProjectedAttribution

CE = torch.nn.CrossEntropyLoss()


def _mlp(seed, scale=0.5):
    module = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.Tanh(),
                                 torch.nn.Linear(6, 3)).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


@pytest.fixture
def data(seed):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(30, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (30,), generator=g)
    return _mlp(seed), X, y


def _options(seed):
    states = [_mlp(seed + i).state_dict() for i in range(2)]
    return [
        (TRAK(proj_dim=16, models=states, regularization="gcv"),
         dict(method="trak", proj_dim=16, models=states, regularization="gcv")),
        (TRAK(proj_dim=24, projection="factored", dtype="float16"),
         dict(method="trak", proj_dim=24, projection="factored", dtype="float16")),
        (TracIn(proj_dim=16, checkpoints=states, learning_rates=[0.1, 0.3]),
         dict(method="tracin", proj_dim=16, models=states, learning_rates=[0.1, 0.3])),
        (GradientSimilarity(kind="cos", proj_dim=None),
         dict(method="grad_cos", proj_dim=None)),
        (GradientSimilarity(proj_dim=16, projection="sparse", nnz=2),
         dict(method="grad_dot", proj_dim=16, projection="sparse", nnz=2)),
    ]


@pytest.mark.parametrize("case", range(5))
def test_scorer_with_an_attribution_option_is_projected_attribution(data, seed, case):
    module, X, y = data
    option, params = _options(seed)[case]
    scorer = InfluenceScorer(module, loss=CE, method=option, chunk_size=8,
                             random_state=3).fit(X, y)
    direct = ProjectedAttribution(module, loss=CE, chunk_size=8, random_state=3,
                                  **params).fit(X, y)
    np.testing.assert_array_equal(scorer.influences(X[:6], y[:6]), direct.influences(X[:6], y[:6]))
    np.testing.assert_array_equal(scorer.values_, -direct.self_influences())
    assert scorer.n_params_ == direct.n_params_ == 57
    assert isinstance(scorer.method_, type(option)) and scorer.method_ is not option


def test_names_mean_the_options_with_their_defaults(data):
    module, X, y = data
    for name, option in (("trak", TRAK()), ("tracin", TracIn()),
                         ("gradient_similarity", GradientSimilarity())):
        by_name = InfluenceScorer(module, loss=CE, method=name, random_state=0).fit(X, y)
        by_option = InfluenceScorer(module, loss=CE, method=option, random_state=0).fit(X, y)
        np.testing.assert_array_equal(by_name.influences(X[:3], y[:3]),
                                      by_option.influences(X[:3], y[:3]))


def test_values_with_validation_data_are_minus_the_mean_score(data):
    module, X, y = data
    scorer = InfluenceScorer(module, loss=CE, method=TRAK(proj_dim=16),
                             random_state=0).fit(X, y, X_val=X[:9], y_val=y[:9])
    np.testing.assert_allclose(scorer.values_, -scorer.influences(X[:9], y[:9]).mean(0),
                               rtol=1e-12)


def test_trak_unprojected_is_the_closed_form_gauss_newton_influence_of_linear_regression(
        linreg):
    # f = w^T x + b and l = (f - y)^2: g_i = 2 (f_i - y_i) x~_i with x~ = [x, 1], and the
    # Gauss-Newton matrix of the mean loss is C = (2 / n) X~^T X~. TRAK with one model
    # and no projection is -g_t^T (X~^T X~ + lam_T I)^-1 g_i, so that with
    # lam_T = n lam / 2 it is (2 / n) times -g_t^T (C + lam I)^-1 g_i (numpy, no torch).
    module, X, y = linreg
    n, lam = len(X), 1e-2
    scorer = InfluenceScorer(module, loss=torch.nn.MSELoss(), compute_values=False,
                             method=TRAK(proj_dim=None, regularization=n * lam / 2)).fit(X, y)
    w, b = module.weight.detach().numpy(), module.bias.detach().numpy()
    Xn, yn = X.numpy(), y.numpy()
    Xa = np.hstack([Xn, np.ones((n, 1))])
    G = 2 * (Xn @ w.T + b - yn) * Xa
    C = 2 / n * Xa.T @ Xa
    expected = -G[:7] @ np.linalg.solve(C + lam * np.eye(C.shape[0]), G.T)
    np.testing.assert_allclose(scorer.influences(X[:7], y[:7]) * n / 2, expected,
                               rtol=1e-6, atol=1e-12)


def test_skorch_net_dataframes_and_zarr_output(tmp_path, seed):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("zarr")
    skorch = pytest.importorskip("skorch")
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(40, 5, generator=g).numpy()
    y = (X[:, 0] > 0).astype(np.int64)
    module = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    net = skorch.NeuralNetClassifier(module, criterion=torch.nn.CrossEntropyLoss,
                                     max_epochs=3, train_split=None, verbose=0).fit(X, y)
    frame = pd.DataFrame(X, index=[f"r{i}" for i in range(40)])
    scorer = InfluenceScorer(net, method=TRAK(proj_dim=8), chunk_size=16,
                             random_state=0).fit(frame, y)
    direct = ProjectedAttribution(net.module_, loss=torch.nn.CrossEntropyLoss(),
                                  proj_dim=8, chunk_size=16, random_state=0).fit(X, y)
    scores = scorer.influences(frame.iloc[:5], y[:5])
    assert list(scores.index) == ["r0", "r1", "r2", "r3", "r4"]
    assert list(scorer.values_.index[:2]) == ["r0", "r1"]
    np.testing.assert_allclose(scores.to_numpy(), direct.influences(X[:5], y[:5]),
                               rtol=1e-6, atol=1e-9)
    written = scorer.influences(X[:5], y[:5], out=tmp_path / "s.zarr")
    np.testing.assert_allclose(np.asarray(written), scores.to_numpy(), rtol=1e-12)


def test_grid_search_parameters_and_clone(data):
    module, X, y = data
    scorer = InfluenceScorer(module, loss=CE, method=TRAK(proj_dim=16))
    scorer.set_params(method__proj_dim=8)
    assert clone(scorer).get_params()["method__proj_dim"] == 8
    scorer.fit(X, y)
    assert scorer.solver_.proj_dim_ == 8 and scorer.method.proj_dim == 8


def test_what_attribution_methods_do_not_offer_is_refused(data):
    module, X, y = data
    scorer = InfluenceScorer(module, loss=CE, method=TRAK(proj_dim=8)).fit(X, y)
    with pytest.raises(ValueError, match="X and y must be None. Got X of type Tensor"):
        scorer.influences(X[:2], y[:2], X, y)
    with pytest.raises(ValueError, match="mode must be 'up'. Got 'perturbation' instead"):
        scorer.influences(X[:2], y[:2], mode="perturbation")
    with pytest.raises(ValueError, match="no influence factors"):
        scorer.influence_factors(X[:2], y[:2])
    with pytest.raises(ValueError, match="no influence factors"):
        scorer.influences_from_factors(np.zeros((1, 57)))
    with pytest.raises(ValueError, match="training data X is required for method='cg'"):
        InfluenceScorer(module, loss=CE).fit()
    from sklearn.utils._param_validation import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="'kind' parameter of GradientSimilarity"):
        InfluenceScorer(module, loss=CE, method=GradientSimilarity(kind="l2")).fit(X, y)


@pytest.mark.parametrize("method", [TRAK(proj_dim=8), GradientSimilarity(kind="cos", proj_dim=8)])
@pytest.mark.parametrize("check", ["permutation_equivariance", "seeding", "n_jobs_invariance",
                                   "clone_and_refit", "pandas_alignment"])
def test_valuer_checks_pass_for_attribution_methods(method, check):
    from skdvl.utils import estimator_checks

    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    scorer = InfluenceScorer(net.double(), loss=CE, method=method)
    getattr(estimator_checks, f"check_valuer_{check}")(scorer)
