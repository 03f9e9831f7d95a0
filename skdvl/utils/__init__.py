"""Utilities for developers of valuers: the shared estimator checks.

:mod:`skdvl.utils.estimator_checks` holds the checks; its public names are
re-exported here, imported on first use (they need pytest only when
parametrizing, and ``import skdvl`` should not pay for them).
"""

from __future__ import annotations

from typing import Any

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


def __getattr__(name: str) -> Any:
    if name in __all__:
        from skdvl.utils import estimator_checks

        return getattr(estimator_checks, name)
    raise AttributeError(f"module 'skdvl.utils' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
