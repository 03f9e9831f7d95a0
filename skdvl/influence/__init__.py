"""Influence functions for torch modules and skorch nets (needs the ``torch`` extra).

Nothing here is imported by ``import skdvl``; use
``from skdvl.influence import InfluenceScorer``.
"""

from ._attribution_options import (
    TRAK,
    AttributionMethod,
    GradientSimilarity,
    ProjectedInfluence,
    TracIn,
)
from ._calculators import SequentialInfluenceCalculator, dataset_to_dask_arrays, to_dask_array
from ._dask_calculator import DaskInfluenceCalculator
from ._options import CG, EKFAC, Arnoldi, DataInf, Direct, InfluenceMethod, LiSSA, Nystroem
from ._scorer import InfluenceScorer
from ._solvers import NotPositiveDefiniteError
from ._trak import ProjectedAttribution

__all__ = [
    "InfluenceScorer", "NotPositiveDefiniteError", "SequentialInfluenceCalculator",
    "DaskInfluenceCalculator", "to_dask_array", "dataset_to_dask_arrays",
    "InfluenceMethod", "Direct", "CG", "LiSSA", "Arnoldi", "EKFAC", "Nystroem", "DataInf",
    "ProjectedAttribution", "TRAK", "TracIn", "GradientSimilarity", "ProjectedInfluence",
    "AttributionMethod",
    "CheckpointRecorder",
]


def __getattr__(name):
    # CheckpointRecorder subclasses a skorch callback: skorch is imported only when asked.
    if name == "CheckpointRecorder":
        from ._tracin_callback import CheckpointRecorder

        return CheckpointRecorder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
