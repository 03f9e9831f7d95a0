"""Gradients, mixed derivatives and curvature products through :mod:`torch.func`.

Everything here works on a *flat* parameter vector ``theta`` of length ``p``: the
trainable parameters of a module, concatenated in ``named_parameters`` order. The
training objective is the mean per-sample loss

    L(theta) = (1 / n) sum_i l(f(x_i; theta), y_i),

where ``l(., .)`` is the loss applied to a batch of one row, so that losses with
``reduction="mean"`` or ``"sum"`` give the same per-sample value.

References
----------
Koh, P. W. and Liang, P. (2017). Understanding black-box predictions via influence
functions. ICML.
Schraudolph, N. N. (2002). Fast curvature matrix-vector products for second-order
gradient descent. Neural Computation 14(7) (Gauss-Newton products).

Models that are chains of linear layers and elementwise activations take the
hand-written products and per-sample gradients of :mod:`skdvl.influence._mlp` instead
(``FlatModel(..., fast=True)``, which ``InfluenceScorer`` uses); they equal these to
rounding (tested to 1e-10 relative in float64).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from sklearn.utils import gen_batches
from torch.func import functional_call, grad, jacrev, vjp, vmap

from ._mlp import _MAX_OUTPUTS, LinearizedMLP, mlp_chain
from ._mlp import per_sample_grads as _mlp_per_sample_grads

# Upper bound on (tangents x rows) evaluated in one vectorised call. It bounds memory, and
# beyond it the intermediates of the second-order pass fall out of the CPU caches: on the
# benchmark MLP, 2**12 (16 tangents of 256 rows) makes products 15-20% faster than 2**15.
_MAX_ROWS_TIMES_TANGENTS = 2**12
# Identity columns materialised at once by CurvatureOperator.dense (times rows per batch).
_DENSE_ROWS_TIMES_COLUMNS = 2**15


def iter_slices(n: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices of ``range(n)`` of length at most ``batch_size`` (none for 0 rows).

    :func:`sklearn.utils.gen_batches`, which refuses ``n = 0``.
    """
    return gen_batches(n, batch_size) if n > 0 else iter(())


def tangent_chunk(n_rows: int, n_tangents: int) -> int:
    """Number of tangents to push through one vectorised call on ``n_rows`` rows."""
    return max(1, min(n_tangents, _MAX_ROWS_TIMES_TANGENTS // max(n_rows, 1)))


class FlatModel:
    """A module, a loss and its trainable parameters as one flat vector.

    Parameters
    ----------
    module : torch.nn.Module
        The model, in evaluation mode.
    loss : callable
        ``loss(output, target) -> scalar`` for a batch.
    second_order : {"hessian", "gauss_newton"}
        Curvature used by :meth:`linearize`.
    fast : bool, default=False
        Use the hand-written products and per-sample gradients of
        :mod:`skdvl.influence._mlp` when the module is a chain of linear layers and
        elementwise activations with a supported loss (equal to the ``torch.func`` ones
        to rounding; :attr:`chain` is None otherwise).

    Attributes
    ----------
    theta : torch.Tensor of shape (p,)
        Detached copy of the trainable parameters.
    names, shapes : list
        Name and shape of each trainable parameter, in order.
    param_slices : list of slice
        Position of each parameter in ``theta``.
    blocks : list of slice
        One contiguous slice per sub-module that owns trainable parameters.
    chain : list or None
        The layers for the hand-written path (:func:`~skdvl.influence._mlp.mlp_chain`).
    """

    def __init__(self, module: torch.nn.Module, loss: Callable, second_order: str = "hessian",
                 fast: bool = False):
        self.module = module
        self.loss = loss
        self.second_order = second_order
        self.reduction = "mean"
        named = [(k, v) for k, v in module.named_parameters() if v.requires_grad]
        self.names = [k for k, _ in named]
        self.shapes = [v.shape for _, v in named]
        self.theta = torch.cat([v.detach().reshape(-1) for _, v in named])
        frozen = {k: v.detach() for k, v in module.named_parameters() if not v.requires_grad}
        self.buffers = {**frozen, **{k: v for k, v in module.named_buffers()}}
        self.param_slices, start = [], 0
        for s in self.shapes:
            self.param_slices.append(slice(start, start + s.numel()))
            start += s.numel()
        self.blocks = _module_blocks(self.names, self.param_slices)
        self.chain = mlp_chain(module, self.names, loss) if fast else None

    def _fast(self, X: torch.Tensor) -> bool:
        """Whether the hand-written path applies to a batch of inputs ``X``."""
        if self.chain is None or X.dim() != 2 or not X.is_floating_point():
            return False
        n_out = self.shapes[[op for op in self.chain if op[0] == "linear"][-1][1]][0]
        return n_out <= _MAX_OUTPUTS

    @property
    def n_params(self) -> int:
        return self.theta.numel()

    def split(self, theta: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The parameters as views of a flat vector (or of the last axis of a batch)."""
        return tuple(theta[..., sl].view(*theta.shape[:-1], *s)
                     for sl, s in zip(self.param_slices, self.shapes))

    @staticmethod
    def flatten(parts, n_lead: int = 0) -> torch.Tensor:
        """Concatenate per-parameter tensors into flat vectors (``n_lead`` batch axes kept)."""
        return torch.cat([t.reshape(*t.shape[:n_lead], -1) for t in parts], dim=-1)

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        return {**self.buffers, **dict(zip(self.names, self.split(theta)))}

    def forward(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.module, self.unflatten(theta), (x,))

    # The transforms below differentiate with respect to the tuple of parameters, not the
    # flat vector: the backward of slicing a flat vector allocates and adds one zero
    # vector per parameter and row (with the copies it took, per-sample gradients of the
    # benchmark MLP were 3x slower).
    def _call(self, params: tuple, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.module, {**self.buffers, **dict(zip(self.names, params))},
                               (x,))

    def _sample_loss(self, params: tuple, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss(self._call(params, x.unsqueeze(0)), y.unsqueeze(0))

    def _mean_loss(self, params: tuple, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.output_loss(self._call(params, X), y)

    def sample_loss(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Loss of one row (``x`` and ``y`` without the batch axis)."""
        return self._sample_loss(self.split(theta), x, y)

    def output_loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean per-row loss as a function of the model outputs of a batch."""
        value = self.loss(out, y)
        return value / len(out) if self.reduction == "sum" else value

    def check_reduction(self, X: torch.Tensor, y: torch.Tensor) -> None:
        """Find whether the loss averages or sums the per-row losses of a batch."""
        if len(X) < 2:
            return
        X, y = X[:4], y[:4]
        rows = vmap(self.sample_loss, in_dims=(None, 0, 0))(self.theta, X, y)
        batch = self.loss(self.forward(self.theta, X), y)
        for name, ref in (("mean", rows.mean()), ("sum", rows.sum())):
            if torch.allclose(batch, ref, rtol=1e-4, atol=1e-6):
                self.reduction = name
                return
        raise ValueError(
            "The loss of a batch must be the mean or the sum of the losses of its rows "
            f"(got {float(batch):.6g}, mean of rows {float(rows.mean()):.6g}, sum "
            f"{float(rows.sum()):.6g}); weighted losses are not supported."
        )

    # ------------------------------------------------------------------ first order
    def per_sample_grads(self, X: torch.Tensor, y: torch.Tensor,
                         out: torch.Tensor | None = None) -> torch.Tensor:
        """Gradients of each row's loss, shape ``(n, p)`` (written into ``out`` if given)."""
        if self._fast(X):
            out = X.new_empty(len(X), self.n_params) if out is None else out
            _mlp_per_sample_grads(self.chain, self.split(self.theta), X, y, self.output_loss,
                                  self.param_slices, out)
            return out
        parts = vmap(grad(self._sample_loss), in_dims=(None, 0, 0))(
            self.split(self.theta), X, y)
        if out is None:
            return self.flatten(parts, 1)
        for part, sl in zip(parts, self.param_slices):
            out[:, sl] = part.reshape(len(X), -1)
        return out

    def mixed_vjp(self, F: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``F @ d/dx grad_theta l(x_j, y_j)`` for every factor and row.

        Returns shape ``(k, n, *x.shape[1:])``: the derivative with respect to the input
        of ``f_i . grad_theta l(x_j, y_j)``, used by the perturbation influence (Eq. (4)
        of Koh & Liang, 2017).
        """

        params = self.split(self.theta)

        def one_row(x, t):
            _, pullback = vjp(lambda z: self.flatten(grad(self._sample_loss)(params, z, t)), x)
            return vmap(lambda f: pullback(f)[0])(F)

        return vmap(one_row, out_dims=1)(X, y)

    # ----------------------------------------------------------------- second order
    def linearize(self, X: torch.Tensor, y: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """``V -> V @ C_batch`` with the first-order pass on ``(X, y)`` done once.

        For the Hessian, the gradient of the batch loss is differentiated once
        (reverse-over-reverse) and its pull-back is kept, so that later products only
        run the second backward pass, vectorised over the rows of ``V``. For the
        Gauss-Newton matrix see :meth:`_gauss_newton_product`. With :attr:`chain`, the
        hand-written :class:`~skdvl.influence._mlp.LinearizedMLP` instead.
        """
        if self._fast(X):
            return LinearizedMLP(self.chain, self.split(self.theta), X, y, self.output_loss,
                                 self.param_slices,
                                 gauss_newton=self.second_order == "gauss_newton")
        if self.second_order == "gauss_newton":
            return self._gauss_newton_product(X, y)
        g = grad(self._mean_loss)
        _, pullback = vjp(lambda ps: g(ps, X, y), self.split(self.theta))  # type: ignore[misc]
        return _vectorised(lambda v: pullback(self.split(v))[0], self.flatten)

    def output_hessians(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Hessian of each row's loss with respect to that row's output, ``(n, c, c)``.

        ``c`` is the number of output entries of one row. Reverse-over-reverse
        (``torch.func.hessian``, forward-over-reverse, lacks forward derivatives for
        some losses, e.g. ``huber_loss_backward``).
        """
        shape = out.shape[1:]

        def one(o, t):
            return self.loss(o.reshape((1, *shape)), t.unsqueeze(0))

        flat = out.reshape(len(out), -1)
        c = flat.shape[1]
        return vmap(jacrev(jacrev(one)))(flat, y).reshape(len(out), c, c)

    def _gauss_newton_product(self, X: torch.Tensor, y: torch.Tensor):
        """``V -> V @ J^T H J / m`` on a batch of ``m`` rows (Schraudolph, 2002).

        ``J`` is the Jacobian of the outputs with respect to the parameters and ``H`` the
        block-diagonal matrix of the rows' output Hessians (:meth:`output_hessians`),
        computed once, with negative eigenvalues (rounding, for the convex losses that
        ``InfluenceScorer`` admits) clipped to zero, so the product is positive
        semi-definite by construction. ``J^T u`` is the pull-back of the forward pass;
        ``J v`` is the pull-back of that (linear) pull-back, so no forward-mode derivative
        of the loss or the module is needed.
        """
        params = self.split(self.theta)
        out, pullback = vjp(lambda ps: self._call(ps, X), params)  # type: ignore[misc]
        lam, V = torch.linalg.eigh(self.output_hessians(out.detach(), y))
        H = (V * lam.clamp_min(0).unsqueeze(1)) @ V.transpose(1, 2) / len(X)
        _, transpose = vjp(lambda u: pullback(u)[0], torch.zeros_like(out))  # type: ignore[misc]
        m = len(X)

        def one(v):
            jv = transpose(self.split(v))[0].reshape(m, -1)
            hjv = torch.einsum("mij,mj->mi", H, jv).reshape(out.shape)
            return pullback(hjv)[0]

        return _vectorised(one, self.flatten)


def _vectorised(product: Callable, flatten: Callable) -> Callable[[torch.Tensor], torch.Tensor]:
    """``V -> rows of flatten(product(v))`` for the rows ``v`` of ``V``.

    ``torch.func.vmap`` over the rows, except for a single row, which is pushed through
    ``product`` directly: ``vmap``'s per-operator overhead made a single Hessian-vector
    product of the benchmark MLP (12,010 parameters, 256 rows) 2x slower than the plain
    call, and Lanczos (Arnoldi, the definiteness checks) does one product at a time.
    """

    def apply(V: torch.Tensor) -> torch.Tensor:
        if len(V) == 1:
            return flatten(product(V[0])).unsqueeze(0)
        return flatten(vmap(product)(V), 1)

    return apply


def _module_blocks(names: list[str], slices: list[slice]) -> list[slice]:
    """Group consecutive parameters owned by the same sub-module into slices."""
    owners = [n.rsplit(".", 1)[0] if "." in n else "" for n in names]
    blocks: list[slice] = []
    for i, (owner, sl) in enumerate(zip(owners, slices)):
        if i > 0 and owner == owners[i - 1]:
            blocks[-1] = slice(blocks[-1].start, sl.stop)
        else:
            blocks.append(sl)
    return blocks


class CurvatureOperator:
    """``V -> V @ (C restricted to a block)`` of the mean training loss, batched over data.

    ``C`` is the Hessian or the Gauss-Newton matrix of the mean training loss. The data
    are processed ``batch_size`` rows at a time and the tangents in chunks, so memory is
    bounded whatever the number of rows or right-hand sides. The first-order pass on each
    batch is done once and kept (see :meth:`FlatModel.linearize`): iterative solvers then
    pay only for the second-order pass on every product.

    Parameters
    ----------
    model : FlatModel
    X, y : torch.Tensor
        Training data.
    batch_size : int
    block : slice or None
        Restrict the operator to the diagonal block ``C[block, block]``.
    psd : bool, default=False
        Whether ``C`` is known to be positive semi-definite (the Gauss-Newton matrix of a
        loss whose output Hessians were checked); solvers then skip their own check.
    """

    def __init__(self, model: FlatModel, X, y, batch_size: int, block: slice | None = None,
                 _cache: dict | None = None, psd: bool = False):
        self.model, self.X, self.y, self.batch_size = model, X, y, batch_size
        self.block = block if block is not None else slice(0, model.n_params)
        self.psd = psd
        self._cache = {} if _cache is None else _cache  # shared by restrictions

    def __getstate__(self):
        # The cached first-order passes are closures: drop them, they are rebuilt lazily.
        return {**self.__dict__, "_cache": {}}

    @property
    def dim(self) -> int:
        return self.block.stop - self.block.start

    @property
    def dtype(self) -> torch.dtype:
        return self.model.theta.dtype

    @property
    def device(self) -> torch.device:
        return self.model.theta.device

    @property
    def batches(self) -> list[slice]:
        """The fixed row batches of the training data."""
        return list(iter_slices(len(self.X), self.batch_size))

    def restrict(self, block: slice) -> CurvatureOperator:
        start = self.block.start
        sub = slice(start + block.start, start + block.stop)
        return CurvatureOperator(self.model, self.X, self.y, self.batch_size, sub, self._cache,
                                 psd=self.psd)

    def shuffled(self, generator) -> CurvatureOperator:
        """The same operator on randomly permuted rows (so its batches are random)."""
        perm = torch.randperm(len(self.X), generator=generator).to(self.X.device)
        return CurvatureOperator(self.model, self.X[perm], self.y[perm], self.batch_size,
                                 self.block, psd=self.psd)

    def _product(self, sl: slice) -> Callable[[torch.Tensor], torch.Tensor]:
        key = (sl.start, sl.stop)
        if key not in self._cache:
            self._cache[key] = self.model.linearize(self.X[sl], self.y[sl])
        return self._cache[key]

    def matmat(self, V: torch.Tensor, batch: int | None = None) -> torch.Tensor:
        """``V @ C`` for ``V`` of shape ``(k, dim)``.

        ``batch`` restricts ``C`` to the rows of one of :attr:`batches` (the curvature of
        that mini-batch's mean loss); None averages over all rows.
        """
        if batch is None and self.model._fast(self.X):
            # The hand-written products bound their own memory (chunks of rows and
            # tangents): one linearization of all rows, so one call per product.
            slices = [slice(0, len(self.X))]
        else:
            slices = self.batches if batch is None else [self.batches[batch]]
        n = sum(sl.stop - sl.start for sl in slices)
        k, p = V.shape[0], self.model.n_params
        whole = self.dim == p
        if whole and len(slices) == 1:
            product = self._product(slices[0])
            if getattr(product, "tangent_chunk", tangent_chunk)(n, k) >= k:
                # One call does it all (the hand-written products): no accumulation copy.
                with torch.no_grad():
                    return product(V)
        out = torch.zeros_like(V)
        with torch.no_grad():
            for sl in slices:
                m = sl.stop - sl.start
                product = self._product(sl)
                chunk = getattr(product, "tangent_chunk", tangent_chunk)(m, k)
                for t in iter_slices(k, chunk):
                    if whole:
                        out[t] += (m / n) * product(V[t])
                    else:
                        full = V.new_zeros(t.stop - t.start, p)
                        full[:, self.block] = V[t]
                        out[t] += (m / n) * product(full)[:, self.block]
        return out

    def dense(self, out: torch.Tensor | None = None) -> torch.Tensor:
        """The explicit ``(dim, dim)`` matrix, from products with identity columns.

        The identity is built one chunk of columns at a time; ``out`` (optional, shape
        ``(dim, dim)``) receives the result, so that the peak memory is one matrix.
        """
        d = self.dim
        out = torch.empty(d, d, dtype=self.dtype, device=self.device) if out is None else out
        step = max(1, _DENSE_ROWS_TIMES_COLUMNS // max(min(self.batch_size, len(self.X)), 1))
        for t in iter_slices(d, step):
            E = torch.zeros(t.stop - t.start, d, dtype=self.dtype, device=self.device)
            E[:, t] = torch.eye(t.stop - t.start, dtype=self.dtype, device=self.device)
            out[t] = self.matmat(E)
        return out


def per_sample_grads_batched(model: FlatModel, X, y, batch_size: int) -> torch.Tensor:
    """Per-sample gradients ``(n, p)`` computed ``batch_size`` rows at a time."""
    out = torch.empty(len(X), model.n_params, dtype=model.theta.dtype,
                      device=model.theta.device)
    with torch.no_grad():
        for sl in iter_slices(len(X), batch_size):
            model.per_sample_grads(X[sl], y[sl], out=out[sl])
    return out
