"""skorch nets as the valued model: seeded per coalition, exact fast refits, n_jobs invariance."""

import hashlib
import subprocess
import sys

import numpy as np
import pytest
from joblib import parallel_config
from sklearn.base import clone
from sklearn.metrics import get_scorer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skdvl import BanzhafValuer, LOOValuer, ModelUtility, ShapleyValuer

torch = pytest.importorskip("torch")
skorch = pytest.importorskip("skorch")

from skdvl.utility._torch_refit import (  # noqa: E402
    _fast_fit,
    fast_refit_reason,
    torch_fit_context,
)


class MLP(torch.nn.Module):
    """A tiny classifier; records the torch thread count seen in forward."""

    threads: list[int] = []

    def __init__(self, d=4, h=6, k=2, p=0.0):
        super().__init__()
        self.l1, self.l2 = torch.nn.Linear(d, h), torch.nn.Linear(h, k)
        self.drop = torch.nn.Dropout(p)

    def forward(self, X):
        MLP.threads.append(torch.get_num_threads())
        return torch.softmax(self.l2(self.drop(torch.relu(self.l1(X)))), dim=-1)


class Linear1(torch.nn.Module):
    """A regression (or binary logit) head with output of shape (n,)."""

    def __init__(self, d=4):
        super().__init__()
        self.l = torch.nn.Linear(d, 1)

    def forward(self, X):
        return self.l(X).squeeze(-1)


def _net(**params):
    kw = dict(max_epochs=4, lr=0.2, train_split=None, verbose=0)
    return skorch.NeuralNetClassifier(MLP, **{**kw, **params})


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(24, 4)).astype(np.float32)
    y = (X[:, 0] + 0.5 * rng.normal(size=24) > 0).astype(np.int64)
    y[:2], y[12:14] = 0, 1  # both classes in each half whatever the draw
    return X[:12], y[:12], X[12:], y[12:]


def _equal_modules(a, b):
    sa, sb = a.module_.state_dict(), b.module_.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("make", [
    lambda: _net(),
    lambda: _net(module__p=0.3, iterator_train__shuffle=True, batch_size=5),
    lambda: _net(optimizer=torch.optim.Adam, lr=0.05, batch_size=-1, module__p=0.2),
    lambda: skorch.NeuralNetRegressor(Linear1, max_epochs=4, lr=0.1, train_split=None,
                                      verbose=0, batch_size=3),
    lambda: skorch.NeuralNetBinaryClassifier(Linear1, max_epochs=4, lr=0.1,
                                             train_split=None, verbose=0, batch_size=4),
], ids=["default", "dropout-shuffle-partial-batch", "adam-full-batch", "regressor", "binary"])
def test_fast_refit_equals_skorch_fit_bitwise(make, data):
    X, y = data[0], data[1]
    net = make()
    if isinstance(net, skorch.NeuralNetRegressor):
        y = X[:, 0].copy()
    elif isinstance(net, skorch.NeuralNetBinaryClassifier):
        y = y.astype(np.float32)
    assert fast_refit_reason(net) == ""
    for k, seed in [(12, 0), (7, 1), (5, 2**62)]:
        rows = np.random.default_rng(k).permutation(12)[:k]
        with torch_fit_context(seed):
            fast = _fast_fit(clone(net), X[rows], y[rows])
            torch.manual_seed(seed)
            ref = clone(net).fit(X[rows], y[rows])
        assert _equal_modules(fast, ref)
        np.testing.assert_array_equal(fast.predict(X), ref.predict(X))


def test_values_identical_for_any_n_jobs_and_backend(data):
    X, y, Xv, yv = data
    net = _net(module__p=0.2, iterator_train__shuffle=True, batch_size=4)
    kw = dict(scoring="neg_log_loss", max_updates=3, random_state=3)
    ref = ShapleyValuer(net, n_jobs=1, **kw).fit(X, y, X_val=Xv, y_val=yv)
    assert ref.n_utility_evaluations_ > 12
    assert "fast refit" in ref.fit_path_
    par = ShapleyValuer(net, n_jobs=2, **kw).fit(X, y, X_val=Xv, y_val=yv)
    np.testing.assert_array_equal(par.values_, ref.values_)
    with parallel_config(backend="threading"):
        thr = ShapleyValuer(net, n_jobs=2, **kw).fit(X, y, X_val=Xv, y_val=yv)
    np.testing.assert_array_equal(thr.values_, ref.values_)
    other = ShapleyValuer(net, n_jobs=1, **{**kw, "random_state": 4}).fit(
        X, y, X_val=Xv, y_val=yv)
    assert not np.array_equal(other.values_, ref.values_)


def test_banzhaf_values_identical_for_any_n_jobs(data):
    X, y, Xv, yv = data
    kw = dict(scoring="neg_log_loss", max_updates=60, random_state=0)
    ref = BanzhafValuer(_net(), n_jobs=1, **kw).fit(X, y, X_val=Xv, y_val=yv)
    par = BanzhafValuer(_net(), n_jobs=2, **kw).fit(X, y, X_val=Xv, y_val=yv)
    np.testing.assert_array_equal(par.values_, ref.values_)
    assert np.isfinite(ref.values_).all()


def _seed(base, mask):
    """The torch seed of a coalition, as ModelUtility's docstring states it."""
    digest = hashlib.blake2b(np.packbits(mask).tobytes(), digest_size=8,
                             key=int(base).to_bytes(8, "little")).digest()
    return int.from_bytes(digest, "little") >> 1


def test_loo_equals_hand_written_leave_one_out_loop(data):
    X, y, Xv, yv = data
    net = _net(module__p=0.2, iterator_train__shuffle=True, batch_size=5)
    got = LOOValuer(net, scoring="neg_log_loss").fit(X, y, X_val=Xv, y_val=yv).values_
    # LOOValuer has no random_state: the base seed comes from random_state=0
    base = np.random.RandomState(0).randint(np.iinfo(np.int32).max)
    scorer = get_scorer("neg_log_loss")

    def utility(mask):
        threads = torch.get_num_threads()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_seed(base, mask))
            torch.set_num_threads(1)
            model = clone(net).fit(X[mask], y[mask])  # skorch's own fit
            score = scorer(model, Xv, yv)
        torch.set_num_threads(threads)
        return score

    n = X.shape[0]
    full = utility(np.ones(n, dtype=bool))
    expected = [full - utility(np.arange(n) != i) for i in range(n)]
    np.testing.assert_array_equal(got, expected)
    assert np.count_nonzero(got) > n // 2  # a real oracle: the values are not all 0


def test_global_torch_state_and_threads_unchanged(data):
    X, y, Xv, yv = data
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(123)
        state = torch.get_rng_state()
        MLP.threads.clear()
        BanzhafValuer(_net(module__p=0.2), max_updates=10, random_state=0).fit(
            X, y, X_val=Xv, y_val=yv)
        assert torch.equal(torch.get_rng_state(), state)
        assert torch.get_num_threads() == 2
        # outside the engine's threadpool limits, the utility caps torch itself
        MLP.threads.clear()
        ModelUtility(_net(), X, y, Xv, yv, random_state=0)(np.arange(12))
        assert MLP.threads and set(MLP.threads) == {1}
        assert torch.get_num_threads() == 2
        assert torch.equal(torch.get_rng_state(), state)
    finally:
        torch.set_num_threads(threads)


def test_utility_is_a_function_of_the_coalition(data):
    X, y, Xv, yv = data
    u = ModelUtility(_net(module__p=0.3), X, y, Xv, yv, scoring="neg_log_loss",
                     random_state=5)
    first = [u(np.arange(k)) for k in (6, 9, 12)]
    u._cache.clear()
    assert [u(np.arange(k)[::-1]) for k in (12, 9, 6)] == first[::-1]
    v = ModelUtility(_net(module__p=0.3), X, y, Xv, yv, scoring="neg_log_loss",
                     random_state=6)
    assert v(np.arange(12)) != first[-1]


@pytest.mark.parametrize("net, reason", [
    (lambda: _net(callbacks=[skorch.callbacks.LRScheduler()]), "callbacks"),
    (lambda: _net(iterator_train__drop_last=True), "iterator_train__drop_last"),
    (lambda: make_pipeline(StandardScaler(), _net()), "not a bare skorch net"),
])
def test_other_nets_take_skorchs_fit_seeded(net, reason, data):
    X, y, Xv, yv = data
    u = ModelUtility(net(), X, y, Xv, yv, scoring="neg_log_loss", random_state=0)
    assert reason in u.fit_path and "skorch's own fit" in u.fit_path
    a = u(np.arange(10))
    u._cache.clear()
    assert u(np.arange(10)) == a
    assert u._torch.fast is False


def test_a_fast_refit_that_differs_switches_to_skorchs_fit(data, monkeypatch):
    import skdvl.utility._torch_refit as tf

    X, y, Xv, yv = data
    reference = ModelUtility(_net(), X, y, Xv, yv, scoring="neg_log_loss", random_state=0)
    reference._torch.fast = False  # skorch's fit throughout
    expected = [reference(np.arange(k)) for k in (8, 10, 12)]

    def wrong(net, X, y):
        return _fast_fit(net.set_params(max_epochs=net.max_epochs + 1), X, y)

    monkeypatch.setattr(tf, "_fast_fit", wrong)
    u = ModelUtility(_net(), X, y, Xv, yv, scoring="neg_log_loss", random_state=0)
    assert [u(np.arange(k)) for k in (8, 10, 12)] == expected
    assert u._torch.fast is False


def test_net_with_train_split_is_refused(data):
    X, y, Xv, yv = data
    net = skorch.NeuralNetClassifier(MLP, max_epochs=2, verbose=0)  # ValidSplit(5)
    with pytest.raises(ValueError, match=r"train_split=<skorch.dataset.ValidSplit.*"
                                         r"Set train_split=None"):
        ShapleyValuer(net, max_updates=2).fit(X, y, X_val=Xv, y_val=yv)


def test_bad_random_state_is_refused(data):
    X, y, Xv, yv = data
    with pytest.raises(ValueError, match="'random_state' parameter of ModelUtility must be "
                                         "an int.*Got 'zero' instead"):
        ModelUtility(_net(), X, y, Xv, yv, random_state="zero")


def test_skdvl_imports_without_torch():
    block = ("import sys\n"
             "class Block:\n"
             "    def find_spec(self, name, path=None, target=None):\n"
             "        if name.split('.')[0] in ('torch', 'skorch'):\n"
             "            raise ImportError(name)\n"
             "sys.meta_path.insert(0, Block())\n")
    code = (block + "import skdvl, skdvl.utility._torch_refit, skdvl.utility; "
            "from sklearn.linear_model import LogisticRegression; import numpy as np; "
            "u = skdvl.ModelUtility(LogisticRegression(), np.eye(4), [0, 1, 0, 1], "
            "np.eye(4), [0, 1, 0, 1]); print(u._torch, u([0, 1]), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "None" and out.stdout.split()[-1] == "False"


def test_classwise_values_of_a_net_identical_for_any_n_jobs(data):
    """The class-wise utility seeds a net's fits per coalition too (its own utility class)."""
    from skdvl import ClasswiseShapleyValuer

    X, y, X_val, y_val = data
    kw = dict(max_updates=2, random_state=3)
    one = ClasswiseShapleyValuer(_net(), n_jobs=1, **kw).fit(X, y, X_val=X_val, y_val=y_val)
    two = ClasswiseShapleyValuer(_net(), n_jobs=2, **kw).fit(X, y, X_val=X_val, y_val=y_val)
    again = ClasswiseShapleyValuer(_net(), n_jobs=1, **kw).fit(X, y, X_val=X_val, y_val=y_val)
    assert "skorch nets seeded per coalition" in one.fit_path_
    np.testing.assert_array_equal(one.values_, two.values_)
    np.testing.assert_array_equal(one.values_, again.values_)
