"""SeedLM: each block of C weights becomes an LFSR seed plus P 4-bit coefficients.

Shafipour et al., "SeedLM: Compressing LLM Weights into Seeds of Pseudo-Random Generators",
arXiv 2410.10714. For a block ``w`` (C values) and a seed ``s``, the LFSR's next C*P states
(row-major) form ``V(s)``, normalised to ``U(s) = (V(s) - 2^(K-1)) / 2^(K-1)`` in (-1, 1). The
coefficients ``t = pinv(U) w`` are quantized to 4-bit integers ``q`` in [-8, 7] with one shared
exponent per block (``t ~ q * 2^e``), and the seed with the least reconstruction error
``||w - U q 2^e||`` is kept. Cost: (seed bits + 4 + 4P) / C bits per weight.

Search: the pseudo-inverses ``pinv(U)`` and Gram matrices ``G = U^T U`` are computed once per
(C, P, K, seeds) and cached; two GEMMs give ``t = pinv(U) w`` and ``U^T w`` for a chunk of blocks
against a chunk of seeds, and the error is evaluated in the P-dim coefficient space
(``||w - U q||^2 = ||w||^2 - 2 q.U^T w + q^T G q``), about 2*C*P + P^2 operations per
(block, seed).

Deviations, both documented trade-offs: ``max_seeds`` searches seeds 1..max_seeds instead of all
2^K - 1 (the full search is ~16x slower at K=16 and buys little SNR, see bench/compress.py) and
stores each seed in ceil(log2(max_seeds)) bits; with max_seeds = 2^K - 1 this is the paper's
K bits. The 4-bit exponent is an offset below a per-tensor top exponent ``exp_max`` kept in meta
(the paper does not say how its exponent range is anchored).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from forgelib.compress.codecs.base import Payload, base_meta, check, doc, index_bits, restore
from forgelib.compress.codecs.bitpack import pack_bits, unpack_bits
from forgelib.compress.codecs.lfsr import MAXIMAL_TAPS, lfsr_states

CITATION = "Shafipour et al. 2024, SeedLM, arXiv 2410.10714"
EXP_LEVELS = 16  # 4-bit shared exponent
Q_MIN, Q_MAX = -8, 7  # 4-bit two's complement coefficients


@dataclass(frozen=True)
class SeedLMConfig:
    C: int = doc(
        "Block length (weights per seed). Paper operating points: C=8,P=3 (4 b/w); C=12,P=4 (3 b/w).",
        default=8)
    P: int = doc("Coefficients per block (columns of the random basis).", default=3)
    K: int = doc("LFSR width in bits; taps from ``lfsr.MAXIMAL_TAPS``.", default=16)
    max_seeds: int = doc(
        "Seeds searched (1..max_seeds, at most 2^K - 1). Fewer seeds: faster and fewer seed bits, "
        "more error. 4096 keeps the default CPU-fast; 65535 (K=16) is the paper's full search.",
        default=4096)

    def __post_init__(self) -> None:
        check(isinstance(self.C, int) and 2 <= self.C <= 64, "C", "an int in [2, 64]", self.C)
        check(isinstance(self.P, int) and 1 <= self.P <= self.C, "P", f"an int in [1, C={self.C}]", self.P)
        check(self.K in MAXIMAL_TAPS, "K", f"one of {sorted(MAXIMAL_TAPS)}", self.K)
        top = (1 << self.K) - 1
        check(
            isinstance(self.max_seeds, int) and 2 <= self.max_seeds <= top,
            "max_seeds", f"an int in [2, 2^K - 1 = {top}]", self.max_seeds,
        )

    def bits_per_weight(self) -> float:
        return (index_bits(self.max_seeds) + 4 + 4 * self.P) / self.C


def basis_from_states(states: torch.Tensor, C: int, P: int, K: int) -> torch.Tensor:
    """LFSR states (n, C*P) -> bases U (n, C, P) in (-1, 1), filled row-major."""
    half = float(1 << (K - 1))
    return ((states.to(torch.float64) - half) / half).to(torch.float32).reshape(-1, C, P)


@functools.lru_cache(maxsize=4)
def seed_basis(C: int, P: int, K: int, n_seeds: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(U, pinv, gram)`` for seeds 1..n_seeds: shapes (S, C, P), (S, P, C), (S, P, P)."""
    seeds = torch.arange(1, n_seeds + 1, dtype=torch.int64)
    U = basis_from_states(lfsr_states(seeds, K, C * P), C, P, K).double()
    return U.float(), torch.linalg.pinv(U).float(), (U.transpose(1, 2) @ U).float()


def _quantize(t: torch.Tensor, exp_lo: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Coefficients -> (q int in [-8, 7], exponent e) with t ~ q * 2^e, sharing e along ``dim``."""
    amax = t.abs().amax(dim=dim, keepdim=True)
    e = torch.ceil(torch.log2(amax.clamp_min(1e-30) / Q_MAX)).clamp(exp_lo, exp_lo + EXP_LEVELS - 1)
    return (t / torch.exp2(e)).round().clamp(Q_MIN, Q_MAX), e


def search(blocks: torch.Tensor, config: SeedLMConfig, exp_lo: int,
           seed_chunk: int = 1024, block_chunk: int = 128) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best ``(seed_index, q, e)`` per block: shapes (N,), (N, P), (N,). seed = seed_index + 1.

    Seed-major layout (seeds, P, blocks): both products with the blocks are plain GEMMs and every
    later step is elementwise over contiguous (seeds, blocks) slices.
    """
    U, pinv, gram = seed_basis(config.C, config.P, config.K, config.max_seeds)
    S, C, P = U.shape
    N = blocks.shape[0]
    best_err = torch.full((N,), math.inf)
    best_seed = torch.zeros(N, dtype=torch.int64)
    best_q = torch.zeros(N, P)
    best_e = torch.zeros(N)
    pairs = [(p, r) for p in range(P) for r in range(p, P)]  # upper triangle of the Gram matrix
    for s0 in range(0, S, seed_chunk):
        s1 = min(s0 + seed_chunk, S)
        pinv_rows, U_rows = pinv[s0:s1].reshape(-1, C), U[s0:s1].transpose(1, 2).reshape(-1, C)
        G = gram[s0:s1]
        for n0 in range(0, N, block_chunk):
            wT = blocks[n0 : n0 + block_chunk].T  # (C, n)
            t = (pinv_rows @ wT).reshape(s1 - s0, P, -1)  # (s, P, n) least-squares coefficients
            Utw = (U_rows @ wT).reshape(s1 - s0, P, -1)
            q, e = _quantize(t, exp_lo, dim=1)
            qs = q * torch.exp2(e)
            # ||w - U qs||^2 - ||w||^2 = qs^T G qs - 2 qs . U^T w  (the ||w||^2 term is per block)
            err = -2 * (qs * Utw).sum(dim=1)
            for p, r in pairs:
                err += (1.0 if p == r else 2.0) * G[:, p, r, None] * qs[:, p] * qs[:, r]
            err_min, arg = err.min(dim=0)  # best seed of this chunk, per block
            idx = slice(n0, n0 + wT.shape[1])
            better = err_min < best_err[idx]
            cols = torch.arange(wT.shape[1])
            best_err[idx] = torch.where(better, err_min, best_err[idx])
            best_seed[idx] = torch.where(better, arg + s0, best_seed[idx])
            best_q[idx] = torch.where(better[:, None], q[arg, :, cols], best_q[idx])
            best_e[idx] = torch.where(better, e[arg, 0, cols], best_e[idx])
    return best_seed, best_q, best_e


def encode(tensor: torch.Tensor, config: SeedLMConfig) -> Payload:
    flat = tensor.detach().float().reshape(-1)
    blocks = torch.cat([flat, flat.new_zeros((-flat.numel()) % config.C)]).reshape(-1, config.C)
    amax = float(flat.abs().max()) if flat.numel() else 0.0
    # Top exponent: coefficients up to ~4x the largest weight fit unclipped (well-conditioned
    # seeds give |t| of the order of |w|); 16 levels then reach 2^-15 of that, far below noise.
    exp_max = math.ceil(math.log2(max(amax, 1e-30) * 4 / Q_MAX))
    exp_lo = exp_max - EXP_LEVELS + 1
    seed_index, q, e = search(blocks, config, exp_lo)
    seed_bits = index_bits(config.max_seeds)
    meta = base_meta(tensor) | {
        "C": config.C, "P": config.P, "K": config.K, "seed_bits": seed_bits,
        "exp_max": exp_max, "n_blocks": blocks.shape[0],
    }
    tensors = {
        "seeds": pack_bits(seed_index, seed_bits),
        "exponents": pack_bits(e.to(torch.int64) - exp_lo, 4),
        "coefficients": pack_bits(q.to(torch.int64) - Q_MIN, 4),
    }
    return Payload(tensors, meta)


def decode(payload: Payload, block_chunk: int = 1 << 16) -> torch.Tensor:
    meta, tensors = payload.meta, payload.tensors
    C, P, K, n = meta["C"], meta["P"], meta["K"], meta["n_blocks"]
    seeds = unpack_bits(tensors["seeds"], meta["seed_bits"], n) + 1
    exp_lo = meta["exp_max"] - EXP_LEVELS + 1
    scale = torch.exp2((unpack_bits(tensors["exponents"], 4, n) + exp_lo).double()).float()
    q = (unpack_bits(tensors["coefficients"], 4, n * P) + Q_MIN).float().reshape(n, P)
    out = torch.empty(n, C)
    for n0 in range(0, n, block_chunk):
        U = basis_from_states(lfsr_states(seeds[n0 : n0 + block_chunk], K, C * P), C, P, K)
        coeff = q[n0 : n0 + block_chunk] * scale[n0 : n0 + block_chunk, None]
        out[n0 : n0 + block_chunk] = (U @ coeff[..., None]).squeeze(-1)
    count = math.prod(meta["shape"])
    return restore(out.reshape(-1)[:count], meta)
