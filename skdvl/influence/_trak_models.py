"""The models of TRAK's ensemble: independently trained copies of a skorch net.

TRAK (Park et al., 2023, Sec. 3) averages its scores over models trained independently
on the same data, and ``ProjectedAttribution(n_models=M)`` trains them: model 0 is the
fitted net given, models ``1 ... M-1`` are ``sklearn.base.clone`` copies of it (same
module, optimiser, epochs, batch size and callbacks: the net's own training recipe)
refitted on the training rows, each under its own seed.

skorch draws the initial weights and the batch order from torch's global generator, so a
copy is trained inside ``torch.random.fork_rng`` seeded with its own seed: the copies
depend on ``random_state`` alone, and the caller's global torch state is left as it was.
"""

from __future__ import annotations

import numpy as np
import torch

from ._skorch import _is_skorch_net


def training_seeds(entropy: int, n: int) -> list[int]:
    """``n`` seeds for the trained copies, independent of the projection seeds.

    The projection seeds are ``SeedSequence(entropy).spawn(M)``; these come from
    ``SeedSequence([entropy, 1])``, another stream, so that training copies leaves the
    projections (and the kernels of a sub-ensemble) unchanged.
    """
    if n <= 0:
        return []
    return [int(s) for s in np.random.SeedSequence([entropy, 1]).generate_state(n)]


def resolve_n_models(model, method: str, models, n_models) -> int:
    """The number of models of ``ProjectedAttribution``, or an error naming the conflict."""
    if models is not None and len(models) == 0:
        raise ValueError("The 'models' parameter of ProjectedAttribution must hold at "
                         "least one state dict, or be None. Got an empty list instead.")
    if n_models is None:
        return 1 if models is None else len(models)
    if models is not None and n_models != len(models):
        raise ValueError(
            f"The 'n_models' parameter of ProjectedAttribution ({n_models}) must be None "
            f"or len(models) ({len(models)}) when models are given: only copies of the "
            "net itself are trained.")
    if n_models > 1 and models is None:
        if method == "tracin":
            raise ValueError(
                f"n_models={n_models} trains independent models, but TracIn's models are "
                "the checkpoints of one training run; pass them as 'models' (e.g. the "
                "checkpoints_ of a CheckpointRecorder callback).")
        if not _is_skorch_net(model):
            raise ValueError(
                f"n_models={n_models} trains {n_models - 1} copies of the model with its "
                "own fit(), which needs a fitted skorch net; got a "
                f"{type(model).__name__}. Train the models yourself and pass their state "
                "dicts as 'models' instead.")
    return int(n_models)


def _forked_devices() -> list[int]:
    return list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []


def train_copies(net, seeds, X, y, device) -> list[dict]:
    """State dicts (on ``device``) of ``clone(net)`` refitted on ``(X, y)``, one per seed.

    Parameters
    ----------
    net : skorch.NeuralNet
        The fitted net (its parameters, not its fitted state, are cloned).
    seeds : list of int
    X, y : torch.Tensor
        The training rows, as the gradients see them.
    device : torch.device
        Where the states are kept.
    """
    from sklearn.base import clone

    states = []
    for seed in seeds:
        copy = clone(net)
        with torch.random.fork_rng(devices=_forked_devices()):
            torch.manual_seed(int(seed))
            copy.fit(X.cpu(), y.cpu())
        states.append({k: v.detach().to(device).clone()
                       for k, v in copy.module_.state_dict().items()})
    return states
