import numpy as np
import pytest


@pytest.fixture
def seed() -> int:
    return 20261123


@pytest.fixture
def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.fixture
def walk_from(monkeypatch):
    """Walk prefixes incrementally from the first one on (by default from prefix 32 of
    binary models): ``walk_from(work)`` sets the engine's threshold of walks times prefix
    length (for a nominal group of ``_truncation._NOMINAL_WALKS`` walks). In this process
    only: loky workers do not see it (use the threading backend with n_jobs > 1)."""
    from skdvl.sampling import _truncation

    def set_(work):
        monkeypatch.setattr(_truncation, "_WALK_MIN_WORK", work)
    return set_
