"""Weighted k-means (Lloyd) and nearest-centroid search, for vector quantization.

VPTQ (arXiv 2409.17066) weights each vector's squared error by the Hessian diagonal of its
column, so the codebook spends its points where the layer output is most sensitive. The
initialisation samples k distinct vectors with probability proportional to their weight (a
seeded, one-pass stand-in for k-means++); an emptied cluster is re-seeded with the vector that
currently has the largest weighted error, so no codebook entry is wasted.
"""

from __future__ import annotations

import torch

_CHUNK = 1 << 14  # vectors per distance block: bounds the (chunk x k) scratch


def nearest(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid (squared Euclidean) for each row of ``x``: int64 (N,)."""
    c_sq = (centroids * centroids).sum(dim=1)
    out = torch.empty(x.shape[0], dtype=torch.int64)
    for start in range(0, x.shape[0], _CHUNK):
        block = x[start : start + _CHUNK]
        out[start : start + _CHUNK] = (c_sq - 2 * block @ centroids.T).argmin(dim=1)
    return out


def weighted_kmeans(
    x: torch.Tensor, weights: torch.Tensor, k: int, *, iters: int, generator: torch.Generator
) -> torch.Tensor:
    """Centroids (k, v) minimising ``sum_i weights_i * ||x_i - c(x_i)||^2``. Needs ``k <= len(x)``."""
    probs = weights.double().clamp_min(0) + 1e-12  # all-zero weights fall back to uniform
    centroids = x[torch.multinomial(probs, k, replacement=False, generator=generator)].clone()
    w = weights.to(x.dtype).clamp_min(0)[:, None]
    for _ in range(iters):
        assign = nearest(x, centroids)
        mass = torch.zeros(k, dtype=x.dtype).index_add_(0, assign, w[:, 0])
        sums = torch.zeros_like(centroids).index_add_(0, assign, x * w)
        filled = mass > 0
        centroids[filled] = sums[filled] / mass[filled, None]
        empty = (~filled).nonzero().flatten()
        if empty.numel():
            err = ((x - centroids[assign]) ** 2).sum(dim=1) * w[:, 0]
            centroids[empty] = x[err.topk(empty.numel()).indices]
    return centroids
