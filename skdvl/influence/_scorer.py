"""InfluenceScorer: influence functions for torch modules and skorch nets."""

from __future__ import annotations

import warnings
from functools import partial
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._data import to_tensors
from ._functional import CurvatureOperator, FlatModel, iter_slices, per_sample_grads_batched
from ._kfac import _EKFAC, _DataInf
from ._skorch import resolve_model
from ._solvers import _CG, _Arnoldi, _BlockDiagonal, _Direct, _LiSSA, _Nystroem

_METHODS = {"direct", "cg", "lissa", "arnoldi", "ekfac", "nystroem", "datainf"}
_DEFAULT_MAXITER = {"cg": 100, "lissa": 1000}


class InfluenceScorer(BaseEstimator):
    """Influence of training rows on the loss of test rows (Koh & Liang, 2017).

    The up-weighting influence of a training row ``z`` on a test row ``z'`` is
    ``I(z, z') = -grad L(z')^T (C + lambda I)^-1 grad L(z)``: the first-order change of
    the loss on ``z'`` when ``z`` is up-weighted by ``eps`` in the mean training loss,
    divided by ``eps``. Positive means harmful. Removing ``z`` changes the test loss by
    about ``-I(z, z') / n``. In perturbation mode, ``-grad L(z')^T (C + lambda I)^-1
    grad_x grad_theta L(z)`` is the gradient of the test loss with respect to the input
    of ``z``. ``C`` is the Hessian (or Gauss-Newton matrix) of the mean training loss.

    Parameters
    ----------
    model : skorch.NeuralNet or torch.nn.Module
        A fitted skorch net (module, loss and device come from it) or a module, then
        ``loss`` is required. The module is put in eval mode; only parameters with
        ``requires_grad`` count.
    loss : callable, default=None
        ``loss(output, target)`` for a batch, returning a scalar (for a bare module).
    method : {"cg", "direct", "lissa", "arnoldi", "ekfac", "nystroem", "datainf"}, \
            default="cg"
        How ``(C + lambda I)^-1`` is applied: explicit matrix with Cholesky, batched
        conjugate gradients, LiSSA (Agarwal et al., 2017), Lanczos eigenpairs (Schioppa et
        al., 2022), EK-FAC on Linear and Conv2d layers (George et al., 2018; Grosse et
        al., 2023), randomised Nystrom sketch (Hataya & Yamada, 2023) or DataInf (Kwon et
        al., 2023).
    regularization : float, default=1e-3
        ``lambda`` added to the curvature; must be > 0 except for ``method="direct"``.
    mode : {"up", "perturbation"}, default="up"
        Default mode of :meth:`influences`.
    block_structure : {"full", "layer"}, default="full"
        ``"layer"`` keeps only the diagonal blocks of ``C``, one per sub-module. EK-FAC is
        always layer-wise.
    second_order : {"hessian", "gauss_newton"}, default="hessian"
        Curvature ``C``. EK-FAC always uses Gauss-Newton, DataInf the empirical Fisher.
    rank : int, default=50
        Rank of the arnoldi and nystroem approximations and of the Nystrom preconditioner
        of cg; number of Hutchinson probes of the Jacobi preconditioner.
    maxiter : int, default=None
        Iterations of cg (default 100) and lissa (default 1000). A right-hand side that
        reaches it unconverged keeps its last iterate, with a ``ConvergenceWarning``.
    rtol : float, default=1e-6
        cg stops a right-hand side when its residual norm is below ``rtol`` times its
        norm. lissa averages its iterates over windows of ``n_batches`` steps (clipped
        to [20, 50]) and stops a right-hand side when the relative change between
        consecutive window means is below ``rtol`` or stops decreasing (the mini-batch
        noise floor; it then returns the mean of the last two windows).
    preconditioner : {None, "jacobi", "nystroem"}, default=None
        Preconditioner of cg.
    scale : float, default=None
        LiSSA's scale: above the largest eigenvalue of every mini-batch's curvature plus
        ``lambda``. None estimates it (1.5 times the largest top eigenvalue of up to 8
        mini-batches).
    batch_size : int, default=256
        Rows per vectorised evaluation (bounds memory); also LiSSA's mini-batch size.
    device : str or torch.device, default=None
        Where to compute; None takes the model's device.
    random_state : int, default=None
        Seed of the randomised parts (own ``torch.Generator``).
    verbose : int, default=0
        Progress bars when > 0.
    backend : {"sequential", "dask"}, default="sequential"
        How :meth:`influences` computes: in one piece (or chunk by chunk when
        ``chunk_size`` or ``out`` is given), or as a lazy ``dask.array.Array`` built
        blockwise over chunks of test and training rows (needs the ``dask`` extra).
    chunk_size : int or (int, int), default=None
        Rows per chunk (test, training) of the chunked computation; None means 1000
        when chunking.
    client : distributed.Client, default=None
        The dask cluster; its workers must run one thread each (torch is not safe
        otherwise).

    Attributes
    ----------
    solver_ : object
        The fitted inverse-curvature operator.
    n_params_ : int
        Number of trainable parameters.
    values_ : ndarray of shape (n_samples,)
        With ``X_val``: ``-mean_j I(z_i, z_j^val)``, the predicted decrease of the mean
        validation loss when row ``i`` is up-weighted. Without: the negated
        self-influence ``-grad L(z_i)^T (C + lambda I)^-1 grad L(z_i)`` (outliers and
        mislabelled rows get low values). Higher is more valuable. Computed on first access
        (the second costs one solve per training row).

    References
    ----------
    Koh, P. W. and Liang, P. (2017). Understanding black-box predictions via influence
    functions. ICML.

    Examples
    --------
    >>> import torch
    >>> from skdvl.influence import InfluenceScorer
    >>> X, y = torch.randn(20, 3, dtype=torch.float64), torch.randn(20, 1, dtype=torch.float64)
    >>> net = torch.nn.Linear(3, 1).double()
    >>> s = InfluenceScorer(net, loss=torch.nn.MSELoss(), method="direct").fit(X, y)
    >>> s.influences(X[:2], y[:2]).shape
    (2, 20)
    """

    _parameter_constraints: dict = {
        "model": "no_validation",
        "loss": [callable, None],
        "method": [StrOptions(_METHODS)],
        "regularization": [Interval(Real, 0, None, closed="left")],
        "mode": [StrOptions({"up", "perturbation"})],
        "block_structure": [StrOptions({"full", "layer"})],
        "second_order": [StrOptions({"hessian", "gauss_newton"})],
        "rank": [Interval(Integral, 1, None, closed="left")],
        "maxiter": [Interval(Integral, 1, None, closed="left"), None],
        "rtol": [Interval(Real, 0, None, closed="neither")],
        "preconditioner": [StrOptions({"jacobi", "nystroem"}), None],
        "scale": [Interval(Real, 0, None, closed="neither"), None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": "no_validation",
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "backend": [StrOptions({"sequential", "dask"})],
        "chunk_size": [Interval(Integral, 1, None, closed="left"), tuple, None],
        "client": "no_validation",
    }

    def __init__(
        self, model=None, *, loss=None, method="cg", regularization=1e-3, mode="up",
        block_structure="full", second_order="hessian", rank=50, maxiter=None, rtol=1e-6,
        preconditioner=None, scale=None, batch_size=256, device=None, random_state=None,
        verbose=0, backend="sequential", chunk_size=None, client=None,
    ):
        self.model = model
        self.loss = loss
        self.method = method
        self.regularization = regularization
        self.mode = mode
        self.block_structure = block_structure
        self.second_order = second_order
        self.rank = rank
        self.maxiter = maxiter
        self.rtol = rtol
        self.preconditioner = preconditioner
        self.scale = scale
        self.batch_size = batch_size
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.backend = backend
        self.chunk_size = chunk_size
        self.client = client

    def __getstate__(self):
        # A dask Client cannot be pickled; the scorer travels inside dask tasks.
        state = super().__getstate__()
        state["client"] = None
        return state

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y=None, *, X_val=None, y_val=None) -> InfluenceScorer:
        """Fit the inverse-curvature approximation on the training data.

        Parameters
        ----------
        X : array-like, torch.Tensor or torch Dataset of (x, y) pairs
            Training inputs (the rows the model was trained on).
        y : array-like or torch.Tensor
            Training targets; None when ``X`` is a Dataset.
        X_val, y_val : optional
            Validation data used for :attr:`values_`.

        Returns
        -------
        self : InfluenceScorer
        """
        self._validate_params()
        if self.method != "direct" and self.regularization <= 0:
            raise ValueError(
                "The 'regularization' parameter of InfluenceScorer must be > 0 for "
                f"method={self.method!r}. Got {self.regularization!r} instead."
            )
        module, loss, device = resolve_model(self.model, self.loss)
        device = torch.device(self.device) if self.device is not None else device
        module.eval()
        self.flat_ = FlatModel(module, loss, self.second_order)
        self.flat_.theta = self.flat_.theta.to(device)
        self.flat_.buffers = {k: v.to(device) for k, v in self.flat_.buffers.items()}
        self.n_params_ = self.flat_.n_params
        if self.n_params_ == 0:
            raise ValueError("The model has no trainable parameters (requires_grad=True).")
        self.X_fit_, self.y_fit_ = self._tensors(X, y, "X")
        self._check_loss(self.X_fit_, self.y_fit_)
        seed = int(check_random_state(self.random_state).randint(2**31 - 1))
        generator = torch.Generator().manual_seed(seed)
        op = CurvatureOperator(self.flat_, self.X_fit_, self.y_fit_, self.batch_size)
        self.solver_ = self._make_solver().fit(op, generator)
        self._val = None if X_val is None else self._tensors(X_val, y_val, "X_val")
        self._values: np.ndarray | None = None
        return self

    def _tensors(self, X, y, name):
        return to_tensors(X, y, self.flat_.theta.dtype, self.flat_.theta.device, name)

    def _check_loss(self, X, y) -> None:
        value = self.flat_.sample_loss(self.flat_.theta, X[0], y[0])
        if value.dim() != 0:
            raise ValueError(
                "The loss must return a scalar for a batch (reduction='mean' or 'sum'); "
                f"got a tensor of shape {tuple(value.shape)}."
            )
        self.flat_.check_reduction(X, y)
        with torch.enable_grad():
            theta = self.flat_.theta.detach().requires_grad_(True)
            value = self.flat_.loss(self.flat_.forward(theta, X[:2]), y[:2])
        if not value.requires_grad:
            raise ValueError(
                "The loss is not differentiable with respect to the parameters (its value "
                "has no gradient graph, e.g. it goes through argmax or a comparison); use a "
                "differentiable surrogate such as torch.nn.CrossEntropyLoss."
            )
        g = self.flat_.per_sample_grads(X[:2], y[:2])
        if not torch.isfinite(g).all():
            raise ValueError("The loss has non-finite gradients on the training data.")

    def _maxiter(self) -> int | None:
        return self.maxiter or _DEFAULT_MAXITER.get(self.method)

    def _make_solver(self):
        method, reg = self.method, self.regularization
        maxiter = self._maxiter()
        blocks = self.flat_.blocks if self.block_structure == "layer" else [
            slice(0, self.n_params_)]
        if method == "ekfac":
            return _EKFAC(reg)
        if method == "datainf":
            return _DataInf(reg, blocks)
        factories = {  # partial objects, not lambdas: a fitted scorer must pickle
            "direct": partial(_Direct, reg),
            "cg": partial(_CG, reg, maxiter, self.rtol, self.preconditioner, self.rank),
            "lissa": partial(_LiSSA, reg, maxiter, self.rtol, self.scale),
            "arnoldi": partial(_Arnoldi, reg, self.rank),
            "nystroem": partial(_Nystroem, reg, self.rank),
        }
        if self.block_structure == "layer":
            return _BlockDiagonal(factories[method], blocks)
        return factories[method]()

    # ---------------------------------------------------------------- queries
    def _grads(self, X, y) -> torch.Tensor:
        return per_sample_grads_batched(self.flat_, X, y, self.batch_size)

    def _solve(self, G: torch.Tensor) -> torch.Tensor:
        chunks = list(iter_slices(len(G), max(self.batch_size, 1)))
        parts, n_failed = [], 0
        with torch.no_grad():
            for sl in self._progress(chunks):
                parts.append(self.solver_.solve(G[sl]))
                converged = getattr(self.solver_, "converged_", None)
                n_failed += 0 if converged is None else int((~converged).sum())
        if n_failed:
            warnings.warn(
                f"method={self.method!r} did not converge for {n_failed} of {len(G)} "
                f"right-hand sides within maxiter={self._maxiter()} iterations "
                f"(rtol={self.rtol!r}); their solutions are the last iterates. Increase "
                "'maxiter' or 'rtol'.",
                ConvergenceWarning, stacklevel=3,
            )
        return torch.cat(parts) if parts else G.new_zeros(G.shape)

    def _progress(self, it):
        if self.verbose > 0:
            from tqdm.auto import tqdm

            return tqdm(it, desc=f"InfluenceScorer({self.method})")
        return it

    def influence_factors(self, X_test, y_test=None) -> np.ndarray:
        """``(C + lambda I)^-1 grad L(z_test)`` for each test row, shape ``(n_test, p)``.

        Reusable with :meth:`influences_from_factors`.
        """
        check_is_fitted(self, "solver_")
        Xt, yt = self._tensors(X_test, y_test, "X_test")
        return self._solve(self._grads(Xt, yt)).cpu().numpy()

    def influences(self, X_test, y_test=None, X=None, y=None, mode=None, out=None):
        """Influence of each training row on each test row.

        Parameters
        ----------
        X_test, y_test : test data.
        X, y : training rows to score; None means the rows given to :meth:`fit`.
        mode : {"up", "perturbation"}, default=None
            None uses the ``mode`` parameter.
        out : str, path, zarr store or group, default=None
            Write the matrix there chunk by chunk (bounded memory) and return the zarr
            array. A run started again with the same arguments skips the chunks already
            written; different parameters or data are refused.

        Returns
        -------
        ndarray of shape (n_test, n_train) or (n_test, n_train, *input_shape); a
        ``dask.array.Array`` with ``backend="dask"``; a ``zarr.Array`` with ``out``.
        """
        if self.backend == "dask" or out is not None or self.chunk_size is not None:
            from ._calculators import DaskInfluenceCalculator, SequentialInfluenceCalculator

            chunk = 1000 if self.chunk_size is None else self.chunk_size
            calc = (DaskInfluenceCalculator(self, chunk, client=self.client)
                    if self.backend == "dask"
                    else SequentialInfluenceCalculator(self, chunk, verbose=self.verbose))
            return calc.influences(X_test, y_test, X, y, mode=mode, out=out)
        factors = self.influence_factors(X_test, y_test)
        return self.influences_from_factors(factors, X, y, mode=mode)

    def influences_from_factors(self, factors, X=None, y=None, mode=None) -> np.ndarray:
        """Influences from precomputed :meth:`influence_factors` (see :meth:`influences`)."""
        check_is_fitted(self, "solver_")
        mode = self.mode if mode is None else mode
        if mode not in ("up", "perturbation"):
            raise ValueError(f"The 'mode' argument must be 'up' or 'perturbation'. Got "
                             f"{mode!r} instead.")
        F = torch.as_tensor(np.asarray(factors), dtype=self.flat_.theta.dtype,
                            device=self.flat_.theta.device)
        if F.dim() != 2 or F.shape[1] != self.n_params_:
            raise ValueError(f"factors must have shape (n_test, {self.n_params_}); got "
                             f"{tuple(F.shape)}.")
        Xs, ys = (self.X_fit_, self.y_fit_) if X is None else self._tensors(X, y, "X")
        if mode == "perturbation" and not Xs.is_floating_point():
            raise ValueError("mode='perturbation' needs floating-point inputs X; got "
                             f"dtype {Xs.dtype}.")
        kept = getattr(self.solver_, "grads_", None)  # DataInf keeps the training gradients
        if mode == "up" and X is None and kept is not None:
            with torch.no_grad():
                return (-(F @ kept.T)).cpu().numpy()
        parts = []
        with torch.no_grad():
            for sl in self._progress(list(iter_slices(len(Xs), self.batch_size))):
                if mode == "up":
                    parts.append(-(F @ self._grads(Xs[sl], ys[sl]).T))
                else:
                    parts.append(-self._mixed(F, Xs[sl], ys[sl]))
        return torch.cat(parts, dim=1).cpu().numpy()

    def _mixed(self, F, X, y) -> torch.Tensor:
        step = max(1, self.batch_size // max(len(F), 1))
        return torch.cat([self.flat_.mixed_vjp(F, X[sl], y[sl])
                          for sl in iter_slices(len(X), step)], dim=1)

    @property
    def values_(self) -> np.ndarray:
        check_is_fitted(self, "solver_")
        if self._values is None:
            with torch.no_grad():
                G = self._grads(self.X_fit_, self.y_fit_)
                if self._val is not None:
                    g_val = self._grads(*self._val).mean(0, keepdim=True)
                    self._values = (self._solve(g_val) @ G.T)[0].cpu().numpy()
                else:
                    self._values = (-(self._solve(G) * G).sum(1)).cpu().numpy()
        return self._values
