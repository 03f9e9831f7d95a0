"""Bad inputs get a ValueError naming the argument, before torch sees them."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from skdvl.influence import CG, Arnoldi, InfluenceScorer, LiSSA

DT = torch.float64


@pytest.fixture
def regression(seed):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(40, 3, generator=g, dtype=DT)
    y = torch.randn(40, 1, generator=g, dtype=DT)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    return net.to(DT), X, y


@pytest.fixture
def classification(seed):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(40, 3, generator=g, dtype=DT)
    y = torch.randint(0, 3, (40,), generator=g)
    return torch.nn.Linear(3, 3).to(DT), X, y


def _scorer(net, loss=None, **kw):
    return InfluenceScorer(net, loss=loss or torch.nn.MSELoss(), method="direct", **kw)


def test_module_without_trainable_parameters_is_refused(regression):
    net, X, y = regression
    for p in net.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match=r"'model' parameter of InfluenceScorer has no "
                                         r"trainable parameters \(Sequential with 21 "):
        _scorer(net).fit(X, y)
    with pytest.raises(ValueError, match="no trainable parameters"):
        _scorer(torch.nn.Tanh()).fit(X, y)


@pytest.mark.parametrize("loss", [torch.nn.MSELoss(), F.mse_loss, torch.nn.HuberLoss(),
                                  torch.nn.L1Loss()], ids=["MSELoss", "mse_loss", "Huber", "L1"])
def test_regression_target_of_another_shape_is_refused(regression, loss):
    net, X, y = regression
    with pytest.raises(ValueError, match=r"y has shape \(40,\) but the model's output has "
                                         r"shape \(40, 1\).*y.reshape\(-1, 1\)"):
        _scorer(net, loss).fit(X, y[:, 0])
    with pytest.raises(ValueError, match=r"y has shape \(40, 2\)"):
        _scorer(net, loss).fit(X, y.repeat(1, 2))


def test_custom_loss_that_broadcasts_is_refused(regression):
    net, X, y = regression

    def loss(out, target):
        return F.mse_loss(out, target)

    with pytest.raises(ValueError, match=r"the loss would broadcast them"):
        _scorer(net, loss).fit(X, y[:, 0])


def test_class_targets_of_another_shape_are_refused(classification):
    net, X, y = classification
    ce = torch.nn.CrossEntropyLoss()
    with pytest.raises(ValueError, match=r"y has shape \(40, 2\).*for class indices y must "
                                         r"have shape \(40,\)"):
        _scorer(net, ce).fit(X, torch.stack([y, y], 1))
    with pytest.raises(ValueError, match=r"y has shape \(40,\).*class probabilities"):
        _scorer(net, ce).fit(X, y.to(DT))


def test_integer_regression_targets_are_cast_to_float(regression):
    net, X, _ = regression
    y_int = torch.arange(40).reshape(-1, 1) % 7
    got = _scorer(net, regularization=0.1).fit(X, y_int).influences(X[:3], y_int[:3])
    ref = _scorer(net, regularization=0.1).fit(X, y_int.to(DT))
    np.testing.assert_allclose(got, ref.influences(X[:3], y_int[:3].to(DT)), rtol=1e-12)


@pytest.mark.parametrize("where", ["X", "y", "X_test", "X_val"])
def test_zero_rows_are_refused(regression, where):
    net, X, y = regression
    s = _scorer(net)
    if where in ("X", "y"):
        with pytest.raises(ValueError, match=r"X has 0 rows \(shape \(0, 3\)\)" if where == "X"
                           else r"X and its targets y must have the same number of rows; got "
                                r"40 and 0"):
            s.fit(X[:0] if where == "X" else X, y[:0] if where == "X" else y[:0])
    elif where == "X_test":
        with pytest.raises(ValueError, match=r"X_test has 0 rows"):
            s.fit(X, y).influences(X[:0], y[:0])
    else:
        with pytest.raises(ValueError, match=r"X_val has 0 rows"):
            s.fit(X, y, X_val=X[:0], y_val=y[:0])


@pytest.mark.parametrize("bad", [np.array(["a", "b"] * 20), np.array([None] * 40)],
                         ids=["str", "object"])
def test_non_numeric_targets_are_refused(classification, bad):
    net, X, _ = classification
    with pytest.raises(ValueError, match=r"y must be numeric \(bool, integer or float\); "
                                         r"got an array of dtype (<U1|object)"):
        _scorer(net, torch.nn.CrossEntropyLoss()).fit(X, bad)
    s = _scorer(net, torch.nn.CrossEntropyLoss(), regularization=0.1)
    s.fit(X, torch.zeros(40, dtype=torch.long))
    with pytest.raises(ValueError, match=r"y_test must be numeric"):
        s.influences(X[:2], bad[:2])


def test_test_data_with_other_features_is_refused(regression):
    net, X, y = regression
    s = _scorer(net).fit(X, y)
    with pytest.raises(ValueError, match=r"X_test has rows of shape \(2,\) \(X_test.shape = "
                                         r"\(5, 2\)\), but the scorer was fitted on X with rows "
                                         r"of shape \(3,\)"):
        s.influences(X[:5, :2], y[:5])
    with pytest.raises(ValueError, match=r"y_test has rows of shape \(2,\)"):
        s.influence_factors(X[:5], y[:5].repeat(1, 2))
    with pytest.raises(ValueError, match=r"X has rows of shape \(4,\)"):
        s.influences(X[:5], y[:5], X=torch.ones(6, 4, dtype=DT), y=y[:6])
    with pytest.raises(ValueError, match=r"X_val has rows of shape \(2,\)"):
        s.fit(X, y, X_val=X[:5, :2], y_val=y[:5])


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["X", "y", "X_test", "y_test"])
def test_nan_and_inf_are_refused(regression, where, value):
    net, X, y = regression
    X, y = X.clone(), y.clone()
    data = {"X": X, "y": y, "X_test": X[:5].clone(), "y_test": y[:5].clone()}
    data[where][3, 0] = value
    s = _scorer(net)
    with pytest.raises(ValueError, match=rf"{where} contains NaN or infinity \(1 entries; the "
                                         r"first in row 3\)"):
        s.fit(data["X"], data["y"]).influences(data["X_test"], data["y_test"])


@pytest.mark.parametrize("params, match", [
    ({"regularization": float("nan")}, r"'regularization' parameter of InfluenceScorer must "
                                       r"be a float in the range \[0.0, inf\)\. Got nan"),
    ({"regularization": 0.0, "method": "cg"}, r"must be > 0 for method='cg'\. Got 0.0"),
    ({"batch_size": 0}, r"'batch_size' parameter of InfluenceScorer must be an int in the "
                        r"range \[1, inf\)\. Got 0"),
    ({"compute_values": "yes"}, r"'compute_values' parameter of InfluenceScorer must be an "
                                r"instance of 'bool'"),
    ({"chunk_size": (3,)}, r"'chunk_size' parameter of InfluenceScorer must be an int >= 1 or "
                           r"a pair of them .*Got \(3,\)"),
    ({"method": CG(maxiter=0)}, r"'maxiter' parameter of CG must be an int in the range "
                                r"\[1, inf\)\. Got 0"),
    ({"method": CG(rtol=0.0)}, r"'rtol' parameter of CG must be a float in the range "
                               r"\(0.0, 1.0\)\. Got 0.0"),
    ({"method": CG(preconditioner="ilu")}, r"'preconditioner' parameter of CG must be a str "
                                           r"among"),
    ({"method": LiSSA(scale=-1.0)}, r"'scale' parameter of LiSSA must be"),
    ({"method": Arnoldi(rank=0)}, r"'rank' parameter of Arnoldi must be an int in the range"),
    ({"method": "newton"}, r"'method' parameter of InfluenceScorer must be a str among"),
])
def test_parameters_outside_their_domain_are_refused(regression, params, match):
    net, X, y = regression
    with pytest.raises(ValueError, match=match):
        InfluenceScorer(net, loss=torch.nn.MSELoss(), **params).fit(X, y)


def _cauchy(out, target):
    return torch.log1p((out - target) ** 2).mean()


def test_gauss_newton_refuses_a_loss_not_convex_in_the_output(regression):
    net, X, y = regression
    y = y * 5  # residuals beyond 1, where log(1 + r^2) is concave
    with pytest.raises(ValueError, match=r"second_order='gauss_newton' needs a loss that is "
                                         r"convex in the model output; on training row \d+ "
                                         r"the Hessian .* eigenvalue -"):
        InfluenceScorer(net, loss=_cauchy, method="direct").fit(X, y)
    InfluenceScorer(net, loss=_cauchy, method="direct", second_order="hessian",
                    regularization=10.0).fit(X, y)
