"""Projected-gradient attribution as methods of ``InfluenceScorer``.

``InfluenceScorer(net, method=TRAK(proj_dim=1024))`` (or ``method="trak"``), and
``method=ProjectedInfluence(proj_dim=2048)`` (influence functions with the scorer's
curvature projected, solved densely in the projected space), attribute
with :class:`~skdvl.influence._trak.ProjectedAttribution` instead of solving with a
curvature: the option object carries the method's own options, the scorer its model,
loss, batch size, device, seed, chunk size and verbosity, so that skorch nets,
DataFrames, ``values_`` and ``influences(..., out=...)`` work as for the classic methods.
The numbers are :class:`ProjectedAttribution`'s, computed by it (the option objects only
translate their options).

``backend="dask"`` (with the scorer's ``client``) projects the training chunks as dask
tasks in ``fit`` (bitwise as a sequential fit on one torch thread; see
:mod:`~skdvl.influence._trak_dask`); the queries read the store chunk by chunk in this
process and return arrays, as with ``backend="sequential"``.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import ClassVar

import numpy as np

from skdvl._sklearn_compat import Interval, StrOptions, validate_parameters

from ._options import InfluenceMethod
from ._trak import ProjectedAttribution

_SHARED = ("proj_dim", "projection", "dtype", "nnz", "store")


def _constraints(*names: str) -> dict:
    base = ProjectedAttribution._parameter_constraints
    return {name: base[name] for name in names}


class AttributionMethod(InfluenceMethod):
    """Base of the projected-gradient methods: each builds a :class:`ProjectedAttribution`.

    Subclasses set ``name``, ``_method`` (the ``method`` of ProjectedAttribution) and
    :meth:`_options` (their options in ProjectedAttribution's names).
    """

    needs_positive_regularization = False
    _method: ClassVar[str] = ""

    def _options(self) -> dict:
        return {name: getattr(self, name) for name in _SHARED}

    def _method_name(self) -> str:
        return self._method

    def _solver(self, regularization, blocks):
        raise TypeError(f"{type(self).__name__} is an attribution method, not a curvature "
                        "solver; InfluenceScorer builds it with _attribution().")

    def _attribution(self, scorer) -> ProjectedAttribution:
        """The unfitted attribution of ``scorer``'s model with these options."""
        validate_parameters(self)
        chunk = scorer.chunk_size
        chunk = 1000 if chunk is None else (chunk if isinstance(chunk, Integral) else chunk[1])
        return ProjectedAttribution(
            scorer.model, loss=scorer.loss, method=self._method_name(),
            batch_size=scorer.batch_size, chunk_size=int(chunk), device=scorer.device,
            backend=scorer.backend, client=scorer.client, random_state=scorer.random_state,
            verbose=scorer.verbose, **self._options(), **self._scorer_options(scorer))

    def _scorer_options(self, scorer) -> dict:
        """Options that this method takes from the scorer (none by default)."""
        return {}

    def _fit(self, scorer, X, y, X_val, y_val):
        """The fitted attribution and ``values_`` (None without ``compute_values``).

        ``values_``: with ``X_val``, minus the mean score of each training row on the
        validation rows; without, minus its score on itself.
        """
        attribution = self._attribution(scorer).fit(X, y)
        if not scorer.compute_values:
            return attribution, None
        if X_val is not None:
            values = -np.asarray(attribution.influences(X_val, y_val)).mean(0)
        else:
            values = -attribution.self_influences()
        if attribution.train_index_ is None:
            return attribution, values
        import pandas as pd

        return attribution, pd.Series(values, index=attribution.train_index_, name="value")

    def _influences(self, scorer, X_test, y_test, X, y, mode, out):
        """``scorer.influences`` for an attribution method."""
        if X is not None or y is not None:
            raise ValueError(
                f"method={type(self).__name__}(...) scores the training rows given to fit "
                "(their projected gradients are stored); X and y must be None. Got X of "
                f"type {type(X).__name__} and y of type {type(y).__name__}.")
        mode = scorer.mode if mode is None else mode
        if mode != "up":
            raise ValueError(
                f"method={type(self).__name__}(...) computes up-weighting attributions only; "
                f"mode must be 'up'. Got {mode!r} instead.")
        return scorer.solver_.influences(X_test, y_test, out=out)

    def _no_factors(self) -> ValueError:
        return ValueError(
            f"method={type(self).__name__}(...) has no influence factors in parameter "
            "space (its test side lives in the projected space of the store); use "
            "influences(X_test, y_test).")


class TRAK(AttributionMethod):
    """TRAK (Park et al., 2023): a kernel regression on projected output gradients.

    See :class:`~skdvl.influence.ProjectedAttribution` (``method="trak"``) for the
    formula, the output function and the regularization rule. The scorer's own
    ``regularization`` is not used: TRAK's ``lambda`` is the ``regularization`` here.

    Parameters
    ----------
    proj_dim : int or None, default=2048
        Dimension of the projections; None: the gradients unprojected.
    projection : {"rademacher", "sparse", "factored", "factored_pca"}, default="rademacher"
    models : list of dict, default=None
        State dicts of independently trained models (same architecture); None: the
        scorer's model (and the copies of ``n_models``).
    n_models : int or None, default=None
        Number of models averaged. None: ``len(models)``, or 1. With ``models=None``
        and a fitted skorch net, ``n_models=M`` uses the net and trains ``M - 1`` copies
        of it (``clone(net).fit`` on the training rows, seeds from the scorer's
        ``random_state``; see :class:`~skdvl.influence.ProjectedAttribution`).
    regularization : float, "auto" or "gcv", default="auto"
        ``"auto"``: the leverage rule ``mean_i ||phi_i||^2`` (no data beyond the
        training rows, no refits). To pick a multiple of it by the LDS of held-out
        training rows (refits: the cost of an LDS), use
        :func:`skdvl.evaluation.holdout_regularization`.
    output : {"auto", "margin", "prediction", "loss"}, default="auto"
    kernel : {"outputs", "gauss_newton"}, default="outputs"
        TRAK's ``Phi^T Phi``, or the projected Gauss-Newton matrix of the loss (more
        accurate, ``c`` times the gradient passes for ``c`` outputs per row).
    dtype : {"float16", "float32", "float64"} or None, default=None
        Storage type of the projected gradients.
    nnz : int, default=8
        Non-zeros per row of ``projection="sparse"``.
    store : str or path, default=None
        The zarr gradient store (resumable; reopened by ``fit()`` without data).

    References
    ----------
    Park, S. M., Georgiev, K., Ilyas, A., Leclerc, G. and Madry, A. (2023). TRAK:
    Attributing model behavior at scale. ICML.

    Examples
    --------
    >>> import torch
    >>> from skdvl.influence import TRAK, InfluenceScorer
    >>> X, y = torch.randn(30, 4), torch.randint(0, 3, (30,))
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    >>> s = InfluenceScorer(net, loss=torch.nn.CrossEntropyLoss(), method=TRAK(proj_dim=16),
    ...                     random_state=0).fit(X, y)
    >>> s.influences(X[:5], y[:5]).shape
    (5, 30)
    """

    name = "trak"
    _method = "trak"
    _parameter_constraints: ClassVar[dict] = _constraints(
        *_SHARED, "models", "n_models", "regularization", "output", "kernel")

    def __init__(self, proj_dim=2048, projection="rademacher", models=None, n_models=None,
                 regularization="auto", output="auto", kernel="outputs", dtype=None, nnz=8,
                 store=None):
        self.proj_dim = proj_dim
        self.projection = projection
        self.models = models
        self.n_models = n_models
        self.regularization = regularization
        self.output = output
        self.kernel = kernel
        self.dtype = dtype
        self.nnz = nnz
        self.store = store

    def _options(self):
        return {**super()._options(), "models": self.models, "n_models": self.n_models,
                "regularization": self.regularization, "output": self.output,
                "kernel": self.kernel}


class TracIn(AttributionMethod):
    """TracInCP (Pruthi et al., 2020): learning-rate-weighted gradient dot products summed
    over checkpoints.

    Parameters
    ----------
    proj_dim : int or None, default=2048
    projection : {"rademacher", "sparse", "factored"}, default="rademacher"
    checkpoints : list of dict, default=None
        State dicts saved during training; None: the scorer's model (one checkpoint).
        For a skorch net, the in-run route: train it with a
        :class:`~skdvl.influence.CheckpointRecorder` callback and pass its
        ``checkpoints_`` here and its ``learning_rates_`` as ``learning_rates``.
    learning_rates : list of float, default=None
        The step size at each checkpoint; None: 1 for each.
    dtype : {"float16", "float32", "float64"} or None, default=None
    nnz : int, default=8
    store : str or path, default=None

    References
    ----------
    Pruthi, G., Liu, F., Kale, S. and Sundararajan, M. (2020). Estimating training data
    influence by tracing gradient descent. NeurIPS.

    Examples
    --------
    >>> from skdvl.influence import TracIn
    >>> TracIn(proj_dim=512, learning_rates=[0.1, 0.1])
    TracIn(learning_rates=[0.1, 0.1], proj_dim=512)
    """

    name = "tracin"
    _method = "tracin"
    _parameter_constraints: ClassVar[dict] = {
        **_constraints(*_SHARED, "learning_rates"),
        "checkpoints": [list, tuple, None],
    }

    def __init__(self, proj_dim=2048, projection="rademacher", checkpoints=None,
                 learning_rates=None, dtype=None, nnz=8, store=None):
        self.proj_dim = proj_dim
        self.projection = projection
        self.checkpoints = checkpoints
        self.learning_rates = learning_rates
        self.dtype = dtype
        self.nnz = nnz
        self.store = store

    def _options(self):
        return {**super()._options(), "models": self.checkpoints,
                "learning_rates": self.learning_rates}


class GradientSimilarity(AttributionMethod):
    """Minus the dot product or cosine of projected loss gradients, averaged over models.

    Parameters
    ----------
    kind : {"dot", "cos"}, default="dot"
    proj_dim : int or None, default=2048
    projection : {"rademacher", "sparse", "factored"}, default="rademacher"
    models : list of dict, default=None
    dtype : {"float16", "float32", "float64"} or None, default=None
    nnz : int, default=8
    store : str or path, default=None

    Examples
    --------
    >>> from skdvl.influence import GradientSimilarity
    >>> GradientSimilarity(kind="cos", proj_dim=None)
    GradientSimilarity(kind='cos', proj_dim=None)
    """

    name = "gradient_similarity"
    _parameter_constraints: ClassVar[dict] = {
        **_constraints(*_SHARED, "models"), "kind": [StrOptions({"dot", "cos"})],
    }

    def __init__(self, kind="dot", proj_dim=2048, projection="rademacher", models=None,
                 dtype=None, nnz=8, store=None):
        self.kind = kind
        self.proj_dim = proj_dim
        self.projection = projection
        self.models = models
        self.dtype = dtype
        self.nnz = nnz
        self.store = store

    def _method_name(self) -> str:
        return f"grad_{self.kind}"

    def _options(self):
        return {**super()._options(), "models": self.models}



class ProjectedInfluence(AttributionMethod):
    """Influence functions with the curvature projected: ``k`` dimensions, solved densely.

    ``I(z_i, z_t) = -mean_m g_t^T P_m (P_m^T C_m P_m + lambda I)^-1 P_m^T g_i``: the
    scorer's influence (Koh & Liang, 2017) with its curvature ``C`` (``second_order``: the
    Gauss-Newton matrix or the Hessian of the mean training loss) and the loss gradients
    ``g`` seen through a seeded random projection ``P`` (``d x k``, never formed for the
    Gauss-Newton curvature). ``P^T C P`` is a ``k x k`` matrix, formed exactly (``c``
    projected gradient passes per training row for ``c`` outputs; for the Hessian ``k``
    Hessian-vector products) and inverted densely (a Cholesky factorisation for the
    Gauss-Newton matrix, an eigendecomposition for the Hessian), so no iterative
    solver (CG, LiSSA) or Kronecker factorisation (EK-FAC) is needed in ``k`` dimensions.
    The projected training gradients are stored once (``store``) and every query
    projects only its test rows, as for :class:`TRAK`. With ``proj_dim=None`` (the
    identity) it is ``method="direct"``; with one model and Gauss-Newton, ``n`` times
    ``TRAK(kernel="gauss_newton")`` at ``n`` times the ``lambda`` (TRAK's kernel sums
    over the rows, this one averages). With several models the influences are averaged
    (TRAK averages its factors ``Q`` instead).

    Parameters
    ----------
    proj_dim : int or None, default=2048
        Dimension ``k`` of the projections; None: no projection (``k = d``).
    projection : {"rademacher", "sparse", "factored", "factored_pca"}, default="rademacher"
        The Hessian needs "rademacher" or "sparse" (and ``d k <= 2**26``).
        ``"factored_pca"`` (Linear layers only; not with ``store``): LoGra's factored
        projection with each side the leading eigenvectors of its second moment on the
        training rows (Choe et al., 2024), so that the Gauss-Newton matrix costs ``2 n
        k^2`` operations from ``c`` cheap passes and never forms a gradient; on the
        85,000-parameter digits MLP it matched CG's LDS at ``k`` = 1,024-2,048 in a
        tenth of CG's time (``benchmarks/README.md``).
    models : list of dict, default=None
        State dicts of independently trained models whose influences are averaged; None:
        the scorer's model only.
    regularization : float, "auto" or None, default=None
        ``lambda``, on the scale of the scorer's (added to the projected mean
        curvature). None: the scorer's ``regularization``. ``"auto"``: ``tr(P^T C P) /
        n``, per model (the leverage rule of TRAK's ``"auto"``, see
        :class:`~skdvl.influence.ProjectedAttribution`). To choose a multiple without
        test data, see :func:`skdvl.evaluation.holdout_regularization`.
    dtype : {"float16", "float32", "float64"} or None, default=None
        Storage type of the projected gradients.
    nnz : int, default=8
    store : str or path, default=None
        The zarr gradient store (resumable; reopened by ``fit()`` without data).

    Notes
    -----
    Cost: the training gradients projected once (as TRAK), the curvature ``c`` times
    that for Gauss-Newton (``k`` Hessian-vector products over the training rows for the
    Hessian), ``k^3`` for the Cholesky factorisation and inverse (about 6 times less
    than an eigendecomposition at ``k`` = 2,048-4,096), then ``k`` per test-training
    pair. With a factored projection and one position per row (an MLP) the Gauss-Newton
    matrix is summed from its Kronecker factors (``2 n k^2`` operations, not ``2 n c
    k^2``). A
    projected Hessian that is indefinite at ``lambda`` raises
    :class:`~skdvl.influence.NotPositiveDefiniteError` with the regularization needed.

    References
    ----------
    Koh, P. W. and Liang, P. (2017). Understanding black-box predictions via influence
    functions. ICML.
    Park, S. M., Georgiev, K., Ilyas, A., Leclerc, G. and Madry, A. (2023). TRAK:
    Attributing model behavior at scale. ICML (the projected gradients).
    Choe, S. K. et al. (2024). What is your data worth to GPT? LLM-scale data valuation
    with influence functions. arXiv:2405.13954 (the factored projection, PCA-initialised).

    Examples
    --------
    >>> import torch
    >>> from skdvl.influence import InfluenceScorer, ProjectedInfluence
    >>> X, y = torch.randn(30, 4), torch.randint(0, 3, (30,))
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    >>> s = InfluenceScorer(net, loss=torch.nn.CrossEntropyLoss(), regularization=1e-2,
    ...                     method=ProjectedInfluence(proj_dim=16), random_state=0).fit(X, y)
    >>> s.influences(X[:5], y[:5]).shape
    (5, 30)
    """

    name = "projected_influence"
    _method = "influence"
    _parameter_constraints: ClassVar[dict] = {
        **_constraints(*_SHARED, "models"),
        "regularization": [Interval(Real, 0, None, closed="left"), StrOptions({"auto"}), None],
    }

    def __init__(self, proj_dim=2048, projection="rademacher", models=None,
                 regularization=None, dtype=None, nnz=8, store=None):
        self.proj_dim = proj_dim
        self.projection = projection
        self.models = models
        self.regularization = regularization
        self.dtype = dtype
        self.nnz = nnz
        self.store = store

    def _options(self):
        return {**super()._options(), "models": self.models}

    def _scorer_options(self, scorer) -> dict:
        lam = scorer.regularization if self.regularization is None else self.regularization
        return {"kernel": scorer.second_order, "regularization": lam}
