"""TwoNN intrinsic dimension on data of known dimension, and the grokking-stage rule."""

from __future__ import annotations

import pytest
import torch

from forgelib.train.geometry import classify_grokking_stage, relative_slope, twonn_dimension


def subspace(d: int, ambient: int, n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(ambient, d, generator=gen, dtype=torch.float64))
    return torch.randn(n, d, generator=gen, dtype=torch.float64) @ basis.T


@pytest.mark.parametrize("d", [2, 5, 10])
def test_twonn_recovers_linear_subspace_dimension(d):
    estimate = twonn_dimension(subspace(d, 50, 2000))
    assert abs(estimate - d) / d < 0.15, estimate


def test_twonn_on_a_curved_manifold():
    # a 2-D swiss-roll-like sheet embedded nonlinearly in 3-D
    gen = torch.Generator().manual_seed(0)
    u, v = torch.rand(2000, generator=gen) * 3 * torch.pi, torch.rand(2000, generator=gen) * 5
    points = torch.stack([u * torch.cos(u), v, u * torch.sin(u)], dim=1)
    assert abs(twonn_dimension(points) - 2) < 0.3


def test_twonn_drops_duplicate_points():
    points = subspace(3, 20, 500, seed=1)
    doubled = torch.cat([points, points[:200]])
    assert twonn_dimension(doubled) == pytest.approx(twonn_dimension(points), rel=1e-9)


def test_twonn_needs_three_distinct_points():
    with pytest.raises(ValueError):
        twonn_dimension(torch.ones(10, 4))


def test_relative_slope():
    assert relative_slope([10.0, 9.0, 8.0]) == pytest.approx(-1 / 9)
    assert relative_slope([4.0]) == 0.0


@pytest.mark.parametrize("ids, train_acc, val_acc, stage", [
    ([8.0, 9.0, 10.0], 1.0, 0.05, "pre-grok"),       # memorised, ID rising
    ([10.0, 9.0, 8.0], 1.0, 0.05, "onset"),          # memorised, ID starts falling
    ([10.0, 9.0, 8.0], 0.95, 0.8, "active"),         # gap closing, val rising
    ([6.0, 6.0, 6.0], 1.0, 0.97, "consolidation"),   # generalised
    ([5.0, 5.0], 0.1, 0.05, "pre-grok"),             # nothing learned yet
])
def test_grokking_stage_rule(ids, train_acc, val_acc, stage):
    assert classify_grokking_stage(ids, train_acc=train_acc, val_acc=val_acc) == stage
