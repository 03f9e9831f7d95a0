"""DataInf: a closed-form inverse of the damped empirical Fisher, per block.

References
----------
Kwon, Y., Wu, E., Wu, K. and Zou, J. (2023). DataInf: efficiently estimating data
influence in LoRA-tuned LLMs and diffusion models. ICLR 2024.
"""

from __future__ import annotations

import torch

from ._functional import CurvatureOperator, per_sample_grads_batched
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

    def __init__(self, regularization: float, blocks: list[slice] | None = None):
        super().__init__(regularization)
        self.blocks = blocks

    def fit(self, op: CurvatureOperator, generator=None) -> DataInfSolver:
        self.grads_ = per_sample_grads_batched(op.model, op.X, op.y, op.batch_size)
        self.blocks_ = self.blocks or [slice(0, op.dim)]
        return self

    def solve(self, R: torch.Tensor) -> torch.Tensor:
        lam, n = self.regularization, len(self.grads_)
        out = torch.empty_like(R)
        for b in self.blocks_:
            Gb = self.grads_[:, b]
            w = (R[:, b] @ Gb.T) / (lam + (Gb * Gb).sum(1))
            out[:, b] = (R[:, b] - w @ Gb / n) / lam
        return out
