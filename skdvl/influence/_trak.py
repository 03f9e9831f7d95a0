"""ProjectedAttribution: TRAK, TracIn, gradient similarity and influence with projected
curvature, on projected gradients."""

from __future__ import annotations

import copy
import json
import os
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state

from skdvl._sklearn_compat import Interval, StrOptions, fit_context

from ._checks import check_loss, check_output_hessians, check_targets, check_trainable
from ._data import is_pandas, to_tensors
from ._functional import FlatModel, iter_slices
from ._gradient_store import GradientStore, load_models, read_record, save_models
from ._projection import KINDS, BlockProjector, FactoredProjector
from ._skorch import resolve_model
from ._trak_features import gauss_newton_gram, project_rows, projected_hessian
from ._trak_math import OUTPUTS, ProjectedKernel, RowFunction, resolve_output
from ._trak_models import resolve_n_models, train_copies, training_seeds
from ._trak_queries import _AttributionQueries
from ._zarr_store import hash_array, hash_state_dict, make_record

METHODS = ("trak", "tracin", "grad_dot", "grad_cos", "influence")
KERNELS = ("outputs", "gauss_newton", "hessian")
#: The methods that solve with a kernel (the others take dot products).
_KERNEL_METHODS = ("trak", "influence")
_DTYPES = {"float16": torch.float16, "float32": torch.float32, "float64": torch.float64}
#: Parameters that do not change the stored numbers (left out of the store's record).
_UNRECORDED = {"model", "loss", "models", "n_models", "learning_rates", "batch_size", "device",
               "random_state", "verbose", "store", "chunk_size", "backend", "client"}
_FORMAT = 1


class ProjectedAttribution(_AttributionQueries, BaseEstimator):
    """Attribution of test losses to training rows from projected per-example gradients.

    All methods return scores in the convention of
    :meth:`~skdvl.influence.InfluenceScorer.influences`: ``scores[t, i] > 0`` means that
    training row ``i`` raises the loss of test row ``t`` (harmful).

    * ``"trak"`` (Park et al., 2023, Algorithm 1): for each model ``m``, the projected
      gradients ``Phi_m`` of the training rows' output function ``f`` (the margin
      ``log(p / (1 - p))`` of a classifier, see ``output``), and

      ``scores[t, i] = dbar_t * mean_m[phi_tm^T (Phi_m^T Phi_m + lambda_m I)^-1 phi_im] * qbar_i``

      with ``q_i = -dl_i/df_i`` (``1 - p_i``: TRAK's ``Q``) and ``d_t = dl_t/df_t``, each
      averaged over the models as TRAK averages ``Q``. With one model it is
      ``-g_t^T (Phi^T Phi + lambda I)^-1 g_i`` for the (projected) loss gradients
      ``g = (dl/df) phi``: a Gauss-Newton influence whose output Hessians are replaced
      by one (TRAK drops ``R``). The factor ``d_t`` turns TRAK's effect on the test
      output into its effect on the test loss (for a classifier a positive factor
      ``1 - p_t`` per test row, so rankings are TRAK's, negated).
    * ``"tracin"`` (TracInCP of Pruthi et al., 2020): ``-sum_m lr_m g_tm . g_im`` over
      checkpoints ``m`` with learning rates ``lr_m``.
    * ``"grad_dot"``, ``"grad_cos"``: ``-g_t . g_i`` and ``-cos(g_t, g_i)``, averaged over
      the models.
    * ``"influence"``: influence functions (Koh & Liang, 2017) with the curvature of the
      mean training loss projected, ``-mean_m g_tm^T P_m (P_m^T C_m P_m + lambda I)^-1
      P_m^T g_im`` for the loss gradients ``g``; ``C`` is the Gauss-Newton matrix
      (``kernel="gauss_newton"``) or the Hessian (``kernel="hessian"``), solved densely
      in ``k`` dimensions. Without projection it is
      :class:`~skdvl.influence.InfluenceScorer`'s ``method="direct"``; with one model
      and ``kernel="gauss_newton"``, ``n`` times TRAK's Gauss-Newton kernel at ``n``
      times the ``lambda``.

    Parameters
    ----------
    model : skorch.NeuralNet or torch.nn.Module
        The module (a private copy is used, in eval mode), or a fitted skorch net.
    loss : callable, default=None
        ``loss(output, target)`` of a batch (for a bare module).
    method : {"trak", "tracin", "grad_dot", "grad_cos", "influence"}, default="trak"
    proj_dim : int or None, default=2048
        Dimension ``k`` of the projections; None uses the gradients unprojected.
    projection : {"rademacher", "sparse", "factored"}, default="rademacher"
        :class:`~skdvl.influence._projection.BlockProjector` (dense signs, or the
        sparse JL transform with ``nnz`` non-zeros per row) on per-example gradients,
        or :class:`~skdvl.influence._projection.FactoredProjector` (Linear layers only;
        the gradients are never formed, and the dimension is about ``proj_dim``);
        ``"factored_pca"``: the same with each side the leading eigenvectors of its
        second moment on the training rows, per model (LoGra's PCA initialisation,
        :meth:`~skdvl.influence._projection.FactoredProjector.pca`; not with ``store``).
    models : list of dict, default=None
        State dicts of the models (TRAK: independently trained models; TracIn:
        checkpoints), loaded in turn into the module. None: the module as it is (and
        the copies trained for ``n_models``).
    n_models : int or None, default=None
        Number of models. None: ``len(models)``, or 1. With ``models=None`` and
        ``n_models=M > 1`` (a fitted skorch net, not TracIn), model 0 is the net given
        and :meth:`fit` trains ``M - 1`` copies: ``sklearn.base.clone(net)`` refitted on
        the training rows, copy ``j`` under the ``j``-th seed of ``random_state``'s
        training stream (:mod:`~skdvl.influence._trak_models`), so that one
        ``random_state`` gives the same copies, and the projections do not depend on
        whether copies are trained. With a ``store`` their state dicts are saved in it:
        a resumed fit does not retrain them and ``fit()`` without data reloads them.
    learning_rates : list of float, default=None
        TracIn's step size per checkpoint; None means 1 for each.
    regularization : float, "auto" or "gcv", default="auto"
        TRAK's ``lambda`` (``"influence"``: added to the projected mean curvature, on
        the scale of :class:`~skdvl.influence.InfluenceScorer`'s; ``"auto"`` is then
        ``tr(P^T C P) / n``), per model, without test data. ``"auto"``: ``lambda =
        tr(Phi^T Phi) / n = mean_i ||phi_i||^2``, the mean eigenvalue of the Gram matrix
        of the training features: an isolated training row of average norm gets leverage
        1/2, and ``lambda > 0`` also when ``n < k`` (where ``Phi^T Phi`` is singular).
        ``"gcv"``: the ``lambda`` minimising the generalised cross-validation error of
        the ridge regression of ``q`` on ``Phi`` (Golub et al., 1979), on a grid of
        ``10^-8 ... 10^2`` times the largest eigenvalue. On the digits MLP of
        ``benchmarks/bench_trak_lds.py``, ``"auto"`` was within 0.03 of the best LDS over
        a grid of ``lambda`` and ``"gcv"`` 0.2 below it (see Notes of
        :mod:`~skdvl.influence._trak_math`).
    output : {"auto", "margin", "prediction", "loss"}, default="auto"
        TRAK's output function ``f``. ``"auto"``: the margin for logits with integer
        class targets, the prediction for one output per row, else the loss.
    kernel : {"outputs", "gauss_newton"}, default="outputs"
        TRAK's curvature ``K``: ``"outputs"``, the paper's ``Phi^T Phi`` (it drops the
        loss weights ``R``); ``"gauss_newton"``, the projected Gauss-Newton matrix
        ``sum_i P^T J_i^T H_i J_i P`` of all the outputs (``H_i``: the output Hessian of
        the loss). With the margin, ``q_i phi_i`` is minus the loss gradient ``g_i``, so
        one model gives the Gauss-Newton influence ``-g_t^T (G + lambda I)^-1 g_i``. It
        costs one projected gradient pass per output entry and a ``k x k`` kernel;
        ``"auto"`` is ``tr(G) / n`` (see :mod:`~skdvl.influence._trak_math`).
        ``method="influence"`` takes ``"gauss_newton"`` or ``"hessian"``: ``k``
        Hessian-vector products with the columns of ``P`` (which is then formed:
        ``d k <= 2**26``; :func:`~skdvl.influence._trak_features.projected_hessian`).
    dtype : {"float16", "float32", "float64"} or None, default=None
        Storage type of the projected gradients; None: the model's (the kernel is
        computed in float64).
    nnz : int, default=8
        Non-zeros per row of ``projection="sparse"``.
    batch_size : int, default=256
        Rows per vectorised gradient evaluation.
    store : str or path, default=None
        Where :meth:`fit` writes the projected training gradients (a zarr group, see
        :mod:`~skdvl.influence._gradient_store`); None keeps them in memory. A fit
        interrupted and started again with the same parameters, model and data computes
        only the chunks not yet written; other parameters, seeds, models or data are
        refused, naming what differs. ``fit()`` without data reopens a fitted store.
    chunk_size : int, default=1000
        Training rows per chunk of the store (the unit of resumption) and of every
        query: :meth:`influences` holds the test side, one chunk of training features
        and the result. An existing store keeps its own chunk size.
    device : str or torch.device, default=None
    backend : {"sequential", "dask"}, default="sequential"
        How :meth:`fit` projects the training chunks: in turn, or one dask task per
        ``(model, chunk)`` (:mod:`~skdvl.influence._trak_dask`; needs the ``dask``
        extra), written to the store here in the same order. The stored features are
        bitwise those of a sequential fit on one torch thread (each task runs on one).
        TRAK's Gauss-Newton kernel and the queries run in this process.
    client : distributed.Client, default=None
        The dask cluster for ``backend="dask"`` (workers with one thread each); None:
        dask's current scheduler.
    random_state : int, RandomState or None, default=None
        Seeds the projections (one independent matrix per model). With None and an
        existing ``store``, the store's seeds are used.
    verbose : int, default=0

    Attributes
    ----------
    method_ : str
    output_ : str
        The output function used (TRAK).
    n_params_ : int
    proj_dim_ : int
        Dimension of the stored features.
    seeds_ : ndarray of shape (n_models,)
        The projection seed of each model.
    n_models_ : int
    trained_models_ : list of dict
        The state dicts of the copies trained for ``n_models`` (empty when none were).
    train_seeds_ : ndarray of shape (len(trained_models_),)
        The torch seed each copy was trained under.
    features_ : torch.Tensor or zarr.Array of shape (n_models, n_samples, proj_dim_)
        Projected training gradients (TRAK: of ``f``; others: of the loss); the zarr
        array of the store when ``store`` is set.
    q_ : torch.Tensor of shape (n_models, n_samples)
        ``-dl/df`` per model and training row (TRAK; -1 for the other methods).
    store_ : GradientStore
        The store of the features (in memory or zarr).
    n_chunks_written_ : int
        Chunks of ``(model, rows)`` projected by the last :meth:`fit` (fewer when it
        resumed a store, 0 when it reopened one).
    regularization_ : ndarray of shape (n_models,)
        TRAK's ``lambda`` per model.
    kernels_ : list of ProjectedKernel
        TRAK's kernels, with their GCV curves.

    Notes
    -----
    Departures from the paper: TRAK's optional soft-thresholding of the scores is not
    applied; ``lambda > 0`` is added to the kernel (the paper inverts ``Phi^T Phi``, which
    needs ``k < n``); the models' test-loss factors ``d_t`` are averaged like ``Q``.
    The projected gradients take ``n_models * n * k`` values (in memory, or on disk with
    ``store``); TRAK's kernel takes ``min(n, k)^2`` more, computed chunk by chunk. The
    random projections regenerate their matrix on every call, so per-example gradients
    are projected in groups of up to ``2**26`` entries (256 MB of float32; at least
    ``batch_size`` rows): with ``store``, the memory of :meth:`fit` is the training data,
    one such group, one chunk of features and the kernel.

    References
    ----------
    Park, S. M., Georgiev, K., Ilyas, A., Leclerc, G. and Madry, A. (2023). TRAK:
    Attributing model behavior at scale. ICML. arXiv:2303.14186.
    Pruthi, G., Liu, F., Kale, S. and Sundararajan, M. (2020). Estimating training data
    influence by tracing gradient descent. NeurIPS.
    Koh, P. W. and Liang, P. (2017). Understanding black-box predictions via influence
    functions. ICML.
    Golub, G. H., Heath, M. and Wahba, G. (1979). Generalized cross-validation as a
    method for choosing a good ridge parameter. Technometrics 21(2).

    Examples
    --------
    >>> import torch
    >>> from skdvl.influence._trak import ProjectedAttribution
    >>> X, y = torch.randn(30, 4), torch.randint(0, 3, (30,))
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    >>> trak = ProjectedAttribution(net, loss=torch.nn.CrossEntropyLoss(), proj_dim=16,
    ...                             random_state=0).fit(X, y)
    >>> trak.influences(X[:5], y[:5]).shape
    (5, 30)
    """

    _parameter_constraints: dict = {
        "model": "no_validation",
        "loss": [callable, None],
        "method": [StrOptions(set(METHODS))],
        "proj_dim": [Interval(Integral, 1, None, closed="left"), None],
        "projection": [StrOptions({*KINDS, "factored", "factored_pca"})],
        "models": [list, tuple, None],
        "n_models": [Interval(Integral, 1, None, closed="left"), None],
        "learning_rates": ["array-like", None],
        "regularization": [Interval(Real, 0, None, closed="left"),
                           StrOptions({"auto", "gcv"})],
        "output": [StrOptions(set(OUTPUTS))],
        "kernel": [StrOptions(set(KERNELS))],
        "dtype": [StrOptions(set(_DTYPES)), None],
        "nnz": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "store": [str, os.PathLike, None],
        "chunk_size": [Interval(Integral, 1, None, closed="left")],
        "device": "no_validation",
        "backend": [StrOptions({"sequential", "dask"})],
        "client": "no_validation",
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(self, model=None, *, loss=None, method="trak", proj_dim=2048,
                 projection="rademacher", models=None, n_models=None, learning_rates=None,
                 regularization="auto", output="auto", kernel="outputs", dtype=None, nnz=8,
                 batch_size=256, store=None, chunk_size=1000, device=None,
                 backend="sequential", client=None, random_state=None, verbose=0):
        self.model = model
        self.loss = loss
        self.method = method
        self.proj_dim = proj_dim
        self.projection = projection
        self.models = models
        self.n_models = n_models
        self.learning_rates = learning_rates
        self.regularization = regularization
        self.output = output
        self.kernel = kernel
        self.dtype = dtype
        self.nnz = nnz
        self.batch_size = batch_size
        self.store = store
        self.chunk_size = chunk_size
        self.device = device
        self.backend = backend
        self.client = client
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ fitting
    @fit_context(prefer_skip_nested_validation=True)
    def fit(self, X=None, y=None) -> ProjectedAttribution:
        """Project the training rows' gradients under every model (and fit TRAK's kernels).

        Parameters
        ----------
        X : array-like, DataFrame, torch.Tensor or torch Dataset of (x, y) pairs, or None
            Training inputs. None reopens the fitted gradient store at ``store`` (made
            with the same parameters and model), without the training data.
        y : array-like or torch.Tensor
            Training targets; None when ``X`` is a Dataset.

        Returns
        -------
        self : ProjectedAttribution
        """
        self.method_ = self.method
        self._setup()
        if X is None:
            if self.store is None:
                raise ValueError("fit(X=None) reopens a gradient store, but the 'store' "
                                 "parameter of ProjectedAttribution is None; pass X and y.")
            return self._reopen()
        Xt, yt = self._tensors(X, y, "X", "y", reference=False)
        self.row_shape_ = tuple(Xt.shape[1:])
        self.train_index_ = X.index if is_pandas(X) else None
        self.cast_targets_ = check_targets(self.flat_, Xt, yt)
        self._complete_models(Xt, yt)
        yt = self._cast(yt)
        check_loss(self.flat_, Xt, yt)
        with torch.no_grad():
            out = self.flat_.forward(self.flat_.theta, Xt[:8])
        self.output_ = resolve_output(self.output, out, yt[:8])
        self._row_function()
        self.row_fn_.check(out, yt[:8])
        if self.projection == "factored_pca" and self.proj_dim is not None:
            self._pca_projectors(Xt, yt)
        record = {"config": self._config(), "data": self._data_record(Xt, yt),
                  "chunk_size": int(self.chunk_size)}
        shape = (self.n_models_, len(Xt), self._proj_dim())
        if self.store is None:
            self.store_ = GradientStore.in_memory(record, shape, self._dtype(),
                                                  self.chunk_size)
        else:
            self.store_ = GradientStore.open(self.store, record, shape, self._dtype())
            if self.trained_models_ and load_models(self.store) is None:
                save_models(self.store, self.trained_models_)
        pending = self.store_.pending()
        for m, c, phi, d in self._progress(self._computed(pending, Xt, yt), len(pending),
                                           "projecting the training rows"):
            self.store_.write(m, c, phi, -d)
        self.n_chunks_written_ = len(pending)
        grams = None
        if self._given_curvature() and not self.store_.complete:
            grams = [self._curvature(m, Xt, yt) for m in range(self.n_models_)]
        self._finish(grams)
        return self

    def __getstate__(self):
        # A dask Client cannot be pickled (and the tasks never use it).
        state = super().__getstate__()
        state["client"] = None
        return state

    def _computed(self, pending, Xt, yt):
        """``(m, c, features, dl/df)`` of each pending chunk, in order."""
        if self.backend == "dask":
            from ._trak_dask import dask_chunks

            yield from dask_chunks(self, pending, Xt, yt, self.client)
            return
        for m, c in pending:
            sl = self.store_.bounds[c]
            yield (m, c, *self._features(m, Xt[sl], yt[sl]))

    def _given_curvature(self) -> bool:
        """Whether the kernel is a curvature matrix (not TRAK's ``Phi^T Phi``)."""
        return self.method_ == "influence" or (self.method_ == "trak"
                                               and self.kernel == "gauss_newton")

    def _setup(self) -> None:
        kernels = ("gauss_newton", "hessian") if self.method == "influence" else KERNELS[:2]
        if self.kernel not in kernels:
            raise ValueError(
                f"The 'kernel' parameter of ProjectedAttribution must be one of "
                f"{list(kernels)} for method={self.method!r}. Got {self.kernel!r} instead.")
        if self.projection == "factored_pca" and self.store is not None:
            raise ValueError("projection='factored_pca' derives the projection from the "
                             "training rows and cannot be reopened from a gradient store "
                             "yet; use store=None or another projection.")
        module, loss, device = resolve_model(self.model, self.loss)
        check_trainable(module)
        device = torch.device(self.device) if self.device is not None else device
        self.module_ = copy.deepcopy(module).to(device).eval()
        self.flat_ = FlatModel(self.module_, loss)
        self.n_params_ = self.flat_.n_params
        self.states_: list[dict | None] = ([None] if self.models is None
                                           else [dict(s) for s in self.models])
        self.n_models_ = resolve_n_models(self.model, self.method, self.models, self.n_models)
        if self.n_models_ > len(self.states_):  # model 0 is restored by _load like the rest
            self.states_ = [{k: v.detach().clone()
                             for k, v in self.module_.state_dict().items()}]
        lrs = (np.ones(self.n_models_) if self.learning_rates is None
               else np.asarray(self.learning_rates, dtype=np.float64).reshape(-1))
        if lrs.shape[0] != self.n_models_:
            raise ValueError(
                "The 'learning_rates' parameter of ProjectedAttribution must have one entry "
                f"per model ({self.n_models_}). Got {lrs.shape[0]} instead.")
        self.learning_rates_ = lrs
        stored = read_record(self.store) if self.random_state is None else None
        n_train = self.n_models_ - len(self.states_)
        if stored is not None and len(stored["config"]["seeds"]) == self.n_models_:
            # random_state=None: an existing store's seeds are used
            self.seeds_ = np.array(stored["config"]["seeds"], dtype=np.int64)
            train = stored["config"].get("train_seeds", [])
        else:
            entropy = int(check_random_state(self.random_state).randint(2**31 - 1))
            self.seeds_ = np.array([int(s.generate_state(1)[0]) for s in
                                    np.random.SeedSequence(entropy).spawn(self.n_models_)])
            train = training_seeds(entropy, n_train)
        self.train_seeds_ = np.array(train[:n_train], dtype=np.int64)
        self.trained_models_: list[dict] = []
        self.projectors_ = [self._projector(int(s)) for s in self.seeds_]

    def _complete_models(self, X, y) -> None:
        """Train (or reload from the store) the copies of the net for ``n_models``."""
        missing = self.n_models_ - len(self.states_)
        if missing == 0:
            return
        device = self.flat_.theta.device
        saved = load_models(self.store)
        if saved is not None and len(saved) == missing:
            states = [{k: v.to(device) for k, v in s.items()} for s in saved]
        elif X is None:
            raise ValueError(
                f"The gradient store {os.fspath(self.store)!r} holds no trained models for "
                f"n_models={self.n_models}; call fit(X, y) with the training data.")
        else:
            states = train_copies(self.model, self.train_seeds_, X, y, device)
        self.trained_models_ = states
        self.states_ = [*self.states_, *states]

    def _pca_projectors(self, X, y) -> None:
        """``projection="factored_pca"``: each model's projector from its training
        gradients (the sizes of model 0's spectra for all models)."""
        self.projectors_, sizes = [], None
        for m in range(self.n_models_):
            self._load(m)
            proj = FactoredProjector.pca(self.module_, self.proj_dim, X, y,
                                         self.row_fn_.values, self.batch_size, sizes)
            sizes = proj.sizes
            self.projectors_.append(proj)

    def _projector(self, seed: int):
        if self.proj_dim is None:
            return None
        if self.projection in ("factored", "factored_pca"):
            return FactoredProjector(self.module_, self.proj_dim, seed=seed)
        return BlockProjector(self.n_params_, self.proj_dim, kind=self.projection,
                              seed=seed, nnz=self.nnz)

    def _proj_dim(self) -> int:
        proj = self.projectors_[0]
        return self.n_params_ if proj is None else proj.proj_dim

    def _dtype(self) -> torch.dtype:
        return self.flat_.theta.dtype if self.dtype is None else _DTYPES[self.dtype]

    def _row_function(self) -> None:
        self.row_fn_ = RowFunction(self.output_ if self.method_ == "trak" else "loss",
                                   self.flat_.loss)

    def _config(self) -> dict:
        """What the projected features depend on, compared whenever a store is opened."""
        params = {k: v for k, v in self.get_params(deep=False).items() if k not in _UNRECORDED}
        params["models"] = self.n_models_
        params["learning_rates"] = [float(v) for v in self.learning_rates_]
        models = []
        for state in self.states_:
            if state is not None:
                self.module_.load_state_dict(state)
            models.append(hash_state_dict(self.module_))
        params.pop("dtype")  # recorded as resolved (None: the model's)
        config = {"format": _FORMAT, "params": make_record(params)["params"],
                  "seeds": [int(s) for s in self.seeds_], "models": models,
                  "n_params": int(self.n_params_),
                  "dtype": str(self._dtype()).replace("torch.", "")}
        if len(self.train_seeds_):
            config["train_seeds"] = [int(s) for s in self.train_seeds_]
        return config

    def _data_record(self, Xt, yt) -> dict:
        index = None
        if self.train_index_ is not None:
            index = self.train_index_.tolist()
            try:
                json.dumps(index)
            except TypeError as exc:
                raise ValueError("A gradient store keeps the index of a DataFrame X, which "
                                 "must hold ints or strings; reset it (X.reset_index(drop="
                                 "True)) first.") from exc
        return {"X": hash_array(Xt), "y": hash_array(yt), "n_rows": len(Xt),
                "row_shape": list(self.row_shape_), "output": self.output_,
                "cast_targets": bool(self.cast_targets_), "index": index}

    def _reopen(self) -> ProjectedAttribution:
        self._complete_models(None, None)
        self.store_ = GradientStore.open(self.store, {"config": self._config(), "data": None,
                                                      "chunk_size": None})
        data = self.store_.record["data"]
        self.row_shape_ = tuple(data["row_shape"])
        self.cast_targets_ = bool(data["cast_targets"])
        self.output_ = data["output"]
        self.train_index_ = None
        if data["index"] is not None:
            import pandas as pd

            self.train_index_ = pd.Index(data["index"])
        self._row_function()
        self.n_chunks_written_ = 0
        self._finish()
        return self

    def _finish(self, grams=None) -> None:
        """TRAK's kernels (from the stored features, from ``grams`` (the Gauss-Newton
        kernel), or as stored), and the attributes."""
        store = self.store_
        self.features_ = store.features
        self.proj_dim_ = store.proj_dim
        device = self.flat_.theta.device
        self.q_ = torch.stack([store.q_of(m) for m in range(self.n_models_)]).to(device)
        self.qbar_ = self.q_.to(torch.float64).mean(0)
        if self.method_ not in _KERNEL_METHODS:
            if not store.complete:
                store.save_kernels([])
            return
        if store.complete:
            self.kernels_ = [ProjectedKernel.from_state(s) for s in store.load_kernels()]
        elif self._given_curvature():
            if grams is None:
                raise ValueError("The gradient store's curvature kernels were never "
                                 "computed (an interrupted fit); call fit(X, y) again.")
            self.kernels_ = [ProjectedKernel.from_gram(g, store.n_rows, self.regularization,
                                                       psd=self.kernel != "hessian")
                             for g in grams]
            states = [k.state() for k in self.kernels_]
            if any(st["eigenvalues"] is None for st in states):  # Cholesky: none kept
                states = [{**st, "eigenvalues": None} for st in states]
            store.save_kernels(states)
        else:
            self.kernels_ = [ProjectedKernel.from_chunks(store.chunks(m, device),
                                                         store.n_rows, store.proj_dim,
                                                         self.regularization)
                             for m in range(self.n_models_)]
            store.save_kernels([k.state() for k in self.kernels_])
        self.regularization_ = np.array([k.regularization_ for k in self.kernels_])

    def _tensors(self, X, y, name, y_name, reference=True):
        theta = self.flat_.theta
        row_shape = self.row_shape_ if reference else None
        Xt, yt = to_tensors(X, y, theta.dtype, theta.device, name, y_name, row_shape)
        if reference and tuple(Xt.shape[1:]) != self.row_shape_:
            raise ValueError(
                f"{name} has rows of shape {tuple(Xt.shape[1:])}, but the attribution was "
                f"fitted on rows of shape {self.row_shape_}.")
        return Xt, (self._cast(yt) if reference else yt)

    def _cast(self, y: torch.Tensor) -> torch.Tensor:
        return y.to(self.flat_.theta.dtype) if self.cast_targets_ else y

    def _load(self, m: int) -> tuple[torch.nn.Module, FlatModel]:
        """The module with model ``m``'s parameters, and its flat view of ``f``."""
        state = self.states_[m]
        if state is not None:
            self.module_.load_state_dict(state)
        return self.module_, FlatModel(self.module_, self.row_fn_.mean)

    def _features(self, m: int, X: torch.Tensor, y: torch.Tensor):
        """Projected gradients of ``f`` under model ``m`` (storage dtype) and ``dl/df``."""
        _, flat = self._load(m)
        d = torch.empty(len(X), dtype=flat.theta.dtype, device=flat.theta.device)
        for sl in iter_slices(len(X), self.batch_size):
            with torch.no_grad():
                d[sl] = self.row_fn_.derivative(flat.forward(flat.theta, X[sl]), y[sl])
        return self._project_rows(m, X, y, self.row_fn_.values, self._dtype()), d

    def _project_rows(self, m, X, y, values, dtype):
        return project_rows(self.module_, self.projectors_[m], X, y, values, dtype,
                            self.batch_size)

    def _curvature(self, m: int, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Model ``m``'s projected curvature: TRAK's Gauss-Newton ``sum_i P^T J_i^T H_i
        J_i P``, or for ``"influence"`` that of the mean loss (Gauss-Newton or Hessian)."""
        self._load(m)
        proj, loss = self.projectors_[m], self.flat_.loss
        if self.kernel == "hessian":
            return projected_hessian(self.module_, loss, proj, X, y, self.batch_size)
        if self.method_ == "influence":  # refuse a loss not convex in the output
            check_output_hessians(FlatModel(self.module_, loss), X, y, self.batch_size)
        gram = gauss_newton_gram(self.module_, loss, proj, X, y, self.batch_size,
                                 self.chunk_size)
        return gram / len(X) if self.method_ == "influence" else gram

    def _progress(self, it, total, desc):
        if self.verbose > 0:
            from tqdm.auto import tqdm

            return tqdm(it, total=total, desc=f"ProjectedAttribution({self.method_}): {desc}")
        return it
