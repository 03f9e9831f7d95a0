"""Samplers of coalitions for Monte Carlo semivalues, and permutation truncation.

Every semivalue of player ``i`` is an expectation over the coalition ``T`` that
``i`` joins (``T`` excludes ``i``)::

    phi_i = sum_k m(k) * E_{T uniform among the subsets of size k} [u(T + i) - u(T)]

where ``m(k)`` is the semivalue's mass on coalitions of size ``k`` (``1/n`` for
Shapley, ``C(n-1, k) / 2^(n-1)`` for Banzhaf). A sampler draws ``T`` with some
size distribution ``pi(k)`` (and uniformly given its size); the engine weighs
each marginal by ``m(k) / pi(k)``, which makes every sampler an unbiased
estimator of every semivalue (importance sampling). Samplers differ in how many
marginals one utility evaluation buys and in their variance:

- permutation samplers (Castro et al., 2009): ``n`` marginals for ``n`` new
  evaluations, ``pi(k) = 1/n``; optional truncation (Ghorbani & Zou, 2019);
- "toggle" samplers draw a coalition ``S`` of all ``n`` players and evaluate
  ``S`` and the ``n`` coalitions that differ from it by one player, giving one
  marginal per player for ``n + 1`` evaluations: uniform (Banzhaf), antithetic,
  Owen (Okhrati & Lipani, 2021) and stratified by size;
- MSR (Wang & Jia, 2023, "Data Banzhaf") reuses each evaluation for every
  player, but only estimates (weighted) Banzhaf values;
- the regression estimators (KernelSHAP, Leverage SHAP, Kernel Banzhaf,
  regression-adjusted MSR) and stratified SVARM also use every evaluation for
  every player, and keep their own statistics instead of per-player means;
- Neyman strata (Castro et al., 2017) stratify marginals by player and size
  and spend the budget where the marginals vary;
- hybrid MSR draws coalitions by size without replacement, enumerating the
  strata the budget covers, and samples only a surrogate's residual.

Samplers are parameters of the valuers (``sampler="owen"`` or an instance).
The package holds one module per family over the protocol of ``_base.py``
(:class:`BaseSampler`, the ``Evaluator`` and ``Runner`` it is handed); the
engine (``_engine.py``) drives them through that protocol only.
"""

from skdvl.sampling._base import BaseSampler
from skdvl.sampling._exact import ExactSampler
from skdvl.sampling._hybrid_msr import HybridMSRSampler
from skdvl.sampling._kernel import KernelSampler, LeverageSampler
from skdvl.sampling._msr import MSRSampler
from skdvl.sampling._neyman import NeymanSampler
from skdvl.sampling._permutation import AntitheticPermutationSampler, PermutationSampler
from skdvl.sampling._regression_msr import RegressionMSRSampler
from skdvl.sampling._svarm import SVARMSampler
from skdvl.sampling._toggle import AntitheticSampler, OwenSampler, StratifiedSampler, UniformSampler
from skdvl.sampling._truncation import FixedTruncation, RelativeTruncation

__all__ = [
    "BaseSampler", "PermutationSampler", "AntitheticPermutationSampler", "UniformSampler",
    "AntitheticSampler", "OwenSampler", "StratifiedSampler", "MSRSampler", "ExactSampler",
    "RelativeTruncation", "FixedTruncation", "KernelSampler", "LeverageSampler",
    "RegressionMSRSampler", "SVARMSampler", "NeymanSampler", "HybridMSRSampler",
]
