"""VPTQ and HyperFn specifics: exact placement, the Hessian's effect, outliers, the codebook."""

import math

import pytest
import torch

from forgelib.compress.codecs import hyperfn, vptq
from forgelib.compress.codecs.kmeans import nearest, weighted_kmeans
from forgelib.errors import ForgeError


def test_vptq_reconstructs_a_matrix_made_of_k_distinct_vectors_exactly():
    # out=8, in=6, v=4: each column holds 2 vectors of 4 rows; only 4 distinct vectors exist,
    # with fp16-exact values, so a 4-entry codebook reproduces W bit for bit (order included).
    atoms = torch.tensor([[1, 2, 3, 4], [-1, 0, 1, 0], [0.5, 0.5, -2, 1], [3, -3, 0.25, 0]]) / 8
    g = torch.Generator().manual_seed(0)
    pick = torch.randint(0, 4, (6, 2), generator=g)
    pick[0] = torch.tensor([0, 1])
    pick[1] = torch.tensor([2, 3])  # every atom appears
    W = atoms[pick].reshape(6, 8).T.contiguous()  # column j = atoms[pick[j, 0]] ++ atoms[pick[j, 1]]
    payload = vptq.encode(W, vptq.VPTQConfig(v=4, k=4, kmeans_iters=10))
    assert payload.meta["k"] == 4
    assert vptq.decode(payload).equal(W)


def test_vptq_hessian_lowers_output_error():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(512, 64, generator=g) * torch.logspace(-1, 1, 64)  # very unequal input scales
    X = X @ (torch.eye(64) + 0.5 * torch.randn(64, 64, generator=g) / 8)  # and correlated
    H = X.T @ X / 512
    W = torch.randn(32, 64, generator=g) * 0.02
    cfg = vptq.VPTQConfig(v=2, k=16)
    out_err = [float((X @ (W - vptq.decode(vptq.encode(W, cfg, hessian=h))).T).pow(2).sum())
               for h in (None, H)]
    assert out_err[1] < 0.9 * out_err[0]  # measured ratio 0.81


def test_vptq_residual_codebook_lowers_error_and_k_is_clamped_to_the_vectors():
    g = torch.Generator().manual_seed(2)
    W = torch.randn(32, 16, generator=g)
    errs = [float((W - vptq.decode(vptq.encode(W, vptq.VPTQConfig(v=4, k=16, k_res=r)))).pow(2).sum())
            for r in (0, 16)]
    assert errs[1] < errs[0]
    small = vptq.encode(torch.randn(4, 4, generator=g), vptq.VPTQConfig(v=4, k=256))
    assert small.meta["k"] == 4


def test_vptq_rejects_bad_inputs():
    with pytest.raises(ForgeError, match="2-D"):
        vptq.encode(torch.randn(8), vptq.VPTQConfig())
    with pytest.raises(ForgeError, match="Hessian shape"):
        vptq.encode(torch.randn(8, 8), vptq.VPTQConfig(v=2, k=2), hessian=torch.eye(4))
    with pytest.raises(ForgeError, match="k_res"):
        vptq.VPTQConfig(k_res=3)


def test_weighted_kmeans_follows_the_weights():
    # Two clusters; all the weight on the right one pulls the single centroid there.
    x = torch.tensor([[0.0], [0.1], [10.0], [10.2]])
    c = weighted_kmeans(x, torch.tensor([0.0, 0.0, 1.0, 1.0]), 1, iters=3, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(c, torch.tensor([[10.1]]))


def test_winding_codebook_covers_the_square():
    for n in (64, 256, 1024):
        cb = hyperfn.winding_codebook(n, hyperfn.GOLDEN)
        assert cb.min() >= 0 and cb.max() < 1
        grid = torch.stack(torch.meshgrid(torch.linspace(0, 1, 101), torch.linspace(0, 1, 101), indexing="ij"), -1)
        grid = grid.reshape(-1, 2)
        radius = float((grid - cb[nearest(grid, cb)]).norm(dim=1).max())
        assert radius < 2 / math.sqrt(n)  # measured 1.3-1.6 / sqrt(n)


def test_hyperfn_puts_every_value_back_where_it_came_from():
    g = torch.Generator().manual_seed(3)
    w = torch.linspace(-1, 1, 300)[torch.randperm(300, generator=g)].reshape(20, 15)
    out = hyperfn.decode(hyperfn.encode(w, hyperfn.HyperFnConfig(inner_fraction=1.0)))
    # a misplaced value would be off by ~1; a correct one by about a codebook cell
    assert float((out - w).abs().max()) < 0.06


def test_hyperfn_radial_classes_keep_outliers():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 32, generator=g) * 0.02
    where = [5, 100, 2001]
    w.view(-1)[where] = torch.tensor([1.0, -0.8, 0.6])  # ~50 sigma
    with_classes = hyperfn.decode(hyperfn.encode(w, hyperfn.HyperFnConfig(n_classes=3)))
    assert torch.allclose(with_classes.view(-1)[where], w.view(-1)[where], rtol=0.1)
    clamped = hyperfn.decode(hyperfn.encode(w, hyperfn.HyperFnConfig(n_classes=0)))
    assert float((clamped.view(-1)[where] - w.view(-1)[where]).abs().min()) > 0.5


def test_hyperfn_rejects_rational_integer_slope():
    with pytest.raises(ForgeError, match="slope"):
        hyperfn.HyperFnConfig(slope=2.0)
