"""Neural nets (skorch) as the valued model: seeded, thread-capped, fast refits.

A skorch ``NeuralNetClassifier`` or ``NeuralNetRegressor`` (alone, or inside a
``Pipeline`` or any meta-estimator) can be the ``estimator`` of a
:class:`~skdvl.utility.ModelUtility`. Each coalition is then fitted by
:class:`TorchRefit`:

* **seeded by the coalition**: the fit runs inside
  ``torch.random.fork_rng`` with the torch seed :func:`coalition_seed` of a
  base seed and the coalition's row mask, so u(S) is a pure function of S. The
  engine caches utilities per worker and a coalition may be evaluated in any
  block or worker, so a seed drawn per block (or per call) would make a value
  depend on which worker fitted it first; a seed hashed from the coalition does
  not. The user's global torch random state is restored after every fit.
* **single-threaded**: ``torch.set_num_threads(1)`` during the fit and the
  scoring, restored after (see :func:`torch_fit_context`).
* **fast**: for a bare skorch net with the configurations listed in
  :func:`fast_refit_reason`, the training loop is run without skorch's
  ``DataLoader``, history and callback notifications (2-4x fewer milliseconds
  per fit on small nets), consuming torch's random stream exactly as skorch's
  ``fit`` does; the first fast fit of each process is checked bitwise against
  skorch's own fit, and any difference (another torch or skorch version)
  switches back to skorch's fit for good.

Nothing here imports torch or skorch at module level: ``import skdvl`` works
without them, and a skorch net can only exist once skorch was imported.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sys
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.utils import check_random_state

__all__ = ["coalition_seed", "find_skorch_nets", "fast_refit_reason", "torch_fit_context",
           "TorchRefit"]

logger = logging.getLogger(__name__)

#: One seeded torch fit at a time per process: the global torch generator and the
#: thread count are process-wide, so two threads (joblib's threading backend) fitting
#: at once would draw from each other's seeds.
_TORCH_LOCK = threading.RLock()

#: skorch's classes whose training-loop methods the fast refit reproduces (their own
#: ``fit`` methods only delegate to ``NeuralNet.fit``).
_SKORCH_CLASSES = frozenset({
    "skorch.net.NeuralNet", "skorch.classifier.NeuralNetClassifier",
    "skorch.classifier.NeuralNetBinaryClassifier", "skorch.regressor.NeuralNetRegressor"})
#: The methods the fast refit replaces: a subclass overriding one gets skorch's fit.
_REPLACED_METHODS = (
    "fit", "partial_fit", "fit_loop", "run_single_epoch", "get_split_datasets",
    "get_dataset", "get_iterator", "notify", "on_train_begin", "on_train_end",
    "on_epoch_begin", "on_epoch_end", "on_batch_begin", "on_batch_end")
#: ``iterator_train__*`` parameters the fast refit reproduces.
_ITERATOR_PARAMS = frozenset({"batch_size", "shuffle"})


def _skorch() -> Any:
    """The skorch module if it was imported (no skorch net exists otherwise), else None."""
    return sys.modules.get("skorch")


def find_skorch_nets(estimator: Any) -> list[Any]:
    """The skorch nets in ``estimator``: itself, or those among its deep parameters.

    Parameters
    ----------
    estimator : estimator object

    Returns
    -------
    nets : list of skorch.NeuralNet
        Empty when skorch is not imported or ``estimator`` holds no net.
    """
    skorch = _skorch()
    if skorch is None:
        return []
    if isinstance(estimator, skorch.NeuralNet):
        return [estimator]
    try:
        params = estimator.get_params(deep=True)
    except Exception:  # noqa: BLE001 - not a scikit-learn estimator: no nets to find
        return []
    return [v for v in params.values() if isinstance(v, skorch.NeuralNet)]


def coalition_seed(base_seed: int, mask_key: bytes) -> int:
    """The torch seed of a coalition: a hash of its row mask, keyed by ``base_seed``.

    ``seed = int.from_bytes(blake2b(mask_key, digest_size=8,
    key=base_seed.to_bytes(8, "little")).digest(), "little") >> 1``, a number in
    ``[0, 2**63)``, where ``mask_key = np.packbits(mask).tobytes()`` for the
    boolean row mask of the coalition (``True`` for its rows).

    Parameters
    ----------
    base_seed : int in [0, 2**63)
        The seed of the game (see :class:`TorchRefit`).
    mask_key : bytes
        The bit-packed row mask of the coalition.

    Returns
    -------
    seed : int

    Examples
    --------
    >>> import numpy as np
    >>> key = np.packbits([True, False, True]).tobytes()
    >>> coalition_seed(7, key) == coalition_seed(7, key) != coalition_seed(8, key)
    True
    """
    digest = hashlib.blake2b(mask_key, digest_size=8,
                             key=int(base_seed).to_bytes(8, "little")).digest()
    return int.from_bytes(digest, "little") >> 1


def _devices(nets: list[Any]) -> list[int]:
    """The CUDA devices whose random state a fit of ``nets`` may touch (none on CPU)."""
    if not any(str(getattr(net, "device", "cpu")).startswith("cuda") for net in nets):
        return []
    import torch

    return list(range(torch.cuda.device_count()))


@contextlib.contextmanager
def torch_fit_context(seed: int, devices: list[int] | tuple[int, ...] = ()) -> Iterator[None]:
    """Run a torch fit seeded with ``seed`` on one thread, leaving global state untouched.

    Inside: ``torch.random.fork_rng(devices)``, then the seed (on CPU-only fits,
    ``torch.default_generator.manual_seed(seed)``, the CPU half of
    ``torch.manual_seed(seed)``: the CUDA generators are left alone; with
    ``devices``, ``torch.manual_seed(seed)``), and ``torch.set_num_threads(1)``.
    On exit the random states and the thread count are restored. One such fit
    runs at a time per process (a lock), as the states are process-wide.

    Parameters
    ----------
    seed : int
        The torch seed.
    devices : sequence of int, default=()
        CUDA devices to fork the random state of (those the fit may use).

    Notes
    -----
    skdvl's style is a private ``torch.Generator`` per computation, never the
    global seed; skorch draws parameter initialisations, dropout masks and
    shuffles from the global generator, so the global state is forked instead.

    When the engine evaluates utilities, :func:`threadpoolctl.threadpool_limits`
    already caps torch's OpenMP pool (measured: ``torch.get_num_threads()`` is 1
    inside it with torch's bundled libgomp); the explicit cap also covers
    utilities called directly and builds whose thread pool threadpoolctl does
    not see. On a 2-core machine, a training step of a 10-64-2 MLP on 200 rows
    took 126 us with one thread and 197 us with two.
    """
    import torch

    with _TORCH_LOCK, torch.random.fork_rng(devices=list(devices)):
        if devices:
            torch.manual_seed(seed)
        else:
            torch.default_generator.manual_seed(seed)
        threads = torch.get_num_threads()
        if threads != 1:
            torch.set_num_threads(1)
        try:
            yield
        finally:
            if threads != 1:
                torch.set_num_threads(threads)


def fast_refit_reason(estimator: Any) -> str:
    """Why the fast refit cannot replace skorch's fit of ``estimator`` ("" if it can).

    The fast refit accepts a bare skorch ``NeuralNet``, ``NeuralNetClassifier``,
    ``NeuralNetBinaryClassifier`` or ``NeuralNetRegressor`` (or a subclass that
    overrides none of the training-loop methods it replaces; ``initialize``,
    ``train_step``, ``infer``, ``get_loss`` and ``check_data`` are the net's own)
    with ``callbacks`` None, "disable" or empty, ``train_split=None``, the
    default ``dataset`` and ``iterator_train`` (torch's ``DataLoader``) with no
    ``iterator_train__*`` parameter but ``batch_size`` and ``shuffle``, fitted on
    numpy arrays.
    """
    skorch = _skorch()
    if skorch is None or not isinstance(estimator, skorch.NeuralNet):
        return "the estimator is not a bare skorch net"
    from skorch.dataset import Dataset
    from torch.utils.data import DataLoader

    cls = type(estimator)
    for name in _REPLACED_METHODS:
        owner = next(c for c in cls.__mro__ if name in c.__dict__)
        if f"{owner.__module__}.{owner.__qualname__}" not in _SKORCH_CLASSES:
            return f"{cls.__name__} overrides {name}"
    if estimator.callbacks not in (None, "disable") and (
            not isinstance(estimator.callbacks, (list, tuple)) or estimator.callbacks):
        return "the net has callbacks"
    if estimator.train_split is not None:
        return "the net has a train_split"
    if estimator.iterator_train is not DataLoader:
        return "iterator_train is not torch's DataLoader"
    extra = sorted(set(estimator.get_params_for("iterator_train")) - _ITERATOR_PARAMS)
    if extra:
        return f"the net sets iterator_train__{extra[0]}"
    if estimator.dataset is not Dataset or estimator.get_params_for("dataset"):
        return "the net has a custom dataset"
    return ""


def _fast_fit(net: Any, X: np.ndarray, y: np.ndarray) -> Any:
    """Fit ``net`` (unfitted) on ``X, y`` as ``net.fit(X, y)`` does, without skorch's loop.

    Draws from torch's global generator in the order skorch's ``fit`` does:
    ``initialize()`` (the module's parameters), then per epoch the int64 that
    ``DataLoader.__iter__`` draws for its base seed, with ``shuffle`` the seed of
    ``RandomSampler`` and its ``randperm``, and whatever the net's ``train_step``
    draws (dropout). Batches are the same rows in the same order; each is passed
    to the net's own ``train_step`` (zero_grad, forward, ``get_loss``, backward,
    ``optimizer.step(closure)``). Callbacks' epoch and batch hooks and the
    history are skipped (the net has no callbacks that train; its history stays
    empty).
    """
    import torch

    net.initialize()
    net.check_data(X, y)
    net.check_training_readiness()
    n = X.shape[0]
    if y.shape[0] != n:
        raise ValueError(f"X has {n} rows but y has {y.shape[0]}.")  # as skorch's Dataset
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    params = net.get_params_for("iterator_train")
    batch_size = params.get("batch_size", net.batch_size)
    batch_size = n if batch_size == -1 else int(batch_size)
    shuffle = bool(params.get("shuffle", False))
    for _ in range(net.max_epochs):
        torch.empty((), dtype=torch.int64).random_()  # DataLoader iterator's base seed
        if shuffle:  # torch.utils.data.RandomSampler.__iter__
            generator = torch.Generator()
            generator.manual_seed(int(torch.empty((), dtype=torch.int64).random_().item()))
            order = torch.randperm(n, generator=generator)
            for lo in range(0, n, batch_size):
                idx = order[lo:lo + batch_size]
                net.train_step((Xt[idx], yt[idx]))
        else:
            for lo in range(0, n, batch_size):
                net.train_step((Xt[lo:lo + batch_size], yt[lo:lo + batch_size]))
    return net


def _same_fit(a: Any, b: Any) -> bool:
    """Whether two fitted skorch nets have bitwise-equal modules (and classes)."""
    import torch

    for name in a._modules:
        sa, sb = getattr(a, name + "_").state_dict(), getattr(b, name + "_").state_dict()
        if sa.keys() != sb.keys() or not all(torch.equal(sa[k], sb[k]) for k in sa):
            return False
    ca, cb = getattr(a, "classes_inferred_", None), getattr(b, "classes_inferred_", None)
    if ca is None or cb is None:
        return ca is None and cb is None
    return bool(np.array_equal(ca, cb))


def _check_train_split(nets: list[Any], owner: str) -> None:
    for net in nets:
        if net.train_split is not None:
            raise ValueError(
                f"The skorch net {type(net).__name__} in the 'estimator' of {owner} has "
                f"train_split={net.train_split!r}: every fit would hold out part of the "
                "coalition's rows as its own validation set, so a row's value would depend "
                "on whether it was held out, and a shuffling splitter draws from numpy's "
                "global random state, which the per-coalition torch seed does not cover. "
                "Set train_split=None on the net (skdvl scores each fit on X_val or on "
                "the cross-valuation fold).")


class TorchRefit:
    """Refits of an estimator holding skorch nets: seeded per coalition, fast, capped.

    Parameters
    ----------
    estimator : estimator object
        A skorch net, or an estimator (a ``Pipeline``...) with nets among its
        parameters. Its nets must have ``train_split=None``.
    random_state : int, RandomState instance or None
        Gives the base seed: ``check_random_state(random_state).randint(2**31 - 1)``
        (an int ``r`` gives ``RandomState(r).randint(2**31 - 1)``; None a random one,
        fixed for the life of this object and its copies).
    owner : str, default="ModelUtility"
        Named in error messages.

    Attributes
    ----------
    base_seed : int
    fast : bool or None
        Whether fits take the fast refit: None until the first fast fit was
        checked against skorch's own fit, then True (equal) or False (different,
        or the estimator is not one it reproduces).
    description : str
        How coalitions are fitted, for ``fit_path``.

    Notes
    -----
    A coalition with row mask ``m`` is fitted as::

        seed = coalition_seed(base_seed, np.packbits(m).tobytes())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)       # on CPU; see torch_fit_context
            torch.set_num_threads(1)      # restored after
            model = clone(estimator).fit(X[m], y[m])
            score = scorer(model, X_val, y_val)

    The seed depends on the coalition, not on the block or worker that
    evaluates it (the engine's per-worker caches make that necessary), so values
    are identical for any ``n_jobs`` and joblib backend. Only torch's generators
    are seeded: a component drawing from numpy's global random state (a
    ``train_split`` with a shuffling splitter, which is refused, or a custom
    callback) is not made deterministic.
    """

    def __init__(self, estimator: Any, random_state: Any, owner: str = "ModelUtility") -> None:
        self.estimator = estimator
        nets = find_skorch_nets(estimator)
        if not nets:
            raise ValueError(f"The estimator of {owner} holds no skorch net. Got "
                             f"{type(estimator).__name__} instead.")
        _check_train_split(nets, owner)
        try:
            rng = check_random_state(random_state)
        except ValueError:
            raise ValueError(
                f"The 'random_state' parameter of {owner} must be an int, a "
                f"numpy.random.RandomState instance or None. Got {random_state!r} "
                "instead.") from None
        self.base_seed = int(rng.randint(np.iinfo(np.int32).max))
        self.devices = _devices(nets)
        reason = fast_refit_reason(estimator)
        self.fast: bool | None = None if not reason else False
        self.description = (
            "skorch nets seeded per coalition; fast refit (checked against skorch's fit on "
            "the first fit of each process)" if not reason
            else f"skorch nets seeded per coalition; skorch's own fit ({reason})")

    def seed(self, mask_key: bytes) -> int:
        """The torch seed of the coalition whose packed row mask is ``mask_key``."""
        return coalition_seed(self.base_seed, mask_key)

    def context(self, mask_key: bytes) -> contextlib.AbstractContextManager[None]:
        """The seeded, single-threaded context of one coalition's fit and scoring."""
        return torch_fit_context(self.seed(mask_key), self.devices)

    def fit(self, X: Any, y: np.ndarray, mask_key: bytes) -> Any:
        """``clone(estimator)`` fitted on ``X, y``; call inside :meth:`context`."""
        fast = self.fast is not False and isinstance(X, np.ndarray) and isinstance(
            y, np.ndarray) and X.dtype.kind in "biuf"
        if not fast:
            return clone(self.estimator).fit(X, y)
        import torch

        seed = self.seed(mask_key)
        if self.fast is None:  # the first fast fit of this process: check it
            try:
                fitted = _fast_fit(clone(self.estimator), X, y)
            except Exception:  # noqa: BLE001 - skorch's own fit raises (or not) for itself
                self._reseed(seed)
                return clone(self.estimator).fit(X, y)
            self._reseed(seed)
            reference = clone(self.estimator).fit(X, y)
            self.fast = _same_fit(fitted, reference)
            if not self.fast:
                logger.debug("The fast refit of %s differs from skorch's fit (torch %s); "
                             "using skorch's fit.", type(self.estimator).__name__,
                             torch.__version__)
            return reference
        try:
            return _fast_fit(clone(self.estimator), X, y)
        except Exception:  # noqa: BLE001 - skorch's own fit raises (or not) for itself
            self._reseed(seed)
            return clone(self.estimator).fit(X, y)

    def _reseed(self, seed: int) -> None:
        import torch

        if self.devices:
            torch.manual_seed(seed)
        else:
            torch.default_generator.manual_seed(seed)
