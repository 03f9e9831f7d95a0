"""Random projections of per-example gradients that never hold a ``d x k`` matrix.

Two kinds, both seeded and reproducible:

* :class:`BlockProjector` maps a gradient ``g`` of length ``d`` to ``P^T g`` (length
  ``k``). ``P`` is a Johnson-Lindenstrauss matrix whose rows are generated in tiles of
  :data:`TILE_ROWS` rows, tile ``t`` from the seed sequence ``(seed, stream, t)`` alone,
  so that any chunk of examples, and any slice of the gradient's coordinates, is
  projected exactly as it would be in one piece, on any machine. Dense Rademacher entries
  ``+-1/sqrt(k)`` (Achlioptas, 2003) or the sparse JL transform of Kane & Nelson (2014),
  with ``s`` non-zeros ``+-1/sqrt(s)`` per row, one in each of ``s`` bands of columns,
  applied by scatter-adds at ``O(n d s)`` cost.
* :class:`FactoredProjector` projects the gradients of ``torch.nn.Linear`` layers without
  forming them. For one example, the gradient of a layer's weight (bias appended as a
  last input column) is ``sum_t g_t a_t^T``: output gradients ``g_t`` times inputs
  ``a_t``, summed over positions ``t``. With small random matrices ``P_out`` and ``P_in``
  per layer, ``P_out^T (sum_t g_t a_t^T) P_in = sum_t (P_out^T g_t)(P_in^T a_t)^T`` is the
  full gradient projected by the Kronecker product ``P_out kron P_in`` (in the layer's
  row-major order), at the cost of projecting ``g_t`` and ``a_t`` separately (the
  low-rank gradient projection of LoGra, Choe et al., 2024). ``E[P P^T] = I`` holds for
  the Kronecker product as for its factors, so inner products are unbiased.
  :meth:`FactoredProjector.pca` takes instead the leading eigenvectors of each side's
  second moment on the training rows (LoGra's PCA initialisation): a data-dependent
  subspace that keeps the training gradients' energy.

References
----------
Achlioptas, D. (2003). Database-friendly random projections: Johnson-Lindenstrauss with
binary coins. JCSS 66(4).
Kane, D. M. and Nelson, J. (2014). Sparser Johnson-Lindenstrauss transforms. JACM 61(1).
Choe, S. K. et al. (2024). What is your data worth to GPT? LLM-scale data valuation with
influence functions. arXiv:2405.13954.
Park, S. M. et al. (2023). TRAK: Attributing model behavior at scale. ICML (random
projections of per-example gradients).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

#: Rows of the projection matrix generated from one seed (the unit of regeneration).
TILE_ROWS = 512
KINDS = ("rademacher", "sparse")


def tile_generator(seed: int, *key: int) -> np.random.Generator:
    """The generator of one tile: PCG64 seeded by ``SeedSequence(seed, spawn_key=key)``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=tuple(key)))


def rademacher_bits(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """The ``(rows, cols)`` draws of :func:`rademacher`: 1 for ``+``, 0 for ``-`` (int8)."""
    return rng.integers(0, 2, size=(rows, cols), dtype=np.int8)


def rademacher(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """A ``(rows, cols)`` matrix of independent signs ``+-1/sqrt(cols)`` (float64)."""
    signs = rademacher_bits(rng, rows, cols).astype(np.float64)
    return (2.0 * signs - 1.0) / math.sqrt(cols)


def _signed(bits: np.ndarray, cols: int, like: torch.Tensor) -> torch.Tensor:
    """:func:`rademacher`'s matrix from its bits, in ``like``'s dtype and device.

    ``+-1/sqrt(cols)`` rounded once to the dtype: the same values as casting the float64
    matrix, without forming it.
    """
    scale = torch.tensor(1.0 / math.sqrt(cols), dtype=torch.float64).to(like.dtype)
    scale = scale.to(like.device)
    # b * 2s - s is exactly +-s in floating point (2s and 2s - s are exact)
    return torch.from_numpy(bits).to(device=like.device, dtype=like.dtype).mul_(
        2 * scale).sub_(scale)


def sparse_rows(rng: np.random.Generator, rows: int, cols: int, nnz: int):
    """Columns and values of ``rows`` rows of a sparse JL matrix (Kane & Nelson, 2014).

    Row ``j`` has one non-zero ``+-1/sqrt(nnz)`` in each band ``[floor(r cols / nnz),
    floor((r + 1) cols / nnz))``, ``r < nnz``, at a uniform position: distinct columns,
    so ``E[P P^T] = I``. Returns ``(columns, values)``, both of shape ``(rows, nnz)``.
    """
    edges = (np.arange(nnz + 1) * cols) // nnz
    width = np.diff(edges)
    offsets = np.floor(rng.random((rows, nnz)) * width).astype(np.int64)
    columns = edges[:-1] + np.minimum(offsets, width - 1)
    signs = rng.integers(0, 2, size=(rows, nnz), dtype=np.int8).astype(np.float64)
    return columns, (2.0 * signs - 1.0) / math.sqrt(nnz)


class BlockProjector:
    """``G -> G @ P`` for a ``(dim, proj_dim)`` JL matrix ``P`` generated tile by tile.

    Parameters
    ----------
    dim : int
        Length ``d`` of the vectors to project (the number of parameters).
    proj_dim : int
        Length ``k`` of the projections.
    kind : {"rademacher", "sparse"}, default="rademacher"
        Dense signs ``+-1/sqrt(k)`` (one matrix product per tile), or ``nnz`` signs
        ``+-1/sqrt(nnz)`` per row (scatter-adds; cheaper when ``k >> nnz``).
    seed : int, default=0
        ``P`` is a function of ``(seed, stream, dim, proj_dim, kind, nnz)`` only.
    nnz : int, default=8
        Non-zeros per row for ``kind="sparse"`` (``<= proj_dim``).
    stream : int, default=0
        A second seed component (e.g. the model), so that one seed gives several
        independent matrices.

    Notes
    -----
    Every call regenerates the tiles it needs (``TILE_ROWS x k`` random signs each),
    on the CPU with numpy so that the matrix does not depend on the device: project
    large chunks of examples at once to amortise the generation. Nothing of size
    ``d x k`` is kept; :meth:`matrix` builds it, for tests and small problems only.

    Examples
    --------
    >>> import torch
    >>> G = torch.randn(6, 1000, dtype=torch.float64)
    >>> proj = BlockProjector(1000, 64, seed=3)
    >>> whole = proj.project(G)
    >>> parts = proj.project(G[:, :700]) + proj.project(G[:, 700:], start=700)
    >>> same_rows = torch.allclose(whole[2:4], proj.project(G[2:4]))
    >>> bool(torch.allclose(whole, parts)) and same_rows
    True
    """

    def __init__(self, dim: int, proj_dim: int, *, kind: str = "rademacher", seed: int = 0,
                 nnz: int = 8, stream: int = 0):
        if kind not in KINDS:
            raise ValueError(f"The 'kind' parameter of BlockProjector must be one of "
                             f"{list(KINDS)}. Got {kind!r} instead.")
        if kind == "sparse" and not 1 <= nnz <= proj_dim:
            raise ValueError(f"nnz={nnz} must be in [1, proj_dim={proj_dim}] for "
                             "kind='sparse'.")
        self.dim, self.proj_dim, self.kind = int(dim), int(proj_dim), kind
        self.seed, self.nnz, self.stream = int(seed), int(nnz), int(stream)

    @property
    def n_tiles(self) -> int:
        return -(-self.dim // TILE_ROWS)

    def _tile(self, t: int):
        rows = min(TILE_ROWS, self.dim - t * TILE_ROWS)
        rng = tile_generator(self.seed, self.stream, t)
        if self.kind == "rademacher":
            return rademacher_bits(rng, rows, self.proj_dim)
        return sparse_rows(rng, rows, self.proj_dim, self.nnz)

    def project(self, G: torch.Tensor, *, start: int = 0,
                out: torch.Tensor | None = None) -> torch.Tensor:
        """``G @ P[start:start + w]`` for ``G`` of shape ``(n, w)``, added to ``out``.

        ``G`` holds coordinates ``start`` to ``start + w`` of the vectors, so that slices
        of the coordinates (e.g. one layer at a time) can be projected separately and
        summed. The result has ``G``'s dtype and device.
        """
        n, w = G.shape
        if start < 0 or start + w > self.dim:
            raise ValueError(f"Coordinates [{start}, {start + w}) are outside [0, "
                             f"{self.dim}) of this projector.")
        if out is None:
            out = G.new_zeros(n, self.proj_dim)
        for t in range(start // TILE_ROWS, -(-(start + w) // TILE_ROWS)):
            lo, hi = max(start, t * TILE_ROWS), min(start + w, (t + 1) * TILE_ROWS)
            block = G[:, lo - start:hi - start]
            rows = slice(lo - t * TILE_ROWS, hi - t * TILE_ROWS)
            tile = self._tile(t)
            if self.kind == "rademacher":
                out += block @ _signed(tile[rows], self.proj_dim, G)
            else:
                cols, vals = (torch.as_tensor(a[rows], device=G.device) for a in tile)
                contrib = block.unsqueeze(2) * vals.to(G.dtype)
                out.index_add_(1, cols.reshape(-1), contrib.reshape(n, -1))
        return out

    def matrix(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The explicit ``(dim, proj_dim)`` matrix (tests and small problems only)."""
        return self.project(torch.eye(self.dim, dtype=dtype))


# ------------------------------------------------------------------ factored projection
def _trainable_linears(module: torch.nn.Module) -> list[tuple[str, torch.nn.Linear]]:
    """The Linear layers whose weight is trainable; refuse other trainable parameters."""
    layers: list[tuple[str, torch.nn.Linear]] = []
    covered: set[int] = set()
    for name, sub in module.named_modules():
        if isinstance(sub, torch.nn.Linear) and sub.weight.requires_grad:
            if sub.bias is not None and not sub.bias.requires_grad:
                raise ValueError(f"Layer {name!r} has a trainable weight but a frozen bias; "
                                 "the factored projection needs both trainable or both frozen.")
            layers.append((name, sub))
            covered.update(id(p) for p in sub.parameters())
    others = [n for n, p in module.named_parameters() if p.requires_grad and id(p) not in covered]
    if others:
        raise ValueError(
            "projection='factored' projects the gradients of torch.nn.Linear layers only; "
            f"the module has other trainable parameters: {others[:5]}"
            f"{' ...' if len(others) > 5 else ''}. Freeze them (requires_grad=False) or use "
            "projection='rademacher' or 'sparse'."
        )
    if not layers:
        raise ValueError("projection='factored' needs at least one torch.nn.Linear layer "
                         "with trainable parameters; the module has none.")
    return layers


def factored_sizes(shapes: list[tuple[int, int]], proj_dim: int) -> list[tuple[int, int]]:
    """``(k_out, k_in)`` per layer of ``(out, in)`` sizes, about ``proj_dim`` in all.

    Layers are served smallest first, each with an equal share of what is left; a side
    gets ``min(size, ceil(sqrt(share)))`` columns (the output side first, the input
    side the rest of the share), so a small layer passes unprojected (exactly) and
    returns its unused share to the larger ones.
    """
    sizes: list[tuple[int, int]] = [(0, 0)] * len(shapes)
    left = int(proj_dim)
    order = sorted(range(len(shapes)), key=lambda i: shapes[i][0] * shapes[i][1])
    for served, i in enumerate(order):
        share = max(1, left // (len(shapes) - served))
        out, inp = shapes[i]
        k_out = min(out, math.ceil(math.sqrt(share)))
        k_in = min(inp, max(1, share // k_out))
        sizes[i] = (k_out, k_in)
        left -= k_out * k_in
    return sizes


class FactoredProjector:
    """Projected per-example gradients of the Linear layers of a module, never formed.

    Parameters
    ----------
    module : torch.nn.Module
        Its trainable parameters must all belong to ``torch.nn.Linear`` layers (one
        input and output width per layer; any number of positions per example).
    proj_dim : int
        Target dimension of the projection, split over the layers by
        :func:`factored_sizes`; a side whose share covers its size is not projected.
    seed : int, default=0
    stream : int, default=0
        A second seed component (e.g. the model).

    Attributes
    ----------
    layers : list of str
        The projected layers, in module order.
    sizes : list of (int, int)
        ``(k_out, k_in)`` per layer; the features of a layer are the row-major
        ``(k_out, k_in)`` matrix ``P_out^T G P_in``.
    sides : list of (Tensor or None, Tensor or None)
        ``P_out`` of shape ``(out, k_out)`` and ``P_in`` of shape ``(in + bias, k_in)``
        per layer (Rademacher, ``+-1/sqrt(k)``; orthonormal eigenvectors for
        :meth:`pca`), None for a side left unprojected.
    kind : {"rademacher", "pca"}
        How the sides were drawn.
    """

    def __init__(self, module: torch.nn.Module, proj_dim: int, *, seed: int = 0,
                 stream: int = 0):
        shapes = self._set_layers(module)
        self.kind = "rademacher"
        self.sizes = factored_sizes(shapes, proj_dim)
        self.sides = []
        for i, ((out, inp), (k_out, k_in)) in enumerate(zip(shapes, self.sizes)):
            p_out = (None if k_out == out
                     else torch.from_numpy(rademacher(tile_generator(seed, stream, i, 0),
                                                      out, k_out)))
            p_in = (None if k_in == inp
                    else torch.from_numpy(rademacher(tile_generator(seed, stream, i, 1),
                                                     inp, k_in)))
            self.sides.append((p_out, p_in))

    def _set_layers(self, module: torch.nn.Module) -> list[tuple[int, int]]:
        """Set ``layers`` and ``bias``; return the ``(out, in + bias)`` size of each layer."""
        linears = _trainable_linears(module)
        self.layers = [name for name, _ in linears]
        self.bias = [lin.bias is not None for _, lin in linears]
        return [(lin.out_features, lin.in_features + b) for (_, lin), b in
                zip(linears, self.bias)]

    @classmethod
    def pca(cls, module: torch.nn.Module, proj_dim: int, X: torch.Tensor, y: torch.Tensor,
            row_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], batch_size: int,
            sizes: list[tuple[int, int]] | None = None) -> FactoredProjector:
        """The factored projection onto the top eigenvectors of each side's second moment.

        LoGra's PCA initialisation (Choe et al., 2024, Section 3.2): per layer, ``P_out``
        holds the leading eigenvectors of ``sum_{i,t} g_it g_it^T`` (the output
        gradients of ``row_fn`` on the rows ``X``, ``y``, the backward factor of K-FAC)
        and ``P_in`` those of ``sum_{i,t} a_it a_it^T`` (the inputs, bias appended: the
        forward factor), so that the projected gradients keep the directions where the
        training gradients have their energy. Both sides are orthonormal, so the
        projection is a restriction to a subspace (``P^T P = I``), not an unbiased
        sketch (``E[P P^T] = I`` does not hold). ``sizes``: the ``(k_out, k_in)`` of each
        layer, else :func:`pca_sizes` of the spectra (given by the first model, so that
        several models share one dimension). A side of full size is left unprojected.
        """
        self = cls.__new__(cls)
        shapes = self._set_layers(module)
        self.kind = "pca"
        moments = [(torch.zeros(o, o, dtype=torch.float64), torch.zeros(i, i, dtype=torch.float64))
                   for o, i in shapes]
        for start in range(0, len(X), batch_size):
            sl = slice(start, start + batch_size)
            for (S, A), (g, a) in zip(moments, self._signals(module, X[sl], y[sl], row_fn)):
                g = g.reshape(-1, g.shape[-1]).to(torch.float64).cpu()
                a = a.reshape(-1, a.shape[-1]).to(torch.float64).cpu()
                S += g.T @ g
                A += a.T @ a
        bases = []
        for S, A in moments:
            (e_out, v_out), (e_in, v_in) = torch.linalg.eigh(S), torch.linalg.eigh(A)
            bases.append(((e_out.flip(0), v_out.flip(1)), (e_in.flip(0), v_in.flip(1))))
        self.sizes = (pca_sizes([(eo, ei) for (eo, _), (ei, _) in bases], proj_dim)
                      if sizes is None else [(int(a), int(b)) for a, b in sizes])
        self.sides = []
        for ((e_out, v_out), (e_in, v_in)), (k_out, k_in) in zip(bases, self.sizes):
            self.sides.append((None if k_out == len(e_out) else _leading(v_out, k_out),
                               None if k_in == len(e_in) else _leading(v_in, k_in)))
        return self

    @property
    def proj_dim(self) -> int:
        """The actual dimension of the projections (the sum over layers)."""
        return sum(a * b for a, b in self.sizes)

    def project(self, module: torch.nn.Module, X: torch.Tensor, y: torch.Tensor,
                row_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Projected gradients of ``row_fn(module(X), y)[i]``, shape ``(n, proj_dim)``.

        ``module`` has the architecture this projector was built on (its current
        parameters are differentiated). ``row_fn`` returns one value per row, and rows
        must not interact in the module (eval mode: no batch statistics).
        """
        parts = [torch.einsum("nto,nti->noi", g, a).reshape(len(g), -1)
                 for g, a in self.factors(module, X, y, row_fn)]
        return torch.cat(parts, dim=1)

    def factors(self, module: torch.nn.Module, X: torch.Tensor, y: torch.Tensor,
                row_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> list:
        """Per layer ``(P_out^T g, P_in^T a)`` of shapes ``(n, t, k_out)`` and ``(n, t, k_in)``.

        ``g``: the gradients of ``row_fn``'s rows with respect to the layer's outputs at
        its ``t`` positions; ``a``: its inputs, bias column appended. A row's projected
        gradient is ``sum_t`` of their outer products (:meth:`project`).
        """
        out = []
        for (p_out, p_in), (g, a) in zip(self.sides, self._signals(module, X, y, row_fn)):
            if p_out is not None:
                g = g @ p_out.to(dtype=g.dtype, device=g.device)
            if p_in is not None:
                a = a @ p_in.to(dtype=a.dtype, device=a.device)
            out.append((g, a))
        return out

    def _signals(self, module: torch.nn.Module, X: torch.Tensor, y: torch.Tensor,
                 row_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> list:
        """Per layer the unprojected output gradients ``(n, t, out)`` and inputs
        ``(n, t, in + bias)`` (one forward and one backward pass)."""
        inputs: dict[str, list] = {name: [] for name in self.layers}
        outputs: dict[str, list] = {name: [] for name in self.layers}

        def keep(name):
            def hook(_, args, out):
                inputs[name].append(args[0].detach())
                outputs[name].append(out)
            return hook

        handles = [module.get_submodule(name).register_forward_hook(keep(name))
                   for name in self.layers]
        try:
            with torch.enable_grad():
                values = row_fn(module(X), y)
                flat = [o for name in self.layers for o in outputs[name]]
                grads = iter(torch.autograd.grad(values.sum(), flat, allow_unused=True))
        finally:
            for h in handles:
                h.remove()
        n, signals = len(X), []
        for i, name in enumerate(self.layers):
            a = torch.cat([t.reshape(n, -1, t.shape[-1]) for t in inputs[name]], dim=1)
            g = torch.cat([_zeros_if_none(next(grads), o).reshape(n, -1, o.shape[-1])
                           for o in outputs[name]], dim=1)
            if self.bias[i]:
                a = torch.cat([a, a.new_ones(*a.shape[:2], 1)], dim=2)
            signals.append((g.detach(), a))
        return signals


def pca_sizes(spectra: list[tuple[torch.Tensor, torch.Tensor]],
              proj_dim: int) -> list[tuple[int, int]]:
    """``(k_out, k_in)`` per layer for :meth:`FactoredProjector.pca`, about ``proj_dim`` in all.

    ``spectra``: per layer the eigenvalues (descending) of the output and input second
    moments. Layers are served as in :func:`factored_sizes` (smallest first, an equal
    share of what is left); within its share a layer takes the rectangle ``k_out x
    k_in <= share`` that keeps the largest share of the trace of the Kronecker moment
    ``S kron A``, ``f_out(k_out) f_in(k_in)`` with ``f(k)`` the share of a side's trace in
    its top ``k`` eigenvalues (the smallest such rectangle on ties), so that directions
    without energy (e.g. the constant direction of softmax output gradients) are
    dropped and a side that is nearly all needed is kept whole.
    """
    sizes: list[tuple[int, int]] = [(0, 0)] * len(spectra)
    left = int(proj_dim)
    order = sorted(range(len(spectra)), key=lambda i: len(spectra[i][0]) * len(spectra[i][1]))
    for served, i in enumerate(order):
        share = max(1, left // (len(spectra) - served))
        f_out, f_in = (_trace_shares(e) for e in spectra[i])
        k_out = np.arange(1, min(len(f_out), share) + 1)
        k_in = np.minimum(len(f_in), share // k_out)
        kept = f_out[k_out - 1] * f_in[k_in - 1]
        best = np.flatnonzero(kept >= kept.max())
        j = best[np.argmin((k_out * k_in)[best])]
        sizes[i] = (int(k_out[j]), int(k_in[j]))
        left -= sizes[i][0] * sizes[i][1]
    return sizes


def _leading(vectors: torch.Tensor, k: int) -> torch.Tensor:
    """The first ``k`` columns, copied with row-major strides (eigh's are column-major)."""
    return torch.empty(len(vectors), k, dtype=vectors.dtype).copy_(vectors[:, :k])


def _trace_shares(evals: torch.Tensor) -> np.ndarray:
    """``f(k)``: the share of the trace in the ``k`` largest eigenvalues (1 for a zero side)."""
    e = evals.clamp_min(0).to(torch.float64).numpy()
    total = e.sum()
    if total <= 0:
        return np.ones(len(e))
    return np.minimum(np.cumsum(e) / total, 1.0)


def _zeros_if_none(grad: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if grad is None else grad
