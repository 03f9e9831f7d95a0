"""EK-FAC: eigenvalue-corrected Kronecker-factored Gauss-Newton on Linear and Conv2d layers.

References
----------
George, T., Laurent, C., Bouthillier, X., Ballas, N. and Vincent, P. (2018). Fast
approximate natural gradient descent in a Kronecker-factored eigenbasis. NeurIPS.
Grosse, R. and Martens, J. (2016). A Kronecker-factored approximate Fisher matrix for
convolution layers. ICML (KFC).
Grosse, R. et al. (2023). Studying large language model generalization with influence
functions. arXiv:2308.03296 (EK-FAC for influence functions, Sec. 2.2.3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._functional import CurvatureOperator, FlatModel, iter_slices
from ._solvers import Solver


class _LinearLayer:
    """Where an ``nn.Linear``'s weight and bias sit in the flat parameter vector.

    A layer maps its input to ``positions`` rows ``a_t`` (with a trailing 1 when there is
    a bias) and its output gradient to rows ``g_t``, so that the weight gradient is
    ``sum_t g_t a_t^T``; a Linear layer on 2-d inputs has one position.
    """

    one_position = True

    def __init__(self, name, module, weight: slice, bias: slice | None):
        self.name, self.module, self.weight, self.bias = name, module, weight, bias
        self.d_out = module.weight.shape[0]
        self.d_in = module.weight[0].numel()

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

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """Layer input -> ``(n, 1, d_in [+1])``."""
        if x.dim() != 2:
            raise ValueError(
                f"method='ekfac' needs 2-d inputs to Linear layer {self.name!r}; got shape "
                f"{tuple(x.shape)}. Choose another method for sequence inputs."
            )
        return _with_ones(x, self.bias is not None).unsqueeze(1)

    def positions(self, g: torch.Tensor) -> torch.Tensor:
        """Gradient w.r.t. the layer output -> ``(n, 1, d_out)``."""
        return g.unsqueeze(1)


class _Conv2dLayer(_LinearLayer):
    """An ``nn.Conv2d`` (``groups=1``) as a Linear layer applied at every output position.

    The weight is read as the ``(out_channels, in_channels * kH * kW)`` matrix that
    multiplies the unfolded input patches (Grosse & Martens, 2016, Sec. 3.1).
    """

    one_position = False

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """Layer input ``(n, C, H, W)`` -> patches ``(n, T, C kH kW [+1])``."""
        if x.dim() != 4:
            raise ValueError(
                f"method='ekfac' needs 4-d inputs (N, C, H, W) to Conv2d layer {self.name!r}; "
                f"got shape {tuple(x.shape)}."
            )
        return _with_ones(_conv2d_patches(x, self.module), self.bias is not None)

    def positions(self, g: torch.Tensor) -> torch.Tensor:
        """Gradient w.r.t. the output ``(n, C_out, H', W')`` -> ``(n, H' W', C_out)``."""
        return g.reshape(len(g), self.d_out, -1).transpose(1, 2)


def _with_ones(a: torch.Tensor, bias: bool) -> torch.Tensor:
    """Append a column of ones on the last axis (the bias's input) when ``bias``."""
    if not bias:
        return a
    return torch.cat([a, a.new_ones((*a.shape[:-1], 1))], dim=-1)


def _conv2d_padding(module: torch.nn.Conv2d) -> tuple[int, int, int, int]:
    """``(left, right, top, bottom)`` padding that ``module`` applies to its input.

    ``padding="same"`` puts the odd pixel, if any, on the right and bottom, as PyTorch
    does.
    """
    if module.padding == "valid":
        return (0, 0, 0, 0)
    if module.padding == "same":
        pads: list[int] = []
        for k, d in zip(reversed(module.kernel_size), reversed(module.dilation)):
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
        return (pads[0], pads[1], pads[2], pads[3])
    ph, pw = int(module.padding[0]), int(module.padding[1])
    return (pw, pw, ph, ph)


def _conv2d_patches(x: torch.Tensor, module: torch.nn.Conv2d) -> torch.Tensor:
    """Input patches ``(n, T, C kH kW)``, one row per output position (``im2col``).

    Column order matches ``module.weight.reshape(out_channels, -1)``, so that
    ``patches @ W^T + b`` is the output of ``module`` with positions in row-major order.
    """
    mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
    x = F.pad(x, _conv2d_padding(module), mode=mode)
    cols = F.unfold(x, module.kernel_size, dilation=module.dilation, stride=module.stride)
    return cols.transpose(1, 2)


def _kfac_layers(model: FlatModel) -> list[_LinearLayer]:
    """The Linear and Conv2d layers owning every trainable parameter; else a clear error."""
    where = dict(zip(model.names, model.param_slices))
    layers: list[_LinearLayer] = []
    covered = set()
    for name, mod in model.module.named_modules():
        wname = f"{name}.weight" if name else "weight"
        bname = f"{name}.bias" if name else "bias"
        if not isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)) or wname not in where:
            continue
        if isinstance(mod, torch.nn.Conv2d):
            if mod.groups != 1:
                raise ValueError(
                    "method='ekfac' supports torch.nn.Conv2d layers with groups=1 only; "
                    f"layer {name!r} has groups={mod.groups}. Freeze it "
                    "(requires_grad=False) or choose another method."
                )
            layers.append(_Conv2dLayer(name, mod, where[wname], where.get(bname)))
        else:
            layers.append(_LinearLayer(name, mod, where[wname], where.get(bname)))
        covered.update({wname, bname})
    rest = [n for n in model.names if n not in covered]
    if rest:
        raise ValueError(
            "method='ekfac' supports trainable parameters of torch.nn.Linear and "
            "torch.nn.Conv2d layers only; got trainable parameters outside them: "
            f"{rest[:5]}. Freeze them (requires_grad=False) or choose another method."
        )
    return layers


def _output_hessian_factors(model: FlatModel, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-row ``L_i`` with ``L_i L_i^T`` = Hessian of the loss w.r.t. the outputs.

    Returns shape ``(n, c, c)`` (column ``j`` is one pseudo-direction); negative
    eigenvalues, impossible for convex losses, are clipped to zero.
    """
    H = model.output_hessians(out, y)
    lam, V = torch.linalg.eigh(0.5 * (H + H.transpose(1, 2)))
    return V * lam.clamp_min(0).sqrt().unsqueeze(1)


def _pseudo_gradients(model: FlatModel, layers, X, y):
    """Layer input patches ``a`` and output pseudo-gradients ``g``, per layer.

    The output gradients are ``J_i^T L_i e_c`` for every output direction ``c``, so that
    ``sum_c vec(D_c) vec(D_c)^T`` with ``D_c = sum_t g_{c,t} a_t^T`` is the exact
    per-sample Gauss-Newton block. Shapes: ``a`` is ``(n, T, d_in [+1])`` (a column of
    ones for the bias), ``g`` is ``(c, n, T, d_out)``; ``T`` is the number of positions
    (1 for Linear layers, output pixels for Conv2d).
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
            factors = _output_hessian_factors(model, out.detach(), y)
            flat_out = out.reshape(len(out), -1)
            # All output directions in one vectorised backward pass.
            grads = torch.autograd.grad(
                flat_out, [outputs[la.name] for la in layers],
                grad_outputs=factors.permute(2, 0, 1), is_grads_batched=True,
            )
    finally:
        for h in hooks:
            h.remove()
    g = {la.name: torch.stack([la.positions(gc) for gc in gr.detach()])
         for la, gr in zip(layers, grads)}
    acts = {la.name: la.patches(inputs[la.name].detach()) for la in layers}
    return acts, g


def _kronecker_factor_sums(a: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums over rows of the K-FAC factors ``A`` and ``G`` of one layer (KFC for conv).

    ``A_i = (1/T) sum_t a_t a_t^T`` and ``G_i = sum_c sum_t g_{c,t} g_{c,t}^T``, with
    ``a`` of shape ``(n, T, d_a)`` and ``g`` of shape ``(c, n, T, d_g)``: Eq. (8)-(10)
    of Grosse & Martens (2016), where ``A (x) G`` approximates the Gauss-Newton block
    under spatial homogeneity and spatially uncorrelated derivatives.

    Notes
    -----
    Grosse & Martens put ``1/T`` on ``G`` instead; only the product matters for K-FAC,
    and EK-FAC keeps only the eigenvectors, which no scalar changes. With ``1/T`` on
    ``A``, a convolution whose output is a single pixel has the factors of the
    equivalent Linear layer.
    """
    T = a.shape[1]
    aa = a.reshape(-1, a.shape[-1])
    gg = g.reshape(-1, g.shape[-1])
    return aa.T @ aa / T, gg.T @ gg


def _corrected_eigenvalue_sums(
    a: torch.Tensor, g: torch.Tensor, QA: torch.Tensor, QG: torch.Tensor, rank_one: bool,
) -> torch.Tensor:
    """``sum_i sum_c (Q_G^T D_{i,c} Q_A)^2`` (elementwise), shape ``(d_g, d_a)``.

    ``D_{i,c} = sum_t g_{i,c,t} a_{i,t}^T`` is the weight gradient of row ``i`` along
    output direction ``c``; the mean over rows is the eigenvalue correction of Eq. (20)
    of Grosse et al. (2023) (Sec. 3.2 of George et al., 2018), i.e. the diagonal of the
    Gauss-Newton block in the Kronecker eigenbasis.

    Notes
    -----
    With ``rank_one`` (Linear layers: one position) ``D_{i,c}`` is rank one and the
    square factorises into ``(Q_G^T g)^2 (Q_A^T a)^2``. Otherwise ``D_{i,c}`` is built
    one direction at a time, so memory is ``n d_g d_a`` numbers: that of the layer's
    per-sample gradients.
    """
    aq = a @ QA  # (n, T, d_a)
    gq = g @ QG  # (c, n, T, d_g)
    if rank_one:
        return (gq[:, :, 0] ** 2).sum(0).T @ aq[:, 0] ** 2
    out = a.new_zeros(QG.shape[0], QA.shape[0])
    for gc in gq:
        D = gc.transpose(1, 2) @ aq  # (n, d_g, d_a)
        out += (D * D).sum(0)
    return out


class EKFACSolver(Solver):
    """Eigenvalue-corrected Kronecker-factored Gauss-Newton (George et al., 2018).

    Per ``nn.Linear`` or ``nn.Conv2d`` layer, ``A = E[(1/T) sum_t a_t a_t^T]`` and ``G =
    E[sum_c sum_t g_{c,t} g_{c,t}^T]`` (over the ``T`` output positions of a
    convolution, Grosse & Martens, 2016) give the eigenbases ``Q_A`` and ``Q_G``; the
    eigenvalues are then refitted to the data as ``Lambda = E[sum_c (Q_G^T D_c Q_A)^2]``
    with ``D_c = sum_t g_{c,t} a_t^T`` the per-sample weight gradient (Eq. (20) of
    Grosse et al., 2023).

    Notes
    -----
    The pseudo-gradients use the exact factorisation of each row's output Hessian
    instead of labels sampled from the model (as George et al. and Grosse et al. do):
    deterministic, at the price of one backward pass per output dimension. Conv2d
    layers need ``groups=1``; any stride, dilation, padding and padding mode is
    supported.
    """

    name = "ekfac"
    factorised = True

    def fit(self, op: CurvatureOperator, generator=None) -> EKFACSolver:
        model, n = op.model, len(op.X)
        self.layers_ = _kfac_layers(model)
        A: dict[str, torch.Tensor] = {}
        G: dict[str, torch.Tensor] = {}
        for sl in iter_slices(n, op.batch_size):
            acts, grads = _pseudo_gradients(model, self.layers_, op.X[sl], op.y[sl])
            for la in self.layers_:
                dA, dG = _kronecker_factor_sums(acts[la.name], grads[la.name])
                A[la.name] = A.get(la.name, 0) + dA / n
                G[la.name] = G.get(la.name, 0) + dG / n
        self.QA_ = {k: torch.linalg.eigh(v)[1] for k, v in A.items()}
        self.QG_ = {k: torch.linalg.eigh(v)[1] for k, v in G.items()}
        self.eigenvalues_: dict[str, torch.Tensor] = {}
        for sl in iter_slices(n, op.batch_size):
            acts, grads = _pseudo_gradients(model, self.layers_, op.X[sl], op.y[sl])
            for la in self.layers_:
                lam = _corrected_eigenvalue_sums(acts[la.name], grads[la.name], self.QA_[la.name],
                                                 self.QG_[la.name], la.one_position)
                self.eigenvalues_[la.name] = self.eigenvalues_.get(la.name, 0) + lam / n
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

    def quadratic_form(self, R: torch.Tensor) -> torch.Tensor:
        """``r^T (C_EKFAC + lambda I)^-1 r`` per row: the solve's terms, never rotated back.

        With ``M = Q_G^T R_l Q_A`` (a layer's gradient in its Kronecker eigenbasis),
        ``<R_l, Q_G (M / (Lambda + lambda)) Q_A^T> = sum M^2 / (Lambda + lambda)``
        (George et al., 2018, Sec. 3.2): the inverse is diagonal in that basis.
        """
        out = R.new_zeros(len(R))
        for la in self.layers_:
            M = self.QG_[la.name].T @ la.gather(R) @ self.QA_[la.name]
            out += (M * M / (self.eigenvalues_[la.name] + self.regularization)).sum((1, 2))
        return out
