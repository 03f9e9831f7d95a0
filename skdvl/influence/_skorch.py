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
    return net.module_, lambda out, y: net.get_loss(out, y), torch.device(net.device)
