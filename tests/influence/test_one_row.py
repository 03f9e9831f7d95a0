"""One test row given as a 1-D array (``X[0]``) is refused with the fix, not read as
``n_features`` rows."""

import numpy as np
import pandas as pd
import pytest
import torch

from skdvl.influence import InfluenceScorer

DT = torch.float64


@pytest.fixture
def fitted(seed):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(30, 3, generator=g, dtype=DT)
    y = torch.randn(30, 1, generator=g, dtype=DT)
    net = torch.nn.Linear(3, 1).to(DT)
    scorer = InfluenceScorer(net, loss=torch.nn.MSELoss(), method="direct",
                             regularization=1e-3, compute_values=False).fit(X, y)
    return scorer, X.numpy(), y.numpy()


ONE_ROW = (r"X_test is 1-D \(shape \(3,\); one row of 3 features\), but the scorer was "
           r"fitted on rows of shape \(3,\).*e.g. X\[\[0\]\] or X\[None, :\]")


@pytest.mark.parametrize("target", ["scalar", "one_row"])
def test_one_d_row_is_refused_with_the_fix(fitted, target):
    scorer, X, y = fitted
    y_test = y[0, 0] if target == "scalar" else y[0]
    with pytest.raises(ValueError, match=ONE_ROW):
        scorer.influences(X[0], y_test)
    with pytest.raises(ValueError, match=ONE_ROW):
        scorer.influence_factors(torch.from_numpy(X[0]), torch.from_numpy(np.asarray(y_test)))


def test_one_d_row_of_a_dataframe_is_refused(fitted):
    scorer, X, y = fitted
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"X_test is 1-D.*X.iloc\[\[0\]\]"):
        scorer.influences(frame.iloc[0], y[0])


def test_one_d_array_of_another_length_is_refused(fitted):
    scorer, X, y = fitted
    with pytest.raises(ValueError, match=r"X_test is 1-D \(shape \(6,\)\), but the scorer "
                                         r"was fitted on rows of shape \(3,\)"):
        scorer.influences(X[:2].reshape(-1), y[:6, 0])


def test_the_two_d_row_gives_the_row_of_the_full_matrix(fitted):
    scorer, X, y = fitted
    full = scorer.influences(X[:4], y[:4])
    np.testing.assert_allclose(scorer.influences(X[[2]], y[[2]]), full[[2]], rtol=1e-10)
    np.testing.assert_allclose(scorer.influences(X[None, 2], y[None, 2]), full[[2]],
                               rtol=1e-10)


def test_one_d_inputs_stay_accepted_for_a_model_of_scalar_rows(seed):
    g = torch.Generator().manual_seed(seed)
    X = torch.randint(0, 5, (20,), generator=g)
    y = torch.randn(20, 1, generator=g, dtype=DT)
    net = torch.nn.Sequential(torch.nn.Embedding(5, 2, dtype=DT), torch.nn.Linear(2, 1, dtype=DT))
    scorer = InfluenceScorer(net, loss=torch.nn.MSELoss(), method="direct",
                             regularization=1e-3, compute_values=False).fit(X, y)
    assert scorer.influences(X[:3], y[:3]).shape == (3, 20)
