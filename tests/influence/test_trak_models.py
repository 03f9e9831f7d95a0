"""TRAK's trained ensemble (n_models) and TracIn's in-run checkpoints of a skorch net."""

import numpy as np
import pytest
import torch
from sklearn.base import clone

from skdvl.influence import TRAK, GradientSimilarity, InfluenceScorer, TracIn
from skdvl.influence._trak import ProjectedAttribution

skorch = pytest.importorskip("skorch")
CE = torch.nn.CrossEntropyLoss()


def _data(seed, n=40):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64)
    return X, y


def _module():
    return torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2))


def _net(seed, **kw):
    X, y = _data(seed)
    options = dict(criterion=torch.nn.CrossEntropyLoss, max_epochs=4, lr=0.2, batch_size=16,
                   train_split=None, verbose=0)
    options.update(kw)
    net = skorch.NeuralNetClassifier(_module, **options)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net.fit(X, y)
    return net, X, y


def _states_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------ TRAK(n_models)
def test_trained_copies_are_deterministic_for_a_random_state(seed):
    net, X, y = _net(seed)
    before = torch.random.get_rng_state()
    fits = [InfluenceScorer(net, method=TRAK(proj_dim=16, n_models=3), random_state=rs,
                            compute_values=False).fit(X, y) for rs in (0, 0, 1)]
    assert torch.equal(torch.random.get_rng_state(), before)  # the global stream untouched
    a, b, c = (f.solver_ for f in fits)
    assert a.n_models_ == 3 and len(a.trained_models_) == 2
    for s, t in zip(a.trained_models_, b.trained_models_):
        assert _states_equal(s, t)
    np.testing.assert_array_equal(fits[0].influences(X[:5], y[:5]),
                                  fits[1].influences(X[:5], y[:5]))
    assert not torch.equal(a.trained_models_[0]["0.weight"], c.trained_models_[0]["0.weight"])
    assert not torch.equal(a.trained_models_[0]["0.weight"], a.trained_models_[1]["0.weight"])


def test_copies_are_clones_of_the_net_refitted_under_their_seeds(seed):
    net, X, y = _net(seed)
    trak = ProjectedAttribution(net, proj_dim=16, n_models=3, random_state=0).fit(X, y)
    assert len(trak.train_seeds_) == 2
    for state, train_seed in zip(trak.trained_models_, trak.train_seeds_):
        copy = clone(net)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(train_seed))
            copy.fit(X, y)
        assert _states_equal(state, copy.module_.state_dict())
        assert not torch.equal(state["0.weight"], net.module_.state_dict()["0.weight"])
    # model 0 is the net given; the ensemble equals TRAK on the same models supplied,
    # with the same projections (the projection seeds do not depend on the training)
    states = [net.module_.state_dict(), *trak.trained_models_]
    given = ProjectedAttribution(net.module_, loss=CE, proj_dim=16, models=states,
                                 random_state=0).fit(X, y)
    np.testing.assert_array_equal(trak.seeds_, given.seeds_)
    np.testing.assert_allclose(trak.influences(X[:6], y[:6]), given.influences(X[:6], y[:6]),
                               rtol=1e-12, atol=0)


def test_store_keeps_the_trained_models(tmp_path, seed, monkeypatch):
    pytest.importorskip("zarr")
    net, X, y = _net(seed)
    path = tmp_path / "g.zarr"
    fitted = InfluenceScorer(net, method=TRAK(proj_dim=16, n_models=2, store=path),
                             random_state=0, compute_values=False).fit(X, y)
    expected = fitted.influences(X[:4], y[:4])

    def no_training(*args, **kwargs):
        raise AssertionError("the copies were trained again")

    monkeypatch.setattr("skdvl.influence._trak.train_copies", no_training)
    for data in ((X, y), (None, None)):  # refit on the complete store; reopen without data
        again = InfluenceScorer(net, method=TRAK(proj_dim=16, n_models=2, store=path),
                                random_state=0, compute_values=False).fit(*data)
        assert _states_equal(again.solver_.trained_models_[0],
                             fitted.solver_.trained_models_[0])
        np.testing.assert_array_equal(again.influences(X[:4], y[:4]), expected)
    with pytest.raises(ValueError, match="other parameters, model or data"):
        InfluenceScorer(net, method=TRAK(proj_dim=16, n_models=2, store=path),
                        random_state=1, compute_values=False).fit()


def test_n_models_errors_name_the_problem(seed):
    net, X, y = _net(seed)
    with pytest.raises(ValueError, match="needs a fitted skorch net; got a Sequential"):
        ProjectedAttribution(net.module_, loss=CE, proj_dim=8, n_models=2).fit(X, y)
    state = net.module_.state_dict()
    with pytest.raises(ValueError, match=r"'n_models' parameter .* \(3\) must be None or "
                                         r"len\(models\) \(2\)"):
        ProjectedAttribution(net, proj_dim=8, models=[state, state], n_models=3).fit(X, y)
    with pytest.raises(ValueError, match="checkpoints of one training run"):
        ProjectedAttribution(net, method="tracin", proj_dim=8, n_models=2).fit(X, y)
    one = ProjectedAttribution(net, proj_dim=8, n_models=1, random_state=0).fit(X, y)
    default = ProjectedAttribution(net, proj_dim=8, random_state=0).fit(X, y)
    np.testing.assert_array_equal(one.influences(X[:3], y[:3]), default.influences(X[:3], y[:3]))


# ------------------------------------------------------------ TracIn, in-run
def _per_example_gradients(module, state, X, y):
    module.load_state_dict(state)
    rows = []
    for x, t in zip(torch.as_tensor(X), torch.as_tensor(y)):
        module.zero_grad()
        CE(module(x[None]), t[None]).backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in module.parameters()]))
    return torch.stack(rows).to(torch.float64).numpy()


def test_recorder_keeps_the_states_and_step_sizes_of_training(seed):
    from skdvl.influence import CheckpointRecorder

    rec = CheckpointRecorder()
    scheduler = skorch.callbacks.LRScheduler(torch.optim.lr_scheduler.StepLR, step_size=1,
                                             gamma=0.5)
    net, X, y = _net(seed, max_epochs=3, callbacks=[scheduler, rec])
    assert rec.epochs_ == [1, 2, 3]
    np.testing.assert_allclose(rec.learning_rates_, [0.2, 0.1, 0.05], rtol=1e-12)
    assert _states_equal(rec.checkpoints_[-1], net.module_.state_dict())
    assert clone(net).callbacks[1].get_params() == {"every": 1}  # clones like a callback
    first, _, _ = _net(seed, max_epochs=1)  # same seed: the same first epoch
    assert _states_equal(rec.checkpoints_[0], first.module_.state_dict())
    sparse = CheckpointRecorder(every=2)
    _net(seed, max_epochs=5, callbacks=[sparse])
    assert sparse.epochs_ == [2, 4] and sparse.learning_rates_ == [0.2, 0.2]
    with pytest.raises(ValueError, match="'every' parameter of CheckpointRecorder must be an "
                                         "int >= 1. Got 0 instead"):
        _net(seed, callbacks=[CheckpointRecorder(every=0)])


def test_tracin_from_recorded_checkpoints_is_the_weighted_gradient_dot_sum(seed):
    from skdvl.influence import CheckpointRecorder

    rec = CheckpointRecorder()
    net, X, y = _net(seed, max_epochs=3, callbacks=[
        skorch.callbacks.LRScheduler(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5),
        rec])
    method = TracIn(proj_dim=None, checkpoints=rec.checkpoints_,
                    learning_rates=rec.learning_rates_)
    scores = InfluenceScorer(net, method=method, compute_values=False).fit(X, y).influences(
        X[:6], y[:6])
    module = _module()
    expected = np.zeros((6, len(X)))
    for state, lr in zip(rec.checkpoints_, rec.learning_rates_):
        G = _per_example_gradients(module, state, X, y)
        expected -= lr * G[:6] @ G.T
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("proj_dim", [None, 32])
def test_tracin_with_one_recorded_checkpoint_is_the_gradient_dot_product(seed, proj_dim):
    from skdvl.influence import CheckpointRecorder

    rec = CheckpointRecorder()
    net, X, y = _net(seed, max_epochs=1, callbacks=[rec])
    kw = dict(compute_values=False, random_state=3)
    tracin = InfluenceScorer(net, method=TracIn(proj_dim=proj_dim,
                                                checkpoints=rec.checkpoints_,
                                                learning_rates=rec.learning_rates_), **kw)
    dot = InfluenceScorer(net, method=GradientSimilarity(kind="dot", proj_dim=proj_dim), **kw)
    np.testing.assert_allclose(tracin.fit(X, y).influences(X[:5], y[:5]),
                               0.2 * dot.fit(X, y).influences(X[:5], y[:5]),
                               rtol=1e-6, atol=1e-10)
