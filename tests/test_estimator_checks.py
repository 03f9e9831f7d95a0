"""scikit-learn's common estimator checks, run on every valuer of this module family."""

from sklearn.neighbors import KNeighborsClassifier
from sklearn.utils.estimator_checks import parametrize_with_checks

from skdvl import BanzhafValuer, BetaShapleyValuer, LOOValuer, ShapleyValuer

# Small budgets and a cheap model keep the ~40 checks per valuer fast.
_model = KNeighborsClassifier(n_neighbors=1)
VALUERS = [
    ShapleyValuer(_model, max_updates=2, cv=2, random_state=0),
    ShapleyValuer(_model, sampler="owen", max_updates=1, cv=2, random_state=0),
    BanzhafValuer(_model, max_updates=8, cv=2, random_state=0),
    BetaShapleyValuer(estimator=_model, max_updates=2, cv=2, random_state=0),
    LOOValuer(_model, cv=2),
]


@parametrize_with_checks(VALUERS)
def test_sklearn_compatible_valuer(estimator, check):
    check(estimator)
