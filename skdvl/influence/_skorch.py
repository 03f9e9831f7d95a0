"""Adapter: a fitted skorch net or a bare torch module -> (module, loss, device)."""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
from sklearn.exceptions import NotFittedError


def _is_skorch_net(model) -> bool:
    # A skorch net exists only if skorch was imported: no need to import it (20 ms) here.
    skorch = sys.modules.get("skorch")
    return skorch is not None and isinstance(model, skorch.NeuralNet)


def resolve_model(model, loss: Callable | None) -> tuple[torch.nn.Module, Callable, torch.device]:
    """Return the module, the loss ``loss(output, target)`` and the device of ``model``.

    Parameters
    ----------
    model : skorch.NeuralNet or torch.nn.Module
        A fitted skorch net (its ``module_``, ``get_loss`` and ``device`` are used) or a
        module, in which case ``loss`` is required.
    loss : callable or None
        Loss for a bare module; must be None for a skorch net.
    """
    if _is_skorch_net(model):
        return _from_skorch(model, loss)
    if isinstance(model, torch.nn.Module):
        if loss is None or not callable(loss):
            raise ValueError(
                "The 'loss' parameter of InfluenceScorer must be a callable "
                "loss(output, target) when 'model' is a torch.nn.Module. Got "
                f"{loss!r} instead."
            )
        params = list(model.parameters())
        device = params[0].device if params else torch.device("cpu")
        return model, loss, device
    raise TypeError(
        "The 'model' parameter of InfluenceScorer must be a fitted skorch net or a "
        f"torch.nn.Module. Got {type(model).__name__} instead."
    )


def _from_skorch(net, loss) -> tuple[torch.nn.Module, Callable, torch.device]:
    if loss is not None:
        raise ValueError(
            "The 'loss' parameter of InfluenceScorer must be None for a skorch net (its "
            f"criterion is used). Got {loss!r} instead."
        )
    if getattr(net, "_trimmed_for_prediction", False):
        raise ValueError(
            "The skorch net was trimmed with trim_for_prediction(), which deletes its "
            "criterion, so its loss cannot be differentiated. Pass a copy taken before "
            "trimming (copy.deepcopy(net)), or pass net.module_ with loss=<criterion>."
        )
    if not getattr(net, "initialized_", False) or not hasattr(net, "module_"):
        raise NotFittedError(
            "This skorch net is not initialized; fit it before passing it to InfluenceScorer."
        )
    if net.train_split is not None:
        raise ValueError(
            "The skorch net has train_split="
            f"{net.train_split!r}: while fitting it held out part of X as a validation "
            "set, so it does not minimise the loss on the rows given to "
            "InfluenceScorer.fit, which influence functions assume. Refit the net with "
            "train_split=None (validate outside the net), or pass net.module_ with "
            "loss=net.criterion_ and only the rows it was trained on."
        )
    return net.module_, SkorchLoss(net), torch.device(net.device)


class SkorchLoss:
    """``loss(output, target)`` of a skorch net: its ``get_loss``, as a picklable object.

    (A lambda would keep a fitted scorer from pickling.) ``get_loss`` applies the net's
    own conventions, e.g. the log that ``NeuralNetClassifier`` takes of probabilities
    before ``NLLLoss``.
    """

    def __init__(self, net):
        self.net = net

    @property
    def criterion(self):
        return self.net.criterion_

    def __call__(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net.get_loss(out, y)


_CLASS_INDEX_LOSSES = (torch.nn.CrossEntropyLoss, torch.nn.NLLLoss)
_CLASS_INDEX_FUNCTIONS = {"cross_entropy", "nll_loss"}


def loss_kind(loss) -> str | None:
    """``"class"`` for torch's class-index losses (targets: indices or probabilities),
    ``"elementwise"`` for torch's other losses (targets shaped like the output), None for
    any other callable (nothing is assumed about its targets)."""
    loss = loss.criterion if isinstance(loss, SkorchLoss) else loss
    if isinstance(loss, _CLASS_INDEX_LOSSES) or (
        getattr(loss, "__module__", "") == "torch.nn.functional"
        and getattr(loss, "__name__", "") in _CLASS_INDEX_FUNCTIONS
    ):
        return "class"
    if isinstance(loss, torch.nn.modules.loss._Loss) or (
        getattr(loss, "__module__", "") == "torch.nn.functional"
    ):
        return "elementwise"
    return None
