"""Shared fixtures of the influence tests (skipped when torch is missing)."""

import pytest

torch = pytest.importorskip("torch")

from tests.influence import oracles  # noqa: E402 (after the torch check)

# pytest -n 2 runs two workers on two cores: torch's default of one thread per core
# oversubscribes them, and its spinning threads then slow the small problems here by up to
# 50x. One thread per worker.
torch.set_num_threads(1)


@pytest.fixture
def seed():
    return 20240517


@pytest.fixture
def linreg(seed):
    g = torch.Generator().manual_seed(seed)
    n, d = 40, 5
    X = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.linspace(0.3, 3, d,
                                                                             dtype=torch.float64)
    y = torch.randn(n, 1, generator=g, dtype=torch.float64)
    module = torch.nn.Linear(d, 1, dtype=torch.float64)
    with torch.no_grad():
        module.weight.copy_(torch.randn(1, d, generator=g, dtype=torch.float64))
    return module, X, y


def _method_of(name, **options):
    from skdvl.influence._options import METHODS

    cls = METHODS[name]
    accepted = cls().get_params()
    return cls(**{k: v for k, v in options.items() if k in accepted and v is not None})


@pytest.fixture
def method_of():
    """``method_of(name, **options)``: the option object of method ``name`` with those of
    ``options`` that it takes (``rank`` goes to the methods that have a rank, ``maxiter``
    to the iterative ones, ...), so that one test can build several methods alike."""
    return _method_of


# the small tanh nets of the projected-curvature tests, a classifier and a regressor

@pytest.fixture(params=["classifier", "regressor"])
def problem(request, seed):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(30, 4, generator=g, dtype=torch.float64)
    if request.param == "classifier":
        return oracles.tanh_net(seed, 3), oracles.CE, X, torch.randint(0, 3, (30,),
                                                                       generator=g)
    return oracles.tanh_net(seed, 1), oracles.MSE, X, torch.randn(30, 1, generator=g,
                                                                  dtype=torch.float64)
