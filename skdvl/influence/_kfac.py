"""Layer-wise curvature approximations: EK-FAC and DataInf.

References
----------
George, T., Laurent, C., Bouthillier, X., Ballas, N. and Vincent, P. (2018). Fast
approximate natural gradient descent in a Kronecker-factored eigenbasis. NeurIPS.
Grosse, R. et al. (2023). Studying large language model generalization with influence
functions. arXiv:2308.03296 (EK-FAC for influence functions, Sec. 2.2.3).
Kwon, Y., Wu, E., Wu, K. and Zou, J. (2023). DataInf: efficiently estimating data
influence in LoRA-tuned LLMs and diffusion models. ICLR 2024.
"""

from __future__ import annotations

import torch
from torch.func import hessian, vmap

from ._functional import CurvatureOperator, FlatModel, iter_slices, per_sample_grads_batched


class _LinearLayer:
    """Where an ``nn.Linear``'s weight and bias sit in the flat parameter vector."""

    def __init__(self, name, module, weight: slice, bias: slice | None):
        self.name, self.module, self.weight, self.bias = name, module, weight, bias
        self.d_out, self.d_in = module.weight.shape

    def gather(self, V: torch.Tensor) -> torch.Tensor:
        """Rows of flat vectors -> ``(k, d_out, d_in [+1])`` matrices ``[W | b]``."""
        W = V[:, self.weight].reshape(-1, self.d_out, self.d_in)
        if self.bias is None:
            return W
        return torch.cat([W, V[:, self.bias].unsqueeze(2)], dim=2)

    def scatter(self, M: torch.Tensor, out: torch.Tensor) -> None:
        out[:, self.weight] = M[:, :, : self.d_in].reshape(len(M), -1)
        if self.bias is not None:
            out[:, self.bias] = M[:, :, self.d_in]


def _linear_layers(model: FlatModel) -> list[_LinearLayer]:
    """The ``nn.Linear`` layers owning every trainable parameter; else a clear error."""
    where = dict(zip(model.names, model.param_slices))
    layers, covered = [], set()
    for name, mod in model.module.named_modules():
        wname = f"{name}.weight" if name else "weight"
        bname = f"{name}.bias" if name else "bias"
        if isinstance(mod, torch.nn.Linear) and wname in where:
            layers.append(_LinearLayer(name, mod, where[wname], where.get(bname)))
            covered.update({wname, bname})
    rest = [n for n in model.names if n not in covered]
    if rest:
        raise ValueError(
            "method='ekfac' supports trainable parameters of torch.nn.Linear layers only; "
            f"got trainable parameters outside them: {rest[:5]}. Freeze them "
            "(requires_grad=False) or choose another method."
        )
    return layers


def _output_hessian_factors(out: torch.Tensor, y: torch.Tensor, loss) -> torch.Tensor:
    """Per-row ``L_i`` with ``L_i L_i^T`` = Hessian of the loss w.r.t. the outputs.

    Returns shape ``(n, c, c)`` (column ``j`` is one pseudo-direction); negative
    eigenvalues, impossible for convex losses, are clipped to zero.
    """
    shape = out.shape[1:]

    def one(o, t):
        return loss(o.reshape((1, *shape)), t.unsqueeze(0))

    flat = out.reshape(len(out), -1)
    H = vmap(hessian(one))(flat, y).reshape(len(out), flat.shape[1], flat.shape[1])
    lam, V = torch.linalg.eigh(0.5 * (H + H.transpose(1, 2)))
    return V * lam.clamp_min(0).sqrt().unsqueeze(1)


def _pseudo_gradients(model: FlatModel, layers, X, y):
    """Layer inputs ``a`` (with a column of ones for the bias) and output pseudo-gradients.

    The output gradients are ``J_i^T L_i e_c`` for every output direction ``c``, so that
    ``sum_c g g^T (x) a a^T`` is the exact per-sample Gauss-Newton block (shape of ``g``:
    ``(c, n, d_out)``).
    """
    inputs, outputs = {}, {}

    def recorder(key):
        def hook(module, args, output):
            inputs[key], outputs[key] = args[0], output

        return hook

    hooks = [la.module.register_forward_hook(recorder(la.name)) for la in layers]
    try:
        with torch.enable_grad():
            out = model.forward(model.theta.detach().requires_grad_(True), X)
            factors = _output_hessian_factors(out.detach(), y, model.loss)
            flat_out = out.reshape(len(out), -1)
            g: dict[str, list] = {layer.name: [] for layer in layers}
            for c in range(factors.shape[2]):
                grads = torch.autograd.grad(
                    flat_out, [outputs[la.name] for la in layers],
                    grad_outputs=factors[:, :, c], retain_graph=True,
                )
                for la, gr in zip(layers, grads):
                    g[la.name].append(gr.detach())
    finally:
        for h in hooks:
            h.remove()
    acts = {}
    for la in layers:
        a = inputs[la.name].detach()
        if a.dim() != 2:
            raise ValueError(
                f"method='ekfac' needs 2-d inputs to Linear layer {la.name!r}; got shape "
                f"{tuple(a.shape)}. Choose another method for sequence inputs."
            )
        if la.bias is not None:
            a = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype, device=a.device)], 1)
        acts[la.name] = a
    return acts, {k: torch.stack(v) for k, v in g.items()}


class _EKFAC:
    """Eigenvalue-corrected Kronecker-factored Gauss-Newton (George et al., 2018).

    Per ``nn.Linear`` layer, ``A = E[a a^T]`` and ``G = E[sum_c g_c g_c^T]`` give the
    eigenbases ``Q_A`` and ``Q_G``; the eigenvalues are then refitted to the data as
    ``Lambda_jk = E[sum_c ((Q_G^T g_c)_j (Q_A^T a)_k)^2]`` (Eq. (20) of Grosse et al., 2023).

    Notes
    -----
    The pseudo-gradients use the exact factorisation of each row's output Hessian
    instead of labels sampled from the model (as George et al. and Grosse et al. do):
    deterministic, at the price of one backward pass per output dimension.
    """

    def __init__(self, regularization: float):
        self.regularization = regularization

    def fit(self, op: CurvatureOperator, generator=None) -> _EKFAC:
        model, n = op.model, len(op.X)
        self.layers_ = _linear_layers(model)
        A = {la.name: 0.0 for la in self.layers_}
        G = {la.name: 0.0 for la in self.layers_}
        for sl in iter_slices(n, op.batch_size):
            acts, grads = _pseudo_gradients(model, self.layers_, op.X[sl], op.y[sl])
            for name in A:
                A[name] = A[name] + acts[name].T @ acts[name] / n
                gg = grads[name].reshape(-1, grads[name].shape[-1])
                G[name] = G[name] + gg.T @ gg / n
        self.QA_ = {k: torch.linalg.eigh(v)[1] for k, v in A.items()}
        self.QG_ = {k: torch.linalg.eigh(v)[1] for k, v in G.items()}
        self.eigenvalues_ = {k: 0.0 for k in A}
        for sl in iter_slices(n, op.batch_size):
            acts, grads = _pseudo_gradients(model, self.layers_, op.X[sl], op.y[sl])
            for name in A:
                a2 = (acts[name] @ self.QA_[name]) ** 2  # (b, d_in)
                g2 = ((grads[name] @ self.QG_[name]) ** 2).sum(0)  # (b, d_out)
                self.eigenvalues_[name] = self.eigenvalues_[name] + g2.T @ a2 / n
        self.n_params_ = model.n_params
        return self

    def solve(self, R: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(R)
        for la in self.layers_:
            QA, QG = self.QA_[la.name], self.QG_[la.name]
            M = QG.T @ la.gather(R) @ QA
            M = M / (self.eigenvalues_[la.name] + self.regularization)
            la.scatter(QG @ M @ QA.T, out)
        return out


class _DataInf:
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

    def __init__(self, regularization: float, blocks: list[slice]):
        self.regularization, self.blocks = regularization, blocks

    def fit(self, op: CurvatureOperator, generator=None) -> _DataInf:
        self.grads_ = per_sample_grads_batched(op.model, op.X, op.y, op.batch_size)
        return self

    def solve(self, R: torch.Tensor) -> torch.Tensor:
        lam, n = self.regularization, len(self.grads_)
        out = torch.empty_like(R)
        for b in self.blocks:
            Gb = self.grads_[:, b]
            w = (R[:, b] @ Gb.T) / (lam + (Gb * Gb).sum(1))
            out[:, b] = (R[:, b] - w @ Gb / n) / lam
        return out
