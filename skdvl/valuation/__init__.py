"""Data valuers: one estimator per method family."""

from skdvl.valuation._semivalues import (
    BanzhafValuer,
    BetaShapleyValuer,
    LOOValuer,
    ShapleyValuer,
)

__all__ = ["ShapleyValuer", "BanzhafValuer", "BetaShapleyValuer", "LOOValuer"]
