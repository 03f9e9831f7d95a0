"""The row-wise stable argsort of KNNShapley: exact where its packed keys tie."""

import numpy as np
import pytest

from skdvl.valuation._knn_math import _stable_argsort


@pytest.mark.parametrize("n", [2, 5, 33, 1000])
def test_distances_closer_than_the_kept_bits_are_ordered_exactly(n):
    rng = np.random.default_rng(n)
    d = rng.uniform(1.0, 2.0, size=(6, n))
    # neighbours that differ in the last bits only: their packed keys tie
    d[:, 1::2] = np.nextafter(d[:, 0::2][:, : d[:, 1::2].shape[1]], 0.0)
    d[:3, -1] = d[:3, 0]  # and exact ties, which keep the index order
    expected = np.argsort(d, axis=1, kind="stable")
    np.testing.assert_array_equal(_stable_argsort(d.copy()), expected)


def test_negative_and_signed_zero_distances():
    d = np.array([[0.0, -0.0, -1.0, 1e-300, -1e-300, 2.0]])
    np.testing.assert_array_equal(_stable_argsort(d.copy()),
                                  np.argsort(d + 0.0, axis=1, kind="stable"))
