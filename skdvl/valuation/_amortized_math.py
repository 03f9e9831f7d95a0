"""The statistics of amortized valuation: noise, weights, shrinkage, diagnostics.

Pure functions over arrays: the noisy targets ``t`` (a Monte Carlo valuer's per-row
estimates), their sampling variances, and their cross-fitted predictions ``pred``
by a value model (Covert et al., 2024, arXiv:2401.15866). A cross-fitted
prediction is independent of its own row's noise, which is what every estimate
here rests on. :class:`~skdvl.AmortizedValuer` calls them.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import truncnorm

__all__ = ["noise_variances", "row_weights", "shrink", "diagnostics"]

#: the weight, in samples, of the pooled per-sample variance in a row's shrunk variance
PRIOR_SAMPLES = 10
#: bootstrap resamples behind the interval of the disattenuated score
N_BOOTSTRAP = 200


def noise_variances(stderr: np.ndarray, counts: np.ndarray,
                    prior_samples: float = PRIOR_SAMPLES) -> np.ndarray:
    """The sampling variance of each noisy target, its per-sample variance shrunk.

    A target averaging ``c_i`` samples of per-sample variance ``sigma_i^2`` has
    variance ``sigma_i^2 / c_i``, and ``sigma_i^2`` is itself estimated from those
    ``c_i`` samples, unbiasedly by ``c_i stderr_i^2`` (skdvl's ``stderr_`` is
    ``sqrt(variance / c_i)`` with the unbiased sample variance, ddof 1). From two or three
    samples, a row whose marginals happened to agree would get a near-zero
    variance, so ``sigma_i^2`` is shrunk toward the pooled per-sample variance with
    the weight of ``prior_samples`` samples, ``((c_i - 1) sigma_i^2 + k sigma^2) /
    (c_i - 1 + k)`` (the posterior mean of a normal variance under a scaled
    inverse-chi-squared prior, Gelman et al., 2013, "Bayesian data analysis",
    Sec. 3.3; ``prior_samples=np.inf`` gives every row the pooled variance).
    Rows of unknown (NaN) standard error, or of fewer than two samples, get the
    pooled variance. NaN for every row when no row's variance is known
    (e.g. one sample per row); 0 for exact targets.
    """
    c = np.asarray(counts, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):  # c < 2: unknown, below
        sigma2 = np.asarray(stderr, dtype=np.float64) ** 2 * c
    known = np.isfinite(sigma2) & (c >= 2)
    if not known.any():
        return np.full(c.shape[0], np.nan)
    dof = np.where(known, c - 1, 0.0)
    pooled = float(np.sum(dof * np.where(known, sigma2, 0.0)) / np.sum(dof))
    if np.isinf(prior_samples):
        return np.full(c.shape[0], pooled) / np.maximum(c, 1.0)
    shrunk = (dof * np.where(known, sigma2, 0.0) + prior_samples * pooled) / (
        dof + prior_samples)
    return shrunk / np.maximum(c, 1.0)


def row_weights(noise: np.ndarray) -> np.ndarray:
    """Inverse-variance weights of the noisy targets, of mean 1.

    ``noise`` from :func:`noise_variances`. With no variance known, or none above 0
    (exact targets), every weight is 1.
    """
    if not np.any(noise > 0):
        return np.ones(noise.shape[0])
    w = 1.0 / noise
    return w / w.mean()


def _between_variance(d: np.ndarray) -> tuple[float, float, float]:
    """``tau^2 >= 0`` from ``d_i = r_i^2 - s_i^2``: point estimate, mean and variance.

    The method-of-moments estimate ``mean(d)`` is unbiased for ``tau^2`` but may
    fall below 0; its positive part (the point estimate, as in the positive-part
    James-Stein rule) is 0 with a probability that does not vanish when ``tau^2``
    is small, and a 0 would claim the predictions exact. So the error of the values
    is measured with the posterior of ``tau^2`` under a flat prior on ``[0, inf)``
    and the normal approximation ``N(mean(d), var(d) / k)`` of the estimate: a
    normal truncated at 0, whose mean is never 0 (ours; the hierarchical-Bayes
    reading of Morris, 1983, "Parametric empirical Bayes inference: theory and
    applications", JASA 78, Sec. 4). Heavy-tailed targets give a large
    ``var(d)``, and a large, conservative mean.
    """
    k = d.shape[0]
    m = float(np.mean(d))
    se = float(np.std(d, ddof=1) / np.sqrt(k))
    if not se > 0:
        return max(m, 0.0), max(m, 0.0), 0.0
    post = truncnorm(-m / se, np.inf, loc=m, scale=se)
    return max(m, 0.0), float(post.mean()), float(post.var())


def shrink(t: np.ndarray, pred: np.ndarray, noise: np.ndarray,
           pooled: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Empirical-Bayes posterior means of the values, their variances, and ``tau^2``.

    The model: a row's exact value is ``v_i ~ N(pred_i, tau^2)`` around its
    cross-fitted prediction, and its estimate is ``t_i ~ N(v_i, s_i^2)`` (``s_i^2``
    = ``noise``). The posterior mean is ``pred_i + g_i (t_i - pred_i)`` with the
    gain ``g_i = tau^2 / (tau^2 + s_i^2)``: the prediction where the estimate is
    noisy, the estimate where it is precise (James & Stein, 1961, "Estimation with
    quadratic loss"; Efron & Morris, 1973, "Stein's estimation rule and its
    competitors: an empirical Bayes approach", JASA 68). ``tau^2``, the mean
    squared error of the predictions against the exact values, comes from the
    method of moments: a cross-fitted prediction is independent of its row's
    noise, so ``(t_i - pred_i)^2`` averages ``tau^2 + s_i^2`` (see
    ``_between_variance``; its positive part sets the gains). The variance of a
    value is its mean squared error at that gain, ``(1 - g_i)^2 tau^2 + g_i^2
    s_i^2`` with the posterior mean of ``tau^2`` (the posterior variance ``tau^2
    s_i^2 / (tau^2 + s_i^2)`` where the two agree), plus the first-order cost of
    estimating ``tau^2``, ``(d value_i / d tau^2)^2 Var(tau^2)`` (Kass & Steffey,
    1989, "Approximate Bayesian inference in conditionally independent
    hierarchical models", JASA 84). With ``pooled`` (the noise variances pooled
    over rows), the ``s_i^2`` of the variance are those: a gain chosen by a row's
    own variance estimate favours the rows whose variance happened to come out
    low (with heavy-tailed marginals, most rows), and their error is then larger
    than their own estimate says; the pooled variance does not share that
    selection. (Ours; measured in the breast-cancer benchmark: the row's own
    variances gave half the measured squared error at 100 permutations, the
    pooled ones 1.3 times it.) A row without an estimate (NaN target) keeps
    its prediction, of variance ``tau^2``. The predictions and NaN variances when
    fewer than 3 rows have a known noise. The third output is the posterior mean
    of ``tau^2``.
    """
    resid = t - pred
    ok = np.isfinite(resid) & np.isfinite(noise)
    if ok.sum() < 3:
        return pred.copy(), np.full(t.shape[0], np.nan), np.nan
    point, tau2, tau2_var = _between_variance(resid[ok] ** 2 - noise[ok])
    s2 = np.where(ok, noise, 0.0)
    r = np.where(ok, resid, 0.0)
    total = point + s2
    B = np.divide(s2, total, out=np.zeros_like(total), where=total > 0)  # 1 - gain
    gain = 1.0 - B
    slope = np.divide(r * s2, total**2, out=np.zeros_like(total), where=total > 0)
    values = np.where(ok, np.where(ok, t, 0.0) - B * r, pred)  # B = 0: the estimate, exactly
    s2_error = s2 if pooled is None else np.where(ok, pooled, 0.0)
    var = (1.0 - gain) ** 2 * tau2 + gain**2 * s2_error + slope**2 * tau2_var
    return values, np.where(ok, var, tau2), tau2


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of ``a`` with the same row of ``b`` (NaN: flat)."""
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=-1) * (b * b).sum(axis=-1))
    return np.divide((a * b).sum(axis=-1), den, out=np.full(den.shape, np.nan),
                     where=den > 0)


def _disattenuate(t: np.ndarray, pred: np.ndarray,
                  noise: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Score, reliability and disattenuated score of each row of the inputs."""
    score = _pearson_rows(t, pred)
    var_t = t.var(axis=-1)
    rel = 1.0 - np.divide(noise.mean(axis=-1), var_t, out=np.full(var_t.shape, np.inf),
                          where=var_t > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        dis = np.clip(score / np.sqrt(np.where(rel > 0, rel, np.nan)), -1.0, 1.0)
    return score, rel, dis


def diagnostics(t: np.ndarray, pred: np.ndarray, noise: np.ndarray,
                seed: int) -> dict[str, float]:
    """The cross-fitted agreement of predictions and noisy targets, and what it implies.

    ``score``: Pearson correlation of the noisy targets ``t`` and their cross-fitted
    predictions. ``reliability``: the share of the targets' variance that is not
    sampling noise, ``1 - mean(s^2) / var(t)``; the score cannot exceed its square
    root even for perfect predictions. ``disattenuated``: ``score /
    sqrt(reliability)`` in [-1, 1], the correlation with the exact values that the
    score implies (Spearman, 1904, "The proof and measurement of association
    between two things"; the noise of a target is independent of its cross-fitted
    prediction). ``low``, ``high``: its 90 % percentile-bootstrap interval over
    rows (``N_BOOTSTRAP`` resamples, Efron & Tibshirani, 1993, "An introduction to
    the bootstrap", Ch. 13); a resample whose reliability is not positive cannot
    bound the correlation and counts as -1 for ``low`` and +1 for ``high``, so
    targets that are mostly noise give a wide interval, not a low score. NaN for a
    quantity the inputs do not determine (every row's noise unknown: no
    reliability).
    """
    ok = np.isfinite(t) & np.isfinite(pred)
    out = dict.fromkeys(("score", "reliability", "disattenuated", "low", "high"), np.nan)
    if ok.sum() < 3:
        return out
    out["score"] = float(_pearson_rows(t[ok], pred[ok]))
    known = ok & np.isfinite(noise)
    if known.sum() < 3:
        return out
    tk, pk, nk = t[known], pred[known], noise[known]
    _, rel, dis = _disattenuate(tk, pk, nk)
    out["reliability"], out["disattenuated"] = float(rel), float(dis)
    idx = np.random.default_rng(seed).integers(0, tk.shape[0], (N_BOOTSTRAP, tk.shape[0]))
    _, _, boot = _disattenuate(tk[idx], pk[idx], nk[idx])
    out["low"] = float(np.quantile(np.where(np.isnan(boot), -1.0, boot), 0.05))
    out["high"] = float(np.quantile(np.where(np.isnan(boot), 1.0, boot), 0.95))
    return out
