"""Data valuers: one estimator per method family."""

from skdvl.valuation._amortized import AmortizedValuer
from skdvl.valuation._classwise import (
    ClasswiseExactSampler,
    ClasswiseModelUtility,
    ClasswisePermutationSampler,
    ClasswiseShapleyValuer,
)
from skdvl.valuation._delta import DeltaShapleyValuer
from skdvl.valuation._group_testing import GroupTestingShapleyValuer
from skdvl.valuation._knn import KNNShapley
from skdvl.valuation._knn_threshold import ThresholdKNNShapley
from skdvl.valuation._least_core import LeastCoreValuer
from skdvl.valuation._oob import DataOOBValuer
from skdvl.valuation._semivalues import (
    BanzhafValuer,
    BetaShapleyValuer,
    LOOValuer,
    ShapleyValuer,
)

__all__ = [
    "ShapleyValuer", "BanzhafValuer", "BetaShapleyValuer", "LOOValuer", "KNNShapley",
    "ThresholdKNNShapley", "DataOOBValuer", "GroupTestingShapleyValuer",
    "DeltaShapleyValuer", "ClasswiseShapleyValuer", "ClasswiseModelUtility",
    "ClasswisePermutationSampler", "ClasswiseExactSampler", "LeastCoreValuer",
    "AmortizedValuer",
]
