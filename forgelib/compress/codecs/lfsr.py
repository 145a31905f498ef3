"""A K-bit Fibonacci linear feedback shift register, stepped for many seeds at once.

SeedLM (arXiv 2410.10714) builds its random bases from an LFSR because hardware can regenerate
them from a K-bit seed in a few gates. Convention (the textbook Fibonacci form): the feedback
polynomial ``x^K + ... + 1`` is given by its exponents ``taps``; exponent ``e`` reads state bit
``K - e``; each clock computes the XOR of the tapped bits, shifts the state right by one and
inserts that bit at the top (bit K-1). For K = 16 the taps (16, 14, 13, 11) give the
maximal-length polynomial x^16 + x^14 + x^13 + x^11 + 1 (period 2^16 - 1 = 65535).

Every entry of :data:`MAXIMAL_TAPS` was checked to have period 2^K - 1 (the tests recheck the
small ones and K = 16), so every nonzero seed walks the full cycle and no two seeds give the same
sequence start.
"""

from __future__ import annotations

import torch

from forgelib.errors import ForgeError

# Maximal-length Fibonacci taps (polynomial exponents), one per register width.
MAXIMAL_TAPS: dict[int, tuple[int, ...]] = {
    4: (4, 3), 5: (5, 3), 6: (6, 5), 7: (7, 6), 8: (8, 6, 5, 4), 9: (9, 5), 10: (10, 7),
    11: (11, 9), 12: (12, 11, 10, 4), 13: (13, 12, 11, 8), 14: (14, 13, 12, 2), 15: (15, 14),
    16: (16, 14, 13, 11), 17: (17, 14), 18: (18, 11), 19: (19, 18, 17, 14), 20: (20, 17),
}  # fmt: skip


def lfsr_states(seeds: torch.Tensor, K: int, n_steps: int) -> torch.Tensor:
    """The states after clocks 1..n_steps for each seed: int64 of shape ``(len(seeds), n_steps)``.

    ``seeds`` are nonzero K-bit integers (the all-zero state is a fixed point of any LFSR).
    """
    if K not in MAXIMAL_TAPS:
        raise ForgeError(f"LFSR width K={K} has no tap table entry; use one of {sorted(MAXIMAL_TAPS)}")
    state = seeds.to(torch.int64).reshape(-1).clone()
    if state.numel() and (int(state.min()) < 1 or int(state.max()) >= (1 << K)):
        raise ForgeError(f"LFSR seeds must be in [1, 2^{K} - 1]")
    positions = [K - e for e in MAXIMAL_TAPS[K]]
    out = torch.empty(state.numel(), n_steps, dtype=torch.int64)
    for step in range(n_steps):
        feedback = torch.zeros_like(state)
        for pos in positions:
            feedback ^= (state >> pos) & 1
        state = (state >> 1) | (feedback << (K - 1))
        out[:, step] = state
    return out
