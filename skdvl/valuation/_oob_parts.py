"""The Data-OOB ensemble's parts: fitted in increments, each member's out-of-bag scores.

Pure helpers of :class:`~skdvl.valuation._oob.DataOOBValuer` (Kwon & Zou, 2023):
the bagging ensemble grown by warm start (so Ctrl-C keeps the members fitted),
its bootstrap draws recorded, every member scored on the rows it did not train on,
and the non-finite scores counted and reported.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from numbers import Integral
from typing import Any

import numpy as np
from joblib import Parallel, delayed, effective_n_jobs
from sklearn.ensemble import BaggingClassifier, BaggingRegressor
from tqdm.auto import tqdm

from skdvl._moments import Moments
from skdvl._sklearn_compat import (
    bagging_seeds,
    is_forest,
    set_bagging_seeds,
)
from skdvl.utility import UtilityFitWarning

#: The ensemble is grown by warm start in at most this many fits, so that Ctrl-C
#: keeps the members already fitted and the progress bar moves.
_MAX_INCREMENTS = 20


def _is_ensemble(estimator: Any) -> bool:
    """Whether ``estimator`` is (or wraps) a bagging or forest ensemble."""
    if hasattr(estimator, "estimators_samples_"):  # a fitted one, e.g. FrozenEstimator
        return True
    params = estimator.get_params(deep=False)
    return "n_estimators" in params and "bootstrap" in params


def _check_draws(max_samples: Any, max_features: Any, shape: tuple[int, int]) -> None:
    """Refuse draws that scikit-learn would silently round up to one, or that leave
    no row out of bag."""
    n, d = shape
    if isinstance(max_samples, Integral) and int(max_samples) > n:
        raise ValueError(
            f"The 'max_samples' parameter of DataOOBValuer must be <= n_samples={n}: "
            f"{max_samples} draws leave almost no row out of bag. Got {max_samples} "
            "instead."
        )
    if isinstance(max_samples, float) and int(max_samples * n) < 1:
        raise ValueError(
            f"The 'max_samples' parameter of DataOOBValuer must draw at least one of "
            f"the n_samples={n} rows (>= {1 / n:.3g}). Got {max_samples} instead."
        )
    if isinstance(max_features, Integral) and int(max_features) > d:
        raise ValueError(
            f"The 'max_features' parameter of DataOOBValuer must be <= n_features={d}. "
            f"Got {max_features} instead."
        )
    if isinstance(max_features, float) and int(max_features * d) < 1:
        raise ValueError(
            f"The 'max_features' parameter of DataOOBValuer must select at least one "
            f"of the n_features={d} features (>= {1 / d:.3g}). Got {max_features} "
            "instead."
        )


def _grows_by_warm_start(ensemble: Any) -> bool:
    """Whether ``ensemble`` is a bagging or forest ensemble that warm start can grow."""
    if not (isinstance(ensemble, (BaggingClassifier, BaggingRegressor)) or is_forest(ensemble)):
        return False
    return not ensemble.get_params().get("oob_score", False)


def _increments(total: int, n_jobs: Any) -> list[int]:
    """Cumulative ensemble sizes to fit: a multiple of the jobs each time."""
    jobs = max(1, effective_n_jobs(n_jobs))
    step = max(jobs, math.ceil(total / _MAX_INCREMENTS))
    step = math.ceil(step / jobs) * jobs
    return [*range(step, total, step), total]


def _fit_ensemble(ensemble: Any, X: Any, y: np.ndarray, verbose: int) -> Any:
    """Fit ``ensemble`` (growing it by warm start when it can); return it.

    Warnings of the members' fits become one summary warning. A KeyboardInterrupt
    rolls the ensemble back to the last increment that finished (see `_snapshot`),
    or propagates if none did.
    """
    grows = _grows_by_warm_start(ensemble)
    total = int(ensemble.get_params()["n_estimators"]) if grows else 1
    seeds: list[np.ndarray] = []
    kept: dict[str, Any] | None = None
    interrupted = False
    with tqdm(total=total, disable=verbose <= 0, desc="DataOOBValuer members") as bar, \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if not grows:
                ensemble.fit(X, y)
                bar.update(total)
            else:
                ensemble.set_params(warm_start=True)
                for size in _increments(total, ensemble.get_params().get("n_jobs")):
                    ensemble.set_params(n_estimators=size)
                    ensemble.fit(X, y)
                    _record_seeds(ensemble, seeds, size)
                    kept = _snapshot(ensemble)
                    bar.update(size - bar.n)
        except KeyboardInterrupt:
            if kept is None:
                raise
            ensemble.__dict__.clear()
            ensemble.__dict__.update(kept)
            interrupted = True
    n_members = len(getattr(ensemble, "estimators_", []))
    _warn_member_warnings(caught, n_members)
    if interrupted:
        warnings.warn(
            f"Interrupted: DataOOBValuer fitted {n_members} of {total} ensemble members; "
            f"the values use those {n_members} members.", RuntimeWarning, stacklevel=4)
    return ensemble


def _snapshot(ensemble: Any) -> dict[str, Any]:
    """The ensemble's state after an increment, to return to after an interrupt.

    An interrupted fit may leave attributes half-updated (a forest's ``classes_``
    is a list until the fit ends, bagging sets ``_seeds`` before fitting); the
    lists that scikit-learn extends in place are copied.
    """
    return {k: list(v) if isinstance(v, list) else v for k, v in ensemble.__dict__.items()}


def _record_seeds(ensemble: Any, seeds: list[np.ndarray], size: int) -> None:
    """Keep the seeds of a bagging increment; point ``_seeds`` at all of them.

    scikit-learn's bagging keeps only the last fit's seeds in ``_seeds``, from
    which ``estimators_samples_`` is drawn again; after a warm start it would
    describe only the last members.
    """
    if is_forest(ensemble):
        return  # a forest's trees keep their own seeds
    done = sum(s.shape[0] for s in seeds)
    seeds.append(bagging_seeds(ensemble)[: size - done].copy())
    set_bagging_seeds(ensemble, np.concatenate(seeds))


def _warn_member_warnings(caught: list[warnings.WarningMessage], n_members: int) -> None:
    """One warning per category for the warnings the members' fits raised."""
    for category in dict.fromkeys(w.category for w in caught):
        mine = [w for w in caught if w.category is category]
        name = category.__name__
        warnings.warn(
            f"Fitting the ensemble of DataOOBValuer ({n_members} members) raised "
            f"{len(mine)} warnings ({len(mine)} {name}). The first: {name}: {mine[0].message}",
            category, stacklevel=5)


def _ensemble_parts(
    ensemble: Any, shape: tuple[int, int]
) -> tuple[list, list[np.ndarray], list[np.ndarray] | None]:
    """Members, their drawn row indices and (for bagging) their feature indices."""
    members = list(ensemble.estimators_)
    samples = [np.asarray(s) for s in ensemble.estimators_samples_]
    features = getattr(ensemble, "estimators_features_", None)
    n_samples, n_features = shape
    if getattr(ensemble, "n_features_in_", n_features) != n_features or any(
        s.size and s.max() >= n_samples for s in samples
    ):
        raise ValueError(
            f"The ensemble was fitted on data other than X (n_samples={n_samples}, "
            f"n_features={n_features}); a FrozenEstimator must be given the data it "
            "was fitted on."
        )
    return members, samples, features


def _score_members(
    members: list, samples: list[np.ndarray], features: list | None, X: Any,
    y: np.ndarray, score: Callable, classes: np.ndarray | None, n_jobs: int | None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Out-of-bag rows and their scores, member by member (in member order)."""
    n = X.shape[0]
    n_chunks = min(effective_n_jobs(n_jobs), len(members))
    bounds = np.linspace(0, len(members), n_chunks + 1).astype(int)
    tasks = [
        (
            members[lo:hi], samples[lo:hi],
            None if features is None else features[lo:hi],
        )
        for lo, hi in zip(bounds[:-1], bounds[1:])
    ]
    parts = Parallel(n_jobs=n_chunks)(
        delayed(_score_chunk)(m, s, f, X, y, score, classes, n) for m, s, f in tasks
    )
    oob = [o for part in parts for o in part[0]]
    scores = [s for part in parts for s in part[1]]
    return oob, scores


def _score_chunk(
    members: list, samples: list[np.ndarray], features: list | None, X: Any,
    y: np.ndarray, score: Callable, classes: np.ndarray | None, n: int,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    oobs, scores = [], []
    for b, (member, drawn) in enumerate(zip(members, samples)):
        oob = _oob_indices(drawn, n)
        if oob.size == 0:
            oobs.append(oob)
            scores.append(np.empty(0))
            continue
        X_oob = X[oob] if features is None else X[oob][:, features[b]]
        pred = member.predict(X_oob)
        if classes is not None:  # members predict in the ensemble's label encoding
            pred = classes[np.asarray(pred).astype(np.intp)]
        s = np.asarray(score(y[oob], pred), dtype=np.float64).reshape(-1)
        if s.shape[0] != oob.shape[0]:
            raise ValueError(
                "The 'scoring' callable of DataOOBValuer must return one score per row. "
                f"Got shape {s.shape} for {oob.shape[0]} rows instead."
            )
        oobs.append(oob)
        scores.append(s)
    return oobs, scores


def _oob_indices(drawn: np.ndarray, n: int) -> np.ndarray:
    """Rows of ``range(n)`` absent from the bootstrap draw ``drawn``."""
    mask = np.ones(n, dtype=bool)
    mask[drawn] = False
    return np.flatnonzero(mask)


def _oob_moments(
    n: int, oob: list[np.ndarray], scores: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row mean, unbiased sample variance (ddof 1) and count of out-of-bag scores.

    Implements Eq. (3) of Kwon & Zou (2023): the mean over members
    :math:`b` with :math:`w_{bi} = 0` of :math:`T(y_i, \\hat f_b(x_i))`. Rows with no
    out-of-bag member get NaN mean and variance and count 0. The moments are those of
    :meth:`skdvl._moments.Moments.of_samples` (mean, then squared deviations: two
    passes keep the variance accurate for large squared errors).
    """
    players = np.concatenate([np.asarray(idx, dtype=np.intp) for idx in oob] or
                             [np.empty(0, dtype=np.intp)])
    values = np.concatenate([np.asarray(v, dtype=np.float64) for v in scores] or [np.empty(0)])
    m = Moments.of_samples(players, values, n)
    return m.values(), np.where(m.count > 0, m.variance(), np.nan), m.count


def _oob_counts(n: int, oob: list[np.ndarray]) -> np.ndarray:
    """Number of members for which each of the ``n`` rows is out of bag."""
    counts = np.zeros(n, dtype=np.int64)
    for idx in oob:
        counts[idx] += 1
    return counts


def _member_name(members: list) -> str:
    """The members' estimator, for messages: ``"NaNRegressor"``."""
    names = list(dict.fromkeys(type(m).__name__ for m in members))
    return ", ".join(names[:3]) if names else "no member"


def _finite_scores(
    oob: list[np.ndarray], scores: list[np.ndarray], n: int, estimator: str
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The out-of-bag rows and scores without the NaN or infinite scores.

    One :class:`~skdvl.UtilityFitWarning` says how many were left out, by how many
    members, and how many rows are left with no finite score (their values are NaN).

    Raises
    ------
    ValueError
        When there are out-of-bag scores and none is finite: no value was computed.
    """
    finite = [np.isfinite(s) for s in scores]
    n_scores = sum(s.shape[0] for s in scores)
    n_bad = n_scores - sum(int(f.sum()) for f in finite)
    if n_bad == 0:
        return oob, scores
    if n_bad == n_scores:
        raise ValueError(
            f"All the {n_scores} out-of-bag scores of DataOOBValuer (estimator "
            f"{estimator}, {len(scores)} members) are NaN or infinite, so no value was "
            "computed: the members predict NaN or infinity, or the 'scoring' callable "
            "returns it."
        )
    n_members = sum(1 for f in finite if not f.all())
    kept = [o[f] for o, f in zip(oob, finite)]
    unscored = int(np.count_nonzero((_oob_counts(n, oob) > 0) & (_oob_counts(n, kept) == 0)))
    warnings.warn(
        f"{n_bad} of {n_scores} out-of-bag scores of DataOOBValuer (from {n_members} of "
        f"{len(scores)} members, estimator {estimator}) were NaN or infinite and are left "
        f"out of the values; {unscored} rows have no finite score left and get NaN. The "
        "members predict NaN or infinity, or the 'scoring' callable returns it.",
        UtilityFitWarning, stacklevel=4,
    )
    return kept, [s[f] for s, f in zip(scores, finite)]


def _warn_never_oob(counts: np.ndarray, n_members: int) -> None:
    never = int(np.count_nonzero(counts == 0))
    if never:
        warnings.warn(
            f"{never} of {counts.shape[0]} rows were never out of bag in any of the "
            f"{n_members} ensemble members; their values are NaN. Raise n_estimators "
            "or lower max_samples.",
            UserWarning, stacklevel=4,
        )
