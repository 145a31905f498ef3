"""BitNet b1.58: ternary weights with one absmean scale per tensor.

Ma et al., "The Era of 1-bit LLMs: All Large Language Models are in 1.58 Bits", arXiv 2402.17764.
``gamma = mean|W|``; ``W_q = clamp(round(W / gamma), -1, 1)``; the decoded weight is
``gamma * W_q``. Stored as packed trits (5 per byte = 1.6 bits/weight, or 2 bits/weight) plus the
fp32 scale in the payload meta.

Ternarizing a trained model without quantization-aware training collapses it (the paper trains
from scratch; see :mod:`forgelib.compress.bitlinear` for the STE heal that recovers it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from forgelib.compress.codecs.base import Payload, base_meta, check, doc, restore
from forgelib.compress.codecs.ternary_pack import PACKINGS, pack_ternary, unpack_ternary

CITATION = "Ma et al. 2024, The Era of 1-bit LLMs (BitNet b1.58), arXiv 2402.17764"
EPS = 1e-8  # keeps an all-zero tensor from dividing by zero


@dataclass(frozen=True)
class BitNetConfig:
    packing: str = doc(
        "``trit5``: 5 trits per byte (1.6 bits/weight); ``2bit``: 4 weights per byte.",
        default="trit5")

    def __post_init__(self) -> None:
        check(self.packing in PACKINGS, "packing", f"one of {list(PACKINGS)}", self.packing)


def absmean_ternary(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(trits, gamma)``: trits in {-1, 0, 1} (same shape, float) and the absmean scale.

    A tensor that is already ternary, ``m * {-1, 0, 1}`` (the output of BitNet QAT), gets
    ``gamma = m``, so encoding it reproduces it bit for bit. Its absmean would be ``m`` times
    the fraction of non-zeros: the same trits, but a shrunken scale. Any other tensor has more
    than one non-zero magnitude and keeps the absmean.
    """
    magnitude = weight.abs()
    peak = magnitude.amax() if weight.numel() else magnitude.sum()
    already_ternary = ((magnitude == peak) | (magnitude == 0)).all()
    gamma = torch.where(already_ternary, peak, magnitude.mean()).clamp_min(EPS)
    return (weight / gamma).round().clamp(-1, 1), gamma


def encode(tensor: torch.Tensor, config: BitNetConfig) -> Payload:
    trits, gamma = absmean_ternary(tensor.detach().float())
    meta = base_meta(tensor) | {"scale": float(gamma), "packing": config.packing}
    return Payload({"trits": pack_ternary(trits, config.packing)}, meta)


def decode(payload: Payload) -> torch.Tensor:
    meta = payload.meta
    count = 1
    for dim in meta["shape"]:
        count *= dim
    trits = unpack_ternary(payload.tensors["trits"], meta["packing"], count)
    return restore(trits.float() * torch.tensor(meta["scale"], dtype=torch.float32), meta)
