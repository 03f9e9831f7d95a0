"""The queries of ProjectedAttribution: scores of test rows against the stored features.

:class:`~skdvl.influence._trak.ProjectedAttribution` fits (projects the training rows'
gradients into its :class:`~skdvl.influence._gradient_store.GradientStore`, and fits
TRAK's kernels); the mixin here answers the queries from the fitted state: the test
side is computed once per model, the training side read from the store chunk by chunk,
and the two combined with :func:`~skdvl.influence._trak_math.combine_scores` (Park et
al., 2023, Algorithm 1; Pruthi et al., 2020). The math is in
:mod:`~skdvl.influence._trak_math`; this module only walks the chunks.

References
----------
Park, S. M., Georgiev, K., Ilyas, A., Leclerc, G. and Madry, A. (2023). TRAK:
Attributing model behavior at scale. ICML. arXiv:2303.14186.
Pruthi, G., Liu, F., Kale, S. and Sundararajan, M. (2020). Estimating training data
influence by tracing gradient descent. NeurIPS.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from ._data import is_pandas
from ._functional import iter_slices
from ._trak_math import combine_scores
from ._zarr_store import BlockWriter, check_output_path, hash_array, make_record, open_output

if TYPE_CHECKING:
    from ._functional import FlatModel
    from ._gradient_store import GradientStore
    from ._trak_math import ProjectedKernel


class _AttributionQueries:
    """The query methods of :class:`~skdvl.influence._trak.ProjectedAttribution`.

    A mixin on the fitted state that the estimator sets (``store_``, ``kernels_``,
    ``qbar_``, ...); it holds no state of its own.
    """

    if TYPE_CHECKING:
        method_: str
        n_models_: int
        flat_: FlatModel
        store_: GradientStore
        kernels_: list[ProjectedKernel]
        learning_rates_: np.ndarray
        qbar_: torch.Tensor
        train_index_: Any
        n_blocks_written_: int

        def _tensors(self, X, y, name, y_name, reference=True): ...

        def _load(self, m: int) -> tuple[torch.nn.Module, FlatModel]: ...

        def _features(self, m: int, X: torch.Tensor, y: torch.Tensor): ...

    def influences(self, X_test, y_test=None, out=None):
        """Attribution of each test row's loss to each training row.

        Only the test rows' gradients are computed; the training side is read from the
        store chunk by chunk (memory: the test side, one chunk and the result).

        Parameters
        ----------
        X_test : array-like, DataFrame, torch.Tensor or torch Dataset of (x, y) pairs
        y_test : array-like or torch.Tensor, default=None
            None when ``X_test`` is a Dataset.
        out : str, path, zarr store or group, default=None
            Write the matrix there in blocks of ``chunk_size`` test times ``chunk_size``
            training rows and return the zarr array; a run started again with the same
            arguments skips the blocks written, other arguments are refused (as
            :meth:`InfluenceScorer.influences <skdvl.influence.InfluenceScorer.influences>`).

        Returns
        -------
        ndarray of shape (n_test, n_train), or a DataFrame (index: the test rows',
        columns: the training rows') when ``X_test`` or the training ``X`` is one; a
        ``zarr.Array`` with ``out``. Positive: the training row raises the test loss.
        """
        check_is_fitted(self, "store_")
        Xt, yt = self._tensors(X_test, y_test, "X_test", "y_test")
        if out is not None:
            return self._write(Xt, yt, out)
        result = self._scores(Xt, yt, range(len(self.store_.bounds)))
        return self._as_frame(result.cpu().numpy(), X_test)

    def _scores(self, Xt, yt, chunks) -> torch.Tensor:
        """Scores against the training chunks ``chunks``, joined along the rows."""
        lefts, d_mean = self._test_side(Xt, yt)
        parts = [self._block(lefts, d_mean, c) for c in chunks]
        self._load(0)
        return torch.cat(parts, dim=1)

    def _test_side(self, Xt, yt):
        """Per model, what multiplies the training features, and the mean ``dl/df``."""
        lefts, d_sum = [], torch.zeros(len(Xt), dtype=torch.float64,
                                       device=self.flat_.theta.device)
        for m in range(self.n_models_):
            phi, d = self._features(m, Xt, yt)
            d_sum += d.to(torch.float64)
            if self.method_ in ("trak", "influence"):
                chunks = (c for c, _ in self.store_.chunks(m, phi.device))
                lefts.append(self.kernels_[m].left(phi, chunks))
            else:
                weight = self.learning_rates_[m] if self.method_ == "tracin" else 1.0
                lefts.append(weight * self._unit(phi.to(torch.float64)))
        return lefts, d_sum / self.n_models_

    def _unit(self, phi: torch.Tensor) -> torch.Tensor:
        if self.method_ != "grad_cos":
            return phi
        return phi / phi.norm(dim=1, keepdim=True).clamp_min(1e-30)

    def _block(self, lefts, d_mean, c: int) -> torch.Tensor:
        """Scores of the test rows against training chunk ``c``."""
        sl, device = self.store_.bounds[c], d_mean.device
        total = torch.zeros(len(d_mean), sl.stop - sl.start, dtype=torch.float64,
                            device=device)
        for m in range(self.n_models_):
            if self.method_ in ("trak", "influence"):
                kernel = self.kernels_[m]
                train = None if kernel.rows else self.store_.chunk(m, c, device)
                sign = 1.0 if self.method_ == "trak" else -1.0  # TRAK's sign is in q
                total += sign * kernel.block(lefts[m], train, sl)
            else:
                train = self._unit(self.store_.chunk(m, c, device).to(torch.float64))
                total -= lefts[m] @ train.T
        return combine_scores(self.method_, total, d_mean.unsqueeze(1),
                              self.qbar_[sl].unsqueeze(0), self.n_models_)

    def self_influences(self) -> np.ndarray:
        """The scores of every training row on itself, ``diag(influences(X, y))``.

        From the store alone, chunk by chunk (the training rows' ``dl/df`` is ``-q``).

        Returns
        -------
        ndarray of shape (n_train,)
        """
        check_is_fitted(self, "store_")
        store, device = self.store_, self.flat_.theta.device
        parts = []
        for c, sl in enumerate(store.bounds):
            quad = torch.zeros(sl.stop - sl.start, dtype=torch.float64, device=device)
            for m in range(self.n_models_):
                phi = store.chunk(m, c, device).to(torch.float64)
                if self.method_ in ("trak", "influence"):
                    kernel = self.kernels_[m]
                    left = kernel.left(phi, (f for f, _ in store.chunks(m, device)))
                    sign = 1.0 if self.method_ == "trak" else -1.0
                    quad += sign * (kernel.block(left, phi, sl).diagonal() if kernel.rows
                                    else (left * phi).sum(1))
                else:
                    weight = self.learning_rates_[m] if self.method_ == "tracin" else 1.0
                    quad -= weight * self._unit(phi).square().sum(1)
            d_mean = -self.qbar_[sl]
            parts.append(combine_scores(self.method_, quad, d_mean, self.qbar_[sl],
                                        self.n_models_))
        return torch.cat(parts).cpu().numpy()

    def _write(self, Xt, yt, out):
        check_output_path(out)
        n_test, size = len(Xt), self.store_.chunk_size
        test_bounds = [(s.start, s.stop) for s in iter_slices(n_test, size)]
        train_bounds = [(s.start, s.stop) for s in self.store_.bounds]
        record = make_record(self.store_.record["config"]["params"],
                             store=self.store_.record, test={"X": hash_array(Xt),
                                                             "y": hash_array(yt)})
        array, done = open_output(out, record=record, shape=(n_test, self.store_.n_rows),
                                  chunks=(size, size), dtype=np.float64,
                                  n_blocks=(len(test_bounds), len(train_bounds)))
        writer = BlockWriter(array, done, test_bounds, train_bounds)
        pending = writer.pending()
        by_test: dict[int, list[int]] = {}
        for i, j in pending:
            by_test.setdefault(i, []).append(j)
        for i, js in by_test.items():
            a, b = test_bounds[i]
            lefts, d_mean = self._test_side(Xt[a:b], yt[a:b])
            for j in js:
                writer.write(self._block(lefts, d_mean, j).cpu().numpy(), i, j)
        self._load(0)
        self.n_blocks_written_ = len(pending)
        return array

    def _as_frame(self, result, X_test):
        test_index = X_test.index if is_pandas(X_test) else None
        if test_index is None and self.train_index_ is None:
            return result
        import pandas as pd

        return pd.DataFrame(result, index=test_index, columns=self.train_index_)

