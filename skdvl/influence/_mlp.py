"""Exact curvature products and per-sample gradients of multilayer perceptrons, by hand.

For a model that is a chain of :class:`torch.nn.Linear` layers and elementwise
activations (an ``nn.Sequential`` of them, or one ``nn.Linear``), trained with a loss
that is a mean or sum of per-row losses of the outputs, the Hessian-vector product is
Pearlmutter's (1994) R-operator: one forward pass of the tangent (the directional
derivatives of every layer's output) and one backward pass of its derivative. Written out
per layer, a block of ``k`` tangents costs a few matrix-matrix products per layer on
arrays laid out ``(rows, tangents, width)``, instead of ``k`` vectorised autograd passes
(:meth:`~skdvl.influence._functional.FlatModel.linearize`). On the benchmark MLP
(12,010 parameters, 1,000 rows, float32, one thread; CPU time on a loaded machine) one
product took 1.4-2.2 ms instead of 3.5-6.1 ms through ``torch.func``, 50 at once
60-67 ms instead of 126 ms, 100 at once 124-134 ms instead of 233-317 ms: the matrix
products then take most of the time (about 100 GFLOP/s).

Only the loss is still differentiated by ``torch.func``: its gradient and its per-row
Hessian with respect to the outputs (``c x c`` per row, ``c`` the output width), once per
batch of rows. Where that Hessian is diagonal or the softmax one (cross-entropy), its
products use the closed form (:func:`_output_structure`, recognised from the autograd
Hessian itself). The activations' first and second derivatives are taken by
``torch.func.vjp`` of the module itself (exact for any elementwise function, the same
values autograd uses, e.g. ``relu'(0) = 0``), so no formula per activation is written.

Anything else takes the generic ``torch.func`` path: other layers, frozen parameters,
hooks, losses outside :data:`_LOSSES` and skorch nets whose ``get_loss`` is their own
(:func:`mlp_chain` returns None), inputs that are not matrices and more than
:data:`_MAX_OUTPUTS` outputs (``FlatModel._fast`` refuses the batch).

References
----------
Pearlmutter, B. A. (1994). Fast exact multiplication by the Hessian. Neural Computation
6(1).
Schraudolph, N. N. (2002). Fast curvature matrix-vector products for second-order
gradient descent. Neural Computation 14(7) (Gauss-Newton products).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable

import torch
from torch import nn
from torch.func import grad, vjp, vmap

from ._skorch import SkorchLoss

#: Elementwise activations (exact types: a subclass may override ``forward``).
_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.ELU, nn.SELU, nn.CELU,
                nn.GELU, nn.SiLU, nn.Softplus, nn.Mish, nn.Identity, nn.Hardtanh, nn.ReLU6,
                nn.Tanhshrink, nn.Softsign, nn.LogSigmoid)
#: Losses of a row's outputs alone (their batch value is checked to be the mean or the
#: sum of the rows' by ``FlatModel.check_reduction``).
_LOSSES = (nn.CrossEntropyLoss, nn.MSELoss, nn.BCEWithLogitsLoss, nn.HuberLoss,
           nn.SmoothL1Loss, nn.L1Loss)
_LOSS_FUNCTIONS = (nn.functional.cross_entropy, nn.functional.mse_loss,
                   nn.functional.binary_cross_entropy_with_logits, nn.functional.huber_loss,
                   nn.functional.smooth_l1_loss, nn.functional.l1_loss)
#: Largest output width: the per-row output Hessians are ``(rows, c, c)``.
_MAX_OUTPUTS = 64
#: Bound on the bytes of one (rows x tangents x widest layer) array of a product call:
#: they then stay in a core's L2 cache (2 MiB on the benchmark machine; arrays of 2 MiB
#: made the elementwise steps 3x slower per element than arrays of 1.7 MiB).
_MAX_BYTES = 2**20
#: Rows per call when several tangents share it.
_ROWS = 512


def _narrow(n_out: int) -> bool:
    """Whether ``R W^T`` of a layer this narrow is faster as ``(W R^T)^T``.

    MKL's single-thread SGEMM with a narrow right-hand side of a width that is not a
    multiple of 8 ran at half its rate: ``(1638, 160) @ (160, 10)`` took 190 us, the
    transposed ``(10, 160) @ (160, 1638)`` 95 us (110 us with the transposed add), and
    widths 5 and 20 gained too, 2 and 16 lost (AVX-512 machine of the benchmarks).
    """
    return 4 <= n_out < 32 and n_out % 8 != 0


def _no_hooks(m: nn.Module) -> bool:
    return not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
                or getattr(m, "_backward_pre_hooks", None))


def _torch_loss(loss):
    """The torch loss behind ``loss``: a skorch net's criterion when the net computes its
    loss with skorch's own ``get_loss`` (the criterion of the outputs), else ``loss``."""
    if not isinstance(loss, SkorchLoss):
        return loss
    skorch = sys.modules.get("skorch")
    own = () if skorch is None else (skorch.NeuralNet.get_loss,
                                      skorch.NeuralNetClassifier.get_loss)
    return loss.criterion if type(loss.net).get_loss in own else None


def mlp_chain(module: nn.Module, names: list[str], loss: Callable) -> list | None:
    """The layers of ``module`` as ``[("linear", i_weight, i_bias) | ("act", module)]``.

    ``i_weight`` and ``i_bias`` (None without bias) index the flat model's parameters,
    whose ``names`` must be every parameter of the chain in order (none frozen). None
    when the module or the loss is not one this module handles.
    """
    loss = _torch_loss(loss)
    if type(loss) not in _LOSSES and loss not in _LOSS_FUNCTIONS:
        return None
    if isinstance(loss, nn.Module) and not _no_hooks(loss):
        return None
    children: list[tuple[str, nn.Module]]
    if type(module) is nn.Linear:
        children, prefix = [("", module)], ""
    elif type(module) is nn.Sequential:
        children, prefix = list(module.named_children()), "."
    else:
        return None
    if not _no_hooks(module) or list(module.buffers()):
        return None
    chain: list = []
    expected: list[str] = []
    for key, child in children:
        if not _no_hooks(child):
            return None
        if type(child) is nn.Linear:
            head = f"{key}{prefix}" if key else ""
            i_w = len(expected)
            expected.append(f"{head}weight")
            i_b = None
            if child.bias is not None:
                i_b = len(expected)
                expected.append(f"{head}bias")
            chain.append(("linear", i_w, i_b))
        elif type(child) in _ACTIVATIONS:
            chain.append(("act", child))
        else:
            return None
    if expected != names or not any(op[0] == "linear" for op in chain):
        return None
    return chain


def _act_derivatives(act: nn.Module, z: torch.Tensor, second: bool) -> tuple:
    """``(act'(z), act''(z) or None)`` of an elementwise activation, by ``torch.func.vjp``."""
    ones = torch.ones_like(z)

    def first(u):
        return vjp(act, u)[1](ones)[0]  # type: ignore[misc]

    if not second:
        return first(z), None
    d1, pullback = vjp(first, z)  # type: ignore[misc]
    return d1, pullback(ones)[0]


def _output_structure(H: torch.Tensor, out: torch.Tensor) -> tuple:
    """``("diagonal", d)``, ``("softmax", p)`` or ``("general", None)`` for ``H`` ``(m, c, c)``.

    Diagonal: every off-diagonal entry is zero (squared error, logistic losses on
    independent outputs, Huber). Softmax: ``H_i = (diag(p_i) - p_i p_i^T) / m`` with
    ``p_i = softmax(out_i)`` (cross-entropy on class indices or on probability targets)
    to ``64 eps`` of the largest entry, i.e. to the rounding of the two formulas. The
    autograd Hessian ``H`` is the reference either way: a loss is only recognised by
    what its Hessian is.
    """
    m, c, _ = H.shape
    d = H.diagonal(dim1=1, dim2=2)
    scale = float(H.abs().max()) if H.numel() else 0.0
    if scale == 0.0 or bool((H - torch.diag_embed(d) == 0).all()):
        return "diagonal", d.contiguous()
    p = torch.softmax(out, dim=1)
    softmax = (torch.diag_embed(p) - p.unsqueeze(2) * p.unsqueeze(1)) / m
    if float((H - softmax).abs().max()) <= 64 * torch.finfo(H.dtype).eps * scale:
        return "softmax", p.contiguous()
    return "general", None


class LinearizedMLP:
    """``V -> V @ C`` on one batch of rows for a chain from :func:`mlp_chain`.

    The forward pass, the activations' derivatives, the backward pass of the loss
    gradient (Hessian only) and the output Hessians are computed once; each call then
    pushes its tangents (the rows of ``V``) through the R-operator as matrix products.

    Parameters
    ----------
    chain : list
        From :func:`mlp_chain`.
    params : tuple of torch.Tensor
        The parameters, in the flat model's order.
    X, y : torch.Tensor
        The batch (``X`` of shape ``(m, in_features)``).
    output_loss : callable
        ``output_loss(out, y)``: the mean loss of the batch as a function of its outputs.
    slices : list of slice
        Position of each parameter in a flat vector.
    gauss_newton : bool
        ``J^T H J`` with each row's output Hessian clipped to its positive part (as
        :meth:`~skdvl.influence._functional.FlatModel._gauss_newton_product`) instead of
        the Hessian.
    """

    def __init__(self, chain, params, X, y, output_loss, slices,
                 gauss_newton: bool):
        self.gauss_newton = gauss_newton
        self.slices = slices
        self.n_params = slices[-1].stop
        self.m = len(X)
        self.ops: list[dict] = []
        h = X
        for op in chain:
            if op[0] == "linear":
                W = params[op[1]]
                b = None if op[2] is None else params[op[2]]
                self.ops.append({"kind": "linear", "input": h, "W": W, "b": b,
                                 "w_slice": slices[op[1]],
                                 "b_slice": None if op[2] is None else slices[op[2]]})
                h = nn.functional.linear(h, W, b)
            else:
                d1, d2 = _act_derivatives(op[1], h, second=not gauss_newton)
                self.ops.append({"kind": "act", "d1": d1, "d2": d2})
                h = op[1](h)
        out = h
        self.width = max([X.shape[1]] + [o["W"].shape[0] for o in self.ops
                                         if o["kind"] == "linear"])
        # Each row's output Hessian (of the mean loss): the rows' losses are separate, so
        # one vectorised pull-back of the output gradient per output entry gives column
        # j of every row's Hessian at once (c passes instead of m nested ones).
        c = out.shape[1]
        _, pullback = vjp(grad(lambda o: output_loss(o, y)), out)  # type: ignore[misc]
        E = torch.eye(c, dtype=out.dtype, device=out.device).unsqueeze(1).expand(c, self.m, c)
        H = vmap(pullback)(E)[0].permute(1, 2, 0)  # (m, c, c): H[i, :, j] = H_i e_j
        if gauss_newton:
            lam, Q = torch.linalg.eigh(H)
            H = (Q * lam.clamp_min(0).unsqueeze(1)) @ Q.transpose(1, 2)
        else:
            # delta at each op's output: the gradient of the mean loss there.
            delta = grad(lambda o: output_loss(o, y))(out)
            for o in reversed(self.ops):
                o["delta"] = delta
                if o["kind"] == "linear":
                    delta = delta @ o["W"]
                else:
                    delta = delta * o["d1"]
                    o["d2_delta"] = o["d2"] * o["delta"]
        H = 0.5 * (H + H.transpose(1, 2))
        self.structure = _output_structure(H, out)
        # (m, c, c) is kept only when no closed form applies: (m, c) otherwise.
        self.H = H if self.structure[0] == "general" else None
        if self.structure[0] == "softmax":
            self._scaled_p = self.structure[1] / self.softmax_scale
        # Ops before the first linear layer carry no parameters: the backward stops there.
        self.first = next(i for i, o in enumerate(self.ops) if o["kind"] == "linear")

    @property
    def softmax_scale(self) -> int:
        return self.m

    def tangent_chunk(self, n_rows: int, n_tangents: int) -> int:
        """Tangents per call: all of them (:meth:`__call__` chunks to bound memory)."""
        return max(n_tangents, 1)

    def __call__(self, V: torch.Tensor) -> torch.Tensor:
        # Chunks of rows x tangents x width <= _MAX_BYTES, of at most _ROWS rows unless
        # there is a single tangent (measured best on the benchmark MLP).
        max_elements = _MAX_BYTES // V.element_size()
        k_step = max(1, min(len(V), max_elements // max(min(self.m, _ROWS) * self.width, 1)))
        m_step = max(1, min(self.m, max_elements // max(k_step * self.width, 1)))
        out = V.new_zeros(len(V), self.n_params)
        # Work arrays reused by every chunk (per thread): allocating them afresh made the
        # first pass over each one pay the page faults of new memory.
        ws: dict = {}
        for t in range(0, len(V), k_step):
            tk = slice(t, min(t + k_step, len(V)))
            # The tangents' weight blocks as (k * n_out, n_in) matrices, once per chunk.
            dWs = {i: self._work(ws, ("dW", i), (tk.stop - tk.start, *o["W"].shape), V).copy_(
                       V[tk, o["w_slice"]].view(tk.stop - tk.start, *o["W"].shape))
                   for i, o in enumerate(self.ops) if o["kind"] == "linear"}
            for r in range(0, self.m, m_step):
                self._product(V[tk], dWs, slice(r, min(r + m_step, self.m)), out[tk], ws)
        return out

    @staticmethod
    def _work(ws: dict, key, shape, like: torch.Tensor) -> torch.Tensor:
        n = math.prod(shape)
        buf = ws.get(key)
        if buf is None or buf.numel() < n:
            buf = ws[key] = like.new_empty(n)
        return buf[:n].view(shape)

    def _output_product(self, R: torch.Tensor, rows: slice, ws: dict, like) -> torch.Tensor:
        """Each row's output Hessian times its tangents: ``(m, k, c) @ (m, c, c)``.

        A broadcast sum in general (a bmm of ``m`` tiny products was slower); for the
        structures :func:`_output_structure` recognises, their closed form (the general
        form was a third of the product time of the benchmark MLP).
        """
        m, k, c = R.shape
        kind, a = self.structure
        if kind == "diagonal":
            return torch.mul(R, a[rows].unsqueeze(1), out=self._work(ws, "Dout", R.shape, like))
        if kind == "softmax":  # H_i = (diag(p_i) - p_i p_i^T) / scale
            # (R - (R p) 1^T) diag(p) / scale as three passes over R: its dot with p (a
            # batched matrix-vector product), R p / scale, minus dot p / scale.
            p = a[rows]
            dot = torch.bmm(R, p.unsqueeze(2), out=self._work(ws, "dot", (m, k, 1), like))
            ps = self._scaled_p[rows].unsqueeze(1)
            out = torch.mul(R, ps, out=self._work(ws, "Dout", R.shape, like))
            return out.addcmul_(dot, ps, value=-1)
        assert self.H is not None
        P = torch.mul(R.unsqueeze(3), self.H[rows].unsqueeze(1),
                      out=self._work(ws, "P", (m, k, c, c), like))
        return torch.sum(P, 2, out=self._work(ws, "Dout", (m, k, c), like))

    def _product(self, V: torch.Tensor, dWs: dict, rows: slice, out: torch.Tensor,
                 ws: dict) -> None:
        """Add the products of the rows ``rows`` of the batch (their share) to ``out``."""
        m, k = rows.stop - rows.start, len(V)
        hessian = not self.gauss_newton
        work = self._work
        # Forward: R = the tangent's derivative of each op's input, laid out (m, k, w),
        # so that every layer is one matrix product (bias and sums fused into it).
        R_in: list = []
        R = None
        for i, o in enumerate(self.ops):
            R_in.append(R)
            if o["kind"] == "linear":
                W = o["W"]
                n_out, n_in = W.shape
                dW = dWs[i].view(k * n_out, n_in)
                T = work(ws, ("R", i), (m, k * n_out), V)
                if o["b"] is not None:
                    torch.addmm(V[:, o["b_slice"]].reshape(-1), o["input"][rows], dW.T, out=T)
                else:
                    torch.mm(o["input"][rows], dW.T, out=T)
                if R is not None:
                    R2 = R.reshape(m * k, n_in)
                    if _narrow(n_out):
                        tmp = torch.mm(W, R2.T, out=work(ws, ("RT", i), (n_out, m * k), V))
                        T.view(m * k, n_out).add_(tmp.T)
                    else:
                        T.view(m * k, n_out).addmm_(R2, W.T)
                R = T.view(m, k, n_out)
            elif R is not None:
                R = torch.mul(R, o["d1"][rows].unsqueeze(1), out=work(ws, ("R", i), R.shape, V))
        assert R is not None  # the chain has a linear layer
        D = self._output_product(R, rows, ws, V)
        for i in range(len(self.ops) - 1, self.first - 1, -1):
            o, R = self.ops[i], R_in[i]
            if o["kind"] == "linear":
                W = o["W"]
                n_out, n_in = W.shape
                gW = torch.mm(D.reshape(m, k * n_out).T, o["input"][rows],
                              out=work(ws, "gW", (k * n_out, n_in), V)).view(k, n_out, n_in)
                target = out[:, o["w_slice"]].view(k, n_out, n_in)
                target += gW
                if hessian and R is not None:
                    extra = torch.mm(o["delta"][rows].T, R.reshape(m, k * n_in),
                                     out=work(ws, "gW2", (n_out, k * n_in), V))
                    target += extra.view(n_out, k, n_in).transpose(0, 1)
                if o["b"] is not None:
                    out[:, o["b_slice"]] += D.sum(0)
                if i == self.first:
                    break
                D_next = torch.mm(D.reshape(m * k, n_out), W,
                                  out=work(ws, ("D", i), (m * k, n_in), V))
                if hessian:
                    dWt = work(ws, ("dWt", i), (n_out, k, n_in), V).copy_(
                        dWs[i].transpose(0, 1))
                    D_next.view(m, k * n_in).addmm_(o["delta"][rows],
                                                    dWt.view(n_out, k * n_in))
                D = D_next.view(m, k, n_in)
            else:
                D = torch.mul(D, o["d1"][rows].unsqueeze(1), out=work(ws, ("D", i), D.shape, V))
                if hessian and R is not None:
                    D.addcmul_(o["d2_delta"][rows].unsqueeze(1), R)


def per_sample_grads(chain, params, X, y, mean_loss, slices, out: torch.Tensor) -> None:
    """Gradients of each row's loss written into ``out`` (``(m, p)``), by backpropagation.

    ``mean_loss(out, y)`` is the mean loss of the batch as a function of its outputs; the
    layers' gradients are the outer products ``delta_i h_i^T`` of each row, written in
    place.
    """
    h, inputs, derivs = X, [], []
    for op in chain:
        inputs.append(h)
        if op[0] == "linear":
            h = nn.functional.linear(h, params[op[1]], None if op[2] is None else params[op[2]])
        else:
            derivs.append(_act_derivatives(op[1], h, second=False)[0])
            h = op[1](h)
    m = len(X)
    # Each row's output gradient: m times the gradient of the batch's mean loss (the rows'
    # losses are separate), one backward pass instead of a vectorised one per row.
    delta = grad(lambda o: mean_loss(o, y))(h) * m
    for op, h_in in zip(reversed(chain), reversed(inputs)):
        if op[0] == "linear":
            W = params[op[1]]
            torch.mul(delta.unsqueeze(2), h_in.unsqueeze(1),
                      out=out[:, slices[op[1]]].view(m, *W.shape))
            if op[2] is not None:
                out[:, slices[op[2]]] = delta
            delta = delta @ W
        else:
            delta = delta * derivs.pop()
