"""ProjectedAttribution: TRAK, TracIn and gradient similarity on projected gradients."""

from __future__ import annotations

import copy
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from skdvl._sklearn_compat import Interval, StrOptions, fit_context

from ._checks import check_loss, check_targets, check_trainable
from ._data import is_pandas, to_tensors
from ._functional import FlatModel, iter_slices
from ._projection import KINDS, BlockProjector, FactoredProjector
from ._skorch import resolve_model
from ._trak_math import OUTPUTS, ProjectedKernel, RowFunction, resolve_output

METHODS = ("trak", "tracin", "grad_dot", "grad_cos")
_DTYPES = {"float16": torch.float16, "float32": torch.float32, "float64": torch.float64}


class ProjectedAttribution(BaseEstimator):
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

    Parameters
    ----------
    model : skorch.NeuralNet or torch.nn.Module
        The module (a private copy is used, in eval mode), or a fitted skorch net.
    loss : callable, default=None
        ``loss(output, target)`` of a batch (for a bare module).
    method : {"trak", "tracin", "grad_dot", "grad_cos"}, default="trak"
    proj_dim : int or None, default=2048
        Dimension ``k`` of the projections; None uses the gradients unprojected.
    projection : {"rademacher", "sparse", "factored"}, default="rademacher"
        :class:`~skdvl.influence._projection.BlockProjector` (dense signs, or the
        sparse JL transform with ``nnz`` non-zeros per row) on per-example gradients,
        or :class:`~skdvl.influence._projection.FactoredProjector` (Linear layers only;
        the gradients are never formed, and the dimension is about ``proj_dim``).
    models : list of dict, default=None
        State dicts of the models (TRAK: independently trained models; TracIn:
        checkpoints), loaded in turn into the module. None: the module as it is.
    learning_rates : list of float, default=None
        TracIn's step size per checkpoint; None means 1 for each.
    regularization : float, "auto" or "gcv", default="auto"
        TRAK's ``lambda``, per model, without test data. ``"auto"``: ``lambda =
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
    dtype : {"float16", "float32", "float64"} or None, default=None
        Storage type of the projected gradients; None: the model's (the kernel is
        computed in float64).
    nnz : int, default=8
        Non-zeros per row of ``projection="sparse"``.
    batch_size : int, default=256
        Rows per vectorised gradient evaluation.
    device : str or torch.device, default=None
    random_state : int, RandomState or None, default=None
        Seeds the projections (one independent matrix per model).
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
    features_ : torch.Tensor of shape (n_models, n_samples, proj_dim_)
        Projected training gradients (TRAK: of ``f``; others: of the loss).
    q_ : torch.Tensor of shape (n_models, n_samples)
        ``-dl/df`` per model and training row (TRAK only).
    regularization_ : ndarray of shape (n_models,)
        TRAK's ``lambda`` per model.
    kernels_ : list of ProjectedKernel
        TRAK's kernels, with their GCV curves.

    Notes
    -----
    Departures from the paper: TRAK's optional soft-thresholding of the scores is not
    applied; ``lambda > 0`` is added to the kernel (the paper inverts ``Phi^T Phi``, which
    needs ``k < n``); the models' test-loss factors ``d_t`` are averaged like ``Q``.
    The projected gradients are held in memory (``n_models * n * k`` values).

    References
    ----------
    Park, S. M., Georgiev, K., Ilyas, A., Leclerc, G. and Madry, A. (2023). TRAK:
    Attributing model behavior at scale. ICML. arXiv:2303.14186.
    Pruthi, G., Liu, F., Kale, S. and Sundararajan, M. (2020). Estimating training data
    influence by tracing gradient descent. NeurIPS.
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
        "projection": [StrOptions({*KINDS, "factored"})],
        "models": [list, tuple, None],
        "learning_rates": ["array-like", None],
        "regularization": [Interval(Real, 0, None, closed="neither"),
                           StrOptions({"auto", "gcv"})],
        "output": [StrOptions(set(OUTPUTS))],
        "dtype": [StrOptions(set(_DTYPES)), None],
        "nnz": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": "no_validation",
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(self, model=None, *, loss=None, method="trak", proj_dim=2048,
                 projection="rademacher", models=None, learning_rates=None,
                 regularization="auto", output="auto", dtype=None, nnz=8,
                 batch_size=256, device=None, random_state=None, verbose=0):
        self.model = model
        self.loss = loss
        self.method = method
        self.proj_dim = proj_dim
        self.projection = projection
        self.models = models
        self.learning_rates = learning_rates
        self.regularization = regularization
        self.output = output
        self.dtype = dtype
        self.nnz = nnz
        self.batch_size = batch_size
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ fitting
    @fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None) -> ProjectedAttribution:
        """Project the training rows' gradients under every model (and fit TRAK's kernels).

        Parameters
        ----------
        X : array-like, DataFrame, torch.Tensor or torch Dataset of (x, y) pairs
            Training inputs.
        y : array-like or torch.Tensor
            Training targets; None when ``X`` is a Dataset.

        Returns
        -------
        self : ProjectedAttribution
        """
        self.method_ = self.method
        self._setup()
        self.X_fit_, self.y_fit_ = self._tensors(X, y, "X", "y", reference=False)
        self.train_index_ = X.index if is_pandas(X) else None
        self.cast_targets_ = check_targets(self.flat_, self.X_fit_, self.y_fit_)
        self.y_fit_ = self._cast(self.y_fit_)
        check_loss(self.flat_, self.X_fit_, self.y_fit_)
        with torch.no_grad():
            out = self.flat_.forward(self.flat_.theta, self.X_fit_[:8])
        self.output_ = resolve_output(self.output, out, self.y_fit_[:8])
        self.row_fn_ = RowFunction(self.output_ if self.method_ == "trak" else "loss",
                                   self.flat_.loss)
        self.row_fn_.check(out, self.y_fit_[:8])
        feats, qs = [], []
        for m in self._progress(range(self.n_models_), "projecting the training rows"):
            phi, d = self._features(m, self.X_fit_, self.y_fit_)
            feats.append(phi)
            qs.append(-d)
        self.features_ = torch.stack(feats)
        self.proj_dim_ = self.features_.shape[2]
        if self.method_ == "trak":
            self.q_ = torch.stack(qs)
            self.kernels_ = [ProjectedKernel(f, q, self.regularization)
                             for f, q in zip(self.features_, self.q_)]
            self.regularization_ = np.array([k.regularization_ for k in self.kernels_])
        return self

    def _setup(self) -> None:
        module, loss, device = resolve_model(self.model, self.loss)
        check_trainable(module)
        device = torch.device(self.device) if self.device is not None else device
        self.module_ = copy.deepcopy(module).to(device).eval()
        self.flat_ = FlatModel(self.module_, loss)
        self.n_params_ = self.flat_.n_params
        self.states_ = ([None] if self.models is None
                        else [dict(s) for s in self.models])
        self.n_models_ = len(self.states_)
        if self.n_models_ == 0:
            raise ValueError("The 'models' parameter of ProjectedAttribution must hold at "
                             "least one state dict, or be None. Got an empty list instead.")
        lrs = (np.ones(self.n_models_) if self.learning_rates is None
               else np.asarray(self.learning_rates, dtype=np.float64).reshape(-1))
        if lrs.shape[0] != self.n_models_:
            raise ValueError(
                "The 'learning_rates' parameter of ProjectedAttribution must have one entry "
                f"per model ({self.n_models_}). Got {lrs.shape[0]} instead.")
        self.learning_rates_ = lrs
        entropy = int(check_random_state(self.random_state).randint(2**31 - 1))
        self.seeds_ = np.array([int(s.generate_state(1)[0]) for s in
                                np.random.SeedSequence(entropy).spawn(self.n_models_)])
        self.projectors_ = [self._projector(int(s)) for s in self.seeds_]

    def _projector(self, seed: int):
        if self.proj_dim is None:
            return None
        if self.projection == "factored":
            return FactoredProjector(self.module_, self.proj_dim, seed=seed)
        return BlockProjector(self.n_params_, self.proj_dim, kind=self.projection,
                              seed=seed, nnz=self.nnz)

    def _tensors(self, X, y, name, y_name, reference=True):
        theta = self.flat_.theta
        row_shape = tuple(self.X_fit_.shape[1:]) if reference else None
        Xt, yt = to_tensors(X, y, theta.dtype, theta.device, name, y_name, row_shape)
        if reference and Xt.shape[1:] != self.X_fit_.shape[1:]:
            raise ValueError(
                f"{name} has rows of shape {tuple(Xt.shape[1:])}, but the attribution was "
                f"fitted on rows of shape {tuple(self.X_fit_.shape[1:])}.")
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
        module, flat = self._load(m)
        proj = self.projectors_[m]
        dtype = flat.theta.dtype if self.dtype is None else _DTYPES[self.dtype]
        k = flat.n_params if proj is None else proj.proj_dim
        out = torch.empty(len(X), k, dtype=dtype, device=flat.theta.device)
        d = torch.empty(len(X), dtype=flat.theta.dtype, device=flat.theta.device)
        for sl in iter_slices(len(X), self.batch_size):
            with torch.no_grad():
                d[sl] = self.row_fn_.derivative(flat.forward(flat.theta, X[sl]), y[sl])
            if isinstance(proj, FactoredProjector):
                out[sl] = proj.project(module, X[sl], y[sl], self.row_fn_.values).detach()
                continue
            with torch.no_grad():
                G = flat.per_sample_grads(X[sl], y[sl])
                out[sl] = G if proj is None else proj.project(G)
        return out, d

    def _progress(self, it, desc):
        if self.verbose > 0:
            from tqdm.auto import tqdm

            return tqdm(it, desc=f"ProjectedAttribution({self.method_}): {desc}")
        return it

    # ---------------------------------------------------------------- queries
    def influences(self, X_test, y_test=None):
        """Attribution of each test row's loss to each training row.

        Parameters
        ----------
        X_test : array-like, DataFrame, torch.Tensor or torch Dataset of (x, y) pairs
        y_test : array-like or torch.Tensor, default=None
            None when ``X_test`` is a Dataset.

        Returns
        -------
        ndarray of shape (n_test, n_train), or a DataFrame (index: the test rows',
        columns: the training rows') when ``X_test`` or the training ``X`` is one.
        Positive: the training row raises the test loss.
        """
        check_is_fitted(self, "features_")
        Xt, yt = self._tensors(X_test, y_test, "X_test", "y_test")
        total = torch.zeros(len(Xt), self.features_.shape[1], dtype=torch.float64,
                            device=self.features_.device)
        d_sum = torch.zeros(len(Xt), dtype=torch.float64, device=total.device)
        for m in self._progress(range(self.n_models_), "scoring"):
            phi, d = self._features(m, Xt, yt)
            d_sum += d.to(torch.float64)
            total += self._model_scores(m, phi)
        result = self._combine(total, d_sum)
        self._load(0)
        return self._as_frame(result.cpu().numpy(), X_test)

    def _model_scores(self, m: int, phi: torch.Tensor) -> torch.Tensor:
        train = self.features_[m]
        if self.method_ == "trak":
            return self.kernels_[m].apply(phi, train)
        phi, train = phi.to(torch.float64), train.to(torch.float64)
        if self.method_ == "grad_cos":
            phi = phi / phi.norm(dim=1, keepdim=True).clamp_min(1e-30)
            train = train / train.norm(dim=1, keepdim=True).clamp_min(1e-30)
        weight = self.learning_rates_[m] if self.method_ == "tracin" else 1.0
        return -weight * (phi @ train.T)

    def _combine(self, total: torch.Tensor, d_sum: torch.Tensor) -> torch.Tensor:
        if self.method_ == "tracin":
            return total
        M = self.n_models_
        if self.method_ == "trak":
            qbar = self.q_.to(torch.float64).mean(0)
            return (d_sum / M).unsqueeze(1) * (total / M) * qbar.unsqueeze(0)
        return total / M

    def _as_frame(self, result, X_test):
        test_index = X_test.index if is_pandas(X_test) else None
        if test_index is None and self.train_index_ is None:
            return result
        import pandas as pd

        return pd.DataFrame(result, index=test_index, columns=self.train_index_)
