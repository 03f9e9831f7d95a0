"""Projected per-example gradients and projected curvature matrices (TRAK, influence).

Functions of a module (with its current parameters), a projector and rows, used by
:class:`~skdvl.influence._trak.ProjectedAttribution`.

References
----------
Park, S. M., Georgiev, K., Ilyas, A., Leclerc, G. and Madry, A. (2023). TRAK: Attributing
model behavior at scale. ICML. arXiv:2303.14186.
Schraudolph, N. N. (2002). Fast curvature matrix-vector products for second-order
gradient descent. Neural Computation 14(7).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._functional import CurvatureOperator, FlatModel, iter_slices
from ._projection import FactoredProjector
from ._trak_math import gauss_newton_rows, output_hessian_factors

#: Gradient entries projected per call of a BlockProjector (256 MB of float32).
_GROUP_VALUES = 2**26


def project_rows(module: torch.nn.Module, proj, X: torch.Tensor, y: torch.Tensor,
                 values: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 dtype: torch.dtype, batch_size: int) -> torch.Tensor:
    """Projected gradients of ``values(module(X), y)`` (one value per row), ``(n, k)``.

    ``proj``: a :class:`~skdvl.influence._projection.BlockProjector`, a
    :class:`~skdvl.influence._projection.FactoredProjector` or None (no projection).
    A BlockProjector regenerates its matrix on every call, so per-example gradients are
    projected in groups of up to ``2**26`` entries (at least ``batch_size`` rows).
    """
    flat = FlatModel(module, lambda o, t: values(o, t).mean())
    k = flat.n_params if proj is None else proj.proj_dim
    out = torch.empty(len(X), k, dtype=dtype, device=flat.theta.device)
    if isinstance(proj, FactoredProjector):
        for sl in iter_slices(len(X), batch_size):
            out[sl] = proj.project(module, X[sl], y[sl], values).detach()
        return out
    group = max(batch_size, _GROUP_VALUES // max(flat.n_params, 1))
    for part in iter_slices(len(X), group):
        G = flat.theta.new_empty(part.stop - part.start, flat.n_params)
        with torch.no_grad():
            for sl in iter_slices(len(G), batch_size):
                G[sl] = flat.per_sample_grads(X[part][sl], y[part][sl])
            out[part] = G if proj is None else proj.project(G)
    return out


def gauss_newton_gram(module: torch.nn.Module, loss: Callable, proj, X: torch.Tensor,
                      y: torch.Tensor, batch_size: int, chunk_size: int) -> torch.Tensor:
    """``sum_i P^T J_i^T H_i J_i P`` (float64, ``k x k``), ``chunk_size`` rows at a time.

    ``J_i``: the Jacobian of row ``i``'s (flattened) outputs, projected one output entry
    at a time by :func:`project_rows` (``c`` gradient passes for ``c`` entries); ``H_i``:
    the Hessian of the loss of the row with respect to them
    (:meth:`~skdvl.influence._functional.FlatModel.output_hessians`); the sum is
    ``R^T R`` of :func:`~skdvl.influence._trak_math.gauss_newton_rows`.
    """
    flat = FlatModel(module, loss)
    gram = None
    for sl in iter_slices(len(X), chunk_size):
        with torch.no_grad():
            out = flat.forward(flat.theta, X[sl])
        A = output_hessian_factors(flat.output_hessians(out, y[sl]))
        if isinstance(proj, FactoredProjector):
            part = factored_gauss_newton(module, proj, X[sl], y[sl], A, batch_size)
            if part is not None:
                gram = part if gram is None else gram + part
                continue
        J = torch.stack([project_rows(module, proj, X[sl], y[sl], _output_entry(c),
                                      flat.theta.dtype, batch_size)
                         for c in range(A.shape[1])], dim=1)
        R = gauss_newton_rows(J, A)
        gram = R.T @ R if gram is None else gram + R.T @ R
    if gram is None:
        raise ValueError("The Gauss-Newton kernel needs at least one training row.")
    return gram


def factored_gauss_newton(module: torch.nn.Module, proj: FactoredProjector, X: torch.Tensor,
                          y: torch.Tensor, A: torch.Tensor, batch_size: int
                          ) -> torch.Tensor | None:
    """``sum_i P^T J_i^T H_i J_i P`` for the factored projection, without the ``k``-vectors.

    With one position per row in every layer, output ``c``'s projected Jacobian row in
    layer ``l`` is ``u_icl kron v_il`` (:meth:`FactoredProjector.factors`: ``u`` its
    projected output gradient, ``v`` its projected input, the same for every ``c``), so
    with ``H_i = A_i A_i^T`` the block ``(l, l')`` of the sum is

        ``sum_i M_i kron (v_il v_il'^T)``, ``M_i = sum_j b_ijl b_ijl'^T``,
        ``b_ijl = sum_c A_icj u_icl``:

    ``2 n k^2`` operations for ``k`` features in all, against ``2 n c k^2`` for ``R^T R``
    (:func:`gauss_newton_rows`), and no ``(n c, k)`` matrix. Returns None when a layer
    has several positions per row (the Kronecker form then does not hold; the caller
    takes the general route). ``A``: :func:`output_hessian_factors` of the rows,
    shape ``(n, c, c)``.
    """
    n_out = A.shape[1]
    sizes = proj.sizes
    offsets = [0]
    for k_out, k_in in sizes:
        offsets.append(offsets[-1] + k_out * k_in)
    gram = torch.zeros(offsets[-1], offsets[-1], dtype=torch.float64, device=A.device)
    widest = max(k_out * k_out + k_in * k_in for k_out, k_in in sizes)
    rows = max(1, min(batch_size, _GROUP_VALUES // 4 // widest))
    for sl in iter_slices(len(X), rows):
        per_output = [proj.factors(module, X[sl], y[sl], _output_entry(c))
                      for c in range(n_out)]
        if any(g.shape[1] != 1 for g, _ in per_output[0]):
            return None
        v = [a[:, 0].to(torch.float64) for _, a in per_output[0]]
        u = [torch.stack([layers[i][0][:, 0] for layers in per_output], dim=1)
             .to(torch.float64) for i in range(len(sizes))]  # (rows, c, k_out)
        b = [torch.einsum("ncj,nca->nja", A[sl].to(torch.float64), ui) for ui in u]
        for i in range(len(sizes)):
            for j in range(i, len(sizes)):
                M = torch.einsum("nka,nkb->nab", b[i], b[j]).reshape(len(v[i]), -1)
                V = (v[i].unsqueeze(2) * v[j].unsqueeze(1)).reshape(len(v[i]), -1)
                (ko, ki), (ko2, ki2) = sizes[i], sizes[j]
                block = (M.T @ V).reshape(ko, ko2, ki, ki2).permute(0, 2, 1, 3)
                block = block.reshape(ko * ki, ko2 * ki2)
                gram[offsets[i]:offsets[i + 1], offsets[j]:offsets[j + 1]] += block
                if j != i:
                    gram[offsets[j]:offsets[j + 1], offsets[i]:offsets[i + 1]] += block.T
    return gram


def projected_hessian(module: torch.nn.Module, loss: Callable, proj, X: torch.Tensor,
                      y: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``P^T H P`` (float64, ``k x k``) for the Hessian ``H`` of the mean loss of the rows.

    ``k`` Hessian-vector products with the columns of ``P`` (Pearlmutter, 1994), by
    :class:`~skdvl.influence._functional.CurvatureOperator`, then projected:
    ``(P^T H) P``. ``P`` is formed (``d x k`` values, refused above ``2**26``), so this is
    for nets of moderate size; ``proj=None`` gives ``H`` itself. Not for the factored
    projection (it projects per-example gradients through the layers, never a vector of
    parameters).

    References
    ----------
    Pearlmutter, B. A. (1994). Fast exact multiplication by the Hessian. Neural
    Computation 6(1).
    """
    flat = FlatModel(module, loss, "hessian")
    op = CurvatureOperator(flat, X, y, batch_size)
    if proj is None:
        H = op.dense().to(torch.float64)
        return 0.5 * (H + H.T)
    if isinstance(proj, FactoredProjector):
        raise ValueError("The projected Hessian needs a projection of parameter vectors; "
                         "projection='factored' projects per-example gradients only. Use "
                         "projection='rademacher' or 'sparse', or the Gauss-Newton curvature.")
    d, k = flat.n_params, proj.proj_dim
    if d * k > _GROUP_VALUES:
        raise ValueError(
            f"The projected Hessian forms the {d} x {k} projection ({d * k} values, more "
            f"than {_GROUP_VALUES}); use the Gauss-Newton curvature "
            "(second_order='gauss_newton') or a smaller proj_dim.")
    P = flat.theta.new_empty(d, k)
    for sl in iter_slices(d, 1024):
        P[sl] = proj.project(torch.eye(sl.stop - sl.start, dtype=P.dtype, device=P.device),
                             start=sl.start)
    PH = op.matmat(P.T.contiguous())  # (k, d): P^T H
    H = proj.project(PH).to(torch.float64)
    return 0.5 * (H + H.T)


def _output_entry(c: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``output -> output[:, c]`` (entry ``c`` of each row's flattened output): its
    gradients are the ``c``-th rows of the Jacobians."""
    def values(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return out.reshape(len(out), -1)[:, c]
    return values
