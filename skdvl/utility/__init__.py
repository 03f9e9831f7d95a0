"""Utilities: the cooperative games that valuers value.

A utility maps a coalition of players (training rows) to a number. Any object
with an ``n_players`` attribute and ``__call__(subset) -> float`` is one (the
:class:`Utility` protocol); an optional batched ``evaluate(masks)`` lets the
engine evaluate many coalitions in one call. :class:`ModelUtility` is the
utility of machine learning: fit a clone of an estimator on the rows of the
coalition and score it on validation data; :class:`ClasswiseModelUtility`
scores one fit for every class (the game of CS-Shapley).

The parts live in private modules: the protocol, fit reports and checks in
``_base``, :class:`ModelUtility` and its choice of fit path in ``_model``, the
class-wise utility in ``_classwise``, the batched linear fits in
``_linear_batch``, ``_linear_state`` and ``_linear_solvers``, and the seeded
refits of skorch nets in ``_torch_refit`` (torch is imported only when a net is
fitted).
"""

from skdvl.utility._base import (
    CheckedUtility,
    FitReport,
    Utility,
    UtilityFitWarning,
)
from skdvl.utility._base import report_fit_problems as report_fit_problems
from skdvl.utility._classwise import ClasswiseModelUtility
from skdvl.utility._model import ModelUtility

__all__ = ["Utility", "ModelUtility", "UtilityFitWarning", "FitReport", "CheckedUtility",
           "ClasswiseModelUtility"]
