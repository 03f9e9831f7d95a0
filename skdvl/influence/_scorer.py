"""InfluenceScorer: influence functions for torch modules and skorch nets."""

from __future__ import annotations

import copy
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from skdvl._sklearn_compat import Interval, StrOptions, fit_context

from ._attribution_options import AttributionMethod
from ._calculators import SequentialInfluenceCalculator
from ._checks import (
    check_loss,
    check_output_hessians,
    check_targets,
    check_trainable,
    is_positive_int,
)
from ._dask_calculator import DaskInfluenceCalculator
from ._data import is_pandas, to_tensors
from ._functional import CurvatureOperator, FlatModel, iter_slices, per_sample_grads_batched
from ._options import METHODS, InfluenceMethod, resolve_method
from ._skorch import resolve_model
from ._zarr_store import check_output_path


class InfluenceScorer(BaseEstimator):
    """Influence of training rows on the loss of test rows (Koh & Liang, 2017).

    The up-weighting influence of a training row ``z`` on a test row ``z'`` is
    ``I(z, z') = -grad L(z')^T (C + lambda I)^-1 grad L(z)``: the first-order change of
    the loss on ``z'`` when ``z`` is up-weighted by ``eps`` in the mean training loss,
    divided by ``eps``. Positive means harmful. Removing ``z`` changes the test loss by
    about ``-I(z, z') / n``. In perturbation mode, ``-grad L(z')^T (C + lambda I)^-1
    grad_x grad_theta L(z)`` is the gradient of the test loss with respect to the input
    of ``z``. ``C`` is the Gauss-Newton matrix (default) or the Hessian of the mean
    training loss.

    Parameters
    ----------
    model : skorch.NeuralNet or torch.nn.Module
        A fitted skorch net (module, loss and device come from it) or a module, then
        ``loss`` is required. Only parameters with ``requires_grad`` count. The scorer
        works on a copy in eval mode: the model itself is left as it was. It computes
        in the model's dtype: float32 for torch's default modules, float64 for a model
        made float64 (``model.double()``) where more digits are needed. On the digits
        MLP of ``benchmarks/bench_influence.py``, float32 gave the same Pearson
        correlation with the exact influence as float64 to 3e-5 for every method, 1.3-3x
        faster (``benchmarks/results/influence.md``).
    loss : callable, default=None
        ``loss(output, target)`` for a batch, returning a scalar (for a bare module).
    method : str or option object, default="cg"
        How ``(C + lambda I)^-1`` is applied: ``"direct"`` (explicit matrix, Cholesky),
        ``"cg"`` (block conjugate gradients), ``"lissa"`` (Agarwal et al., 2017),
        ``"arnoldi"`` (Lanczos eigenpairs, Schioppa et al., 2022), ``"ekfac"`` (Linear
        and Conv2d layers; George et al., 2018), ``"nystroem"`` (randomised Nystrom
        sketch, Hataya & Yamada, 2023), ``"datainf"`` (Kwon et al., 2023), or an option
        object carrying the method's own options: :class:`Direct`, :class:`CG`,
        :class:`LiSSA`, :class:`Arnoldi`, :class:`EKFAC`, :class:`Nystroem`,
        :class:`DataInf` (``method=CG(maxiter=50)``; grid-searchable as
        ``method__maxiter``). A name means the option object with its defaults.
        Attribution by projected gradients, with no curvature solve: ``"trak"``,
        ``"tracin"``, ``"gradient_similarity"`` or :class:`TRAK`, :class:`TracIn`,
        :class:`GradientSimilarity` (computed by :class:`ProjectedAttribution`, with
        this scorer's model, loss, ``batch_size``, ``chunk_size``, ``device`` and
        ``random_state``; ``regularization``, ``block_structure`` and ``second_order``
        are not used, ``mode`` must be ``"up"`` and ``backend`` ``"sequential"``).
        Influence with this scorer's curvature (``second_order``) and ``regularization``
        projected to ``k`` dimensions and solved densely there:
        ``"projected_influence"`` or :class:`ProjectedInfluence`.
    regularization : float, default=1e-3
        ``lambda`` added to the curvature; must be > 0 except for ``method="direct"``.
    mode : {"up", "perturbation"}, default="up"
        Default mode of :meth:`influences`.
    block_structure : {"full", "layer"}, default="full"
        ``"layer"`` keeps only the diagonal blocks of ``C``, one per sub-module. EK-FAC is
        always layer-wise.
    second_order : {"gauss_newton", "hessian"}, default="gauss_newton"
        Curvature ``C``. The Gauss-Newton matrix ``J^T H_out J`` is positive
        semi-definite for a loss convex in the output (checked in :meth:`fit`), so every
        method is well defined with any ``regularization > 0``. The Hessian of a trained
        net is usually indefinite (a digits MLP: smallest eigenvalue -0.004), and every
        method then raises :class:`NotPositiveDefiniteError` naming the regularization
        needed. EK-FAC always uses Gauss-Newton, DataInf the empirical Fisher.
    batch_size : int, default=256
        Rows per vectorised evaluation (bounds memory); also LiSSA's mini-batch size.
    compute_values : bool, default=True
        Provide :attr:`values_`: computed in :meth:`fit` where the method's
        factorisation makes it cheap, on first access for ``cg`` and ``lissa`` (one
        solve per training row; see Notes). False when only :meth:`influences` is
        needed.
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
    method_ : option object
        The method used, with its options (a copy: ``method`` is left unchanged).
    solver_ : object
        The fitted inverse-curvature operator (a fitted
        :class:`ProjectedAttribution` for an attribution method).
    n_params_ : int
        Number of trainable parameters.
    values_ : ndarray of shape (n_samples,) or pandas.Series
        With ``X_val``: ``-mean_j I(z_i, z_j^val)``, the predicted decrease of the mean
        validation loss when row ``i`` is up-weighted. Without: the negated
        self-influence ``-grad L(z_i)^T (C + lambda I)^-1 grad L(z_i)`` (outliers and
        mislabelled rows get low values). Higher is more valuable. A Series on the index
        of ``X`` when ``X`` is a DataFrame. Only with ``compute_values=True``; for
        ``cg`` and ``lissa`` without ``X_val`` it is computed on first access (see
        Notes).

    Notes
    -----
    Cost of :attr:`values_` (``n`` training rows, ``p`` parameters, beyond the
    ``n`` training gradients it always needs). With ``X_val``: one solve of the mean
    validation gradient, for every method. Without (self-influence, the diagonal of
    ``G (C + lambda I)^-1 G^T``), through the factorisation each method keeps, in
    :meth:`fit`:

    - ``direct``: ``||L^-1 g_i||^2`` from the Cholesky factor ``L``, one triangular solve
      of all rows (``n p^2``: half of a solve per row, still ``n / (2 n_test)`` times
      the solves of :meth:`influences` on ``n_test`` rows);
    - ``arnoldi``, ``nystroem``: ``sum_j (u_j^T g_i)^2 / (lambda_j + lambda)`` plus the
      complement term ``g_i^T (g_i - U U^T g_i) / lambda`` (``2 n p rank``);
    - ``ekfac``: per layer, the gradient rotated into the Kronecker eigenbasis, squared
      and divided by the eigenvalues plus ``lambda`` (half an EK-FAC solve: no rotation
      back);
    - ``datainf``: the closed form of Kwon et al. (2023, Eq. (5)), ``n^2 p / 2`` (the
      Gram products of the kept training gradients, each pair once);
    - ``cg``, ``lissa``: no factorisation, so one iterative solve per training row, the
      cost of :meth:`influences` on ``n`` test rows (on a digits MLP with 4,810
      parameters and 1,000 rows: 12 s for ``cg``, 6 min for ``lissa``). These are
      computed on the first access of :attr:`values_` instead of in :meth:`fit`.

    Each equals ``(solver_.solve(G) * G).sum(1)`` to rounding (tested).

    Why Gauss-Newton by default: with the Hessian, ``InfluenceScorer(net)`` on a
    trained digits MLP gave influences correlating 0.25 with ``direct`` (CG on an
    indefinite matrix). With Gauss-Newton the default matches ``direct`` at the same
    curvature and regularization (Pearson 1.0000; ``benchmarks/bench_influence.py
    --default-check``). An automatic regularization from the spectrum was the other
    option: it needs the most negative eigenvalue (Lanczos, 50 products), and the
    shifted Hessian that results is nearly singular along that direction, which
    dominates the influences.

    References
    ----------
    Koh, P. W. and Liang, P. (2017). Understanding black-box predictions via influence
    functions. ICML.
    Martens, J. (2020). New insights and perspectives on the natural gradient method.
    JMLR 21 (Gauss-Newton curvature).

    Examples
    --------
    >>> import torch
    >>> from skdvl.influence import CG, InfluenceScorer
    >>> X, y = torch.randn(20, 3, dtype=torch.float64), torch.randn(20, 1, dtype=torch.float64)
    >>> net = torch.nn.Linear(3, 1).double()
    >>> s = InfluenceScorer(net, loss=torch.nn.MSELoss(), method=CG(maxiter=50)).fit(X, y)
    >>> s.influences(X[:2], y[:2]).shape
    (2, 20)
    """

    _parameter_constraints: dict = {
        "model": "no_validation",
        "loss": [callable, None],
        "method": [StrOptions(set(METHODS)), InfluenceMethod],
        "regularization": [Interval(Real, 0, None, closed="left")],
        "mode": [StrOptions({"up", "perturbation"})],
        "block_structure": [StrOptions({"full", "layer"})],
        "second_order": [StrOptions({"hessian", "gauss_newton"})],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "compute_values": ["boolean"],
        "device": "no_validation",
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "backend": [StrOptions({"sequential", "dask"})],
        "chunk_size": [Interval(Integral, 1, None, closed="left"), tuple, None],
        "client": "no_validation",
    }

    def __init__(
        self, model=None, *, loss=None, method="cg", regularization=1e-3, mode="up",
        block_structure="full", second_order="gauss_newton", batch_size=256,
        compute_values=True, device=None, random_state=None, verbose=0,
        backend="sequential", chunk_size=None, client=None,
    ):
        self.model = model
        self.loss = loss
        self.method = method
        self.regularization = regularization
        self.mode = mode
        self.block_structure = block_structure
        self.second_order = second_order
        self.batch_size = batch_size
        self.compute_values = compute_values
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
    @fit_context(prefer_skip_nested_validation=True)
    def fit(self, X=None, y=None, *, X_val=None, y_val=None) -> InfluenceScorer:
        """Fit the inverse-curvature approximation (and :attr:`values_`) on training data.

        Parameters
        ----------
        X : array-like, DataFrame, torch.Tensor or torch Dataset of (x, y) pairs
            Training inputs (the rows the model was trained on). None only for an
            attribution method whose ``store`` holds a fitted gradient store (reopened
            without the training data).
        y : array-like or torch.Tensor
            Training targets; None when ``X`` is a Dataset.
        X_val, y_val : optional
            Validation data used for :attr:`values_`.

        Returns
        -------
        self : InfluenceScorer
        """
        self._check_params()
        if isinstance(self.method_, AttributionMethod):
            self.__dict__.pop("values_", None)
            self._values_pending = False
            self.solver_, values = self.method_._fit(self, X, y, X_val, y_val)
            self.n_params_ = self.solver_.n_params_
            if values is not None:
                self.values_ = values
            return self
        if X is None:
            raise ValueError(f"The training data X is required for method="
                             f"{self.method_.name!r}; only an attribution method with a "
                             "fitted 'store' can be refitted without it.")
        self.flat_ = self._flat_model()
        self.n_params_ = self.flat_.n_params
        self.cast_targets_ = False
        self.X_fit_, self.y_fit_ = self._tensors(X, y, "X", "y", reference=False)
        self.train_index_ = X.index if is_pandas(X) else None
        self.cast_targets_ = check_targets(self.flat_, self.X_fit_, self.y_fit_)
        self.y_fit_ = self._cast(self.y_fit_)
        check_loss(self.flat_, self.X_fit_, self.y_fit_)
        psd = self.second_order == "gauss_newton"
        if psd:
            check_output_hessians(self.flat_, self.X_fit_, self.y_fit_, self.batch_size)
        seed = int(check_random_state(self.random_state).randint(2**31 - 1))
        generator = torch.Generator().manual_seed(seed)
        op = CurvatureOperator(self.flat_, self.X_fit_, self.y_fit_, self.batch_size, psd=psd)
        blocks = self.flat_.blocks if self.block_structure == "layer" else None
        self.solver_ = self.method_._solver(self.regularization, blocks).fit(op, generator)
        self.__dict__.pop("values_", None)  # a refit never keeps the values of the last fit
        self._values_pending = False
        if self.compute_values:
            val = None if X_val is None else self._tensors(X_val, y_val, "X_val", "y_val")
            if val is None and not self.solver_.factorised:
                self._values_pending = True  # n solves: computed on first access of values_
            else:
                self.values_ = self._values(val)
        return self

    def _check_params(self) -> None:
        """What the declared constraints cannot say; set ``method_``."""
        self.method_ = resolve_method(self.method)
        if self.method_.needs_positive_regularization and self.regularization <= 0:
            raise ValueError(
                "The 'regularization' parameter of InfluenceScorer must be > 0 for "
                f"method={self.method_.name!r}. Got {self.regularization!r} instead."
            )
        c = self.chunk_size
        if isinstance(c, tuple) and not (len(c) == 2 and all(is_positive_int(s) for s in c)):
            raise ValueError(
                "The 'chunk_size' parameter of InfluenceScorer must be an int >= 1 or a "
                f"pair of them (test rows, training rows). Got {c!r} instead."
            )

    def _flat_model(self) -> FlatModel:
        module, loss, device = resolve_model(self.model, self.loss)
        check_trainable(module)
        device = torch.device(self.device) if self.device is not None else device
        # A private copy in eval mode: the user's module keeps its mode, and later
        # changes to it (training on) do not change this scorer.
        module = copy.deepcopy(module).to(device).eval()
        return FlatModel(module, loss, self.second_order, fast=True)

    def _tensors(self, X, y, name, y_name, reference=True):
        theta = self.flat_.theta
        row_shape = tuple(self.X_fit_.shape[1:]) if reference else None
        Xt, yt = to_tensors(X, y, theta.dtype, theta.device, name, y_name, row_shape)
        if reference:
            self._check_like_fit(Xt, yt, name, y_name)
        return Xt, self._cast(yt)

    def _cast(self, y: torch.Tensor) -> torch.Tensor:
        return y.to(self.flat_.theta.dtype) if self.cast_targets_ else y

    def _check_like_fit(self, Xt, yt, name, y_name) -> None:
        for t, ref, arg, fit_arg in ((Xt, self.X_fit_, name, "X"), (yt, self.y_fit_, y_name, "y")):
            if t.shape[1:] != ref.shape[1:]:
                raise ValueError(
                    f"{arg} has rows of shape {tuple(t.shape[1:])} ({arg}.shape = "
                    f"{tuple(t.shape)}), but the scorer was fitted on {fit_arg} with rows "
                    f"of shape {tuple(ref.shape[1:])}."
                )

    @property
    def values_(self):
        """Value of each training row (see the class docstring); lazy for ``cg`` and ``lissa``.

        ``direct``, ``arnoldi``, ``nystroem``, ``ekfac`` and ``datainf`` compute it in
        :meth:`fit` from their factorisation, and so does every method with ``X_val``
        (one solve). ``cg`` and ``lissa`` keep no factorisation: the self-influences
        cost one iterative solve per training row (``n_samples`` solves, the time of
        :meth:`influences` on ``n_samples`` test rows), so they are computed on the first
        access of ``values_`` (a progress bar with ``verbose > 0``), then kept. Reading
        it, ``hasattr`` included, starts that computation; a pickled scorer computes it
        on first access after loading.
        """
        state = self.__dict__
        if "values_" not in state:
            if not state.get("_values_pending", False):
                raise NotFittedError(
                    f"This {type(self).__name__} has no values_: fit it with "
                    "compute_values=True (the default) first."
                )
            try:
                state["values_"] = self._values(None)
            except AttributeError as exc:  # hasattr(self, "values_") must not hide it
                raise RuntimeError(f"computing values_ failed: {exc}") from exc
            state["_values_pending"] = False
        return state["values_"]

    @values_.setter
    def values_(self, values) -> None:
        self.__dict__["values_"] = values

    @values_.deleter
    def values_(self) -> None:
        self.__dict__.pop("values_", None)
        self.__dict__["_values_pending"] = False

    def _values(self, val):
        with torch.no_grad():
            if val is not None:
                g_val = self._grads(*val).mean(0, keepdim=True)
                factor = self._solve(g_val)
                values = self._over_training_rows(lambda G: (factor @ G.T)[0])
            else:
                values = -self._self_influences()
        values = values.cpu().numpy()
        if self.train_index_ is None:
            return values
        import pandas as pd

        return pd.Series(values, index=self.train_index_, name="value")

    def _over_training_rows(self, f, progress: str | None = None) -> torch.Tensor:
        """``f(G)`` on the gradients ``G`` of the fit rows, ``batch_size`` rows at a time.

        Bounded memory (one chunk of gradients); DataInf's kept gradients are reused.
        """
        kept = getattr(self.solver_, "grads_", None)
        chunks = list(iter_slices(len(self.X_fit_), self.batch_size))
        parts = []
        for sl in (chunks if progress is None else self._progress(chunks, progress)):
            G = kept[sl] if kept is not None else self._grads(self.X_fit_[sl], self.y_fit_[sl])
            parts.append(f(G))
        return torch.cat(parts) if parts else self.flat_.theta.new_zeros(0)

    def _self_influences(self) -> torch.Tensor:
        """``g_i^T (C + lambda I)^-1 g_i`` for every fit row, by the solver's quadratic form.

        A factorised solver gives them in about one product per row; the others solve for
        each row (chunks of ``batch_size`` rows, as :meth:`influence_factors` does).
        """
        solver, n_failed = self.solver_, 0
        if hasattr(solver, "training_quadratic_form"):  # DataInf: its kept gradients
            return solver.training_quadratic_form(self.batch_size)

        def quadratic_form(G):
            nonlocal n_failed
            q = solver.quadratic_form(G)
            n_failed += self._n_unconverged()
            return q

        progress = None if solver.factorised else f"values_ ({len(self.X_fit_)} solves)"
        out = self._over_training_rows(quadratic_form, progress)
        self._warn_unconverged(n_failed, len(self.X_fit_))
        return out

    # ---------------------------------------------------------------- queries
    def _grads(self, X, y) -> torch.Tensor:
        return per_sample_grads_batched(self.flat_, X, y, self.batch_size)

    def _solve(self, G: torch.Tensor) -> torch.Tensor:
        chunks = list(iter_slices(len(G), max(self.batch_size, 1)))
        parts, n_failed = [], 0
        with torch.no_grad():
            for sl in self._progress(chunks):
                parts.append(self.solver_.solve(G[sl]))
                n_failed += self._n_unconverged()
        self._warn_unconverged(n_failed, len(G))
        return torch.cat(parts) if parts else G.new_zeros(G.shape)

    def _n_unconverged(self) -> int:
        converged = self.solver_.converged_
        return 0 if converged is None else int((~converged).sum())

    def _warn_unconverged(self, n_failed: int, n: int) -> None:
        if n_failed:
            opts = self.method_
            warnings.warn(
                f"method={opts.name!r} did not converge for {n_failed} of {n} "
                f"right-hand sides within maxiter={getattr(opts, 'maxiter', None)} "
                f"iterations (rtol={getattr(opts, 'rtol', None)!r}); their solutions are the "
                f"last iterates. Increase 'maxiter' (method={type(opts).__name__}(maxiter=...))"
                " or 'rtol'.",
                ConvergenceWarning, stacklevel=4,
            )

    def _progress(self, it, desc: str = ""):
        if self.verbose > 0:
            from tqdm.auto import tqdm

            label = f"InfluenceScorer({self.method_.name})"
            return tqdm(it, desc=f"{label} {desc}" if desc else label)
        return it

    def influence_factors(self, X_test, y_test=None) -> np.ndarray:
        """``(C + lambda I)^-1 grad L(z_test)`` for each test row, shape ``(n_test, p)``.

        Reusable with :meth:`influences_from_factors`.

        Parameters
        ----------
        X_test : array-like, DataFrame, torch.Tensor or torch Dataset of (x, y) pairs
            Test inputs.
        y_test : array-like or torch.Tensor, default=None
            Test targets; None when ``X_test`` is a Dataset.

        Returns
        -------
        ndarray of shape (n_test, n_params_)
        """
        check_is_fitted(self, "solver_")
        if isinstance(self.method_, AttributionMethod):
            raise self.method_._no_factors()
        Xt, yt = self._tensors(X_test, y_test, "X_test", "y_test")
        return self._solve(self._grads(Xt, yt)).cpu().numpy()

    def influences(self, X_test, y_test=None, X=None, y=None, mode=None, out=None):
        """Influence of each training row on each test row.

        Parameters
        ----------
        X_test, y_test : test data, of the kinds :meth:`fit` takes.
        X, y : training rows to score; None means the rows given to :meth:`fit`.
        mode : {"up", "perturbation"}, default=None
            None uses the ``mode`` parameter.
        out : str, path, zarr store or group, default=None
            Write the matrix there chunk by chunk (bounded memory) and return the zarr
            array. A run started again with the same arguments skips the chunks already
            written; different parameters or data are refused. A path must be new, an
            empty directory or a store written by skdvl, under a writable directory;
            this is checked before any work.

        Returns
        -------
        ndarray of shape (n_test, n_train) or (n_test, n_train, *input_shape); a
        DataFrame (index: the test rows', columns: the training rows') in up mode when
        ``X_test`` or the training ``X`` is a DataFrame; a ``dask.array.Array`` with
        ``backend="dask"``; a ``zarr.Array`` with ``out``.
        """
        check_is_fitted(self, "solver_")
        if isinstance(self.method_, AttributionMethod):
            return self.method_._influences(self, X_test, y_test, X, y, mode, out)
        if out is not None:
            check_output_path(out)
        if self.backend == "dask" or out is not None or self.chunk_size is not None:
            chunk = 1000 if self.chunk_size is None else self.chunk_size
            calc = (DaskInfluenceCalculator(self, chunk, client=self.client)
                    if self.backend == "dask"
                    else SequentialInfluenceCalculator(self, chunk, verbose=self.verbose))
            return calc.influences(X_test, y_test, X, y, mode=mode, out=out)
        factors = self.influence_factors(X_test, y_test)
        result = self.influences_from_factors(factors, X, y, mode=mode)
        return self._as_frame(result, X_test, X)

    def _as_frame(self, result, X_test, X):
        test_index = X_test.index if is_pandas(X_test) else None
        train_index = self.train_index_ if X is None else (X.index if is_pandas(X) else None)
        if result.ndim != 2 or (test_index is None and train_index is None):
            return result
        import pandas as pd

        return pd.DataFrame(result, index=test_index, columns=train_index)

    def influences_from_factors(self, factors, X=None, y=None, mode=None) -> np.ndarray:
        """Influences from precomputed :meth:`influence_factors` (see :meth:`influences`).

        Parameters
        ----------
        factors : array-like of shape (n_test, n_params_)
            The output of :meth:`influence_factors`.
        X, y : training rows to score; None means the rows given to :meth:`fit`.
        mode : {"up", "perturbation"}, default=None
            None uses the ``mode`` parameter.

        Returns
        -------
        ndarray of shape (n_test, n_train) or (n_test, n_train, *input_shape)
        """
        check_is_fitted(self, "solver_")
        if isinstance(self.method_, AttributionMethod):
            raise self.method_._no_factors()
        mode = self.mode if mode is None else mode
        if mode not in ("up", "perturbation"):
            raise ValueError(f"The 'mode' argument must be 'up' or 'perturbation'. Got "
                             f"{mode!r} instead.")
        F = torch.as_tensor(np.asarray(factors), dtype=self.flat_.theta.dtype,
                            device=self.flat_.theta.device)
        if F.dim() != 2 or F.shape[1] != self.n_params_:
            raise ValueError(f"factors must have shape (n_test, {self.n_params_}); got "
                             f"{tuple(F.shape)}.")
        if X is None and y is not None:
            raise ValueError("y was given without X; pass both, or neither to score the "
                             "rows given to fit.")
        Xs, ys = (self.X_fit_, self.y_fit_) if X is None else self._tensors(X, y, "X", "y")
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
