"""Checks that every data valuer should pass, on top of scikit-learn's common checks.

A valuer is an estimator whose ``fit(X, y[, X_val=..., y_val=...])`` sets
``values_`` (one value per training row), with ``stderr_``, ``counts_`` and a
:class:`~skdvl.ValuationResult` in ``result_``. scikit-learn's
:func:`~sklearn.utils.estimator_checks.parametrize_with_checks` knows nothing of
values; the checks here test what a valuation must satisfy:

- :func:`check_valuer_shape`: one finite value per valued row, ``result_`` agrees;
- :func:`check_valuer_permutation_equivariance`: permuting the training rows
  permutes the values;
- :func:`check_valuer_seeding`: one ``random_state``, one set of values;
- :func:`check_valuer_n_jobs_invariance`: values do not depend on ``n_jobs`` or
  the joblib backend;
- :func:`check_valuer_clone_and_refit`: a clone, and a refit of the same
  instance, give the same values (no state leaks between fits);
- :func:`check_valuer_pandas_alignment`: a DataFrame in gives ``values_`` as a
  Series on its index, equal to the values of the same numpy data.

:func:`check_valuer` runs them all on one valuer and
:func:`parametrize_with_valuer_checks` makes one pytest test of each. The checks
take an unfitted valuer, fit clones of it on a small classification problem and
raise ``AssertionError`` when a property fails, or :class:`unittest.SkipTest`
when it cannot apply to the valuer.

What a valuer's randomness allows is decided per valuer (:func:`valuer_randomness`):

- "deterministic": no ``random_state``, or one that is unused (``sampler="exact"``,
  :class:`~skdvl.influence.InfluenceScorer` with ``method`` "direct", "ekfac",
  "datainf", or "cg" without a preconditioner). Values must be equivariant to
  ~1e-10, and any seed gives the same values.
- "sampling": a Monte Carlo semivalue valuer (a ``sampler`` other than "exact").
  A fixed seed draws coalitions of *positions*, so permuted rows are not valued
  by the same samples: the permutation check runs on ``sampler="exact"`` instead.
  Different seeds must give different values.
- "random": other seeded valuers (:class:`~skdvl.DataOOBValuer` draws its
  bootstrap samples by position; influence methods with a random sketch or
  probe). Their values are equivariant only in distribution, so the
  permutation check is skipped, with that reason. Different seeds must give
  different values.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterator
from typing import Any
from unittest import SkipTest

import numpy as np
import pandas as pd
from joblib import parallel_config
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.exceptions import SkipTestWarning

from skdvl.result import ValuationResult
from skdvl.sampling import ExactSampler
from skdvl.utility._torch_refit import find_skorch_nets
from skdvl.valuation import DataOOBValuer

__all__ = [
    "check_valuer",
    "parametrize_with_valuer_checks",
    "valuer_randomness",
    "check_valuer_shape",
    "check_valuer_permutation_equivariance",
    "check_valuer_seeding",
    "check_valuer_n_jobs_invariance",
    "check_valuer_clone_and_refit",
    "check_valuer_pandas_alignment",
]

#: Rows of the training data the checks value, and of their validation data.
_N_TRAIN, _N_VAL = 24, 12
#: Training rows of the permutation check: ``sampler="exact"`` evaluates 2^8 coalitions.
_N_EXACT = 8
#: Tolerance of "the same values" where floating-point summation order may change.
_RTOL, _ATOL = 1e-10, 1e-10
#: InfluenceScorer methods that use no random numbers.
_DETERMINISTIC_INFLUENCE = frozenset({"direct", "ekfac", "datainf"})


# ----------------------------------------------------------------------------- helpers
def _data(n_train: int = _N_TRAIN, n_val: int = _N_VAL) -> tuple[np.ndarray, ...]:
    """A small two-class problem: ``X, y, X_val, y_val`` (float64, int64, both classes)."""
    X, y = make_classification(
        n_samples=n_train + n_val, n_features=4, n_informative=3, n_redundant=0,
        random_state=0)
    # Classes alternate at the front, so that any prefix holds both.
    order = np.r_[np.argsort(y, kind="stable").reshape(2, -1).T.ravel()]
    X, y = X[order], y[order]
    return X[n_val:], y[n_val:], X[:n_val], y[:n_val]


def _params(valuer: Any) -> dict[str, Any]:
    return valuer.get_params(deep=False)


def _is_exact_sampler(sampler: Any) -> bool:
    return (isinstance(sampler, str) and sampler == "exact") or isinstance(sampler, ExactSampler)


def valuer_randomness(valuer: Any) -> str:
    """What a fixed ``random_state`` makes of a valuer's values.

    Parameters
    ----------
    valuer : estimator
        A valuer (fitted or not).

    Returns
    -------
    randomness : {"deterministic", "sampling", "random"}
        "deterministic" when the values use no random numbers (no
        ``random_state`` parameter, ``sampler="exact"``, or an
        :class:`~skdvl.influence.InfluenceScorer` method without randomness);
        "sampling" for a Monte Carlo ``sampler`` (an exact one can replace it);
        "random" for any other seeded valuer (a ``utility_model``, whose
        training coalitions are drawn by position, and a skorch net, whose fits
        are seeded and batched by row position, included).

    Examples
    --------
    >>> from skdvl import DataOOBValuer, KNNShapley, ShapleyValuer
    >>> from skdvl.utils.estimator_checks import valuer_randomness
    >>> valuer_randomness(KNNShapley()), valuer_randomness(DataOOBValuer())
    ('deterministic', 'random')
    >>> valuer_randomness(ShapleyValuer()), valuer_randomness(ShapleyValuer(sampler="exact"))
    ('sampling', 'deterministic')
    """
    params = _params(valuer)
    if "random_state" not in params:
        return "deterministic"
    if params.get("utility_model") is not None:  # training coalitions drawn by position
        return "random"
    if find_skorch_nets(params.get("estimator")):  # seeds and batches follow row order
        return "random"
    if "sampler" in params:
        return "deterministic" if _is_exact_sampler(params["sampler"]) else "sampling"
    if type(valuer).__name__ == "InfluenceScorer":
        method = params.get("method")
        name = method if isinstance(method, str) else getattr(method, "name", None)
        if name == "cg":  # a Jacobi or Nystrom preconditioner is sketched at random
            return "deterministic" if getattr(method, "preconditioner", None) is None else "random"
        return "deterministic" if name in _DETERMINISTIC_INFLUENCE else "random"
    return "random"


def _uses_validation(valuer: Any) -> bool:
    """Whether the checks pass ``X_val, y_val`` (DataOOBValuer ignores them, with a warning)."""
    if isinstance(valuer, DataOOBValuer):
        return False
    import inspect

    return "X_val" in inspect.signature(valuer.fit).parameters


def _prepared(valuer: Any, random_state: int = 0, **params: Any) -> Any:
    """An unfitted clone with an integer seed, ``warm_start=False`` and ``params`` set."""
    if _params(valuer).get("utility") is not None:
        raise SkipTest(
            f"{type(valuer).__name__} values a fixed utility (utility=...), not data: "
            "the valuer checks need a data valuer.")
    own = _params(valuer)
    new = {key: value for key, value in params.items() if key in own}
    if "random_state" in own:
        new["random_state"] = random_state
    if "warm_start" in own:
        new["warm_start"] = False
    return clone(valuer).set_params(**new)


def _fit(valuer: Any, X: Any, y: Any, X_val: Any, y_val: Any) -> Any:
    if _uses_validation(valuer):
        return valuer.fit(X, y, X_val=X_val, y_val=y_val)
    return valuer.fit(X, y)


def _column(fitted: Any, name: str) -> np.ndarray | None:
    value = getattr(fitted, name, None)
    return None if value is None else np.asarray(value, dtype=np.float64)


def _assert_same_values(got: Any, expected: Any, what: str, exact: bool = True) -> None:
    """``values_``, ``stderr_`` and ``counts_`` of two fits agree (NaN where NaN)."""
    name = type(got).__name__
    for attr in ("values_", "stderr_", "counts_"):
        a, b = _column(got, attr), _column(expected, attr)
        if a is None and b is None:
            continue
        msg = f"{name}: {attr} differ {what}."
        assert a is not None and b is not None, msg
        if exact:
            np.testing.assert_array_equal(a, b, err_msg=msg)
        else:
            np.testing.assert_allclose(a, b, rtol=_RTOL, atol=_ATOL, err_msg=msg)


# ----------------------------------------------------------------------------- checks
def check_valuer_shape(valuer: Any) -> None:
    """``values_``, ``stderr_`` and ``counts_`` hold one entry per row; ``result_`` agrees.

    Values must be finite wherever ``counts_ > 0``, standard errors there finite and
    >= 0 or NaN (unknown: a single sample, or a sampler's design not yet covered), and
    ``counts_`` non-negative integers. ``result_`` is a
    :class:`~skdvl.ValuationResult` with the same values, standard errors and
    counts, for rows ``0 .. n_samples - 1``.

    Parameters
    ----------
    valuer : estimator
        An unfitted valuer; clones of it are fitted.

    Raises
    ------
    AssertionError
        When an attribute is missing or has another shape or content.
    """
    X, y, X_val, y_val = _data()
    fitted = _fit(_prepared(valuer), X, y, X_val, y_val)
    name, n = type(valuer).__name__, X.shape[0]
    for attr in ("values_", "stderr_", "counts_", "result_"):
        assert hasattr(fitted, attr), f"{name} sets no {attr} in fit."
    values, stderr, counts = (np.asarray(getattr(fitted, a)) for a in
                              ("values_", "stderr_", "counts_"))
    for attr, arr in (("values_", values), ("stderr_", stderr), ("counts_", counts)):
        assert arr.shape == (n,), (
            f"{name}.{attr} has shape {arr.shape}; expected ({n},) for {n} training rows.")
    assert np.issubdtype(counts.dtype, np.integer) and (counts >= 0).all(), (
        f"{name}.counts_ must be non-negative integers; got dtype {counts.dtype}, "
        f"min {counts.min()}.")
    valued = counts > 0
    assert valued.any(), f"{name} valued no row (every count is 0)."
    assert np.isfinite(values[valued]).all(), (
        f"{name}.values_ is not finite at rows {np.flatnonzero(~np.isfinite(values) & valued)} "
        "although their counts are > 0.")
    # a standard error is finite and >= 0, or NaN where it is unknown (one sample, or a
    # sampler's design not yet covered), never inf or negative where a value was computed
    bad_se = valued & ~((np.isfinite(stderr) & (stderr >= 0)) | np.isnan(stderr))
    assert not bad_se.any(), (
        f"{name}.stderr_ is neither finite and >= 0 nor NaN (unknown) at rows "
        f"{np.flatnonzero(bad_se)}.")
    result = fitted.result_
    assert isinstance(result, ValuationResult), (
        f"{name}.result_ is a {type(result).__name__}, not a ValuationResult.")
    assert len(result) == n, f"{name}.result_ holds {len(result)} entries for {n} rows."
    np.testing.assert_array_equal(result.indices, np.arange(n),
                                  err_msg=f"{name}.result_.indices are not 0..n-1.")
    for attr, arr, col in (("values_", values, result.values),
                           ("stderr_", stderr, result.stderr),
                           ("counts_", counts, result.counts)):
        np.testing.assert_array_equal(arr, col, err_msg=f"{name}.{attr} != result_.")


def check_valuer_permutation_equivariance(valuer: Any) -> None:
    """Permuting the training rows permutes the values (to ~1e-10).

    Only for values computed without random numbers (see
    :func:`valuer_randomness`): a Monte Carlo semivalue valuer is checked with
    ``sampler="exact"`` (and no truncation) on 8 rows, since seeded sampling
    draws positions, not rows; any other seeded valuer is skipped. Validation
    rows, where the valuer takes them, stay as they are.

    Parameters
    ----------
    valuer : estimator
        An unfitted valuer; clones of it are fitted.

    Raises
    ------
    AssertionError
        When the values of the permuted rows are not the permuted values.
    SkipTest
        When the valuer's values are random even with a fixed seed.
    """
    name = type(valuer).__name__
    kind = valuer_randomness(valuer)
    if kind == "random":
        raise SkipTest(
            f"{name} draws random numbers by row position: with a fixed seed, permuted "
            "rows get other draws, so values are equivariant only in distribution.")
    n_train = _N_TRAIN
    params: dict[str, Any] = {}
    if kind == "sampling" or "sampler" in _params(valuer):
        params, n_train = dict(sampler="exact", truncation=None), _N_EXACT
    X, y, X_val, y_val = _data(n_train)
    perm = np.random.default_rng(0).permutation(n_train)
    perm = np.roll(perm, 1) if (perm == np.arange(n_train)).any() else perm
    ref = _fit(_prepared(valuer, **params), X, y, X_val, y_val)
    got = _fit(_prepared(valuer, **params), X[perm], y[perm], X_val, y_val)
    for attr in ("values_", "stderr_", "counts_"):
        a, b = _column(got, attr), _column(ref, attr)
        if a is None or b is None:
            continue
        assert a.shape == b.shape == (n_train,), (
            f"{name}.{attr} has shape {a.shape} for {n_train} rows.")
        np.testing.assert_allclose(
            a, b[perm], rtol=_RTOL, atol=_ATOL,
            err_msg=f"{name}: {attr} of the permuted rows X[perm] are not {attr}[perm].")


def check_valuer_seeding(valuer: Any) -> None:
    """One ``random_state`` gives identical values; another changes them only if random.

    Two fits with ``random_state=0`` must agree exactly. With
    ``random_state=1`` a Monte Carlo or otherwise random valuer must give other
    values, and a deterministic one (see :func:`valuer_randomness`) the same.
    Without a ``random_state`` parameter, two fits must agree.

    Parameters
    ----------
    valuer : estimator
        An unfitted valuer; clones of it are fitted.

    Raises
    ------
    AssertionError
        When a seed does not fix the values, or a random valuer ignores it.
    """
    name = type(valuer).__name__
    X, y, X_val, y_val = _data()
    first = _fit(_prepared(valuer, 0), X, y, X_val, y_val)
    again = _fit(_prepared(valuer, 0), X, y, X_val, y_val)
    _assert_same_values(again, first, "between two fits with random_state=0")
    if "random_state" not in _params(valuer):
        return
    other = _fit(_prepared(valuer, 1), X, y, X_val, y_val)
    if valuer_randomness(valuer) == "deterministic":
        _assert_same_values(other, first, "between random_state=0 and 1 although "
                            "the valuer draws no random numbers", exact=False)
    else:
        a, b = _column(other, "values_"), _column(first, "values_")
        assert a is not None and b is not None
        assert not np.array_equal(a, b, equal_nan=True), (
            f"{name} gave identical values_ for random_state=0 and random_state=1: "
            "its random draws ignore random_state.")


def check_valuer_n_jobs_invariance(valuer: Any) -> None:
    """Values are identical for ``n_jobs=1``, ``n_jobs=2`` and joblib's threading backend.

    With a fixed seed, ``n_jobs=1``, ``n_jobs=2`` (the default backend, loky)
    and ``n_jobs=None`` inside ``joblib.parallel_config(backend="threading",
    n_jobs=2)`` must give the same values, standard errors and counts, bit for
    bit. A valuer without ``n_jobs`` is checked under the threading context only.

    Parameters
    ----------
    valuer : estimator
        An unfitted valuer; clones of it are fitted.

    Raises
    ------
    AssertionError
        When the values depend on the parallelism.
    """
    X, y, X_val, y_val = _data()
    ref = _fit(_prepared(valuer, n_jobs=1), X, y, X_val, y_val)
    if "n_jobs" in _params(valuer):
        two = _fit(_prepared(valuer, n_jobs=2), X, y, X_val, y_val)
        _assert_same_values(two, ref, "between n_jobs=1 and n_jobs=2")
    with parallel_config(backend="threading", n_jobs=2):
        threads = _fit(_prepared(valuer, n_jobs=None), X, y, X_val, y_val)
    _assert_same_values(threads, ref, "between n_jobs=1 and the threading backend "
                        "with n_jobs=2")


def check_valuer_clone_and_refit(valuer: Any) -> None:
    """A clone, and a refit of the same instance, give the same values.

    The valuer (seeded, ``warm_start=False``) is fitted, then a clone of it is
    fitted on the same data, then the first instance is fitted on other data
    and again on the first: every fit on the same data must give the same
    values, so nothing of an earlier fit leaks into a later one.

    Parameters
    ----------
    valuer : estimator
        An unfitted valuer; clones of it are fitted.

    Raises
    ------
    AssertionError
        When a refit or a clone gives other values.
    """
    X, y, X_val, y_val = _data()
    fitted = _fit(_prepared(valuer), X, y, X_val, y_val)
    first = clone(fitted)
    _assert_same_values(_fit(first, X, y, X_val, y_val), fitted, "between a fit and "
                        "the fit of its clone")
    reference = _fit(_prepared(valuer), X, y, X_val, y_val)
    _assert_same_values(_fit(fitted, X, y, X_val, y_val), reference,
                        "between a fit and a refit of the same instance")
    _fit(fitted, X[::-1][:16], y[::-1][:16], X_val, y_val)
    _assert_same_values(_fit(fitted, X, y, X_val, y_val), reference,
                        "after a fit on other rows and a refit on the first ones")


def check_valuer_pandas_alignment(valuer: Any) -> None:
    """A DataFrame with a shuffled string index gives ``values_`` as a Series on it.

    ``values_`` (and ``stderr_``, ``counts_`` where set) must be
    :class:`pandas.Series` on the index of ``X``, equal to the values of the
    same data as numpy arrays; ``result_.names``, where set, is that index.

    Parameters
    ----------
    valuer : estimator
        An unfitted valuer; clones of it are fitted.

    Raises
    ------
    AssertionError
        When an attribute is not a Series, not on the input's index, or differs
        from the numpy fit.
    """
    name = type(valuer).__name__
    X, y, X_val, y_val = _data()
    order = np.random.default_rng(1).permutation(X.shape[0])
    index = pd.Index([f"row{i}" for i in order], name="id")
    columns = [f"f{j}" for j in range(X.shape[1])]
    X_df = pd.DataFrame(X, index=index, columns=columns)
    y_s = pd.Series(y, index=index, name="target")
    X_val_df = pd.DataFrame(X_val, columns=columns)
    got = _fit(_prepared(valuer), X_df, y_s, X_val_df, pd.Series(y_val))
    ref = _fit(_prepared(valuer), X, y, X_val, y_val)
    for attr in ("values_", "stderr_", "counts_"):
        if attr != "values_" and not hasattr(ref, attr):
            continue
        column = getattr(got, attr, None)
        assert isinstance(column, pd.Series), (
            f"{name}.{attr} is a {type(column).__name__} for a DataFrame X; expected a "
            "pandas Series on X's index.")
        assert column.index.equals(index), (
            f"{name}.{attr} is not on X's index: got {list(column.index[:3])}..., "
            f"expected {list(index[:3])}...")
        np.testing.assert_allclose(
            column.to_numpy(dtype=np.float64), np.asarray(getattr(ref, attr), np.float64),
            rtol=_RTOL, atol=_ATOL, err_msg=f"{name}.{attr} of the DataFrame differs from "
            "the numpy fit.")
    result = getattr(got, "result_", None)
    if result is not None:
        np.testing.assert_array_equal(result.names, index.to_numpy(),
                                      err_msg=f"{name}.result_.names is not X's index.")


# ----------------------------------------------------------------------------- runners
_CHECKS: tuple[Callable[[Any], None], ...] = (
    check_valuer_shape,
    check_valuer_permutation_equivariance,
    check_valuer_seeding,
    check_valuer_n_jobs_invariance,
    check_valuer_clone_and_refit,
    check_valuer_pandas_alignment,
)


def _yield_valuer_checks(valuer: Any) -> Iterator[Callable[[Any], None]]:
    yield from _CHECKS


def check_valuer(valuer: Any, *, expected_failed_checks: dict[str, str] | None = None) -> None:
    """Run every valuer check on ``valuer``.

    Parameters
    ----------
    valuer : estimator
        An unfitted valuer; clones of it are fitted.
    expected_failed_checks : dict of str to str, default=None
        ``{check_name: reason}`` for checks known to fail: they are skipped with
        a :class:`~sklearn.exceptions.SkipTestWarning` giving the reason.

    Raises
    ------
    AssertionError
        From the first check that fails.

    Examples
    --------
    >>> from skdvl import KNNShapley
    >>> from skdvl.utils.estimator_checks import check_valuer
    >>> check_valuer(KNNShapley(n_neighbors=3))
    """
    expected = expected_failed_checks or {}
    for check in _yield_valuer_checks(valuer):
        if check.__name__ in expected:
            warnings.warn(f"Skipping {check.__name__} for {type(valuer).__name__}: "
                          f"{expected[check.__name__]}", SkipTestWarning, stacklevel=2)
            continue
        try:
            check(valuer)
        except SkipTest as skipped:
            warnings.warn(str(skipped), SkipTestWarning, stacklevel=2)


def _check_id(obj: Any) -> str | None:
    if callable(obj) and hasattr(obj, "__name__") and obj.__name__.startswith("check_"):
        return str(obj.__name__)
    if hasattr(obj, "get_params"):
        return re.sub(r"\s", "", str(obj))
    return None


def parametrize_with_valuer_checks(
    valuers: list[Any],
    *,
    expected_failed_checks: Callable[[Any], dict[str, str]] | None = None,
) -> Any:
    """A pytest ``parametrize`` decorator with one test per valuer and check.

    The test function takes ``valuer`` and ``check`` and calls ``check(valuer)``,
    as with scikit-learn's
    :func:`~sklearn.utils.estimator_checks.parametrize_with_checks`. Test ids
    are the valuer's repr and the check's name, so ``pytest -k`` selects them.

    Parameters
    ----------
    valuers : list of estimators
        Unfitted valuer instances.
    expected_failed_checks : callable, default=None
        Takes a valuer and returns ``{check_name: reason}``; those checks are
        marked ``xfail`` with the reason.

    Returns
    -------
    decorator : pytest.mark.parametrize

    Examples
    --------
    >>> from skdvl import KNNShapley
    >>> from skdvl.utils.estimator_checks import parametrize_with_valuer_checks
    >>> @parametrize_with_valuer_checks([KNNShapley(n_neighbors=3)])
    ... def test_valuer(valuer, check):
    ...     check(valuer)
    """
    import pytest

    if any(isinstance(v, type) for v in valuers):
        raise TypeError("parametrize_with_valuer_checks takes valuer instances, not "
                        "classes; pass e.g. KNNShapley() instead of KNNShapley.")
    params = []
    for valuer in valuers:
        expected = expected_failed_checks(valuer) if expected_failed_checks else {}
        for check in _yield_valuer_checks(valuer):
            reason = expected.get(check.__name__)
            marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
            params.append(pytest.param(valuer, check, marks=marks))
    return pytest.mark.parametrize("valuer, check", params, ids=_check_id)
