import numpy as np
import pandas as pd
import pytest

from skdvl import ValuationResult


def _from_samples(samples: list[np.ndarray], indices=None) -> ValuationResult:
    return ValuationResult(
        [s.mean() for s in samples],
        variances=[s.var(ddof=1) if s.size > 1 else np.nan for s in samples],
        counts=[s.size for s in samples], indices=indices,
    )


def test_merge_equals_moments_of_pooled_samples(rng):
    a = [rng.normal(i, 1 + i, size=rng.integers(1, 30)) for i in range(5)]
    b = [rng.normal(-i, 2, size=rng.integers(1, 30)) for i in range(5)]
    merged = _from_samples(a) + _from_samples(b)
    pooled = [np.concatenate([x, y]) for x, y in zip(a, b)]
    np.testing.assert_allclose(merged.values, [p.mean() for p in pooled], rtol=1e-12)
    np.testing.assert_allclose(merged.variances, [p.var(ddof=1) for p in pooled],
                               rtol=1e-12)
    np.testing.assert_array_equal(merged.counts, [p.size for p in pooled])
    np.testing.assert_allclose(merged.stderr,
                               [p.std(ddof=1) / np.sqrt(p.size) for p in pooled])


def test_merge_matches_entries_by_index(rng):
    a = _from_samples([np.array([1.0, 3.0]), np.array([5.0])], indices=[3, 7])
    b = _from_samples([np.array([2.0]), np.array([4.0])], indices=[7, 9])
    merged = a + b
    np.testing.assert_array_equal(merged.indices, [3, 7, 9])
    np.testing.assert_allclose(merged.values, [2.0, 3.5, 4.0])
    np.testing.assert_array_equal(merged.counts, [2, 2, 1])


def test_merge_with_empty_result_is_identity(rng):
    a = _from_samples([rng.normal(size=4) for _ in range(3)])
    merged = a + ValuationResult.zeros(3)
    np.testing.assert_allclose(merged.values, a.values)
    np.testing.assert_allclose(merged.variances, a.variances)


def test_sort_is_stable_and_slicing_is_positional():
    r = ValuationResult([3.0, 1.0, 3.0, 2.0], names=["a", "b", "c", "d"])
    assert list(r.sort().names) == ["b", "d", "a", "c"]
    assert list(r.sort(reverse=True).names) == ["c", "a", "d", "b"]
    assert list(r[1:3].names) == ["b", "c"]
    assert list(r[[True, False, False, True]].values) == [3.0, 2.0]
    assert len(r[2]) == 1
    with pytest.raises(ValueError, match="key must be one of .* Got 'bogus'"):
        r.sort(key="bogus")


def test_stderr_is_infinite_without_samples():
    r = ValuationResult.zeros(2)
    assert np.all(np.isinf(r.stderr))


def test_to_dataframe_uses_names():
    r = ValuationResult([1.0, 2.0], variances=[4.0, 9.0], counts=[4, 9], names=["x", "y"],
                        algorithm="shapley")
    df = r.to_dataframe()
    assert list(df.index) == ["x", "y"]
    assert list(df.columns) == ["shapley", "shapley_stderr", "shapley_count"]
    np.testing.assert_allclose(df["shapley_stderr"], [1.0, 1.0])
    assert isinstance(df, pd.DataFrame)


@pytest.mark.parametrize("names", [None, ["a", "b", "c"]])
def test_save_load_round_trip(tmp_path, names):
    r = ValuationResult([1.0, -2.0, 0.5], variances=[1.0, 2.0, 3.0], counts=[1, 2, 3],
                        indices=[4, 5, 6], names=names, algorithm="banzhaf")
    r.save(tmp_path / "r.npz")
    back = ValuationResult.load(tmp_path / "r.npz")
    assert back == r
    assert back.algorithm == "banzhaf"


def test_bad_lengths_name_the_column():
    with pytest.raises(ValueError, match="counts must have one entry per value \\(2\\). Got 3"):
        ValuationResult([1.0, 2.0], counts=[1, 2, 3])
    with pytest.raises(ValueError, match="names must have one entry per value"):
        ValuationResult([1.0, 2.0], names=["a"])
