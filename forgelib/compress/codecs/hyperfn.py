"""Hyper-Compression: weight pairs -> the nearest point on an ergodic winding line in a square.

Fan et al., "Hyper-Compression: Model Compression via Hyperfunction", arXiv 2409.00592. A line
of irrational slope on the torus never closes and fills the square densely (ergodic theory), so
points sampled along it at even steps form a codebook that covers the square; a pair of weights
is stored as the index of its nearest sample. Here:

* pairs are consecutive values of the flattened tensor (w[2i], w[2i+1]); decoding writes them
  back to exactly those positions;
* the square is centred on the pairs' mean with half-side h = the ``inner_fraction`` quantile of
  the pairs' max-norm distance to the centre (the paper fixes an absolute side; a quantile
  transfers across tensors of different scale);
* the codebook is the line (frac(t), frac(alpha t)), alpha = ``slope`` (irrational), sampled at
  t_i = (i + 1/2) T / n with T = sqrt(n / (1 + alpha^2)) wraps, which makes the spacing along
  the line equal to the spacing between its strands (both ~ 1/sqrt(n) of the side);
* pairs outside the square get a radial class c in 1..n_classes: the distance range (h, r_max]
  is cut into n_classes equal rings; a pair in ring c is pulled towards the centre by h / d_c
  (d_c the ring's outer radius) into the inscribed disc, quantized, and pushed back out on
  decode. The stored index is c * n + i, as in the authors' code.

Bits per weight: ceil(log2(n * (n_classes + 1))) / 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from forgelib.compress.codecs.base import Payload, base_meta, check, doc, index_bits, restore
from forgelib.compress.codecs.bitpack import pack_bits, unpack_bits
from forgelib.compress.codecs.kmeans import nearest

CITATION = "Fan et al. 2024, Hyper-Compression: Model Compression via Hyperfunction, arXiv 2409.00592"
GOLDEN = (1 + math.sqrt(5)) / 2


@dataclass(frozen=True)
class HyperFnConfig:
    n_points: int = doc("Codebook samples along the winding line.", default=1024)
    n_classes: int = doc(
        "Radial classes for pairs outside the square (0: clamp them onto the square's codebook).",
        default=3)
    inner_fraction: float = doc("Fraction of pairs inside the square (sets its side).", default=0.95)
    slope: float = doc(
        "Slope of the winding line; must be irrational in spirit (rationals close the line).",
        default=GOLDEN)

    def __post_init__(self) -> None:
        check(isinstance(self.n_points, int) and 4 <= self.n_points <= 1 << 16,
              "n_points", "an int in [4, 65536]", self.n_points)
        check(isinstance(self.n_classes, int) and 0 <= self.n_classes <= 64,
              "n_classes", "an int in [0, 64]", self.n_classes)
        check(0 < self.inner_fraction <= 1, "inner_fraction", "a float in (0, 1]", self.inner_fraction)
        check(self.slope > 0 and not float(self.slope).is_integer(), "slope", "a positive non-integer", self.slope)

    def bits_per_weight(self) -> float:
        return index_bits(self.n_points * (self.n_classes + 1)) / 2


def winding_codebook(n: int, slope: float) -> torch.Tensor:
    """n points (n, 2) in [0, 1)^2 sampled evenly along the line (frac(t), frac(slope * t))."""
    wraps = math.sqrt(n / (1 + slope * slope))
    t = (torch.arange(n, dtype=torch.float64) + 0.5) * wraps / n
    return torch.stack([torch.frac(t), torch.frac(slope * t)], dim=1).float()


def _geometry(meta: dict) -> tuple[torch.Tensor, float, torch.Tensor]:
    """(centre (2,), half-side h, codebook in weight space (n, 2))."""
    center = torch.tensor(meta["center"], dtype=torch.float32)
    h = meta["half_side"]
    return center, h, center - h + 2 * h * winding_codebook(meta["n_points"], meta["slope"])


def _ring_radii(meta: dict) -> torch.Tensor:
    """Outer radius of class 0 (h) and of every ring 1..n_classes."""
    h, c = meta["half_side"], meta["n_classes"]
    return torch.tensor([h + k * (meta["r_max"] - h) / max(c, 1) for k in range(c + 1)])


def encode(tensor: torch.Tensor, config: HyperFnConfig) -> Payload:
    flat = tensor.detach().float().reshape(-1)
    pairs = torch.cat([flat, flat.new_zeros(flat.numel() % 2)]).reshape(-1, 2)
    center = pairs.mean(dim=0)
    offset = pairs - center
    d_inf = offset.abs().amax(dim=1)
    rank = max(1, math.ceil(config.inner_fraction * d_inf.numel()))
    h = float(d_inf.kthvalue(rank).values) or 1e-12
    radius = offset.norm(dim=1)
    meta = base_meta(tensor) | {
        "n_points": config.n_points, "n_classes": config.n_classes, "slope": config.slope,
        "center": center.tolist(), "half_side": h, "r_max": max(float(radius.max()), h),
        "n_pairs": pairs.shape[0],
    }
    radii = _ring_radii(meta)
    outside = d_inf > h
    if config.n_classes:
        # smallest ring whose outer radius holds the pair; 0 for pairs inside the square
        cls = torch.searchsorted(radii[1:], radius.contiguous()).clamp_max(config.n_classes) + 1
        cls = torch.where(outside, cls, torch.zeros_like(cls))
    else:
        cls = torch.zeros(pairs.shape[0], dtype=torch.int64)
    shrink = (h / radii[cls]).float()[:, None]
    target = center + offset * shrink
    if not config.n_classes:
        target = target.clamp(center - h, center + h)
    _, _, codebook = _geometry(meta)
    index = nearest(target, codebook) + cls * config.n_points
    bits = index_bits(config.n_points * (config.n_classes + 1))
    return Payload({"indices": pack_bits(index, bits)}, meta)


def decode(payload: Payload) -> torch.Tensor:
    meta = payload.meta
    n = meta["n_points"]
    bits = index_bits(n * (meta["n_classes"] + 1))
    index = unpack_bits(payload.tensors["indices"], bits, meta["n_pairs"])
    cls, node = index // n, index % n
    center, h, codebook = _geometry(meta)
    grow = (_ring_radii(meta)[cls.clamp_max(meta["n_classes"])] / h).float()[:, None]
    pairs = center + (codebook[node] - center) * grow
    return restore(pairs.reshape(-1)[: math.prod(meta["shape"])], meta)
