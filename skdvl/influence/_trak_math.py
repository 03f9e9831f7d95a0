"""The math of TRAK: output functions, the projected kernel and its regularization.

Pure functions on tensors, used by :class:`~skdvl.influence._trak.ProjectedAttribution`.

TRAK (Park et al., 2023) linearises the trained model around its parameters: a row's
*output function* ``f`` (for a softmax classifier the margin ``log(p_y / (1 - p_y))``)
has the (projected) gradient ``phi``, and one Newton step of the linearised
logistic model with the loss weights ``R`` dropped (Section 3 and Algorithm 1) gives the
effect of up-weighting training row ``i`` on the output of test row ``t``

    tau[t, i] = phi_t^T (Phi^T Phi + lambda I)^-1 phi_i q_i,

where ``Phi`` stacks the training rows' ``phi`` and ``q_i = -dl_i/df_i`` (``1 - p_i`` for
the cross-entropy, the matrix ``Q`` of the paper).

References
----------
Park, S. M., Georgiev, K., Ilyas, A., Leclerc, G. and Madry, A. (2023). TRAK: Attributing
model behavior at scale. ICML. arXiv:2303.14186.
Golub, G. H., Heath, M. and Wahba, G. (1979). Generalized cross-validation as a method
for choosing a good ridge parameter. Technometrics 21(2).
Schraudolph, N. N. (2002). Fast curvature matrix-vector products for second-order
gradient descent. Neural Computation 14(7).
Martens, J. (2020). New insights and perspectives on the natural gradient method. JMLR 21.

Notes
-----
The regularization ``lambda``. TRAK inverts ``Phi^T Phi`` itself, which needs ``k < n``
and is ill-conditioned near ``k = n``. ``"auto"`` sets ``lambda = mean_i ||phi_i||^2``: a
training row orthogonal to all others, of average norm, then has leverage
``phi^T (Phi^T Phi + lambda I)^-1 phi = 1/2``, so that no direction spanned by a few rows
is inverted at full strength. It is the mean of the ``n`` eigenvalues of
``Phi Phi^T``: positive whenever one feature is, also for ``n < k``. ``"gcv"`` chooses
the ``lambda`` that best predicts ``q`` from ``Phi`` out of sample; on the digits MLP of
``benchmarks/bench_trak_lds.py`` it chose ``lambda`` 100 times too small (k = 2048) or
10^4 times too large (k = 512) for attribution (LDS 0.37 against 0.56 with ``"auto"``,
k = 2048, one model): prediction and attribution want different ``lambda``.

The Gauss-Newton kernel (:func:`gauss_newton_rows`, :meth:`ProjectedKernel.from_gram`)
replaces ``Phi^T Phi`` by ``G = sum_i P^T J_i^T H_i J_i P``, the loss weights ``R`` that
TRAK drops kept for every output; ``"auto"`` is ``tr(G) / n`` by the same leverage argument.
On the digits benchmark a holdout of training rows chose 0.3 times ``"auto"`` for both
kernels (``benchmarks/README.md``); ``"auto"`` is left at the leverage-1/2 rule, which
costs nothing, while the holdout rule (:func:`skdvl.evaluation.holdout_regularization`)
costs one attribution per candidate and the refits of an LDS.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch.func import grad, vmap

from ._solvers import NotPositiveDefiniteError

OUTPUTS = ("auto", "margin", "prediction", "loss")
#: Grid of GCV, relative to the largest eigenvalue of the kernel (0.1 decades).
_GCV_GRID = torch.logspace(-8, 2, 101, dtype=torch.float64)


# ----------------------------------------------------------------- output functions
class RowFunction:
    """The output function ``f`` of TRAK for one row, and ``dl/df``.

    Parameters
    ----------
    output : {"margin", "prediction", "loss"}
        ``"margin"``: ``log(p_y / (1 - p_y)) = o_y - logsumexp_{j != y} o_j`` of the
        logits ``o`` and class index ``y`` (TRAK's output function for classification),
        for which ``dl/df = -(1 - p_y)`` when the loss is the cross-entropy of the logits (checked
        by :meth:`check`). ``"prediction"``: the one output of the row (regression), with
        ``dl/df`` by autograd. ``"loss"``: the loss itself (``dl/df = 1``; the kernel is
        then the empirical Fisher).
    loss : callable
        ``loss(output, target)`` of a batch.
    """

    def __init__(self, output: str, loss: Callable):
        self.output, self.loss = output, loss

    def _row_loss(self, o: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.loss(o.unsqueeze(0), t.unsqueeze(0))

    def values(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``f`` of each row, shape ``(n,)`` (differentiable)."""
        if self.output == "margin":
            mask = torch.arange(out.shape[-1], device=out.device) == y.unsqueeze(-1)
            own = (out * mask).sum(-1)
            return own - out.masked_fill(mask, float("-inf")).logsumexp(-1)
        if self.output == "prediction":
            return out.reshape(len(out))
        return vmap(self._row_loss)(out, y)

    def mean(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The mean of :meth:`values` (the "loss" of :class:`FlatModel`)."""
        return self.values(out, y).mean()

    def derivative(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``dl/df`` of each row, shape ``(n,)``."""
        out = out.detach()
        if self.output == "margin":
            p = out.softmax(-1).gather(-1, y.reshape(-1, 1)).reshape(-1)
            return -(1.0 - p)
        if self.output == "prediction":
            return vmap(grad(self._row_loss))(out, y).reshape(len(out))
        return out.new_ones(len(out))

    def check(self, out: torch.Tensor, y: torch.Tensor) -> None:
        """Refuse an output function that the model's output and loss do not support."""
        if self.output == "prediction" and out[0].numel() != 1:
            raise ValueError(
                "output='prediction' needs one output per row (regression); the model "
                f"gives {tuple(out.shape[1:])} per row. Use output='margin' for a "
                "classifier or output='loss'."
            )
        if self.output != "margin":
            return
        if out.dim() != 2 or y.dim() != 1 or y.is_floating_point():
            raise ValueError(
                "output='margin' needs logits of shape (n, n_classes) and integer class "
                f"indices y of shape (n,); got outputs {tuple(out.shape)} and y "
                f"{tuple(y.shape)} of dtype {y.dtype}. Use output='prediction' or 'loss'."
            )
        out = out.detach()
        dl = vmap(grad(self._row_loss))(out, y)
        df = vmap(grad(lambda o, t: self.values(o.unsqueeze(0), t.unsqueeze(0))[0]))(out, y)
        expected = self.derivative(out, y).unsqueeze(1) * df
        if not torch.allclose(dl, expected, rtol=1e-3, atol=1e-5 * float(dl.abs().max()) + 1e-7):
            raise ValueError(
                "output='margin' is TRAK's margin log(p / (1 - p)) of softmax logits and "
                "assumes the cross-entropy loss of the logits (dl/df = -(1 - p)); the "
                "gradient of this loss with respect to the output differs (e.g. a module "
                "that outputs probabilities, or another loss). Use output='loss' or "
                "output='prediction'."
            )


def resolve_output(output: str, out: torch.Tensor, y: torch.Tensor) -> str:
    """``"auto"``: the margin for logits and class indices, one output: the prediction,
    else the loss."""
    if output != "auto":
        return output
    if out.dim() == 2 and out.shape[1] > 1 and y.dim() == 1 and not y.is_floating_point():
        return "margin"
    return "prediction" if out[0].numel() == 1 else "loss"


# ----------------------------------------------------------------------- the kernel
class ProjectedKernel:
    """``Phi_test -> Phi_test (Phi^T Phi + lambda I)^-1 Phi^T`` for one model.

    Works in the smaller of the two spaces: with ``n <= k`` rows, the push-through
    identity ``(Phi^T Phi + lambda I)^-1 Phi^T = Phi^T (Phi Phi^T + lambda I)^-1`` and the
    ``n x n`` Gram matrix; else the ``k x k`` kernel. Float64 throughout. Built from the
    training features in one piece (the constructor) or chunk by chunk
    (:meth:`from_chunks`: ``k x k`` memory, whatever ``n``).

    Parameters
    ----------
    Phi : torch.Tensor of shape (n, k)
        The projected training features.
    q : torch.Tensor of shape (n,)
        The response of the generalised cross-validation, ``-dl/df`` of the rows.
    regularization : float, "auto" or "gcv"
        ``"auto"``: ``lambda = tr(Phi^T Phi) / n = mean_i ||phi_i||^2``, the mean
        eigenvalue of the ``n x n`` Gram matrix (see :func:`gcv_curve` for ``"gcv"``).

    Attributes
    ----------
    regularization_ : float
        The ``lambda`` used.
    eigenvalues_ : torch.Tensor or None
        Eigenvalues of the smaller Gram matrix, descending (None for a curvature kernel
        inverted by Cholesky, see :meth:`from_gram`).
    gcv_ : torch.Tensor of shape (n_grid, 2) or None
        ``(lambda, GCV(lambda))`` on the grid searched.
    rows : bool
        Whether the kernel works in the row space (``n <= k``).
    inverse : torch.Tensor
        ``(Phi Phi^T + lambda I)^-1`` (rows) or ``(Phi^T Phi + lambda I)^-1``.
    """

    eigenvalues_: torch.Tensor | None
    eigenvectors_: torch.Tensor | None
    gcv_: torch.Tensor | None

    def __init__(self, Phi: torch.Tensor, q: torch.Tensor, regularization):
        self._fit(*_kernel_inputs([(Phi, q)], len(Phi), Phi.shape[1]), regularization)

    @classmethod
    def from_chunks(cls, chunks, n: int, k: int, regularization) -> ProjectedKernel:
        """The kernel of ``n`` rows of ``k`` features given as ``(Phi_c, q_c)`` chunks.

        With ``n > k``, the ``k x k`` products ``Phi_c^T Phi_c`` and ``Phi_c^T q_c`` are
        summed chunk by chunk; with ``n <= k`` the chunks are joined (at most ``k x k``
        values). Equal to the constructor on the joined rows, up to the order of the
        sums.
        """
        self = cls.__new__(cls)
        self._fit(*_kernel_inputs(chunks, n, k), regularization)
        return self

    @classmethod
    def from_gram(cls, gram: torch.Tensor, n: int, regularization, psd: bool = True,
                  solver: str = "auto") -> ProjectedKernel:
        """The kernel ``(G + lambda I)^-1`` of a given ``k x k`` curvature ``G`` of ``n`` rows.

        Used for the Gauss-Newton kernel (:func:`gauss_newton_rows`) and the projected
        curvature of influence, always in the feature space. ``"auto"``: ``lambda =
        tr(G) / n``; ``"gcv"`` is refused (there is no response to cross-validate).
        ``psd=False`` (a projected Hessian): the eigenvalues are kept as they are, and
        :class:`~skdvl.influence.NotPositiveDefiniteError` is raised when ``G + lambda I``
        is not positive definite, naming the regularization needed.
        ``solver="auto"``: a positive semi-definite ``G`` (``psd``) is inverted by a
        Cholesky factorisation (its eigenvalues are then computed only if
        :meth:`regularized` needs them; ``eigenvalues_`` is None until then);
        ``"eigh"``: always by the eigendecomposition (equal to round-off).
        """
        if regularization == "gcv":
            raise ValueError(
                "regularization='gcv' needs TRAK's own kernel (kernel='outputs'); with "
                "a given curvature use 'auto' or a float.")
        self = cls.__new__(cls)
        gram = gram.to(torch.float64)
        trace = float(torch.trace(gram))
        if psd and solver != "eigh" and self._cholesky(gram, trace, n, regularization):
            return self
        self._fit(gram, gram.new_zeros(len(gram)), 0.0, trace, n, False, regularization,
                  clamp=psd)
        return self

    def _cholesky(self, gram: torch.Tensor, trace: float, n: int, regularization) -> bool:
        """``(G + lambda I)^-1`` by a Cholesky factorisation (``k^3 / 3`` operations and
        the inverse, several times cheaper than the eigendecomposition); False where the
        eigendecomposition must decide (a lambda below ``1e-12 tr(G)``, a zero ``G`` or a
        factorisation that fails), which then also names the regularization needed."""
        lam = trace / n if regularization == "auto" else float(regularization)
        if not trace > 0 or not lam > 1e-12 * trace:
            return False
        eye = torch.eye(len(gram), dtype=gram.dtype, device=gram.device)
        L, info = torch.linalg.cholesky_ex(gram + lam * eye)
        if int(info) != 0:
            return False
        self.rows, self.gcv_, self.regularization_ = False, None, lam
        self.eigenvalues_ = self.eigenvectors_ = None
        self._gram = gram
        self.inverse = torch.cholesky_inverse(L).contiguous()  # row-major, as when reopened
        return True

    @classmethod
    def from_state(cls, state: dict) -> ProjectedKernel:
        """The kernel saved by :meth:`state` (a reopened gradient store)."""
        self = cls.__new__(cls)
        self.rows = bool(state["rows"])
        self.eigenvectors_ = None
        self.regularization_ = float(state["regularization"])
        evals = state["eigenvalues"]
        self.eigenvalues_ = (None if evals is None
                             else torch.as_tensor(evals, dtype=torch.float64))
        self.inverse = torch.as_tensor(state["inverse"], dtype=torch.float64)
        gcv = state.get("gcv")
        self.gcv_ = None if gcv is None else torch.as_tensor(gcv, dtype=torch.float64)
        return self

    def state(self) -> dict:
        """The arrays that define the kernel (numpy), for :meth:`from_state`."""
        return {"rows": self.rows, "regularization": self.regularization_,
                "eigenvalues": (None if self.eigenvalues_ is None
                                else self.eigenvalues_.cpu().numpy()),
                "inverse": self.inverse.cpu().numpy(),
                "gcv": None if self.gcv_ is None else self.gcv_.numpy()}

    def _fit(self, gram: torch.Tensor, rhs: torch.Tensor, q_norm2: float, sq_sum: float,
             n: int, rows: bool, regularization, clamp: bool = True) -> None:
        self.rows = rows
        evals, evecs = torch.linalg.eigh(gram)
        evals, evecs = evals.flip(0), evecs.flip(1)
        if clamp:  # a Gram matrix: negative eigenvalues are rounding
            evals = evals.clamp_min(0)
        self.eigenvalues_ = evals
        if evals[0] <= 0:
            raise ValueError("The projected training gradients are all zero; the kernel of "
                             "TRAK is zero and attributions are undefined.")
        if regularization == "auto":
            self.gcv_, lam = None, sq_sum / n
        elif regularization == "gcv":
            coef2 = (evecs.T @ rhs).square()  # (U^T q)^2, or (V^T Phi^T q)^2
            self.gcv_ = gcv_curve(evals, coef2, q_norm2, n, rows)
            lam = float(self.gcv_[int(torch.argmin(self.gcv_[:, 1])), 0])
        else:
            self.gcv_, lam = None, float(regularization)
        self.regularization_ = lam
        _check_definite(evals, lam)
        self.eigenvectors_ = evecs
        # the inverse applied in the smaller space, as one symmetric matrix
        self.inverse = (evecs / (evals + lam)) @ evecs.T

    def regularized(self, regularization: float) -> ProjectedKernel:
        """The same kernel with another (float) ``lambda``, from the eigendecomposition.

        Only for a kernel built from features (not one reopened :meth:`from_state`,
        which keeps no eigenvectors).
        """
        evecs = getattr(self, "eigenvectors_", None)
        gram = getattr(self, "_gram", None)
        if evecs is None and gram is not None:  # a Cholesky kernel: decompose it now
            evals, evecs = torch.linalg.eigh(gram)
            self.eigenvalues_, self.eigenvectors_ = evals.flip(0).clamp_min(0), evecs.flip(1)
            evecs = self.eigenvectors_
        evals = self.eigenvalues_
        if evecs is None or evals is None:
            raise ValueError("A kernel reopened from a gradient store keeps no "
                             "eigenvectors; refit it to change its regularization.")
        new = copy.copy(self)
        new.gcv_, new.regularization_ = None, float(regularization)
        _check_definite(evals, new.regularization_)
        new.inverse = (evecs / (evals + new.regularization_)) @ evecs.T
        return new

    def left(self, Phi_test: torch.Tensor, chunks) -> torch.Tensor:
        """The test side: ``Phi_test K^-1`` (``(n_test, k)``), or with ``n <= k``
        ``Phi_test Phi^T (Phi Phi^T + lambda I)^-1`` (``(n_test, n)``), from the training
        features given as chunks of rows (read only when ``n <= k``)."""
        Phi_test = Phi_test.to(torch.float64)
        inverse = self.inverse.to(Phi_test.device)
        if not self.rows:
            return Phi_test @ inverse
        cross = torch.cat([Phi_test @ c.to(Phi_test).T for c in chunks], dim=1)
        return cross @ inverse

    def block(self, left: torch.Tensor, Phi_chunk: torch.Tensor | None,
              rows: slice) -> torch.Tensor:
        """The scores of the training rows ``rows`` (features ``Phi_chunk``, unused and
        possibly None with ``n <= k``), from :meth:`left`: ``(n_test, len(rows))``."""
        if self.rows:
            return left[:, rows]
        if Phi_chunk is None:
            raise ValueError("ProjectedKernel.block needs the chunk's features when n > k.")
        return left @ Phi_chunk.to(left).T

    def apply(self, Phi_test: torch.Tensor, Phi: torch.Tensor) -> torch.Tensor:
        """``Phi_test (Phi^T Phi + lambda I)^-1 Phi^T``, shape ``(n_test, n)``."""
        return self.block(self.left(Phi_test, [Phi]), Phi, slice(None))


def _check_definite(evals: torch.Tensor, lam: float) -> None:
    """Refuse ``K + lambda I`` with a non-positive eigenvalue (beyond ``1e-12`` relative)."""
    smallest = float(evals[-1]) + lam
    if smallest > 1e-12 * float(evals[0]):
        return
    raise NotPositiveDefiniteError(
        "The projected curvature plus 'regularization' is not positive definite "
        f"(smallest eigenvalue of the curvature {float(evals[-1]):.3g}, largest "
        f"{float(evals[0]):.3g}, with regularization={lam:.3g}), so the kernel cannot be "
        f"inverted. Increase 'regularization' above {max(-float(evals[-1]), 0):.3g} (and "
        "above 0 when fewer rows than dimensions make it singular), or use the "
        "Gauss-Newton curvature.")


def output_hessian_factors(H: torch.Tensor) -> torch.Tensor:
    """``A`` with ``A_i A_i^T = H_i`` for a batch of symmetric output Hessians ``(n, c, c)``.

    ``A_i = V_i diag(sqrt(max(e_i, 0)))`` from the eigendecomposition ``H_i = V_i diag(e_i)
    V_i^T``; negative eigenvalues (rounding, for a convex loss) are clipped to zero, as in
    :meth:`~skdvl.influence._functional.FlatModel.linearize` with ``"gauss_newton"``.
    """
    evals, evecs = torch.linalg.eigh(H.to(torch.float64))
    return evecs * evals.clamp_min(0).sqrt().unsqueeze(1)


def gauss_newton_rows(J: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """Rows ``R`` with ``R^T R = sum_i J_i^T H_i J_i``, the Gauss-Newton matrix.

    ``J`` of shape ``(n, c, k)``: the projected Jacobians of the ``c`` outputs of each
    row (``P^T J_i^T`` for the projection ``P``); ``A`` of shape ``(n, c, c)``: the
    factors of the output Hessians (:func:`output_hessian_factors`). Returns
    ``A_i^T J_i`` stacked, shape ``(n * c, k)``, float64 (Schraudolph, 2002; Martens,
    2020, Section 8).
    """
    R = torch.einsum("ncj,nck->njk", A.to(torch.float64), J.to(torch.float64))
    return R.reshape(-1, J.shape[-1])


def combine_scores(method: str, total, d_mean, qbar, n_models: int):
    """The scores from ``total``, the per-model scores summed over the ``n_models`` models.

    TRAK (Park et al., 2023, Algorithm 1, with ``Q`` averaged over the models):
    ``d_mean * (total / n_models) * qbar``, with ``total`` the sum of
    ``phi_t^T K_m^-1 phi_i``, ``d_mean`` the mean ``dl/df`` of the test rows and
    ``qbar`` the mean ``-dl/df`` of the training rows (shapes that broadcast). TracIn
    (Pruthi et al., 2020): ``total``, the learning-rate-weighted sum over checkpoints.
    Gradient similarity and influence with projected curvature: the mean over the models.
    """
    if method == "trak":
        return d_mean * (total / n_models) * qbar
    if method == "tracin":
        return total
    return total / n_models


def _kernel_inputs(chunks, n: int, k: int
                   ) -> tuple[torch.Tensor, torch.Tensor, float, float, int, bool]:
    """``(gram, rhs, ||q||^2, sum ||phi||^2, n, rows)`` of the training features.

    ``rows`` (``n <= k``): ``gram = Phi Phi^T`` and ``rhs = q``; else ``gram = Phi^T Phi``
    and ``rhs = Phi^T q``, summed over the chunks.
    """
    rows = n <= k
    if rows:
        parts = [(c.to(torch.float64), qc.to(torch.float64)) for c, qc in chunks]
        Phi = torch.cat([c for c, _ in parts])
        q = torch.cat([qc for _, qc in parts])
        return Phi @ Phi.T, q, float(q.square().sum()), float(Phi.square().sum()), n, True
    gram = torch.zeros(k, k, dtype=torch.float64)
    rhs = torch.zeros(k, dtype=torch.float64)
    q_norm2 = sq_sum = 0.0
    for c, qc in chunks:
        c, qc = c.to(torch.float64), qc.to(torch.float64)
        gram = gram.to(c.device)
        rhs = rhs.to(c.device)
        gram += c.T @ c
        rhs += c.T @ qc
        q_norm2 += float(qc.square().sum())
        sq_sum += float(c.square().sum())
    return gram, rhs, q_norm2, sq_sum, n, False


def gcv_curve(evals: torch.Tensor, coef2: torch.Tensor, q_norm2: float, n: int, rows: bool,
              grid: torch.Tensor | None = None) -> torch.Tensor:
    """Generalised cross-validation of the ridge regression of ``q`` on ``Phi``.

    ``GCV(lambda) = n ||(I - H) q||^2 / tr(I - H)^2`` with the hat matrix
    ``H = Phi (Phi^T Phi + lambda I)^-1 Phi^T = U diag(e / (e + lambda)) U^T``
    (Golub, Heath & Wahba, 1979), from the eigenvalues ``e`` of the Gram
    matrix and ``c = U^T q``: ``tr(I - H) = n - sum_j e_j / (e_j + lambda)`` and
    ``||(I - H) q||^2 = sum_j (lambda / (e_j + lambda))^2 c_j^2`` when the ``n`` vectors
    ``U`` are complete (``rows``; ``coef2 = c^2``), else ``||q||^2 - sum_j w_j^2 (e_j +
    2 lambda) / (e_j + lambda)^2`` with ``w_j^2 = e_j c_j^2`` (``coef2 = w^2``), which
    divides by no eigenvalue (those of the null space are rounding). The grid is
    ``evals.max()`` times ``10^-8 ... 10^2``. Returns ``(lambda, GCV)`` pairs, shape
    ``(n_grid, 2)``.
    """
    lams = (evals[0] * (_GCV_GRID if grid is None else grid)).unsqueeze(1)
    if rows:
        residual = ((lams / (evals + lams)).square() * coef2).sum(1)
    else:
        residual = q_norm2 - (coef2 * (evals + 2 * lams) / (evals + lams).square()).sum(1)
    trace = n - (evals / (evals + lams)).sum(1)
    gcv = n * residual.clamp_min(0) / trace.clamp_min(1e-300).square()
    return torch.stack([lams[:, 0], gcv], dim=1)
