"""GPTQ: uniform b-bit quantization with one scale and zero point per group of input columns,
and Hessian-driven error feedback.

Frantar et al., "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers", arXiv 2210.17323. Each row of W (out, in) is cut into groups of ``group_size``
consecutive input columns; a group gets an asymmetric min-max grid of 2^bits levels,
``w ~ scale * (q - zero)`` with ``q, zero`` in ``[0, 2^bits - 1]``. As in the paper's grouped
variant, a group's grid is fixed when the error feedback reaches its first column, from the
weights as updated by the feedback so far, and the columns are then rounded one by one with the
error fed forward (:mod:`forgelib.compress.codecs.feedback`). Without a Hessian this is plain
group-wise round-to-nearest, the usual 4-bit baseline (and what GGUF's Q4_1 stores).

Bits per weight: ``bits + (16 + bits) / group_size`` (an fp16 scale and a packed zero point per
group). Left out of the paper: activation reordering ("act-order"), which would need a stored
column permutation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from forgelib.compress.codecs import feedback
from forgelib.compress.codecs.base import Payload, base_meta, check, doc, restore
from forgelib.compress.codecs.bitpack import pack_bits, unpack_bits
from forgelib.errors import ForgeError

CITATION = "Frantar et al. 2022, GPTQ: Accurate Post-Training Quantization for GPTs, arXiv 2210.17323"


@dataclass(frozen=True)
class GPTQConfig:
    bits: int = doc("Bits per quantized weight: 2^bits levels per group.", default=4)
    group_size: int = doc("Consecutive input columns sharing one scale and zero point.", default=64)
    block_size: int = doc(
        "Columns per error-feedback block (rounded up to a multiple of group_size).", default=128)
    damp: float = doc(
        "Added to the Hessian diagonal, as a fraction of its mean, so the Cholesky factor exists.",
        default=0.01)

    def __post_init__(self) -> None:
        check(isinstance(self.bits, int) and 1 <= self.bits <= 8, "bits", "an int in [1, 8]", self.bits)
        check(isinstance(self.group_size, int) and self.group_size >= 1, "group_size", "an int >= 1", self.group_size)
        check(isinstance(self.block_size, int) and self.block_size >= 1, "block_size", "an int >= 1", self.block_size)
        check(0 <= self.damp < 1, "damp", "a float in [0, 1)", self.damp)

    def bits_per_weight(self) -> float:
        return self.bits + (16 + self.bits) / self.group_size


def _grid(block: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero) per row for the columns in ``block``; the scale is rounded to fp16 first,
    so the stored scale is the one used. A constant row gets a grid that holds its value."""
    lo = block.min(dim=1).values.clamp(max=0)
    hi = block.max(dim=1).values.clamp(min=0)
    scale = ((hi - lo) / levels).to(torch.float16).float()
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero = (-lo / scale).round().clamp(0, levels)
    return scale, zero


def encode(tensor: torch.Tensor, config: GPTQConfig, *, hessian: torch.Tensor | None = None) -> Payload:
    if tensor.dim() != 2:
        raise ForgeError(f"gptq quantizes 2-D weights, got shape {list(tensor.shape)}; use another codec")
    out_f, in_f = tensor.shape
    W = tensor.detach().float().clone()
    H = feedback.prepare(W, hessian, what="gptq")
    g, levels = config.group_size, (1 << config.bits) - 1
    n_groups = math.ceil(in_f / g)
    scales = torch.ones(out_f, n_groups)
    zeros = torch.zeros(out_f, n_groups)
    codes = torch.zeros(out_f, in_f, dtype=torch.int64)

    def quantize(j: int, col: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
        if j % g == 0:  # a new group: its grid comes from the weights as updated so far
            scales[:, j // g], zeros[:, j // g] = _grid(block[:, :g], levels)
        scale, zero = scales[:, j // g], zeros[:, j // g]
        q = (col / scale).round().add(zero).clamp(0, levels)
        codes[:, j] = q.to(torch.int64)
        return (q - zero) * scale

    block_size = g * math.ceil(config.block_size / g)  # a group never straddles two blocks
    feedback.quantize_columns(W, feedback.inverse_cholesky(H, config.damp), block_size, quantize)
    meta = base_meta(tensor) | {"bits": config.bits, "group_size": g}
    return Payload({"codes": pack_bits(codes, config.bits), "scale": scales.to(torch.float16),
                    "zero": pack_bits(zeros.to(torch.int64), config.bits)}, meta)


def decode(payload: Payload) -> torch.Tensor:
    meta, t = payload.meta, payload.tensors
    out_f, in_f = meta["shape"]
    bits, g = meta["bits"], meta["group_size"]
    n_groups = math.ceil(in_f / g)
    codes = unpack_bits(t["codes"], bits, out_f * in_f).reshape(out_f, in_f).float()
    zero = unpack_bits(t["zero"], bits, out_f * n_groups).reshape(out_f, n_groups).float()
    column_group = torch.arange(in_f) // g
    W = (codes - zero[:, column_group]) * t["scale"].float()[:, column_group]
    return restore(W, meta)
