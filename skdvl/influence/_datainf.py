"""DataInf: a closed-form inverse of the damped empirical Fisher, per block.

References
----------
Kwon, Y., Wu, E., Wu, K. and Zou, J. (2023). DataInf: efficiently estimating data
influence in LoRA-tuned LLMs and diffusion models. ICLR 2024.
"""

from __future__ import annotations

import torch

from ._functional import CurvatureOperator, iter_slices, per_sample_grads_batched
from ._solvers import Solver


class DataInfSolver(Solver):
    """DataInf's closed-form inverse of the damped empirical Fisher (Kwon et al., 2023).

    Per block, ``(G + lambda I)^-1 ~ (1 / (n lambda)) sum_i (I - g_i g_i^T /
    (lambda + ||g_i||^2))`` (Eq. (5)), where ``G = (1/n) sum_i g_i g_i^T`` and ``g_i`` are
    the training gradients restricted to the block.

    Notes
    -----
    The same ``lambda`` (``regularization``) is used for every block, where Kwon et al.
    pick ``0.1 * mean_i ||g_i||^2`` per layer. The training gradients are kept in memory
    (``n x p`` numbers).
    """

    name = "datainf"
    factorised = True

    def __init__(self, regularization: float, blocks: list[slice] | None = None):
        super().__init__(regularization)
        self.blocks = blocks

    def fit(self, op: CurvatureOperator, generator=None) -> DataInfSolver:
        self.grads_ = per_sample_grads_batched(op.model, op.X, op.y, op.batch_size)
        self.blocks_ = self.blocks or [slice(0, op.dim)]
        # ||g_i||^2 per block, once (every solve and quadratic form needs them)
        self.sq_norms_ = [torch.linalg.vecdot(self.grads_[:, b], self.grads_[:, b], dim=1)
                          for b in self.blocks_]
        return self

    def solve(self, R: torch.Tensor) -> torch.Tensor:
        lam, n = self.regularization, len(self.grads_)
        out = torch.empty_like(R)
        for b, sq_norms in zip(self.blocks_, self.sq_norms_):
            Gb = self.grads_[:, b]
            w = (R[:, b] @ Gb.T) / (lam + sq_norms)
            out[:, b] = (R[:, b] - w @ Gb / n) / lam
        return out

    def quadratic_form(self, R: torch.Tensor) -> torch.Tensor:
        """``r^T A_DataInf^-1 r`` per row, from Eq. (5) of Kwon et al. (2023) directly.

        Per block, ``(||r||^2 - (1/n) sum_j (r^T g_j)^2 / (lambda + ||g_j||^2)) /
        lambda``: one product with the training gradients (``k n p``) instead of the
        solve's two.
        """
        lam, n = self.regularization, len(self.grads_)
        out = R.new_zeros(len(R))
        for b, sq_norms in zip(self.blocks_, self.sq_norms_):
            Rb = R[:, b]
            K = Rb @ self.grads_[:, b].T
            r_sq = torch.linalg.vecdot(Rb, Rb, dim=1)
            out += (r_sq - (K * K / (lam + sq_norms)).sum(1) / n) / lam
        return out

    def training_quadratic_form(self, chunk_size: int) -> torch.Tensor:
        """:meth:`quadratic_form` of the kept training gradients themselves, shape ``(n,)``.

        The products ``g_i^T g_j`` are symmetric in ``i, j``: each pair of chunks of
        ``chunk_size`` rows is multiplied once and serves both (about half the
        ``n^2 p`` of ``quadratic_form(grads_)``).
        """
        lam, n = self.regularization, len(self.grads_)
        out = self.grads_.new_zeros(n)
        chunks = list(iter_slices(n, max(chunk_size, 1)))
        for b, sq_norms in zip(self.blocks_, self.sq_norms_):
            Gb, inv = self.grads_[:, b], 1 / (lam + sq_norms)
            cross = torch.zeros_like(out)  # sum_j (g_i^T g_j)^2 / (lam + ||g_j||^2)
            for i, si in enumerate(chunks):
                for sj in chunks[i:]:
                    K2 = (Gb[si] @ Gb[sj].T) ** 2
                    cross[si] += K2 @ inv[sj]
                    if sj != si:
                        cross[sj] += K2.T @ inv[si]
            out += (sq_norms - cross / n) / lam
        return out
