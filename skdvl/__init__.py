"""skdvl: data valuation and influence functions for scikit-learn.

Valuers are scikit-learn estimators: ``fit(X, y, X_val=..., y_val=...)`` sets
``values_``. :class:`DataCleaner` drops the lowest-valued rows inside a
pipeline. Influence functions live in :mod:`skdvl.influence` (needs torch) and
are not imported here.
"""

from skdvl.cleaning import CleanedEstimator, DataCleaner, rows_to_keep
from skdvl.result import ValuationResult
from skdvl.utility import ModelUtility, Utility, UtilityFitWarning
from skdvl.utility_learning import LearnedUtility
from skdvl.valuation import (
    AmortizedValuer,
    BanzhafValuer,
    BetaShapleyValuer,
    ClasswiseModelUtility,
    ClasswiseShapleyValuer,
    DataOOBValuer,
    DeltaShapleyValuer,
    GroupTestingShapleyValuer,
    KNNShapley,
    LeastCoreValuer,
    LOOValuer,
    ShapleyValuer,
    ThresholdKNNShapley,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "ValuationResult", "ModelUtility", "Utility", "UtilityFitWarning",
    "ShapleyValuer", "BanzhafValuer", "BetaShapleyValuer", "LOOValuer", "KNNShapley",
    "ThresholdKNNShapley", "DataOOBValuer", "GroupTestingShapleyValuer",
    "DeltaShapleyValuer", "DataCleaner", "CleanedEstimator", "rows_to_keep",
    "ClasswiseShapleyValuer", "ClasswiseModelUtility", "LearnedUtility", "LeastCoreValuer",
    "AmortizedValuer",
]
