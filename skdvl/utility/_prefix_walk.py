"""Prefix walks: the coalitions ``base + order[:j]``, each fitted from the one before.

A permutation sampler values a game by walking prefixes: ``u(perm[:1])``,
``u(perm[:2])``, ... Refitting each prefix from scratch is the wrong problem,
since prefix ``k + 1`` is prefix ``k`` plus one row. :class:`PrefixWalk` keeps,
for each walk of a set, the state of its last fit and fits the next prefix
from it (:mod:`skdvl.utility._prefix_fits`): exactly, by running sums, for
``Ridge`` and ``LinearRegression``; by warm-started Newton steps converged to
the batched path's tolerance for L2 ``LogisticRegression`` (three classes or more:
truncated Newton, :mod:`skdvl.utility._prefix_multinomial`). With ``device=``,
least squares walks on that torch device (:mod:`skdvl.utility._prefix_torch`), and so
does binary logistic regression (:mod:`skdvl.utility._prefix_torch_logistic`);
multinomial walks run in numpy only, so a device fits them cold. Each step yields a
:class:`~skdvl.utility._linear_state.BatchFit` of the walks' new prefixes,
scored as the batched path scores its fits.

The arithmetic of a walk does not depend on the other walks of the set: walks
advance in groups of equal prefix length, and every operation acts on each
walk's own rows (elementwise, or one matrix product per walk), so that a
walk's fits are the same to the last bit whether it is walked alone or with
others, in any process (values identical for any ``n_jobs``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from skdvl.utility._linear_state import BatchFit, _dict_weights
from skdvl.utility._prefix_fits import LeastSquaresPrefixes, LogisticPrefixes
from skdvl.utility._prefix_multinomial import MultinomialPrefixes
from skdvl.utility._prefix_torch import TorchLeastSquaresPrefixes
from skdvl.utility._prefix_torch_logistic import TorchLogisticPrefixes

__all__ = ["PrefixWalk", "walk_reason"]

#: rows gathered per walk at least per growth of the gathered arrays
_GROW = 256


def walk_reason(plan: Any, y: Any) -> str:
    """Why ``plan`` (a :class:`~skdvl.utility._linear_batch.BatchPlan`) cannot walk
    prefixes incrementally on targets ``y`` ("" when it can)."""
    scaler, model = plan.scaler, plan.model
    if scaler is not None and scaler.with_mean and not model.fit_intercept:
        return "a centring StandardScaler before a model without intercept"
    if plan.kind != "logistic":
        return ""
    classes = np.unique(np.asarray(y))
    if plan.device is not None and classes.size > 2:
        return ("device= is given and the multinomial prefix walk runs in numpy only "
                "(device= fits multinomial models cold in batch)")
    cw = model.class_weight
    if cw == "balanced":
        return "class_weight='balanced' (every row's weight changes with a prefix)"
    if isinstance(cw, dict) and cw and not _dict_weights(classes, cw)[1].all():
        return "a class_weight dict that does not name every class"
    return ""


class PrefixWalk:
    """The prefixes of a set of walks, each fitted from the walk's previous one.

    Walk ``r`` visits ``bases[r] | order_r[:j]`` for ``j = 0, 1, ...``;
    :meth:`step` fits the next prefix of each walk it is given.

    Parameters
    ----------
    plan : BatchPlan
        The batched plan of the utility (its estimator, scaler and scorer).
    X, y : ndarray
        Training data (dense, finite) and targets.
    bases : ndarray of bool, shape (W, n)
        Each walk's first coalition.
    orders : list of W int arrays
        The rows each walk adds, in order (none of them in its base).
    """

    def __init__(self, plan: Any, X: np.ndarray, y: np.ndarray, bases: np.ndarray,
                 orders: list[np.ndarray]) -> None:
        self.plan = plan
        X = np.asarray(X, dtype=np.float64)
        n, d = X.shape
        W = bases.shape[0]
        self.n_features = d
        base_sizes = bases.sum(axis=1)
        lengths = base_sizes + np.array([o.shape[0] for o in orders], dtype=np.intp)
        self.rows = np.full((W, max(1, int(lengths.max()))), n, dtype=np.intp)
        for r, order in enumerate(orders):
            b = int(base_sizes[r])
            self.rows[r, :b] = np.flatnonzero(bases[r])
            self.rows[r, b:lengths[r]] = order
        self.length = base_sizes.astype(np.intp)  # the current prefix of each walk
        self.max_length = lengths
        if plan.kind == "logistic" and np.unique(np.asarray(y)).size > 2:
            self.fits: Any = MultinomialPrefixes(plan, X, y, W)
        elif plan.kind == "logistic" and plan.device is not None:
            self.fits = TorchLogisticPrefixes(plan, X, y, W)
        elif plan.kind == "logistic":
            self.fits = LogisticPrefixes(plan, X, y, W)
        elif plan.device is not None:  # least squares on a torch device
            self.fits = TorchLeastSquaresPrefixes(plan, X, np.asarray(y, np.float64), W)
        else:
            self.fits = LeastSquaresPrefixes(plan, X, np.asarray(y, np.float64), W)
        self.cap = 0
        self._grow(int(max(1, base_sizes.max())))
        starting = np.flatnonzero(base_sizes > 0)
        for k in np.unique(base_sizes[starting]):
            ids = starting[base_sizes[starting] == k]
            self.fits.start(ids, int(k))

    @property
    def n_walks(self) -> int:
        return int(self.rows.shape[0])

    def mask(self, r: int) -> np.ndarray:
        """The current coalition of walk ``r`` as a boolean mask."""
        return self.mask_at(r, 0)

    def mask_at(self, r: int, back: int) -> np.ndarray:
        """The coalition of walk ``r`` ``-back`` prefixes before its current one
        (``back <= 0``) as a boolean mask."""
        out = np.zeros(self.fits.n_rows, dtype=bool)
        out[self.rows[r, :self.length[r] + back]] = True
        return out

    def _grow(self, need: int) -> None:
        """Gather the rows of every walk up to position ``need`` (at least)."""
        if need <= self.cap:
            return
        new = int(min(self.rows.shape[1], max(need, 2 * self.cap, _GROW)))
        self.fits.gather(self.rows[:, self.cap:new])
        self.cap = new

    def step(self, walks: np.ndarray) -> BatchFit:
        """Add the next row to each walk of ``walks`` and fit the new prefixes.

        Returns the fits of the new prefixes, in the order of ``walks`` (a walk
        at its last prefix may not be given).
        """
        walks = np.asarray(walks, dtype=np.intp)
        if (self.length[walks] >= self.max_length[walks]).any():
            raise ValueError("A walk at its last prefix cannot take another step.")
        self._grow(int(self.length[walks].max()) + 1)
        out = self.fits.empty_fit(walks.shape[0])
        for k in np.unique(self.length[walks]):
            sel = np.flatnonzero(self.length[walks] == k)
            ids = walks[sel]
            self.fits.add(ids, int(k))
            self.length[ids] = k + 1
            self.fits.fit(ids, int(k) + 1, out, sel)
        return out

    def step_block(self, walks: np.ndarray, B: int) -> BatchFit:
        """Add the next ``B`` rows to each walk of ``walks`` and fit the ``B`` new
        prefixes of each (all of them: no walk may end before).

        Returns the fits walk by walk: row ``a * B + j`` is prefix ``j + 1`` of the
        block of ``walks[a]``. The fits are those :meth:`step` would give up to the
        solver tolerance; logistic walks fit a block's prefixes together.
        """
        walks = np.asarray(walks, dtype=np.intp)
        if (self.length[walks] + B > self.max_length[walks]).any():
            raise ValueError("A walk cannot take a block of steps past its last prefix.")
        self._grow(int(self.length[walks].max()) + B)
        out = self.fits.empty_fit(walks.shape[0] * B)
        block = getattr(self.fits, "fit_block", None)
        for k in np.unique(self.length[walks]):
            sel = np.flatnonzero(self.length[walks] == k)
            ids = walks[sel]
            rows = sel[:, None] * B + np.arange(B)[None, :]
            if block is not None:
                block(ids, int(k), B, out, rows)
            else:
                for j in range(B):
                    self.fits.add(ids, int(k) + j)
                    self.fits.fit(ids, int(k) + j + 1, out, rows[:, j])
            self.length[ids] = k + B
        return out
