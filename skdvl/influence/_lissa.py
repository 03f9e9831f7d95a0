"""LiSSA: the stochastic Neumann series of Agarwal et al. (2017), with averaging.

References
----------
Agarwal, N., Bullins, B. and Hazan, E. (2017). Second-order stochastic optimization for
machine learning in linear time. JMLR 18.
Polyak, B. T. and Juditsky, A. B. (1992). Acceleration of stochastic approximation by
averaging. SIAM J. Control and Optimization 30(4).
"""

from __future__ import annotations

import torch

from ._functional import CurvatureOperator
from ._solvers import Solver, check_positive_definite


def _power_iteration(op: CurvatureOperator, n_iter: int, generator,
                     batch: int | None = None) -> float:
    """Largest-magnitude eigenvalue of ``C`` (or of one mini-batch's curvature)."""
    v = torch.randn(1, op.dim, generator=generator, dtype=op.dtype).to(op.device)
    lam = 0.0
    for _ in range(n_iter):
        v = v / v.norm()
        w = op.matmat(v, batch=batch)
        lam = float((w * v).sum())
        if not bool(w.norm() > 0):  # zero curvature (e.g. an L1 loss)
            return 0.0
        v = w
    return abs(lam)


class LiSSASolver(Solver):
    """Linear-time stochastic second-order algorithm (Agarwal et al., 2017, Alg. 1).

    Iterates ``x <- r + x - (C_b + lambda I) x / scale`` with a mini-batch ``b`` of the
    training rows at each step, and returns ``x / scale``. ``scale`` must exceed the
    largest eigenvalue of ``C + lambda I``; when None it is estimated by power iteration
    and multiplied by 1.5, on up to 8 of the mini-batches (the largest of their top
    eigenvalues); an iteration that diverges anyway raises a ValueError.

    A negative eigenvalue of ``C + lambda I`` makes the series diverge, but so slowly
    (by a factor ``1 + |mu| / scale`` per step) that it would go unnoticed: unless the
    curvature is known to be positive semi-definite, :meth:`fit` checks with a few
    Lanczos steps and raises :class:`NotPositiveDefiniteError`. No factorisation is kept,
    so :meth:`quadratic_form` solves for each row (hence the lazy
    ``InfluenceScorer.values_`` of this method).

    Notes
    -----
    Departures from Agarwal et al.:

    - Mini-batches: the rows are shuffled once and cut into fixed mini-batches of
      ``op.batch_size`` rows; each step takes the next mini-batch of a random order that
      is redrawn every epoch (sampling without replacement, as a shuffled data loader
      does). Fixed mini-batches let the first-order pass on each of them be done once
      (:meth:`CurvatureOperator.matmat`), so a step costs only the second-order pass.
    - Averaging and stopping: with mini-batches the iterate never settles; it fluctuates
      around the solution, so a relative change per step never falls below a small
      ``rtol``. The iterates are therefore averaged over windows of ``n_batches``
      steps clipped to [20, 50] (a whole number of epochs on small data; short enough
      that ``maxiter`` holds several windows on large data; Polyak & Juditsky, 1992).
      A right-hand side stops when the relative change between consecutive window means
      falls below ``rtol`` (then its last iterate is returned) or stops decreasing, which
      means that the noise floor is reached (then the mean of its last two windows is
      returned, which averages the noise out). A right-hand side that reaches ``maxiter``
      first returns its last iterate and is marked in ``converged_``. A single chain is
      run.
    """

    name = "lissa"

    def __init__(self, regularization, maxiter, rtol, scale=None):
        super().__init__(regularization)
        self.maxiter, self.rtol = maxiter, rtol
        self.scale = scale

    def fit(self, op: CurvatureOperator, generator=None) -> LiSSASolver:
        generator = torch.Generator().manual_seed(0) if generator is None else generator
        check_positive_definite(op, self.regularization, self.name, generator)
        # Every solve replays the same batch order, so a row's solution does not depend
        # on the other rows solved with it nor on how many solves came before.
        self.order_seed_ = int(torch.randint(2**62, (1,), generator=generator))
        self.op_ = op.shuffled(generator)
        if self.scale is None:
            # Each step applies one mini-batch's curvature, so the scale must bound those,
            # not only their mean: the largest top eigenvalue over up to 8 batches.
            n_batches = len(self.op_.batches)
            picks = torch.linspace(0, n_batches - 1, min(n_batches, 8)).round().long()
            top = max(_power_iteration(self.op_, 20, generator, batch=int(b))
                      for b in picks.unique())
            self.scale_ = 1.5 * (top + self.regularization)
        else:
            self.scale_ = float(self.scale)
        return self

    def solve(self, R: torch.Tensor) -> torch.Tensor:
        n_batches = len(self.op_.batches)
        window = min(max(n_batches, 20), 50)
        k = len(R)
        out = torch.empty_like(R)
        self.n_iter_ = torch.zeros(k, dtype=torch.long)
        self.converged_ = torch.zeros(k, dtype=torch.bool)
        # The active rows as compact arrays (no gather or scatter per step), compressed
        # when rows stop, which only happens at the end of a window.
        rows = torch.arange(k, device=R.device)
        Ra, Xa = R, R.clone()
        window_sum, last_mean = torch.zeros_like(R), torch.zeros_like(R)
        last_change = torch.full((k,), float("inf"), dtype=R.dtype, device=R.device)
        # x <- r + x - (C_b + lambda I) x / scale  ==  (1 - lambda / scale) x + r - C_b x / scale
        shrink, inv_scale = 1.0 - self.regularization / self.scale_, 1.0 / self.scale_
        generator = torch.Generator().manual_seed(self.order_seed_)
        order = torch.randperm(n_batches, generator=generator)
        step = 0
        for step in range(self.maxiter):
            if len(rows) == 0:
                break
            if step % n_batches == 0 and step > 0:
                order = torch.randperm(n_batches, generator=generator)
            CX = self.op_.matmat(Xa, batch=int(order[step % n_batches]))
            Xa.mul_(shrink).add_(Ra).add_(CX, alpha=-inv_scale)
            window_sum += Xa
            if (step + 1) % window:
                continue
            self._check_divergence(Xa, Ra, step)
            mean = window_sum / window
            change = (mean - last_mean).norm(dim=1) / mean.norm(dim=1).clamp_min(1e-30)
            small, floor = change < self.rtol, change >= last_change
            done = small | floor
            if bool(done.any()):
                averaged = 0.5 * (mean[done] + last_mean[done])
                out[rows[done]] = torch.where(small[done, None], Xa[done], averaged)
                self.converged_[rows[done].cpu()] = True
                self.n_iter_[rows[done].cpu()] = step + 1
                keep = ~done
                rows, Ra, Xa = rows[keep], Ra[keep], Xa[keep]
                mean, change, window_sum = mean[keep], change[keep], window_sum[keep]
            last_mean, last_change = mean, change
            window_sum.zero_()
        if len(rows):
            self._check_divergence(Xa, Ra, step)
            out[rows] = Xa
            self.n_iter_[rows.cpu()] = min(self.maxiter, step + 1)
        return out / self.scale_

    def _check_divergence(self, Xa: torch.Tensor, Ra: torch.Tensor, step: int) -> None:
        """Raise if an iterate is not finite or beyond the bound of a convergent series.

        ``||x|| <= scale ||r|| / lambda_min(C + lambda I)`` for a convergent series; far
        beyond that, it diverges. Checked at the end of every window (and of the run):
        a divergent iterate grows geometrically, so it stays beyond the bound.
        """
        bound = 1e6 * self.scale_ * Ra.norm(dim=1) / self.regularization
        if not bool(torch.isfinite(Xa).all()) or bool((Xa.norm(dim=1) > bound).any()):
            raise ValueError(
                f"LiSSA diverged after {step + 1} steps: a mini-batch's curvature "
                f"exceeds scale={self.scale_:.4g} (the iteration needs scale above the "
                "largest eigenvalue of every mini-batch's curvature plus "
                "regularization). Pass a larger 'scale' or 'batch_size'."
            )
