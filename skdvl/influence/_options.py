"""Influence methods as option objects: ``method="cg"`` or ``method=CG(maxiter=50)``.

An option object carries the options of one way of applying ``(C + lambda I)^-1`` and
builds the solver (see :mod:`skdvl.influence._solvers` for the protocol). Like the
samplers of the valuers and scikit-learn's CV splitters, option objects have
``get_params``/``set_params`` and a readable repr, so that
``InfluenceScorer(net, method=CG())`` can be grid-searched over ``method__maxiter``.
The parameters common to every method (``regularization``, ``block_structure``,
``second_order``, ``batch_size``, ``random_state``) stay on
:class:`~skdvl.influence.InfluenceScorer`.

Adding a method is one subclass here (its ``name`` registers it, so that the string
works too) and one solver module.
"""

from __future__ import annotations

from functools import partial
from numbers import Integral, Real
from typing import ClassVar

from sklearn.base import BaseEstimator, clone

from skdvl._sklearn_compat import Interval, StrOptions, validate_parameters

from ._cg import CGSolver
from ._datainf import DataInfSolver
from ._kfac import EKFACSolver
from ._lissa import LiSSASolver
from ._solvers import ArnoldiSolver, BlockDiagonalSolver, DirectSolver, NystroemSolver, Solver

#: name -> option class, filled by :meth:`InfluenceMethod.__init_subclass__`.
METHODS: dict[str, type[InfluenceMethod]] = {}


class InfluenceMethod(BaseEstimator):
    """Base of the method option objects.

    Subclasses set ``name``, declare ``_parameter_constraints`` for their options and
    implement :meth:`_make`, which returns an unfitted solver for one diagonal block (or
    the whole curvature).
    """

    name: ClassVar[str] = ""
    #: Whether ``regularization`` must be > 0 (only an exact factorisation can do with 0).
    needs_positive_regularization: ClassVar[bool] = True
    _parameter_constraints: ClassVar[dict] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            METHODS[cls.name] = cls

    def _make(self, regularization: float) -> Solver:
        raise NotImplementedError

    def _solver(self, regularization: float, blocks: list[slice] | None) -> Solver:
        """The unfitted solver; ``blocks`` (``block_structure="layer"``) or None."""
        validate_parameters(self)
        if blocks is None:
            return self._make(regularization)

        return BlockDiagonalSolver(partial(self._make, regularization), blocks)


class Direct(InfluenceMethod):
    """The explicit curvature matrix, factorised once with Cholesky (exact; ``p^2`` memory).

    Examples
    --------
    >>> from skdvl.influence import Direct
    >>> Direct()
    Direct()
    """

    name = "direct"
    needs_positive_regularization = False

    def _make(self, regularization):
        return DirectSolver(regularization)


class CG(InfluenceMethod):
    """Block conjugate gradients on ``C + lambda I``; negative curvature raises.

    Parameters
    ----------
    maxiter : int, default=100
        Iterations; a right-hand side that reaches it unconverged keeps its last
        iterate, with a ``ConvergenceWarning``.
    rtol : float, default=1e-6
        A right-hand side stops when its residual norm is below ``rtol`` times its norm.
    preconditioner : {None, "jacobi", "nystroem"}, default=None
        Hutchinson diagonal (``rank`` probes) or randomised Nystrom preconditioner of rank
        ``rank`` (Frangella et al., 2023).
    rank : int, default=50
        Rank of the Nystrom preconditioner, or number of probes of the Jacobi one.

    Examples
    --------
    >>> from skdvl.influence import CG
    >>> CG(maxiter=50, preconditioner="nystroem")
    CG(maxiter=50, preconditioner='nystroem')
    """

    name = "cg"
    _parameter_constraints: ClassVar[dict] = {
        "maxiter": [Interval(Integral, 1, None, closed="left")],
        "rtol": [Interval(Real, 0, 1, closed="neither")],
        "preconditioner": [StrOptions({"jacobi", "nystroem"}), None],
        "rank": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, maxiter=100, rtol=1e-6, preconditioner=None, rank=50):
        self.maxiter = maxiter
        self.rtol = rtol
        self.preconditioner = preconditioner
        self.rank = rank

    def _make(self, regularization):
        return CGSolver(regularization, self.maxiter, self.rtol, self.preconditioner, self.rank)


class LiSSA(InfluenceMethod):
    """Stochastic Neumann series on mini-batches (Agarwal et al., 2017), iterates averaged.

    Parameters
    ----------
    maxiter : int, default=1000
        Steps (one mini-batch of ``batch_size`` rows each).
    rtol : float, default=1e-6
        Stop when the relative change between consecutive window means is below ``rtol``
        or stops decreasing (the mini-batch noise floor).
    scale : float, default=None
        Above the largest eigenvalue of every mini-batch's curvature plus ``lambda``.
        None estimates it (1.5 times the largest top eigenvalue of up to 8 mini-batches).

    Examples
    --------
    >>> from skdvl.influence import LiSSA
    >>> LiSSA(maxiter=2000)
    LiSSA(maxiter=2000)
    """

    name = "lissa"
    _parameter_constraints: ClassVar[dict] = {
        "maxiter": [Interval(Integral, 1, None, closed="left")],
        "rtol": [Interval(Real, 0, 1, closed="neither")],
        "scale": [Interval(Real, 0, None, closed="neither"), None],
    }

    def __init__(self, maxiter=1000, rtol=1e-6, scale=None):
        self.maxiter = maxiter
        self.rtol = rtol
        self.scale = scale

    def _make(self, regularization):
        return LiSSASolver(regularization, self.maxiter, self.rtol, self.scale)


class Arnoldi(InfluenceMethod):
    """Top ``rank`` eigenpairs by Lanczos (Schioppa et al., 2022); the rest taken as 0.

    Parameters
    ----------
    rank : int, default=50
        Number of eigenpairs kept (``2 rank + 20`` Lanczos steps).
    check_curvature : bool, default=True
        Certify by Lanczos on the curvature minus the Ritz pairs found that no eigenvalue
        lies below ``-regularization`` (raise :class:`NotPositiveDefiniteError` if one
        does). Skipped anyway for ``second_order="gauss_newton"`` (positive
        semi-definite by construction). The check is a cost that pyDVL does not pay:
        about 11 single products on the benchmark MLP, under a tenth of the method's
        time there.
        ``False`` saves it; a negative eigenvalue that the Krylov space did not resolve
        then goes unnoticed (the Ritz values are still checked, at no cost).

    Examples
    --------
    >>> from skdvl.influence import Arnoldi
    >>> Arnoldi(rank=20, check_curvature=False)
    Arnoldi(check_curvature=False, rank=20)
    """

    name = "arnoldi"
    _parameter_constraints: ClassVar[dict] = {
        "rank": [Interval(Integral, 1, None, closed="left")],
        "check_curvature": ["boolean"],
    }

    def __init__(self, rank=50, *, check_curvature=True):
        self.rank = rank
        self.check_curvature = check_curvature

    def _make(self, regularization):
        return ArnoldiSolver(regularization, self.rank, check=bool(self.check_curvature))


class Nystroem(InfluenceMethod):
    """Inverse of a randomised Nystrom sketch of rank ``rank`` (Hataya & Yamada, 2023).

    Parameters
    ----------
    rank : int, default=50
        Rank of the sketch (``rank`` curvature products).
    check_curvature : bool, default=True
        Certify by Lanczos on the curvature minus the sketch that no eigenvalue lies
        below ``-regularization`` (raise :class:`NotPositiveDefiniteError` if one does).
        Skipped anyway for ``second_order="gauss_newton"`` (positive semi-definite by
        construction). The check is a cost that pyDVL does not pay: 20-23 single
        products on the benchmark MLP, about a third of the method's time there.
        ``False`` saves it; a negative eigenvalue below the sketch then goes unnoticed
        and the influences are computed on an indefinite matrix (the sketch's own
        eigenvalues are still checked, at no cost).

    Examples
    --------
    >>> from skdvl.influence import Nystroem
    >>> Nystroem(rank=20, check_curvature=False)
    Nystroem(check_curvature=False, rank=20)
    """

    name = "nystroem"
    _parameter_constraints: ClassVar[dict] = {
        "rank": [Interval(Integral, 1, None, closed="left")],
        "check_curvature": ["boolean"],
    }

    def __init__(self, rank=50, *, check_curvature=True):
        self.rank = rank
        self.check_curvature = check_curvature

    def _make(self, regularization):
        return NystroemSolver(regularization, self.rank, check=bool(self.check_curvature))


class EKFAC(InfluenceMethod):
    """Eigenvalue-corrected Kronecker-factored Gauss-Newton per Linear and Conv2d layer.

    George et al. (2018); always layer-wise and Gauss-Newton, whatever
    ``block_structure`` and ``second_order`` say.
    """

    name = "ekfac"

    def _solver(self, regularization, blocks):
        return EKFACSolver(regularization)


class DataInf(InfluenceMethod):
    """DataInf's closed-form inverse of the damped empirical Fisher (Kwon et al., 2023).

    Per layer with ``block_structure="layer"``, else on all parameters at once.
    """

    name = "datainf"

    def _solver(self, regularization, blocks):
        return DataInfSolver(regularization, blocks)


def resolve_method(method) -> InfluenceMethod:
    """A fresh option object for a name or a (cloned) option object."""
    if isinstance(method, InfluenceMethod):
        return clone(method)
    return METHODS[method]()
