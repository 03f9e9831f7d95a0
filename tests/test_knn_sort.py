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


@pytest.mark.parametrize("run", [3, 7, 40])
def test_runs_of_tied_keys_in_reverse_order_are_sorted(run):
    """Runs of ``run`` distances a few ulps apart, each in decreasing order, with exact
    ties inside; 40 exceeds the transposition rounds, so those rows are sorted in full."""
    rng = np.random.default_rng(run)
    starts = rng.uniform(1.0, 2.0, size=(3, 50))
    steps = np.arange(run)[None, None, :]
    d = starts[:, :, None] + (run - 1 - steps) * np.spacing(starts)[:, :, None]
    d[0, :, -1] = d[0, :, 0]  # an exact tie between the two ends of each run
    d = d.reshape(3, -1)
    expected = np.argsort(d, axis=1, kind="stable")
    np.testing.assert_array_equal(_stable_argsort(d.copy()), expected)


def test_a_million_columns_of_random_distances():
    """At 2**20 columns the packed keys keep 32 bits of mantissa: about a hundred pairs
    of neighbours per row tie on them."""
    rng = np.random.default_rng(0)
    d = rng.uniform(0.0, 40.0, size=(2, 2**20))
    np.testing.assert_array_equal(_stable_argsort(d.copy()),
                                  np.argsort(d, axis=1, kind="stable"))
