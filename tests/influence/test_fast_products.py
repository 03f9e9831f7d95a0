"""The hand-written MLP products against torch.func, and the deflated definiteness check.

Oracles: the generic ``torch.func`` path of ``FlatModel`` (``fast=False``) for the
products and gradients, explicit matrices with a known spectrum for the check.
"""

import numpy as np
import pytest
import torch
from torch import nn

from skdvl.influence import InfluenceScorer, NotPositiveDefiniteError, Nystroem, _mlp
from skdvl.influence._functional import CurvatureOperator, FlatModel
from skdvl.influence._solvers import (
    _CHECK_STEPS,
    NystroemSolver,
    check_positive_definite,
    nystroem_sketch,
    smallest_eigenvalue,
)
from tests.influence.oracles import DenseOperator, indefinite_mlp

DT = torch.float64
ACTIVATIONS = [nn.Tanh, nn.ReLU, nn.Sigmoid, nn.GELU, nn.Softplus, nn.ELU, nn.SiLU,
               nn.LeakyReLU]


def _net(act, bias, widths=(4, 7, 5, 3), seed=0):
    g = torch.Generator().manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b, bias=bias or i == len(widths) - 2))
        if i < len(widths) - 2:
            layers.append(act())
    net = nn.Sequential(*layers).to(DT)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=DT))
    return net


def _data(loss, n=37, seed=1):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=g, dtype=DT)
    if isinstance(loss, nn.CrossEntropyLoss):
        return X, torch.randint(0, 3, (n,), generator=g)
    return X, torch.randn(n, 3, generator=g, dtype=DT)


LOSSES = [nn.CrossEntropyLoss(), nn.MSELoss(), nn.MSELoss(reduction="sum"),
          nn.CrossEntropyLoss(reduction="sum")]


# Every activation (with and without bias, alternating losses), and every loss with tanh.
CASES = ([(act, i % 2 == 0, LOSSES[i % len(LOSSES)]) for i, act in enumerate(ACTIVATIONS)]
         + [(nn.Tanh, bias, loss) for loss in LOSSES for bias in (True, False)])


@pytest.mark.parametrize(("act", "bias", "loss"), CASES,
                         ids=[f"{a.__name__}-{b}-{f!r}" for a, b, f in CASES])
@pytest.mark.parametrize("second_order", ["hessian", "gauss_newton"])
def test_products_and_gradients_equal_torch_func(act, bias, loss, second_order):
    net = _net(act, bias)
    X, y = _data(loss)
    generic = FlatModel(net, loss, second_order)
    fast = FlatModel(net, loss, second_order, fast=True)
    assert generic.chain is None and fast.chain is not None
    for model in (generic, fast):
        model.check_reduction(X, y)
    # The curvature (every column: the products with the identity), two batch sizes.
    for batch_size in (8, 64):
        expected = CurvatureOperator(generic, X, y, batch_size).dense()
        got = CurvatureOperator(fast, X, y, batch_size).dense()
        scale = float(expected.abs().max())
        assert float((got - expected).abs().max()) <= 1e-10 * scale
    # Mini-batch products (LiSSA's) and per-sample gradients.
    V = torch.randn(5, generic.n_params, generator=torch.Generator().manual_seed(2), dtype=DT)
    op_g, op_f = CurvatureOperator(generic, X, y, 16), CurvatureOperator(fast, X, y, 16)
    for b in range(len(op_g.batches)):
        e = op_g.matmat(V, batch=b)
        assert float((op_f.matmat(V, batch=b) - e).abs().max()) <= 1e-10 * float(e.abs().max())
    G = generic.per_sample_grads(X, y)
    assert float((fast.per_sample_grads(X, y) - G).abs().max()) <= 1e-10 * float(G.abs().max())


def test_chunking_of_rows_and_tangents_changes_nothing(monkeypatch):
    net = _net(nn.Tanh, True, widths=(4, 30, 3))
    loss = nn.CrossEntropyLoss()
    X, y = _data(loss, n=50)
    model = FlatModel(net, loss, "hessian", fast=True)
    V = torch.randn(9, model.n_params, generator=torch.Generator().manual_seed(3), dtype=DT)
    whole = CurvatureOperator(model, X, y, 256).matmat(V)
    # 8 * 30 * 8 bytes: one tangent of 8 rows per call.
    monkeypatch.setattr(_mlp, "_MAX_BYTES", 8 * 30 * 8)
    chunked = CurvatureOperator(model, X, y, 256).matmat(V)
    assert float((chunked - whole).abs().max()) <= 1e-12 * float(whole.abs().max())


class _Scaled(nn.Module):
    def forward(self, x):
        return 2 * x


@pytest.mark.parametrize("case", ["conv", "frozen", "custom_layer", "loss", "subclass",
                                  "hook", "dropout"])
def test_anything_else_takes_the_generic_path(case):
    net, loss = _net(nn.Tanh, True), nn.CrossEntropyLoss()
    if case == "conv":
        net = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(4, 3))
    elif case == "frozen":
        net[0].weight.requires_grad_(False)
    elif case == "custom_layer":
        net = nn.Sequential(net[0], _Scaled(), net[2])
    elif case == "loss":
        def loss(o, t):
            return nn.functional.cross_entropy(o, t) + o.pow(2).mean()
    elif case == "subclass":
        class MyTanh(nn.Tanh):
            def forward(self, x):
                return super().forward(x) * 2

        net[1] = MyTanh()
    elif case == "hook":
        net[1].register_forward_hook(lambda m, i, o: o * 2)
    elif case == "dropout":
        net = nn.Sequential(net[0], nn.Dropout(0.5), net[2])
    model = FlatModel(net, loss, fast=True)
    names = [k for k, v in net.named_parameters() if v.requires_grad]
    assert model.chain is None and _mlp.mlp_chain(net, names, loss) is None


def test_a_bare_linear_layer_and_three_dimensional_inputs():
    lin = nn.Linear(4, 3).to(DT)
    loss = nn.MSELoss()
    X, y = _data(loss)
    fast, generic = FlatModel(lin, loss, fast=True), FlatModel(lin, loss)
    assert fast.chain is not None
    e = CurvatureOperator(generic, X, y, 16).dense()
    assert float((CurvatureOperator(fast, X, y, 16).dense() - e).abs().max()) <= 1e-12
    # Inputs of another rank: generic path, same values.
    X3, y3 = X.reshape(37, 1, 4), y.reshape(37, 1, 3)
    assert not fast._fast(X3)
    torch.testing.assert_close(fast.per_sample_grads(X3, y3), generic.per_sample_grads(X3, y3))


@pytest.mark.parametrize("method", ["direct", "cg", "lissa", "arnoldi", "nystroem", "ekfac",
                                    "datainf"])
def test_scorer_influences_equal_the_generic_path(method, monkeypatch, method_of):
    # Regularization as the scorer applies it (lambda I added in the solvers).
    net, loss = _net(nn.Tanh, True, widths=(4, 6, 3)), nn.CrossEntropyLoss()
    X, y = _data(loss, n=40)
    kw = dict(loss=loss, method=method_of(method, rank=10, maxiter=300, rtol=1e-10),
              regularization=0.5, second_order="gauss_newton", random_state=0,
              compute_values=True)
    fast = InfluenceScorer(net, **kw).fit(X, y)
    assert fast.flat_.chain is not None
    got, got_values = fast.influences(X[:6], y[:6]), fast.values_
    original = FlatModel.__init__

    def generic_init(self, module, loss, second_order="hessian", fast=False):
        original(self, module, loss, second_order, fast=False)

    monkeypatch.setattr(FlatModel, "__init__", generic_init)
    slow = InfluenceScorer(net, **kw).fit(X, y)
    assert slow.flat_.chain is None
    expected = slow.influences(X[:6], y[:6])
    tol = 1e-5 if method == "lissa" else 1e-9  # LiSSA stops on noisy window means
    np.testing.assert_allclose(got, expected, rtol=0, atol=tol * np.abs(expected).max())
    np.testing.assert_allclose(got_values, slow.values_, rtol=0,
                               atol=tol * np.abs(slow.values_).max())


# ------------------------------------------------------- the deflated definiteness check
def _spectrum_matrix(lam, seed=0):
    Q = torch.linalg.qr(torch.randn(len(lam), len(lam), dtype=DT,
                                    generator=torch.Generator().manual_seed(seed))).Q
    return (Q * lam) @ Q.T


def _decaying(p=400, lam_min=1e-4, seed=0):
    """A Hessian-like spectrum: 20 large eigenvalues, a bulk near zero, and ``lam_min``."""
    lam = torch.cat([torch.linspace(0.05, 0.35, 20, dtype=DT),
                     0.01 * torch.logspace(0, -3, p - 20, dtype=DT)])
    lam[-1] = lam_min
    return _spectrum_matrix(lam[torch.randperm(p, generator=torch.Generator().manual_seed(seed))],
                            seed)


def test_the_deflated_check_certifies_in_fewer_products():
    reg = 1e-2
    C = _decaying()
    plain, deflated = DenseOperator(C), DenseOperator(C)
    check_positive_definite(plain, reg, "nystroem", torch.Generator().manual_seed(0))
    U, lam = nystroem_sketch(deflated, 30, torch.Generator().manual_seed(1))
    deflated.n_products = 0
    check_positive_definite(deflated, reg, "nystroem", torch.Generator().manual_seed(0),
                            deflate=(U, lam))
    assert plain.n_products == _CHECK_STEPS  # not certified: ran all the steps
    assert deflated.n_products <= 30


@pytest.mark.parametrize("lam_min", [-0.011, -0.02, -0.1])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_deflated_check_still_refuses_an_indefinite_matrix(lam_min, seed):
    # One eigenvalue below -regularization: in the bulk (-0.011, -0.02: the sketch cannot
    # see it, the Lanczos check on the deflated matrix must), or larger in magnitude than
    # the bulk (-0.1: the sketch sees it).
    reg = 1e-2
    op = DenseOperator(_decaying(lam_min=lam_min, seed=seed))
    solver = NystroemSolver(reg, rank=30)
    how = "Nystrom sketch" if lam_min == -0.1 else f"{_CHECK_STEPS} Lanczos steps"
    with pytest.raises(NotPositiveDefiniteError, match=rf"definite \({how}: smallest "
                                                      r"eigenvalue of the curvature -\d"):
        solver.fit(op, torch.Generator().manual_seed(seed))
    # The eigenvalue the message names is the plain check's, close to the true one.
    if lam_min != -0.1:
        lam, _ = smallest_eigenvalue(op, torch.Generator().manual_seed(seed))
        assert lam_min - 1e-12 <= lam < -reg


@pytest.mark.parametrize("lam_min", [-0.015, -0.5])
def test_a_large_negative_eigenvalue_is_refused_by_sketch_or_check(lam_min):
    lam = torch.linspace(0.001, 0.3, 200, dtype=DT)
    lam[0] = lam_min
    op = DenseOperator(_spectrum_matrix(lam))
    with pytest.raises(NotPositiveDefiniteError, match="not positive definite"):
        NystroemSolver(1e-2, rank=20).fit(op, torch.Generator().manual_seed(0))


def test_early_stopping_is_never_below_the_minimum_and_needs_a_margin():
    reg = 1e-2
    op = DenseOperator(_decaying(lam_min=-0.009))  # lambda + reg > 0 but margin < 3/4 reg
    _, n_steps = smallest_eigenvalue(op, torch.Generator().manual_seed(0), certify=reg)
    assert n_steps == _CHECK_STEPS
    op = DenseOperator(torch.eye(300, dtype=DT))
    _, n_steps = smallest_eigenvalue(op, torch.Generator().manual_seed(0), certify=reg)
    assert n_steps == 1  # an invariant subspace ends Lanczos at once


def test_nystroem_scorer_on_the_indefinite_trained_mlp_is_refused():
    net, X, y = indefinite_mlp()
    for rank in (5, 10, 40):
        s = InfluenceScorer(net, loss=nn.CrossEntropyLoss(), method=Nystroem(rank=rank),
                            second_order="hessian", regularization=1e-3, random_state=0)
        with pytest.raises(NotPositiveDefiniteError):
            s.fit(X, y)


@pytest.mark.parametrize(("loss", "target", "structure"), [
    (nn.CrossEntropyLoss(), "classes", "softmax"),
    (nn.CrossEntropyLoss(label_smoothing=0.1), "classes", "softmax"),
    (nn.CrossEntropyLoss(), "probabilities", "softmax"),
    (nn.CrossEntropyLoss(), "twice_probabilities", "general"),  # H = 2 (diag p - p p^T)
    (nn.MSELoss(), "values", "diagonal"),
    (nn.BCEWithLogitsLoss(), "probabilities", "diagonal"),
    (nn.HuberLoss(delta=0.5), "values", "diagonal"),
])
def test_output_hessian_structures_give_the_same_products(loss, target, structure):
    net = _net(nn.Tanh, True)
    X, _ = _data(nn.MSELoss())
    g = torch.Generator().manual_seed(5)
    y = {"classes": lambda: torch.randint(0, 3, (37,), generator=g),
         "probabilities": lambda: torch.softmax(torch.randn(37, 3, generator=g, dtype=DT), 1),
         "twice_probabilities": lambda: 2 * torch.softmax(
             torch.randn(37, 3, generator=g, dtype=DT), 1),
         "values": lambda: torch.randn(37, 3, generator=g, dtype=DT)}[target]()
    fast = FlatModel(net, loss, "hessian", fast=True)
    assert fast.linearize(X, y).structure[0] == structure
    expected = CurvatureOperator(FlatModel(net, loss, "hessian"), X, y, 64).dense()
    got = CurvatureOperator(fast, X, y, 64).dense()
    assert float((got - expected).abs().max()) <= 1e-10 * float(expected.abs().max())


def test_a_skorch_net_with_its_own_get_loss_takes_the_generic_path():
    skorch = pytest.importorskip("skorch")
    from skdvl.influence._skorch import resolve_model

    class Penalised(skorch.NeuralNetClassifier):
        def get_loss(self, y_pred, y_true, *args, **kwargs):
            return super().get_loss(y_pred, y_true) + y_pred.pow(2).mean()

    X = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    y = np.arange(30) % 3
    for cls, fast in ((skorch.NeuralNetClassifier, True), (Penalised, False)):
        net = cls(nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)),
                  criterion=nn.CrossEntropyLoss, max_epochs=1, train_split=None,
                  verbose=0).fit(X, y)
        module, loss, _ = resolve_model(net, None)
        names = [k for k, _ in module.named_parameters()]
        assert (_mlp.mlp_chain(module, names, loss) is not None) == fast
