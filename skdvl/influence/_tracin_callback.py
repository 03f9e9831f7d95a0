"""TracIn's in-run route: a skorch callback that keeps checkpoints during training.

Imports skorch; :mod:`skdvl.influence` loads this module only when
``CheckpointRecorder`` is asked for.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
from skorch.callbacks import Callback


class CheckpointRecorder(Callback):
    """Keep the net's parameters and step size every ``every`` epochs, for TracIn.

    TracInCP (Pruthi et al., 2020, Eq. 4) sums ``lr_m * g_test . g_train`` over
    checkpoints ``m`` taken during training. Add this callback to a skorch net, fit it,
    then pass ``checkpoints_`` and ``learning_rates_`` to
    :class:`~skdvl.influence.TracIn`. A checkpoint is a CPU copy of the module's state
    dict at the end of an epoch; its learning rate is the mean step size of the optimiser
    over the training batches since the previous checkpoint (the constant ``lr`` without
    a scheduler).

    Parameters
    ----------
    every : int, default=1
        Keep a checkpoint at the end of every ``every``-th epoch.

    Attributes
    ----------
    checkpoints_ : list of dict
    learning_rates_ : list of float
    epochs_ : list of int
        The epoch (from 1) of each checkpoint.
    batch_rates_ : list of float
        The step sizes of the training batches since the last checkpoint.

    Notes
    -----
    TracIn's gradients are those of the loss at each checkpoint, computed afterwards
    from the kept parameters (so a checkpoint costs one copy of the parameters and no
    gradient pass during training). With Adam or momentum the step is not ``lr`` times
    the gradient; TracIn's weights are then the paper's first-order heuristic. A
    ``partial_fit`` appends to the checkpoints of the previous fit; ``fit`` starts
    afresh.

    References
    ----------
    Pruthi, G., Liu, F., Kale, S. and Sundararajan, M. (2020). Estimating training data
    influence by tracing gradient descent. NeurIPS.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from skorch import NeuralNetClassifier
    >>> from skdvl.influence import CheckpointRecorder, InfluenceScorer, TracIn
    >>> X = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    >>> y = (X[:, 0] > 0).astype(np.int64)
    >>> rec = CheckpointRecorder()
    >>> net = NeuralNetClassifier(torch.nn.Linear(4, 2), criterion=torch.nn.CrossEntropyLoss,
    ...                           max_epochs=3, train_split=None, callbacks=[rec],
    ...                           verbose=0).fit(X, y)
    >>> len(rec.checkpoints_), rec.learning_rates_
    (3, [0.01, 0.01, 0.01])
    >>> method = TracIn(proj_dim=None, checkpoints=rec.checkpoints_,
    ...                 learning_rates=rec.learning_rates_)
    >>> InfluenceScorer(net, method=method).fit(X, y).influences(X[:2], y[:2]).shape
    (2, 40)
    """

    def __init__(self, every=1):
        self.every = every

    def initialize(self) -> CheckpointRecorder:
        if not isinstance(self.every, Integral) or isinstance(self.every, bool) \
                or self.every < 1:
            raise ValueError("The 'every' parameter of CheckpointRecorder must be an int "
                             f">= 1. Got {self.every!r} instead.")
        self.checkpoints_: list[dict] = []
        self.learning_rates_: list[float] = []
        self.epochs_: list[int] = []
        # (attributes end in "_": skorch takes the others for parameters when cloning)
        self.batch_rates_: list[float] = []
        return self

    def on_batch_end(self, net, batch=None, training=None, **kwargs):
        if training:
            self.batch_rates_.append(_learning_rate(net))

    def on_epoch_end(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        epoch = len(net.history)
        if epoch % self.every:
            return
        steps = self.batch_rates_ or [_learning_rate(net)]
        lr = steps[0] if len(set(steps)) == 1 else float(np.mean(steps))
        self.batch_rates_ = []
        self.checkpoints_.append({k: v.detach().cpu().clone()
                                  for k, v in net.module_.state_dict().items()})
        self.learning_rates_.append(lr)
        self.epochs_.append(epoch)


def _learning_rate(net) -> float:
    """The step size of the net's optimiser (one for all parameter groups)."""
    rates = {float(group["lr"]) for group in net.optimizer_.param_groups}
    if len(rates) != 1:
        raise ValueError(
            "CheckpointRecorder needs one learning rate for all the optimiser's parameter "
            f"groups (TracIn weights a checkpoint by it); got {sorted(rates)}.")
    return rates.pop()
