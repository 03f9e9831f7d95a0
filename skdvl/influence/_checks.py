"""Checks of the model, the loss and the targets, run by ``InfluenceScorer.fit``.

Each names the argument at fault and what it received, before an influence is computed
on a model, loss or target that would make it silently wrong.
"""

from __future__ import annotations

import warnings
from numbers import Integral

import torch
from sklearn.utils import check_scalar

from ._functional import FlatModel, iter_slices
from ._skorch import loss_kind


def is_positive_int(value) -> bool:
    """Whether ``value`` is an integer >= 1 (:func:`~sklearn.utils.check_scalar`; not a bool)."""
    if isinstance(value, bool):
        return False
    try:
        check_scalar(value, "value", Integral, min_val=1)
    except (TypeError, ValueError):
        return False
    return True


def check_trainable(module: torch.nn.Module) -> None:
    """Refuse a module without trainable parameters."""
    n_frozen = sum(p.numel() for p in module.parameters())
    if not any(p.requires_grad for p in module.parameters()):
        raise ValueError(
            "The 'model' parameter of InfluenceScorer has no trainable parameters "
            f"({type(module).__name__} with {n_frozen} parameters, none with "
            "requires_grad=True): influences are derivatives with respect to them."
        )


def _shape_hint(kind: str | None, out_shape, y_shape) -> str:
    if kind == "class":
        return (f"for class indices y must have shape {(y_shape[0], *out_shape[2:])}, for "
                f"class probabilities {(y_shape[0], *out_shape[1:])}")
    return (f"y must have the output's shape {(y_shape[0], *out_shape[1:])}"
            + (" (e.g. y.reshape(-1, 1))" if tuple(out_shape[1:]) == (1,) else ""))


def check_targets(model: FlatModel, X: torch.Tensor, y: torch.Tensor, name: str = "y") -> bool:
    """Check that ``y`` fits the output for the loss; return whether to cast it to float.

    For torch's own losses the shape rule is strict: class-index losses take integer
    targets without the class axis or float targets of the output's shape; the others
    take targets of the output's shape (integer ones are then cast to float). For any
    loss, a torch warning about a target size (broadcasting) or an error of the loss on
    two rows becomes a ValueError naming ``name``.
    """
    with torch.no_grad():
        out = model.forward(model.theta, X[:2])
    kind = loss_kind(model.loss)
    o, t = tuple(out.shape), tuple(y.shape)
    class_index = not y.is_floating_point() and t[1:] == o[2:] and len(o) >= 2
    cast = kind is not None and not y.is_floating_point() and t[1:] == o[1:] and not (
        kind == "class" and class_index)
    if kind is not None and not (cast or t[1:] == o[1:] or (kind == "class" and class_index)):
        raise ValueError(
            f"{name} has shape {t} but the model's output has shape {(t[0], *o[1:])}: "
            f"{_shape_hint(kind, o, t)}."
        )
    target = y[:2].to(out.dtype) if cast else y[:2]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.loss(out, target)
        except (RuntimeError, ValueError, IndexError, TypeError) as exc:
            raise ValueError(
                f"The loss failed on the first rows of the data (output shape "
                f"{(t[0], *o[1:])}, {name} shape {t}, dtype {y.dtype}): {exc}"
            ) from None
    sizes = [w for w in caught if "target size" in str(w.message)]
    if sizes:
        raise ValueError(
            f"{name} has shape {t} but the model's output has shape {(t[0], *o[1:])}; the "
            f"loss would broadcast them ({sizes[0].message}). Reshape {name}."
        )
    return cast


def check_loss(model: FlatModel, X: torch.Tensor, y: torch.Tensor) -> None:
    """The loss is a per-batch scalar, a mean or sum of row losses, differentiable, finite."""
    value = model.sample_loss(model.theta, X[0], y[0])
    if value.dim() != 0:
        raise ValueError(
            "The loss must return a scalar for a batch (reduction='mean' or 'sum'); "
            f"got a tensor of shape {tuple(value.shape)}."
        )
    model.check_reduction(X, y)
    with torch.enable_grad():
        theta = model.theta.detach().requires_grad_(True)
        value = model.loss(model.forward(theta, X[:2]), y[:2])
    if not value.requires_grad:
        raise ValueError(
            "The loss is not differentiable with respect to the parameters (its value "
            "has no gradient graph, e.g. it goes through argmax or a comparison); use a "
            "differentiable surrogate such as torch.nn.CrossEntropyLoss."
        )
    g = model.per_sample_grads(X[:2], y[:2])
    if not torch.isfinite(g).all():
        raise ValueError("The loss has non-finite gradients on the training data.")


def check_output_hessians(model: FlatModel, X: torch.Tensor, y: torch.Tensor,
                          batch_size: int) -> None:
    """Refuse ``second_order="gauss_newton"`` for a loss that is not convex in the output.

    The Gauss-Newton matrix ``J^T H J`` is positive semi-definite exactly when every
    row's output Hessian ``H_i`` is; all rows are checked (``c`` backward passes of the
    loss alone per row, for ``c`` outputs). Negative eigenvalues beyond rounding
    (``sqrt(eps)`` times the batch's largest) are refused.
    """
    tol = torch.finfo(model.theta.dtype).eps ** 0.5
    for sl in iter_slices(len(X), batch_size):
        with torch.no_grad():
            out = model.forward(model.theta, X[sl])
        H = model.output_hessians(out, y[sl])
        lam = torch.linalg.eigvalsh(0.5 * (H + H.transpose(1, 2)))
        # Relative to the largest curvature of the batch: the entries of H carry rounding
        # errors of that order (a confident softmax row has eigenvalues ~1e-6 and rounding
        # ~1e-8 in float32). What is below is clipped by the Gauss-Newton product.
        bad = lam[:, 0] < -tol * float(lam.abs().max())
        if bool(bad.any()):
            i = int(torch.nonzero(bad)[0])
            raise ValueError(
                "second_order='gauss_newton' needs a loss that is convex in the model "
                f"output; on training row {sl.start + i} the Hessian of the loss with "
                f"respect to the output has eigenvalue {float(lam[i, 0]):.3g}. Use "
                "second_order='hessian' or a convex loss."
            )
