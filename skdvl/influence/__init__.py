"""Influence functions for torch modules and skorch nets (needs the ``torch`` extra).

Nothing here is imported by ``import skdvl``; use
``from skdvl.influence import InfluenceScorer``.
"""

from ._scorer import InfluenceScorer
from ._solvers import NotPositiveDefiniteError

__all__ = ["InfluenceScorer", "NotPositiveDefiniteError"]
