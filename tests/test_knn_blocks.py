"""How a block is cut (sub-blocks of the sorts, chunks of threshold distances) never
changes the values: the plain variant keeps the bits, the threshold variant its pairs."""

import numpy as np
import pytest

from skdvl import KNNShapley, ThresholdKNNShapley
from skdvl.valuation import _knn_math, _knn_threshold


@pytest.fixture
def data():
    rng = np.random.default_rng(11)
    X = rng.normal(size=(260, 3))
    y = rng.integers(0, 3, 260)
    X[5] = X[17]  # a duplicate: a tie in distance across sub-blocks
    return X[:200], y[:200], X[200:], y[200:]


@pytest.mark.parametrize("utility", ["fixed_k", "soft_label"])
@pytest.mark.parametrize("with_val", [True, False])
def test_sub_blocks_of_one_row_give_the_bits_of_whole_blocks(monkeypatch, data, utility,
                                                             with_val):
    X, y, Xv, yv = data
    kw = dict(X_val=Xv, y_val=yv) if with_val else {}
    whole = KNNShapley(n_neighbors=4, knn_utility=utility).fit(X, y, **kw)
    monkeypatch.setattr(_knn_math, "_CACHE_BYTES", 8)  # one row per sub-block
    rows = KNNShapley(n_neighbors=4, knn_utility=utility).fit(X, y, **kw)
    np.testing.assert_array_equal(whole.values_, rows.values_)
    np.testing.assert_array_equal(whole.stderr_, rows.stderr_)


def test_regression_sub_blocks_give_the_bits_of_whole_blocks(monkeypatch, data):
    X, _, Xv, _ = data
    t, tv = X[:, 0] + X[:, 1] ** 2, Xv[:, 0] + Xv[:, 1] ** 2
    whole = KNNShapley(n_neighbors=3).fit(X, t, X_val=Xv, y_val=tv)
    monkeypatch.setattr(_knn_math, "_CACHE_BYTES", 8 * 200 * 3)  # three rows
    parts = KNNShapley(n_neighbors=3).fit(X, t, X_val=Xv, y_val=tv)
    np.testing.assert_array_equal(whole.values_, parts.values_)


@pytest.mark.parametrize("with_val", [True, False])
def test_threshold_distance_chunks_find_the_same_neighbours(monkeypatch, data, with_val):
    """Chunks of 7 training rows (not dividing 200), self rows in every chunk."""
    X, y, Xv, yv = data
    kw = dict(X_val=Xv, y_val=yv) if with_val else {}
    whole = ThresholdKNNShapley(radius=1.2).fit(X, y, **kw)
    rows_per_block = -(-(60 if with_val else 200) // 16)  # _block_rows: 1/16 of them
    monkeypatch.setattr(_knn_threshold, "_CHUNK_BYTES", 8 * rows_per_block * 7)
    seen = []
    real = _knn_threshold._in_radius

    def spy(Xb, self_rows, searcher):
        out = real(Xb, self_rows, searcher)
        seen.append(out)
        return out

    monkeypatch.setattr(_knn_threshold, "_in_radius", spy)
    chunked = ThresholdKNNShapley(radius=1.2).fit(X, y, **kw)
    assert seen and all(np.all(np.diff(r) >= 0) for r, _ in seen)  # row-major pairs
    np.testing.assert_allclose(chunked.values_, whole.values_, rtol=0, atol=1e-15)
    # as many pairs as brute force finds within the radius, none of a row with itself
    queries = Xv if with_val else X
    within = np.sqrt(((queries[:, None, :] - X[None]) ** 2).sum(-1)) <= 1.2
    expected = int(within.sum()) - (0 if with_val else X.shape[0])
    assert sum(r.size for r, _ in seen) == expected
