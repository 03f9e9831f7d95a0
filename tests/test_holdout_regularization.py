"""holdout_regularization: the held-out LDS of each candidate, against brute force."""

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.linear_model import Ridge

from skdvl.evaluation import holdout_regularization


@pytest.fixture
def ridge_data():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(50, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + rng.normal(size=50)
    return X, y


def _ridge_influences(model, Xf, yf, Xh, yh, grid):
    gf = Xf * (Xf @ model.coef_ - yf)[:, None]
    gh = Xh * (Xh @ model.coef_ - yh)[:, None]
    H = Xf.T @ Xf / len(Xf)
    return [-gh @ np.linalg.solve(H + lam * np.eye(3), gf.T) for lam in grid]


def test_scores_are_the_held_out_lds_of_each_value(ridge_data):
    X, y = ridge_data
    grid = [1e-3, 1.0, 100.0]
    res = holdout_regularization(_ridge_influences, Ridge(fit_intercept=False), X, y, grid,
                                 held_out=10, n_subsets=12, random_state=0)
    assert len(res.held) == 10 and len(res.fit) == 40
    assert not set(res.held) & set(res.fit)
    Xf, yf, Xh, yh = X[res.fit], y[res.fit], X[res.held], y[res.held]
    # brute force: refit on each subset of the fit rows, squared error of the held rows
    actual = np.array([(Ridge(fit_intercept=False).fit(Xf[s], yf[s]).predict(Xh) - yh) ** 2
                       for s in res.subsets])
    full = Ridge(fit_intercept=False).fit(Xf, yf)
    for j, S in enumerate(_ridge_influences(full, Xf, yf, Xh, yh, grid)):
        predicted = np.array([S[:, s].sum(1) for s in res.subsets])
        rho = np.mean([spearmanr(predicted[:, t], actual[:, t])[0] for t in range(10)])
        np.testing.assert_allclose(res.scores[j], rho, rtol=1e-10)
    assert res.regularization == grid[int(np.argmax(res.scores))]


def test_one_random_state_gives_the_same_choice(ridge_data):
    X, y = ridge_data
    kw = dict(n_subsets=6, random_state=5)
    a = holdout_regularization(_ridge_influences, Ridge(), X, y, [0.1, 10.0], **kw)
    b = holdout_regularization(_ridge_influences, Ridge(), X, y, [0.1, 10.0], **kw)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.held, b.held)


def test_bad_arguments_are_refused(ridge_data):
    X, y = ridge_data
    with pytest.raises(ValueError, match="'grid' parameter .* at least one value"):
        holdout_regularization(_ridge_influences, Ridge(), X, y, [])
    with pytest.raises(ValueError, match="'held_out' parameter .* Got 49 instead"):
        holdout_regularization(_ridge_influences, Ridge(), X, y, [1.0], held_out=49)
    with pytest.raises(ValueError, match="'fraction' parameter .* Got 1.5 instead"):
        holdout_regularization(_ridge_influences, Ridge(), X, y, [1.0], fraction=1.5)
    with pytest.raises(ValueError, match="returned 1 score matrices for a grid of 2"):
        holdout_regularization(lambda *a: [np.zeros((10, 40))], Ridge(), X, y, [1.0, 2.0],
                               held_out=10)
    with pytest.raises(ValueError, match="scores must have shape"):
        holdout_regularization(lambda *a: [np.zeros((3, 3))], Ridge(), X, y, [1.0],
                               held_out=10)
