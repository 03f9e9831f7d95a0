"""Seeded block projections and the factored projection of Linear layers (oracles)."""

import math

import numpy as np
import pytest
import torch

from skdvl.influence._functional import FlatModel
from skdvl.influence._projection import (
    TILE_ROWS,
    BlockProjector,
    FactoredProjector,
    factored_sizes,
)


def _mlp(seed, positions=False):
    if positions:  # one Linear applied at 3 positions per example
        module = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(),
                                     torch.nn.Flatten(), torch.nn.Linear(18, 3)).double()
    else:
        module = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(),
                                     torch.nn.Linear(7, 3)).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    return module


def _row_loss(out, y):
    return torch.nn.functional.cross_entropy(out, y, reduction="none")


@pytest.mark.parametrize("kind", ["rademacher", "sparse"])
def test_block_projection_is_the_same_for_any_chunk_of_rows_and_coordinates(kind, seed):
    g = torch.Generator().manual_seed(seed)
    d = 2 * TILE_ROWS + 300  # three tiles, the last one partial
    G = torch.randn(9, d, generator=g, dtype=torch.float64)
    proj = BlockProjector(d, 40, kind=kind, seed=seed, nnz=4)
    whole = proj.project(G)
    rows = torch.cat([proj.project(G[:4]), proj.project(G[4:])])
    cuts = [0, 100, TILE_ROWS + 7, 2 * TILE_ROWS + 1, d]  # not aligned with the tiles
    cols = sum(proj.project(G[:, a:b], start=a) for a, b in zip(cuts[:-1], cuts[1:]))
    torch.testing.assert_close(rows, whole, rtol=0, atol=0)
    torch.testing.assert_close(cols, whole, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["rademacher", "sparse"])
def test_block_projection_is_the_product_with_its_matrix(kind, seed):
    g = torch.Generator().manual_seed(seed)
    d, k = TILE_ROWS + 33, 24
    G = torch.randn(5, d, generator=g, dtype=torch.float64)
    proj = BlockProjector(d, k, kind=kind, seed=seed, nnz=3)
    P = proj.matrix()
    assert P.shape == (d, k)
    torch.testing.assert_close(proj.project(G), G @ P, rtol=1e-12, atol=1e-12)
    # the same seed regenerates the same matrix; another seed or stream does not
    torch.testing.assert_close(BlockProjector(d, k, kind=kind, seed=seed, nnz=3).matrix(), P)
    assert not torch.equal(BlockProjector(d, k, kind=kind, seed=seed + 1, nnz=3).matrix(), P)
    assert not torch.equal(BlockProjector(d, k, kind=kind, seed=seed, nnz=3,
                                          stream=1).matrix(), P)


def test_rademacher_entries_are_signs_over_root_k(seed):
    P = BlockProjector(700, 50, seed=seed).matrix()
    np.testing.assert_allclose(P.abs().numpy(), 1 / math.sqrt(50))
    assert abs(float((P > 0).double().mean()) - 0.5) < 0.02


def test_sparse_rows_have_one_sign_per_band(seed):
    k, nnz = 30, 4
    P = BlockProjector(600, k, kind="sparse", seed=seed, nnz=nnz).matrix().numpy()
    edges = (np.arange(nnz + 1) * k) // nnz
    for a, b in zip(edges[:-1], edges[1:]):
        band = P[:, a:b]
        assert ((band != 0).sum(1) == 1).all()
    np.testing.assert_allclose(np.abs(P[P != 0]), 1 / math.sqrt(nnz))


@pytest.mark.parametrize("kind", ["rademacher", "sparse"])
def test_block_projection_preserves_inner_products_within_the_jl_bound(kind, seed):
    # Johnson-Lindenstrauss for inner products of unit vectors (by polarisation):
    # P(|<Pa, Pb> - <a, b>| > eps) <= 4 exp(-(eps^2 - eps^3) k / 4) for sub-Gaussian P;
    # with k = 1024 and eps = 0.25 that is 2.4e-5 per pair, 1.2e-3 for all 50 pairs.
    rng = np.random.default_rng(seed)
    d, k, m, eps = 3000, 1024, 50, 0.25
    A = rng.normal(size=(m, d))
    B = 0.6 * A + 0.8 * rng.normal(size=(m, d))  # correlated pairs, <a, b> about 0.6
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    B /= np.linalg.norm(B, axis=1, keepdims=True)
    proj = BlockProjector(d, k, kind=kind, seed=seed, nnz=8)
    PA, PB = (proj.project(torch.from_numpy(M)).numpy() for M in (A, B))
    errors = (PA * PB).sum(1) - (A * B).sum(1)
    assert np.abs(errors).max() < eps
    # unbiased: the mean error is within 4 standard errors of 0 (sd about sqrt(1.4 / k))
    assert abs(errors.mean()) < 4 * math.sqrt(1.4 / k / m)
    norms = (PA**2).sum(1) - 1.0  # E = 0, sd <= sqrt(2 / k)
    assert abs(norms.mean()) < 4 * math.sqrt(2 / k / m) and norms.std() < 1.5 * math.sqrt(2 / k)


def _kronecker_matrix(module, proj):
    """The (p, K) matrix of the factored projection in FlatModel's parameter order."""
    flat = FlatModel(module, lambda o, t: o.sum())
    columns = []
    for i, name in enumerate(proj.layers):
        lin = module.get_submodule(name)
        out, inp = lin.out_features, lin.in_features
        p_out, p_in = proj.sides[i]
        p_out = torch.eye(out, dtype=torch.float64) if p_out is None else p_out
        p_in = torch.eye(inp + 1, dtype=torch.float64) if p_in is None else p_in
        kron = torch.kron(p_out, p_in)  # rows (o, i) of the (out, in + 1) gradient
        block = torch.zeros(flat.n_params, kron.shape[1], dtype=torch.float64)
        w = flat.names.index(f"{name}.weight")
        b = flat.names.index(f"{name}.bias")
        rows = torch.arange(out * (inp + 1)).reshape(out, inp + 1)
        block[flat.param_slices[w]] = kron[rows[:, :inp].reshape(-1)]
        block[flat.param_slices[b]] = kron[rows[:, inp]]
        columns.append(block)
    return torch.cat(columns, dim=1)


@pytest.mark.parametrize("positions", [False, True])
@pytest.mark.parametrize("proj_dim", [8, 1000])  # both sides projected / none projected
def test_factored_projection_is_the_full_gradient_times_the_kronecker_matrix(
        positions, proj_dim, seed):
    module = _mlp(seed, positions).eval()
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(8, *((3, 4) if positions else (5,)), generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (8,), generator=g)
    proj = FactoredProjector(module, proj_dim, seed=seed)
    assert all(s is not None for side in proj.sides for s in side) == (proj_dim == 8)
    flat = FlatModel(module, torch.nn.CrossEntropyLoss())
    G = flat.per_sample_grads(X, y)
    expected = G @ _kronecker_matrix(module, proj)
    got = proj.project(module, X, y, _row_loss)
    assert got.shape == (8, proj.proj_dim)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_factored_projection_gives_unbiased_inner_products(seed):
    # E[(P_out kron P_in)(P_out kron P_in)^T] = I: the mean over 300 seeds of the
    # projected inner product of two per-example gradients is within 4 standard errors
    module = _mlp(seed).eval()
    g = torch.Generator().manual_seed(seed)
    X, y = torch.randn(2, 5, generator=g, dtype=torch.float64), torch.tensor([0, 2])
    G = FlatModel(module, torch.nn.CrossEntropyLoss()).per_sample_grads(X, y)
    exact = float(G[0] @ G[1])
    values = []
    for s in range(300):
        Z = FactoredProjector(module, 16, seed=s).project(module, X, y, _row_loss)
        values.append(float(Z[0] @ Z[1]))
    values = np.array(values)
    assert abs(values.mean() - exact) < 4 * values.std() / math.sqrt(len(values))


def test_factored_sizes_pass_small_layers_unprojected():
    sizes = factored_sizes([(32, 65), (10, 33)], 2048)
    assert sizes[1] == (10, 33)  # 330 <= its share: exact
    assert sizes[0] == (32, 53) and sum(a * b for a, b in sizes) <= 2048
    small = factored_sizes([(32, 65), (10, 33)], 512)
    assert sum(a * b for a, b in small) <= 512 and all(a < 32 for a, _ in small[:1])


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="'kind' parameter of BlockProjector must be one of"):
        BlockProjector(10, 4, kind="gaussian")
    with pytest.raises(ValueError, match=r"nnz=9 must be in \[1, proj_dim=4\]"):
        BlockProjector(10, 4, kind="sparse", nnz=9)
    with pytest.raises(ValueError, match=r"Coordinates \[8, 12\) are outside \[0, 10\)"):
        BlockProjector(10, 4).project(torch.zeros(2, 4), start=8)
    conv = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.Flatten(),
                               torch.nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"Linear layers only; .*\['0.weight', '0.bias'\]"):
        FactoredProjector(conv, 16)
    frozen = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 2))
    frozen.requires_grad_(False)
    with pytest.raises(ValueError, match="at least one torch.nn.Linear layer"):
        FactoredProjector(frozen, 4)
