"""VPTQ: Hessian-weighted vector quantization with GPTQ error feedback and a residual codebook.

Liu et al., "VPTQ: Extreme Low-bit Vector Post-Training Quantization for LLMs", arXiv 2409.17066.
A weight W (out, in) is cut into vectors of v consecutive rows within one column, so each vector
belongs to one input channel j and its error is weighted by H_jj (H = X^T X of the layer's
calibration inputs). Steps, following the paper:

1. k-means over all vectors weighted by H_jj -> main codebook (k entries);
2. k-means over the residuals (also weighted) -> residual codebook (k_res entries, optional);
3. channel-independent GPTQ: columns are quantized left to right in blocks, each column's error
   divided by the Cholesky factor of H^-1 is fed back into the not-yet-quantized columns.

Bits per weight: log2(k)/v + log2(k_res)/v, plus the codebooks (counted in the payload bytes).
Without a Hessian, H = I: uniform weights and no error feedback (nothing to feed back into).

Left out of the paper: outlier channels, layer-wise codebook fine-tuning and codebooks shared
across layers. The codebooks may be stored in int8 (one scale each) instead of fp16: the tiny
default models have tensors so small that fp16 codebooks dominate their size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from forgelib.compress.codecs.base import Payload, base_meta, check, doc, is_power_of_two, restore
from forgelib.compress.codecs import feedback
from forgelib.compress.codecs.bitpack import pack_bits, unpack_bits
from forgelib.compress.codecs.kmeans import nearest, weighted_kmeans
from forgelib.errors import ForgeError

CITATION = "Liu et al. 2024, VPTQ: Extreme Low-bit Vector Post-Training Quantization, arXiv 2409.17066"


@dataclass(frozen=True)
class VPTQConfig:
    v: int = doc("Vector length (consecutive rows of one column).", default=8)
    k: int = doc("Main codebook size (power of two); log2(k)/v bits per weight.", default=256)
    k_res: int = doc(
        "Residual codebook size (power of two), 0 for none; adds log2(k_res)/v bits per weight.",
        default=0)
    kmeans_iters: int = doc("Lloyd iterations per codebook.", default=20)
    block_size: int = doc(
        "Columns per GPTQ block (error feedback within a block is exact, across blocks lazy).",
        default=64)
    damp: float = doc(
        "Added to the Hessian diagonal, as a fraction of its mean, so the Cholesky factor exists.",
        default=0.01)
    codebook_bits: int = doc("Codebook storage: 16 (fp16) or 8 (int8 with one fp32 scale per codebook).", default=16)
    seed: int = doc("Seeds the k-means initialisation.", default=0)

    def __post_init__(self) -> None:
        check(isinstance(self.v, int) and 1 <= self.v <= 64, "v", "an int in [1, 64]", self.v)
        check(is_power_of_two(self.k) and self.k >= 2, "k", "a power of two >= 2", self.k)
        check(self.k_res == 0 or (is_power_of_two(self.k_res) and self.k_res >= 2),
              "k_res", "0 or a power of two >= 2", self.k_res)
        check(isinstance(self.kmeans_iters, int) and self.kmeans_iters >= 1, "kmeans_iters", "an int >= 1", self.kmeans_iters)
        check(isinstance(self.block_size, int) and self.block_size >= 1, "block_size", "an int >= 1", self.block_size)
        check(0 <= self.damp < 1, "damp", "a float in [0, 1)", self.damp)
        check(self.codebook_bits in (8, 16), "codebook_bits", "8 or 16", self.codebook_bits)

    def bits_per_weight(self) -> float:
        return (math.log2(self.k) + (math.log2(self.k_res) if self.k_res else 0)) / self.v


def _store_codebook(centroids: torch.Tensor, bits: int) -> tuple[torch.Tensor, float, torch.Tensor]:
    """(stored tensor, scale, the dequantized codebook the encoder must then use)."""
    if bits == 16:
        stored = centroids.to(torch.float16)
        return stored, 1.0, stored.float()
    scale = float(centroids.abs().max()) / 127 or 1.0
    stored = (centroids / scale).round().clamp(-127, 127).to(torch.int8)
    return stored, scale, stored.float() * scale


def _fit_k(k: int, n_vectors: int) -> int:
    """A codebook cannot have more entries than vectors: the largest power of two that fits."""
    return min(k, 1 << int(math.log2(n_vectors)))


def encode(tensor: torch.Tensor, config: VPTQConfig, *, hessian: torch.Tensor | None = None) -> Payload:
    if tensor.dim() != 2:
        raise ForgeError(f"vptq quantizes 2-D weights, got shape {list(tensor.shape)}; use another codec")
    out_f, in_f = tensor.shape
    v = config.v
    W = tensor.detach().float().clone()
    W = torch.cat([W, W.new_zeros((-out_f) % v, in_f)])  # pad rows to a multiple of v
    rows = W.shape[0] // v
    H = feedback.prepare(W, hessian, what="vptq")
    vec_weight = H.diagonal().clone()

    gen = torch.Generator().manual_seed(config.seed)
    vectors = W.T.reshape(in_f * rows, v)  # vector (j, r) = W[r*v:(r+1)*v, j]
    weights = vec_weight.repeat_interleave(rows)
    k = _fit_k(config.k, vectors.shape[0])
    main_store, main_scale, main = _store_codebook(
        weighted_kmeans(vectors, weights, k, iters=config.kmeans_iters, generator=gen), config.codebook_bits)
    k_res = _fit_k(config.k_res, vectors.shape[0]) if config.k_res else 0
    if k_res:
        resid = vectors - main[nearest(vectors, main)]
        res_store, res_scale, res = _store_codebook(
            weighted_kmeans(resid, weights, k_res, iters=config.kmeans_iters, generator=gen), config.codebook_bits)

    idx = torch.zeros(in_f, rows, dtype=torch.int64)
    idx_res = torch.zeros(in_f, rows, dtype=torch.int64)

    def quantize(j: int, column: torch.Tensor, _block: torch.Tensor) -> torch.Tensor:
        col = column.reshape(rows, v)
        idx[j] = nearest(col, main)
        q = main[idx[j]]
        if k_res:
            idx_res[j] = nearest(col - q, res)
            q = q + res[idx_res[j]]
        return q.reshape(-1)

    feedback.quantize_columns(W, feedback.inverse_cholesky(H, config.damp), config.block_size, quantize)

    meta = base_meta(tensor) | {"v": v, "rows": rows, "k": k, "k_res": k_res, "main_scale": main_scale}
    tensors = {"codebook": main_store, "indices": pack_bits(idx, int(math.log2(k)))}
    if k_res:
        meta["res_scale"] = res_scale
        tensors |= {"res_codebook": res_store, "res_indices": pack_bits(idx_res, int(math.log2(k_res)))}
    return Payload(tensors, meta)


def decode(payload: Payload) -> torch.Tensor:
    meta, t = payload.meta, payload.tensors
    v, rows = meta["v"], meta["rows"]
    out_f, in_f = meta["shape"]
    n = in_f * rows
    vectors = (t["codebook"].float() * meta["main_scale"])[unpack_bits(t["indices"], int(math.log2(meta["k"])), n)]
    if meta["k_res"]:
        res = t["res_codebook"].float() * meta["res_scale"]
        vectors = vectors + res[unpack_bits(t["res_indices"], int(math.log2(meta["k_res"])), n)]
    W = vectors.reshape(in_f, rows * v).T  # undo the (column, row-block) vector order
    return restore(W[:out_f].contiguous(), meta)
